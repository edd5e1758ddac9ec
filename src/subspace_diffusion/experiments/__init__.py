"""Experiments that check the library against theory: ``subspace-diffusion experiment``.

:func:`add_experiment_parser` adds the ``experiment`` command with one
sub-command per experiment:

* ``msd``: steady-state MSD of approximate projection and exact diffusion
  under decreasing gradient noise (:mod:`subspace_diffusion.experiments.msd`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..graphs import TOPOLOGIES
from .msd import SUBSPACES, MSDExperimentConfig

__all__ = ["add_experiment_parser"]

_DEFAULTS = MSDExperimentConfig()


def add_experiment_parser(subparsers) -> None:
    """Add the ``experiment`` command and its sub-commands to ``subparsers``.

    Each sub-command sets ``handler``, a function that takes the parsed
    namespace and returns the exit status.
    """
    parser = subparsers.add_parser(
        "experiment",
        help="run an experiment that compares simulation with theory",
        description=(
            "Experiments on linear-regression networks, checked against theory."
        ),
    )
    experiments = parser.add_subparsers(dest="experiment", required=True)
    _add_msd_parser(experiments)


def _add_msd_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "msd",
        help="steady-state MSD of approximate projection and exact diffusion",
        description=(
            "Run approximate-projection diffusion and exact subspace diffusion on "
            "a heterogeneous multi-task linear-regression network with exact "
            "gradients plus additive white gradient noise. Writes msd.csv, "
            "summary.csv, summary.json and msd.png to --out, and prints the "
            "simulated and predicted steady-state MSD."
        ),
    )
    add = parser.add_argument
    add(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output directory for msd.csv, summary.csv, summary.json and msd.png",
    )

    # Noise levels, step sizes and run length.
    add(
        "--noise-levels",
        type=_float_list,
        metavar="LIST",
        default=_DEFAULTS.noise_levels,
        help=(
            "comma-separated standard deviations sigma_s of the additive gradient "
            "noise, in gradient units (default: "
            f"{_format_list(_DEFAULTS.noise_levels)})"
        ),
    )
    add(
        "--step-sizes",
        type=_float_list,
        metavar="LIST",
        default=_DEFAULTS.step_sizes,
        help=(
            "comma-separated step sizes mu, dimensionless (default: "
            f"{_format_list(_DEFAULTS.step_sizes)})"
        ),
    )
    add(
        "--iterations",
        type=int,
        default=_DEFAULTS.iterations,
        help=f"iterations per run (default: {_DEFAULTS.iterations})",
    )
    add(
        "--repetitions",
        type=int,
        default=_DEFAULTS.repetitions,
        help=f"Monte-Carlo repetitions per run (default: {_DEFAULTS.repetitions})",
    )
    add(
        "--steady-fraction",
        type=float,
        default=_DEFAULTS.steady_fraction,
        help=(
            "fraction of the last iterations averaged into the simulated "
            f"steady-state MSD (default: {_DEFAULTS.steady_fraction})"
        ),
    )

    # Network and subspace.
    add(
        "--agents",
        type=int,
        default=_DEFAULTS.agents,
        help=f"number of agents K (default: {_DEFAULTS.agents})",
    )
    add(
        "--topology",
        default=_DEFAULTS.topology,
        help=f"graph: {', '.join(TOPOLOGIES)} (default: {_DEFAULTS.topology})",
    )
    add(
        "--subspace",
        choices=SUBSPACES,
        default=_DEFAULTS.subspace,
        help=(
            "clustered: contiguous groups of agents share a model; shared: one "
            "model for all; smooth: graph-Laplacian eigenvectors (default: "
            f"{_DEFAULTS.subspace})"
        ),
    )
    add(
        "--clusters",
        type=int,
        default=_DEFAULTS.clusters,
        help=(
            "number of clusters of --subspace clustered (default: "
            f"{_DEFAULTS.clusters})"
        ),
    )
    add(
        "--eigenvectors",
        type=int,
        default=_DEFAULTS.eigenvectors,
        help=(
            "number of eigenvectors of --subspace smooth (default: "
            f"{_DEFAULTS.eigenvectors})"
        ),
    )

    # Regression problem.
    add(
        "--entries-per-agent",
        type=int,
        default=_DEFAULTS.entries_per_agent,
        help=(
            "length M of each agent's parameter vector (default: "
            f"{_DEFAULTS.entries_per_agent})"
        ),
    )
    add(
        "--heterogeneity",
        type=float,
        default=_DEFAULTS.heterogeneity,
        help=(
            "scale h of the minimisers' component outside the subspace, "
            f"dimensionless; 0 puts them in the subspace (default: "
            f"{_DEFAULTS.heterogeneity})"
        ),
    )
    add(
        "--seed",
        type=int,
        default=_DEFAULTS.seed,
        help=(
            f"seed of the graph, the problem and the noise (default: {_DEFAULTS.seed})"
        ),
    )

    # Output.
    add(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run in --out",
    )
    add("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_msd)


def _run_msd(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .msd import format_table, run_msd_experiment, total_iterations, write_results

    config = MSDExperimentConfig(
        noise_levels=tuple(args.noise_levels),
        step_sizes=tuple(args.step_sizes),
        iterations=args.iterations,
        repetitions=args.repetitions,
        steady_fraction=args.steady_fraction,
        agents=args.agents,
        topology=args.topology,
        subspace=args.subspace,
        clusters=args.clusters,
        eigenvectors=args.eigenvectors,
        entries_per_agent=args.entries_per_agent,
        heterogeneity=args.heterogeneity,
        seed=args.seed,
    )
    config.validate()
    out = args.out
    if (out / "summary.json").exists() and not args.overwrite:
        raise ConfigError(
            f"output directory {out} already contains results. Pass another --out, "
            "or --overwrite to replace them."
        )

    start = time.perf_counter()
    with tqdm(
        total=total_iterations(config),
        unit="it",
        desc="msd",
        file=sys.stderr,
        disable=args.quiet,
        dynamic_ncols=True,
    ) as bar:
        result = run_msd_experiment(config, progress=bar.update)
    write_results(result, out)
    seconds = time.perf_counter() - start

    network = result.network
    print(
        f"{network['subspace']} on {network['graph']}, spectral gap "
        f"{network['spectral_gap']:.4f}; {config.repetitions} repetitions of "
        f"{config.iterations} iterations, steady state over the last "
        f"{config.steady_fraction:g} of them"
    )
    print(format_table(result.summary))
    print(f"\nfinished in {seconds:.1f} s; results in {out}")
    return 0


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.1,0.01, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _format_list(values) -> str:
    return ",".join(f"{value:g}" for value in values)
