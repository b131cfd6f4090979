"""Relative patch location: the grid geometry scales with the image, patches stay in their cells, and
each label names the neighbour at the right offset from the centre."""

import pytest
import torch
from torch import nn

from pretexts import create_pretext
from pretexts.patch_grid import cut_patches, from_mosaic, grid_geometry, to_mosaic
from pretexts.relative_location import NEIGHBOUR_OFFSETS


class MeanTrunk(nn.Module):
    """A stand-in backbone whose feature is the mean of each tile: tiles become readable numbers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None]


def cell_image(cell: int, batch: int = 2) -> torch.Tensor:
    """``(B, 1, 3c, 3c)`` with cell (row r, column q) filled with the value ``10·r + q``."""
    values = torch.tensor([[10.0 * r + q for q in range(3)] for r in range(3)])
    return values.repeat_interleave(cell, 0).repeat_interleave(cell, 1).expand(batch, 1, -1, -1).clone()


def test_geometry_reproduces_kolesnikov_and_scales_with_the_image():
    # 292-px input: 255-px grid, 85-px cells, jitter 21, 64-px patches (revisiting-self-supervised configs).
    g = grid_geometry(292)
    assert (g.grid, g.cell, g.jitter, g.patch) == (255, 85, 21, 64)
    assert (grid_geometry(32).cell, grid_geometry(32).jitter, grid_geometry(32).patch) == (9, 2, 7)
    assert grid_geometry(16).patch == 3
    with pytest.raises(ValueError, match="too small for a 3×3 patch grid"):
        grid_geometry(5)


def test_mosaic_round_trip_and_patches_stay_inside_their_cells():
    torch.manual_seed(0)
    geom = grid_geometry(24, grid_fraction=1.0, jitter_fraction=0.4)  # cells of 8 px, patches of 5 px
    images = cell_image(8, batch=16)
    tiles = cut_patches(images, geom)
    assert tiles.shape == (16, 9, 1, 5, 5)
    assert torch.equal(from_mosaic(to_mosaic(tiles)), tiles)
    expected = torch.tensor([10.0 * (t // 3) + t % 3 for t in range(9)])
    # Every pixel of tile t comes from cell t, whatever the jitter; and the jitter does vary.
    assert torch.equal(tiles.amin(dim=(2, 3, 4)), expected.expand(16, 9))
    assert torch.equal(tiles.amax(dim=(2, 3, 4)), expected.expand(16, 9))
    ramp = torch.arange(24.0).expand(1, 1, 24, 24).repeat(16, 1, 1, 1)
    assert len(set(cut_patches(ramp, geom)[:, 0, 0, 0, 0].tolist())) > 1


def test_labels_map_to_the_right_neighbour():
    torch.manual_seed(0)
    task = create_pretext("relative_location", num_features=1, hidden_dim=0, grid_fraction=1.0, jitter_fraction=0.25)
    images = cell_image(8, batch=3)
    inputs, targets = task.views(images)
    assert torch.equal(inputs, images)  # the lens sees whole images
    pairs = task.head_inputs(task.embed(MeanTrunk(), inputs), targets)  # (8B, 2): [centre, neighbour]
    assert pairs.shape == (24, 2) and targets.tolist() == list(range(8)) * 3
    for (centre, neighbour), label in zip(pairs.tolist(), targets.tolist()):
        dy, dx = NEIGHBOUR_OFFSETS[label]
        assert centre == 11.0  # the centre cell, row 1 column 1
        assert neighbour == 10.0 * (1 + dy) + (1 + dx)
    assert NEIGHBOUR_OFFSETS == [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def test_loss_is_cross_entropy_over_the_eight_pairs_and_grayscale_is_per_image():
    torch.manual_seed(0)
    task = create_pretext("relative_location", num_features=4, hidden_dim=0, grayscale_probability=1.0)
    inputs, targets = task.views(torch.rand(2, 3, 32, 32))
    assert inputs.shape == (2, 3, 32, 32)
    assert torch.allclose(inputs[:, 0], inputs[:, 1]) and torch.allclose(inputs[:, 1], inputs[:, 2])
    features = torch.randn(2, 9, 4)
    loss, metrics = task.loss(features, targets)
    logits = task.head(torch.cat([features[:, 4:5].expand(2, 8, 4), features[:, [0, 1, 2, 3, 5, 6, 7, 8]]], -1))
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits.reshape(16, 8), targets))
    assert set(metrics) >= {"loss", "acc"}
