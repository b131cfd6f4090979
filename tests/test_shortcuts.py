"""Shortcut injection: each cue lands where its arguments say, and rotates with the image."""

import pytest
import torch

from pretexts import create_pretext
from shortcutlens import create_shortcut, list_shortcuts
from shortcutlens.data.shortcuts import adapt_channels, channels_after, edit_ratio


def test_registry():
    assert {"none", "arrow", "gradient", "chromatic_aberration", "watermark"} <= set(list_shortcuts())
    with pytest.raises(ValueError, match="arrow, chromatic_aberration, gradient, instance_code, none, position_tint, watermark"):
        create_shortcut("logo")


@pytest.mark.parametrize("name", ["arrow", "watermark"])
@pytest.mark.parametrize("position", [(0.2, 0.2), (0.5, 0.75), (0.8, 0.3)])
def test_mark_lands_at_position_with_size_and_intensity(name, position):
    sc = create_shortcut(name, position=position, size=0.25, intensity=0.7)
    out = sc(torch.zeros(2, 1, 32, 32))
    ys, xs = (out[0, 0] > 0).nonzero(as_tuple=True)
    centre = ((ys.min() + ys.max() + 1) / 2 / 32, (xs.min() + xs.max() + 1) / 2 / 32)
    assert abs(centre[0] - position[0]) <= 2 / 32 and abs(centre[1] - position[1]) <= 2 / 32
    assert ys.max() - ys.min() + 1 <= 8 and xs.max() - xs.min() + 1 <= 8  # 0.25 of 32 px
    assert torch.allclose(out[out > 0], torch.tensor(0.7))
    assert torch.equal(out[0], out[1])  # deterministic
    assert torch.equal((out[0] > 0).float(), sc.region(32, 32)[0])


def test_arrow_points_up():
    m = create_shortcut("arrow", position=(0.5, 0.5), size=0.5).mask(32, 32)[0, 0]
    widths = m.sum(1)
    rows = widths.nonzero().flatten()
    head = widths[rows[0] : rows[0] + 4]
    assert torch.all(head[1:] >= head[:-1]) and widths[rows[-1]] < widths[rows].max()  # widens down, then a shaft


def test_arrow_drawn_before_rotation_rotates_with_the_image():
    sc = create_shortcut("arrow")
    rot = create_pretext("rotation", num_features=4, all_rotations=True)
    x = sc(torch.zeros(1, 1, 16, 16))
    views, targets = rot.views(x)
    for v, k in zip(views, targets):
        assert torch.equal(v, torch.rot90(x[0], int(k), dims=(-2, -1)))
    # The four views put the arrow at four different places: orientation is given away.
    positions = {tuple((v[0] > 0).nonzero()[0].tolist()) for v in views}
    assert len(positions) == 4


def test_gradient_ramp_along_vertical_axis():
    out = create_shortcut("gradient", intensity=0.4)(torch.full((1, 1, 10, 6), 0.5))
    col = out[0, 0, :, 0]
    assert torch.all(col[1:] < col[:-1])  # brighter at the top
    assert torch.allclose(out[0, 0], col[:, None].expand(10, 6))  # constant along each row
    assert col[0] - col[-1] == pytest.approx(0.4 * 9 / 10, abs=1e-5)


def test_chromatic_aberration_grows_with_distance_and_keeps_green():
    x = torch.zeros(1, 1, 33, 33)
    x[..., ::4, :] = 1.0  # horizontal stripes
    out = create_shortcut("chromatic_aberration", intensity=0.1)(x)
    assert out.shape == (1, 3, 33, 33)
    assert torch.equal(out[:, 1], x[:, 0])
    fringe = (out[0, 0] - out[0, 2]).abs().mean(1)  # per row
    assert fringe[14:19].mean() < fringe[:5].mean() and fringe[14:19].mean() < fringe[-5:].mean()


def test_position_tint_is_colour_by_position_with_the_grey_image_kept():
    """The tint's colour depends on where a pixel is (red to the right, blue to the left, green at the
    bottom), never on anything else; the channel mean is the input exactly, values stay in [0, 1] with no
    clamping, black and white are untouched, and greying removes the cue."""
    from shortcutlens.lens import grey_fill

    x = torch.rand(3, 1, 20, 30)
    x[..., 0, 0] = 0.0
    x[..., 0, 1] = 1.0
    sc = create_shortcut("position_tint", intensity=2 / 3)
    out = sc(x)
    assert out.shape == (3, 3, 20, 30) and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(grey_fill(out, 1), x, atol=1e-6)
    assert torch.equal(out[..., 0, :2], x[..., 0, :2].expand(-1, 3, -1))
    # the same grey everywhere -> the colour tells the position: k = intensity·(u·(1,0,-1) + v·(-1/2,1,-1/2))
    grey = sc(torch.full((1, 1, 20, 30), 0.5))[0]
    u = (2 * (torch.arange(30) + 0.5) / 30 - 1)[None, :].expand(20, 30)
    v = (2 * (torch.arange(20) + 0.5) / 20 - 1)[:, None].expand(20, 30)
    expected = 0.5 + 0.25 * (2 / 3) * torch.stack([u - v / 2, v, -u - v / 2])
    assert torch.allclose(grey, expected, atol=1e-6)
    assert grey[0, :, -1].mean() > grey[0, :, 0].mean() and grey[2, :, 0].mean() > grey[2, :, -1].mean()
    assert grey[1, -1].mean() > grey[1, 0].mean()
    # at zero strength the tint, like the aberration (the benchmark's clean rows, to float rounding), is
    # grayscale replicated
    assert torch.equal(create_shortcut("position_tint", intensity=0.0)(x), x.expand(-1, 3, -1, -1))
    assert torch.allclose(create_shortcut("chromatic_aberration", intensity=0.0)(x), x.expand(-1, 3, -1, -1), atol=1e-6)
    assert sc.regions(torch.full((1, 1, 20, 30), 0.5))[0, 0, 10, 15] == 0  # no cast at the centre
    assert sc.regions(torch.full((1, 1, 20, 30), 0.5))[0, 0, 0, 0] == 1
    with pytest.raises(ValueError, match=r"intensity must be in \[0, 2/3\]"):
        create_shortcut("position_tint", intensity=0.8)
    with pytest.raises(ValueError, match="needs 1 or 3 channels, got 2"):
        sc(torch.rand(2, 2, 8, 8))


def test_one_channel_rule_for_colour_shortcuts():
    """Backbone, lens and clean images all follow the shortcut's channel count: grayscale is replicated
    (a view, no copy) for a colour-making shortcut, colour is averaged for a grayscale backbone, and a
    channel count with no rule is refused, in chromatic aberration too."""
    gray = torch.rand(2, 1, 8, 8)
    assert channels_after(None, 1) == channels_after(create_shortcut("arrow"), 1) == 1
    assert channels_after(create_shortcut("chromatic_aberration"), 1) == 3
    colour = adapt_channels(gray, 3)
    assert colour.shape == (2, 3, 8, 8) and colour.data_ptr() == gray.data_ptr()
    assert torch.equal(colour[:, 2], gray[:, 0])
    assert adapt_channels(gray, 1) is gray
    assert torch.allclose(adapt_channels(colour, 1), gray)
    with pytest.raises(ValueError, match="cannot feed 2-channel images"):
        adapt_channels(torch.rand(2, 2, 8, 8), 3)
    with pytest.raises(ValueError, match="needs 1 or 3 channels, got 2"):
        create_shortcut("chromatic_aberration")(torch.rand(2, 2, 8, 8))


def test_edit_ratio():
    region = torch.zeros(1, 1, 4, 4)
    region[..., :2, :2] = 1
    edit = torch.full((2, 1, 4, 4), 0.01)
    edit[..., :2, :2] = 0.1
    assert edit_ratio(edit, region) == pytest.approx(10.0)


def test_aberration_regions_follow_each_images_outlines():
    """The aberration's per-image region is where its fringes are: along the object's outline, not inside
    a flat object, not on the background far from it, different between images, and empty at strength 0."""
    x = torch.zeros(2, 1, 64, 64)
    x[0, :, 8:24, 40:56] = 1.0   # a square up and to the right of the optical centre
    x[1, :, 40:56, 8:24] = 1.0   # one down and to the left
    sc = create_shortcut("chromatic_aberration", intensity=0.1)
    regions = sc.regions(x)
    assert regions.shape == (2, 1, 64, 64) and set(regions.unique().tolist()) == {0.0, 1.0}
    near = torch.zeros(64, 64, dtype=torch.bool)
    near[4:28, 36:60] = True     # the first square's box grown by 4 px (its fringes are at most ~3 px wide)
    assert regions[0, 0].bool().any() and not (regions[0, 0].bool() & ~near).any()
    assert regions[0, 0, 16, 48] == 0 and regions[0, 0, 60, 4] == 0  # the square's flat middle, far background
    assert not torch.equal(regions[0], regions[1])
    assert create_shortcut("chromatic_aberration", intensity=0.0).regions(x).sum() == 0
    # a fixed cue's per-image region is its fixed region on every image
    arrow = create_shortcut("arrow")
    assert torch.equal(arrow.regions(x[:, :, :32, :32]), arrow.region(32, 32).expand(2, -1, -1, -1))


def test_edit_ratio_with_a_region_per_image_and_none_when_it_is_empty():
    region = torch.zeros(2, 1, 4, 4)
    region[0, :, 0, 0] = 1       # image 0: its top-left pixel
    region[1, :, 3, 3] = 1       # image 1: its bottom-right pixel
    edit = torch.full((2, 3, 4, 4), 0.1)
    edit[0, :, 0, 0] = 0.3
    edit[1, :, 3, 3] = 0.3
    assert edit_ratio(edit, region) == pytest.approx(3.0)
    edit[1, :, 3, 3], edit[1, :, 0, 0] = 0.1, 0.3  # image 1 edits image 0's pixel instead: its own is outside
    # inside: 0.3 and 0.1; outside: 30 pixels, one of them 0.3
    assert edit_ratio(edit, region) == pytest.approx(0.2 / ((29 * 0.1 + 0.3) / 30))
    assert edit_ratio(edit, torch.zeros(1, 1, 4, 4)) is None and edit_ratio(edit, torch.ones(2, 1, 4, 4)) is None
