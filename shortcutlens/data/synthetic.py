"""Procedural images for tests: each class is a bright square at its own place on a noisy background.

Deterministic in ``seed``; no files. The class is linearly decodable from the pixels, so a probe on
even a random network beats chance, which makes the data useful for end-to-end smoke tests.
"""

from __future__ import annotations

import torch

from shortcutlens.data import DATASETS
from shortcutlens.data.base import ImageData, Split, finish


def make_images(n: int, *, num_classes: int, image_size: int, channels: int, generator: torch.Generator) -> Split:
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    x = torch.rand(n, channels, image_size, image_size, generator=generator) * 60
    side = max(2, image_size // 4)
    grid = max(1, (image_size - side) // max(1, num_classes - 1)) if num_classes > 1 else 0
    jitter = torch.randint(0, max(1, side // 2), (n, 2), generator=generator)
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        for i in idx.tolist():
            top = min(image_size - side, (c * grid) % max(1, image_size - side + 1) + int(jitter[i, 0]))
            left = min(image_size - side, (c * 7) % max(1, image_size - side + 1) + int(jitter[i, 1]))
            x[i, :, top : top + side, left : left + side] += 150 + 40 * (c % 3)
    return Split(x.clamp_(0, 255).to(torch.uint8), labels)


@DATASETS.register("synthetic")
def synthetic(
    *,
    root: str | None = None,
    image_size: int | None = 16,
    channels: int = 1,
    num_classes: int = 4,
    num_train: int = 256,
    num_test: int = 128,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> ImageData:
    del root
    size = image_size or 16
    g = torch.Generator().manual_seed(1000 + seed)
    train = make_images(num_train, num_classes=num_classes, image_size=size, channels=channels, generator=g)
    test = make_images(num_test, num_classes=num_classes, image_size=size, channels=channels, generator=g)
    return finish("synthetic", train, test, num_classes=num_classes, val_fraction=val_fraction, seed=seed)
