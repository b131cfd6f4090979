"""Reciprocal-square-root learning rate with linear warm-up and linear cooldown, and cooldown branches.

Zhai, Kolesnikov, Houlsby, Beyer, "Scaling Vision Transformers", CVPR 2022, §3.6 (reference code:
big_vision ``big_vision/utils.py``, ``create_learning_rate_schedule(decay_type="rsqrt")``)::

    lr(t) = base · min(1, (t + 1)/warmup) · 1/√(1 + max(0, t − warmup)/timescale) · min(1, (T − t)/cooldown)

Until the cooldown starts the rate does not depend on the total length ``T``. So one long run with
checkpoints at ``T_i − cooldown`` yields models trained for every ``T_i``: resume each checkpoint with
``total_steps = T_i`` and let it cool down ("cooldown branches"), instead of one run per length as a
cosine schedule needs. The warm-up convention ``(t + 1)/warmup`` is the one ``optim.lr_at`` uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def rsqrt_lr(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    cooldown_steps: int = 0,
    timescale: int = 10_000,
) -> float:
    """Learning rate at 0-based ``step`` (formula in the module docstring); 0 from ``total_steps`` on.

    Args:
        base_lr: peak rate, reached at the end of the warm-up.
        total_steps: length ``T`` of this run (only the cooldown depends on it).
        warmup_steps: linear warm-up from 0.
        cooldown_steps: linear decay to 0 over the last ``cooldown_steps`` steps (0: none).
        timescale: steps after the warm-up over which the rate falls to ``base/√2``.
    """
    if timescale <= 0:
        raise ValueError(f"rsqrt timescale must be positive, got {timescale}")
    if warmup_steps < 0 or cooldown_steps < 0 or warmup_steps + cooldown_steps > total_steps:
        raise ValueError(
            f"warm-up ({warmup_steps}) and cooldown ({cooldown_steps}) steps must be non-negative and fit in "
            f"total_steps={total_steps}"
        )
    lr = base_lr / math.sqrt(1.0 + max(0, step - warmup_steps) / timescale)
    if warmup_steps > 0:
        lr *= min(1.0, (step + 1) / warmup_steps)
    if cooldown_steps > 0:
        lr *= min(1.0, max(0.0, (total_steps - step) / cooldown_steps))
    return lr


@dataclass(frozen=True)
class CooldownBranch:
    """One training length obtained from the long run.

    Attributes:
        total_steps: this branch's length ``T_i``.
        branch_step: ``T_i − cooldown``: the long run's checkpoint at this step is resumed.
        cooldown_steps: length of this branch's linear cooldown.
    """

    total_steps: int
    branch_step: int
    cooldown_steps: int


def plan_cooldown_branches(
    totals: Sequence[int],
    *,
    cooldown_steps: int | None = None,
    cooldown_fraction: float | None = None,
    warmup_steps: int = 0,
) -> list[CooldownBranch]:
    """Branches for several training lengths, shortest first.

    Give either a fixed ``cooldown_steps`` or a ``cooldown_fraction`` of each length (the paper cools
    down for 50k steps of runs up to millions; a fraction suits sweeps). Each branch must start after
    the warm-up. Run the long run (``max(totals)`` steps, its own cooldown included) saving a
    checkpoint at every ``branch_step``; resume a copy of each with ``steps=total_steps`` and
    ``cooldown_steps`` set.
    """
    if (cooldown_steps is None) == (cooldown_fraction is None):
        raise ValueError("give exactly one of cooldown_steps and cooldown_fraction")
    if cooldown_fraction is not None and not 0.0 < cooldown_fraction < 1.0:
        raise ValueError(f"cooldown_fraction must be in (0, 1), got {cooldown_fraction}")
    branches = []
    for total in sorted(set(totals)):
        cool = cooldown_steps if cooldown_steps is not None else max(1, round(cooldown_fraction * total))
        start = total - cool
        if start < warmup_steps:
            raise ValueError(f"a {total}-step branch would start its {cool}-step cooldown before the "
                             f"{warmup_steps}-step warm-up ends")
        branches.append(CooldownBranch(total_steps=total, branch_step=start, cooldown_steps=cool))
    return branches


def branch_checkpoint_steps(branches: Sequence[CooldownBranch]) -> list[int]:
    """Steps at which the long run must keep a checkpoint (sorted, unique, the longest excluded: it
    cools down inside the long run itself)."""
    longest = max(b.total_steps for b in branches)
    return sorted({b.branch_step for b in branches if b.total_steps != longest})
