"""A run's checkpoint: what ``Trainer`` saves and restores so that a killed run continues exactly.

Whole weights, optimizer state, the step, RNG states and the logging window's per-step metrics (so a
resumed run's ``metrics.json`` equals an uninterrupted one's); under FSDP the shards are gathered on
rank 0 and every rank loads its own shard back. Written atomically with an integrity record by
``shortcutlens.checkpoint``; weights or buffers that are not finite are never saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from shortcutlens import distributed as dist
from shortcutlens.checkpoint import (
    CheckpointError,
    NonFiniteLossError,
    find_nonfinite,
    load_checkpoint,
    save_checkpoint,
    unwrap,
)

if TYPE_CHECKING:
    from shortcutlens.train.loop import Trainer


def capture(t: Trainer) -> dict[str, Any]:
    """Whole weights and optimizer state; under FSDP gathered on rank 0 (a collective: every rank
    calls it; the other ranks get partial dicts to throw away)."""
    if t.fsdp:
        full = dist.full_model_state_dict(t.player)
        models = {name: {k[len(name) + 1 :]: v for k, v in full.items() if k.startswith(name + ".")}
                  for name in ("backbone", "pretext")}
        optimizer = dist.full_optimizer_state_dict(t.player, t.optimizer)  # keyed by parameter name
    else:
        models = {"backbone": unwrap(t.backbone).state_dict(), "pretext": unwrap(t.pretext).state_dict()}
        optimizer = t.optimizer.state_dict()
    state: dict[str, Any] = {
        "step": t.step,
        "seed": t.seed,
        "spec": t.spec,
        **models,
        "optimizer": optimizer,
        "strategy": "fsdp" if t.fsdp else "ddp",
        "extra": dict(t.extra_state),
        "rng_cpu": torch.get_rng_state(),
        # The logging window's per-step metrics: metrics.json after a resume equals an uninterrupted run's.
        "log_window": {k: torch.stack([m.detach() for m in v]) for k, v in t.log_window.items() if v},
    }
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    if t.lens is not None:
        state["lens"] = unwrap(t.lens).state_dict()
        state["lens_optimizer"] = t.lens_optimizer.state_dict()
    return state


def save(t: Trainer, path: Path) -> None:
    state = capture(t) if (t.rank == 0 or t.fsdp) else None
    # Never overwrite a good checkpoint with NaN/inf weights or buffers (a BatchNorm running_var can
    # overflow while the loss still looks finite); rank 0 holds the whole state, every rank stops.
    bad = dist.broadcast_object(find_nonfinite(state) if t.rank == 0 else None)
    if bad is not None:
        kept = f"the last finite checkpoint {path} is kept" if path.is_file() else "no checkpoint was written"
        raise NonFiniteLossError(f"non-finite weights at step {t.step} ({bad}); training stopped and {kept}")
    if t.rank == 0:
        save_checkpoint(state, path)
    dist.barrier()


def restore(t: Trainer, path: Path) -> None:
    state = load_checkpoint(path, map_location=t.device)
    saved_with = state.get("strategy", "ddp")
    if saved_with != ("fsdp" if t.fsdp else "ddp"):
        raise ValueError(f"{path} holds {saved_with} optimizer state; resume it with trainer.strategy={saved_with} "
                         "(on several ranks for fsdp)")
    try:
        if t.fsdp:  # every rank read the whole checkpoint; each keeps its own shard
            dist.load_full_model_state_dict(t.player, {f"{name}.{k}": v for name in ("backbone", "pretext")
                                                         for k, v in state[name].items()})
            dist.load_full_optimizer_state_dict(t.player, t.optimizer, state["optimizer"])
        else:
            unwrap(t.backbone).load_state_dict(state["backbone"])
            unwrap(t.pretext).load_state_dict(state["pretext"])
            t.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:  # another backbone's, pretext's or optimizer's state
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__)[:200]
        raise CheckpointError(f"checkpoint {path} does not fit this run's models ({detail}): it was written by "
                              "another backbone, pretext or optimizer; resume it with its own config") from err
    if t.lens is not None:
        if "lens" not in state:
            raise ValueError(f"{path} was trained without a lens; cannot resume it with one")
        unwrap(t.lens).load_state_dict(state["lens"])
        t.lens_optimizer.load_state_dict(state["lens_optimizer"])
    t.step = int(state["step"])
    t.extra_state = dict(state.get("extra", {}))
    t.log_window = {k: list(v.unbind(0)) for k, v in state.get("log_window", {}).items()}
    torch.set_rng_state(state["rng_cpu"].cpu())
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
