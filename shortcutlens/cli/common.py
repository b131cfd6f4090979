"""Shared plumbing of the Hydra entry points: config location, device choice, one-line errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
if not Path(CONF_DIR).is_dir():  # running from a source checkout without an install
    CONF_DIR = str(Path(__file__).resolve().parents[2] / "experiments" / "conf")


def resolve_device(name: str) -> torch.device:
    from shortcutlens import distributed as dist

    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"Unknown device '{name}'. Valid devices: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for but no CUDA device is available (use device=auto or cpu)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    torch.cuda.set_device(dist.local_rank())
    return torch.device("cuda", dist.local_rank())


def clear_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can cause (bad names, missing data, bad checkpoints) into one line on
    stderr and exit status 2, instead of a traceback."""
    from shortcutlens.checkpoint import CheckpointError, NonFiniteLossError
    from shortcutlens.data import DataNotFoundError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DataNotFoundError, CheckpointError, NonFiniteLossError, ValueError, TypeError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def register_schemas() -> None:
    """Typed defaults for the Hydra groups whose settings are dataclasses."""
    from hydra.core.config_store import ConfigStore

    from shortcutlens.train.config import ProbeConfig, TrainerConfig

    cs = ConfigStore.instance()
    cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
    cs.store(group="probe", name="base_probe", node=ProbeConfig)


def compose(overrides: list[str], config_name: str = "train") -> dict[str, Any]:
    """The resolved config that ``shortcutlens-train <overrides>`` would run, as a plain dict.

    Lets scripts (the demo, the benchmarks) reuse the exact config tree of the command line.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def resolve_run(cfg: Any) -> tuple[dict[str, Any], str]:
    """The resolved config as a plain dict and the run directory: ``run_dir`` for a single run,
    Hydra's per-job output folder under ``--multirun``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    run_dir = str(Path(cfg.run_dir if hc.mode == RunMode.RUN else hc.runtime.output_dir))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["run_dir"] = run_dir
    return resolved, run_dir
