"""The stacked simulator against the per-agent reference, step by step.

Both start from the simulator's initial parameters and see the same
minibatches (the simulator's sampler is wrapped to record them), in float64.
Every strategy, step rule, number of local steps and forward path must give
the same iterates as the slow loops of ``reference.py`` up to rounding.
"""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
import torch
from reference import STEP_RULES, STRATEGIES, ReferenceNetwork
from torch import nn

from subspace_diffusion.engine import Simulator
from subspace_diffusion.models import MLP, ReferenceCNN

NUM_EXCHANGES = 3
SAMPLES_PER_AGENT = 48
BATCH_SIZE = 6
NUM_CLASSES = 3
STEP_SIZE = 0.1
TOLERANCE = 1e-10

TRUNK_AND_HEAD = {"trunk.*": "shared", "head.*": "local"}
CLUSTERED_CNN = {
    "trunk.0.*": "shared",
    "trunk.3.*": {"kind": "clustered", "clusters": [0, 0, 1, 1]},
    "head.*": "local",
}
CLUSTERED_MLP = {
    "trunk.1.*": "shared",
    "trunk.3.*": {"kind": "clustered", "clusters": [0, 0, 1, 1]},
    "head.*": "local",
}


class ResidualBlock(nn.Module):
    """A 1x1 expansion and a 3x3 convolution added back through a skip path."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(1, 3, 1)
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.expand(x))
        return h + torch.relu(self.conv(h))


class ResidualNet(nn.Module):
    """User-defined network that is not a ``Sequential``, so it needs vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = ResidualBlock()
        self.head = nn.Linear(3 * 4 * 4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x).flatten(1))


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run on one intra-op thread, restoring the setting afterwards.

    The tensors here are tiny, so extra threads only add synchronisation. With
    two threads on a loaded two-core machine this file ran about ten times
    slower than with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ring(num_agents: int) -> nx.Graph:
    return nx.cycle_graph(num_agents)


def path(num_agents: int) -> nx.Graph:
    return nx.path_graph(num_agents)


# name: (model factory, image shape, graph, sharing, forward paths)
CASES = {
    "cnn-ring5": (
        lambda: ReferenceCNN(1, (8, 8), NUM_CLASSES),
        (1, 8, 8),
        ring(5),
        TRUNK_AND_HEAD,
        ("batched", "vmap"),
    ),
    "cnn-clustered": (
        lambda: ReferenceCNN(1, (8, 8), NUM_CLASSES),
        (1, 8, 8),
        ring(4),
        CLUSTERED_CNN,
        ("batched", "vmap"),
    ),
    "mlp-clustered": (
        lambda: MLP(16, hidden=(8, 6), num_outputs=NUM_CLASSES, bias=True),
        (1, 4, 4),
        path(4),
        CLUSTERED_MLP,
        ("batched", "vmap"),
    ),
    "residual-path3": (
        ResidualNet,
        (1, 4, 4),
        path(3),
        TRUNK_AND_HEAD,
        ("vmap",),
    ),
}



def engine_cases():
    for case, (_, _, _, _, paths) in CASES.items():
        combinations = itertools.product(paths, STRATEGIES, STEP_RULES, (1, 2))
        for forward_path, strategy, step_rule, local_steps in combinations:
            yield pytest.param(
                case,
                forward_path,
                strategy,
                step_rule,
                local_steps,
                id=f"{case}-{forward_path}-{strategy}-{step_rule}-E{local_steps}",
            )


def make_shards(num_agents: int, image_shape, seed: int):
    generator = torch.Generator().manual_seed(seed)
    shards = []
    for _ in range(num_agents):
        images = torch.randn(SAMPLES_PER_AGENT, *image_shape, generator=generator)
        labels = torch.randint(
            0, NUM_CLASSES, (SAMPLES_PER_AGENT,), generator=generator
        )
        shards.append((images, labels))
    return shards


def record_batches(simulator: Simulator) -> list:
    """Wrap the simulator's sampler so every minibatch it returns is kept."""
    recorded = []
    draw = simulator.sampler.next

    def recording_next():
        batch = draw()
        recorded.append(batch)
        return batch

    simulator.sampler.next = recording_next
    return recorded


def max_difference(left, right) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(left, right, strict=True))


@pytest.mark.parametrize(
    ("case", "forward_path", "strategy", "step_rule", "local_steps"),
    list(engine_cases()),
)
def test_engine_matches_reference(case, forward_path, strategy, step_rule, local_steps):
    factory, image_shape, graph, sharing, _ = CASES[case]
    torch.manual_seed(0)
    model = factory()
    num_agents = graph.number_of_nodes()
    step_size = STEP_SIZE if step_rule == "constant" else None
    simulator = Simulator(
        model,
        make_shards(num_agents, image_shape, seed=1),
        graph,
        sharing,
        strategy=strategy,
        step_rule=step_rule,
        step_size=step_size,
        batch_size=BATCH_SIZE,
        local_steps=local_steps,
        seed=2,
        dtype=torch.float64,
        forward_path=forward_path,
    )
    initial = [p.clone() for p in simulator.params]
    reference = ReferenceNetwork(
        model,
        initial,
        graph,
        sharing,
        strategy=strategy,
        step_rule=step_rule,
        step_size=step_size,
        local_steps=local_steps,
    )
    recorded = record_batches(simulator)

    differences = []
    for _ in range(NUM_EXCHANGES):
        start = len(recorded)
        simulator.step()
        batches = recorded[start:]
        assert len(batches) == local_steps
        reference.step(batches)
        differences.append(max_difference(simulator.params, reference.stacked()))

    moved = max_difference(simulator.params, initial)
    assert moved > 1e-3, (
        f"the iterates barely moved ({moved:.3g}), so nothing is tested"
    )
    assert max(differences) < TOLERANCE, (
        f"engine and reference differ by {differences} after each of "
        f"{NUM_EXCHANGES} exchanges"
    )
