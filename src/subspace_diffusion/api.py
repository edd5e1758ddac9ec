"""Python API: train agents on your own model and data, or run an experiment.

:func:`train` takes a user's ``nn.Module``, sharing specification, graph and
per-agent data. :func:`run` resolves a :class:`TrainConfig` (what the command
line builds), loads a built-in dataset, calls :func:`train` and writes the run
directory. The command line does nothing that this module does not.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import torch
from torch import nn

from . import data as data_module
from .engine import Simulator
from .errors import ConfigError
from .graphs import TOPOLOGIES, as_graph, describe_graph, make_graph
from .models import MODELS, build_model
from .plots import plot_training
from .runs import (
    MetricsWriter,
    check_run_directory,
    prepare_run_directory,
    save_checkpoint,
    save_config,
    save_json,
)
from .step_rules import STEP_RULES
from .strategies import STRATEGIES
from .tasks import DEFAULT_TASKS, split_tasks

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_SHARING = {"trunk.*": "shared", "head.*": "local"}


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    simulator: Simulator
    rows: list[dict]
    final: list[dict]
    seconds: float


ProgressCallback = Callable[[int, int, torch.Tensor], None]


def train(
    model: nn.Module,
    shards: Sequence[tuple[torch.Tensor, torch.Tensor]],
    graph: nx.Graph,
    sharing: Mapping | object = None,
    *,
    test_sets: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    agent_task: Sequence[int] | None = None,
    epochs: float = 1,
    evaluations_per_epoch: int = 1,
    metrics: MetricsWriter | None = None,
    progress: ProgressCallback | None = None,
    simulator: Simulator | None = None,
    **simulator_options,
) -> TrainResult:
    """Train K copies of ``model`` on a graph, one per agent.

    Parameters
    ----------
    model : nn.Module
        Template network. Each agent gets its own parameters.
    shards : sequence of (images, labels)
        Training data of each agent (agent k is node k of ``graph``).
    graph : nx.Graph
        Connected communication graph with nodes ``0..K-1``.
    sharing : mapping or SharingSpec, optional
        Parameter-name patterns to subspaces; defaults to
        ``{"trunk.*": "shared", "head.*": "local"}``.
    test_sets : sequence of (images, labels), optional
        Held-out data of each task; agent k is tested on
        ``test_sets[agent_task[k]]``. Without it only training losses are kept.
    agent_task : sequence of int, optional
        Task of each agent; defaults to ``k`` (one test set per agent).
    epochs : float
        Passes over the smallest shard; fractions are allowed.
    evaluations_per_epoch : int
        Evaluations (and metric rows) per epoch.
    metrics : MetricsWriter, optional
        Receives each evaluation's rows as soon as they exist.
    progress : callable, optional
        Called as ``progress(step, total_steps, losses)`` after every step.
    simulator : Simulator, optional
        An already built simulator to train; ``model``, ``shards``, ``graph``,
        ``sharing`` and ``simulator_options`` are then ignored.
    **simulator_options
        Passed to :class:`~subspace_diffusion.engine.Simulator`: ``strategy``,
        ``step_rule``, ``step_size``, ``batch_size``, ``local_steps``,
        ``seed``, ``device``, ``dtype``, ``num_classes``, ...

    Returns
    -------
    TrainResult
        The simulator (with the trained parameters), every metric row, and the
        rows of the last evaluation.

    Examples
    --------
    >>> import torch, networkx as nx
    >>> from torch import nn
    >>> model = nn.Sequential()
    >>> model.add_module("trunk", nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU()))
    >>> model.add_module("head", nn.Linear(8, 2))
    >>> shards = [(torch.randn(64, 4), torch.randint(0, 2, (64,))) for _ in range(3)]
    >>> result = train(model, shards, nx.cycle_graph(3), epochs=1, step_rule="agd-shared")
    """
    if sharing is None:
        sharing = DEFAULT_SHARING
    if (
        isinstance(epochs, bool)
        or not isinstance(epochs, (int, float))
        or not math.isfinite(epochs)
        or not epochs > 0
    ):
        raise ConfigError(f"epochs must be a positive finite number, got {epochs!r}.")
    if not isinstance(evaluations_per_epoch, int) or evaluations_per_epoch < 1:
        raise ConfigError(
            f"evaluations_per_epoch must be a positive integer, got "
            f"{evaluations_per_epoch!r}."
        )
    if simulator is None:
        simulator = Simulator(model, shards, graph, sharing, **simulator_options)
    num_agents = simulator.num_agents
    if agent_task is None:
        agent_task = list(range(num_agents))
    agent_task = list(agent_task)
    if len(agent_task) != num_agents:
        raise ConfigError(
            f"agent_task has {len(agent_task)} entries for {num_agents} agents; "
            "give one task index per agent."
        )
    if test_sets is not None and not all(
        isinstance(t, int) and 0 <= t < len(test_sets) for t in agent_task
    ):
        raise ConfigError(
            f"agent_task {agent_task} must contain task indices 0 to "
            f"{len(test_sets) - 1}, one per test set given."
        )

    # An exchange draws E minibatches, so an epoch has batches / E exchanges.
    steps_per_epoch = (
        simulator.sampler.batches_per_epoch / simulator.strategy.local_steps
    )
    total_steps = max(1, round(epochs * steps_per_epoch))
    # Evaluate at evenly spaced steps, the last one always included.
    num_evaluations = max(1, math.ceil(epochs * evaluations_per_epoch))
    evaluation_steps = {
        max(1, round(total_steps * j / num_evaluations))
        for j in range(1, num_evaluations + 1)
    }

    rows: list[dict] = []
    final: list[dict] = []
    loss_sum = torch.zeros(num_agents, dtype=torch.float64)
    loss_count = 0
    started = time.perf_counter()
    for step in range(1, total_steps + 1):
        losses = simulator.step()
        loss_sum += losses.double().cpu()
        loss_count += 1
        if progress is not None:
            progress(step, total_steps, losses)
        if step not in evaluation_steps:
            continue
        final = _evaluation_rows(
            simulator,
            step,
            step / steps_per_epoch,
            loss_sum / loss_count,
            test_sets,
            agent_task,
        )
        rows += final
        if metrics is not None:
            metrics.write_rows(final)
        loss_sum.zero_()
        loss_count = 0
    return TrainResult(simulator, rows, final, time.perf_counter() - started)


def _evaluation_rows(simulator, step, epoch, train_loss, test_sets, agent_task):
    if test_sets is not None:
        test_loss, test_accuracy = simulator.evaluate(test_sets, agent_task)
    else:
        test_loss = test_accuracy = None
    step_sizes = simulator.step_rule.last_step_size
    distance = simulator.subspace_distance()
    rows = []
    for k in range(simulator.num_agents):
        rows.append(
            {
                "epoch": round(epoch, 6),
                "step": step,
                "agent": k,
                "task": int(agent_task[k]),
                "train_loss": float(train_loss[k]),
                "test_loss": "" if test_loss is None else float(test_loss[k]),
                "test_accuracy": ""
                if test_accuracy is None
                else float(test_accuracy[k]),
                "step_size": float(step_sizes[k]),
                "subspace_distance": float(distance[k]),
                "bytes_sent": int(simulator.bytes_per_step[k] * simulator.steps),
            }
        )
    return rows


@dataclass
class TrainConfig:
    """Settings of one run of the main job; the command line fills these in."""

    dataset: str = "digits"
    data_dir: str | None = None
    agents: int | None = None  # 4, or the node count of an edge-list file
    topology: str = "ring"
    strategy: str = "exact"
    step_rule: str = "agd-shared"
    step_size: float | None = None
    epochs: float = 30
    batch_size: int = 32
    local_steps: int = 1
    seed: int = 0
    device: str = "cpu"
    out: str | None = None
    model: str = "cnn"
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    tasks: list[list[int]] = field(
        default_factory=lambda: [list(t) for t in DEFAULT_TASKS]
    )
    sharing: dict = field(default_factory=lambda: dict(DEFAULT_SHARING))
    weights: str = "metropolis"
    edge_probability: float | None = None
    radius: float | None = None
    image_size: int | None = None
    evaluations_per_epoch: int = 1
    agd_gain: float = 1.0
    agd_agree: bool = False
    dtype: str = "float32"
    samples_per_agent: int | None = None
    overwrite: bool = False

    @classmethod
    def from_dict(cls, values: Mapping) -> TrainConfig:
        """Build a configuration from a mapping (keys with ``-`` or ``_``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        normalised = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(
                    f"Unknown configuration key {key!r}. Known keys: "
                    f"{', '.join(sorted(known))}."
                )
            normalised[name] = value
        return cls(**normalised)

    def _check_types(self) -> None:
        def fail(name, expected):
            value = getattr(self, name)
            raise ConfigError(
                f"Invalid {name.replace('_', '-')} {value!r} "
                f"({type(value).__name__}): expected {expected}."
            )

        def is_number(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        strings = ("dataset", "topology", "strategy", "step_rule", "model")
        for name in strings + ("weights", "dtype", "device"):
            if not isinstance(getattr(self, name), str):
                fail(name, "a string")
        for name in ("data_dir", "out"):
            if getattr(self, name) is not None and not isinstance(
                getattr(self, name), str
            ):
                fail(name, "a path")
        for name in ("overwrite", "agd_agree"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "true or false")
        for name in ("step_size", "edge_probability", "radius"):
            value = getattr(self, name)
            if value is not None and not (is_number(value) and math.isfinite(value)):
                fail(name, "a finite number")
        for name in ("image_size", "samples_per_agent"):
            value = getattr(self, name)
            if value is not None and not (is_int(value) and value > 0):
                fail(name, "a positive integer")
        if not is_int(self.seed):
            fail("seed", "an integer")
        if not (is_number(self.agd_gain) and math.isfinite(self.agd_gain)):
            fail("agd_gain", "a positive finite number")
        if self.agd_gain <= 0:
            fail("agd_gain", "a positive finite number")
        hidden = self.hidden
        if (
            not isinstance(hidden, (list, tuple))
            or not hidden
            or not all(is_int(width) and width > 0 for width in hidden)
        ):
            fail("hidden", "a list of positive layer widths, for example [256, 256]")
        tasks = self.tasks
        if not isinstance(tasks, (list, tuple)) or not all(
            isinstance(task, (list, tuple)) and all(is_int(c) for c in task)
            for task in tasks
        ):
            fail(
                "tasks", "a list of lists of class labels, for example [[0, 1], [2, 3]]"
            )
        if not isinstance(self.sharing, dict):
            fail("sharing", "a mapping from parameter patterns to subspaces")

    def validate(self) -> None:
        """Check every setting that can be checked before loading data."""
        self._check_types()
        if self.out is None:
            self.out = f"runs/{self.dataset}-{self.strategy}-{self.step_rule}"
        topology = self.topology.lower().replace("_", "-")
        if topology in TOPOLOGIES:
            self.topology = topology

        choices = {
            "dataset": data_module.DATASETS,
            "strategy": STRATEGIES,
            "step_rule": STEP_RULES,
            "model": MODELS,
            "dtype": tuple(DTYPES),
            "weights": ("metropolis", "averaging"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(
                    f"Unknown {name.replace('_', '-')} {value!r}. Choose one of: "
                    f"{', '.join(allowed)}."
                )

        is_path = os.path.sep in self.topology or Path(self.topology).is_file()
        if self.topology not in TOPOLOGIES and not is_path:
            raise ConfigError(
                f"Unknown topology {self.topology!r}. Choose one of: "
                f"{', '.join(TOPOLOGIES)}, or give the path of an edge-list file."
            )

        if self.agents is None and self.topology in TOPOLOGIES:
            self.agents = 4
        positive_ints = ("batch_size", "local_steps", "evaluations_per_epoch")
        if self.agents is not None:
            positive_ints = ("agents",) + positive_ints
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be a positive integer, got {value!r}."
                )

        if (
            isinstance(self.epochs, bool)
            or not isinstance(self.epochs, (int, float))
            or not math.isfinite(self.epochs)
            or not self.epochs > 0
        ):
            raise ConfigError(
                f"epochs must be a positive finite number, got {self.epochs!r}."
            )

        try:
            torch.device(self.device)
        except RuntimeError:
            raise ConfigError(
                f"Invalid --device {self.device!r}: use cpu, cuda or cuda:N."
            ) from None

        if self.step_rule == "constant" and self.step_size is None:
            raise ConfigError(
                "--step-rule constant needs --step-size (for example 0.01); the "
                "AGD step rules need none."
            )
        if self.step_rule != "constant" and self.step_size is not None:
            raise ConfigError(
                f"--step-size {self.step_size} has no effect with --step-rule "
                f"{self.step_rule}, which sets its own step sizes. Remove it or use "
                "--step-rule constant."
            )

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"--device {self.device} requested but CUDA is not available on this "
                "machine. Use --device cpu."
            )


def build_graph(config: TrainConfig) -> nx.Graph:
    """Build the communication graph a configuration names."""
    if config.topology in TOPOLOGIES:
        return make_graph(
            config.topology,
            config.agents,
            seed=config.seed,
            probability=config.edge_probability,
            radius=config.radius,
        )
    graph = as_graph(config.topology)
    if config.agents is None:
        config.agents = graph.number_of_nodes()
    if graph.number_of_nodes() != config.agents:
        raise ConfigError(
            f"The edge list {config.topology} has {graph.number_of_nodes()} agents "
            f"but --agents is {config.agents}. Make them agree."
        )
    return graph


@dataclass
class RunResult:
    """Outcome of :func:`run`: the run directory and the final metrics."""

    directory: Path
    final: list[dict]
    seconds: float
    train: TrainResult
    graph_description: str = ""


def run(
    config: TrainConfig,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Run the main job for ``config`` and write its run directory.

    The directory contains ``config.yaml``, ``metrics.csv``, ``summary.json``,
    ``checkpoint.npz`` (stacked final parameters) and the PNG plots.
    """
    config.validate()
    log = log or logger.info
    started = time.perf_counter()
    out = config.out or f"runs/{config.dataset}-{config.strategy}-{config.step_rule}"
    check_run_directory(out, overwrite=config.overwrite)

    graph = build_graph(config)
    dataset = data_module.load_dataset(
        config.dataset, config.data_dir, image_size=config.image_size
    )
    split = split_tasks(
        dataset,
        config.agents,
        [tuple(t) for t in config.tasks],
        seed=config.seed,
        samples_per_agent=config.samples_per_agent,
    )
    num_classes = [len(split.tasks[t]) for t in split.agent_task]
    model = build_model(
        config.model,
        dataset.num_channels,
        dataset.image_size,
        max(num_classes),
        hidden=tuple(config.hidden),
    )
    simulator = Simulator(
        model,
        split.train,
        graph,
        config.sharing,
        strategy=config.strategy,
        step_rule=config.step_rule,
        step_size=config.step_size,
        batch_size=config.batch_size,
        local_steps=config.local_steps,
        num_classes=num_classes,
        seed=config.seed,
        device=config.device,
        dtype=DTYPES[config.dtype],
        weights=config.weights,
        agd_gain=config.agd_gain,
        agd_agree=config.agd_agree,
    )
    description = describe_graph(graph, graph.name or config.topology)
    log(f"graph: {description}")
    log(simulator.sharing.describe())

    # Every setting is valid: only now is the run directory written.
    directory = prepare_run_directory(out, overwrite=config.overwrite)
    resolved = dataclasses.asdict(config)
    resolved["out"] = str(directory)
    del resolved["overwrite"]  # a saved configuration never overwrites results
    save_config(directory, resolved)
    metrics = MetricsWriter(directory / "metrics.csv")
    try:
        result = train(
            model,
            split.train,
            graph,
            test_sets=split.test,
            agent_task=split.agent_task,
            epochs=config.epochs,
            evaluations_per_epoch=config.evaluations_per_epoch,
            metrics=metrics,
            progress=progress,
            simulator=simulator,
        )
    finally:
        metrics.close()

    save_checkpoint(
        directory / "checkpoint.npz",
        {name: t.numpy() for name, t in result.simulator.state_dict().items()},
    )
    title = (
        f"{config.dataset}: {config.strategy}, {config.step_rule}, {config.topology}"
    )
    plot_training(result.rows, directory, title)
    seconds = time.perf_counter() - started
    summary = {
        "seconds": seconds,
        "training_seconds": result.seconds,
        "steps": result.simulator.steps,
        "graph": description,
        "final": result.final,
        "min_test_accuracy": min(
            (row["test_accuracy"] for row in result.final), default=math.nan
        ),
    }
    save_json(directory / "summary.json", summary)
    return RunResult(directory, result.final, seconds, result, description)
