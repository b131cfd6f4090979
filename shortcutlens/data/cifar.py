"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009): 50,000 + 10,000 colour 32×32 images.

Reads the "python version" pickle batches (``cifar-10-batches-py/`` or ``cifar-100-python/``) found under
``root``, ``$SHORTCUTLENS_DATA`` or ``~/.cache/shortcutlens``; ``download=True`` fetches and unpacks the
official archive. The batches are pickles: only load files you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from shortcutlens.data import DATASETS
from shortcutlens.data.base import (
    DataNotFoundError,
    ImageData,
    Split,
    default_cache_dir,
    finish,
    fit_size,
    search_dirs,
)
from shortcutlens.data.download import download_and_extract

SOURCES = {
    # name: (folder, train files, test files, label key, classes, url, md5)
    "cifar10": (
        "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": (
        "cifar-100-python", ["train"], ["test"], b"fine_labels", 100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def _load(name: str, root: str | None, image_size: int | None, val_fraction: float, seed: int, download: bool) -> ImageData:
    folder, train_files, test_files, label_key, classes, url, md5 = SOURCES[name]
    dirs = search_dirs(root, name)
    found = next((d / folder for d in dirs if (d / folder / train_files[0]).is_file()), None)
    if found is None and download:  # into the named root, never elsewhere
        target = (Path(root).expanduser() if root else default_cache_dir()) / name
        download_and_extract(url, target, md5=md5)
        found = target / folder
    if found is None:
        raise DataNotFoundError(
            f"{name} not found: no {folder}/ folder in " + ", ".join(str(d) for d in dirs)
            + f". Download the python version from {url} and unpack it in one of those folders, "
            "set data.root, or pass data.download=true."
        )

    def read(files: list[str]) -> Split:
        xs, ys = [], []
        for f in files:
            path = Path(found) / f
            try:
                with open(path, "rb") as fh:
                    d = pickle.load(fh, encoding="bytes")
                xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(d[label_key], dtype=np.int64))
            except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
                raise DataNotFoundError(f"{name}: {path} is missing or corrupt ({err}). Re-download it from {url}.") from err
        x = torch.from_numpy(np.concatenate(xs))
        return Split(fit_size(x, image_size), torch.from_numpy(np.concatenate(ys)))

    return finish(name, read(train_files), read(test_files), num_classes=classes, val_fraction=val_fraction, seed=seed)


@DATASETS.register("cifar10")
def cifar10(*, root: str | None = None, image_size: int | None = 32, val_fraction: float = 0.1, seed: int = 0, download: bool = False) -> ImageData:
    return _load("cifar10", root, image_size, val_fraction, seed, download)


@DATASETS.register("cifar100")
def cifar100(*, root: str | None = None, image_size: int | None = 32, val_fraction: float = 0.1, seed: int = 0, download: bool = False) -> ImageData:
    return _load("cifar100", root, image_size, val_fraction, seed, download)
