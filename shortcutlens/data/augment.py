"""Training-time augmentation on the device with kornia, built from a list of names.

Names: ``flip`` (horizontal), ``crop`` (pad by 1/8 of the size, random crop back: the CIFAR recipe),
``resized_crop`` (scale 0.2-1, the SimCLR/Exemplar crop), ``color_jitter`` (0.4, 0.4, 0.4, 0.1, p=0.8) and
``grayscale`` (p=0.2). An empty list is the identity. Input and output: float ``(B, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
from torch import nn

NAMES = ("flip", "crop", "resized_crop", "color_jitter", "grayscale")


def build_augment(names: Sequence[str], *, image_size: int) -> nn.Module:
    ops: list[nn.Module] = []
    for name in names:
        if name == "flip":
            ops.append(K.RandomHorizontalFlip())
        elif name == "crop":
            ops.append(K.RandomCrop((image_size, image_size), padding=max(1, image_size // 8)))
        elif name == "resized_crop":
            ops.append(K.RandomResizedCrop((image_size, image_size), scale=(0.2, 1.0)))
        elif name == "color_jitter":
            ops.append(K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8))
        elif name == "grayscale":
            ops.append(K.RandomGrayscale(p=0.2))
        else:
            raise ValueError(f"Unknown augmentation '{name}'. Valid augmentations: {', '.join(NAMES)}")
    return nn.Sequential(*ops) if ops else nn.Identity()
