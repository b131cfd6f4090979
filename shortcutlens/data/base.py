"""The in-memory image container every data source returns, and the helpers they share.

Small datasets (digits, Fashion-MNIST, CIFAR, STL-10) live in memory as ``uint8`` tensors of shape
``(N, C, H, W)`` so that a batch is one fancy-index, with no per-sample Python work; conversion to
float and augmentation happen on the training device (``shortcutlens.data.augment``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


class DataNotFoundError(FileNotFoundError):
    """Raised with one message saying where we looked and how to get the data."""


@dataclass
class Split:
    """One split: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)`` (-1 where unlabelled)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass
class ImageData:
    """A dataset with deterministic ``train``/``val``/``test`` splits (and optional ``unlabeled``)."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    unlabeled: Split | None = None
    #: What pretext training draws from when it is not all of ``train`` (``data.train_size``; a seeded
    #: subset of ``train``). Probes and evaluators keep using the whole ``train``.
    pretrain: Split | None = None

    @property
    def pretrain_split(self) -> Split:
        return self.pretrain if self.pretrain is not None else self.train

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def split(self, name: str) -> Split:
        valid = ["train", "val", "test"] + (["unlabeled"] if self.unlabeled is not None else [])
        if name not in valid:
            raise ValueError(f"Unknown split '{name}' for {self.name}. Valid splits: {', '.join(valid)}")
        return getattr(self, name)

    def summary(self) -> str:
        parts = [f"{k}={len(getattr(self, k))}" for k in ("train", "val", "test")]
        if self.unlabeled is not None:
            parts.append(f"unlabeled={len(self.unlabeled)}")
        if self.pretrain is not None:
            parts.append(f"pretrain={len(self.pretrain)} of train")
        return f"{self.name}: {self.channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes, " + ", ".join(parts)


def seeded_split(n: int, k: int, *, seed: int, sort: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``range(n)`` cut by one permutation seeded with ``seed``: ``(first k, the other n - k)``.

    Every seeded split in the library goes through here (val/test carves, ``data.train_size``, the
    probes' held-out and capped subsets, VTAB-1k's 800/200), so one seed always means one permutation:
    for a given seed a smaller ``k`` picks a subset of a larger one's first part. ``sort=True`` returns
    the indices in split order (a subset keeps the original image order); ``sort=False`` keeps the
    permutation's order. ``k > n`` takes everything.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    first, rest = perm[:k], perm[k:]
    if sort:
        return first.sort().values, rest.sort().values
    return first, rest


def carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off a deterministic ``fraction`` of ``split`` (a seeded permutation): ``(rest, carved)``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    carved, rest = seeded_split(len(split), round(len(split) * fraction), seed=seed)
    return split.subset(rest), split.subset(carved)


def fit_size(images: torch.Tensor, size: int | None, mode: str = "auto") -> torch.Tensor:
    """Bring uint8 ``(N, C, h, w)`` images to ``(N, C, size, size)``.

    ``mode="pad"`` zero-pads centrally (28 -> 32 px Fashion-MNIST, as in the lens paper's setting),
    ``"resize"`` interpolates bilinearly (digits' 8 px -> 32 px), ``"auto"`` pads when the image grows by
    at most 8 px and resizes otherwise.
    """
    if size is None or (images.shape[-1] == size and images.shape[-2] == size):
        return images
    h, w = images.shape[-2:]
    if mode == "auto":
        mode = "pad" if (h == w and 0 < size - h <= 8) else "resize"
    if mode == "pad":
        if size < h or size < w:
            raise ValueError(f"cannot pad {h}x{w} images down to {size}")
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(images, (left, size - w - left, top, size - h - top))
    if mode != "resize":
        raise ValueError(f"Unknown resize mode '{mode}'. Valid modes: auto, pad, resize")
    out = []
    for chunk in images.split(4096):  # bounded float memory for large sets
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def check_root(root: str | os.PathLike) -> Path:
    """An explicit ``data.root``: it must be an existing folder (never a silent switch elsewhere)."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"data.root={root}: no such folder")
    if not path.is_dir():
        raise DataNotFoundError(f"data.root={root}: is a file, not a folder")
    return path


def search_dirs(root: str | os.PathLike | None, *subdirs: str) -> list[Path]:
    """Where data sources look: an explicit ``root`` alone, which must exist (data found elsewhere is
    never used instead of the folder the user named); without one, ``$SHORTCUTLENS_DATA`` then
    ``~/.cache/shortcutlens``.

    Each base is tried as is and with each of ``subdirs`` appended.
    """
    bases: list[Path] = []
    if root:
        base = check_root(root)
        return [base] + [base / s for s in subdirs]
    if os.environ.get("SHORTCUTLENS_DATA"):
        bases.append(Path(os.environ["SHORTCUTLENS_DATA"]).expanduser())
    bases.append(default_cache_dir())
    out: list[Path] = []
    for base in bases:
        out.append(base)
        out.extend(base / s for s in subdirs)
    return out


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shortcutlens"


def finish(
    name: str,
    train: Split,
    test: Split,
    *,
    num_classes: int,
    val_fraction: float,
    seed: int,
    unlabeled: Split | None = None,
) -> ImageData:
    """Carve the validation split from train and assemble the ``ImageData``."""
    rest, val = carve(train, val_fraction, seed)
    return ImageData(name=name, train=rest, val=val, test=test, num_classes=num_classes, unlabeled=unlabeled)
