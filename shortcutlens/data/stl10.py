"""STL-10 (Coates, Lee, Ng 2011): 5,000 labelled train, 8,000 test and 100,000 unlabelled 96×96 images.

Reads the binary release (``stl10_binary/{train,test,unlabeled}_X.bin`` and ``*_y.bin``; images are
stored column-major, labels 1..10). ``unlabeled=True`` also loads the 100k-image unlabelled split
(2.8 GB as uint8) for self-supervised training.
"""

from __future__ import annotations

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

URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
MD5 = "91f7769df0f17e558f3565bffb0c7dfb"


def _read_images(path: Path) -> torch.Tensor:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise OSError(f"{path} is truncated ({raw.size} bytes is not a whole number of 96x96x3 images)")
    # Column-major (N, C, W, H) on disk: swap the last two axes to get (N, C, H, W).
    return torch.from_numpy(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())


@DATASETS.register("stl10")
def stl10(
    *,
    root: str | None = None,
    image_size: int | None = 96,
    val_fraction: float = 0.1,
    seed: int = 0,
    unlabeled: bool = False,
    download: bool = False,
) -> ImageData:
    dirs = search_dirs(root, "stl10")
    found = next((d / "stl10_binary" for d in dirs if (d / "stl10_binary" / "train_X.bin").is_file()), None)
    if found is None and download:  # into the named root, never elsewhere
        target = (Path(root).expanduser() if root else default_cache_dir()) / "stl10"
        download_and_extract(URL, target, md5=MD5)
        found = target / "stl10_binary"
    if found is None:
        raise DataNotFoundError(
            "stl10 not found: no stl10_binary/ folder in " + ", ".join(str(d) for d in dirs)
            + f". Download {URL} and unpack it in one of those folders, set data.root, or pass data.download=true."
        )

    def read(prefix: str, labelled: bool = True) -> Split:
        try:
            x = _read_images(found / f"{prefix}_X.bin")
            if labelled:
                y = torch.from_numpy(np.fromfile(found / f"{prefix}_y.bin", dtype=np.uint8).astype(np.int64) - 1)
            else:
                y = torch.full((x.shape[0],), -1, dtype=torch.long)
            return Split(fit_size(x, image_size), y)
        except (OSError, ValueError) as err:
            raise DataNotFoundError(f"stl10: {prefix} files in {found} are missing or corrupt ({err}). Re-download {URL}.") from err

    extra = read("unlabeled", labelled=False) if unlabeled else None
    return finish("stl10", read("train"), read("test"), num_classes=10, val_fraction=val_fraction, seed=seed, unlabeled=extra)
