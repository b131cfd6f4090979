"""The per-instance shortcut: one code per source image, on every view of it, different between images."""

import pytest
import torch

from pretexts import create_pretext
from shortcutlens.data.shortcuts import create_shortcut, shortcut_views


def images(n: int = 6, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g)


def read_code(views: torch.Tensor, side: int = 4, cell: int = 2) -> torch.Tensor:
    """Decode the 4x4 cells of 2 px at the top-left corner back into integers (independent of the stamper)."""
    cells = (views[:, 0, : side * cell : cell, : side * cell : cell] > 0.5).long().flatten(1)
    return (cells * (2 ** torch.arange(side * side))).sum(1)


@pytest.mark.parametrize("name,kw", [("exemplar", {"copies": 4}), ("contrastive", {})])
def test_views_of_one_image_share_a_code_and_images_differ(name, kw):
    torch.manual_seed(0)
    cue = create_shortcut("instance_code")
    pretext = create_pretext(name, num_features=8, **kw)
    x = images()
    inputs, targets = shortcut_views(cue, x, pretext.views, sources=pretext.view_sources)
    codes = read_code(inputs)
    expected = cue.codes(x)
    # every view carries the code of its own source image, after the pretext's random crops and jitter
    assert torch.equal(codes, expected[pretext.view_sources(targets, x.shape[0])])
    assert torch.equal(codes, expected[targets])
    assert len(set(expected.tolist())) == x.shape[0]  # six different images, six different codes
    # outside the code the views are the pretext's own augmented views: the cue is stamped after them
    assert not torch.equal(inputs[0, :, 8:, 8:], inputs[1, :, 8:, 8:])


def test_code_is_a_deterministic_function_of_the_image():
    cue = create_shortcut("instance_code")
    x = images()
    assert torch.equal(cue.codes(x), cue.codes(x.clone()))
    assert torch.equal(cue.codes(x[2:3]), cue.codes(x)[2:3])  # not of its batch neighbours
    y = x.clone()
    y[0, 0, 20, 20] = (y[0, 0, 20, 20] + 0.5) % 1.0  # one pixel changed: another image, another code
    assert cue.codes(y)[0] != cue.codes(x)[0]
    assert torch.equal(read_code(cue(x)), cue.codes(x))
    region = cue.region(32, 32)
    assert region.sum() == 64 and region[0, 0, :8, :8].all()


def test_cell_size_and_bad_arguments():
    cue = create_shortcut("instance_code", bits=9, cell=2, position=(1.0, 1.0))
    region = cue.region(32, 32)
    assert region.sum() == 36 and region[0, 0, -6:, -6:].all()  # 3x3 cells of 2 px in the bottom-right corner
    with pytest.raises(ValueError, match="square number"):
        create_shortcut("instance_code", bits=10)
    with pytest.raises(ValueError, match="does not fit"):
        create_shortcut("instance_code", bits=16, cell=9)(images())


def test_rotation_cannot_carry_a_per_instance_cue():
    rotation = create_pretext("rotation", num_features=8)
    with pytest.raises(ValueError, match="per-instance shortcut"):
        shortcut_views(create_shortcut("instance_code"), images(), rotation.views, sources=rotation.view_sources)


def test_clean_keeps_the_shortcut_channels():
    aberration = create_shortcut("chromatic_aberration")
    rotation = create_pretext("rotation", num_features=8)
    inputs, _ = shortcut_views(aberration, images(), rotation.views, sources=rotation.view_sources, clean=True)
    assert inputs.shape[1] == 3 and torch.equal(inputs[:, 0], inputs[:, 2])  # grayscale replicated, no fringe


def test_contrast_sets_the_grey_levels_and_the_price_of_erasing_the_code():
    x = images()
    full, half = create_shortcut("instance_code"), create_shortcut("instance_code", contrast=0.5)
    assert torch.equal(read_code(half(x)), full.codes(x))  # the same code, read at the 0.5 threshold
    block = half(x)[:, 0, :8, :8]
    assert set(block.unique().tolist()) == {0.25, 0.75}
    # flattening the block to grey costs 64 px x 0.25 / 1024 px of mean |edit|: under the lens's 0.02 budget
    grey = half(x).clone()
    grey[:, :, :8, :8] = 0.5
    assert torch.allclose((grey - half(x)).abs().mean((1, 2, 3)), torch.full((6,), 64 * 0.25 / 1024))
    assert (full(x)[:, 0, :8, :8] - 0.5).abs().mean() * 64 / 1024 > 0.02  # black/white: over budget
    with pytest.raises(ValueError, match="contrast"):
        create_shortcut("instance_code", contrast=0.0)
