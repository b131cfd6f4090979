"""``shortcutlens-probe``: a checkpoint, a dataset and a list of evaluators -> a table, JSON, TensorBoard.

The Hydra entry point of ``shortcutlens.eval`` (the only place here that sees a config object;
evaluators get plain keyword arguments). Each evaluator's settings default to its dataclass; they are
registered as the ``evaluator_defaults`` config node so that every one of them can be overridden on
the command line (``fewshot.shots=[1,5]``), and the shared ``layers``/``which`` flow into each
evaluator unless it sets its own::

    shortcutlens-probe checkpoint=runs/arrow_lens evaluators=[linear,fewshot,knn,shortcut_audit]

Artefacts in ``run_dir``: ``probe.json`` (the resolved config, where the model came from, every
evaluator's settings, metrics and time), TensorBoard events under ``tb/`` (one scalar per metric at the
checkpoint's step), and the Markdown tables printed on the terminal in ``probe.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from shortcutlens.cli.common import (
    CONF_DIR,
    clear_errors,
    hydra_choices,
    hydra_errors,
    resolve_device,
    resolve_run,
)

SHARED_KEYS = ("layers", "which")


def evaluator_defaults() -> dict[str, dict[str, Any]]:
    """Every registered evaluator's default settings, with the shared keys pointing at the top level."""
    from shortcutlens.eval import EVALUATORS

    out: dict[str, dict[str, Any]] = {}
    for name in EVALUATORS.names():
        try:
            settings = EVALUATORS.create(name).settings()
        except TypeError:  # a third-party evaluator with required arguments: no defaults to show
            continue
        for key in SHARED_KEYS:
            if key in settings:
                settings[key] = "${" + key + "}"
        out[name] = settings
    return out


def register_defaults() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="evaluator_defaults", node=evaluator_defaults())


def apply_debug(cfg: dict[str, Any]) -> None:
    """``debug=true``: few episodes and images, two fine-tuning steps, a coarse L2 grid."""
    small = {"episodes": {"episodes": 20, "finetune_episodes": 2, "finetune_steps": 2},
             "fewshot": {"seeds": 1}, "shortcut_audit": {"max_images": 256, "probe_max_iter": 50},
             "linear": {"l2_grid": [1e-4, 1e-2], "max_iter": 50}, "vtab1k": {"l2_grid": [1e-4, 1e-2], "max_iter": 50}}
    for name, changes in small.items():
        if isinstance(cfg.get(name), dict):
            cfg[name].update(changes)


def format_table(rows: list[tuple[str, float]]) -> str:
    width = max([len("metric")] + [len(k) for k, _ in rows])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  --------"]
    lines += [f"{k:<{width}}  {v:.4f}" for k, v in rows]
    return "\n".join(lines)


def run(cfg: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Evaluate from a resolved config dict; returns what is written to ``probe.json``."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from shortcutlens.checkpoint import inspecting_nonfinite
    from shortcutlens.config_schema import validate_probe
    from shortcutlens.data.base import default_cache_dir
    from shortcutlens.eval import FeatureSource, create_evaluator

    # The whole config before any data or checkpoint is read; data=/shortcut= must name a config.
    validate_probe(cfg, run_dir=run_dir, choices=hydra_choices(), conf_dir=CONF_DIR)
    if cfg.get("debug"):
        apply_debug(cfg)
    out_dir = Path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg["device"])
    if cfg["amp"] not in ("auto", "bf16", "off"):
        raise ValueError(f"Unknown amp setting '{cfg['amp']}'. Valid settings: auto, bf16, off")
    amp = (cfg["amp"] == "auto" and device.type == "cuda") or cfg["amp"] == "bf16"
    cache_dir = None
    if cfg["cache"]:
        cache_dir = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else default_cache_dir() / "features"
    torch.manual_seed(cfg["seed"])
    with inspecting_nonfinite(bool(cfg.get("allow_nonfinite", False))):  # +allow_nonfinite=true: a diverged run
        source = FeatureSource.from_checkpoint(
            cfg["checkpoint"], data=cfg.get("data"), shortcut=cfg.get("shortcut"), device=device, amp=amp,
            batch_size=cfg["batch_size"], cache_dir=cache_dir, progress=cfg["progress"], seed=cfg["seed"])
    print(source.data.summary())
    previous = {}
    if cfg.get("resume") and (out_dir / "probe.json").is_file():
        previous = json.loads((out_dir / "probe.json").read_text()).get("evaluators", {})

    results: dict[str, Any] = {"config": cfg, "source": source.info, "data": source.data.summary(),
                               "device": str(device), "amp": amp, "evaluators": {}}
    writer = SummaryWriter(str(out_dir / "tb"))
    step = int(source.info.get("step", 0))
    reports: list[str] = []
    rows: list[tuple[str, float]] = []
    for name in cfg["evaluators"]:
        settings = dict(cfg.get(name) or {})
        evaluator = create_evaluator(name, **settings)
        done = previous.get(name)
        if done is not None and done.get("settings") == evaluator.settings():
            metrics = done["metrics"]
            elapsed = done.get("seconds", 0.0)
        else:
            start = time.perf_counter()
            print(f"{name}: running", flush=True)  # a line per evaluator: no silent stretch between the bars
            metrics = {}
            for metric, value in evaluator.run(source):
                metrics[metric] = float(value)
                writer.add_scalar(metric, float(value), step)
            elapsed = time.perf_counter() - start
            print(f"{name}: {len(metrics)} metrics in {elapsed:.1f} s", flush=True)
        results["evaluators"][name] = {"settings": evaluator.settings(), "metrics": metrics, "seconds": elapsed}
        rows += list(metrics.items())
        report = evaluator.report(metrics)
        if report:
            reports.append(f"### {name}\n\n{report}")
            writer.add_text(name, report, step)
        _write_json(out_dir / "probe.json", results)  # after each evaluator: a crash keeps what was done
    writer.close()
    table = format_table(rows)
    print(table)
    for report in reports:
        print("\n" + report)
    (out_dir / "probe.md").write_text("```\n" + table + "\n```\n\n" + "\n\n".join(reports) + "\n")
    results["cache"] = {"hits": source.cache.hits, "misses": source.cache.misses,
                        "dir": str(cache_dir) if cache_dir is not None else None}
    _write_json(out_dir / "probe.json", results)
    print(f"results: {out_dir / 'probe.json'}")
    return results


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


register_defaults()


@hydra_errors("probe_app")
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="probe_app")
@clear_errors
def main(cfg: DictConfig) -> None:
    resolved, run_dir = resolve_run(cfg)
    run(resolved, run_dir)


if __name__ == "__main__":
    main()
