"""Optimizers and learning-rate schedules for the training loop.

Schedules are plain functions of the global step (nanoGPT style): the loop sets each parameter
group's learning rate from ``lr_at(step)`` before every step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from shortcutlens.train.adafactor import ScalingAdafactor
from shortcutlens.train.rsqrt_schedule import rsqrt_lr

OPTIMIZERS = ("sgd", "adamw", "adam", "adafactor")
SCHEDULES = ("cosine", "constant", "rsqrt")


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Decay matrices and convolution kernels; never biases or normalisation parameters."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    groups: list[dict], *, name: str, lr: float, momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    if name == "adafactor":  # Zhai et al. 2022: factored second moment, beta2 <= 0.999, bf16 momentum
        return ScalingAdafactor(groups, lr=lr, momentum=momentum)
    raise ValueError(f"Unknown optimizer '{name}'. Valid optimizers: {', '.join(OPTIMIZERS)}")


def lr_at(step: int, *, base_lr: float, total_steps: int, warmup_steps: int, schedule: str = "cosine", min_lr: float = 0.0,
          cooldown_steps: int = 0, timescale: int = 10_000) -> float:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``min_lr`` (or constant).

    ``schedule="rsqrt"``: reciprocal square root with ``timescale`` and a linear cooldown to 0 over the
    last ``cooldown_steps`` (``rsqrt_schedule.rsqrt_lr``; ``min_lr`` unused).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule '{schedule}'. Valid schedules: {', '.join(SCHEDULES)}")
    if schedule == "rsqrt":
        return rsqrt_lr(step, base_lr=base_lr, total_steps=total_steps, warmup_steps=warmup_steps,
                        cooldown_steps=cooldown_steps, timescale=timescale)
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
