"""Relative patch location (Doersch, Gupta, Efros, "Unsupervised Visual Representation Learning by
Context Prediction", ICCV 2015), with the settings of Kolesnikov, Zhai, Beyer, "Revisiting
Self-Supervised Visual Representation Learning", CVPR 2019.

From a 3×3 grid of jittered patches, the centre patch is paired with each of its 8 neighbours; the
shared trunk embeds every patch once, the two features of a pair are concatenated (centre first) and
an 8-way head says where the neighbour sat. Kolesnikov et al. use all 8 pairs of every image
(``generate_patch_locations`` in their code) and a two-layer head (FC 4096, BN, ReLU, dropout 0.5, FC).

Labels, row-major around the centre (``NEIGHBOUR_OFFSETS[k]`` is the ``(dy, dx)`` of label ``k``)::

    0 1 2
    3 · 4
    5 6 7

Grid geometry, grayscale, and why the lens edits the whole image before it is cut into tiles:
``pretexts.patch_grid``.

Shapes: ``views`` ``(B, C, S, S) -> inputs (B, C, S, S), targets (8B,)`` (``arange(8)`` per image);
``embed`` cuts the grid: ``-> (B, 9, D)`` from ``P``-px patches (P = 7 at 32 px); ``head_inputs``
``-> (8B, 2D)``; ``logits`` ``-> (8B, 8)``.
"""

from __future__ import annotations

import torch

from pretexts import PRETEXTS
from pretexts.patch_grid import CENTRE, GRID, GRID_FRACTION, JITTER_FRACTION, TILES, PatchPretext, mlp_head

NEIGHBOURS = [t for t in range(TILES) if t != CENTRE]                       # tile index of label k
NEIGHBOUR_OFFSETS = [(t // GRID - 1, t % GRID - 1) for t in NEIGHBOURS]    # (dy, dx) of label k


@PRETEXTS.register("relative_location")
class RelativeLocation(PatchPretext):
    """Args:
    num_features: backbone feature width ``D`` (per patch).
    hidden_dim: width of the head's hidden layer (Kolesnikov et al.: 4096; 0 = linear head).
    dropout: dropout before the head's last layer (Kolesnikov et al.: 0.5).
    grid_fraction, jitter_fraction: grid geometry as fractions of the image and the cell
        (defaults 255/292 and 21/85 from Kolesnikov et al.; see ``pretexts.patch_grid``).
    grayscale_probability: per-image chance of grayscale before cutting (Kolesnikov et al.: 0.66).
    probe_tiles: probe whole images on the mean of the tiles' features even where the trunk takes whole
        images (Kolesnikov et al.'s evaluation of the patch tasks; ``PatchPretext.probe_backbone``).
    """

    num_classes = len(NEIGHBOURS)

    def __init__(
        self,
        *,
        num_features: int,
        hidden_dim: int = 4096,
        dropout: float = 0.5,
        grid_fraction: float = GRID_FRACTION,
        jitter_fraction: float = JITTER_FRACTION,
        grayscale_probability: float = 0.66,
        probe_tiles: bool = False,
    ) -> None:
        super().__init__(grid_fraction=grid_fraction, jitter_fraction=jitter_fraction,
                         grayscale_probability=grayscale_probability, probe_tiles=probe_tiles)
        self.head = mlp_head(2 * num_features, hidden_dim, self.num_classes, dropout)
        self.register_buffer("neighbours", torch.tensor(NEIGHBOURS), persistent=False)

    def targets_for(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.arange(self.num_classes, device=device).repeat(batch)

    def head_inputs(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(B, 9, D)`` tile features -> ``(8B, 2D)``: ``[centre, neighbour k]`` for k = 0..7 per image
        (the order of ``targets_for``; ``targets`` is only checked for its length)."""
        b, _, d = features.shape
        if targets.shape[0] != b * self.num_classes:
            raise ValueError(f"relative_location expects {self.num_classes} targets per image, got "
                             f"{targets.shape[0]} for {b} images")
        centre = features[:, CENTRE : CENTRE + 1].expand(b, self.num_classes, d)
        neighbours = features[:, self.neighbours]
        return torch.cat([centre, neighbours], dim=-1).reshape(b * self.num_classes, 2 * d)
