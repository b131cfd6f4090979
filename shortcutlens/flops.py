"""Counted floating-point operations of one training step, for scaling laws and benchmarks.

Zhai et al., "Scaling Vision Transformers" (CVPR 2022) plot error against training compute; here
compute is *counted*, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` records every
matrix multiplication, convolution and attention kernel of a forward and backward pass (one
multiply-add = 2 FLOPs; element-wise operations are not counted, as is customary). Training compute
is then ``flops_per_step × steps`` (the batch is already inside the step).

Counting works on the ``meta`` device, so ViT-G costs neither memory nor time::

    with torch.device("meta"):
        model = create_backbone("vit", variant="G/14", img_size=224)
        flops = count_step_flops(model, torch.empty(8, 3, 224, 224))

PyTorch's counter has no formula for the CPU flash-attention kernel that
``F.scaled_dot_product_attention`` dispatches to on the CPU (it does for the CUDA kernels and the
math path), so one is added here; without it a ViT's attention would be missing from CPU counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_sdpa(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any, *args: Any,
                       out_shape: Any = None, **kw: Any) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    extra: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward
    return extra


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also knows the CPU attention kernels."""
    return FlopCounterMode(display=False, custom_mapping=_extra_formulas())


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step on one batch. ``by_op`` sums forward and backward per operator name."""

    forward: int
    backward: int
    batch_size: int
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.forward + self.backward

    @property
    def per_image(self) -> float:
        return self.total / max(1, self.batch_size)


def _default_loss(output: Any) -> torch.Tensor:
    out = output[0] if isinstance(output, (tuple, list)) else output
    return out.float().pow(2).mean()


def count_step_flops(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    backward: bool = True,
) -> StepFlops:
    """Count the FLOPs of ``loss_fn(model(inputs))`` and its backward pass.

    Args:
        model: any module (on any device, ``meta`` included); its gradients are cleared afterwards.
        inputs: one batch ``(B, ...)``; ``B`` is recorded for ``per_image``.
        loss_fn: output -> scalar (default: mean square, whose cost is negligible next to the model).
        backward: also count the backward pass.
    """
    loss_fn = loss_fn or _default_loss
    counter = flop_counter()
    with counter:
        if backward:
            loss = loss_fn(model(inputs))
        else:
            with torch.no_grad():
                loss = loss_fn(model(inputs))
        forward = counter.get_total_flops()
        if backward:
            loss.backward()
    total = counter.get_total_flops()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    if backward:
        model.zero_grad(set_to_none=True)
    return StepFlops(forward=int(forward), backward=int(total - forward), batch_size=int(inputs.shape[0]), by_op=by_op)


def training_compute(flops_per_step: float, steps: int) -> float:
    """Total training FLOPs: counted FLOPs of one step (its batch included) times the steps."""
    return float(flops_per_step) * int(steps)
