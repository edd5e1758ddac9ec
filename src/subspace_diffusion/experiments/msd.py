"""Low-noise MSD experiment: why exact subspace diffusion exists.

A heterogeneous multi-task regression network (``W*`` not in ``range(U)``)
runs approximate-projection diffusion and exact subspace diffusion with exact
gradients plus additive white gradient noise of standard deviation
``sigma_s``, for several ``sigma_s`` a decade apart and several step sizes.
Approximate projection stalls at its deterministic bias floor
``||W° - W_inf||^2 / K``, which grows as ``mu^2``. Exact diffusion has no
bias, so its steady-state MSD falls 20 dB per decade of ``sigma_s``, because
to first order it is proportional to ``mu sigma_s^2``.

:func:`run_msd_experiment` simulates every setting with
:func:`subspace_diffusion.vector.simulate` and predicts the steady state with
:func:`subspace_diffusion.vector.predict_msd`. :func:`write_results` writes:

* ``msd.csv``: ``iteration, strategy, step_size, noise, msd_db`` per iteration;
* ``summary.csv`` and ``summary.json``: simulated and predicted steady-state
  MSD per strategy, step size and noise level (the JSON adds the settings and
  the network);
* ``msd.png``: MSD in dB against iteration, one panel per step size and
  strategy, with the predicted levels as dashed lines.

Every file is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from ..combination import design_combination_matrix
from ..errors import ConfigError
from ..graphs import describe_graph, make_graph
from ..runs import save_json, write_atomic, write_text_atomic
from ..subspaces import (
    VectorSubspace,
    clustered_subspace,
    shared_subspace,
    smooth_subspace,
)
from ..theory import to_db
from ..vector import make_regression_problem, predict_msd, simulate

__all__ = [
    "SUBSPACES",
    "MSDExperimentConfig",
    "MSDExperimentResult",
    "format_table",
    "run_msd_experiment",
    "write_results",
]

SUBSPACES = ("clustered", "shared", "smooth")
"""Agent-level subspaces the experiment can use."""

STRATEGIES = ("approximate", "exact")
"""Strategies compared by the experiment."""

STRATEGY_LABELS = {"approximate": "approximate projection", "exact": "exact diffusion"}

SUMMARY_COLUMNS = (
    "strategy",
    "step_size",
    "noise",
    "simulated_db",
    "predicted_db",
    "difference_db",
    "first_order_db",
    "bias_db",
    "spectral_radius",
)


# Dense Lyapunov solves of order 2N take O(N^3) time and O(N^2) memory.
MAX_THEORY_SIZE = 1000


@dataclass
class MSDExperimentConfig:
    """Settings of the low-noise MSD experiment.

    Attributes
    ----------
    noise_levels : tuple of float
        Standard deviations ``sigma_s`` of the additive white gradient noise,
        in the units of the gradient.
    step_sizes : tuple of float
        Step sizes ``mu`` (dimensionless).
    iterations : int
        Iterations per run.
    repetitions : int
        Monte-Carlo repetitions per run, simulated side by side.
    steady_fraction : float
        Fraction of the last iterations averaged into the simulated
        steady-state MSD.
    agents : int
        Number of agents K.
    topology : str
        Graph topology (one of :data:`~subspace_diffusion.graphs.TOPOLOGIES`).
    subspace : str
        ``"clustered"`` (agents split into ``clusters`` contiguous groups that
        share a model), ``"shared"`` (one model for all) or ``"smooth"``
        (``eigenvectors`` smoothest graph-Laplacian eigenvectors).
    clusters : int
        Number of clusters of the clustered subspace.
    eigenvectors : int
        Number of eigenvectors of the smooth subspace.
    entries_per_agent : int
        Entries ``M`` of each agent's parameter vector.
    heterogeneity : float
        ``h`` in ``W* = U x + h (I - P_U) z``: 0 puts ``W*`` in the subspace.
    seed : int
        Seed of the graph, the problem and the gradient noise.
    """

    noise_levels: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
    step_sizes: tuple[float, ...] = (0.01, 0.03)
    iterations: int = 2000
    repetitions: int = 100
    steady_fraction: float = 0.25
    agents: int = 8
    topology: str = "ring"
    subspace: str = "clustered"
    clusters: int = 2
    eigenvectors: int = 2
    entries_per_agent: int = 2
    heterogeneity: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`~subspace_diffusion.errors.ConfigError` on a bad setting.

        It also turns the noise levels and step sizes into tuples of floats.
        """
        self.noise_levels = _positive_values(self.noise_levels, "noise level")
        self.step_sizes = _positive_values(self.step_sizes, "step size")
        _check_integer(self.iterations, "iterations", 4)
        _check_integer(self.repetitions, "repetitions", 1)
        _check_integer(self.agents, "agents", 2)
        _check_integer(self.clusters, "clusters", 1)
        _check_integer(self.eigenvectors, "eigenvectors", 1)
        _check_integer(self.entries_per_agent, "entries per agent", 1)
        _check_integer(self.seed, "seed", 0)
        if not 0 < self.steady_fraction <= 1:
            raise ConfigError(
                f"the steady-state fraction must be in (0, 1], got "
                f"{self.steady_fraction}. Use for example 0.25 for the last quarter."
            )
        if not math.isfinite(self.heterogeneity) or self.heterogeneity < 0:
            raise ConfigError(
                f"heterogeneity must be non-negative, got {self.heterogeneity}."
            )
        if self.subspace not in SUBSPACES:
            raise ConfigError(
                f"unknown subspace {self.subspace!r}. Use one of "
                f"{', '.join(SUBSPACES)}."
            )
        size = self.agents * self.entries_per_agent
        if size > MAX_THEORY_SIZE:
            raise ConfigError(
                f"{self.agents} agents x {self.entries_per_agent} entries give "
                f"N = {size}, but the steady-state theory solves dense Lyapunov "
                f"equations of size about 2N and allows N <= {MAX_THEORY_SIZE}. "
                "Use fewer agents or entries per agent."
            )
        if self.subspace == "clustered" and self.clusters > self.agents:
            raise ConfigError(
                f"{self.clusters} clusters need at least as many agents, got "
                f"{self.agents}. Use fewer clusters or more agents."
            )


@dataclass
class MSDExperimentResult:
    """Curves and steady-state summary of the experiment.

    Attributes
    ----------
    config : MSDExperimentConfig
    curves : dict
        ``(strategy, step_size, noise) -> MSD per iteration`` (linear units,
        iterations ``0 .. iterations``).
    summary : list of dict
        One row per strategy, step size and noise level, with the keys of
        :data:`SUMMARY_COLUMNS`.
    network : dict
        Graph, subspace and spectral gap of the combination matrix.
    """

    config: MSDExperimentConfig
    curves: dict[tuple[str, float, float], np.ndarray]
    summary: list[dict]
    network: dict = field(default_factory=dict)


def run_msd_experiment(
    config: MSDExperimentConfig,
    progress: Callable[[int], None] | None = None,
) -> MSDExperimentResult:
    """Simulate and predict every strategy, step size and noise level.

    Both strategies see the same gradient noise for a given step size and
    noise level. The predictions are computed first, so an unstable step size
    fails before any simulation.

    Parameters
    ----------
    config : MSDExperimentConfig
        Validated here.
    progress : callable, optional
        Called with the number of iterations completed since its last call.

    Raises
    ------
    ConfigError
        If a setting is invalid or a step size is unstable.
    InfeasibleSubspaceError
        If no combination matrix exists for the subspace on the graph.
    """
    config.validate()
    graph = make_graph(config.topology, config.agents, seed=config.seed)
    subspace = _build_subspace(config, graph)
    matrix, report = design_combination_matrix(subspace, graph)
    problem = make_regression_problem(
        subspace, heterogeneity=config.heterogeneity, seed=config.seed
    )

    settings = [
        (strategy, mu, noise)
        for mu in config.step_sizes
        for noise in config.noise_levels
        for strategy in STRATEGIES
    ]
    predictions = {}
    for strategy, mu, noise in settings:
        options = {
            "combination_matrix": matrix,
            "gradient": "additive",
            "gradient_noise_std": noise,
        }
        predictions[strategy, mu, noise] = (
            predict_msd(problem, strategy, mu, **options),
            predict_msd(problem, strategy, mu, model="first-order", **options),
        )

    curves = {}
    summary = []
    for strategy, mu, noise in settings:
        result = simulate(
            problem,
            strategy,
            mu,
            config.iterations,
            config.repetitions,
            seed=_run_seed(config, mu, noise),
            combination_matrix=matrix,
            gradient="additive",
            gradient_noise_std=noise,
            progress=progress,
        )
        curves[strategy, mu, noise] = result.msd
        predicted, first_order = predictions[strategy, mu, noise]
        simulated_db = to_db(result.steady_state(config.steady_fraction))
        summary.append(
            {
                "strategy": strategy,
                "step_size": mu,
                "noise": noise,
                "simulated_db": simulated_db,
                "predicted_db": predicted.msd_db,
                "difference_db": simulated_db - predicted.msd_db,
                "first_order_db": first_order.msd_db,
                "bias_db": to_db(predicted.bias),
                "spectral_radius": predicted.spectral_radius,
            }
        )

    network = {
        "graph": describe_graph(graph),
        "subspace": subspace.describe(),
        "spectral_gap": report.spectral_gap,
        "size": problem.size,
        "subspace_dimension": subspace.dimension,
    }
    return MSDExperimentResult(config, curves, summary, network)


def total_iterations(config: MSDExperimentConfig) -> int:
    """Return the number of iterations :func:`run_msd_experiment` simulates."""
    runs = len(STRATEGIES) * len(config.step_sizes) * len(config.noise_levels)
    return runs * config.iterations


def write_results(result: MSDExperimentResult, directory: str | Path) -> list[Path]:
    """Write ``msd.csv``, ``summary.csv``, ``summary.json`` and ``msd.png``.

    The directory is created if needed. Returns the paths written.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"output path {directory} is a file. Pass a directory.")
    directory.mkdir(parents=True, exist_ok=True)

    paths = [
        directory / "msd.csv",
        directory / "summary.csv",
        directory / "summary.json",
        directory / "msd.png",
    ]
    write_text_atomic(paths[0], _curves_csv(result))
    write_text_atomic(paths[1], _summary_csv(result.summary))
    save_json(
        paths[2],
        {
            "config": _json_config(result.config),
            "network": result.network,
            "summary": [_json_row(row) for row in result.summary],
        },
    )
    _plot(result, paths[3])
    return paths


def format_table(summary: Sequence[dict]) -> str:
    """Return the steady-state table: simulated against predicted MSD in dB."""
    header = (
        f"{'strategy':<23} {'mu':>7} {'sigma_s':>8} {'simulated':>10} "
        f"{'predicted':>10} {'diff':>6} {'1st order':>10}"
    )
    lines = [
        header,
        f"{'':<23} {'':>7} {'':>8} {'(dB)':>10} {'(dB)':>10} {'(dB)':>6} {'(dB)':>10}",
    ]
    for row in summary:
        lines.append(
            f"{STRATEGY_LABELS[row['strategy']]:<23} {row['step_size']:>7.3g} "
            f"{row['noise']:>8.3g} {row['simulated_db']:>10.2f} "
            f"{row['predicted_db']:>10.2f} {row['difference_db']:>6.2f} "
            f"{row['first_order_db']:>10.2f}"
        )
    return "\n".join(lines)


def _build_subspace(config: MSDExperimentConfig, graph: nx.Graph) -> VectorSubspace:
    if config.subspace == "shared":
        agent_subspace = shared_subspace(config.agents)
    elif config.subspace == "smooth":
        if config.eigenvectors > config.agents:
            raise ConfigError(
                f"the smooth subspace needs at most {config.agents} eigenvectors "
                f"(one per agent), got {config.eigenvectors}."
            )
        agent_subspace = smooth_subspace(graph, config.eigenvectors)
    else:
        # Contiguous blocks of agents: on a ring or a path each block is connected.
        labels = np.arange(config.agents) * config.clusters // config.agents
        agent_subspace = clustered_subspace(labels.tolist())
    return VectorSubspace.from_agent_subspace(agent_subspace, config.entries_per_agent)


def _run_seed(config: MSDExperimentConfig, step_size: float, noise: float) -> int:
    step_index = config.step_sizes.index(step_size)
    noise_index = config.noise_levels.index(noise)
    sequence = np.random.SeedSequence([config.seed, step_index, noise_index])
    return int(sequence.generate_state(1)[0])


def _curves_csv(result: MSDExperimentResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["iteration", "strategy", "step_size", "noise", "msd_db"])
    for (strategy, mu, noise), msd in result.curves.items():
        with np.errstate(divide="ignore"):
            decibels = 10.0 * np.log10(msd)
        for iteration, value in enumerate(decibels):
            writer.writerow(
                [iteration, strategy, repr(mu), repr(noise), f"{value:.6f}"]
            )
    return buffer.getvalue()


def _summary_csv(summary: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in summary:
        writer.writerow(_json_row(row))
    return buffer.getvalue()


def _json_row(row: dict) -> dict:
    # JSON has no infinity: a zero bias is written as null.
    return {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in row.items()
    }


def _json_config(config: MSDExperimentConfig) -> dict:
    values = asdict(config)
    values["noise_levels"] = list(config.noise_levels)
    values["step_sizes"] = list(config.step_sizes)
    return values


def _plot(result: MSDExperimentResult, path: Path) -> None:
    # The object-oriented API draws without pyplot's global figure state.
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    config = result.config
    rows, columns = len(config.step_sizes), len(STRATEGIES)
    figure = Figure(figsize=(5.5 * columns, 3.6 * rows), layout="tight")
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    colours = colormaps["viridis"](np.linspace(0.0, 0.85, len(config.noise_levels)))
    predicted = {
        (row["strategy"], row["step_size"], row["noise"]): row["predicted_db"]
        for row in result.summary
    }
    iterations = np.arange(config.iterations + 1)
    for row_index, mu in enumerate(config.step_sizes):
        for column_index, strategy in enumerate(STRATEGIES):
            axis = axes[row_index][column_index]
            for colour, noise in zip(colours, config.noise_levels):
                with np.errstate(divide="ignore"):
                    decibels = 10.0 * np.log10(result.curves[strategy, mu, noise])
                axis.plot(
                    iterations,
                    decibels,
                    color=colour,
                    linewidth=1.0,
                    label=f"$\\sigma_s$ = {noise:g}",
                )
                axis.axhline(
                    predicted[strategy, mu, noise],
                    color=colour,
                    linestyle="--",
                    linewidth=1.0,
                )
            axis.set_title(f"{STRATEGY_LABELS[strategy]}, $\\mu$ = {mu:g}")
            axis.grid(True, alpha=0.3)
            if row_index == rows - 1:
                axis.set_xlabel("iteration")
            if column_index == 0:
                axis.set_ylabel("MSD (dB)")
    axes[0][0].legend(loc="upper right", fontsize="small")
    figure.suptitle(
        f"{result.network['subspace']} on {result.network['graph']}: simulated "
        "(solid) and predicted steady state (dashed)",
        fontsize="medium",
    )
    write_atomic(
        path, lambda temporary: figure.savefig(temporary, dpi=120, format="png")
    )


def _positive_values(values: Sequence[float], name: str) -> tuple[float, ...]:
    values = tuple(values)
    if not values:
        raise ConfigError(f"give at least one {name}.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"each {name} must be a number, got {value!r}.")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"each {name} must be positive and finite, got {value}.")
    if len(set(values)) != len(values):
        raise ConfigError(f"the {name}s {list(values)} contain a duplicate.")
    return tuple(float(value) for value in values)


def _check_integer(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}.")
