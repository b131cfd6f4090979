"""Stochastic depth: drop a residual branch for whole samples during training.

Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016. Residual branch ``f`` becomes
``x + mask·f(x)/(1-p)`` with one Bernoulli(1-p) draw per sample, so the expectation is unchanged and
evaluation needs no rescaling. Rates grow linearly with depth (the first block is almost never
dropped), as in DeiT and big_vision's ViT.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """``(B, ...) -> (B, ...)``: zero whole samples with probability ``rate``, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Linearly increasing rates ``0 … max_rate`` over ``depth`` blocks."""
    if depth == 1:
        return [max_rate]
    return [max_rate * i / (depth - 1) for i in range(depth)]
