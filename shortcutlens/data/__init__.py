"""Data sources, the in-memory batch loader, device-side augmentation and shortcut injection.

``create_dataset(name, root=..., image_size=..., seed=...)`` returns an :class:`ImageData` with
deterministic ``train``/``val``/``test`` splits held as uint8 tensors. Sources: ``digits`` (scikit-learn's
bundled 8×8 digits, the zero-setup default), ``fashion_mnist``, ``cifar10``, ``cifar100``, ``stl10``,
``imagefolder`` and procedural ``synthetic``.
"""

from __future__ import annotations

from typing import Any

from shortcutlens.data.base import DataNotFoundError, ImageData, Split
from shortcutlens.registry import Registry

DATASETS = Registry("dataset", entry_point_group="shortcutlens.datasets")


def create_dataset(name: str, **kwargs: Any) -> ImageData:
    return DATASETS.create(name, **kwargs)


def list_datasets() -> list[str]:
    return DATASETS.names()


from shortcutlens.data import cifar, digits, fashion_mnist, imagefolder, stl10, synthetic  # noqa: F401

__all__ = ["DATASETS", "DataNotFoundError", "ImageData", "Split", "create_dataset", "list_datasets"]
