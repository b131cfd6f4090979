"""Jigsaw puzzles (Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", ECCV 2016), with the settings of Kolesnikov, Zhai, Beyer, "Revisiting Self-Supervised Visual
Representation Learning", CVPR 2019.

The 9 tiles of a 3×3 grid of jittered patches are shuffled by one of ``P`` fixed permutations (default
100); the shared trunk embeds every tile once, the 9 features are concatenated in shuffled order and a
``P``-way head says which permutation was used. Kolesnikov et al. (code: ``jigsaw.py``) embed the tiles
of an image once and score 8 permutations of those embeddings (``perm_subset_size`` 8); here each image
gets ``permutations_per_image`` independently drawn permutations. Head as for relative location (FC
4096, BN, ReLU, dropout 0.5, FC).

**The permutation set** (``maximal_hamming_permutations``): Noroozi & Favaro pick permutations far
apart in Hamming distance so that no two puzzles are nearly alike. We start from a seeded random
permutation and greedily add the permutation whose minimum Hamming distance to those already chosen
is largest (ties: the first in a seeded random order of all 9! permutations), so the set is a pure
function of ``(num_permutations, seed)``. For the default ``(100, 0)`` the minimum pairwise Hamming
distance is **6** (mean 8.06; 9 is the maximum possible); for 30 it is 7, for 1000 it is 5.

A permutation ``perm`` puts original tile ``perm[i]`` at position ``i``: ``shuffled = tiles[perm]``,
and ``tiles = shuffled[argsort(perm)]`` undoes it (``permute_tiles``).

Grid geometry, grayscale, and why the lens edits the whole, unshuffled image (the shuffling is applied
to the tile features, which is identical because the trunk sees one tile at a time):
``pretexts.patch_grid``.

Shapes: ``views`` ``(B, C, S, S) -> inputs (B, C, S, S), targets (K·B,)`` permutation indices, K =
``permutations_per_image``; ``embed`` cuts the grid: ``-> (B, 9, D)``; ``head_inputs`` ``-> (K·B, 9D)``;
``logits`` ``-> (K·B, num_permutations)``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from pretexts import PRETEXTS
from pretexts.patch_grid import GRID_FRACTION, JITTER_FRACTION, TILES, PatchPretext, mlp_head


def _all_permutations(n: int) -> np.ndarray:
    """All ``n!`` permutations of ``range(n)`` as rows of an int8 array (built by insertion)."""
    perms = np.zeros((1, 0), dtype=np.int8)
    for k in range(1, n + 1):
        out = np.empty((perms.shape[0] * k, k), dtype=np.int8)
        for pos in range(k):  # insert k-1 at every position of each permutation of range(k-1)
            out[pos::k, :pos] = perms[:, :pos]
            out[pos::k, pos] = k - 1
            out[pos::k, pos + 1 :] = perms[:, pos:]
        perms = out
    return perms


@lru_cache(maxsize=8)
def _max_hamming(num: int, seed: int, tiles: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    candidates = _all_permutations(tiles)
    candidates = candidates[rng.permutation(len(candidates))]
    columns = np.ascontiguousarray(candidates.T)

    def distances(perm: np.ndarray) -> np.ndarray:
        same = np.zeros(len(candidates), dtype=np.uint8)
        for i in range(tiles):
            same += columns[i] == perm[i]
        return tiles - same

    chosen = [0]
    min_dist = distances(candidates[0])
    for _ in range(num - 1):
        best = int(min_dist.argmax())  # first maximum in the seeded order
        chosen.append(best)
        np.minimum(min_dist, distances(candidates[best]), out=min_dist)
    out = candidates[chosen].astype(np.int64)
    out.setflags(write=False)
    return out


def maximal_hamming_permutations(num: int = 100, *, seed: int = 0, tiles: int = TILES) -> torch.Tensor:
    """``(num, tiles)`` permutations chosen greedily for maximal minimum Hamming distance (see module
    docstring); deterministic in ``(num, seed)``. ~0.3 s for 100 of 9 tiles; cached per process."""
    if not 2 <= num <= math.factorial(tiles):
        raise ValueError(f"num_permutations must be in [2, {math.factorial(tiles)}], got {num}")
    return torch.from_numpy(_max_hamming(num, seed, tiles).copy())


def min_hamming_distance(perms: torch.Tensor) -> int:
    """Smallest Hamming distance between two different rows of ``perms`` ``(P, n)``."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def permute_tiles(tiles: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """``tiles`` ``(B, 9, ...)`` and one permutation per image ``(B, 9)`` or ``K`` per image ``(B, K, 9)``
    -> ``(B, 9, ...)`` or ``(B, K, 9, ...)`` with ``out[b, (k,) i] = tiles[b, perms[b, (k,) i]]``."""
    b = tiles.shape[0]
    batch = torch.arange(b, device=tiles.device).reshape(b, *([1] * (perms.dim() - 1)))
    return tiles[batch, perms]


@PRETEXTS.register("jigsaw")
class Jigsaw(PatchPretext):
    """Args:
    num_features: backbone feature width ``D`` (per tile).
    num_permutations: size ``P`` of the permutation set and of the head's output (Noroozi & Favaro and
        Kolesnikov et al.: 100).
    permutation_seed: seed of the greedy permutation search.
    permutations_per_image: puzzles scored per image and step, on one embedding of its tiles
        (Kolesnikov et al.: 8).
    hidden_dim, dropout: the head (Kolesnikov et al.: 4096, 0.5; ``hidden_dim=0`` = linear).
    grid_fraction, jitter_fraction, grayscale_probability: see ``pretexts.patch_grid`` (defaults from
        Kolesnikov et al.: 255/292, 21/85, 0.66).
    probe_tiles: probe whole images on the mean of the tiles' features even where the trunk takes whole
        images (Kolesnikov et al.'s evaluation of the patch tasks; ``PatchPretext.probe_backbone``).
    """

    def __init__(
        self,
        *,
        num_features: int,
        num_permutations: int = 100,
        permutation_seed: int = 0,
        permutations_per_image: int = 8,
        hidden_dim: int = 4096,
        dropout: float = 0.5,
        grid_fraction: float = GRID_FRACTION,
        jitter_fraction: float = JITTER_FRACTION,
        grayscale_probability: float = 0.66,
        probe_tiles: bool = False,
    ) -> None:
        super().__init__(grid_fraction=grid_fraction, jitter_fraction=jitter_fraction,
                         grayscale_probability=grayscale_probability, probe_tiles=probe_tiles)
        if permutations_per_image < 1:
            raise ValueError(f"permutations_per_image must be at least 1, got {permutations_per_image}")
        self.num_classes = num_permutations
        self.permutations_per_image = permutations_per_image
        # Saved with the checkpoint: the head's classes are these permutations.
        self.register_buffer("permutations", maximal_hamming_permutations(num_permutations, seed=permutation_seed))
        self.head = mlp_head(TILES * num_features, hidden_dim, num_permutations, dropout)

    def targets_for(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, self.num_classes, (batch * self.permutations_per_image,), device=device)

    def head_inputs(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(B, 9, D)`` tile features and ``(K·B,)`` permutation indices (image-major) -> ``(K·B, 9D)``:
        the features in shuffled order, concatenated."""
        b, tiles, d = features.shape
        if targets.shape[0] % b:
            raise ValueError(f"jigsaw expects a whole number of permutations per image, got {targets.shape[0]} "
                             f"targets for {b} images")
        perms = self.permutations[targets].reshape(b, -1, tiles)
        return permute_tiles(features, perms).reshape(targets.shape[0], tiles * d)
