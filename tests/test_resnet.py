"""ResNet v1/v2: parameter counts against the published models, shapes of the backbone interface,
stems, width multiplier and errors. Full-size models are built on the ``meta`` device (no memory, no
compute); forward passes use narrow widths and 32 px images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shortcutlens import create_backbone
from shortcutlens.backbones.resnet import ResNet


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(**kw) -> ResNet:
    with torch.device("meta"):
        return create_backbone("resnet", **kw)


def test_published_parameter_counts() -> None:
    # torchvision's resnet50 / resnet18 have 25,557,032 / 11,689,512 parameters, of which the
    # 1000-way head is 2,049,000 / 513,000: without it 23,508,032 and 11,176,512.
    r50 = on_meta(depth=50, version=1, img_size=224)
    assert n_params(r50) == 23_508_032
    assert r50.num_features == 2048
    r18 = on_meta(depth=18, version=1, img_size=224)
    assert n_params(r18) == 11_176_512
    assert r18.num_features == 512
    # v2 (pre-activation) moves the norms but keeps the size: within 0.5% of 23.5M.
    assert abs(n_params(on_meta(depth=50, version=2, img_size=224)) - 23.5e6) / 23.5e6 < 0.005


def test_width_multiplier_scales_channels_and_parameters() -> None:
    full = n_params(on_meta(depth=50, img_size=224))
    half = on_meta(depth=50, width=0.5, img_size=224)
    double = on_meta(depth=50, width=2.0, img_size=224)
    assert (half.num_features, double.num_features) == (1024, 4096)
    # Almost every weight is a conv between two scaled widths: parameters grow as width².
    assert 0.24 < n_params(half) / full < 0.26
    assert 3.9 < n_params(double) / full < 4.1
    assert on_meta(depth=18, width=0.125).num_features == 64


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("depth", [18, 50])
def test_shapes_small_stem(depth: int, version: int) -> None:
    torch.manual_seed(0)
    model = create_backbone("resnet", depth=depth, version=version, width=0.25, in_chans=3, img_size=32).eval()
    expansion = 1 if depth == 18 else 4
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pooled = model(x)
        fmap = model.forward_features(x)
        inter = model.forward_intermediates(x)
    assert model.num_features == 128 * expansion
    assert pooled.shape == (2, model.num_features)
    assert fmap.shape == (2, model.num_features, 4, 4)  # small stem: no early downsampling, 3 stride-2 stages
    assert [tuple(t.shape) for t in inter] == [
        (2, 16, 32, 32), (2, 16 * expansion, 32, 32), (2, 32 * expansion, 16, 16),
        (2, 64 * expansion, 8, 8), (2, 128 * expansion, 4, 4),
    ]
    # The interface is consistent: the last intermediate is forward_features, forward is its mean.
    torch.testing.assert_close(inter[-1], fmap)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))
    assert torch.isfinite(pooled).all()


def test_v1_blocks_end_in_relu_v2_blocks_do_not() -> None:
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        v1 = create_backbone("resnet", depth=18, version=1, width=0.25, img_size=32).eval().forward_intermediates(x)
        v2 = create_backbone("resnet", depth=18, version=2, width=0.25, img_size=32).eval().forward_intermediates(x)
    assert all((t >= 0).all() for t in v1)
    # Pre-activation: a stage's output is the raw residual sum (negative values), and only the
    # final norm + ReLU makes the last feature map non-negative.
    assert all((t < 0).any() for t in v2[1:4])
    assert (v2[-1] >= 0).all()
    v2_model = create_backbone("resnet", depth=18, version=2, img_size=32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in v2_model.stem)
    assert isinstance(v2_model.final_norm[0], nn.BatchNorm2d)


def test_imagenet_stem_and_auto_choice() -> None:
    assert any(isinstance(m, nn.MaxPool2d) for m in create_backbone("resnet", img_size=224, width=0.125).stem)
    assert not any(isinstance(m, nn.MaxPool2d) for m in create_backbone("resnet", img_size=64, width=0.125).stem)
    model = create_backbone("resnet", depth=18, width=0.125, img_size=64, stem="imagenet").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        inter = model.forward_intermediates(x)
    # 7x7 stride-2 conv and a stride-2 max-pool: 4x before the first stage, 32x in all.
    assert [t.shape[-1] for t in inter] == [16, 16, 8, 4, 2]
    assert model(x).shape == (1, 64)


def test_grayscale_input_and_gradients_reach_every_parameter() -> None:
    model = create_backbone("resnet", depth=18, version=2, width=0.125, in_chans=1, img_size=16)
    out = model(torch.rand(4, 1, 16, 16))
    assert out.shape == (4, 64)
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_forward_intermediates_layer_selection() -> None:
    model = create_backbone("resnet", depth=18, width=0.125, img_size=16).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        every = model.forward_intermediates(x)
        last_two = model.forward_intermediates(x, 2)
        picked = model.forward_intermediates(x, [-1, 0, 2])
    assert model.num_intermediates == 5
    torch.testing.assert_close(last_two, every[3:])
    torch.testing.assert_close(picked, [every[4], every[0], every[2]])
    with pytest.raises(ValueError, match="between 1 and 5"):
        model.forward_intermediates(x, 6)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, [5])


def test_bad_arguments_name_the_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"Unknown ResNet depth 19\. Valid depths: 18, 34, 50, 101, 152"):
        create_backbone("resnet", depth=19)
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        create_backbone("resnet", version=3)
    with pytest.raises(ValueError, match="Valid stems: auto, imagenet, small"):
        create_backbone("resnet", stem="tiny")
    with pytest.raises(ValueError, match="width must be positive"):
        create_backbone("resnet", width=0)
    with pytest.raises(TypeError):
        create_backbone("resnet", detph=18)  # a typo is not silently ignored
