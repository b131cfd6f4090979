"""MLP-Mixer backbones, S to H.

Tolstikhin, Houlsby, Kolesnikov, Beyer, Zhai, Unterthiner, Yung, Steiner, Keysers, Uszkoreit,
Lucic, Dosovitskiy, "MLP-Mixer: An all-MLP Architecture for Vision", NeurIPS 2021. Reference code:
google-research/big_vision ``big_vision/models/mlp_mixer.py``.

A per-patch linear stem turns the image into ``S`` tokens of ``C`` channels; each block mixes
tokens (one MLP over the ``S`` axis, shared by all channels) and then channels (one MLP over the
``C`` axis, shared by all tokens), both pre-LayerNorm with GELU and a skip connection; global average
pooling at the end. Sizes are rows of ``VARIANTS`` (the paper's Table 1), selected as
``create_backbone("mixer", variant="H/14")``. With a 1000-class head, as the paper counts: S/16 18.5M,
B/16 59.9M, L/16 208M, H/14 431M parameters at 224 px (``tests/test_mixer.py``).

Shapes (``B`` images, ``S = (H/p)·(W/p)`` tokens): ``forward`` ``(B, C_in, H, W) -> (B, C)``;
``forward_features`` ``-> (B, S, C)``. The token-mixing MLP has ``S`` inputs, so unlike ViT a Mixer
only accepts the image size it was built for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shortcutlens.backbones import BACKBONES
from shortcutlens.backbones.patches import BlockStack, parse_variant, patch_grid
from shortcutlens.backbones.stochastic_depth import DropPath, drop_path_rates


@dataclass(frozen=True)
class MixerSize:
    hidden: int      # C, channels per token
    depth: int       # number of Mixer layers
    tokens_mlp: int  # D_S, hidden units of the token-mixing MLP
    channels_mlp: int  # D_C, hidden units of the channel-mixing MLP


# Tolstikhin et al. 2021, Table 1.
VARIANTS: dict[str, MixerSize] = {
    "S": MixerSize(hidden=512, depth=8, tokens_mlp=256, channels_mlp=2048),
    "B": MixerSize(hidden=768, depth=12, tokens_mlp=384, channels_mlp=3072),
    "L": MixerSize(hidden=1024, depth=24, tokens_mlp=512, channels_mlp=4096),
    "H": MixerSize(hidden=1280, depth=32, tokens_mlp=640, channels_mlp=5120),
}
LN_EPS = 1e-6


class MlpBlock(nn.Sequential):
    """``(..., d) -> (..., d)`` via ``hidden`` GELU units."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class MixerBlock(nn.Module):
    """``(B, S, C) -> (B, S, C)``: token mixing then channel mixing, each ``x + MLP(LN(x))``."""

    def __init__(self, num_tokens: int, hidden: int, tokens_mlp: int, channels_mlp: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.token_mlp = MlpBlock(num_tokens, tokens_mlp)
        self.norm2 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.channel_mlp = MlpBlock(hidden, channels_mlp)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # mix along S, per channel
        x = x + self.drop_path(y)
        return x + self.drop_path(self.channel_mlp(self.norm2(x)))


class MlpMixer(BlockStack):
    """MLP-Mixer feature extractor following the shared backbone interface (no classification head).

    Args:
        hidden, depth, tokens_mlp, channels_mlp: the size (a row of ``VARIANTS``).
        patch_size: side of the square patches; must divide the image size.
        img_size: input side (or ``(H, W)``); fixes the number of tokens the token-mixing MLPs see.
        in_chans: input channels.
        drop_path_rate: stochastic depth of the last block (linear from 0 at the first).
        grad_checkpointing: recompute each block in the backward pass.
    """

    def __init__(
        self,
        *,
        hidden: int,
        depth: int,
        tokens_mlp: int,
        channels_mlp: int,
        patch_size: int,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.grid = patch_grid(h, w, patch_size, model="MLP-Mixer")
        self.img_size = (h, w)
        self.patch_size = patch_size
        self.num_features = hidden
        self.depth = depth
        self.grad_checkpointing = grad_checkpointing
        num_tokens = self.grid[0] * self.grid[1]
        self.stem = nn.Conv2d(in_chans, hidden, patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(
            MixerBlock(num_tokens, hidden, tokens_mlp, channels_mlp, rate) for rate in drop_path_rates(drop_path_rate, depth)
        )
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        # big_vision/Flax defaults: LeCun-normal kernels, zero biases.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                nn.init.trunc_normal_(m.weight, std=fan_in**-0.5)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, S, C)`` per-patch linear embedding."""
        h, w = x.shape[-2:]
        patch_grid(h, w, self.patch_size, model="MLP-Mixer")
        if (h, w) != self.img_size:
            raise ValueError(
                f"MLP-Mixer was built for {self.img_size[0]}x{self.img_size[1]} images but got {h}x{w}: its "
                "token-mixing MLPs fix the number of patches; build it with img_size equal to the input size"
            )
        return self.stem(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C)`` global average of the tokens."""
        return self.forward_features(x).mean(dim=1)


@BACKBONES.register("mixer")
def mixer(*, variant: str = "S/16", hidden: int | None = None, depth: int | None = None, tokens_mlp: int | None = None,
          channels_mlp: int | None = None, **kwargs: Any) -> MlpMixer:
    """``create_backbone("mixer", variant="B/16", img_size=224)``; other keyword arguments (``img_size``,
    ``in_chans``, ``drop_path_rate``, ``grad_checkpointing``) are ``MlpMixer``'s.

    ``hidden``/``depth``/``tokens_mlp``/``channels_mlp`` override the variant's row (tiny models for
    tests and CPU sweeps); the patch size always comes from the variant string.
    """
    _, size, patch_size = parse_variant(variant, VARIANTS, model="MLP-Mixer")
    model = MlpMixer(hidden=hidden or size.hidden, depth=depth or size.depth, tokens_mlp=tokens_mlp or size.tokens_mlp,
                     channels_mlp=channels_mlp or size.channels_mlp, patch_size=patch_size, **kwargs)
    model.variant = variant
    return model
