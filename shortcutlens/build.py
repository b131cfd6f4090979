"""Build the components of a run from a plain ``spec`` (names and keyword arguments).

The spec is what a checkpoint stores, so the probe and the visualiser rebuild exactly the models
that were trained without seeing the Hydra config::

    {"data": {"name": "fashion_mnist", ...}, "backbone": {"name": "resnet", "depth": 18, ...},
     "pretext": {"name": "rotation", ...}, "lens": {"name": "unet", ...}, "shortcut": {"name": "arrow", ...}}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from pretexts import PRETEXTS, Pretext, create_pretext
from shortcutlens.backbones import create_backbone
from shortcutlens.checkpoint import CheckpointError
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


def checkpoint_spec(state: dict[str, Any], checkpoint: str | os.PathLike) -> dict[str, Any]:
    """A copy of the component ``spec`` a loaded checkpoint ``state`` stores; ``CheckpointError`` when it has
    none (without it the models cannot be rebuilt)."""
    spec = dict(state.get("spec") or {})
    if "backbone" not in spec or "data" not in spec:
        raise CheckpointError(f"checkpoint {checkpoint} has no component 'spec'; cannot rebuild its models")
    return spec


def load_weights(parts: Components, state: dict[str, Any], checkpoint: str | os.PathLike, *,
                 which: Sequence[str] = ("backbone", "pretext", "lens"), optional: Sequence[str] = ()) -> None:
    """Load a checkpoint's weights into the models ``build_components`` rebuilt from its spec.

    ``which``: the parts to load; one the spec has none of (``lens=none``) is skipped, and so is one in
    ``optional`` that the checkpoint holds no weights for. ``CheckpointError``, naming the checkpoint and
    the part, when other weights are missing (a spec that names a lens, a checkpoint without lens
    weights), or do not fit the model their spec describes (another model's weights beside this spec).
    """
    for name in which:
        module = getattr(parts, name)
        if module is None or (name in optional and name not in state):
            continue
        if name not in state:
            raise CheckpointError(f"checkpoint {checkpoint}'s spec names a {name} but holds no {name} weights")
        try:
            module.load_state_dict(state[name])
        except RuntimeError as err:  # the last line of torch's message names the mismatch
            detail = [line.strip() for line in str(err).splitlines() if line.strip()][-1][:200]
            raise CheckpointError(f"checkpoint {checkpoint}: the {name} rebuilt from its spec does not fit its "
                                  f"weights ({detail})") from err


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
