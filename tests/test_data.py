"""Data sources (deterministic splits, uint8 in memory, clear errors) and the step-indexed batch loader.

Every file-based source is exercised on tiny fake files written in the official formats, so the
suite needs no download; Fashion-MNIST is also loaded for real where the Debian package is installed.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from shortcutlens.data import DataNotFoundError, create_dataset
from shortcutlens.data import fashion_mnist as fmnist_module
from shortcutlens.data.base import Split
from shortcutlens.data.loader import BatchLoader, iterate


def rows(*splits: Split) -> list[bytes]:
    """The images of ``splits`` as a sorted list of byte strings (a multiset, order ignored)."""
    return sorted(bytes(img.numpy().tobytes()) for s in splits for img in s.images)


# ---------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return create_dataset("digits", seed=0)


def test_digits_shapes_dtypes_and_split_sizes(digits) -> None:
    # 1,797 images: 20% test (359), 10% of the rest validation (144), 1,294 train.
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1294, 144, 359)
    for split in (digits.train, digits.val, digits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 32, 32)
        assert split.labels.dtype == torch.int64
        assert split.labels.min() >= 0 and split.labels.max() <= 9
    assert digits.num_classes == 10 and digits.channels == 1 and digits.image_size == 32
    assert int(digits.train.images.max()) > 200  # 0..16 was rescaled to the full uint8 range
    assert digits.summary() == "digits: 1x32x32, 10 classes, train=1294, val=144, test=359"


def test_digits_is_deterministic_and_the_seed_moves_only_the_validation_split(digits) -> None:
    again = create_dataset("digits", seed=0)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(digits, name).images, getattr(again, name).images)
        assert torch.equal(getattr(digits, name).labels, getattr(again, name).labels)
    other = create_dataset("digits", seed=1)
    assert torch.equal(digits.test.images, other.test.images)  # the test set never moves
    assert torch.equal(digits.test.labels, other.test.labels)
    assert not torch.equal(digits.val.images, other.val.images)
    assert len(other.val) == len(digits.val)
    # train + val is the same pool of images, just divided differently.
    assert rows(digits.train, digits.val) == rows(other.train, other.val)


def test_digits_image_size_and_split_lookup(digits) -> None:
    small = create_dataset("digits", image_size=16)
    assert small.train.images.shape[1:] == (1, 16, 16)
    assert digits.split("val") is digits.val
    with pytest.raises(ValueError, match="Valid splits: train, val, test"):
        digits.split("unlabeled")


def test_synthetic_is_deterministic_in_its_seed() -> None:
    a, b = create_dataset("synthetic", seed=0), create_dataset("synthetic", seed=0)
    c = create_dataset("synthetic", seed=1)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.train.images.shape[1:] == (1, 16, 16) and a.num_classes == 4
    assert len(a.train) + len(a.val) == 256 and len(a.test) == 128


# ---------------------------------------------------------------------------------------- Fashion-MNIST

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SHORTCUTLENS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # make sure the Debian copy is what gets read
    data = create_dataset("fashion_mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 32, 32)
    assert data.num_classes == 10
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    # 28 px zero-padded by 2 on every side, not resized.
    border = torch.cat([data.test.images[..., :2, :].flatten(), data.test.images[..., -2:, :].flatten(),
                        data.test.images[..., :2].flatten(), data.test.images[..., -2:].flatten()])
    assert int(border.max()) == 0


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_fake_fashion_mnist(folder: Path, *, n_train: int = 40, n_test: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for i, (stem, arr) in enumerate(arrays.items()):
        write_idx(folder / stem, arr, gz=i % 2 == 0)  # both gzipped and plain files are read
    return arrays


def test_fashion_mnist_reads_idx_files_from_root(no_data: Path) -> None:
    arrays = write_fake_fashion_mnist(no_data / "fashion-mnist")
    data = create_dataset("fashion_mnist", root=str(no_data), val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)
    assert data.test.images.shape == (20, 1, 32, 32)
    assert torch.equal(data.test.images[:, 0, 2:30, 2:30], torch.from_numpy(arrays["t10k-images-idx3-ubyte"].astype(np.uint8)))
    assert data.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    native = create_dataset("fashion_mnist", root=str(no_data), image_size=None)
    assert native.test.images.shape == (20, 1, 28, 28)


def test_fashion_mnist_is_found_through_the_environment_variable(no_data: Path, tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path / "env_data" / "fashion_mnist")
    assert len(create_dataset("fashion_mnist").test) == 20


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_get_it(no_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        create_dataset("fashion_mnist")
    message = str(info.value)
    for folder in (tmp_path / "env_data", tmp_path / "cache" / "shortcutlens", fmnist_module.DEBIAN_DIR):
        assert str(folder) in message
    assert "train-images-idx3-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.download=true" in message
    assert isinstance(info.value, FileNotFoundError)  # callers may catch the standard type


def test_an_explicit_root_never_falls_back(no_data: Path, tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path / "env_data" / "fashion_mnist")  # found there without a root...
    with pytest.raises(DataNotFoundError) as info:  # ...but never instead of the folder the user named
        create_dataset("fashion_mnist", root=str(no_data))
    message = str(info.value)
    assert str(no_data) in message and str(tmp_path / "env_data") not in message
    assert "data.download=true" in message
    with pytest.raises(DataNotFoundError, match="no such folder"):
        create_dataset("fashion_mnist", root=str(tmp_path / "absent"))
    with pytest.raises(DataNotFoundError, match="no such folder"):
        create_dataset("cifar10", root=str(tmp_path / "absent"))


@pytest.mark.parametrize("damage", ["bad_magic", "truncated", "not_gzip"])
def test_corrupt_idx_file_gives_a_clear_error(no_data: Path, damage: str) -> None:
    write_fake_fashion_mnist(no_data)
    target = no_data / "train-labels-idx1-ubyte"  # the plain (not gzipped) one
    raw = target.read_bytes()
    if damage == "bad_magic":
        target.write_bytes(b"\x1f\x8b" + raw[2:])
        expected = "not an unsigned-byte idx file"
    elif damage == "truncated":
        target.write_bytes(raw[:-5])
        expected = "truncated"
    else:
        target.unlink()
        (no_data / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data")
        expected = "train-labels-idx1-ubyte.gz"
    with pytest.raises(DataNotFoundError) as info:
        create_dataset("fashion_mnist", root=str(no_data))
    message = str(info.value)
    assert "unreadable" in message and expected in message
    assert "apt-get install dataset-fashion-mnist" in message


# ---------------------------------------------------------------------------------------- CIFAR


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: bytes) -> None:
    with open(path, "wb") as f:
        pickle.dump({b"data": images.reshape(len(images), -1), label_key: labels, b"batch_label": b"fake"}, f)


def test_cifar10_reads_python_pickle_batches(no_data: Path) -> None:
    folder = no_data / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        write_cifar_batch(folder / name, images, labels, b"labels")
        batches[name] = (images, labels)
    data = create_dataset("cifar10", root=str(no_data), val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (15, 5, 4)
    assert data.train.images.shape[1:] == (3, 32, 32) and data.num_classes == 10
    # Channel-first rows of 3072 bytes come back as (C, H, W) images, in file order for the test split.
    assert torch.equal(data.test.images, torch.from_numpy(batches["test_batch"][0]))
    assert data.test.labels.tolist() == batches["test_batch"][1]
    all_train = [img for i in range(1, 6) for img in batches[f"data_batch_{i}"][0]]
    assert rows(data.train, data.val) == sorted(img.tobytes() for img in all_train)


def test_cifar100_uses_fine_labels(no_data: Path) -> None:
    folder = no_data / "cifar100" / "cifar-100-python"  # found in the <root>/<name>/ subfolder too
    folder.mkdir(parents=True)
    images = np.zeros((10, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(folder / "train", images, list(range(90, 100)), b"fine_labels")
    write_cifar_batch(folder / "test", images[:2], [5, 99], b"fine_labels")
    data = create_dataset("cifar100", root=str(no_data), val_fraction=0.0)
    assert data.num_classes == 100 and data.test.labels.tolist() == [5, 99]
    assert sorted(data.train.labels.tolist()) == list(range(90, 100))


def test_cifar_missing_or_corrupt(no_data: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        create_dataset("cifar10", root=str(no_data))
    assert str(no_data) in str(info.value) and "cifar-10-python.tar.gz" in str(info.value)
    folder = no_data / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{i}", np.zeros((2, 3, 32, 32), np.uint8), [0, 1], b"labels")
    (folder / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataNotFoundError, match="test_batch is missing or corrupt"):
        create_dataset("cifar10", root=str(no_data))


# ---------------------------------------------------------------------------------------- STL-10


def write_stl(path: Path, images: np.ndarray) -> None:
    """STL-10 stores each image column-major: (N, C, W, H) on disk."""
    images.transpose(0, 1, 3, 2).astype(np.uint8).tofile(path)


def test_stl10_reads_binary_files_column_major(no_data: Path) -> None:
    folder = no_data / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 3, 96, 96), dtype=np.uint8)
    train[0] = 0
    train[0, 1, 10, 70] = 255  # one bright green pixel at row 10, column 70: checks the axis order
    test = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    write_stl(folder / "train_X.bin", train)
    np.array([1, 2, 3, 4, 10], dtype=np.uint8).tofile(folder / "train_y.bin")  # labels are 1-based on disk
    write_stl(folder / "test_X.bin", test)
    np.array([10, 1, 5], dtype=np.uint8).tofile(folder / "test_y.bin")
    write_stl(folder / "unlabeled_X.bin", rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8))

    data = create_dataset("stl10", root=str(no_data), val_fraction=0.0)
    assert data.unlabeled is None and data.train.images.shape[1:] == (3, 96, 96)
    assert torch.equal(data.test.images, torch.from_numpy(test))
    assert data.test.labels.tolist() == [9, 0, 4]
    first = data.train.images[data.train.labels == 0][0]
    assert first.nonzero().tolist() == [[1, 10, 70]]

    with_unlabeled = create_dataset("stl10", root=str(no_data), unlabeled=True, image_size=32)
    assert with_unlabeled.unlabeled is not None and len(with_unlabeled.unlabeled) == 2
    assert with_unlabeled.unlabeled.labels.tolist() == [-1, -1]
    assert with_unlabeled.unlabeled.images.shape[1:] == (3, 32, 32)
    assert with_unlabeled.split("unlabeled") is with_unlabeled.unlabeled

    (folder / "test_X.bin").write_bytes(b"\x00" * 1000)
    with pytest.raises(DataNotFoundError, match="truncated"):
        create_dataset("stl10", root=str(no_data))


def test_stl10_missing(no_data: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        create_dataset("stl10", root=str(no_data))
    assert str(no_data) in str(info.value) and "stl10_binary.tar.gz" in str(info.value)


# ---------------------------------------------------------------------------------------- imagefolder


def write_pngs(folder: Path, colour: tuple[int, int, int], count: int, size: int = 12) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (size, size + i), colour).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")  # skipped


def test_imagefolder_with_train_and_test_folders(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train" / "red", (255, 0, 0), 5)
    write_pngs(tmp_path / "train" / "blue", (0, 0, 255), 5)
    write_pngs(tmp_path / "test" / "red", (255, 0, 0), 2)
    write_pngs(tmp_path / "test" / "blue", (0, 0, 255), 1)
    data = create_dataset("imagefolder", root=str(tmp_path), image_size=16, val_fraction=0.2)
    assert data.num_classes == 2 and (len(data.train), len(data.val), len(data.test)) == (8, 2, 3)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 16, 16)
    # Classes are numbered in sorted order: blue = 0, red = 1.
    assert data.test.labels.tolist() == [0, 1, 1]
    blue = data.test.images[0].float().mean(dim=(1, 2))
    assert blue.tolist() == [0.0, 0.0, 255.0]
    gray = create_dataset("imagefolder", root=str(tmp_path), image_size=8, grayscale=True)
    assert gray.train.images.shape[1:] == (1, 8, 8)


def test_imagefolder_flat_layout_holds_out_a_test_split(tmp_path: Path) -> None:
    for name, colour in (("a", (10, 10, 10)), ("b", (200, 200, 200))):
        write_pngs(tmp_path / name, colour, 5)
    data = create_dataset("imagefolder", root=str(tmp_path), image_size=8, test_fraction=0.2, val_fraction=0.0)
    assert (len(data.train), len(data.test)) == (8, 2)
    assert sorted(data.train.labels.tolist() + data.test.labels.tolist()) == [0] * 5 + [1] * 5


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="data.root"):
        create_dataset("imagefolder", root=str(tmp_path / "absent"))
    (tmp_path / "train" / "cls").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="no images under"):
        create_dataset("imagefolder", root=str(tmp_path))
    (tmp_path / "train" / "cls" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataNotFoundError, match="broken.png"):
        create_dataset("imagefolder", root=str(tmp_path))


# ---------------------------------------------------------------------------------------- BatchLoader


def numbered_split(n: int) -> Split:
    """Images whose single pixel is their index, so a batch tells which samples it holds."""
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n))


def test_batch_is_a_pure_function_of_the_step() -> None:
    split = numbered_split(100)
    a = BatchLoader(split, batch_size=8, seed=0)
    b = BatchLoader(split, batch_size=8, seed=0)
    # A fresh loader (a resumed run) asked for step 37 first gives what the first one gives after 0..36.
    seq = [a.batch(s)[1] for s in range(40)]
    assert torch.equal(b.batch(37)[1], seq[37])
    assert torch.equal(b.batch(3)[1], seq[3])
    x, y = a.batch(5)
    assert x.dtype == torch.uint8 and x.shape == (8, 1, 1, 1)
    assert torch.equal(x.flatten().long(), y)  # images and labels stay paired
    assert not torch.equal(BatchLoader(split, batch_size=8, seed=1).batch(0)[1], seq[0])


def test_one_epoch_covers_the_data_without_repeats() -> None:
    loader = BatchLoader(numbered_split(100), batch_size=8, seed=0)
    assert loader.steps_per_epoch == 12  # drop_last: 96 of 100 images per epoch
    epoch0 = torch.cat([loader.batch(s)[1] for s in range(12)])
    epoch1 = torch.cat([loader.batch(s)[1] for s in range(12, 24)])
    assert len(set(epoch0.tolist())) == 96 and len(set(epoch1.tolist())) == 96
    assert not torch.equal(epoch0, epoch1)  # reshuffled every epoch
    assert not torch.equal(epoch0, torch.sort(epoch0).values)


def test_ranks_get_disjoint_shards() -> None:
    split = numbered_split(64)
    r0 = BatchLoader(split, batch_size=4, seed=0, rank=0, world_size=2)
    r1 = BatchLoader(split, batch_size=4, seed=0, rank=1, world_size=2)
    assert r0.steps_per_epoch == r1.steps_per_epoch == 8
    for step in (0, 8):  # two epochs
        s0 = torch.cat([r0.batch(s)[1] for s in range(step, step + 8)]).tolist()
        s1 = torch.cat([r1.batch(s)[1] for s in range(step, step + 8)]).tolist()
        assert not set(s0) & set(s1)
        assert sorted(s0 + s1) == list(range(64))


def test_batch_larger_than_the_data_is_an_error() -> None:
    with pytest.raises(ValueError, match="larger than the 10 training images"):
        BatchLoader(numbered_split(10), batch_size=16, seed=0)


def test_iterate_is_sequential_and_float() -> None:
    batches = list(iterate(numbered_split(10), batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[1]
    assert x.dtype == torch.float32 and torch.allclose(x.flatten(), torch.arange(4, 8) / 255.0)
    assert y.tolist() == [4, 5, 6, 7]
