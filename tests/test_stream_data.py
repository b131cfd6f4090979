"""Image folders larger than the memory cap are streamed: same batches as in memory, every image seen.

Each tiny PNG carries its own identity in its pixels (red = index within its class, green = class), so
a batch says exactly which files it holds. The memory cap (``max_memory_gb``) is set below the folder's
decoded size, so ``stream=auto`` must pick the streaming path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shortcutlens.data import DataNotFoundError, create_dataset
from shortcutlens.data.imagefolder import should_stream
from shortcutlens.data.loader import BatchLoader, iterate
from shortcutlens.data.stream import LazyImages, StreamSplit, concat_streamed

CLASSES, PER_CLASS, SIZE = 3, 16, 8
DECODED_BYTES = CLASSES * PER_CLASS * 3 * SIZE * SIZE  # 9,216 bytes


def write_folder(root: Path) -> Path:
    from PIL import Image

    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(PER_CLASS):
            arr = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
            arr[..., 0], arr[..., 1] = i, c
            Image.fromarray(arr).save(root / f"class{c}" / f"{i:03d}.png")
    return root


def ids(images: torch.Tensor) -> list[tuple[int, int]]:
    """``(class, index)`` of each image of a uint8 batch ``(B, 3, S, S)``, read from its pixels."""
    return [(int(x[1, 0, 0]), int(x[0, 0, 0])) for x in images]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder") / "images")


@pytest.fixture(scope="module")
def streamed(folder: Path):
    cap = DECODED_BYTES / 2 / 2**30  # half of what the folder takes decoded
    return create_dataset("imagefolder", root=str(folder), image_size=SIZE, val_fraction=0.0, test_fraction=0.25,
                          max_memory_gb=cap, workers=1)


@pytest.fixture(scope="module")
def in_memory(folder: Path):
    return create_dataset("imagefolder", root=str(folder), image_size=SIZE, val_fraction=0.0, test_fraction=0.25)


def test_auto_streams_a_folder_larger_than_the_cap_and_keeps_small_ones_in_memory(streamed, in_memory) -> None:
    assert isinstance(streamed.train, StreamSplit) and isinstance(streamed.test, StreamSplit)
    assert not isinstance(in_memory.train, StreamSplit) and isinstance(in_memory.train.images, torch.Tensor)
    # The streamed split holds file names, not pixels, yet reads like the in-memory one.
    assert streamed.train.images.shape == in_memory.train.images.shape
    assert (streamed.channels, streamed.image_size, streamed.num_classes) == (3, SIZE, CLASSES)
    assert torch.equal(streamed.train.labels, in_memory.train.labels)
    assert torch.equal(streamed.test.images[:5], in_memory.test.images[:5])


def test_the_override_beats_the_size() -> None:
    assert should_stream("auto", decoded_bytes=2**31, max_memory_gb=1.0)
    assert not should_stream("auto", decoded_bytes=2**29, max_memory_gb=1.0)
    assert should_stream(True, decoded_bytes=1, max_memory_gb=1.0)
    assert not should_stream("false", decoded_bytes=2**40, max_memory_gb=1.0)
    with pytest.raises(ValueError, match="data.stream.*auto, true, false"):
        should_stream("sometimes", decoded_bytes=1, max_memory_gb=1.0)


def test_streamed_batches_equal_the_in_memory_ones_and_cover_every_image(streamed, in_memory) -> None:
    kw = {"batch_size": 4, "seed": 3}
    stream, memory = BatchLoader(streamed.train, **kw), BatchLoader(in_memory.train, **kw)
    assert stream.stream is not None and memory.stream is None
    n = len(streamed.train)  # 36 images, 9 steps per epoch
    seen: list[tuple[int, int]] = []
    for step in range(2 * stream.steps_per_epoch):  # two epochs, across the reshuffle
        x, y = stream.batch(step)
        mx, my = memory.batch(step)
        assert torch.equal(x, mx) and torch.equal(y, my)
        assert [c for c, _ in ids(x)] == y.tolist()  # labels travel with their images
        if step == 5:  # the loop asks for step 0 again (the edit grid) without losing its place
            assert torch.equal(stream.batch(0)[0], memory.batch(0)[0])
        if step < stream.steps_per_epoch:
            seen += ids(x)
    assert len(seen) == n and len(set(seen)) == n
    assert len(stream.stream._cache) <= stream.stream.CACHE  # decoded batches held: a few, not the epoch
    assert set(seen) == set(ids(in_memory.train.images[:]))


def test_a_resumed_stream_continues_with_the_same_batches(streamed) -> None:
    first = BatchLoader(streamed.train, batch_size=4, seed=0)
    expected = [first.batch(s)[0] for s in range(12)]
    resumed = BatchLoader(streamed.train, batch_size=4, seed=0)  # a fresh process picking up at step 7
    for s in range(7, 12):
        assert torch.equal(resumed.batch(s)[0], expected[s])


def test_ranks_stream_disjoint_shards_that_cover_the_split(streamed) -> None:
    shards = [BatchLoader(streamed.train, batch_size=3, seed=1, rank=r, world_size=2) for r in range(2)]
    got = [[i for s in range(l.steps_per_epoch) for i in ids(l.batch(s)[0])] for l in shards]
    assert set(got[0]).isdisjoint(got[1])
    assert len(got[0]) + len(got[1]) == len(streamed.train)  # 36 images: 18 per rank, 6 steps of 3


def test_feature_extraction_streams_a_split_in_order(streamed, in_memory) -> None:
    batches = list(iterate(streamed.test, batch_size=5))
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), in_memory.test.images.float() / 255)
    assert torch.equal(torch.cat([b[1] for b in batches]), in_memory.test.labels)


def test_train_and_val_concatenate_lazily_and_a_fingerprint_tracks_the_files(folder: Path) -> None:
    data = create_dataset("imagefolder", root=str(folder), image_size=SIZE, val_fraction=0.2, test_fraction=0.25,
                          stream="true", workers=0)
    both = concat_streamed(data.train, data.val)
    assert isinstance(both, StreamSplit) and len(both) == len(data.train) + len(data.val)
    assert torch.equal(both.images[len(data.train):], data.val.images[:])
    assert torch.equal(both.labels, torch.cat([data.train.labels, data.val.labels]))
    key = data.train.images.fingerprint()
    assert key == create_dataset("imagefolder", root=str(folder), image_size=SIZE, val_fraction=0.2, test_fraction=0.25,
                                 stream="true").train.images.fingerprint()
    assert key != data.val.images.fingerprint()
    assert key != LazyImages(data.train.images.paths, image_size=SIZE * 2, grayscale=False).fingerprint()


def test_a_corrupt_file_in_a_streamed_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "images")
    (root / "class1" / "007.png").write_bytes(b"not a png")
    data = create_dataset("imagefolder", root=str(root), image_size=SIZE, stream="true", workers=1,
                          test_fraction=0.25, val_fraction=0.0)
    with pytest.raises(DataNotFoundError) as err:
        for _ in iterate(data.train, batch_size=8):
            pass
        for _ in iterate(data.test, batch_size=8):
            pass
    assert "007.png" in str(err.value) and "\n" not in str(err.value)
