"""A folder of images, one subfolder per class: ``root/<split>/<class>/*.{png,jpg,...}``.

Splits ``train`` and ``test`` (or ``val``) are read when present; with no split folders, ``root/<class>/``
is read and a seeded ``test_fraction`` held out. Every image is converted to RGB (or L with
``grayscale=True``) and resized to ``image_size``, then kept in memory as uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shortcutlens.data import DATASETS
from shortcutlens.data.base import DataNotFoundError, ImageData, Split, carve, finish

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _read_classes(folder: Path, classes: list[str], image_size: int, grayscale: bool) -> Split:
    from PIL import Image

    xs, ys = [], []
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).iterdir()) if (folder / cls).is_dir() else []:
            if path.suffix.lower() not in EXTENSIONS:
                continue
            try:
                with Image.open(path) as im:
                    im = im.convert("L" if grayscale else "RGB").resize((image_size, image_size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except OSError as err:
                raise DataNotFoundError(f"imagefolder: cannot read {path} ({err})") from err
            xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise DataNotFoundError(f"imagefolder: no images under {folder}/<class>/ (extensions {sorted(EXTENSIONS)})")
    return Split(torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.long))


@DATASETS.register("imagefolder")
def imagefolder(
    *,
    root: str | None = None,
    image_size: int | None = 64,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    grayscale: bool = False,
) -> ImageData:
    if not root or not Path(root).expanduser().is_dir():
        raise DataNotFoundError(f"imagefolder needs data.root=<folder> pointing at an existing folder, got {root!r}")
    base = Path(root).expanduser()
    size = image_size or 64
    train_dir = base / "train"
    test_dir = next((base / s for s in ("test", "val") if (base / s).is_dir()), None)
    if train_dir.is_dir():
        classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        train = _read_classes(train_dir, classes, size, grayscale)
        if test_dir is not None:
            test = _read_classes(test_dir, classes, size, grayscale)
        else:
            train, test = carve(train, test_fraction, seed=12345)
    else:
        classes = sorted(p.name for p in base.iterdir() if p.is_dir())
        train, test = carve(_read_classes(base, classes, size, grayscale), test_fraction, seed=12345)
    return finish(f"imagefolder:{base.name}", train, test, num_classes=len(classes), val_fraction=val_fraction, seed=seed)
