"""Multi-task splits: which agent learns which classes from which samples.

A task is a tuple of original class labels, for example digits 0..4. Agents
are assigned to tasks round-robin (agent k learns task ``k % T``). Each task's
training samples are shuffled and cut into disjoint shards, one per agent of
that task, and its classes are relabelled to ``0..n-1`` in the order listed.
Every task also gets the matching part of the test set, relabelled the same
way, so that agents of one task are evaluated on the same held-out data.
"""

from __future__ import annotations

import logging
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from subspace_diffusion.data import ImageDataset
from subspace_diffusion.errors import ConfigError, DataError

__all__ = ["DEFAULT_TASKS", "TaskSplit", "split_tasks"]

logger = logging.getLogger(__name__)

DEFAULT_TASKS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
"""Two tasks: classes 0..4 and classes 5..9."""


@dataclass
class TaskSplit:
    """Per-agent training shards and per-task test sets.

    Attributes
    ----------
    tasks : tuple of tuple of int
        Original class labels of each task. Within task t, original class
        ``tasks[t][i]`` has label i.
    agent_task : tuple of int
        Task index of each agent.
    train : list of (torch.Tensor, torch.Tensor)
        For each agent, its images ``(n_k, C, H, W)`` and relabelled int64
        labels ``(n_k,)``. Shards of different agents share no sample.
    test : list of (torch.Tensor, torch.Tensor)
        For each task, the test images and relabelled labels of its classes.
    """

    tasks: tuple[tuple[int, ...], ...]
    agent_task: tuple[int, ...]
    train: list[tuple[torch.Tensor, torch.Tensor]]
    test: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def num_agents(self) -> int:
        """Number of agents K."""
        return len(self.agent_task)

    @property
    def num_tasks(self) -> int:
        """Number of tasks T."""
        return len(self.tasks)

    @property
    def num_classes_per_task(self) -> tuple[int, ...]:
        """Number of classes of each task."""
        return tuple(len(classes) for classes in self.tasks)

    @property
    def shard_sizes(self) -> tuple[int, ...]:
        """Number of training samples of each agent."""
        return tuple(int(labels.shape[0]) for _, labels in self.train)

    def agents_of_task(self, task: int) -> tuple[int, ...]:
        """Return the indices of the agents assigned to ``task``, in order."""
        return tuple(k for k, t in enumerate(self.agent_task) if t == task)


def _as_int(name: str, value: object) -> int:
    """Return ``value`` as an int, raising TypeError for bools and non-integers."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}."
        ) from None


def _normalise_tasks(
    tasks: Sequence[Sequence[int]], dataset: ImageDataset
) -> tuple[tuple[int, ...], ...]:
    """Validate ``tasks`` against the dataset and return it as nested tuples."""
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence):
        raise ConfigError(
            f"tasks must be a sequence of class tuples such as {DEFAULT_TASKS}, "
            f"got {tasks!r}."
        )
    if len(tasks) == 0:
        raise ConfigError(
            f"tasks is empty. Give at least one task, for example {DEFAULT_TASKS}."
        )

    normalised = []
    owner_of_class: dict[int, int] = {}
    for t, classes in enumerate(tasks):
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
            raise ConfigError(
                f"Task {t} must be a sequence of class labels, got {classes!r}."
            )
        if len(classes) == 0:
            raise ConfigError(
                f"Task {t} has no classes, but every task needs at least one "
                f"class label in 0..{dataset.num_classes - 1}."
            )
        task = tuple(_as_int(f"class label in task {t}", c) for c in classes)
        for c in task:
            if not 0 <= c < dataset.num_classes:
                raise ConfigError(
                    f"Class {c} in task {t} is not a class of dataset "
                    f"{dataset.name!r}, whose labels are 0..{dataset.num_classes - 1}."
                )
            if c in owner_of_class:
                where = (
                    f"twice in task {t}"
                    if owner_of_class[c] == t
                    else f"in tasks {owner_of_class[c]} and {t}"
                )
                raise ConfigError(
                    f"Class {c} is listed {where}. Each class may appear only once in "
                    "one task, so that training shards stay disjoint."
                )
            owner_of_class[c] = t
        normalised.append(task)
    return tuple(normalised)


def split_tasks(
    dataset: ImageDataset,
    num_agents: int,
    tasks: Sequence[Sequence[int]] = DEFAULT_TASKS,
    *,
    seed: int = 0,
    samples_per_agent: int | None = None,
) -> TaskSplit:
    """Assign agents to tasks and give each agent a disjoint training shard.

    Agent k learns task ``k % T``. The training samples of each task are
    shuffled by a ``torch.Generator`` seeded with ``seed`` and cut into
    near-equal shards (sizes differ by at most one), one per agent of the
    task. All samples are used unless ``samples_per_agent`` caps the shards.

    Parameters
    ----------
    dataset : ImageDataset
        Dataset to split.
    num_agents : int
        Number of agents K, at least the number of tasks.
    tasks : sequence of sequence of int, default DEFAULT_TASKS
        Original class labels of each task. No class may appear twice.
    seed : int, default 0
        Seed of the shuffle. The same seed gives the same shards.
    samples_per_agent : int, optional
        Maximum shard size. When a task has fewer than
        ``samples_per_agent`` samples per agent, its samples are shared out
        evenly and a warning is issued.

    Returns
    -------
    TaskSplit

    Raises
    ------
    TypeError
        If ``dataset`` is not an ImageDataset or a count is not an integer.
    ConfigError
        If ``num_agents`` or ``samples_per_agent`` is below 1, ``num_agents``
        is smaller than the number of tasks, a task is empty, or a class is
        unknown or listed twice.
    DataError
        If a class has no training samples, a task has fewer training samples
        than agents, or a task has no test samples.

    Examples
    --------
    >>> from subspace_diffusion.data import load_dataset
    >>> split = split_tasks(load_dataset("digits"), num_agents=4)
    >>> split.agent_task, split.num_classes_per_task
    ((0, 1, 0, 1), (5, 5))
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(
            f"dataset must be an ImageDataset, got {type(dataset).__name__}."
        )
    num_agents = _as_int("num_agents", num_agents)
    if num_agents < 1:
        raise ConfigError(f"num_agents must be at least 1, got {num_agents}.")
    task_classes = _normalise_tasks(tasks, dataset)
    num_tasks = len(task_classes)
    if num_agents < num_tasks:
        missing = ", ".join(str(t) for t in range(num_agents, num_tasks))
        raise ConfigError(
            f"num_agents={num_agents} is smaller than the number of tasks "
            f"({num_tasks}), so task(s) {missing} would have no agent. Use "
            f"num_agents >= {num_tasks} (a multiple of {num_tasks} gives every "
            "task the same number of agents), or list fewer tasks."
        )
    if samples_per_agent is not None:
        samples_per_agent = _as_int("samples_per_agent", samples_per_agent)
        if samples_per_agent < 1:
            raise ConfigError(
                f"samples_per_agent must be at least 1 or None (use all "
                f"samples), got {samples_per_agent}."
            )
    generator = torch.Generator()
    try:
        generator.manual_seed(_as_int("seed", seed))
    except RuntimeError as exc:
        raise ConfigError(f"Invalid seed {seed!r}: {exc}") from None

    _check_classes_present(dataset, task_classes)

    agent_task = tuple(k % num_tasks for k in range(num_agents))
    train: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_agents
    test = []
    for t, classes in enumerate(task_classes):
        class_tensor = torch.tensor(classes, dtype=torch.int64)
        # new_label[original] is the task's label of an original class, -1 if
        # the class is not in this task.
        new_label = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
        new_label[class_tensor] = torch.arange(len(classes))

        # Training shards: shuffle the task's sample indices, then cut them.
        indices = _task_indices(dataset.train_labels, class_tensor)
        agents = list(range(t, num_agents, num_tasks))
        if len(agents) > indices.numel():
            raise DataError(
                f"Task {t} (classes {classes}) has {indices.numel()} training "
                f"samples but {len(agents)} agents, and each agent needs at least "
                f"one. Use fewer agents or a larger dataset."
            )
        indices = indices[torch.randperm(indices.numel(), generator=generator)]
        if samples_per_agent is not None:
            requested = samples_per_agent * len(agents)
            if requested > indices.numel():
                warnings.warn(
                    f"Task {t} has {indices.numel()} training samples, fewer "
                    f"than samples_per_agent={samples_per_agent} for each of "
                    f"its {len(agents)} agents, so shards get about "
                    f"{indices.numel() // len(agents)} samples each.",
                    stacklevel=2,
                )
            indices = indices[:requested]
        for agent, shard in zip(agents, torch.tensor_split(indices, len(agents))):
            train[agent] = (
                dataset.train_images[shard],
                new_label[dataset.train_labels[shard]],
            )

        # Test set: every test sample of the task's classes.
        test_indices = _task_indices(dataset.test_labels, class_tensor)
        if test_indices.numel() == 0:
            raise DataError(
                f"Task {t} (classes {classes}) has no test samples in dataset "
                f"{dataset.name!r}. Choose classes that occur in the test set."
            )
        test.append(
            (
                dataset.test_images[test_indices],
                new_label[dataset.test_labels[test_indices]],
            )
        )

    split = TaskSplit(tasks=task_classes, agent_task=agent_task, train=train, test=test)
    logger.debug(
        "Split %s into %d tasks for %d agents, shard sizes %s",
        dataset.name,
        num_tasks,
        num_agents,
        split.shard_sizes,
    )
    return split


def _task_indices(labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Return the indices of the samples whose label is in ``classes``."""
    return torch.isin(labels, classes).nonzero().squeeze(1)


def _check_classes_present(
    dataset: ImageDataset, tasks: tuple[tuple[int, ...], ...]
) -> None:
    """Raise DataError if a class of some task has no training samples."""
    counts = torch.bincount(dataset.train_labels, minlength=dataset.num_classes)
    for t, classes in enumerate(tasks):
        absent = [c for c in classes if counts[c] == 0]
        if absent:
            raise DataError(
                f"Class(es) {absent} of task {t} have no training samples in "
                f"dataset {dataset.name!r}. Remove them from the task."
            )
