"""Build the components of a run from a plain ``spec`` (names and keyword arguments).

The spec is what a checkpoint stores, so the probe and the visualiser rebuild exactly the models
that were trained without seeing the Hydra config::

    {"data": {"name": "fashion_mnist", ...}, "backbone": {"name": "resnet", "depth": 18, ...},
     "pretext": {"name": "rotation", ...}, "lens": {"name": "unet", ...}, "shortcut": {"name": "arrow", ...}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from pretexts import Pretext, create_pretext
from shortcutlens.backbones import create_backbone
from shortcutlens.data import ImageData, create_dataset
from shortcutlens.data.shortcuts import Shortcut, create_shortcut
from shortcutlens.lens import create_lens


def _split(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"component spec {cfg} has no 'name'")
    return cfg.pop("name"), cfg


@dataclass
class Components:
    backbone: nn.Module
    pretext: Pretext
    lens: nn.Module | None
    shortcut: Shortcut | None
    in_chans: int
    image_size: int


def build_data(spec: dict[str, Any], *, seed: int = 0) -> ImageData:
    name, kw = _split(spec["data"])
    kw.setdefault("seed", seed)
    return create_dataset(name, **kw)


def build_components(spec: dict[str, Any], *, in_chans: int, image_size: int) -> Components:
    """Backbone, pretext (with its head), lens and shortcut for images of ``in_chans`` × ``image_size``.

    The shortcut may change the channel count (chromatic aberration makes grayscale colour), so the
    backbone and lens are built for the channels *after* it.
    """
    name, kw = _split(spec.get("shortcut") or {"name": "none"})
    shortcut = create_shortcut(name, **kw)
    chans = shortcut.out_channels(in_chans) if shortcut is not None else in_chans
    name, kw = _split(spec["backbone"])
    backbone = create_backbone(name, in_chans=chans, img_size=image_size, **kw)
    name, kw = _split(spec["pretext"])
    pretext = create_pretext(name, num_features=backbone.num_features, **kw)
    name, kw = _split(spec.get("lens") or {"name": "none"})
    lens = create_lens(name, in_chans=chans, img_size=pretext_input_size(pretext, image_size), **kw)
    return Components(backbone, pretext, lens, shortcut, chans, image_size)


def pretext_input_size(pretext: Pretext, image_size: int) -> int:
    """Side of the images the lens edits: the pretext's view size when it declares one."""
    return int(getattr(pretext, "lens_input_size", lambda s: s)(image_size))
