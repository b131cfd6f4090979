"""scikit-learn's bundled handwritten digits (1,797 images, 8×8, 10 classes): the zero-setup default.

The images ship inside scikit-learn, so nothing is downloaded. They are upscaled bilinearly to
``image_size`` (default 32 px). There is no official test split: a seeded 20% is held out.
"""

from __future__ import annotations

import torch

from shortcutlens.data import DATASETS
from shortcutlens.data.base import ImageData, Split, carve, finish, fit_size


@DATASETS.register("digits")
def digits(
    *,
    root: str | None = None,
    image_size: int | None = 32,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ImageData:
    from sklearn.datasets import load_digits

    del root  # bundled with scikit-learn
    bunch = load_digits()
    # Pixel values are 0..16: scale to the full uint8 range.
    x = torch.from_numpy(bunch.images).float().mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    x = fit_size(x, image_size, "resize")
    train, test = carve(Split(x, y), test_fraction, seed=12345)  # fixed: the test set never moves
    return finish("digits", train, test, num_classes=10, val_fraction=val_fraction, seed=seed)
