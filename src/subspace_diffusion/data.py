"""Image classification datasets read from local files into memory.

Four datasets are supported, and none of them is downloaded:

``digits``
    scikit-learn's bundled 8x8 handwritten digits (1797 images, pixel values
    0..16), split into train and test sets by a fixed-seed stratified split.
``mnist`` and ``fashion-mnist``
    The four official IDX files (gzipped or plain) in one folder. The Debian
    package ``dataset-fashion-mnist`` installs Fashion-MNIST into
    ``/usr/share/datasets/fashion-mnist``, which is its default folder.
``cifar10``
    The python version of CIFAR-10 (``data_batch_N`` and ``test_batch``
    pickles). Whichever training batches exist are loaded, and the pickles are
    read by an unpickler that can build numpy arrays and nothing else.

Every dataset is returned as an :class:`ImageDataset` of float32 tensors,
resized once and normalised to [-1, 1]. Splitting a dataset into per-agent
tasks lives in :mod:`subspace_diffusion.tasks`.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import math
import os
import pickle
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from subspace_diffusion.errors import ConfigError, DataError

try:
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
    from numpy._core.numeric import _frombuffer as _numpy_frombuffer
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct
    from numpy.core.numeric import _frombuffer as _numpy_frombuffer

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "ImageDataset",
    "default_data_dir",
    "load_dataset",
    "read_cifar_batch",
    "read_idx",
]

logger = logging.getLogger(__name__)

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")

DATA_DIR_ENV = "SUBSPACE_DIFFUSION_DATA_DIR"
"""Environment variable naming a folder with one subfolder per dataset."""

# Subfolders of $SUBSPACE_DIFFUSION_DATA_DIR tried for each dataset, in order.
# CIFAR-10 also accepts the folder name of the official python archive.
_DATA_SUBDIRS = {
    "mnist": ("mnist",),
    "fashion-mnist": ("fashion-mnist",),
    "cifar10": ("cifar10", "cifar-10-batches-py"),
}

# Installed by the Debian package dataset-fashion-mnist.
_SYSTEM_DATA_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

_DEFAULT_IMAGE_SIZES = {"digits": 8, "mnist": 16, "fashion-mnist": 16, "cifar10": 32}
_NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10}
_DISPLAY_NAMES = {
    "digits": "digits",
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
}

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_CIFAR_IMAGE_SHAPE = (3, 32, 32)
_CIFAR_TRAIN_BATCH = re.compile(r"data_batch_(\d+)")


@dataclass
class ImageDataset:
    """Image classification dataset held in memory.

    Attributes
    ----------
    name : str
        Dataset name, one of :data:`DATASETS` for the built-in loaders.
    train_images, test_images : torch.Tensor
        float32 images of shape ``(N, C, H, W)``, normalised to [-1, 1].
    train_labels, test_labels : torch.Tensor
        int64 class labels of shape ``(N,)``, in ``0..num_classes - 1``.
    num_classes : int
        Number of classes of the whole dataset.

    Raises
    ------
    DataError
        If shapes, dtypes or label values are inconsistent.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise DataError(
                f"Dataset {self.name!r} has num_classes={self.num_classes}, but it "
                "needs at least one class."
            )
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            _check_split(self.name, split, images, labels, self.num_classes)
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"Dataset {self.name!r} has train images of shape "
                f"{tuple(self.train_images.shape[1:])} but test images of shape "
                f"{tuple(self.test_images.shape[1:])}. Both need the same (C, H, W)."
            )

    @property
    def num_channels(self) -> int:
        """Number of colour channels C."""
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """Image height and width (H, W) in pixels."""
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])


def _check_split(
    name: str,
    split: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
) -> None:
    """Raise DataError unless images and labels of one split fit together."""
    if images.dim() != 4 or images.dtype != torch.float32:
        raise DataError(
            f"Dataset {name!r}: {split}_images must be a float32 tensor of shape "
            f"(N, C, H, W), got {images.dtype} of shape {tuple(images.shape)}."
        )
    if labels.dim() != 1 or labels.dtype != torch.int64:
        raise DataError(
            f"Dataset {name!r}: {split}_labels must be an int64 tensor of shape "
            f"(N,), got {labels.dtype} of shape {tuple(labels.shape)}."
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"Dataset {name!r}: {split} split has {images.shape[0]} images but "
            f"{labels.shape[0]} labels. Both counts must be equal."
        )
    if labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise DataError(
                f"Dataset {name!r}: {split} labels range over {low}..{high}, "
                f"outside 0..{num_classes - 1} for num_classes={num_classes}."
            )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzipped or plain, into a numpy array.

    IDX is the format of the MNIST and Fashion-MNIST files. Its header is a
    magic number ``0x0000TTDD`` (type code TT, DD dimensions) followed by DD
    big-endian uint32 sizes, then the data in row-major order. A gzipped file
    is recognised by its leading bytes, not by its suffix.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.

    Returns
    -------
    numpy.ndarray
        Writable array in native byte order, with the shape given by the header.

    Raises
    ------
    DataError
        If the file is missing or unreadable, the gzip stream is corrupt, the
        magic number is invalid, or the data size does not match the header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}.") from None
    except OSError as exc:
        raise DataError(f"Failed to read IDX file {path}: {exc}.") from exc

    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"Corrupt or truncated gzip data in {path}: {exc}. "
                "Replace the file with an intact copy."
            ) from exc

    if len(raw) < 4:
        raise DataError(
            f"IDX file {path} has {len(raw)} bytes, fewer than the 4-byte magic "
            "number. The file is truncated or not an IDX file."
        )
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        known_codes = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise DataError(
            f"Invalid IDX magic number 0x{raw[:4].hex().upper()} in {path}: "
            f"expected 0x0000TTDD with type code TT in ({known_codes}) and at "
            "least one dimension DD. The file is not an IDX file or is corrupt."
        )

    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"IDX file {path} is truncated inside its header: {ndim} dimensions "
            f"need {header_size} header bytes, the file has {len(raw)}."
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = _IDX_DTYPES[type_code]
    expected_bytes = math.prod(shape) * dtype.itemsize
    data_bytes = len(raw) - header_size
    if data_bytes != expected_bytes:
        raise DataError(
            f"IDX file {path} has {data_bytes} data bytes, but its header shape "
            f"{shape} of {dtype.name} needs {expected_bytes}. The file is "
            "truncated or corrupt."
        )

    array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    # astype copies, which also makes the read-only buffer view writable.
    return array.astype(dtype.newbyteorder("="))


# The only globals that a pickled numpy.ndarray refers to. numpy 1.x writes
# numpy.core and numpy 2.x writes numpy._core. Pickle protocols 2 to 4 rebuild
# arrays with _reconstruct, and protocol 5 with _frombuffer.
_PICKLE_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes objects into protocol-2 pickles as
    # _codecs.encode(text, "latin1"), the same function as codecs.encode.
    ("_codecs", "encode"): codecs.encode,
    ("codecs", "encode"): codecs.encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else.

    A pickle can call any importable function while it loads. This class
    resolves only the globals that a pickled ``numpy.ndarray`` refers to and
    raises DataError for every other global, before anything is called.
    """

    def __init__(self, file: BinaryIO, *, source: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> object:
        try:
            return _PICKLE_ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"Rejected pickle {self._source}: it refers to {module}.{name}, "
                "but a CIFAR-10 batch may contain only numpy arrays, lists, "
                "numbers and strings. The file is corrupt or not a CIFAR-10 "
                "batch. Do not load it with plain pickle."
            ) from None


def _get_key(batch: dict, key: str) -> object:
    """Return batch[key], accepting the key as str or as bytes."""
    for candidate in (key, key.encode("ascii")):
        if candidate in batch:
            return batch[candidate]
    raise KeyError(key)


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file of the python version of CIFAR-10.

    The file is a pickled dict whose ``data`` is a uint8 array of shape
    ``(N, 3072)``, each row the red, green and blue 32x32 planes in row-major
    order, and whose ``labels`` is a list of N ints in 0..9. Keys may be
    Python 2 ``str`` (read as bytes) or Python 3 ``str``.

    Parameters
    ----------
    path : str or os.PathLike
        Batch file such as ``data_batch_1`` or ``test_batch``.

    Returns
    -------
    images : numpy.ndarray
        uint8 array of shape ``(N, 3, 32, 32)``.
    labels : numpy.ndarray
        int64 array of shape ``(N,)``.

    Raises
    ------
    DataError
        If the file is missing, is not a valid pickle, refers to anything
        other than numpy arrays, or does not have the layout above.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            batch = _ArrayOnlyUnpickler(file, source=path).load()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 batch file not found: {path}.") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        TypeError,
        ValueError,
    ) as exc:
        raise DataError(
            f"Failed to unpickle CIFAR-10 batch {path}: {exc!r}. The file is "
            "corrupt or truncated. Replace it with an intact copy."
        ) from exc
    except OSError as exc:
        raise DataError(f"Failed to read CIFAR-10 batch {path}: {exc}.") from exc

    if not isinstance(batch, dict):
        raise DataError(
            f"CIFAR-10 batch {path} contains a {type(batch).__name__}, "
            "expected a dict with 'data' and 'labels'."
        )
    try:
        data = _get_key(batch, "data")
        labels = _get_key(batch, "labels")
    except KeyError as exc:
        raise DataError(
            f"CIFAR-10 batch {path} has no {exc.args[0]!r} entry. Its keys are "
            f"{sorted(map(repr, batch))}."
        ) from None

    image_values = math.prod(_CIFAR_IMAGE_SHAPE)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != image_values
    ):
        description = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(
            f"CIFAR-10 batch {path}: 'data' must be a uint8 array of shape "
            f"(N, {image_values}), got {description}."
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"CIFAR-10 batch {path}: 'labels' is not a list of integers ({exc})."
        ) from exc
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"CIFAR-10 batch {path} has {data.shape[0]} images but labels of "
            f"shape {labels.shape}, but it needs one label per image."
        )
    if labels.size > 0 and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"CIFAR-10 batch {path} has labels in {labels.min()}..{labels.max()}, "
            "outside the 10 classes 0..9."
        )
    images = data.reshape(data.shape[0], *_CIFAR_IMAGE_SHAPE)
    return images, labels


def _check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(
            f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}."
        )


def default_data_dir(name: str) -> Path | None:
    """Return the folder that :func:`load_dataset` reads when no folder is given.

    The lookup order is:

    1. ``$SUBSPACE_DIFFUSION_DATA_DIR/<name>`` if that folder exists. CIFAR-10
       also accepts ``$SUBSPACE_DIFFUSION_DATA_DIR/cifar-10-batches-py``.
    2. The system folder of the dataset, if it has one:
       ``/usr/share/datasets/fashion-mnist`` for ``fashion-mnist``.
    3. ``$SUBSPACE_DIFFUSION_DATA_DIR/<name>`` even if it is missing, so that
       the loader's error names the folder it looked in.

    Parameters
    ----------
    name : str
        Dataset name, one of :data:`DATASETS`.

    Returns
    -------
    pathlib.Path or None
        None for ``digits``, which needs no files, and for datasets with
        neither the environment variable nor a system folder.

    Raises
    ------
    ConfigError
        If ``name`` is not one of :data:`DATASETS`.
    """
    _check_dataset_name(name)
    if name == "digits":
        return None

    root = os.environ.get(DATA_DIR_ENV)
    candidates = [Path(root) / sub for sub in _DATA_SUBDIRS[name]] if root else []
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if name in _SYSTEM_DATA_DIRS:
        return _SYSTEM_DATA_DIRS[name]
    if candidates:
        return candidates[0]
    return None


def _resolve_image_size(
    name: str, image_size: int | tuple[int, int] | None
) -> tuple[int, int]:
    if image_size is None:
        side = _DEFAULT_IMAGE_SIZES[name]
        return side, side
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        size = (image_size[0], image_size[1])
    else:
        size = None
    if size is None or size[0] < 1 or size[1] < 1:
        raise ConfigError(
            f"Invalid image_size={image_size!r}: expected a positive int or a "
            "(height, width) pair of positive ints, or None for the dataset's "
            f"default ({_DEFAULT_IMAGE_SIZES[name]} for {name})."
        )
    return size


def _to_normalised_tensor(
    images: np.ndarray, max_value: float, size: tuple[int, int]
) -> torch.Tensor:
    """Scale to [0, 1], resize to ``size`` and map to [-1, 1].

    Antialiased bilinear weights are non-negative and sum to one, so resized
    values stay in [0, 1] up to rounding, which the clamp removes.
    """
    tensor = torch.from_numpy(images).to(torch.float32).div_(max_value)
    if tuple(tensor.shape[2:]) != size:
        tensor = F.interpolate(
            tensor, size=size, mode="bilinear", antialias=True, align_corners=False
        )
        tensor.clamp_(0.0, 1.0)
    # (x - 0.5) / 0.5 for every channel.
    return tensor.sub_(0.5).div_(0.5)


def _load_digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, np.newaxis]
    labels = digits.target.astype(np.int64)
    return tuple(
        train_test_split(
            images,
            labels,
            test_size=DIGITS_TEST_FRACTION,
            stratify=labels,
            random_state=DIGITS_SPLIT_SEED,
        )
    )


def _find_idx_file(directory: Path, stem: str, name: str, hint: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{_DISPLAY_NAMES[name]} file not found: {directory / stem}(.gz). {hint}"
    )


def _load_mnist_like(directory: Path, name: str) -> tuple[np.ndarray, ...]:
    """Read the four IDX files of MNIST or Fashion-MNIST from ``directory``."""
    display = _DISPLAY_NAMES[name]
    hint = (
        "Pass data_dir (--data-dir on the command line) pointing at the folder "
        f"with the four {display} files."
    )
    if name == "fashion-mnist":
        hint += (
            " On Debian and Ubuntu, the package dataset-fashion-mnist installs them."
        )

    arrays = {
        key: read_idx(_find_idx_file(directory, stem, name, hint))
        for key, stem in _MNIST_FILES.items()
    }
    for split in ("train", "test"):
        images = arrays[f"{split}_images"]
        labels = arrays[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(
                f"{display} {split} images in {directory} must be uint8 of shape "
                f"(N, H, W), got {images.dtype} of shape {images.shape}."
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{display} {split} labels in {directory} have shape "
                f"{labels.shape}, expected ({images.shape[0]},) to match the "
                "images."
            )
        if labels.size > 0 and (labels.min() < 0 or labels.max() >= _NUM_CLASSES[name]):
            raise DataError(
                f"{display} {split} labels in {directory} range over "
                f"{labels.min()}..{labels.max()}, outside the classes "
                f"0..{_NUM_CLASSES[name] - 1}."
            )
    return (
        arrays["train_images"][:, np.newaxis],
        arrays["test_images"][:, np.newaxis],
        arrays["train_labels"].astype(np.int64),
        arrays["test_labels"].astype(np.int64),
    )


def _load_cifar10(directory: Path) -> tuple[np.ndarray, ...]:
    """Read every ``data_batch_N`` and the ``test_batch`` in ``directory``."""
    hint = (
        "Pass data_dir (--data-dir on the command line) pointing at the "
        "cifar-10-batches-py folder of the python version of CIFAR-10."
    )
    # Accept the parent folder of the extracted archive as well.
    nested = directory / "cifar-10-batches-py"
    if not any(directory.glob("data_batch_*")) and nested.is_dir():
        directory = nested

    batch_numbers = sorted(
        int(match.group(1))
        for path in directory.iterdir()
        if (match := _CIFAR_TRAIN_BATCH.fullmatch(path.name)) and path.is_file()
    )
    if not batch_numbers:
        raise DataError(
            f"No CIFAR-10 training batch (data_batch_1 ... data_batch_5) found in "
            f"{directory}. {hint}"
        )
    test_path = directory / "test_batch"
    if not test_path.is_file():
        raise DataError(f"CIFAR-10 file not found: {test_path}. {hint}")

    train = [read_cifar_batch(directory / f"data_batch_{n}") for n in batch_numbers]
    test_images, test_labels = read_cifar_batch(test_path)
    logger.debug("Read CIFAR-10 training batches %s from %s", batch_numbers, directory)
    return (
        np.concatenate([images for images, _ in train]),
        test_images,
        np.concatenate([labels for _, labels in train]),
        test_labels,
    )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    image_size: int | tuple[int, int] | None = None,
) -> ImageDataset:
    """Load a dataset into memory, resized and normalised to [-1, 1].

    Pixels are scaled to [0, 1], resized once with antialiased bilinear
    interpolation when ``image_size`` differs from the stored size, and then
    mapped to ``(x - 0.5) / 0.5`` in every channel.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    data_dir : str or os.PathLike, optional
        Folder with the dataset files. Defaults to :func:`default_data_dir`.
        Ignored for ``digits``, which ships with scikit-learn.
    image_size : int or (int, int), optional
        Output height and width. Defaults to 8 for ``digits``, 16 for
        ``mnist`` and ``fashion-mnist`` (28 keeps the original), and 32 for
        ``cifar10``.

    Returns
    -------
    ImageDataset

    Raises
    ------
    ConfigError
        If ``name`` is unknown, ``image_size`` is invalid, or no folder is
        given and the dataset has no default folder.
    DataError
        If the folder or a file is missing, unreadable or corrupt.

    Examples
    --------
    >>> dataset = load_dataset("digits")
    >>> dataset.image_size, dataset.num_classes
    ((8, 8), 10)
    """
    _check_dataset_name(name)
    size = _resolve_image_size(name, image_size)

    if name == "digits":
        directory = None
        train_pixels, test_pixels, train_labels, test_labels = _load_digits()
        max_value = 16.0
    else:
        directory = Path(data_dir).expanduser() if data_dir is not None else None
        if directory is None:
            directory = default_data_dir(name)
        if directory is None:
            raise ConfigError(
                f"No data folder given for dataset {name!r}. Pass data_dir "
                f"(--data-dir on the command line), or set {DATA_DIR_ENV} to a "
                f"folder containing a {_DATA_SUBDIRS[name][-1]} subfolder."
            )
        if not directory.is_dir():
            raise DataError(
                f"{_DISPLAY_NAMES[name]} data folder not found: {directory}. Pass "
                "data_dir (--data-dir on the command line) pointing at the "
                "folder with the dataset files."
            )
        if name == "cifar10":
            train_pixels, test_pixels, train_labels, test_labels = _load_cifar10(
                directory
            )
        else:
            train_pixels, test_pixels, train_labels, test_labels = _load_mnist_like(
                directory, name
            )
        max_value = 255.0

    dataset = ImageDataset(
        name=name,
        train_images=_to_normalised_tensor(train_pixels, max_value, size),
        train_labels=torch.from_numpy(train_labels),
        test_images=_to_normalised_tensor(test_pixels, max_value, size),
        test_labels=torch.from_numpy(test_labels),
        num_classes=_NUM_CLASSES[name],
    )
    logger.info(
        "Loaded %s from %s: %d train and %d test images of shape %s",
        name,
        directory if directory is not None else "scikit-learn",
        len(dataset.train_labels),
        len(dataset.test_labels),
        (dataset.num_channels, *dataset.image_size),
    )
    return dataset


_TASK_NAMES = ("DEFAULT_TASKS", "TaskSplit", "split_tasks")


def __getattr__(name: str) -> object:
    # The task split lives in subspace_diffusion.tasks, which imports this
    # module. Importing it lazily keeps ``from subspace_diffusion.data import
    # split_tasks`` working without a circular import.
    if name in _TASK_NAMES:
        from subspace_diffusion import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
