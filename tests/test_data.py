"""Tests of the dataset readers, loaders and the multi-task split.

Expected values on real data are published facts about the datasets (label
counts, first labels, exact pixel values), not outputs of the code under test.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from subspace_diffusion import data as data_module
from subspace_diffusion.data import (
    DATA_DIR_ENV,
    DATASETS,
    ImageDataset,
    default_data_dir,
    load_dataset,
    read_cifar_batch,
    read_idx,
)
from subspace_diffusion.errors import ConfigError, DataError
from subspace_diffusion.tasks import DEFAULT_TASKS, TaskSplit, split_tasks

# Label counts of classes 0..9, published with the datasets.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR_BATCH_1_COUNTS = [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
CIFAR_EXACT_TEST_COUNTS = [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
# First labels of the official files.
MNIST_FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
MNIST_FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
CIFAR_FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
# Where the Debian package dataset-fashion-mnist installs its files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Encode ``array`` as an IDX file, written here independently of read_idx."""
    big_endian = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian).tobytes()


def write_mnist_folder(directory, num_train=6, num_test=4, side=28, seed=0):
    """Write four tiny MNIST-format files and return their arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(
            0, 256, (num_train, side, side), dtype=np.uint8
        ),
        "train-labels-idx1-ubyte": np.arange(num_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(
            0, 256, (num_test, side, side), dtype=np.uint8
        ),
        "t10k-labels-idx1-ubyte": np.arange(num_test, dtype=np.uint8) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for i, (stem, array) in enumerate(arrays.items()):
        # Mix gzipped and plain files, as both are accepted.
        if i % 2 == 0:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (directory / stem).write_bytes(idx_bytes(array))
    return arrays


def write_cifar_batch(path, num_images=4, seed=0, protocol=2, str_keys=False):
    """Write a tiny CIFAR-10 batch pickle and return its data and labels."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (num_images, 3072), dtype=np.uint8)
    labels = [int(label) for label in np.arange(num_images) % 10]
    if str_keys:
        batch = {"data": data, "labels": labels, "batch_label": "tiny"}
    else:
        batch = {b"data": data, b"labels": labels, b"batch_label": b"tiny"}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return data, labels


def indexed_dataset(train_counts, test_counts, name="indexed"):
    """Dataset whose pixel (0, 0, 0) of sample i is i, to trace samples."""
    train_labels = torch.repeat_interleave(
        torch.arange(len(train_counts)), torch.tensor(train_counts)
    )
    test_labels = torch.repeat_interleave(
        torch.arange(len(test_counts)), torch.tensor(test_counts)
    )
    train_images = torch.zeros(len(train_labels), 1, 2, 2)
    train_images[:, 0, 0, 0] = torch.arange(len(train_labels), dtype=torch.float32)
    test_images = torch.zeros(len(test_labels), 1, 2, 2)
    test_images[:, 0, 0, 0] = torch.arange(len(test_labels), dtype=torch.float32)
    return ImageDataset(
        name=name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=len(train_counts),
    )


def sample_ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].to(torch.int64).tolist()


# read_idx


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    content = idx_bytes(array)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    path.write_bytes(gzip.compress(content) if compress else content)

    result = read_idx(path)

    assert result.dtype == np.uint8
    assert result.shape == (3, 4, 5)
    assert np.array_equal(result, array)
    assert result.flags.writeable


def test_read_idx_gzip_without_suffix(tmp_path):
    array = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(array)))

    assert np.array_equal(read_idx(path), array)


@pytest.mark.parametrize(("type_code", "dtype"), [(0x0C, np.int32), (0x0D, np.float32)])
def test_read_idx_big_endian_types(tmp_path, type_code, dtype):
    array = np.array([[1, -2, 70000], [-3, 4, 5]], dtype=dtype)
    path = tmp_path / "values.idx"
    path.write_bytes(idx_bytes(array, type_code))

    result = read_idx(path)

    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    assert np.array_equal(result, array)


def corrupt_idx_cases():
    valid = idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))
    return {
        "empty file": (b"", "fewer than the 4-byte magic"),
        "nonzero leading bytes": (b"\x01\x00" + valid[2:], "Invalid IDX magic"),
        "unknown type code": (valid[:2] + b"\x07" + valid[3:], "Invalid IDX magic"),
        "zero dimensions": (valid[:3] + b"\x00" + valid[4:], "Invalid IDX magic"),
        "truncated header": (valid[:9], "truncated inside its header"),
        "truncated data": (valid[:-1], "has 17 data bytes"),
        "extra data": (valid + b"\x00", "has 19 data bytes"),
        "dims larger than data": (
            valid[:4] + struct.pack(">3I", 2, 3, 4) + valid[16:],
            "needs 24",
        ),
        "one dim missing": (valid[:3] + b"\x02" + valid[4:], "data bytes"),
        "truncated gzip": (gzip.compress(valid)[:-12], "Corrupt or truncated gzip"),
        "corrupt gzip": (b"\x1f\x8b" + b"\xff" * 30, "Corrupt or truncated gzip"),
    }


@pytest.mark.parametrize("case", list(corrupt_idx_cases()))
def test_read_idx_rejects_corrupt_file(tmp_path, case):
    content, message = corrupt_idx_cases()[case]
    path = tmp_path / "corrupt-idx"
    path.write_bytes(content)

    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="IDX file not found"):
        read_idx(tmp_path / "absent-idx3-ubyte")


# MNIST-format folders written here


def test_load_mnist_tiny_folder_keeps_pixels(tmp_path):
    arrays = write_mnist_folder(tmp_path / "mnist")

    dataset = load_dataset("mnist", tmp_path / "mnist", image_size=28)

    raw = arrays["train-images-idx3-ubyte"].astype(np.float32)
    expected = torch.from_numpy((raw / 255.0 - 0.5) / 0.5).unsqueeze(1)
    assert dataset.train_images.shape == (6, 1, 28, 28)
    assert torch.allclose(dataset.train_images, expected, atol=1e-6)
    assert dataset.train_labels.dtype == torch.int64
    assert dataset.train_labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert dataset.test_labels.tolist() == [0, 1, 2, 3]


def test_load_mnist_tiny_folder_resizes(tmp_path):
    write_mnist_folder(tmp_path / "mnist")

    default = load_dataset("mnist", tmp_path / "mnist")
    rectangular = load_dataset("mnist", str(tmp_path / "mnist"), image_size=(12, 20))

    assert default.image_size == (16, 16)
    assert default.num_channels == 1
    assert rectangular.image_size == (12, 20)


def test_load_resize_keeps_constant_image(tmp_path):
    directory = tmp_path / "mnist"
    write_mnist_folder(directory)
    constant = np.full((6, 28, 28), 51, dtype=np.uint8)
    (directory / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(constant))
    )

    dataset = load_dataset("mnist", directory, image_size=16)

    expected = (51 / 255 - 0.5) / 0.5
    assert torch.allclose(dataset.train_images, torch.full((6, 1, 16, 16), expected))


def test_load_mnist_missing_file(tmp_path):
    directory = tmp_path / "mnist"
    write_mnist_folder(directory)
    (directory / "t10k-images-idx3-ubyte.gz").unlink()

    with pytest.raises(DataError, match="t10k-images-idx3-ubyte") as info:
        load_dataset("mnist", directory)
    assert "MNIST file not found" in str(info.value)
    assert "--data-dir" in str(info.value)


def test_load_mnist_label_count_mismatch(tmp_path):
    directory = tmp_path / "mnist"
    write_mnist_folder(directory)
    (directory / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(np.zeros(5, dtype=np.uint8))
    )

    with pytest.raises(DataError, match=r"expected \(6,\) to match"):
        load_dataset("mnist", directory)


def test_load_mnist_labels_not_1d(tmp_path):
    directory = tmp_path / "mnist"
    write_mnist_folder(directory)
    (directory / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(np.zeros((6, 1), dtype=np.uint8))
    )

    with pytest.raises(DataError, match="labels"):
        load_dataset("mnist", directory)


def test_load_mnist_label_out_of_range(tmp_path):
    directory = tmp_path / "mnist"
    write_mnist_folder(directory)
    (directory / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(np.full(6, 10, dtype=np.uint8))
    )

    with pytest.raises(DataError, match=r"range over 10..10, outside the classes 0..9"):
        load_dataset("mnist", directory)


def test_load_dataset_missing_folder(tmp_path):
    with pytest.raises(DataError, match="MNIST data folder not found"):
        load_dataset("mnist", tmp_path / "absent")


# Real MNIST


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_dataset("mnist", mnist_dir)


def test_mnist_shapes(mnist):
    assert mnist.train_images.shape == (60000, 1, 16, 16)
    assert mnist.test_images.shape == (10000, 1, 16, 16)
    assert mnist.train_images.dtype == torch.float32
    assert mnist.num_classes == 10
    assert mnist.image_size == (16, 16)


def test_mnist_published_label_counts(mnist):
    assert torch.bincount(mnist.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test_labels).tolist() == MNIST_TEST_COUNTS


def test_mnist_first_labels(mnist):
    assert mnist.train_labels[:10].tolist() == MNIST_FIRST_TRAIN_LABELS
    assert mnist.test_labels[:10].tolist() == MNIST_FIRST_TEST_LABELS


def test_mnist_value_range(mnist):
    assert float(mnist.train_images.min()) == -1.0
    assert float(mnist.train_images.max()) <= 1.0
    assert float(mnist.test_images.min()) >= -1.0
    assert float(mnist.test_images.max()) <= 1.0


def test_mnist_resize_keeps_mean(mnist, mnist_dir):
    raw = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    raw_mean = (raw.mean() / 255.0 - 0.5) / 0.5

    assert abs(float(mnist.test_images.mean()) - raw_mean) < 0.01


# Real Fashion-MNIST


@pytest.fixture(scope="module")
def fashion_mnist(fashion_mnist_dir):
    # Load without data_dir, so the system folder is found as the default.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(DATA_DIR_ENV, raising=False)
        return load_dataset("fashion-mnist")


def test_fashion_mnist_default_folder(fashion_mnist_dir, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    assert default_data_dir("fashion-mnist") == fashion_mnist_dir


def test_fashion_mnist_shapes(fashion_mnist):
    assert fashion_mnist.train_images.shape == (60000, 1, 16, 16)
    assert fashion_mnist.test_images.shape == (10000, 1, 16, 16)
    assert fashion_mnist.name == "fashion-mnist"


def test_fashion_mnist_class_counts(fashion_mnist):
    assert torch.bincount(fashion_mnist.train_labels).tolist() == [6000] * 10
    assert torch.bincount(fashion_mnist.test_labels).tolist() == [1000] * 10


def test_fashion_mnist_first_label(fashion_mnist):
    # The first training image is an ankle boot, class 9.
    assert int(fashion_mnist.train_labels[0]) == 9


def test_fashion_mnist_value_range(fashion_mnist):
    assert float(fashion_mnist.train_images.min()) >= -1.0
    assert float(fashion_mnist.train_images.max()) <= 1.0


# Real CIFAR-10


@pytest.fixture(scope="module")
def cifar10(cifar10_dir):
    return load_dataset("cifar10", cifar10_dir)


def test_cifar10_shapes(cifar10, cifar10_dir):
    num_batches = len(list(cifar10_dir.glob("data_batch_*")))

    assert num_batches >= 1
    assert cifar10.train_images.shape == (10000 * num_batches, 3, 32, 32)
    assert cifar10.test_images.shape == (10000, 3, 32, 32)
    assert cifar10.num_channels == 3
    assert cifar10.image_size == (32, 32)


def test_cifar10_label_counts(cifar10):
    first_batch = cifar10.train_labels[:10000]

    assert torch.bincount(first_batch).tolist() == CIFAR_BATCH_1_COUNTS
    assert torch.bincount(cifar10.test_labels).tolist() == [1000] * 10


def test_cifar10_first_test_labels(cifar10):
    assert cifar10.test_labels[:10].tolist() == CIFAR_FIRST_TEST_LABELS


def test_cifar10_value_range(cifar10):
    assert float(cifar10.train_images.min()) >= -1.0
    assert float(cifar10.train_images.max()) <= 1.0


def test_cifar10_exact_pixels_layout(cifar10_exact_dir):
    test_images, test_labels = read_cifar_batch(
        cifar10_exact_dir / "test_batch_first1000_exact"
    )
    train_images, _ = read_cifar_batch(
        cifar10_exact_dir / "data_batch_1_first4000_exact"
    )

    assert test_images.shape == (1000, 3, 32, 32)
    assert test_images.dtype == np.uint8
    assert test_labels.dtype == np.int64
    assert np.bincount(test_labels).tolist() == CIFAR_EXACT_TEST_COUNTS
    # Red channel, row 0, first four columns.
    assert test_images[0, 0, 0, :4].tolist() == [158, 159, 165, 166]
    assert train_images[0, 0, 0, :4].tolist() == [59, 43, 50, 68]


def test_cifar10_matches_exact_subset(cifar10, cifar10_exact_dir):
    exact_images, exact_labels = read_cifar_batch(
        cifar10_exact_dir / "test_batch_first1000_exact"
    )
    exact = torch.from_numpy(exact_images).to(torch.float32)
    loaded = (cifar10.test_images[:1000] * 0.5 + 0.5) * 255.0

    aligned_error = float((loaded - exact).abs().mean())
    shifted_error = float((loaded[1:] - exact[:-1]).abs().mean())

    assert cifar10.test_labels[:1000].tolist() == exact_labels.tolist()
    # test_batch is a JPEG round trip of the originals, with a mean absolute
    # error of about 6 per channel value against the exact pixels.
    assert aligned_error < 10.0
    assert shifted_error > 40.0


# CIFAR-10 batches written here


@pytest.mark.parametrize(
    ("protocol", "str_keys"), [(2, False), (2, True), (4, True), (5, False)]
)
def test_read_cifar_batch_python3_pickles(tmp_path, protocol, str_keys):
    path = tmp_path / "data_batch_1"
    data, labels = write_cifar_batch(path, protocol=protocol, str_keys=str_keys)

    images, result_labels = read_cifar_batch(path)

    assert images.shape == (4, 3, 32, 32)
    assert np.array_equal(images.reshape(4, 3072), data)
    assert np.array_equal(images[1, 2], data[1, 2048:].reshape(32, 32))
    assert result_labels.dtype == np.int64
    assert result_labels.tolist() == labels


class RunsShellCommand:
    """Object whose unpickling would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class RunsPythonCode:
    """Object whose unpickling would execute Python code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.mark.parametrize("payload_type", [RunsShellCommand, RunsPythonCode])
def test_read_cifar_batch_rejects_malicious(tmp_path, payload_type):
    marker = tmp_path / "marker"
    if payload_type is RunsShellCommand:
        payload = RunsShellCommand(f"touch '{marker}'")
    else:
        payload = RunsPythonCode(f"open({str(marker)!r}, 'w').close()")
    batch = {b"data": payload, b"labels": [0]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))

    with pytest.raises(DataError, match="Rejected pickle"):
        read_cifar_batch(path)
    assert not marker.exists()


def test_read_cifar_batch_rejects_numpy_load(tmp_path):
    # A global from numpy that is not needed to build an array.
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02cnumpy\nload\nq\x00.")

    with pytest.raises(DataError, match="numpy.load"):
        read_cifar_batch(path)


def invalid_cifar_batches():
    data = np.zeros((2, 3072), dtype=np.uint8)
    return {
        "not a dict": ([data, [0, 1]], "contains a list"),
        "no labels": ({b"data": data}, "no 'labels' entry"),
        "wrong data width": (
            {b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]},
            r"\(N, 3072\)",
        ),
        "wrong data dtype": (
            {b"data": data.astype(np.float32), b"labels": [0, 1]},
            "uint8 array",
        ),
        "data not an array": ({b"data": [1, 2], b"labels": [0, 1]}, "got list"),
        "too few labels": ({b"data": data, b"labels": [0]}, "one label per image"),
        "label out of range": ({b"data": data, b"labels": [0, 10]}, "outside"),
        "labels not integers": ({b"data": data, b"labels": ["a", "b"]}, "integers"),
    }


@pytest.mark.parametrize("case", list(invalid_cifar_batches()))
def test_read_cifar_batch_invalid_layout(tmp_path, case):
    batch, message = invalid_cifar_batches()[case]
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))

    with pytest.raises(DataError, match=message):
        read_cifar_batch(path)


def test_read_cifar_batch_truncated(tmp_path):
    path = tmp_path / "data_batch_1"
    write_cifar_batch(path)
    path.write_bytes(path.read_bytes()[:500])

    with pytest.raises(DataError, match="corrupt or truncated"):
        read_cifar_batch(path)


def test_read_cifar_batch_missing_file(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 batch file not found"):
        read_cifar_batch(tmp_path / "data_batch_1")


def test_load_cifar10_uses_present_batches(tmp_path):
    directory = tmp_path / "cifar"
    directory.mkdir()
    data_2, labels_2 = write_cifar_batch(directory / "data_batch_2", seed=2)
    data_5, labels_5 = write_cifar_batch(directory / "data_batch_5", 3, seed=5)
    write_cifar_batch(directory / "test_batch", 2, seed=9)

    dataset = load_dataset("cifar10", directory)

    expected = np.concatenate([data_2, data_5]).reshape(7, 3, 32, 32)
    expected = (torch.from_numpy(expected).float() / 255.0 - 0.5) / 0.5
    assert dataset.train_labels.tolist() == labels_2 + labels_5
    assert torch.allclose(dataset.train_images, expected, atol=1e-6)
    assert dataset.test_images.shape == (2, 3, 32, 32)


def test_load_cifar10_parent_folder(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    write_cifar_batch(directory / "data_batch_1")
    write_cifar_batch(directory / "test_batch")

    dataset = load_dataset("cifar10", tmp_path)

    assert dataset.train_images.shape == (4, 3, 32, 32)


def test_load_cifar10_missing_folder(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 data folder not found"):
        load_dataset("cifar10", tmp_path / "absent")


def test_load_cifar10_no_training_batch(tmp_path):
    write_cifar_batch(tmp_path / "test_batch")

    with pytest.raises(DataError, match="No CIFAR-10 training batch"):
        load_dataset("cifar10", tmp_path)


def test_load_cifar10_no_test_batch(tmp_path):
    write_cifar_batch(tmp_path / "data_batch_1")

    with pytest.raises(DataError, match="test_batch"):
        load_dataset("cifar10", tmp_path)


# digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes(digits):
    assert digits.train_images.shape == (1347, 1, 8, 8)
    assert digits.test_images.shape == (450, 1, 8, 8)
    assert digits.num_classes == 10
    assert digits.num_channels == 1
    assert digits.image_size == (8, 8)


def test_digits_split_deterministic(digits):
    again = load_dataset("digits")

    assert torch.equal(again.train_images, digits.train_images)
    assert torch.equal(again.train_labels, digits.train_labels)
    assert torch.equal(again.test_labels, digits.test_labels)


def test_digits_split_stratified(digits):
    class_counts = np.bincount(load_digits().target)
    test_counts = torch.bincount(digits.test_labels).numpy()

    assert np.all(np.abs(test_counts - 0.25 * class_counts) <= 1)
    assert digits.train_labels.numel() + digits.test_labels.numel() == 1797


def test_digits_pixel_values(digits):
    raw = load_digits().images
    expected_sum = float(((raw / 16.0 - 0.5) / 0.5).sum())
    loaded_sum = float(digits.train_images.sum() + digits.test_images.sum())

    assert loaded_sum == pytest.approx(expected_sum, rel=1e-5)
    assert float(digits.train_images.min()) == -1.0
    assert float(digits.train_images.max()) == 1.0


def test_digits_ignores_data_dir(tmp_path):
    dataset = load_dataset("digits", tmp_path / "absent", image_size=(4, 6))

    assert dataset.image_size == (4, 6)


# default_data_dir and load_dataset arguments


def test_default_data_dir_from_env(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "cifar-10-batches-py").mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))

    assert default_data_dir("mnist") == tmp_path / "mnist"
    assert default_data_dir("cifar10") == tmp_path / "cifar-10-batches-py"
    assert default_data_dir("digits") is None


def test_default_data_dir_env_subfolder_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))

    assert default_data_dir("mnist") == tmp_path / "mnist"
    assert default_data_dir("cifar10") == tmp_path / "cifar10"
    assert default_data_dir("fashion-mnist") == FASHION_MNIST_SYSTEM_DIR


def test_default_data_dir_without_env(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    assert default_data_dir("mnist") is None
    assert default_data_dir("cifar10") is None
    assert default_data_dir("digits") is None
    assert default_data_dir("fashion-mnist") == FASHION_MNIST_SYSTEM_DIR


def test_load_dataset_uses_env_folder(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path / "mnist")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))

    dataset = load_dataset("mnist")

    assert dataset.train_images.shape == (6, 1, 16, 16)


def test_unknown_dataset_lists_choices():
    with pytest.raises(ConfigError, match="digits, mnist, fashion-mnist, cifar10"):
        load_dataset("svhn")
    with pytest.raises(ConfigError, match="Unknown dataset 'MNIST'"):
        default_data_dir("MNIST")


def test_load_dataset_without_folder(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    with pytest.raises(ConfigError, match="--data-dir"):
        load_dataset("mnist")


@pytest.mark.parametrize("image_size", [0, -4, (16,), (16, 0), "16", 2.5, True])
def test_load_dataset_invalid_image_size(image_size):
    with pytest.raises(ConfigError, match="Invalid image_size"):
        load_dataset("digits", image_size=image_size)


def test_datasets_constant():
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10")


# ImageDataset validation


INVALID_DATASET_CASES = {
    "fewer labels than images": (
        lambda valid: {"train_labels": valid.train_labels[:3]},
        "4 images but 3 labels",
    ),
    "label out of range": (
        lambda valid: {"train_labels": valid.train_labels + 1},
        r"range over 1..2, outside 0..1",
    ),
    "float64 images": (
        lambda valid: {"train_images": valid.train_images.double()},
        "train_images must be a float32 tensor",
    ),
    "int32 labels": (
        lambda valid: {"test_labels": valid.test_labels.int()},
        "test_labels must be an int64 tensor",
    ),
    "images not 4-D": (
        lambda valid: {"test_images": valid.test_images[:, 0]},
        "test_images must be a float32 tensor of shape",
    ),
    "test image shape differs": (
        lambda valid: {"test_images": valid.test_images[:, :, :1]},
        r"need the same \(C, H, W\)",
    ),
    "zero classes": (lambda valid: {"num_classes": 0}, "at least one class"),
}


@pytest.mark.parametrize("case", list(INVALID_DATASET_CASES))
def test_image_dataset_rejects_inconsistent(case):
    valid = indexed_dataset([2, 2], [1, 1])
    make_changes, message = INVALID_DATASET_CASES[case]

    with pytest.raises(DataError, match=message):
        dataclasses.replace(valid, **make_changes(valid))


# split_tasks


def test_split_shards_disjoint_and_covering():
    dataset = indexed_dataset([7, 5, 9, 4, 6, 8, 3, 5, 6, 7], [2] * 10)

    split = split_tasks(dataset, num_agents=5)

    all_ids = [i for images, _ in split.train for i in sample_ids(images)]
    assert len(all_ids) == len(set(all_ids))
    assert sorted(all_ids) == list(range(len(dataset.train_labels)))
    for t, classes in enumerate(DEFAULT_TASKS):
        task_ids = {
            i for k in split.agents_of_task(t) for i in sample_ids(split.train[k][0])
        }
        expected = {
            i
            for i, label in enumerate(dataset.train_labels.tolist())
            if label in classes
        }
        assert task_ids == expected


def test_split_shard_sizes_near_equal():
    dataset = indexed_dataset([7, 5, 9, 4, 6, 8, 3, 5, 6, 7], [2] * 10)

    split = split_tasks(dataset, num_agents=5)

    # Task 0 has 31 samples for agents 0, 2, 4 and task 1 has 29 for 1, 3.
    assert split.shard_sizes == (11, 15, 10, 14, 10)


def test_split_relabels_in_task_order():
    dataset = indexed_dataset([3, 4, 5, 6, 7], [1, 2, 3, 4, 5])
    tasks = ((4, 1), (0, 3, 2))

    split = split_tasks(dataset, num_agents=3, tasks=tasks)

    original = dataset.train_labels.tolist()
    for k, (images, labels) in enumerate(split.train):
        classes = tasks[split.agent_task[k]]
        expected = [classes.index(original[i]) for i in sample_ids(images)]
        assert labels.tolist() == expected
        assert labels.dtype == torch.int64
    original_test = dataset.test_labels.tolist()
    for t, (images, labels) in enumerate(split.test):
        expected = [tasks[t].index(original_test[i]) for i in sample_ids(images)]
        assert labels.tolist() == expected


def test_split_digits_labels_zero_to_four(digits):
    split = split_tasks(digits, num_agents=4)
    train_counts = torch.bincount(digits.train_labels).tolist()
    test_counts = torch.bincount(digits.test_labels).tolist()

    for t, classes in enumerate(DEFAULT_TASKS):
        labels = torch.cat([split.train[k][1] for k in split.agents_of_task(t)])
        assert sorted(set(labels.tolist())) == [0, 1, 2, 3, 4]
        assert torch.bincount(labels).tolist() == [train_counts[c] for c in classes]
        test_labels = split.test[t][1]
        expected_test = [test_counts[c] for c in classes]
        assert torch.bincount(test_labels).tolist() == expected_test


def test_split_round_robin_assignment():
    dataset = indexed_dataset([4] * 6, [1] * 6)

    two_tasks = split_tasks(dataset, num_agents=5, tasks=((0, 1, 2), (3, 4, 5)))
    three_tasks = split_tasks(dataset, num_agents=7, tasks=((0, 1), (2, 3), (4, 5)))

    assert two_tasks.agent_task == (0, 1, 0, 1, 0)
    assert three_tasks.agent_task == (0, 1, 2, 0, 1, 2, 0)
    assert three_tasks.agents_of_task(0) == (0, 3, 6)
    assert three_tasks.agents_of_task(2) == (2, 5)


def test_split_properties():
    dataset = indexed_dataset([4] * 6, [1] * 6)

    split = split_tasks(dataset, num_agents=4, tasks=((0, 1, 2, 3), (4, 5)))

    assert isinstance(split, TaskSplit)
    assert split.num_agents == 4
    assert split.num_tasks == 2
    assert split.num_classes_per_task == (4, 2)
    assert split.shard_sizes == (8, 4, 8, 4)
    assert len(split.test) == 2


def test_split_same_seed_reproducible(digits):
    first = split_tasks(digits, num_agents=6, seed=3)
    second = split_tasks(digits, num_agents=6, seed=3)

    for (images_a, labels_a), (images_b, labels_b) in zip(first.train, second.train):
        assert torch.equal(images_a, images_b)
        assert torch.equal(labels_a, labels_b)


def test_split_different_seeds_differ(digits):
    first = split_tasks(digits, num_agents=6, seed=0)
    second = split_tasks(digits, num_agents=6, seed=1)

    assert first.shard_sizes == second.shard_sizes
    assert not torch.equal(first.train[0][0], second.train[0][0])


def test_split_samples_per_agent_cap():
    dataset = indexed_dataset([10] * 4, [1] * 4)

    split = split_tasks(dataset, 4, tasks=((0, 1), (2, 3)), samples_per_agent=6)

    assert split.shard_sizes == (6, 6, 6, 6)
    all_ids = [i for images, _ in split.train for i in sample_ids(images)]
    assert len(set(all_ids)) == 24


def test_split_samples_per_agent_too_large():
    dataset = indexed_dataset([5, 5, 5, 5], [1] * 4)

    with pytest.warns(UserWarning, match="fewer than samples_per_agent=12"):
        split = split_tasks(dataset, 2, tasks=((0, 1), (2, 3)), samples_per_agent=12)

    assert split.shard_sizes == (10, 10)


def test_split_no_warning_when_cap_fits():
    dataset = indexed_dataset([5, 5, 5, 5], [1] * 4)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = split_tasks(dataset, 2, tasks=((0, 1), (2, 3)), samples_per_agent=5)

    assert split.shard_sizes == (5, 5)


def test_split_available_from_data_module():
    assert data_module.split_tasks is split_tasks
    assert data_module.TaskSplit is TaskSplit
    assert data_module.DEFAULT_TASKS == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))


SPLIT_ERROR_CASES = {
    "no agents": ({"num_agents": 0}, ConfigError, "at least 1, got 0"),
    "fewer agents than tasks": (
        {"num_agents": 1},
        ConfigError,
        r"task\(s\) 1 would have no agent.*num_agents >= 2",
    ),
    "no tasks": ({"num_agents": 2, "tasks": ()}, ConfigError, "tasks is empty"),
    "empty task": (
        {"num_agents": 2, "tasks": ((0, 1), ())},
        ConfigError,
        "Task 1 has no classes",
    ),
    "class twice in task": (
        {"num_agents": 2, "tasks": ((0, 1, 0), (2,))},
        ConfigError,
        "Class 0 is listed twice in task 0",
    ),
    "class in two tasks": (
        {"num_agents": 2, "tasks": ((0, 1), (1, 2))},
        ConfigError,
        "Class 1 is listed in tasks 0 and 1",
    ),
    "class out of range": (
        {"num_agents": 2, "tasks": ((0, 1), (2, 10))},
        ConfigError,
        "Class 10 in task 1 is not a class",
    ),
    "negative class": (
        {"num_agents": 2, "tasks": ((0, -1), (2,))},
        ConfigError,
        "Class -1 in task 0",
    ),
    "class without samples": (
        {"num_agents": 2, "tasks": ((0, 1), (2, 3))},
        DataError,
        r"\[3\] of task 1 have no training samples",
    ),
    "more agents than samples": (
        {"num_agents": 8, "tasks": ((0, 1), (2,))},
        DataError,
        "Task 1 .* has 2 training samples but 4 agents",
    ),
    "empty test set": (
        {"num_agents": 2, "tasks": ((0, 1), (4,))},
        DataError,
        r"Task 1 \(classes \(4,\)\) has no test samples",
    ),
    "zero samples per agent": (
        {"num_agents": 2, "samples_per_agent": 0},
        ConfigError,
        "samples_per_agent must be at least 1",
    ),
    "tasks not a sequence": ({"num_agents": 2, "tasks": 5}, ConfigError, "sequence"),
    "task is a string": (
        {"num_agents": 1, "tasks": ("01",)},
        ConfigError,
        "Task 0 must be a sequence",
    ),
    "num agents not int": ({"num_agents": "3"}, TypeError, "num_agents"),
    "num agents bool": ({"num_agents": True}, TypeError, "bool"),
    "class label float": (
        {"num_agents": 1, "tasks": ((0, 1.5),)},
        TypeError,
        "class label in task 0",
    ),
}


@pytest.mark.parametrize("case", list(SPLIT_ERROR_CASES))
def test_split_invalid_arguments(case):
    # Classes 0..2 have training samples. Class 3 has none, and class 4 has
    # training samples but no test samples.
    dataset = indexed_dataset([6, 6, 2, 0, 3, 6, 6, 6, 6, 6], [1, 1, 1, 1, 0] + [1] * 5)
    kwargs, error, message = SPLIT_ERROR_CASES[case]

    with pytest.raises(error, match=message):
        split_tasks(dataset, **kwargs)


def test_split_rejects_non_dataset():
    with pytest.raises(TypeError, match="ImageDataset"):
        split_tasks({"train_labels": torch.zeros(3)}, num_agents=2)
