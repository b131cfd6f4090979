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


# ---- edit=erase: the lens may pull a pixel towards a local grey, never paint ----

def _erase_lens(fill_size: int = 3, **kw) -> UNetLens:
    return _perturbed(UNetLens(in_chans=3, img_size=16, width=4, edit="erase", fill_size=fill_size, clamp=False, **kw), 1.0)


def test_erase_lens_starts_as_identity_and_predicts_one_mask_per_pixel():
    lens = UNetLens(in_chans=3, img_size=32, width=4, stride=2, edit="erase")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(lens(x), x)
    assert lens.out.out_channels == 4  # one mask value per pixel of each 2x2 block, shared by the 3 channels


def test_erase_fill_is_the_grey_mean_of_the_window():
    lens = UNetLens(in_chans=3, img_size=16, width=4, edit="erase", fill_size=3)
    x = torch.rand(1, 3, 16, 16)
    grey = x.mean(dim=1)[0]
    fill = lens.fill(x)[0, 0]
    for i, j in [(0, 0), (5, 7), (15, 3), (15, 15)]:  # corners average only the pixels that exist
        window = grey[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
        assert fill[i, j] == pytest.approx(window.mean().item(), abs=1e-6)
    assert torch.allclose(UNetLens(in_chans=3, img_size=16, width=4, edit="erase", fill_size=1).fill(x)[:, 0], x.mean(dim=1))


def test_erased_pixels_lie_between_the_image_and_its_fill():
    lens = _erase_lens(constraint="penalty")  # no budget scaling: the raw mask is used as predicted
    x = torch.rand(4, 3, 16, 16)
    out, fill = lens(x), lens.fill(x)
    step = fill - x
    moved = step.abs() > 1e-2
    fraction = torch.where(moved, (out - x) / step, torch.zeros_like(x))
    assert fraction.min() >= -1e-5 and fraction.max() <= 1 + 1e-5
    assert ((fraction > 0.01) & moved).any() and ((fraction > 0.99) & moved).any()  # it does edit, and fully
    # one mask value per pixel: where every channel moved, they moved by the same fraction
    every = moved.all(dim=1)
    spread = fraction.amax(dim=1) - fraction.amin(dim=1)
    assert spread[every].max() < 1e-4


def test_erase_lens_cannot_draw_on_a_flat_image_and_keeps_its_budget():
    lens = _erase_lens()
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(lens(flat), flat)  # nothing to erase: the fill is the image
    budgeted = _erase_lens(budget=0.01)
    r = budgeted.residual(torch.rand(3, 3, 16, 16))
    assert torch.allclose(r.abs().mean(dim=(1, 2, 3)), torch.full((3,), 0.01), rtol=1e-4)


def test_erase_lens_refuses_bad_arguments():
    with pytest.raises(ValueError, match="Valid edits: residual, erase"):
        UNetLens(edit="paint")
    with pytest.raises(ValueError, match="positive odd"):
        UNetLens(edit="erase", fill_size=4)


def test_erase_mask_keeps_its_gradient_below_zero():
    # A plain clamp would give a pixel whose mask went negative no gradient, and it could never be erased again.
    lens = UNetLens(in_chans=3, img_size=16, width=4, edit="erase", constraint="penalty", clamp=False)
    with torch.no_grad():
        lens.out.bias.fill_(-1.0)  # every mask value below 0: the lens is still the identity
    x = torch.rand(2, 3, 16, 16)
    out = lens(x)
    assert torch.equal(out, x)
    ((out - lens.fill(x)) ** 2).sum().backward()  # erasing would lower this
    assert lens.out.bias.grad.item() < 0  # so gradient descent raises the mask towards erasing


def test_an_erase_lens_file_rebuilds_an_erase_lens(tmp_path):
    from shortcutlens.api import load_lens, save_lens

    lens = _erase_lens(fill_size=5, stride=2, budget=0.03)
    alone = load_lens(save_lens(lens, tmp_path / "erase.pt", img_size=16))
    assert (alone.edit_kind, alone.fill_size, alone.inc[0].in_channels) == ("erase", 5, 12)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(alone.edit(x), lens.edit(x))
