"""Feature extraction from a frozen backbone, optionally through the lens, at one or several layers.

``which`` selects what the probe sees (Minderer et al. 2020 probe the concatenation):
``raw`` = F(x), ``lensed`` = F(L(x)), ``concat`` = [F(x), F(L(x))].

``layers`` selects where the features are tapped (the multi-layer probes of Kolesnikov, Zhai, Beyer,
CVPR 2019, who found that the best layer depends on the pretext task): ``"pooled"`` is the backbone's
own ``forward(x)`` (GAP or MAP), ``"layer<i>"`` is intermediate ``i`` of
``forward_intermediates(x, [i])``, average-pooled over space or tokens. Shapes: a feature map
``(B, C, H, W)`` or tokens ``(B, N, C)`` become ``(B, C)``.

A trunk trained on the tiles of a patch task (relative location, jigsaw) is probed on the mean of its
features over the task's 3×3 grid of tiles when it cannot take whole images as it was trained
(``probe_backbone``, ``TileMeanBackbone``); see ``probe_backbone`` for why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from pretexts.patch_grid import TILES, GridGeometry, centred_patches
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


def pool(t: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> mean over space; ``(B, N, C)`` -> mean over tokens; ``(B, C)`` unchanged."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    if t.ndim == 2:
        return t
    raise ValueError(f"cannot pool a feature tensor of shape {tuple(t.shape)}")


def native_input_size(backbone: nn.Module) -> tuple[tuple[int, int], bool] | None:
    """The input side ``(H, W)`` a backbone was built for, and whether it runs *only* that size.

    An MLP-Mixer declares ``img_size`` and runs nothing else (its token-mixing MLPs fix the number of
    patches): ``((H, W), True)``. A ViT's position table is laid out for ``grid × patch_size`` pixels;
    other sizes its patch divides are accepted with a resampled table: ``((H, W), False)``. A fully
    convolutional backbone (ResNet) declares neither and takes any size: ``None``.
    """
    size = getattr(backbone, "img_size", None)
    if size is not None:
        return (tuple(size) if not isinstance(size, int) else (size, size)), True
    grid, patch = getattr(backbone, "grid", None), getattr(backbone, "patch_size", None)
    if grid is not None and isinstance(patch, int):
        return (grid[0] * patch, grid[1] * patch), False
    return None


class TileMeanBackbone(nn.Module):
    """A trunk trained on 3×3-grid tiles, probed on whole images: features are the mean of the trunk's
    features over the 9 tiles of the evaluation cut (``pretexts.patch_grid.centred_patches``: grid centred
    in the image, each tile centred in its cell, no jitter).

    Doersch, Gupta, Efros, "Unsupervised Visual Representation Learning by Context Prediction", ICCV 2015,
    and Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles", ECCV
    2016, transfer the trunk the pretext trained on tiles. A convolutional trunk can simply be run on the
    whole image; an MLP-Mixer built for tiles cannot (its token-mixing MLPs fix the number of patches), and a
    ViT's position table would have to be stretched to a grid it never saw. Running the trunk on exactly
    the inputs it was trained on and averaging over the grid is the whole-image feature both can give.

    Shapes: ``forward`` ``(B, C, S, S) -> (B, D)``; ``forward_intermediates`` returns ``(B, C_i)`` per tap
    (each tile's tap pooled as ``pool`` does, then averaged over the tiles). Inputs already of the tile
    size go straight to the trunk, so a pretext's ``embed`` (which cuts its own tiles) works through this
    wrapper too.
    """

    def __init__(self, trunk: nn.Module, geometry: GridGeometry) -> None:
        super().__init__()
        self.trunk = trunk
        self.geometry = geometry
        self.num_features = trunk.num_features

    @property
    def num_intermediates(self) -> int:
        return self.trunk.num_intermediates

    def tiles(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B·9, C, P, P)``, the evaluation cut, tiles of one image consecutive."""
        s = self.geometry.image_size
        if tuple(x.shape[-2:]) != (s, s):
            p = self.geometry.patch
            raise ValueError(
                f"{type(self.trunk).__name__} trained on {p}x{p} tiles is probed on the 3×3 grid of tiles of "
                f"{s}x{s} images (or on {p}x{p} tiles directly); got {x.shape[-2]}x{x.shape[-1]} inputs"
            )
        tiles = centred_patches(x, self.geometry)
        return tiles.reshape(x.shape[0] * TILES, *tiles.shape[2:])

    def _is_tile(self, x: torch.Tensor) -> bool:
        return tuple(x.shape[-2:]) == (self.geometry.patch, self.geometry.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._is_tile(x):
            return self.trunk(x)
        return self.trunk(self.tiles(x)).reshape(x.shape[0], TILES, -1).mean(dim=1)

    def forward_intermediates(self, x: torch.Tensor, layers=None) -> list[torch.Tensor]:
        if self._is_tile(x):
            return self.trunk.forward_intermediates(x, layers)
        outs = self.trunk.forward_intermediates(self.tiles(x), layers)
        return [pool(t).reshape(x.shape[0], TILES, -1).mean(dim=1) for t in outs]


def probe_backbone(backbone: nn.Module, pretext: nn.Module | None, image_size: int) -> nn.Module:
    """The module that embeds whole ``image_size``-px images for a probe: ``backbone`` itself, or a
    ``TileMeanBackbone`` when it was built for the tiles of a patch pretext.

    Relative location and jigsaw train the trunk on the tiles of a 3×3 grid (``build_components`` builds
    it for the tile side), and the papers transfer that trunk (Doersch et al., ICCV 2015; Noroozi &
    Favaro, ECCV 2016). When the backbone's own input size (``native_input_size``) is smaller than the
    image and equals the side of ``pretext``'s tiles for ``image_size``, the probe's features are the mean
    of the backbone's features over the grid's tiles, cut as at evaluation (``centred_patches``: no
    jitter). A fully convolutional backbone (ResNet) and one built for the whole image are returned as
    they are, so their features are unchanged.

    Raises:
        ValueError: a backbone that runs only its own size (MLP-Mixer) that neither matches the images nor
            the tiles of ``pretext``.
    """
    native = native_input_size(backbone)
    if native is None:
        return backbone
    (h, w), strict = native
    if (h, w) == (image_size, image_size):
        return backbone
    geometry = pretext.geometry(image_size) if pretext is not None and hasattr(pretext, "geometry") else None
    if geometry is not None and h == w == geometry.patch < image_size:
        return TileMeanBackbone(backbone, geometry)
    if not strict:
        return backbone  # a ViT resamples its position table to the images
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


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    split: Split,
    *,
    device: torch.device,
    batch_size: int = 512,
    lens: nn.Module | None = None,
    which: str = "raw",
    amp: bool = False,
    progress: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features ``(N, D)`` (``(N, 2D)`` for ``concat``) as float32 on the CPU, and labels ``(N,)``."""
    feats, labels = extract_layers(backbone, split, layers=(POOLED,), device=device, batch_size=batch_size,
                                   lens=lens, which=which, amp=amp, progress=progress, desc=desc)
    return feats[POOLED], labels
