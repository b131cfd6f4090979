"""Helpers of the shared backbone interface (docs/architecture.md, "Contracts"), used by every backbone
and by whoever reads one (probes, pretexts, evaluators) without knowing which backbone it is.

- ``resolve_layer_indices``: the ``layers`` argument of ``forward_intermediates`` (timm's convention:
  ``None`` for all, an int ``n`` for the last ``n``, or a list of indices, negative from the end);
- ``pool``: an intermediate output (a feature map or tokens) averaged to one vector per image;
- ``native_input_size``: the input size a backbone was built for, and whether it runs only that size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def resolve_layer_indices(layers: int | Sequence[int] | None, total: int) -> list[int]:
    """Normalise a ``layers`` argument (None, last-n int, or index list) to indices in ``[0, total)``, in
    the order asked."""
    if layers is None:
        return list(range(total))
    if isinstance(layers, int):
        if not 1 <= layers <= total:
            raise ValueError(f"layers={layers}: ask for between 1 and {total} layers")
        return list(range(total - layers, total))
    out = []
    for i in layers:
        j = i + total if i < 0 else i
        if not 0 <= j < total:
            raise ValueError(f"layer index {i} out of range for {total} intermediate outputs")
        out.append(j)
    return out


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
