"""Run directories: plain files written so that none is ever half-written.

Every whole file (configuration, summary, checkpoint, plot) is written to a
temporary file in the same directory and renamed into place, which is atomic
on POSIX file systems. ``metrics.csv`` grows by whole rows, flushed after
each evaluation, so a crash loses at most the evaluation in progress.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import yaml

from .errors import ConfigError

METRIC_COLUMNS = (
    "epoch",
    "step",
    "agent",
    "task",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "step_size",
    "subspace_distance",
    "bytes_sent",
)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)``, then rename the result onto ``path``."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    os.close(descriptor)
    # mkstemp creates the file readable by its owner only; use the usual umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


RESULT_FILES = (
    "config.yaml",
    "metrics.csv",
    "summary.json",
    "checkpoint.npz",
    "training_loss.png",
    "test_accuracy.png",
)


def check_run_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check, without writing anything, that a run may use ``path``.

    Raises
    ------
    ConfigError
        If the path is a file, or the directory already contains results
        (any of :data:`RESULT_FILES`) and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"Run directory {path} is a file; pass another --out.")
    existing = [name for name in RESULT_FILES if (path / name).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"Run directory {path} already contains results ({', '.join(existing)}). "
            "Pass another --out, or --overwrite to replace them."
        )
    return path


def prepare_run_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Create the run directory, removing an earlier run's results if allowed.

    With ``overwrite``, every file of :data:`RESULT_FILES` is deleted first, so
    the directory never mixes two runs, even if the new one stops early.

    Raises
    ------
    ConfigError
        As :func:`check_run_directory`, or if the directory cannot be created.
    """
    path = check_run_directory(path, overwrite=overwrite)
    try:
        path.mkdir(parents=True, exist_ok=True)
        for name in RESULT_FILES:
            (path / name).unlink(missing_ok=True)
    except OSError as error:
        raise ConfigError(
            f"Cannot write the run directory {path}: {error.strerror}. "
            "Pass a writable --out."
        ) from None
    return path


def save_config(path: Path, config: dict) -> None:
    """Write the resolved configuration as ``config.yaml``."""
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
    write_text_atomic(path / "config.yaml", text)


def save_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_checkpoint(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write stacked parameters as an uncompressed ``.npz`` (no pickle)."""

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomic(path, write)


class MetricsWriter:
    """Appends complete rows to ``metrics.csv``, flushing after each batch."""

    def __init__(self, path: Path, columns: Iterable[str] = METRIC_COLUMNS) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.handle = open(self.path, "w", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.handle, fieldnames=self.columns)
        self.writer.writeheader()
        self.handle.flush()

    def write_rows(self, rows: Iterable[dict]) -> None:
        """Append rows and flush them to disk."""
        for row in rows:
            self.writer.writerow({key: row.get(key, "") for key in self.columns})
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        """Close the file."""
        self.handle.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Read ``metrics.csv`` into dictionaries with numbers converted."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            converted = {}
            for key, value in row.items():
                try:
                    converted[key] = int(value)
                except ValueError:
                    try:
                        converted[key] = float(value)
                    except ValueError:
                        converted[key] = value
            rows.append(converted)
    return rows
