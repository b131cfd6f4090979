"""timm-style backbone names (``resnet50``, ``vit_small_patch16``, ``mixer_b16``) build exactly the model of
the keyword form they stand for, are listed by ``list_backbones()``, and fail clearly when misused."""

from __future__ import annotations

import pytest
import torch

from shortcutlens import create_backbone, list_backbones
from shortcutlens.backbones import ALIASES


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_builds_the_keyword_form(alias):
    base, fixed = ALIASES[alias]
    img = 224 if base != "resnet" else 64
    with torch.device("meta"):  # the giants cost nothing here
        named = create_backbone(alias, img_size=img)
        keyword = create_backbone(base, img_size=img, **fixed)
    assert type(named) is type(keyword)
    assert shapes(named) == shapes(keyword)
    assert named.num_features == keyword.num_features


def test_sizes_by_name_match_the_papers():
    with torch.device("meta"):
        counts = {n: sum(p.numel() for p in create_backbone(n).parameters())
                  for n in ("resnet50", "vit_small_patch16", "vit_base_patch16", "mixer_b16")}
    assert round(counts["resnet50"] / 1e6, 1) == 23.5        # ResNet-50 without its 1000-way fc (25.6M with it)
    assert round(counts["vit_small_patch16"] / 1e6, 2) == 21.66  # Zhai et al. 2022, without head
    assert round(counts["vit_base_patch16"] / 1e6, 2) == 85.80
    # Tolstikhin et al. 2021: Mixer-B/16 is 59.88M with its 1000-class head (768·1000 + 1000); ours has none
    assert round((counts["mixer_b16"] + 768 * 1000 + 1000) / 1e6, 2) == 59.88


def test_names_are_listed_next_to_the_keyword_forms():
    names = list_backbones()
    for expected in ("resnet", "vit", "mixer", "resnet18", "resnet50", "resnetv2_50", "vit_tiny_patch16",
                     "vit_small_patch16", "vit_base_patch16", "vit_large_patch16", "vit_huge_patch14",
                     "vit_giant_patch14", "vit_gigantic_patch14", "mixer_s16", "mixer_b16", "mixer_l16", "mixer_h14"):
        assert expected in names


def test_name_keeps_the_other_keywords():
    model = create_backbone("resnet18", width=0.125, in_chans=1, img_size=32)
    x = torch.rand(2, 1, 32, 32)
    assert model(x).shape == (2, model.num_features)
    assert model.num_features == create_backbone("resnet", depth=18, width=0.125, in_chans=1, img_size=32).num_features
    vit = create_backbone("vit_small_patch16", img_size=32, pool="map")
    assert vit(torch.rand(1, 3, 32, 32)).shape == (1, 384)


def test_resolution_suffix_sets_the_image_size():
    with torch.device("meta"):
        vit = create_backbone("vit_base_patch16_224")
        small = create_backbone("vit_base_patch16_384")
    assert vit.pos_embed.shape[1] == 14 * 14
    assert small.pos_embed.shape[1] == 24 * 24
    with pytest.raises(ValueError, match="is for 224 px images but img_size=384"):
        create_backbone("vit_base_patch16_224", img_size=384)


def test_a_name_cannot_be_contradicted_by_its_keywords():
    with pytest.raises(ValueError, match=r"'resnet50' fixes depth=50; to set depth use create_backbone\('resnet'"):
        create_backbone("resnet50", depth=18)
    with pytest.raises(ValueError, match="'vit_small_patch16' fixes variant='S/16'"):
        create_backbone("vit_small_patch16", variant="B/16")
    # Saying what the name already says is no contradiction.
    with torch.device("meta"):
        assert create_backbone("resnet50", depth=50, version=1).num_features == 2048


def test_unknown_name_lists_every_choice():
    with pytest.raises(ValueError) as err:
        create_backbone("resnet51")
    assert str(err.value) == "Unknown backbone 'resnet51'. Valid backbones: " + ", ".join(list_backbones())
    assert "vit_small_patch16" in str(err.value) and "resnet" in str(err.value)
