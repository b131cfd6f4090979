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

from pretexts import PRETEXTS, Pretext, create_pretext
from shortcutlens.backbones import create_backbone
from shortcutlens.data import ImageData, Split, create_dataset
from shortcutlens.data.base import seeded_split
from shortcutlens.data.shortcuts import Shortcut, channels_after, create_shortcut
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
    """The dataset of ``spec["data"]``; its ``train_size`` (None or 0: all) sets ``data.pretrain``.

    ``train_size`` is handled here, for every source: pretext training draws from a seeded subset of
    that many ``train`` images (a data-size axis for scaling laws, Zhai et al., CVPR 2022), while the
    linear probe and the evaluators keep the whole labelled ``train`` split.
    """
    name, kw = _split(spec["data"])
    train_size = kw.pop("train_size", None)
    kw.setdefault("seed", seed)
    data = create_dataset(name, **kw)
    if train_size:
        data.pretrain = train_subset(data.train, int(train_size), seed=int(kw["seed"]), name=name)
    return data


def train_subset(train: Split, size: int, *, seed: int, name: str = "the dataset") -> Split:
    """``size`` images of ``train`` picked by a permutation seeded with ``seed`` (kept in split order).

    The first ``size`` entries of one permutation: for a given seed, smaller subsets are nested in
    larger ones, so a data-size sweep adds images rather than swapping them.
    """
    if size < 0 or size > len(train):
        raise ValueError(
            f"data.train_size={size} is not in [0, {len(train)}]: {name}'s train split has {len(train)} images "
            "(after carving the validation split); use null or 0 for all of them"
        )
    keep, _ = seeded_split(len(train), size, seed=seed)
    return train.subset(keep)


def build_components(spec: dict[str, Any], *, in_chans: int, image_size: int) -> Components:
    """Backbone, pretext (with its head), lens and shortcut for images of ``in_chans`` × ``image_size``.

    The shortcut may change the channel count (chromatic aberration makes grayscale colour), so the
    backbone and lens are built for the channels *after* it. The backbone is built for the images it is
    trained on: the tiles of a patch task (``trunk_input_size``), which an MLP-Mixer needs (its
    token-mixing MLPs fix the number of patches) and a ViT's position table is sized for.
    """
    name, kw = _split(spec.get("shortcut") or {"name": "none"})
    shortcut = create_shortcut(name, **kw)
    chans = channels_after(shortcut, in_chans)
    name, kw = _split(spec["backbone"])
    pretext_name, pretext_kw = _split(spec["pretext"])
    trunk_size = trunk_input_size(pretext_name, pretext_kw, image_size)
    backbone = create_backbone(name, in_chans=chans, img_size=trunk_size, **kw)
    pretext = create_pretext(pretext_name, num_features=backbone.num_features, **pretext_kw)
    name, kw = _split(spec.get("lens") or {"name": "none"})
    lens = create_lens(name, in_chans=chans, img_size=image_size, **kw)  # the lens edits whole images, before any tiling
    return Components(backbone, pretext, lens, shortcut, chans, image_size)


def trunk_input_size(name: str, kwargs: dict[str, Any], image_size: int) -> int:
    """Side of the images the backbone sees in training: what the pretext registered as ``name`` declares
    for a task built with ``kwargs`` (``Pretext.trunk_input_size``, a class method: the tile side for
    relative location and jigsaw, which run the trunk on 3×3-grid tiles; ``image_size`` otherwise).

    A plugin registered as a factory function rather than a ``Pretext`` class declares nothing, and its
    trunk sees whole images.
    """
    builder = PRETEXTS.get(name)
    task = builder if isinstance(builder, type) and issubclass(builder, Pretext) else Pretext
    return int(task.trunk_input_size(image_size, **kwargs))
