"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 60,000 + 10,000 grayscale 28×28 images, 10 classes.

Looked up under ``root`` alone when it is given (each folder also with a ``fashion_mnist/`` or
``fashion-mnist/`` subfolder); otherwise, in order, under ``$SHORTCUTLENS_DATA``, ``~/.cache/shortcutlens``
and the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``). Files are the
original idx files, gzipped or not. ``download=True`` fetches them, with a checksum, into
``root/fashion_mnist`` (or ``~/.cache/shortcutlens/fashion_mnist`` without a root).
Images are zero-padded to 32 px by default, the setting of the lens experiments in docs/architecture.md.
"""

from __future__ import annotations

import gzip
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
from shortcutlens.data.download import download as fetch

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# SHA-256 of the *decompressed* idx files (repackaged archives differ, their content does not).
FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "Get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass data.download=true "
    "to fetch it, or put the four idx files (train-images-idx3-ubyte[.gz], ...) in one of those folders."
)


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): magic ``0x0000 dtype ndim``, big-endian dims, raw data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise OSError(f"{path} is not an unsigned-byte idx file (corrupt or wrong file)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise OSError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def find_file(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


@DATASETS.register("fashion_mnist")
def fashion_mnist(
    *,
    root: str | None = None,
    image_size: int | None = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
) -> ImageData:
    # An explicit root is the only place looked at: never data found elsewhere instead of the named folder.
    dirs = search_dirs(root, "fashion_mnist", "fashion-mnist") + ([] if root else [DEBIAN_DIR])
    paths = {stem: find_file(dirs, stem) for stem in FILES}
    if any(p is None for p in paths.values()) and download:
        target = (Path(root).expanduser() if root else default_cache_dir()) / "fashion_mnist"
        for stem, sha in FILES.items():
            if paths[stem] is None:
                paths[stem] = fetch(URL + stem + ".gz", target / (stem + ".gz"), sha256=sha, gunzip_checksum=True)
    missing = [stem for stem, p in paths.items() if p is None]
    if missing:
        how = HOW_TO_GET if not root else (f"Put the four idx files (train-images-idx3-ubyte[.gz], ...) in {root}, "
                                           "pass data.download=true to fetch them there, or drop data.root to use "
                                           "$SHORTCUTLENS_DATA, ~/.cache/shortcutlens or `apt-get install dataset-fashion-mnist`.")
        raise DataNotFoundError(
            f"Fashion-MNIST not found: missing {', '.join(missing)}. Looked in: "
            + ", ".join(str(d) for d in dirs) + ". " + how
        )
    arrays = {}
    for stem, path in paths.items():
        try:
            arrays[stem] = read_idx(path)
        except (OSError, EOFError, ValueError) as err:  # name the file: gzip's own errors do not
            raise DataNotFoundError(f"Fashion-MNIST file {path} is unreadable ({err}). {HOW_TO_GET}") from err

    for prefix in ("train", "t10k"):
        images, labels = (paths[f"{prefix}-{kind}-idx{d}-ubyte"] for kind, d in (("images", 3), ("labels", 1)))
        n_images, n_labels = len(arrays[f"{prefix}-images-idx3-ubyte"]), len(arrays[f"{prefix}-labels-idx1-ubyte"])
        if arrays[f"{prefix}-images-idx3-ubyte"].ndim != 3 or n_images != n_labels:
            raise DataNotFoundError(f"Fashion-MNIST files {images} and {labels} do not match ({n_images} images of shape "
                                    f"{arrays[f'{prefix}-images-idx3-ubyte'].shape[1:]}, {n_labels} labels). {HOW_TO_GET}")

    def split(prefix: str) -> Split:
        x = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"].copy()).unsqueeze(1)
        y = torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"].astype(np.int64))
        return Split(fit_size(x, image_size), y)

    return finish("fashion_mnist", split("train"), split("t10k"), num_classes=10, val_fraction=val_fraction, seed=seed)
