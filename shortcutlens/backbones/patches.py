"""Plumbing shared by the patch-based backbones (ViT, MLP-Mixer): variant strings, patch grids and the
walk through a stack of token blocks (``BlockStack``).

Variants are selected big_vision-style as ``"<size>/<patch>"`` — ``"B/16"`` is the base model on
16×16 patches (Dosovitskiy et al., ICLR 2021; Zhai et al., "Scaling Vision Transformers", CVPR 2022;
Tolstikhin et al., "MLP-Mixer", NeurIPS 2021). The size picks a row of the model's table; any patch
size is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

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


class BlockStack(nn.Module):
    """What the block-stacked token models (ViT, MLP-Mixer) share: gradient checkpointing per block, and
    ``forward_features``/``forward_intermediates`` read from one walk through the blocks.

    A subclass sets ``embed`` (``(B, C, H, W) -> (B, S, D)`` tokens), ``blocks``, ``norm`` (the final
    LayerNorm), ``depth`` and ``grad_checkpointing``.
    """

    blocks: nn.ModuleList
    norm: nn.Module
    depth: int
    grad_checkpointing: bool

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass: activation memory ≈ one block plus the block inputs,
        for ≈ one extra forward pass of compute."""
        self.grad_checkpointing = enable

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, S, D)`` normalised output tokens."""
        return self.forward_intermediates(x, [-1])[0]

    @property
    def num_intermediates(self) -> int:
        return 1 + self.depth

    def forward_intermediates(self, x: torch.Tensor, layers: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """Tokens after the embedding (index 0) and after each block (1..depth); the last includes the final
        LayerNorm, so it equals ``forward_features``. Stops after the deepest requested block.

        Args:
            layers: indices to return (negative counts from the end), an int ``n`` for the last ``n``,
                or ``None`` for all.
        Returns:
            list of ``(B, S, D)`` tensors, in the order of the requested indices.
        """
        indices = resolve_layer_indices(layers, self.num_intermediates)
        last = max(indices)
        outs = {0: self.embed(x)}
        x = outs[0]
        for i, block in enumerate(self.blocks, start=1):
            if i > last:
                break
            x = self._block(block, x)
            outs[i] = self.norm(x) if i == self.depth else x
        return [outs[i] for i in indices]
