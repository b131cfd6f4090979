"""``shortcutlens-train resume=true run_dir=R``: continue the run recorded in ``R``, not a new one.

A run records its resolved config when it starts (``R/config.json``, so a killed run can be restored too;
runs older than that file: the ``config`` in ``R/metrics.json``, or at least the component spec stored in
the checkpoint). On resume that record *is* the config. The command line may only extend the run or
change how it is watched (``EXTENDS``: more steps, other logging, checkpoint and picture intervals, the
progress bar, the device, where the data now lives, the end-of-run probe); every other override must
agree with the record, or the command stops with one line naming the key, because a run whose data,
backbone, pretext, lens, shortcut, seed or batch size changed half-way is no longer the run its
checkpoint belongs to.

``resume=true`` with no checkpoint in ``R`` is an error (a typo in ``run_dir`` must not start a fresh
run that overwrites nothing and trains from scratch), except in a ``--multirun`` sweep, where it means
"continue the jobs that have a checkpoint and start the others" (``experiments/scaling_sweep.py``).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

from shortcutlens.api import CONFIG_FILE, recorded_config

# Overrides that only extend the run or change how it is watched; "probe" and the data's location cover
# every key below them. Everything else must match the record.
EXTENDS = ("trainer.steps", "trainer.log_every", "trainer.ckpt_every", "trainer.image_every", "trainer.progress",
           "trainer.compile", "device", "data.root", "data.download", "probe")
IGNORED = ("run_dir", "resume", "hydra")
_MISSING = object()


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints" / "latest.pt"


def write_config(cfg: dict[str, Any], run_dir: str | os.PathLike) -> Path:
    """Write the resolved config to ``run_dir/config.json`` (atomically: a kill never leaves half a file)."""
    path = Path(run_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CONFIG_FILE}.tmp")
    tmp.write_text(json.dumps(cfg, indent=2, default=str))
    tmp.replace(path)
    return path


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    if not isinstance(cfg, dict):
        return {prefix: cfg}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _get(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _set(cfg: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = copy.deepcopy(value)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def override_keys(overrides: list[str]) -> list[tuple[str, str]]:
    """``(override as typed, config key)`` for each command-line override that is not ``IGNORED``."""
    out = []
    for raw in overrides:
        key = raw.split("=", 1)[0].lstrip("+~")
        if key and not _under(key, IGNORED):
            out.append((raw, key))
    return out


def _fill(base: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the keys it lacks taken from ``base`` (settings added to the library since)."""
    out = copy.deepcopy(record)
    for k, v in base.items():
        if k not in out:
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = _fill(v, out[k])
    return out


def contradiction(key: str, new: dict[str, Any], record: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first ``(key, recorded, requested)`` where the override of ``key`` disagrees with the record.

    A leaf is compared as it is; a config group chosen by name (``lens=unet``) by the ``name`` the group
    sets, else leaf by leaf; an override that sets no key of its own name (a ``# @package _global_``
    group such as ``+scaling_model=vit-Ti8``, a deletion) by every key both configs hold.
    """
    value = _get(new, key)
    if value is _MISSING or not isinstance(value, dict):
        recorded = _get(record, key)
        if value is not _MISSING:
            return None if recorded == value else (key, None if recorded is _MISSING else recorded, value)
        prefix = ""  # no key of that name: compare everything
    else:
        recorded = _get(record, key)
        if isinstance(recorded, dict) and "name" in value and "name" in recorded:
            return None if value["name"] == recorded["name"] else (f"{key}.name", recorded["name"], value["name"])
        prefix = key
    flat_new, flat_rec = flatten(new), flatten(record)
    for k, v in flat_new.items():
        compared = (not prefix or _under(k, (prefix,))) and k in flat_rec and not _under(k, EXTENDS + IGNORED + ("debug",))
        if compared and flat_rec[k] != v:
            return k, flat_rec[k], v
    return None


def _checkpoint_state(path: Path) -> dict[str, Any]:
    import torch

    from shortcutlens.checkpoint import CheckpointError

    try:  # mmap: only the few small entries read here come off the disk, not the weights
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # any unpickling failure means the same to the user
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err


def _group_defaults(group: str, name: Any) -> dict[str, Any]:
    """The settings of ``experiments/conf/<group>/<name>.yaml`` (empty when there is no such file)."""
    from omegaconf import OmegaConf

    from shortcutlens.cli.common import CONF_DIR

    path = Path(CONF_DIR) / group / f"{name}.yaml"
    if not path.is_file():
        return {}
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    return {k: v for k, v in cfg.items() if k != "defaults"} if isinstance(cfg, dict) else {}


def from_checkpoint_spec(resolved: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """A record for a run with no recorded config: its components and seed from the checkpoint's spec, the
    rest (trainer settings, the lens game) from this command."""
    record = copy.deepcopy(resolved)
    spec = state.get("spec") or {}
    for group in ("data", "backbone", "pretext", "shortcut"):
        if group in spec:
            record[group] = copy.deepcopy(spec[group])
    if "lens" in spec:  # the spec holds the lens module's arguments; the game's come from its config group
        same = resolved.get("lens", {}).get("name") == spec["lens"].get("name")
        record["lens"] = {**(resolved["lens"] if same else _group_defaults("lens", spec["lens"].get("name"))),
                          **spec["lens"]}
    if "seed" in state:
        record["seed"] = int(state["seed"])
    return record


def resume_config(resolved: dict[str, Any], run_dir: str | os.PathLike, overrides: list[str], *,
                  multirun: bool = False) -> dict[str, Any]:
    """The config to continue ``run_dir`` with: the recorded one, extended by the allowed ``overrides``.

    Args:
        resolved: this command's resolved config (defaults + ``overrides``).
        run_dir: the run to continue.
        overrides: the command-line overrides as typed (Hydra's ``overrides.task``).
        multirun: inside a sweep, a job without a checkpoint starts fresh.

    Raises:
        ValueError: no checkpoint to resume (outside a sweep); an override that contradicts the record;
            ``trainer.steps`` below the checkpoint's step.
    """
    run_dir = Path(run_dir)
    ckpt = checkpoint_path(run_dir)
    if not ckpt.is_file():
        if multirun:
            return resolved
        raise ValueError(f"resume=true, but there is no checkpoint to resume in run_dir={run_dir} ({ckpt} is missing); "
                         "check run_dir, or drop resume=true to start a new run")
    state = _checkpoint_state(ckpt)
    record, source = recorded_config(run_dir)
    if record is None:
        record, source = from_checkpoint_spec(resolved, state), f"{ckpt} (components and seed only)"
        print(f"resume: {run_dir} has no {CONFIG_FILE} or metrics.json; data, models, lens, shortcut and seed come "
              "from the checkpoint, the trainer and lens-game settings from this command", file=sys.stderr)
    for raw, key in override_keys(overrides):
        if _under(key, EXTENDS):
            continue
        clash = contradiction(key, resolved, record)
        if clash is not None:
            what, before, now = clash
            raise ValueError(f"resume: {raw} contradicts the recorded run ({what}={before!r} in {source}, {now!r} here); "
                             "a resumed run keeps its data, backbone, pretext, lens, shortcut, seed and batch size: drop "
                             "the override, or start a new run_dir")
    merged = _fill(resolved, record)
    for _, key in override_keys(overrides):
        value = _get(resolved, key)
        if _under(key, EXTENDS) and value is not _MISSING:
            _set(merged, key, value)
    merged.update(run_dir=str(run_dir), resume=True, debug=False)  # the record holds the debug-shrunk values
    step, steps = int(state.get("step", 0)), int(merged["trainer"]["steps"])
    if steps < step:
        raise ValueError(f"resume: trainer.steps={steps} is below the checkpoint's step {step} in {ckpt}; "
                         f"ask for at least {step} steps")
    if int(os.environ.get("RANK", "0")) == 0:
        before = _get(record, "trainer.steps")
        longer = f" (trainer.steps {before} -> {steps})" if before not in (_MISSING, steps) else ""
        print(f"resume: {run_dir} from step {step} of {steps}{longer}, with the config recorded in {source}")
        if longer and merged["trainer"].get("schedule") == "cosine":
            print("resume: the cosine learning-rate schedule now spans the new number of steps, so the learning "
                  "rate is recomputed for the remaining ones")
    return merged


def resume_from_hydra(resolved: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """``resume_config`` with the overrides and the run mode of the running Hydra app."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return resume_config(resolved, run_dir, list(hc.overrides.task), multirun=hc.mode == RunMode.MULTIRUN)
