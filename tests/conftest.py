"""Shared pytest fixtures: folders of the real datasets used by the tests.

The real data is read in place and never downloaded. Its root folder is
``$SUBSPACE_DIFFUSION_DATA_DIR`` if set (the command line reads it too), else
the ``shared/data`` folder next to the repository checkout. It contains ``mnist/`` (the four official IDX files)
and ``cifar-10-batches-py/``. Fashion-MNIST comes from the Debian package
``dataset-fashion-mnist``. Tests that need a missing dataset are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ROOT_ENV = "SUBSPACE_DIFFUSION_DATA_DIR"
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def real_data_root() -> Path:
    """Return the root folder of the real test data, which may not exist."""
    value = os.environ.get(DATA_ROOT_ENV)
    return Path(value) if value else DEFAULT_DATA_ROOT


def require_real_data(*parts: str) -> Path:
    """Return ``real_data_root() / parts``, skipping the test if it is missing."""
    path = real_data_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"Real data not found at {path}. Set {DATA_ROOT_ENV} to the folder "
            "that contains mnist/, cifar-10-batches-py/ and cifar-10-exact-subsets/"
        )
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root folder of the real test data."""
    return require_real_data()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder with the four official MNIST IDX files."""
    return require_real_data("mnist")


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """Folder with the CIFAR-10 python batches."""
    return require_real_data("cifar-10-batches-py")


@pytest.fixture(scope="session")
def cifar10_exact_dir() -> Path:
    """Folder with CIFAR-10 subsets whose pixels are exact."""
    return require_real_data("cifar-10-exact-subsets")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """Folder where the Debian package dataset-fashion-mnist installs its files."""
    if not FASHION_MNIST_SYSTEM_DIR.is_dir():
        pytest.skip(
            f"Fashion-MNIST not found at {FASHION_MNIST_SYSTEM_DIR}. Install the "
            "Debian package dataset-fashion-mnist"
        )
    return FASHION_MNIST_SYSTEM_DIR
