"""Plumbing shared by the patch-based backbones (ViT, MLP-Mixer): variant strings and patch grids.

Variants are selected big_vision-style as ``"<size>/<patch>"`` — ``"B/16"`` is the base model on
16×16 patches (Dosovitskiy et al., ICLR 2021; Zhai et al., "Scaling Vision Transformers", CVPR 2022;
Tolstikhin et al., "MLP-Mixer", NeurIPS 2021). The size picks a row of the model's table; any patch
size is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from shortcutlens.backbones.interface import resolve_layer_indices

R = TypeVar("R")


def parse_variant(variant: str, table: Mapping[str, R], *, model: str) -> tuple[str, R, int]:
    """Split ``"g/14"`` into ``("g", table["g"], 14)``.

    Raises:
        ValueError: malformed string, unknown size (the message lists every size) or a patch < 1.
    """
    size, sep, patch = variant.partition("/")
    valid = ", ".join(table)
    if not sep or not patch.strip().isdigit():
        raise ValueError(f"{model} variant '{variant}' must look like '<size>/<patch>', e.g. 'B/16'. Sizes: {valid}")
    if size not in table:
        raise ValueError(f"Unknown {model} size '{size}' in variant '{variant}'. Valid sizes: {valid}")
    patch_size = int(patch)
    if patch_size < 1:
        raise ValueError(f"{model} patch size must be positive, got {patch_size}")
    return size, table[size], patch_size


def patch_grid(height: int, width: int, patch_size: int, *, model: str) -> tuple[int, int]:
    """``(H, W) -> (H / p, W / p)``; an image the patch does not tile exactly is a clear error."""
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"{model}: image size {height}x{width} is not divisible by the patch size {patch_size}; "
            f"pick an image size that is a multiple of {patch_size} or another patch size (variant '<size>/<patch>')"
        )
    return height // patch_size, width // patch_size


def block_intermediates(model, x, layers) -> list:
    """Tokens after the stem (index 0) and after each block (1..depth) of a block-stacked token model
    (``embed``, ``blocks``, ``_block``, ``norm``, ``depth``, ``num_intermediates``); the last includes the
    final LayerNorm, so it equals ``forward_features``. Stops after the deepest requested block."""
    indices = resolve_layer_indices(layers, model.num_intermediates)
    last = max(indices)
    outs = {0: model.embed(x)}
    x = outs[0]
    for i, block in enumerate(model.blocks, start=1):
        if i > last:
            break
        x = model._block(block, x)
        outs[i] = model.norm(x) if i == model.depth else x
    return [outs[i] for i in indices]
