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


_LINE_STYLES = ("-", "--", ":", "-.")


def _plot_series(rows, key, transform, ylabel, title, path: Path, marker=None) -> None:
    tasks = {int(row["agent"]): int(row["task"]) for row in rows}
    figure, axes = plt.subplots(figsize=(6, 4))
    for agent, (epochs, values) in sorted(_per_agent(rows, key).items()):
        axes.plot(
            epochs,
            [transform(value) for value in values],
            linestyle=_LINE_STYLES[tasks[agent] % len(_LINE_STYLES)],
            marker=marker,
            label=f"agent {agent} (task {tasks[agent]})",
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, path)


def plot_training(rows: Sequence[dict], directory: Path, title: str = "") -> list[Path]:
    """Draw per-agent training loss in dB and test accuracy against epoch.

    Agents of the same task share a line style. Returns the paths written:
    ``training_loss.png`` and ``test_accuracy.png``.
    """
    directory = Path(directory)
    loss_path = directory / "training_loss.png"
    accuracy_path = directory / "test_accuracy.png"
    _plot_series(
        rows,
        "train_loss",
        lambda loss: 10 * math.log10(max(loss, 1e-30)),
        "training loss (dB, 10 log10)",
        title or "Training loss per agent",
        loss_path,
    )
    _plot_series(
        rows,
        "test_accuracy",
        lambda accuracy: 100 * accuracy,
        "test accuracy (%)",
        title or "Test accuracy per agent",
        accuracy_path,
        marker=".",
    )
    return [loss_path, accuracy_path]
