"""Jigsaw: the permutation set is deterministic, of the requested size and well spread; shuffling and
unshuffling tiles restores the image; shuffling features equals shuffling tiles before the trunk."""

import math

import pytest
import torch
from torch import nn

from pretexts import create_pretext
from pretexts.jigsaw import _max_hamming, maximal_hamming_permutations, min_hamming_distance, permute_tiles
from pretexts.patch_grid import cut_patches, from_mosaic, to_mosaic
from shortcutlens.backbones import create_backbone


def test_permutation_set_is_deterministic_valid_and_of_the_requested_size():
    perms = maximal_hamming_permutations(100, seed=0)
    assert perms.shape == (100, 9)
    assert torch.equal(perms, torch.tensor(_max_hamming.__wrapped__(100, 0, 9)))  # recomputed, not cached
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 100
    assert min_hamming_distance(perms) == 6  # the value documented in pretexts/jigsaw.py
    assert min_hamming_distance(maximal_hamming_permutations(30, seed=0)) == 7
    assert torch.equal(maximal_hamming_permutations(30, seed=0), perms[:30])  # greedy: prefixes agree
    assert not torch.equal(maximal_hamming_permutations(100, seed=1), perms)
    assert maximal_hamming_permutations(7, seed=3).shape == (7, 9)
    with pytest.raises(ValueError, match="num_permutations"):
        maximal_hamming_permutations(1)
    with pytest.raises(ValueError, match="num_permutations"):
        maximal_hamming_permutations(math.factorial(9) + 1)


def test_unpermuting_the_tiles_restores_the_image():
    torch.manual_seed(0)
    task = create_pretext("jigsaw", num_features=4, hidden_dim=0, grid_fraction=1.0, jitter_fraction=0.0,
                          grayscale_probability=0.0)
    images = torch.rand(5, 3, 12, 12)
    inputs, targets = task.views(images)
    # Full grid without jitter: the tiles are the image cut in nine, and their mosaic is the image.
    assert torch.equal(inputs, images) and torch.equal(cut_patches(images, task.geometry(12)), from_mosaic(images))
    assert targets.shape == (5 * 8,) and int(targets.max()) < 100
    perms = task.permutations[targets[::8]]  # the first puzzle of each image, (5, 9)
    shuffled = to_mosaic(permute_tiles(from_mosaic(inputs), perms))
    assert not torch.equal(shuffled, images)
    # Position i of the puzzle holds original tile perm[i].
    assert torch.equal(from_mosaic(shuffled)[0, 0], from_mosaic(images)[0, int(perms[0, 0])])
    restored = permute_tiles(from_mosaic(shuffled), perms.argsort(dim=1))
    assert torch.equal(to_mosaic(restored), images)


def test_shuffling_features_equals_shuffling_tiles_before_the_trunk():
    torch.manual_seed(0)
    trunk = create_backbone("resnet", depth=18, width=0.125, in_chans=1, img_size=32).eval()
    d = trunk.num_features
    task = create_pretext("jigsaw", num_features=d, num_permutations=20, permutations_per_image=3, hidden_dim=0)
    inputs, targets = task.views(torch.rand(4, 1, 32, 32))
    torch.manual_seed(1)  # the grid's place and jitter are drawn in embed
    ours = task.head_inputs(task.embed(trunk, inputs), targets)  # (12, 9·d)

    # The textbook way: cut the same tiles, shuffle them per puzzle, run the trunk on shuffled tiles.
    torch.manual_seed(1)
    tiles = cut_patches(inputs, task.geometry(32))  # (4, 9, 1, 7, 7)
    shuffled = permute_tiles(tiles, task.permutations[targets].reshape(4, 3, 9))  # (4, 3, 9, 1, 7, 7)
    # (eval mode: in train mode BatchNorm would see 36 tiles once vs the same tiles repeated 3 times)
    want = trunk(shuffled.reshape(-1, 1, 7, 7)).reshape(12, 9 * d)
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)


def test_loss_scores_the_shuffled_concatenation():
    torch.manual_seed(0)
    task = create_pretext("jigsaw", num_features=2, num_permutations=10, permutations_per_image=2, hidden_dim=0)
    features = torch.randn(3, 9, 2)
    targets = torch.tensor([0, 9, 4, 4, 7, 1])
    loss, metrics = task.loss(features, targets)
    rows = [features[i // 2, task.permutations[t]].reshape(-1) for i, t in enumerate(targets.tolist())]
    want = nn.functional.cross_entropy(task.head(torch.stack(rows)), targets)
    torch.testing.assert_close(loss, want)
    assert 0 <= metrics["acc"].item() <= 1
    state = task.state_dict()
    assert torch.equal(state["permutations"], task.permutations)  # the classes travel with checkpoints
