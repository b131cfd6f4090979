"""Checkpoint reading and writing, shared by the training loop (writes), evaluators and the
visualiser (read).

Writes are atomic (a temporary file in the same folder, fsync, then ``os.replace``) so a kill during
a save never leaves a truncated ``latest.pt``. Reads use ``torch.load(weights_only=True)``: a
checkpoint holds tensors, numbers, strings and containers of them, never pickled code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    pass


class NonFiniteLossError(RuntimeError):
    """Training stopped because the pretext loss became NaN or infinite (the last good checkpoint is kept).

    Defined here, beside ``CheckpointError``, so that the commands' error handling catches it without
    importing the training loop."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():  # a run directory or its checkpoints/ folder
        for candidate in (path / "checkpoints" / "latest.pt", path / "latest.pt"):
            if candidate.is_file():
                path = candidate
                break
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (pass a .pt file or a run directory with checkpoints/latest.pt)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unpickling failure means the same to the user)
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP/FSDP/compile wrappers, whose state_dict keys carry no prefix."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
