"""Image folders too large for memory: files decoded on demand, in ``DataLoader`` worker processes.

An in-memory split holds every decoded image as uint8 (ImageNet at 224 px would be ~190 GB). A streamed
split holds only the file paths and labels; :class:`LazyImages` stands where the uint8 tensor would be
(``shape``, ``dtype``, ``images[index]`` decodes just those files), so code written for an in-memory
split — slicing a few images for a picture, reading the image size — keeps working.

Training batches come from :class:`StreamBatches`, the streaming back end of
``shortcutlens.data.loader.BatchLoader``: the same ``DistributedSampler`` order (per-rank shard,
reseeded per epoch, ``drop_last``) as the in-memory path, so ``batch(step)`` returns the same images
for the same ``(seed, step, rank)`` on either path and a resumed run reads the batches it would have
read. Workers decode ahead of the step being trained; memory stays bounded by
``workers × prefetch`` batches plus a few cached ones.

Shapes: ``LazyImages[index]`` -> uint8 ``(n, C, S, S)``; ``StreamBatches.batch(step)`` -> uint8
``(B, C, S, S)`` and int64 labels ``(B,)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from shortcutlens.data.base import DataNotFoundError, Split

#: Batches each worker decodes ahead of the step being trained (``DataLoader``'s ``prefetch_factor``).
PREFETCH = 2


def decode(path: str, *, image_size: int, grayscale: bool) -> np.ndarray:
    """One file -> uint8 ``(C, S, S)`` (RGB or L, bilinear resize), as the in-memory path reads it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if grayscale else "RGB").resize((image_size, image_size), Image.BILINEAR)
            arr = np.array(im, dtype=np.uint8)  # a writable copy: torch warns on read-only arrays
    except OSError as err:
        raise DataNotFoundError(f"imagefolder: cannot read {path} ({err})") from err
    return arr[None] if grayscale else arr.transpose(2, 0, 1)


class LazyImages:
    """Stands in for a uint8 ``(N, C, S, S)`` image tensor whose files are decoded when indexed.

    Args:
        paths: one file per image, in split order.
        image_size: side ``S`` every image is resized to.
        grayscale: decode to one channel (L) instead of three (RGB).
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, paths: Sequence[str] | np.ndarray, *, image_size: int, grayscale: bool) -> None:
        # One numpy array of UTF-8 bytes, not a list of str: a byte per character (ImageNet's 1.28M paths
        # take ~70 MB), and forked workers share its pages (no per-item reference counts to copy them).
        if isinstance(paths, np.ndarray) and paths.dtype.kind == "S":
            self.paths = paths
        else:
            self.paths = np.array([str(p).encode() for p in paths], dtype=np.bytes_)
        self.image_size, self.grayscale = int(image_size), bool(grayscale)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 1 if self.grayscale else 3, self.image_size, self.image_size))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def nbytes(self) -> int:
        """What the split would take in memory decoded."""
        return int(np.prod(self.shape))

    def take(self, index: torch.Tensor | Sequence[int]) -> LazyImages:
        """A lazy subset (nothing decoded)."""
        idx = torch.as_tensor(index, dtype=torch.long).numpy()
        return LazyImages(self.paths[idx], image_size=self.image_size, grayscale=self.grayscale)

    def fingerprint(self) -> str:
        """SHA-1 over the decoding settings and each file's path, size and modification time: what a
        feature cache keys a streamed split by (hashing the pixels would mean decoding every file)."""
        import hashlib
        import os

        h = hashlib.sha1(f"{self.image_size}|{self.grayscale}|{len(self)}".encode())
        for path in self.paths:
            st = os.stat(path)
            h.update(path + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def decode_one(self, i: int) -> np.ndarray:
        return decode(self.paths[i].decode(), image_size=self.image_size, grayscale=self.grayscale)

    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Decode the indexed files in this process: uint8 ``(n, C, S, S)`` (``(C, S, S)`` for an int)."""
        if isinstance(index, (int, np.integer)):
            return torch.from_numpy(self.decode_one(int(index)))
        rows = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).reshape(-1).tolist()
        if len(rows) == 0:
            return torch.zeros((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.from_numpy(np.stack([self.decode_one(int(i)) for i in rows]))

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Decoded chunks of ``size`` images in order (as ``Tensor.split`` on an in-memory split)."""
        for start in range(0, len(self), size):
            yield self[start : start + size]


class StreamSplit(Split):
    """A split whose ``images`` are :class:`LazyImages`; ``workers`` decode its batches in parallel.

    ``subset`` stays lazy, so carving validation and test splits or a ``train_size`` subset reads no file.
    """

    images: LazyImages  # type: ignore[assignment]

    def __init__(self, images: LazyImages, labels: torch.Tensor, *, workers: int = 2) -> None:
        self.workers = int(workers)
        super().__init__(images, labels)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if not isinstance(self.images, LazyImages):
            raise TypeError(f"StreamSplit needs LazyImages, got {type(self.images).__name__}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {len(self.images)} images")

    def subset(self, index: torch.Tensor) -> StreamSplit:
        return StreamSplit(self.images.take(index), self.labels[index], workers=self.workers)


def is_streamed(split: Split) -> bool:
    return isinstance(split, StreamSplit)


def concat_streamed(first: StreamSplit, *more: StreamSplit) -> StreamSplit:
    """Streamed splits one after the other (``train`` ∪ ``val``), nothing decoded."""
    parts = (first, *more)
    if len({(p.images.image_size, p.images.grayscale) for p in parts}) != 1:
        raise ValueError("cannot concatenate streamed splits decoded at different sizes or channel counts")
    images = LazyImages(np.concatenate([p.images.paths for p in parts]), image_size=first.images.image_size,
                        grayscale=first.images.grayscale)
    return StreamSplit(images, torch.cat([p.labels for p in parts]), workers=first.workers)


class _Files(Dataset):
    """Map-style dataset over a streamed split: ``i -> (uint8 (C, S, S), label)``, decoded in a worker."""

    def __init__(self, split: StreamSplit) -> None:
        self.images, self.labels = split.images, split.labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.images.decode_one(i)), self.labels[i]


class StepOrder:
    """The indices of global step ``s``: epoch ``s // steps_per_epoch`` of a ``DistributedSampler`` reseeded
    with ``set_epoch``, cut into batches (the last two epochs' orders are kept)."""

    def __init__(self, sampler: DistributedSampler, *, batch_size: int, steps_per_epoch: int) -> None:
        self.sampler, self.batch_size, self.steps_per_epoch = sampler, batch_size, steps_per_epoch
        self._orders: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch not in self._orders:
            self.sampler.set_epoch(epoch)
            self._orders[epoch] = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
            while len(self._orders) > 2:
                self._orders.popitem(last=False)
        return self._orders[epoch][i * self.batch_size : (i + 1) * self.batch_size]


class _StepBatches:
    """Index lists of consecutive global steps from ``start``: the batch sampler handed to ``DataLoader``.

    It holds its own ``StepOrder``, not the loader that owns it: no reference cycle keeps a finished
    ``DataLoader`` iterator alive until a garbage collection that could run in a forked worker."""

    def __init__(self, order: StepOrder, *, start: int) -> None:
        self.order, self.start = order, start

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.order(step).tolist()
            step += 1


def one_line(err: Exception) -> DataNotFoundError:
    """A worker's error arrives with the worker's traceback in its message: keep the last line."""
    last = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    return DataNotFoundError(last.split(": ", 1)[1] if last.startswith(("shortcutlens.", "DataNotFoundError")) else last)


class StreamBatches:
    """``batch(step)`` for a streamed split, decoded ahead by ``split.workers`` worker processes.

    Args:
        split: the streamed split.
        sampler: the ``DistributedSampler`` that fixes the order (shared with ``BatchLoader``).
        batch_size, steps_per_epoch: as ``BatchLoader`` computed them.
        pin: gather batches in pinned host memory (an asynchronous copy to a CUDA device).

    Steps are asked for in order by training: each one is the next item of one ``DataLoader`` iterator.
    A step already delivered (the loop asks for the batch of a step twice: diagnostics, then training)
    comes from a small cache; an earlier one (step 0 for the edit grid) is decoded here, on the spot,
    without disturbing the workers; a later one (a resume) restarts the workers at that step.
    """

    CACHE = 3

    def __init__(self, split: StreamSplit, *, sampler: DistributedSampler, batch_size: int, steps_per_epoch: int,
                 pin: bool = False) -> None:
        self.split, self.sampler = split, sampler
        self.batch_size, self.steps_per_epoch, self.pin = batch_size, steps_per_epoch, pin
        self.workers = split.workers
        self.order = StepOrder(sampler, batch_size=batch_size, steps_per_epoch=steps_per_epoch)
        self._it: Iterator | None = None
        self._next = -1  # the step the iterator yields next
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def _start(self, step: int) -> None:
        # The batch sampler runs in this process (the orders are cheap); only decoding is in the workers.
        sampler = _StepBatches(StepOrder(self.sampler, batch_size=self.batch_size,
                                         steps_per_epoch=self.steps_per_epoch), start=step)
        loader = DataLoader(_Files(self.split), batch_sampler=sampler, num_workers=self.workers,
                            pin_memory=self.pin, prefetch_factor=PREFETCH if self.workers > 0 else None,
                            persistent_workers=False)
        self._it, self._next = iter(loader), step

    def _pull(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._it is not None
        try:
            x, y = next(self._it)
        except DataNotFoundError as err:
            raise one_line(err) from None
        self._next += 1
        return x, y

    def close(self) -> None:
        """Stop the workers now (they also stop when this object is dropped)."""
        self._it, self._next = None, -1
        self._cache.clear()

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, C, S, S)`` and labels ``(B,)`` on the CPU (pinned when ``pin``)."""
        if step in self._cache:
            return self._cache[step]
        if self._it is None or step > self._next:
            self._start(step)
        if step == self._next:
            out = self._pull()
            self._cache[step] = out
            while len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
            return out
        idx = self.order(step)  # an earlier step: decode it here
        return self.split.images[idx], self.split.labels[idx]


def stream_batches(split: StreamSplit, *, batch_size: int, pin: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sequential, unshuffled uint8 batches of a streamed split, decoded by its workers (feature extraction)."""
    n = len(split)
    sampler = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    loader = DataLoader(_Files(split), batch_sampler=sampler, num_workers=split.workers, pin_memory=pin,
                        prefetch_factor=PREFETCH if split.workers > 0 else None)
    it = iter(loader)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except DataNotFoundError as err:
            raise one_line(err) from None


def list_files(folder: Path, classes: list[str], extensions: set[str]) -> tuple[list[str], list[int]]:
    """Every image file of ``folder/<class>/`` in sorted order, and its class index (nothing decoded)."""
    paths: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        d = folder / cls
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in extensions:
                paths.append(str(p))
                labels.append(label)
    return paths, labels
