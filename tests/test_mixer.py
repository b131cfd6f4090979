"""MLP-Mixer backbones: paper parameter counts (on ``meta``), every size, mixing structure, errors."""

from __future__ import annotations

import pytest
import torch

from shortcutlens import create_backbone, list_backbones
from shortcutlens.backbones.mixer import VARIANTS

TINY = {"hidden": 16, "depth": 2, "tokens_mlp": 8, "channels_mlp": 32}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Tolstikhin et al. 2021, Table 1 counts include a 1000-class linear head; backbones carry none.
@pytest.mark.parametrize("variant, millions", [("S/16", 18.5), ("B/16", 59.9), ("L/16", 208), ("H/14", 431)])
def test_parameter_counts_match_the_paper(variant: str, millions: float) -> None:
    with torch.device("meta"):
        model = create_backbone("mixer", variant=variant, img_size=224)
    head = model.num_features * 1000 + 1000
    assert n_params(model) + head == pytest.approx(millions * 1e6, rel=0.01)


@pytest.mark.parametrize("size", list(VARIANTS))
def test_every_variant_builds_and_runs_on_meta(size: str) -> None:
    row = VARIANTS[size]
    with torch.device("meta"):
        full = create_backbone("mixer", variant=f"{size}/8", img_size=32, in_chans=1)
        model = create_backbone("mixer", variant=f"{size}/8", img_size=32, in_chans=1, depth=2)
        out = model(torch.empty(2, 1, 32, 32))
        out.sum().backward()
    assert len(full.blocks) == row.depth and full.num_features == row.hidden
    block = full.blocks[0]
    assert (block.token_mlp[0].in_features, block.token_mlp[0].out_features) == (16, row.tokens_mlp)
    assert block.channel_mlp[0].out_features == row.channels_mlp
    assert out.shape == (2, row.hidden)


def test_tiny_forward_backward_is_finite() -> None:
    torch.manual_seed(0)
    model = create_backbone("mixer", variant="S/4", img_size=16, in_chans=3, drop_path_rate=0.1, **TINY)
    out = model(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, 16)
    out.pow(2).mean().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_real_small_variant_trains_a_step() -> None:
    torch.manual_seed(0)
    model = create_backbone("mixer", variant="S/8", img_size=16)
    out = model(torch.randn(2, 3, 16, 16))
    out.mean().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_only_the_token_mixing_mlp_moves_information_between_patches() -> None:
    torch.manual_seed(0)
    model = create_backbone("mixer", variant="S/4", img_size=16, **{**TINY, "depth": 1}).eval()
    x = torch.randn(1, 3, 16, 16)
    x2 = x.clone()
    x2[..., :4, :4] += 1.0  # perturb patch 0 only
    changed = (model.forward_features(x2) - model.forward_features(x)).abs().amax(-1)[0]
    assert (changed[1:] > 1e-4).all()  # token mixing spreads it to every token
    with torch.no_grad():
        model.blocks[0].token_mlp[2].weight.zero_()
        model.blocks[0].token_mlp[2].bias.zero_()
    changed = (model.forward_features(x2) - model.forward_features(x)).abs().amax(-1)[0]
    assert changed[0] > 1e-4
    torch.testing.assert_close(changed[1:], torch.zeros(15))


def test_pooling_is_the_mean_of_normalised_tokens() -> None:
    model = create_backbone("mixer", variant="S/4", img_size=16, **TINY)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x), model.forward_features(x).mean(1))


def test_image_size_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        create_backbone("mixer", variant="B/16", img_size=100)
    model = create_backbone("mixer", variant="S/4", img_size=16, **TINY)
    with pytest.raises(ValueError, match="built for 16x16 images but got 8x8"):
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="not divisible"):
        model(torch.randn(1, 3, 16, 18))


def test_bad_names_list_the_choices() -> None:
    assert "mixer" in list_backbones()
    with pytest.raises(ValueError, match="Valid sizes: S, B, L, H"):
        create_backbone("mixer", variant="Ti/16")


def test_forward_intermediates_and_checkpointing() -> None:
    torch.manual_seed(0)
    model = create_backbone("mixer", variant="S/4", img_size=16, **TINY)
    x = torch.randn(2, 3, 16, 16)
    outs = model.forward_intermediates(x)
    assert len(outs) == model.num_intermediates == 3 and all(o.shape == (2, 16, 16) for o in outs)
    torch.testing.assert_close(outs[-1], model.forward_features(x))
    torch.testing.assert_close(model.forward_intermediates(x, [-2])[0], outs[1])
    model(x).pow(2).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).pow(2).sum().backward()
    for p, r in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, r)
