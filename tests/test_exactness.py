"""Exact subspace diffusion reaches the constrained optimum; approximate does not.

A multi-task least-squares problem on a ring: every agent fits its own linear
model, whose first coefficients (the trunk) must agree across the network and
whose last coefficients (the head) are local. With full-batch (exact)
gradients, the constrained optimum is one ordinary least-squares problem over
the common trunk and all heads, solved here with numpy independently of the
library.
"""

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

from subspace_diffusion.engine import Simulator

NUM_AGENTS = 5
TRUNK = 3
HEAD = 2
SAMPLES = 40


class LinearModel(nn.Module):
    """Prediction ``x[:, :3] @ trunk.w + x[:, 3:] @ head.w``."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Module()
        self.trunk.w = nn.Parameter(torch.zeros(TRUNK, dtype=torch.float64))
        self.head = nn.Module()
        self.head.w = nn.Parameter(torch.zeros(HEAD, dtype=torch.float64))

    def forward(self, x):
        return x[:, :TRUNK] @ self.trunk.w + x[:, TRUNK:] @ self.head.w


def half_mean_square(outputs, targets):
    return 0.5 * (outputs - targets).pow(2).mean(dim=1)


def make_problem(seed: int = 0):
    generator = np.random.default_rng(seed)
    shards = []
    for _ in range(NUM_AGENTS):
        features = generator.normal(size=(SAMPLES, TRUNK + HEAD))
        # Each agent has its own true trunk, so the agents disagree.
        truth = generator.normal(size=TRUNK + HEAD)
        targets = features @ truth + 0.1 * generator.normal(size=SAMPLES)
        shards.append((torch.tensor(features), torch.tensor(targets)))
    return shards


def constrained_solution(shards) -> np.ndarray:
    """Least squares over (common trunk, head_1, ..., head_K), as a (K, 5) array."""
    columns = TRUNK + HEAD * NUM_AGENTS
    rows = []
    targets = []
    for k, (features, y) in enumerate(shards):
        block = np.zeros((SAMPLES, columns))
        block[:, :TRUNK] = features[:, :TRUNK].numpy()
        block[:, TRUNK + HEAD * k : TRUNK + HEAD * (k + 1)] = features[
            :, TRUNK:
        ].numpy()
        rows.append(block)
        targets.append(y.numpy())
    solution, *_ = np.linalg.lstsq(np.vstack(rows), np.concatenate(targets), rcond=None)
    trunk = solution[:TRUNK]
    heads = solution[TRUNK:].reshape(NUM_AGENTS, HEAD)
    return np.hstack([np.tile(trunk, (NUM_AGENTS, 1)), heads])


def run_strategy(strategy: str, shards, steps: int, step_size: float) -> np.ndarray:
    simulator = Simulator(
        LinearModel(),
        shards,
        nx.cycle_graph(NUM_AGENTS),
        {"trunk.*": "shared", "head.*": "local"},
        strategy=strategy,
        step_rule="constant",
        step_size=step_size,
        batch_size=SAMPLES,
        dtype=torch.float64,
        loss_function=half_mean_square,
    )
    for _ in range(steps):
        simulator.step()
    trunk, head = simulator.params
    return torch.cat([trunk, head], dim=1).numpy()


@pytest.fixture(scope="module")
def problem():
    shards = make_problem()
    return shards, constrained_solution(shards)


def relative_error(estimate, reference) -> float:
    return float(np.linalg.norm(estimate - reference) / np.linalg.norm(reference))


def test_exact_diffusion_reaches_optimum(problem):
    shards, optimum = problem
    estimate = run_strategy("exact", shards, steps=3000, step_size=0.2)
    assert relative_error(estimate, optimum) < 1e-8


def test_exact_diffusion_trunks_agree(problem):
    shards, _ = problem
    estimate = run_strategy("exact", shards, steps=3000, step_size=0.2)
    spread = np.abs(estimate[:, :TRUNK] - estimate[0, :TRUNK]).max()
    assert spread < 1e-8


def test_approximate_projection_stays_biased(problem):
    shards, optimum = problem
    estimate = run_strategy("approximate", shards, steps=3000, step_size=0.2)
    assert relative_error(estimate, optimum) > 1e-4


def test_approximate_bias_shrinks_with_step(problem):
    shards, optimum = problem
    large = relative_error(run_strategy("approximate", shards, 3000, 0.2), optimum)
    small = relative_error(run_strategy("approximate", shards, 6000, 0.05), optimum)
    assert small < large / 2


def test_centralized_projection_reaches_optimum(problem):
    shards, optimum = problem
    estimate = run_strategy("centralized", shards, steps=3000, step_size=0.2)
    assert relative_error(estimate, optimum) < 1e-8
