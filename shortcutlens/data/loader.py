"""Batches from an in-memory uint8 tensor, as a pure function of the global step.

``loader.batch(step)`` returns the same images for the same ``(seed, step, rank)`` whether the run was
interrupted or not, which is what makes resume-after-kill exact. The order within an epoch comes
from ``torch.utils.data.DistributedSampler`` reseeded per epoch (``set_epoch``), so under torchrun each
rank sees its own shard. Indexing is one ``index_select`` per batch: no per-sample Python work.

A streamed split (``shortcutlens.data.stream.StreamSplit``: an image folder too large for memory) keeps
the same order and the same ``batch(step)``; its files are decoded ahead in ``DataLoader`` worker
processes (``shortcutlens.data.stream.StreamBatches``).
"""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler

from shortcutlens.data.base import Split
from shortcutlens.data.stream import StreamBatches, is_streamed, stream_batches

# Datasets up to this size are moved to the accelerator whole; larger ones stay in pinned host memory.
DEVICE_RESIDENT_BYTES = 2 << 30


class BatchLoader:
    """Args:
    split: the images (uint8 ``(N, C, H, W)``) and labels.
    batch_size: images per rank and step.
    seed: seeds the per-epoch shuffle.
    device: where batches are delivered.
    rank, world_size: this process's shard (``DistributedSampler`` semantics, ``drop_last=True``).
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.sampler = DistributedSampler(
            range(len(split)), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {batch_size} x {world_size} rank(s) is larger than the {len(split)} training images"
            )
        self.batch_size = batch_size
        self.stream: StreamBatches | None = None
        if is_streamed(split):
            self.stream = StreamBatches(split, sampler=self.sampler, batch_size=batch_size,
                                        steps_per_epoch=self.steps_per_epoch, pin=self.device.type == "cuda")
            self.images, self.labels = split.images, split.labels
            return
        images, labels = split.images, split.labels
        if self.device.type == "cuda":
            if images.numel() <= DEVICE_RESIDENT_BYTES:
                images, labels = images.to(self.device), labels.to(self.device)
            else:
                images, labels = images.pin_memory(), labels.pin_memory()
        self.images, self.labels = images, labels
        # A large dataset stays in pinned host memory; the batch is gathered into a pinned buffer too,
        # so that its copy to the device is truly asynchronous (a plain index_select result is pageable).
        self._pinned = images.is_pinned() and self.device.type == "cuda"
        self._buffers: list[tuple[torch.Tensor, torch.Tensor, torch.cuda.Event]] = []
        self._epoch = -1
        self._order: torch.Tensor | None = None

    def _order_for(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._order = torch.tensor(list(iter(self.sampler)), dtype=torch.long, device=self.images.device)
            self._epoch = epoch
        assert self._order is not None
        return self._order

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uint8 images (B, C, H, W), labels (B,))`` for global ``step``, on ``self.device``."""
        if self.stream is not None:
            x, y = self.stream.batch(step)
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        epoch, i = divmod(step, self.steps_per_epoch)
        idx = self._order_for(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        if not self._pinned:
            x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        # Two pinned buffers used in turn: the copy of step t may still be in flight while step t + 1
        # is gathered. Before a buffer is refilled, the host waits for the event recorded after its last
        # copy (two steps ago, so in practice long finished: no stall of the device queue).
        if not self._buffers:
            self._buffers = [(torch.empty((self.batch_size, *self.images.shape[1:]), dtype=self.images.dtype).pin_memory(),
                              torch.empty(self.batch_size, dtype=self.labels.dtype).pin_memory(),
                              torch.cuda.Event()) for _ in range(2)]
        bx, by, copied = self._buffers[step % 2]
        copied.synchronize()
        torch.index_select(self.images, 0, idx, out=bx)
        torch.index_select(self.labels, 0, idx, out=by)
        x, y = bx.to(self.device, non_blocking=True), by.to(self.device, non_blocking=True)
        copied.record()
        return x, y

    def close(self) -> None:
        """Stop a streamed split's decoding workers (nothing to do for an in-memory split)."""
        if self.stream is not None:
            self.stream.close()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]`` (on whatever device the images are)."""
    return images.float().div_(255.0)


def iterate(split: Split, *, batch_size: int, device: torch.device | str = "cpu"):
    """Sequential, unshuffled float batches ``(images [0, 1], labels)`` for feature extraction.

    A streamed split is decoded by its worker processes, a batch at a time (bounded memory)."""
    if is_streamed(split):
        for x, y in stream_batches(split, batch_size=batch_size, pin=torch.device(device).type == "cuda"):
            yield to_float(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
        return
    for start in range(0, len(split), batch_size):
        x = split.images[start : start + batch_size].to(device, non_blocking=True)
        y = split.labels[start : start + batch_size].to(device, non_blocking=True)
        yield to_float(x), y
