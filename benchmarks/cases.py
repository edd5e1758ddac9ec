"""Benchmark cases: the models, random per-agent data and the simulators.

The data is random (normal images, uniform labels) because step time does
not depend on the values. Each agent has four minibatches, so the sampler
also reshuffles inside the timed steps, as it does in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from torch import nn

from subspace_diffusion.engine import Simulator
from subspace_diffusion.models import MLP, ReferenceCNN

SHARING = {"trunk.*": "shared", "head.*": "local"}
CONSTANT_STEP_SIZE = 0.01
BATCHES_PER_SHARD = 4


@dataclass(frozen=True)
class ModelCase:
    """A benchmarked network and the shape of its inputs."""

    name: str
    description: str
    input_shape: tuple[int, ...]
    num_outputs: int

    def build(self) -> nn.Module:
        """Return a new instance of the network."""
        if self.name == "cnn":
            return ReferenceCNN(
                self.input_shape[0], self.input_shape[1:], self.num_outputs
            )
        if self.name == "mlp":
            return MLP(784, (256, 256), self.num_outputs, bias=False)
        raise ValueError(f"Unknown benchmark model {self.name!r}; use cnn or mlp.")


MODEL_CASES = {
    "cnn": ModelCase("cnn", "reference CNN, 1x16x16 inputs, 5 outputs", (1, 16, 16), 5),
    "mlp": ModelCase("mlp", "MLP 784-256-256-10, no biases", (1, 28, 28), 10),
}


def make_graph(topology: str, num_agents: int) -> nx.Graph:
    """Return the ring or complete graph on ``num_agents`` agents."""
    if topology == "ring":
        return nx.cycle_graph(num_agents)
    if topology == "complete":
        return nx.complete_graph(num_agents)
    raise ValueError(f"Unknown benchmark topology {topology!r}; use ring or complete.")


def make_shards(case: ModelCase, num_agents: int, batch_size: int, seed: int = 0):
    """Return one random ``(images, labels)`` shard per agent."""
    generator = torch.Generator().manual_seed(seed)
    samples = BATCHES_PER_SHARD * batch_size
    shards = []
    for _ in range(num_agents):
        images = torch.randn(samples, *case.input_shape, generator=generator)
        labels = torch.randint(0, case.num_outputs, (samples,), generator=generator)
        shards.append((images, labels))
    return shards


def build_simulator(
    case: ModelCase,
    num_agents: int,
    step_rule: str,
    *,
    batch_size: int = 32,
    topology: str = "ring",
    device="cpu",
    dtype=torch.float32,
    seed: int = 0,
) -> Simulator:
    """Return an exact-diffusion simulator of ``case`` with the given step rule."""
    step_size = CONSTANT_STEP_SIZE if step_rule == "constant" else None
    return Simulator(
        case.build(),
        make_shards(case, num_agents, batch_size, seed),
        make_graph(topology, num_agents),
        SHARING,
        strategy="exact",
        step_rule=step_rule,
        step_size=step_size,
        batch_size=batch_size,
        seed=seed,
        device=device,
        dtype=dtype,
    )


def parameter_bytes(case: ModelCase) -> tuple[int, int]:
    """Return the bytes of one agent's shared and local float32 parameters."""
    shared = local = 0
    for name, parameter in case.build().named_parameters():
        size = parameter.numel() * parameter.element_size()
        if name.startswith("trunk."):
            shared += size
        else:
            local += size
    return shared, local
