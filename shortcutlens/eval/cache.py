"""A feature cache keyed by *what* produced the features, so several evaluators share one pass.

A key is a hash of: the weights (backbone, and the lens when it is used), the images and labels of
the split, the image view (clean, shortcut-bearing, ...), the feature source (raw, lensed, concat),
the tapped layer and the precision. Weights and images are hashed by content, so a renamed or copied
checkpoint still hits and a retrained one never does. Entries live in memory for the process and,
with a ``directory``, on disk as one small ``.pt`` file per (split, layer), written atomically and read
with ``torch.load(weights_only=True)`` (``shortcutlens.checkpoint``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from shortcutlens.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from shortcutlens.data.base import Split
from shortcutlens.data.stream import is_streamed


def _hash_tensor(h: hashlib._Hash, t: torch.Tensor) -> None:
    t = t.detach().contiguous().cpu()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def fingerprint_modules(modules: Iterable[nn.Module | None]) -> str:
    """SHA-1 over the names, shapes and bytes of every state_dict entry of ``modules``."""
    h = hashlib.sha1()
    for module in modules:
        if module is None:
            h.update(b"<none>")
            continue
        h.update(type(module).__name__.encode())
        for name, t in module.state_dict().items():
            h.update(name.encode())
            _hash_tensor(h, t)
    return h.hexdigest()


def fingerprint_split(split: Split) -> str:
    """SHA-1 over a split's images ``(N, C, H, W)`` and labels ``(N,)``; a streamed split's images by their
    files' paths, sizes and modification times (``LazyImages.fingerprint``), none decoded."""
    h = hashlib.sha1()
    if is_streamed(split):
        h.update(split.images.fingerprint().encode())
    else:
        _hash_tensor(h, split.images)
    _hash_tensor(h, split.labels)
    return h.hexdigest()


def make_key(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:32]


class FeatureCache:
    """In-memory and (optionally) on-disk storage of ``(features (N, D), labels (N,))`` by key.

    Args:
        directory: where ``<key>.pt`` files go; ``None`` keeps entries in memory only.
    Counters ``hits`` / ``misses`` say how often a lookup was answered, which the tests pin.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else None
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.pt"

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        if self.directory is not None and self._path(key).is_file():
            try:
                state = load_checkpoint(self._path(key))
                entry = (state["features"], state["labels"])
            except (CheckpointError, KeyError):
                entry = None  # a damaged entry is recomputed and overwritten
            if entry is not None:
                self._memory[key] = entry
                self.hits += 1
                return entry
        self.misses += 1
        return None

    def put(self, key: str, features: torch.Tensor, labels: torch.Tensor) -> None:
        self._memory[key] = (features, labels)
        if self.directory is not None:
            save_checkpoint({"features": features.contiguous(), "labels": labels.contiguous()}, self._path(key))
