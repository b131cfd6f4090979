"""Checkpoint reading and writing, shared by the training loop (writes), evaluators and the
visualiser (read), and the errors a run can stop with.

- **Atomic writes**: a temporary file in the same folder, fsync, then ``os.replace``, so a kill during a
  save never leaves a truncated ``latest.pt``; a temporary file a kill left behind is removed at the next
  start of that run (:func:`remove_stale_temporaries`). A full disk is reported as such, and the previous
  checkpoint is kept.
- **Integrity**: each checkpoint records a SHA-256 of everything it holds (every tensor's dtype, shape and
  bytes, every plain value) under ``"integrity"``; loading recomputes it and refuses a file whose content
  changed since it was written (a bit flip on disk, a damaged copy).
- **Safe reads**: ``torch.load(weights_only=True)``: a checkpoint holds tensors, numbers, strings and
  containers of them, never pickled code, which is refused before it can run.
- **Finite weights**: a checkpoint whose weights hold NaN or infinity is refused unless the caller asks
  to inspect it (``allow_nonfinite=True``, or inside :func:`inspecting_nonfinite`).

Every refusal is a :class:`CheckpointError` whose message is one line naming the file and saying what
to do.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    pass


class NonFiniteLossError(RuntimeError):
    """Training stopped because the pretext loss became NaN or infinite (the last good checkpoint is kept).

    Defined here, beside ``CheckpointError``, so that the commands' error handling catches it without
    importing the training loop."""


INTEGRITY_KEY = "integrity"
#: The entries of a training checkpoint that hold model weights and buffers (checked for NaN/inf).
MODEL_KEYS = ("backbone", "pretext", "lens")
_ALLOW_NONFINITE: contextvars.ContextVar[bool] = contextvars.ContextVar("allow_nonfinite", default=False)


@contextlib.contextmanager
def inspecting_nonfinite(allow: bool = True) -> Iterator[None]:
    """Within this block ``load_checkpoint`` accepts non-finite weights (a user inspecting a diverged
    run: ``shortcutlens-probe ... +allow_nonfinite=true``)."""
    token = _ALLOW_NONFINITE.set(allow)
    try:
        yield
    finally:
        _ALLOW_NONFINITE.reset(token)


# ------------------------------------------------------------------------------------------ integrity


def _digest_into(h: hashlib._Hash, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # the buffer, no copy
    elif isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            h.update(repr(key).encode())
            _digest_into(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for item in obj:
            _digest_into(h, item)
        h.update(b"]")
    else:
        h.update(f"{type(obj).__name__}:{obj!r}".encode())


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of everything in ``state`` but its ``integrity`` record, independent of the device."""
    h = hashlib.sha256()
    _digest_into(h, {k: v for k, v in state.items() if k != INTEGRITY_KEY})
    return h.hexdigest()


def find_nonfinite(state: dict[str, Any], keys: tuple[str, ...] = MODEL_KEYS) -> str | None:
    """``"<entry>.<name>: <n> of <total> values are NaN/inf"`` for the first floating-point tensor of the
    model entries with a non-finite value, or None when every weight and buffer is finite."""
    for entry in keys:
        tensors = state.get(entry)
        if not isinstance(tensors, dict):
            continue
        for name, t in tensors.items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                bad = int((~torch.isfinite(t.detach())).sum())
                if bad:
                    return f"{entry}.{name}: {bad} of {t.numel()} values are NaN/inf"
    return None


# ------------------------------------------------------------------------------------------ writing


def _is_disk_full(err: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:  # torch's zip writer wraps the OSError as a RuntimeError
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        e = e.__cause__ or e.__context__
    return False


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` atomically to ``path`` with its integrity record; a full disk raises a one-line
    :class:`CheckpointError` and leaves the previous file at ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, INTEGRITY_KEY: {"sha256": state_digest(state)}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, Exception) and _is_disk_full(err):
            kept = "the previous checkpoint is kept" if path.is_file() else "no checkpoint was written"
            raise CheckpointError(f"disk full: no space left on the device of {path.parent} to write {path.name}; "
                                  f"{kept}. Free some space, then continue with resume=true") from err
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that a kill during a save left in ``folder`` (``.<name>.*.tmp``).

    Call it only while holding the run's lock (``shortcutlens.run_lock``): another live writer's
    temporary file would look the same.
    """
    folder = Path(folder)
    removed = []
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# ------------------------------------------------------------------------------------------ reading


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    """Say what the file is and what to do, not torch's internals."""
    size = path.stat().st_size
    text = str(err)
    if size == 0:
        why = "the file is empty (0 bytes: its write never finished)"
    elif "Unsupported global" in text or "GLOBAL" in text:  # weights_only refused to import a callable
        why = ("it holds pickled Python objects besides tensors and plain values, which are never loaded (they "
               "could run code); only load checkpoints that shortcutlens wrote")
    elif "zip archive" in text or "central directory" in text or isinstance(err, (EOFError, pickle.UnpicklingError)):
        why = f"the file is truncated or is not a PyTorch checkpoint ({size} bytes)"
    else:
        why = f"it is not a readable PyTorch checkpoint ({type(err).__name__})"
    return CheckpointError(f"cannot read checkpoint {path}: {why}. Use an intact copy, an earlier checkpoint, "
                           "or train again")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    allow_nonfinite: bool | None = None) -> dict[str, Any]:
    """Read a checkpoint (a ``.pt`` file, or a run directory / its ``checkpoints/`` folder holding
    ``latest.pt``), verify its integrity record and refuse non-finite weights unless ``allow_nonfinite``
    (default: False, or True inside :func:`inspecting_nonfinite`)."""
    path = Path(path)
    if path.is_dir():  # a run directory or its checkpoints/ folder
        for candidate in (path / "checkpoints" / "latest.pt", path / "latest.pt"):
            if candidate.is_file():
                path = candidate
                break
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (pass a .pt file or a run directory with checkpoints/latest.pt)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on hostile files: one line only
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise _unreadable(path, err) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot read checkpoint {path}: it holds a {type(state).__name__}, not a shortcutlens "
                              "checkpoint (a dict of weights and settings)")
    record = state.pop(INTEGRITY_KEY, None)
    if isinstance(record, dict) and "sha256" in record and state_digest(state) != record["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match the checksum recorded when "
                              "it was written (damaged on disk or in a copy); use an intact copy or an earlier checkpoint")
    allow = _ALLOW_NONFINITE.get() if allow_nonfinite is None else allow_nonfinite
    if not allow:
        bad = find_nonfinite(state)
        if bad is not None:
            raise CheckpointError(f"checkpoint {path} holds non-finite weights ({bad}): the run diverged; to inspect "
                                  "it anyway, pass +allow_nonfinite=true to shortcutlens-probe or shortcutlens-visualize")
    return state


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP/FSDP/compile wrappers, whose state_dict keys carry no prefix."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
