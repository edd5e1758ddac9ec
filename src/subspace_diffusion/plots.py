"""Figures of a training run, drawn from ``metrics.csv`` rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .runs import write_atomic


def _per_agent(rows: Sequence[dict], key: str) -> dict[int, tuple[list, list]]:
    series: dict[int, tuple[list, list]] = {}
    for row in rows:
        value = row.get(key)
        if value in ("", None) or (isinstance(value, float) and math.isnan(value)):
            continue
        epochs, values = series.setdefault(int(row["agent"]), ([], []))
        epochs.append(float(row["epoch"]))
        values.append(float(value))
    return series


def _save(figure, path: Path) -> None:
    write_atomic(path, lambda p: figure.savefig(p, dpi=150, format="png"))
    plt.close(figure)


def plot_training(rows: Sequence[dict], directory: Path, title: str = "") -> list[Path]:
    """Draw per-agent training loss in dB and test accuracy against epoch.

    Returns the paths written: ``training_loss.png`` and ``test_accuracy.png``.
    """
    directory = Path(directory)
    written = []
    tasks = {int(row["agent"]): int(row["task"]) for row in rows}

    figure, axes = plt.subplots(figsize=(6, 4))
    for agent, (epochs, losses) in sorted(_per_agent(rows, "train_loss").items()):
        decibels = [10 * math.log10(max(loss, 1e-30)) for loss in losses]
        axes.plot(epochs, decibels, label=f"agent {agent} (task {tasks[agent]})")
    axes.set_xlabel("epoch")
    axes.set_ylabel("training loss (dB, 10 log10)")
    axes.set_title(title or "Training loss per agent")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, directory / "training_loss.png")
    written.append(directory / "training_loss.png")

    figure, axes = plt.subplots(figsize=(6, 4))
    for agent, (epochs, accuracy) in sorted(_per_agent(rows, "test_accuracy").items()):
        percent = [100 * a for a in accuracy]
        axes.plot(
            epochs, percent, marker=".", label=f"agent {agent} (task {tasks[agent]})"
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title or "Test accuracy per agent")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, directory / "test_accuracy.png")
    written.append(directory / "test_accuracy.png")
    return written
