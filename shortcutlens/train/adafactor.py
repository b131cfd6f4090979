"""The memory-saving Adafactor variant of "Scaling Vision Transformers".

Zhai, Kolesnikov, Houlsby, Beyer, CVPR 2022, §3.5 (reference code: big_vision
``big_vision/optax.py``, ``scale_by_adafactor``), after Shazeer & Stern, "Adafactor: Adaptive
Learning Rates with Sublinear Memory Cost", ICML 2018. For a ``(R, C)`` weight ``W`` with gradient
``G`` at step ``t``::

    β2_t = min(β2_cap, 1 − t^(−0.8))                    β2 schedule, capped at 0.999
    r ← β2_t·r + (1 − β2_t)·mean_cols(G² + ε)           (R, 1) row statistics
    c ← β2_t·c + (1 − β2_t)·mean_rows(G² + ε)           (1, C) column statistics
    V̂ = r·c / mean(r)                                   rank-1 second moment (never stored)
    U = G / √V̂                                           (optionally RMS-clipped)
    m ← 0.9·m + 0.1·U                                    first moment, kept in bfloat16
    W ← W·(1 − lr·wd) − lr·m                             decoupled weight decay

Memory per ``R×C`` matrix: ``R + C`` floats of second moment plus ``R·C`` bfloat16 of momentum —
2 bytes per parameter instead of Adam's 8, which is what lets ViT-G train.

What ``torch.optim.Adafactor`` already provides is reused: argument checks, the state layout
(``step``, ``row_var`` ``(..., R, 1)``, ``col_var`` ``(..., 1, C)``, ``variance`` for vectors; tensors
of more than two dimensions are factored over their last two) and its initialisation. What the paper
needs and it lacks is written here: the β2 cap, the bfloat16 momentum, and a plain learning rate
(torch's version multiplies the step by the parameter RMS and by ``min(lr, 1/√t)``, the original
"relative step" of Shazeer & Stern that big_vision does not use).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

MOMENTUM_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ScalingAdafactor(torch.optim.Adafactor):
    """Adafactor with a capped β2 schedule and low-precision momentum (Zhai et al. 2022).

    Args:
        params: parameters or parameter groups; a group may override any keyword below.
        lr: learning rate (the loop sets it every step from the schedule).
        beta2_decay: exponent of the β2 schedule ``1 − t^beta2_decay`` (Shazeer & Stern's −0.8).
        beta2_cap: upper bound on β2 (0.999 in the paper).
        eps: added to the squared gradient before averaging (big_vision's 1e-30).
        momentum: EMA coefficient of the first moment, ``None`` for no momentum (the paper's 0.9).
        momentum_dtype: ``"bfloat16"`` (the paper), ``"float16"`` or ``"float32"``.
        clip_threshold: clip each update to this RMS (``None``: no clipping; big_vision's default).
        weight_decay: decoupled decay, applied as ``W·(1 − lr·wd)`` like ``AdamW``.
        maximize: ascend instead of descend.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        *,
        beta2_decay: float = -0.8,
        beta2_cap: float = 0.999,
        eps: float = 1e-30,
        momentum: float | None = 0.9,
        momentum_dtype: str = "bfloat16",
        clip_threshold: float | None = None,
        weight_decay: float = 0.0,
        maximize: bool = False,
    ) -> None:
        if not 0.0 < beta2_cap < 1.0:
            raise ValueError(f"beta2_cap must be in (0, 1), got {beta2_cap}")
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}")
        if momentum_dtype not in MOMENTUM_DTYPES:
            raise ValueError(f"Unknown momentum_dtype '{momentum_dtype}'. Valid dtypes: {', '.join(MOMENTUM_DTYPES)}")
        if clip_threshold is not None and clip_threshold <= 0:
            raise ValueError(f"clip_threshold must be positive or None, got {clip_threshold}")
        super().__init__(params, lr=lr, beta2_decay=beta2_decay, eps=(eps, 1e-3), d=1.0,
                         weight_decay=weight_decay, maximize=maximize)
        extra = {"beta2_cap": beta2_cap, "momentum": momentum, "momentum_dtype": momentum_dtype,
                 "clip_threshold": clip_threshold}
        self.defaults.update(extra)
        for group in self.param_groups:  # groups given explicitly may already override some
            for key, value in extra.items():
                group.setdefault(key, value)

    @staticmethod
    def beta2_at(step: float, *, beta2_decay: float = -0.8, beta2_cap: float = 0.999) -> float:
        """β2 at 1-based ``step``: ``min(cap, 1 − step^decay)``; 0 at step 1 (the first gradient
        is taken as is), 0.999 from step ≈ 5,600 on."""
        return min(beta2_cap, 1.0 - step**beta2_decay)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            row_vars: list[torch.Tensor | None] = []
            col_vars: list[torch.Tensor | None] = []
            variances: list[torch.Tensor | None] = []
            steps: list[torch.Tensor] = []
            self._init_group(group, params, grads, row_vars, col_vars, variances, steps)
            lr, wd = float(group["lr"]), group["weight_decay"]
            eps = group["eps"][0] if isinstance(group["eps"], (tuple, list)) else group["eps"]
            eps = eps or 0.0
            mom, mom_dtype = group["momentum"], MOMENTUM_DTYPES[group["momentum_dtype"]]
            for p, g, row, col, var, step_t in zip(params, grads, row_vars, col_vars, variances, steps):
                if group["maximize"]:
                    g = -g
                step_t += 1
                beta2 = self.beta2_at(step_t.item(), beta2_decay=group["beta2_decay"], beta2_cap=group["beta2_cap"])
                g2 = g.float().square().add_(eps)
                if g.dim() > 1:
                    row.lerp_(g2.mean(dim=-1, keepdim=True).to(row.dtype), 1.0 - beta2)
                    col.lerp_(g2.mean(dim=-2, keepdim=True).to(col.dtype), 1.0 - beta2)
                    # G/√V̂ as G·(r/mean r)^(-1/2)·c^(-1/2): the product r·c of two ~eps statistics would
                    # underflow to 0 (and 0·inf = NaN) for all-zero gradients.
                    r = row.float()
                    update = g.float() * r.div(r.mean(dim=-2, keepdim=True)).rsqrt_() * col.float().rsqrt()
                else:
                    var.lerp_(g2.to(var.dtype), 1.0 - beta2)
                    update = g.float() * var.float().rsqrt()
                if getattr(update, "placements", None) not in (None, getattr(p, "placements", None)):
                    # FSDP2 shards are DTensors: the statistics above are global (DTensor reduces across
                    # ranks), the update is brought back to the parameter's own shard before the in-place steps.
                    update = update.redistribute(p.device_mesh, p.placements)
                if group["clip_threshold"] is not None:
                    rms = update.pow(2).mean().sqrt()
                    update.div_((rms / group["clip_threshold"]).clamp_(min=1.0))
                if mom is not None:
                    state = self.state[p]
                    if "momentum" not in state:
                        state["momentum"] = torch.zeros_like(p, dtype=mom_dtype, memory_format=torch.preserve_format)
                    m = state["momentum"]
                    m.lerp_(update.to(mom_dtype), 1.0 - mom)
                    update = m.float()
                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)
                p.add_(update.to(p.dtype), alpha=-lr)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch casts floating state to the parameter's dtype on load; the momentum stays low precision.
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            dtype = MOMENTUM_DTYPES[group["momentum_dtype"]]
            for p in group["params"]:
                state = self.state.get(p, {})
                if "momentum" in state:
                    state["momentum"] = state["momentum"].to(dtype)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by an optimizer's state tensors (for the memory figures in benchmarks)."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total
