"""Counted FLOPs: exact for linear layers, analytic for ViT-B/16, CPU attention included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shortcutlens import create_backbone
from shortcutlens.flops import count_step_flops, training_compute


def test_linear_layer_counts_are_exact() -> None:
    model = nn.Linear(32, 16)
    flops = count_step_flops(model, torch.randn(8, 32))
    assert flops.forward == 2 * 8 * 32 * 16
    # backward: weight gradient only (the input needs no gradient)
    assert flops.backward == 2 * 8 * 32 * 16
    assert flops.per_image == flops.total / 8
    assert model.weight.grad is None  # cleared afterwards
    assert count_step_flops(model, torch.randn(8, 32), backward=False).backward == 0


def test_vit_b16_forward_matches_the_analytic_count_on_meta() -> None:
    n, d, m, depth = 196, 768, 3072, 12
    per_block = n * (4 * d * d + 2 * d * m) + 2 * n * n * d  # projections, MLP, QKᵀ and AV (multiply-adds)
    analytic = 2 * (depth * per_block + n * d * 3 * 16 * 16)  # + patch embedding; 2 FLOPs per multiply-add
    with torch.device("meta"):
        model = create_backbone("vit", variant="B/16", img_size=224)
        flops = count_step_flops(model, torch.empty(2, 3, 224, 224))
    assert flops.forward == pytest.approx(2 * analytic, rel=0.005)
    assert flops.total / flops.forward == pytest.approx(3.0, rel=0.02)  # backward ≈ 2 × forward


def test_cpu_attention_is_counted_like_on_meta() -> None:
    kw = {"variant": "Ti/4", "img_size": 16, "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2}
    cpu = count_step_flops(create_backbone("vit", **kw), torch.randn(2, 3, 16, 16), backward=False)
    with torch.device("meta"):
        meta = count_step_flops(create_backbone("vit", **kw), torch.empty(2, 3, 16, 16), backward=False)
    assert cpu.forward == meta.forward
    assert any("attention" in op for op in cpu.by_op)


def test_training_compute() -> None:
    assert training_compute(1.5e9, 1000) == 1.5e12
