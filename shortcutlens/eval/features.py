"""Feature extraction from a frozen backbone, optionally through the lens, at one or several layers.

``which`` selects what the probe sees (Minderer et al. 2020 probe the concatenation):
``raw`` = F(x), ``lensed`` = F(L(x)), ``concat`` = [F(x), F(L(x))].

``layers`` selects where the features are tapped (the multi-layer probes of Kolesnikov, Zhai, Beyer,
CVPR 2019, who found that the best layer depends on the pretext task): ``"pooled"`` is the backbone's
own ``forward(x)`` (GAP or MAP), ``"layer<i>"`` is intermediate ``i`` of
``forward_intermediates(x, [i])``, average-pooled over space or tokens. Shapes: a feature map
``(B, C, H, W)`` or tokens ``(B, N, C)`` become ``(B, C)``.

A trunk trained on the tiles of a patch task (relative location, jigsaw) is probed on the mean of its
features over the task's 3×3 grid of tiles when it cannot take whole images as it was trained: the task
says so (``Pretext.probe_backbone``; ``probe_backbone`` here asks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from shortcutlens.backbones.interface import native_input_size, pool
from shortcutlens.data.base import Split
from shortcutlens.data.loader import iterate

FEATURE_SOURCES = ("raw", "lensed", "concat")
POOLED = "pooled"


def layer_name(layer: int | str, num_intermediates: int | None = None) -> str:
    """Canonical name of a tap: ``"pooled"``, or ``"layer<i>"`` with negative ``i`` resolved when the
    backbone says how many intermediates it has (``-1`` of a 5-output ResNet is ``"layer4"``)."""
    if isinstance(layer, str):
        if layer == POOLED:
            return layer
        layer = layer.removeprefix("layer")
        try:
            layer = int(layer)
        except ValueError:
            raise ValueError(f"Unknown layer '{layer}'. Valid layers: 'pooled' or an intermediate index") from None
    if layer < 0 and num_intermediates is not None:
        if layer < -num_intermediates:
            raise ValueError(f"layer index {layer} out of range for {num_intermediates} intermediate outputs")
        layer += num_intermediates
    if num_intermediates is not None and layer >= num_intermediates:
        raise ValueError(f"layer index {layer} out of range for {num_intermediates} intermediate outputs")
    return f"layer{layer}"


def parse_layers(layers: Sequence[int | str] | int | str | None, backbone: nn.Module) -> list[str]:
    """``None`` -> ``["pooled"]``; otherwise the canonical name of each requested tap, duplicates removed."""
    if layers is None:
        return [POOLED]
    if isinstance(layers, (int, str)):
        layers = [layers]
    total = getattr(backbone, "num_intermediates", None)
    names: list[str] = []
    for layer in layers:
        name = layer_name(layer, total)
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("ask for at least one layer ('pooled' or an intermediate index)")
    return names


def probe_backbone(backbone: nn.Module, pretext: nn.Module | None, image_size: int) -> nn.Module:
    """The module that embeds whole ``image_size``-px images for a probe: what ``pretext`` says
    (``Pretext.probe_backbone``: a trunk built for a patch task's tiles is probed on the mean of its features
    over the 3×3 grid), else ``backbone`` itself.

    Raises:
        ValueError: a backbone that runs only its own size (MLP-Mixer) that matches neither the images nor
            the tiles of ``pretext``.
    """
    if pretext is not None:
        probed = pretext.probe_backbone(backbone, image_size)
        if probed is not backbone:
            return probed
    native = native_input_size(backbone)
    if native is None or not native[1] or native[0] == (image_size, image_size):
        return backbone  # any size (ResNet), a ViT that resamples its position table, or built for these images
    (h, w), geometry = native[0], pretext.geometry(image_size) if pretext is not None else None
    tiles = (f"; {type(pretext).__name__} cuts {geometry.patch}x{geometry.patch} tiles from them"
             if geometry is not None else "")
    raise ValueError(
        f"{type(backbone).__name__} was built for {h}x{w} inputs and runs no other size, so it cannot embed "
        f"{image_size}x{image_size} images{tiles}. Probe it on images of the size it was built for, or, for a "
        "trunk trained on a patch task's tiles, on images whose 3×3 grid gives tiles of that size"
    )


def check_input_size(backbone: nn.Module, x: torch.Tensor) -> None:
    """A clear error before a backbone that runs only its own input size (MLP-Mixer) is fed another."""
    native = native_input_size(backbone)
    if native is None or not native[1] or tuple(x.shape[-2:]) == native[0]:
        return
    (h, w) = native[0]
    raise ValueError(
        f"{type(backbone).__name__} was built for {h}x{w} inputs and runs no other size; got "
        f"{x.shape[-2]}x{x.shape[-1]} images. A trunk trained on a patch task's tiles embeds whole images "
        "through shortcutlens.eval.features.probe_backbone (the mean of its features over the 3×3 grid)"
    )


def _taps(backbone: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if POOLED in names:
        out[POOLED] = backbone(x).float()
    indices = [int(n[len("layer"):]) for n in names if n != POOLED]
    if indices:
        if not hasattr(backbone, "forward_intermediates"):
            raise ValueError(f"{type(backbone).__name__} has no forward_intermediates; tap layer 'pooled' only")
        for i, t in zip(indices, backbone.forward_intermediates(x, indices)):
            out[f"layer{i}"] = pool(t).float()
    return out


@torch.no_grad()
def extract_layers(
    backbone: nn.Module,
    split: Split,
    *,
    layers: Sequence[str] = (POOLED,),
    device: torch.device,
    batch_size: int = 512,
    lens: nn.Module | None = None,
    which: str = "raw",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    amp: bool = False,
    progress: bool = False,
    desc: str = "features",
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One pass over ``split`` tapping every layer in ``layers`` (canonical names, see ``parse_layers``).

    Args:
        transform: applied to each float ``[0, 1]`` batch ``(B, C, H, W)`` on the device before the
            lens (shortcut injection, channel adaptation); ``None`` for the images as they are.
    Returns:
        ``{layer: (N, D_layer)}`` float32 on the CPU (``(N, 2·D_layer)`` for ``concat``), labels ``(N,)``.
    """
    if which not in FEATURE_SOURCES:
        raise ValueError(f"Unknown feature source '{which}'. Valid sources: {', '.join(FEATURE_SOURCES)}")
    if which != "raw" and lens is None:
        raise ValueError(f"feature source '{which}' needs a lens, and this run has none")
    was_training = backbone.training
    backbone.eval()
    lens_training = lens.training if lens is not None else False
    if lens is not None:
        lens.eval()
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    labels = []
    total = (len(split) + batch_size - 1) // batch_size
    try:
        for x, y in tqdm(iterate(split, batch_size=batch_size, device=device), total=total, desc=desc,
                         disable=not progress, leave=False):
            if transform is not None:
                x = transform(x)
            if not labels:
                check_input_size(backbone, x)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                parts = []
                if which in ("raw", "concat"):
                    parts.append(_taps(backbone, x, layers))
                if which in ("lensed", "concat"):
                    parts.append(_taps(backbone, lens(x), layers))
            for name in layers:
                feats[name].append(torch.cat([p[name] for p in parts], dim=1).cpu())
            labels.append(y.cpu())
    finally:
        backbone.train(was_training)
        if lens is not None:
            lens.train(lens_training)
    if not labels:
        empty = torch.zeros(0, 0)
        return {name: empty for name in layers}, torch.zeros(0, dtype=torch.long)
    return {name: torch.cat(v) for name, v in feats.items()}, torch.cat(labels)
