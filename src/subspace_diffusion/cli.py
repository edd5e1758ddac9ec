"""Command line: ``subspace-diffusion train`` and ``subspace-diffusion experiment``.

A thin layer over :mod:`subspace_diffusion.api`: it parses options, draws the
progress bar and prints the summary. User errors (the library's own
exceptions) print one message and exit with status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import yaml

from . import __version__
from .errors import SubspaceDiffusionError
from .graphs import TOPOLOGIES
from .models import MODELS
from .step_rules import STEP_RULES
from .strategies import STRATEGIES

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")


def _add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train agents on a graph and write a run directory",
        description=(
            "Train K agents on a communication graph, each on its own task, with "
            "shared trunk parameters kept in a subspace and local heads. Options "
            "override the values of --config."
        ),
    )
    add = parser.add_argument
    add(
        "--config",
        type=Path,
        help="YAML file with any of these settings (keys as the option names)",
    )
    add(
        "--dataset",
        choices=DATASETS,
        help="dataset (default: digits, bundled with scikit-learn)",
    )
    add(
        "--data-dir",
        help="folder with the dataset files (mnist, fashion-mnist, cifar10)",
    )

    add(
        "--agents",
        type=int,
        help="number of agents K (default: 4, or the agents of an edge-list --topology)",
    )
    add(
        "--topology",
        help=f"graph: {', '.join(TOPOLOGIES)}, or an edge-list file (default: ring)",
    )
    add("--edge-probability", type=float, help="edge probability of erdos-renyi graphs")
    add(
        "--radius",
        type=float,
        help="connection radius of random-geometric graphs (unit square)",
    )

    add("--strategy", choices=STRATEGIES, help="cooperation strategy (default: exact)")
    add("--step-rule", choices=STEP_RULES, help="step-size rule (default: agd-shared)")
    add(
        "--step-size",
        type=float,
        help="step size mu of --step-rule constant (dimensionless)",
    )
    add(
        "--epochs",
        type=float,
        help="passes over each agent's training shard; fractions allowed (default: 30)",
    )
    add("--batch-size", type=int, help="samples per agent per minibatch (default: 32)")
    add(
        "--local-steps",
        type=int,
        help="adapt steps per exchange, E; each uses a new minibatch and the step "
        "size divided by E (default: 1)",
    )
    add(
        "--evaluations-per-epoch",
        type=int,
        help="test evaluations per epoch (default: 1)",
    )

    add("--model", choices=MODELS, help="network: reference cnn or mlp (default: cnn)")
    add(
        "--weights",
        choices=("metropolis", "averaging"),
        help="combination weights (default: metropolis)",
    )
    add(
        "--image-size",
        type=int,
        help="resize MNIST and Fashion-MNIST images to this many pixels per side "
        "(default: 16; digits stay 8x8 and CIFAR-10 32x32)",
    )
    add(
        "--samples-per-agent",
        type=int,
        help="cap each agent's training shard at this many samples",
    )
    add(
        "--agd-gain",
        type=float,
        help="multiplier of the AGD step size eta (default: 1)",
    )
    add(
        "--agd-agree",
        action="store_true",
        default=None,
        help="average AGD's gradient summary G over neighbours each exchange, "
        "so the agents' step sizes agree",
    )
    add(
        "--dtype",
        choices=("float32", "float64"),
        help="floating-point precision (default: float32)",
    )

    add(
        "--seed",
        type=int,
        help="seed of the data split, initial weights and minibatches (default: 0)",
    )
    add("--device", help="torch device, for example cpu or cuda (default: cpu)")
    add(
        "--out", help="run directory to write (default: runs/DATASET-STRATEGY-STEPRULE)"
    )
    add(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace the results in an existing run directory",
    )
    add("--quiet", action="store_true", help="no progress bar and no log lines")
    parser.set_defaults(handler=_train)


def _load_config(path: Path | None) -> dict:
    from .errors import ConfigError

    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"Cannot read config file {path}: {error.strerror}."
        ) from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"Invalid YAML in config file {path}: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"Config file {path} must contain a mapping of settings.")
    return values


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import TrainConfig, run

    values = _load_config(args.config)
    for key, value in vars(args).items():
        if key in ("config", "handler", "quiet", "command") or value is None:
            continue
        values[key] = value
    config = TrainConfig.from_dict(values)
    config.validate()

    bar = None

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr)

    def progress(step, total, losses):
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=total, unit="step", desc="training", dynamic_ncols=True)
        bar.update(1)
        if step % 10 == 0 or step == total:
            bar.set_postfix(loss=f"{float(losses.mean()):.4f}")

    try:
        result = run(config, progress=progress, log=log)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(
            f"interrupted; completed evaluations are in {config.out}/metrics.csv",
            file=sys.stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close()
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    print()
    print(
        f"{'agent':>5} {'task':>4} {'train loss':>10} {'test loss':>9} {'test acc':>8}"
    )
    for row in result.final:
        accuracy = row["test_accuracy"]
        percent = f"{100 * accuracy:7.2f}%" if accuracy != "" else "       -"
        print(
            f"{row['agent']:>5} {row['task']:>4} {row['train_loss']:>10.4f} "
            f"{row['test_loss']:>9.4f} {percent}"
        )
    print(
        f"\n{result.train.simulator.steps} steps: training {result.train.seconds:.1f} s, "
        f"total {result.seconds:.1f} s; results in {result.directory}"
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``subspace-diffusion`` command."""
    parser = argparse.ArgumentParser(
        prog="subspace-diffusion",
        description="Decentralised multi-task learning under subspace constraints.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(subparsers)
    try:
        from .experiments import add_experiment_parser
    except ImportError:
        pass
    else:
        add_experiment_parser(subparsers)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SubspaceDiffusionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed evaluations are in metrics.csv", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
