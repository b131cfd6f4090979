"""A folder of images, one subfolder per class: ``root/<split>/<class>/*.{png,jpg,...}``.

Splits ``train`` and ``test`` (or ``val``) are read when present; with no split folders, ``root/<class>/``
is read and a seeded ``test_fraction`` held out. Every image is converted to RGB (or L with
``grayscale=True``) and resized to ``image_size``.

Small folders are decoded once and kept in memory as uint8. A folder whose decoded size
(images × C × S × S bytes) exceeds ``max_memory_gb`` is streamed instead: only the file list is held and
``workers`` processes decode each batch as it is needed (``shortcutlens.data.stream``). ``stream``
overrides the choice: ``auto`` (by size), ``true`` (always stream), ``false`` (always in memory).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shortcutlens.data import DATASETS
from shortcutlens.data.base import DataNotFoundError, ImageData, Split, carve, finish
from shortcutlens.data.stream import LazyImages, StreamSplit, list_files

STREAM_CHOICES = ("auto", "true", "false")

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _read_classes(folder: Path, classes: list[str], image_size: int, grayscale: bool) -> Split:
    from PIL import Image

    xs, ys = [], []
    for label, cls in enumerate(classes):
        before = len(xs)
        for path in sorted((folder / cls).iterdir()) if (folder / cls).is_dir() else []:
            if path.suffix.lower() not in EXTENSIONS:
                continue
            try:
                with Image.open(path) as im:
                    im = im.convert("L" if grayscale else "RGB").resize((image_size, image_size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # PIL's ways of failing
                raise DataNotFoundError(f"imagefolder: cannot read {path} as an image ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                                        "remove or replace the file") from err
            xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            ys.append(label)
        if len(xs) == before and (folder / cls).is_dir():  # an empty class would shift every label after it
            raise DataNotFoundError(f"imagefolder: no images under the class folder {folder / cls} (extensions "
                                    f"{', '.join(sorted(EXTENSIONS))}); add images or remove the folder")
    if not xs:
        raise DataNotFoundError(f"imagefolder: no images under {folder}/<class>/ (extensions {sorted(EXTENSIONS)})")
    return Split(torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.long))


def _stream_classes(folder: Path, classes: list[str], image_size: int, grayscale: bool, workers: int) -> StreamSplit:
    paths, labels = list_files(folder, classes, EXTENSIONS)
    if not paths:
        raise DataNotFoundError(f"imagefolder: no images under {folder}/<class>/ (extensions {sorted(EXTENSIONS)})")
    return StreamSplit(LazyImages(paths, image_size=image_size, grayscale=grayscale),
                       torch.tensor(labels, dtype=torch.long), workers=workers)


def should_stream(stream: str | bool, *, decoded_bytes: int, max_memory_gb: float) -> bool:
    """``stream`` (auto/true/false) and the decoded size of the folder -> stream it or not."""
    choice = str(stream).lower()
    if choice not in STREAM_CHOICES:
        raise ValueError(f"Unknown data.stream setting '{stream}'. Valid settings: {', '.join(STREAM_CHOICES)}")
    if choice == "auto":
        return decoded_bytes > max_memory_gb * 2**30
    return choice == "true"


@DATASETS.register("imagefolder")
def imagefolder(
    *,
    root: str | None = None,
    image_size: int | None = 64,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    grayscale: bool = False,
    stream: str | bool = "auto",
    max_memory_gb: float = 4.0,
    workers: int = 2,
) -> ImageData:
    """Args (besides the splits): ``stream`` auto/true/false; ``max_memory_gb`` the largest decoded size
    kept in memory under ``auto``; ``workers`` decoding processes of a streamed folder (0: decode in the
    training process)."""
    if not root or not Path(root).expanduser().is_dir():
        raise DataNotFoundError(f"imagefolder needs data.root=<folder> pointing at an existing folder, got {root!r}")
    base = Path(root).expanduser()
    size = image_size or 64
    train_dir = base / "train"
    test_dir = next((base / s for s in ("test", "val") if (base / s).is_dir()), None)
    folders = ([train_dir] + ([test_dir] if test_dir is not None else [])) if train_dir.is_dir() else [base]
    classes = sorted(p.name for p in folders[0].iterdir() if p.is_dir())
    channels = 1 if grayscale else 3
    decoded = sum(len(list_files(f, classes, EXTENSIONS)[0]) for f in folders) * channels * size * size
    if should_stream(stream, decoded_bytes=decoded, max_memory_gb=max_memory_gb):
        def read(folder: Path) -> Split:
            return _stream_classes(folder, classes, size, grayscale, workers)
    else:
        def read(folder: Path) -> Split:
            return _read_classes(folder, classes, size, grayscale)
    if train_dir.is_dir():
        train = read(train_dir)
        if test_dir is not None:
            test = read(test_dir)
        else:
            train, test = carve(train, test_fraction, seed=12345)
    else:
        train, test = carve(read(base), test_fraction, seed=12345)
    return finish(f"imagefolder:{base.name}", train, test, num_classes=len(classes), val_fraction=val_fraction, seed=seed)
