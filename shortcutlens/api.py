"""What a researcher takes away from a run: ``shortcutlens.load(run_dir)`` and the lens on its own.

``load`` rebuilds the trained models from the checkpoint's component spec (``shortcutlens.build``) and
needs no training data: the backbone's input channels come from its weights and the image size from the
recorded data spec::

    run = shortcutlens.load("runs/arrow_lens")          # a run directory or a .pt checkpoint
    run.backbone, run.pretext, run.lens, run.config      # eval mode; lens is None for lens=none
    feats = run.features(images)                         # (B, C, H, W) in [0, 1] -> (B, num_features)
    clean = run.edit(images)                             # the lens's x' = x + r(x) (Minderer et al. 2020)

``save_lens`` / ``load_lens`` keep the lens alone in a small file (its constructor arguments and weights),
so it can be applied to new pictures without the backbone, the pretext or the run that trained it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shortcutlens.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

CONFIG_FILE = "config.json"  # the resolved config a training run writes when it starts
LENS_FILE_KIND = "shortcutlens.lens"


def recorded_config(run_dir: str | os.PathLike) -> tuple[dict[str, Any] | None, str]:
    """A run's resolved config and the file it came from: ``config.json`` (written when the run started),
    else the ``config`` in ``metrics.json`` (written when it finished); ``(None, "")`` when neither."""
    run_dir = Path(run_dir)
    for path, key in ((run_dir / CONFIG_FILE, None), (run_dir / "metrics.json", "config")):
        if path.is_file():
            data = json.loads(path.read_text())
            cfg = data.get(key) if key else data
            if isinstance(cfg, dict) and cfg:
                return cfg, str(path)
    return None, ""


@dataclass
class TrainedRun:
    """A trained run's models in eval mode, with the settings they were trained with.

    Attributes:
        backbone: the feature extractor, ``(B, C, H, W) -> (B, num_features)``; for a patch pretext the
            trunk as trained on its tiles (``features`` embeds whole images as the probes do).
        pretext: the pretext task with its trained head.
        lens: the trained lens, or ``None`` for a run without one.
        shortcut: the synthetic shortcut the run trained with, or ``None``.
        config: the resolved config (``config.json`` / ``metrics.json``; the spec alone for older runs).
        spec: the components' names and arguments stored in the checkpoint.
        step: training steps done; ``in_chans``, ``image_size``: the images the models take.
    """

    backbone: nn.Module
    pretext: nn.Module
    lens: nn.Module | None
    shortcut: Any
    config: dict[str, Any]
    spec: dict[str, Any]
    step: int
    in_chans: int
    image_size: int
    path: Path
    embedder: nn.Module = field(repr=False, default=None)  # type: ignore[assignment]

    def to(self, device: torch.device | str) -> TrainedRun:
        for module in (self.backbone, self.pretext, self.lens, self.embedder):
            if module is not None:
                module.to(device)
        return self

    @torch.no_grad()
    def features(self, images: torch.Tensor, *, lensed: bool = False) -> torch.Tensor:
        """Pooled features of whole images, as the probes read them: ``(B, C, H, W)`` floats in [0, 1] at
        ``image_size`` -> ``(B, num_features)``; ``lensed=True`` embeds ``L(x)`` instead of ``x``."""
        if lensed:
            images = self.edit(images)
        return self.embedder(images)

    @torch.no_grad()
    def edit(self, images: torch.Tensor) -> torch.Tensor:
        """The lens's output ``x'`` for ``(B, C, H, W)`` images in [0, 1] (same shape)."""
        if self.lens is None:
            raise ValueError(f"{self.path} was trained without a lens (lens=none): there is nothing to edit with")
        return self.lens(images)


def load(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> TrainedRun:
    """Rebuild a trained run (a run directory or a ``.pt`` checkpoint) without its training data.

    Raises:
        CheckpointError: no readable checkpoint, or one whose spec cannot rebuild its models.
    """
    from shortcutlens.build import build_components, checkpoint_spec, load_weights
    from shortcutlens.eval.features import probe_backbone
    from shortcutlens.eval.source import stem_channels

    path = Path(path)
    state = load_checkpoint(path, map_location="cpu")
    spec = checkpoint_spec(state, path)
    image_size = spec["data"].get("image_size")
    chans = stem_channels(state["backbone"])
    if not image_size or not chans:
        raise CheckpointError(f"checkpoint {path}: cannot tell the image size or channels its models take "
                              f"(data spec {spec['data']})")
    parts = build_components(spec, in_chans=chans, image_size=int(image_size))
    load_weights(parts, state, path)
    run_dir = path if path.is_dir() else path.parent.parent
    config, _ = recorded_config(run_dir)
    embedder = probe_backbone(parts.backbone, parts.pretext, int(image_size))
    run = TrainedRun(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut,
                     config=config or {"spec": spec, "seed": state.get("seed")}, spec=spec,
                     step=int(state.get("step", 0)), in_chans=parts.in_chans, image_size=int(image_size),
                     path=path, embedder=embedder)
    for module in (run.backbone, run.pretext, run.lens, run.embedder):
        if module is not None:
            module.eval()
    return run.to(device)


def lens_arguments(lens: nn.Module, *, img_size: int | None = None) -> dict[str, Any]:
    """Constructor arguments that rebuild ``lens`` (a ``UNetLens``) with the same architecture.

    ``img_size`` only sets the number of levels; without it one that gives the lens's levels is used."""
    stride, levels = int(lens.stride), int(lens.levels)
    # the input, not the output: an erase lens outputs one mask value per pixel, whatever its channels
    return {"in_chans": lens.inc[0].in_channels // stride**2, "img_size": img_size or stride * 4 * 2**levels,
            "width": lens.inc[0].out_channels, "max_levels": levels, "constraint": lens.constraint,
            "budget": float(lens.budget), "clamp": bool(lens.clamp), "stride": stride,
            "edit": lens.edit_kind, "fill_size": int(lens.fill_size)}


def save_lens(lens: nn.Module, path: str | os.PathLike, *, img_size: int | None = None,
              info: dict[str, Any] | None = None) -> Path:
    """Write the lens alone — its name, constructor arguments, weights and ``info`` (where it came from) —
    to ``path`` (atomically). ``img_size``: the side of the images it was trained on."""
    state = {"kind": LENS_FILE_KIND, "name": "unet", "arguments": lens_arguments(lens, img_size=img_size),
             "state_dict": {k: v.detach().cpu() for k, v in lens.state_dict().items()},
             "info": json.loads(json.dumps(info or {}, default=str))}
    return save_checkpoint(state, path)


def load_lens(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> nn.Module:
    """The lens of a lens file (``save_lens``), a training checkpoint or a run directory, in eval mode.

    Raises:
        CheckpointError: no readable file, or a run trained without a lens.
    """
    from shortcutlens.lens import create_lens

    state = load_checkpoint(path, map_location="cpu")
    if state.get("kind") != LENS_FILE_KIND:
        run = load(path)
        if run.lens is None:
            raise CheckpointError(f"{path} was trained without a lens (lens=none): there is no lens to load")
        run.lens.info = {"run": str(run.path), "step": run.step, "image_size": run.image_size}
        return run.lens.to(device)
    lens = create_lens(state["name"], **state["arguments"])
    lens.load_state_dict(state["state_dict"])
    lens.info = dict(state.get("info") or {})  # where it came from: run, step, image size
    return lens.eval().to(device)
