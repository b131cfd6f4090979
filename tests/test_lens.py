"""The U-Net lens: identity at initialisation, constraints, sizes, checkpoint round-trip."""

import pytest
import torch

from shortcutlens import create_lens, list_lenses
from shortcutlens.checkpoint import load_checkpoint, save_checkpoint
from shortcutlens.lens import UNetLens, reverse_gradient


@pytest.mark.parametrize("size,chans", [(8, 1), (13, 3), (32, 1), (64, 3)])
def test_zero_initialised_lens_is_exactly_identity(size, chans):
    lens = create_lens("unet", in_chans=chans, img_size=size, width=8)
    x = torch.rand(3, chans, size, size)
    assert torch.equal(lens(x), x)
    assert torch.equal(lens.residual(x), torch.zeros_like(x))


def test_depth_adapts_to_image_size():
    assert UNetLens(img_size=8, width=4).levels == 1
    assert UNetLens(img_size=32, width=4).levels == 3
    assert UNetLens(img_size=224, width=4, max_levels=4).levels == 4
    with pytest.raises(ValueError, match="at least 8 px"):
        UNetLens(img_size=7)


def test_strided_lens_folds_pixel_blocks_and_edits_at_full_resolution():
    lens = UNetLens(in_chans=3, img_size=32, width=4, stride=2)
    assert lens.levels == 2  # depth follows the folded 16 px side
    assert lens.inc[0].in_channels == 12 and lens.out.out_channels == 12
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(lens(x), x)  # still the identity at initialisation
    r = _perturbed(lens, 1.0).raw_residual(x)
    assert r.shape == x.shape
    # pixel_shuffle: one output value per pixel, so the four pixels of a 2x2 block differ
    blocks = torch.nn.functional.pixel_unshuffle(r, 2).view(2, 3, 4, 16, 16)
    assert (blocks.std(dim=2) > 0).float().mean() > 0.99
    with pytest.raises(ValueError, match="divisor of the image size 30"):
        UNetLens(img_size=30, stride=4)
    with pytest.raises(ValueError, match="after stride 2"):
        UNetLens(img_size=14, stride=2)


def _perturbed(lens: UNetLens, scale: float) -> UNetLens:
    torch.manual_seed(0)
    with torch.no_grad():
        lens.out.weight.normal_(0, scale)
        lens.out.bias.normal_(0, scale)
    return lens


def test_budget_caps_mean_absolute_edit_per_image():
    lens = _perturbed(UNetLens(in_chans=1, img_size=16, width=4, budget=0.02, clamp=False), 1.0)
    r = lens.residual(torch.rand(5, 1, 16, 16))
    per_image = r.abs().mean(dim=(1, 2, 3))
    assert torch.allclose(per_image, torch.full_like(per_image, 0.02), rtol=1e-4)
    small = _perturbed(UNetLens(in_chans=1, img_size=16, width=4, budget=10.0, clamp=False), 1e-3)
    assert torch.equal(small.residual(x := torch.rand(2, 1, 16, 16)), small.raw_residual(x))  # under budget: untouched


def test_penalty_constraint_leaves_residual_unscaled_and_clamp_holds_range():
    lens = _perturbed(UNetLens(in_chans=1, img_size=16, width=4, constraint="penalty"), 1.0)
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(lens.residual(x), lens.raw_residual(x))
    out = lens(x)
    assert out.min() >= 0 and out.max() <= 1


def test_gradient_reversal_negates_and_scales():
    x = torch.randn(4, requires_grad=True)
    (reverse_gradient(x, 0.5) * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, -0.5 * torch.arange(4.0))


def test_lens_checkpoint_round_trip(tmp_path):
    lens = _perturbed(UNetLens(in_chans=3, img_size=16, width=4), 0.1)
    save_checkpoint({"lens": lens.state_dict()}, tmp_path / "lens.pt")
    other = UNetLens(in_chans=3, img_size=16, width=4)
    other.load_state_dict(load_checkpoint(tmp_path / "lens.pt")["lens"])
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(other.edit(x), lens.edit(x))


def test_registry_lists_lenses_and_bad_constraint():
    assert {"none", "unet"} <= set(list_lenses())
    assert create_lens("none") is None
    with pytest.raises(ValueError, match="Valid constraints: penalty, budget"):
        create_lens("unet", constraint="nope")
    with pytest.raises(ValueError, match="Valid lenss|Valid lenses|none, unet"):
        create_lens("vae")
