"""ViT backbones: paper parameter counts (on ``meta``), every size × pool, pooling, errors, interface."""

from __future__ import annotations

import pytest
import torch

from shortcutlens import create_backbone, list_backbones
from shortcutlens.backbones.vit import POOLS, VARIANTS, MAPHead, posemb_sincos_2d

TINY = {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Zhai et al. 2022, Table 2: parameters without head, GAP pooling, 224 px.
@pytest.mark.parametrize(
    "variant, millions",
    [("Ti/16", 5.5), ("S/16", 21.7), ("B/16", 85.8), ("L/16", 303), ("g/14", 1011), ("G/14", 1843)],
)
def test_parameter_counts_match_the_paper(variant: str, millions: float) -> None:
    with torch.device("meta"):
        model = create_backbone("vit", variant=variant, img_size=224, pool="gap")
    assert n_params(model) == pytest.approx(millions * 1e6, rel=0.01)


def test_map_head_adds_one_attention_block_and_mlp() -> None:
    with torch.device("meta"):
        gap = create_backbone("vit", variant="B/16", img_size=224, pool="gap")
        map_ = create_backbone("vit", variant="B/16", img_size=224, pool="map")
    d, mlp = 768, 3072
    extra = d + (4 * d * d + 4 * d) + 2 * d + (2 * d * mlp + mlp + d)  # probe, attention, LN, MLP
    assert n_params(map_) - n_params(gap) == extra


@pytest.mark.parametrize("size", list(VARIANTS))
@pytest.mark.parametrize("pool", POOLS)
def test_every_variant_and_pool_builds_and_runs_on_meta(size: str, pool: str) -> None:
    row = VARIANTS[size]
    with torch.device("meta"):
        full = create_backbone("vit", variant=f"{size}/16", img_size=32, pool=pool, in_chans=1)
        # the same block shapes at depth 2 keep the (Python-dispatched) meta forward/backward fast
        model = create_backbone("vit", variant=f"{size}/16", img_size=32, pool=pool, in_chans=1, depth=2)
        out = model(torch.empty(2, 1, 32, 32))
        out.sum().backward()
    assert len(full.blocks) == row.depth and full.num_features == row.width
    assert full.blocks[0].mlp[0].out_features == row.mlp_dim and full.blocks[0].attn.num_heads == row.num_heads
    assert out.shape == (2, row.width) == (2, model.num_features)
    assert model.patch_embed.weight.grad is not None


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("posemb", ["learn", "sincos2d"])
def test_tiny_forward_backward_is_finite(pool: str, posemb: str) -> None:
    torch.manual_seed(0)
    model = create_backbone("vit", variant="Ti/4", img_size=16, pool=pool, posemb=posemb, in_chans=3,
                            drop_path_rate=0.1, **TINY)
    x = torch.randn(3, 3, 16, 16)
    out = model(x)
    assert out.shape == (3, 32)
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", ["Ti/8", "S/8"])
def test_real_small_variants_train_a_step(variant: str) -> None:
    torch.manual_seed(0)
    model = create_backbone("vit", variant=variant, img_size=16, pool="map")
    out = model(torch.randn(2, 3, 16, 16))
    out.mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_map_pooling_is_permutation_invariant_over_tokens() -> None:
    torch.manual_seed(0)
    head = MAPHead(dim=32, mlp_dim=64, num_heads=4)
    torch.nn.init.normal_(head.probe)
    tokens = torch.randn(2, 10, 32)
    perm = torch.randperm(10)
    out, out_perm = head(tokens), head(tokens[:, perm])
    torch.testing.assert_close(out, out_perm, atol=1e-5, rtol=1e-5)
    # ...but it does look at the tokens: changing one changes the pooled vector.
    changed = tokens.clone()
    changed[:, 3] += 1.0
    assert not torch.allclose(head(changed), out)


def test_tok_pool_prepends_a_class_token() -> None:
    model = create_backbone("vit", variant="Ti/4", img_size=16, pool="tok", **TINY)
    x = torch.randn(2, 3, 16, 16)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 1 + 16, 32)
    torch.testing.assert_close(model(x), tokens[:, 0])


def test_indivisible_image_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        create_backbone("vit", variant="B/16", img_size=225)
    model = create_backbone("vit", variant="Ti/4", img_size=16, **TINY)
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        model(torch.randn(1, 3, 18, 16))


def test_bad_names_list_the_choices() -> None:
    assert "vit" in list_backbones()
    with pytest.raises(ValueError, match="Valid sizes: Ti, S, B, L, H, g, G"):
        create_backbone("vit", variant="X/16")
    with pytest.raises(ValueError, match="<size>/<patch>"):
        create_backbone("vit", variant="B")
    with pytest.raises(ValueError, match="Valid pools: gap, map, tok"):
        create_backbone("vit", variant="Ti/16", pool="cls")


def test_other_image_sizes_resample_position_embeddings() -> None:
    torch.manual_seed(0)
    model = create_backbone("vit", variant="Ti/4", img_size=32, **TINY).eval()
    assert model(torch.randn(2, 3, 16, 24)).shape == (2, 32)
    # resampling the 8x8 table to 8x8 is the identity, so the native size uses the table as is
    table = model._position_embedding(8, 8)
    assert table is model.pos_embed


def test_sincos_position_embedding_is_fixed_and_well_formed() -> None:
    model = create_backbone("vit", variant="Ti/4", img_size=16, posemb="sincos2d", **TINY)
    assert "pos_embed" not in dict(model.named_parameters())
    table = posemb_sincos_2d(4, 4, 32)
    assert table.shape == (1, 16, 32)
    # token (row 0, col 0): sin parts 0, cos parts 1; every token distinct
    torch.testing.assert_close(table[0, 0], torch.tensor([0.0] * 8 + [1.0] * 8 + [0.0] * 8 + [1.0] * 8))
    assert torch.cdist(table[0], table[0]).add(torch.eye(16)).min() > 0


def test_forward_intermediates() -> None:
    torch.manual_seed(0)
    model = create_backbone("vit", variant="Ti/4", img_size=16, **TINY).eval()
    x = torch.randn(2, 3, 16, 16)
    outs = model.forward_intermediates(x)
    assert len(outs) == model.num_intermediates == 3
    assert all(o.shape == (2, 16, 32) for o in outs)
    torch.testing.assert_close(outs[-1], model.forward_features(x))
    last_two = model.forward_intermediates(x, 2)
    torch.testing.assert_close(last_two[0], outs[1])
    assert len(model.forward_intermediates(x, [0, -1])) == 2
    with pytest.raises(ValueError):
        model.forward_intermediates(x, [5])


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = create_backbone("vit", variant="Ti/4", img_size=16, pool="map", **TINY)
    x = torch.randn(2, 3, 16, 16)
    model(x).pow(2).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).pow(2).sum().backward()
    for g, r in zip((p.grad for p in model.parameters()), ref):
        torch.testing.assert_close(g, r)


def test_stochastic_depth_only_in_training() -> None:
    torch.manual_seed(0)
    model = create_backbone("vit", variant="Ti/4", img_size=16, drop_path_rate=0.5, **TINY)
    x = torch.randn(8, 3, 16, 16)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))
