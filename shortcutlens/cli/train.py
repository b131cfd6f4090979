"""``shortcutlens-train``: the Hydra entry point of the training loop (the only place that sees a
config object; components get plain keyword arguments)."""

from __future__ import annotations

import dataclasses
import gc
import json
from typing import Any

import hydra
from omegaconf import DictConfig

from shortcutlens.cli.common import (
    CONF_DIR,
    clear_errors,
    hydra_errors,
    register_schemas,
    resolve_device,
    resolve_run,
)
from shortcutlens.cli.resume import resume_from_hydra, write_config

register_schemas()


def lens_spec(lens_cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the ``lens`` group into the module's arguments and the game's (``AdversaryConfig``)."""
    from shortcutlens.train.config import AdversaryConfig

    game_keys = {f.name for f in dataclasses.fields(AdversaryConfig)}
    module = {k: v for k, v in lens_cfg.items() if k not in game_keys}
    game = {k: v for k, v in lens_cfg.items() if k in game_keys}
    return module, game


def apply_debug(cfg: dict[str, Any]) -> None:
    """``debug=true``: a few tiny steps, a narrow lens, no probe of the untrained model."""
    t = cfg["trainer"]
    t.update(steps=min(t["steps"], 10), batch_size=min(t["batch_size"], 32), log_every=5, ckpt_every=10,
             image_every=10, warmup_steps=min(t["warmup_steps"], 2))
    cfg["probe"]["untrained"] = False
    if cfg["lens"].get("name") != "none":
        cfg["lens"]["width"] = min(cfg["lens"].get("width", 8), 8)


def run(cfg: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Train and probe from a resolved config dict; returns the results written to metrics.json."""
    from shortcutlens import distributed as dist
    from shortcutlens.build import build_components, build_data
    from shortcutlens.config_schema import check_data_fits, validate_train
    from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
    from shortcutlens.train.loop import Trainer

    validate_train(cfg, run_dir=run_dir)  # before any data is read or process group started
    if cfg.get("debug"):
        apply_debug(cfg)
    device = resolve_device(cfg["device"])
    dist.init(device)
    if dist.is_main():  # one training process per run directory, taken before anything is written into it
        from shortcutlens.run_lock import RunLock

        RunLock(run_dir).acquire()
    lens_module, game = lens_spec(cfg["lens"])
    spec = {"data": cfg["data"], "backbone": cfg["backbone"], "pretext": cfg["pretext"], "lens": lens_module,
            "shortcut": cfg["shortcut"]}
    import torch

    torch.manual_seed(cfg["seed"])  # model initialisation
    data = build_data(spec, seed=cfg["seed"])
    check_data_fits(cfg, data, world_size=dist.world_size())
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    trainer = Trainer(
        backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
        trainer=TrainerConfig(**cfg["trainer"]), adversary=AdversaryConfig(**game), probe=ProbeConfig(**cfg["probe"]),
        run_dir=run_dir, device=device, seed=cfg["seed"], resume=cfg["resume"], spec=spec, config=cfg,
    )
    if dist.is_main():
        write_config(cfg, run_dir)  # before training: a killed run can be resumed from it
        print(data.summary())
    results = trainer.fit()
    if dist.is_main():
        summary = {k: results[k] for k in ("pretext_acc", "pretext_acc_clean", "pretext_acc_lensed", "edit_ratio",
                                           "probe_acc", "probe_untrained_acc") if k in results}
        print(json.dumps(summary, indent=2))
        print(f"run directory: {run_dir}")
    # Free the trainer (its DistributedDataParallel wrapper and that wrapper's Reducer) while the process
    # group is still registered, and only then destroy the group. Otherwise the Reducer holds the group's
    # last reference when this frame is cleared, and the gloo group's destructor joins its worker thread
    # while holding the GIL, which that thread may need to free a tensor: a deadlock at exit (seen, with
    # gdb, in a rank of tests/test_distributed_resume.py that hung after its run had finished).
    del trainer
    gc.collect()
    dist.cleanup()
    return results


@hydra_errors("train")
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="train")
@clear_errors
def main(cfg: DictConfig) -> None:
    resolved, run_dir = resolve_run(cfg)
    if resolved.get("resume") is True:  # continue the recorded run, extended only where the overrides may extend it
        resolved = resume_from_hydra(resolved, run_dir)
    run(resolved, run_dir)


if __name__ == "__main__":
    main()
