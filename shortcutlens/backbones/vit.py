"""Vision Transformer backbones, Ti to G, as scaled by Zhai et al.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (the architecture) and
Zhai, Kolesnikov, Houlsby, Beyer, "Scaling Vision Transformers", CVPR 2022 (the sizes up to G/14,
pooling by global average or multi-head attention instead of a class token). Reference code:
google-research/big_vision ``big_vision/models/vit.py``.

Sizes are rows of ``VARIANTS`` and are selected with a variant string ``"<size>/<patch>"``::

    create_backbone("vit", variant="g/14", img_size=224, pool="map")

Without a head and with ``pool="gap"`` the paper's counts are Ti/16 5.5M, S/16 21.7M, B/16 85.8M,
L/16 303M, g/14 1011M and G/14 1843M parameters (``tests/test_vit.py`` pins them on the ``meta``
device). A MAP head adds one attention block and one MLP of its own.

Shapes (``B`` images, ``N = (H/p)·(W/p)`` patches, width ``D``): ``forward`` ``(B, C, H, W) -> (B, D)``;
``forward_features`` ``-> (B, N, D)`` normalised tokens, ``(B, 1 + N, D)`` with the class token
first for ``pool="tok"``. Any ``H, W`` the patch divides is accepted: learned position embeddings are
resampled bicubically and sin-cos ones recomputed when the grid differs from ``img_size``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shortcutlens.backbones import BACKBONES
from shortcutlens.backbones.patches import BlockStack, parse_variant, patch_grid
from shortcutlens.backbones.stochastic_depth import DropPath, drop_path_rates


@dataclass(frozen=True)
class ViTSize:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int


# Zhai et al. 2022, Table 2 (Ti/S/B/L/H from Dosovitskiy et al. and Touvron et al.).
VARIANTS: dict[str, ViTSize] = {
    "Ti": ViTSize(width=192, depth=12, mlp_dim=768, num_heads=3),
    "S": ViTSize(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "B": ViTSize(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": ViTSize(width=1024, depth=24, mlp_dim=4096, num_heads=16),
    "H": ViTSize(width=1280, depth=32, mlp_dim=5120, num_heads=16),
    "g": ViTSize(width=1408, depth=40, mlp_dim=6144, num_heads=16),
    "G": ViTSize(width=1664, depth=48, mlp_dim=8192, num_heads=16),
}
POOLS = ("gap", "map", "tok")
POSEMBS = ("learn", "sincos2d")
LN_EPS = 1e-6  # big_vision / Flax LayerNorm default


def posemb_sincos_2d(grid_h: int, grid_w: int, dim: int, *, temperature: float = 10_000.0,
                     device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings ``(1, grid_h·grid_w, dim)`` (MoCo v3, big_vision).

    A quarter of the channels each hold sin/cos of the column and of the row coordinate.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(grid_h, dtype=torch.float32, device=device),
                          torch.arange(grid_w, dtype=torch.float32, device=device), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32, device=device) / (dim // 4))
    x = x.reshape(-1, 1) * omega
    y = y.reshape(-1, 1) * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)[None]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, Nq, D), (B, Nk, D), (B, Nk, D) -> (B, Nq, D)`` multi-head scaled dot-product attention."""
    b, nq, d = q.shape
    nk = k.shape[1]
    q = q.view(b, nq, num_heads, d // num_heads).transpose(1, 2)
    k = k.view(b, nk, num_heads, d // num_heads).transpose(1, 2)
    v = v.view(b, nk, num_heads, d // num_heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)  # flash / memory-efficient kernels where available
    return out.transpose(1, 2).reshape(b, nq, d)


class SelfAttention(nn.Module):
    """``(B, N, D) -> (B, N, D)``; one fused ``D -> 3D`` projection for queries, keys and values."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(_attend(q, k, v, self.num_heads))


class Mlp(nn.Sequential):
    """``(B, N, D) -> (B, N, D)`` through a hidden GELU layer of ``hidden`` units."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-LayerNorm encoder block: ``x + attn(LN(x))`` then ``x + mlp(LN(x))``, each branch with
    stochastic depth."""

    def __init__(self, dim: int, mlp_dim: int, num_heads: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MAPHead(nn.Module):
    """Multi-head attention pooling (Zhai et al. 2022, §3.3; big_vision ``MAPHead``).

    A learned probe token attends to all tokens, then passes through a residual MLP:
    ``(B, N, D) -> (B, D)``. The result does not depend on the order of the tokens.
    """

    def __init__(self, dim: int, mlp_dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.probe = nn.Parameter(torch.empty(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(self.probe.expand(x.shape[0], -1, -1))
        k, v = self.kv(x).chunk(2, dim=-1)
        y = self.proj(_attend(q, k, v, self.num_heads))
        y = y + self.mlp(self.norm(y))
        return y[:, 0]


class VisionTransformer(BlockStack):
    """ViT feature extractor following the shared backbone interface (no classification head).

    Args:
        width, depth, mlp_dim, num_heads: the size (a row of ``VARIANTS``).
        patch_size: side of the square patches; must divide the image size.
        img_size: input side (or ``(H, W)``), fixes the learned position-embedding grid.
        in_chans: input channels.
        pool: ``"gap"`` (mean of tokens), ``"map"`` (attention pooling) or ``"tok"`` (class token).
        posemb: ``"learn"`` or ``"sincos2d"`` (fixed, no parameters).
        drop_path_rate: stochastic depth of the last block (linear from 0 at the first).
        grad_checkpointing: recompute each block in the backward pass (activation memory ≈ one block
            plus the block inputs, for ≈ one extra forward pass of compute).
    """

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        mlp_dim: int,
        num_heads: int,
        patch_size: int,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        pool: str = "gap",
        posemb: str = "learn",
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"Unknown ViT pool '{pool}'. Valid pools: {', '.join(POOLS)}")
        if posemb not in POSEMBS:
            raise ValueError(f"Unknown ViT posemb '{posemb}'. Valid posembs: {', '.join(POSEMBS)}")
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.grid = patch_grid(h, w, patch_size, model="ViT")
        self.patch_size, self.pool, self.posemb = patch_size, pool, posemb
        self.num_features = self.width = width
        self.depth = depth
        self.num_prefix_tokens = 1 if pool == "tok" else 0
        self.grad_checkpointing = grad_checkpointing

        self.patch_embed = nn.Conv2d(in_chans, width, patch_size, stride=patch_size)
        num_patches = self.grid[0] * self.grid[1]
        if posemb == "learn":
            self.pos_embed = nn.Parameter(torch.empty(1, num_patches, width))
        else:
            self.register_buffer("pos_embed", posemb_sincos_2d(*self.grid, width), persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "tok" else None
        self.blocks = nn.ModuleList(
            Block(width, mlp_dim, num_heads, rate) for rate in drop_path_rates(drop_path_rate, depth)
        )
        self.norm = nn.LayerNorm(width, eps=LN_EPS)
        self.map_head = MAPHead(width, mlp_dim, num_heads) if pool == "map" else None
        self._init_weights()

    def _init_weights(self) -> None:
        # big_vision: xavier-uniform dense kernels, LeCun-normal patch kernel, N(0, 1/D) position embedding.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        fan_in = self.patch_embed.weight[0].numel()
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(self.patch_embed.bias)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.normal_(self.pos_embed, std=1.0 / math.sqrt(self.width))
        if self.map_head is not None:
            nn.init.xavier_uniform_(self.map_head.probe.view(1, -1))

    def _position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``(1, grid_h·grid_w, D)``: the stored table, or one resampled for another grid."""
        if (grid_h, grid_w) == self.grid:
            return self.pos_embed
        if self.posemb == "sincos2d":
            return posemb_sincos_2d(grid_h, grid_w, self.width, device=self.pos_embed.device).to(self.pos_embed.dtype)
        table = self.pos_embed.reshape(1, *self.grid, self.width).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, self.width)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, [1 +] N, D)`` patch tokens plus position embeddings (class token first)."""
        grid_h, grid_w = patch_grid(x.shape[-2], x.shape[-1], self.patch_size, model="ViT")
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = x + self._position_embedding(grid_h, grid_w).to(x.dtype)
        if self.cls_token is not None:  # big_vision adds no position to the class token
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return x

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, [1 +] N, D) -> (B, D)`` with the configured pooling."""
        if self.pool == "tok":
            return tokens[:, 0]
        if self.pool == "map":
            return self.map_head(tokens)
        return tokens.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, num_features)`` pooled features."""
        return self.pool_tokens(self.forward_features(x))


@BACKBONES.register("vit")
def vit(*, variant: str = "Ti/16", width: int | None = None, depth: int | None = None, mlp_dim: int | None = None,
        num_heads: int | None = None, **kwargs: Any) -> VisionTransformer:
    """``create_backbone("vit", variant="B/16", img_size=224, pool="map")``; other keyword arguments
    (``img_size``, ``in_chans``, ``pool``, ``posemb``, ``drop_path_rate``, ``grad_checkpointing``) are
    ``VisionTransformer``'s.

    ``width``/``depth``/``mlp_dim``/``num_heads`` override the variant's row (tiny models for tests
    and CPU sweeps); the patch size always comes from the variant string.
    """
    _, size, patch_size = parse_variant(variant, VARIANTS, model="ViT")
    model = VisionTransformer(width=width or size.width, depth=depth or size.depth, mlp_dim=mlp_dim or size.mlp_dim,
                              num_heads=num_heads or size.num_heads, patch_size=patch_size, **kwargs)
    model.variant = variant
    return model
