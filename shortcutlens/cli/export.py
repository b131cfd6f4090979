"""``shortcutlens-export``: features and labels of one split, written for use outside shortcutlens.

Rebuilds the run from its checkpoint (``FeatureSource.from_checkpoint``: the recorded data, or another
dataset given as ``data=<name>``) and writes, under ``run_dir`` (default ``<run>/export/<dataset>_<split>``):

- ``features_<layer>.npy`` / ``.pt``: float32 ``(N, D)`` per requested layer (``pooled`` is the
  backbone's own pooled output, as the linear probe reads it);
- ``labels.npy`` / ``.pt``: int64 ``(N,)``, in the split's order;
- ``manifest.json``: where the features came from (checkpoint, step, spec, data, split, layers,
  ``which``, view), each file's shape and dtype, and the command's resolved config.

    shortcutlens-export checkpoint=runs/arrow_lens split=test
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from shortcutlens.cli.common import CONF_DIR, clear_errors, resolve_device

FORMATS = ("npy", "pt", "both")
SPLITS = ("train", "val", "test", "trainval")


def export(cfg: dict[str, Any]) -> dict[str, Any]:
    """Write the features of ``cfg``'s checkpoint, split, layers and source; returns the manifest."""
    import numpy as np
    import torch

    from shortcutlens.eval import FeatureSource
    from shortcutlens.eval.features import FEATURE_SOURCES

    if cfg["format"] not in FORMATS:
        raise ValueError(f"Unknown format '{cfg['format']}'. Valid formats: {', '.join(FORMATS)}")
    if cfg["split"] not in SPLITS:
        raise ValueError(f"Unknown split '{cfg['split']}'. Valid splits: {', '.join(SPLITS)}")
    if cfg["which"] not in FEATURE_SOURCES:
        raise ValueError(f"Unknown feature source which={cfg['which']}. Valid sources: {', '.join(FEATURE_SOURCES)}")
    if cfg["amp"] not in ("auto", "bf16", "off"):
        raise ValueError(f"Unknown amp setting '{cfg['amp']}'. Valid settings: auto, bf16, off")
    device = resolve_device(cfg["device"])
    amp = (cfg["amp"] == "auto" and device.type == "cuda") or cfg["amp"] == "bf16"
    torch.manual_seed(cfg["seed"])
    source = FeatureSource.from_checkpoint(cfg["checkpoint"], data=cfg.get("data"), device=device, amp=amp,
                                           batch_size=cfg["batch_size"], progress=cfg["progress"], seed=cfg["seed"])
    if cfg["which"] != "raw" and source.lens is None:
        raise ValueError(f"which={cfg['which']} needs a lens, and {cfg['checkpoint']} was trained without one")
    feats, labels = source.features(cfg["split"], layers=list(cfg["layers"]), which=cfg["which"], view=cfg["view"])
    data_name = source.info["spec"]["data"].get("name", "data")
    checkpoint = Path(cfg["checkpoint"])
    run_path = checkpoint if checkpoint.is_dir() else checkpoint.parent.parent
    out = Path(cfg["run_dir"]) if cfg.get("run_dir") else run_path / "export" / f"{data_name}_{cfg['split']}"
    out.mkdir(parents=True, exist_ok=True)
    arrays = {f"features_{name}": t.float().cpu() for name, t in feats.items()} | {"labels": labels.long().cpu()}
    files: dict[str, dict[str, Any]] = {}
    for stem, tensor in arrays.items():
        if cfg["format"] in ("npy", "both"):
            np.save(out / f"{stem}.npy", tensor.numpy())
            files[f"{stem}.npy"] = {"shape": list(tensor.shape), "dtype": str(tensor.numpy().dtype)}
        if cfg["format"] in ("pt", "both"):
            torch.save(tensor, out / f"{stem}.pt")
            files[f"{stem}.pt"] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
    manifest = {"checkpoint": str(checkpoint), "step": source.info["step"], "spec": source.info["spec"],
                "data": source.data.summary(), "num_classes": source.num_classes, "split": cfg["split"],
                "layers": list(feats), "which": cfg["which"], "view": cfg["view"], "images": int(labels.shape[0]),
                "amp": amp, "files": files, "config": cfg}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return {**manifest, "out_dir": str(out)}


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="export")
@clear_errors
def main(cfg: DictConfig) -> None:
    result = export(OmegaConf.to_container(cfg, resolve=True))
    shapes = ", ".join(f"{name} {tuple(f['shape'])}" for name, f in result["files"].items())
    print(f"exported {result['images']} {result['split']} images of step {result['step']}: {shapes}")
    print(f"manifest: {Path(result['out_dir']) / 'manifest.json'}")


if __name__ == "__main__":
    main()
