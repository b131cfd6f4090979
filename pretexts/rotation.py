"""Rotation prediction (Gidaris, Singh, Komodakis, ICLR 2018), as used by Kolesnikov, Zhai, Beyer,
"Revisiting Self-Supervised Visual Representation Learning", CVPR 2019.

Each image is rotated by 0, 90, 180 and 270 degrees (counter-clockwise); a head on the pooled features
predicts which: linear by default (Kolesnikov et al.), or FC-BN-ReLU-FC with ``hidden_dim > 0``, which
leaves the rotation-specific last step to the head rather than the trunk (Gidaris et al. read their best
features below the top of the network for this reason). Kolesnikov et al. feed all four rotations of
every image in the batch.

Shapes: ``views`` ``(B, C, H, W) -> inputs (4B, C, H, W), targets (4B,)`` with ``all_rotations=True``
(one random rotation per image, ``(B, C, H, W)``, otherwise); ``loss`` takes features ``(N, D)``.
Images must be square.
"""

from __future__ import annotations

import torch
from torch import nn

from pretexts import PRETEXTS
from pretexts.base import Pretext
from pretexts.patch_grid import mlp_head


def rotate(images: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each image ``images[i]`` by ``k[i] * 90`` degrees counter-clockwise (square images)."""
    # Gather from all four rotations rather than index by mask: no data-dependent shapes, so no
    # host-device synchronisation on the GPU.
    stacked = torch.stack([torch.rot90(images, r, dims=(-2, -1)) for r in range(4)])  # (4, B, C, H, W)
    return stacked[k, torch.arange(images.shape[0], device=images.device)]


@PRETEXTS.register("rotation")
class Rotation(Pretext):
    """Args:
    num_features: backbone feature width ``D``.
    all_rotations: feed all 4 rotations of each image (Gidaris et al.) instead of one random one.
    hidden_dim: width of the head's hidden layer (0 = a linear head on the features).
    """

    classification = True
    num_classes = 4

    def __init__(self, *, num_features: int, all_rotations: bool = True, hidden_dim: int = 0) -> None:
        super().__init__()
        if hidden_dim < 0:
            raise ValueError(f"rotation's hidden_dim must be >= 0 (0 = linear head), got {hidden_dim}")
        self.all_rotations = all_rotations
        # A plain Linear (not a 1-layer Sequential) at 0 keeps the checkpoints' key names (head.weight).
        self.head = nn.Linear(num_features, 4) if hidden_dim == 0 else mlp_head(num_features, hidden_dim, 4, 0.0)

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
        b = images.shape[0]
        if self.all_rotations:
            k = torch.arange(4, device=images.device).repeat_interleave(b)
            return torch.cat([torch.rot90(images, r, dims=(-2, -1)) for r in range(4)]), k
        k = torch.randint(0, 4, (b,), device=images.device)
        return rotate(images, k), k

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)
