"""Simulator pieces checked against direct computations."""

import math

import networkx as nx
import pytest
import torch
from torch import nn

from subspace_diffusion.engine import BatchSampler, Simulator
from subspace_diffusion.errors import ConfigError, DivergenceError
from subspace_diffusion.models import MLP, ReferenceCNN

SHARING = {"trunk.*": "shared", "head.*": "local"}


def make_shards(num_agents, samples=64, features=16, classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(samples, features, generator=generator),
            torch.randint(0, classes, (samples,), generator=generator),
        )
        for _ in range(num_agents)
    ]


def make_simulator(strategy="exact", step_rule="agd-shared", **options):
    model = MLP(16, (8,), 3)
    return Simulator(
        model,
        make_shards(4),
        nx.cycle_graph(4),
        SHARING,
        strategy=strategy,
        step_rule=step_rule,
        batch_size=8,
        **options,
    )


def test_bytes_sent_exact_agd_shared():
    simulator = make_simulator()
    # Trunk: 16*8 weights + 8 biases, plus one AGD norm; two ring neighbours.
    expected = (16 * 8 + 8 + 1) * 4 * 2
    assert simulator.bytes_per_step.tolist() == [expected] * 4


def test_bytes_sent_centralized_constant():
    simulator = make_simulator("centralized", "constant", step_size=0.1)
    assert simulator.bytes_per_step.tolist() == [(16 * 8 + 8) * 4] * 4


def test_bytes_sent_noncooperative_zero():
    simulator = make_simulator("noncooperative")
    assert simulator.bytes_per_step.tolist() == [0.0] * 4


def test_shared_groups_start_in_consensus():
    simulator = make_simulator()
    for name, tensor in zip(simulator.names, simulator.params):
        spread = (tensor - tensor[0]).abs().max()
        if name.startswith("trunk"):
            assert spread == 0, name
        elif name.endswith("weight"):
            assert spread > 0, name


def test_sampler_stays_in_own_shard():
    shards = [
        (torch.full((10 + k, 1), float(k)), torch.full((10 + k,), k)) for k in range(3)
    ]
    sampler = BatchSampler(
        shards, 4, torch.Generator().manual_seed(0), "cpu", torch.float32
    )
    for _ in range(7):
        images, labels = sampler.next()
        for k in range(3):
            assert bool((images[k] == k).all())
            assert bool((labels[k] == k).all())


def test_sampler_epoch_without_repeats():
    shards = [
        (torch.arange(12.0).reshape(12, 1) + 100 * k, torch.zeros(12)) for k in range(2)
    ]
    sampler = BatchSampler(
        shards, 4, torch.Generator().manual_seed(1), "cpu", torch.float32
    )
    seen = torch.cat([sampler.next()[0] for _ in range(3)], dim=1)
    for k in range(2):
        values = sorted(seen[k].flatten().tolist())
        assert values == [100.0 * k + i for i in range(12)]


def test_evaluate_matches_per_agent_loop():
    simulator = make_simulator()
    test_sets = make_shards(2, samples=30, seed=5)
    agent_task = [0, 1, 0, 1]
    loss, accuracy = simulator.evaluate(test_sets, agent_task, chunk=7)
    for k in range(4):
        module = simulator.agent_module(k)
        images, labels = test_sets[agent_task[k]]
        with torch.no_grad():
            logits = module(images)
        expected_loss = nn.functional.cross_entropy(logits, labels).item()
        expected_accuracy = (logits.argmax(1) == labels).double().mean().item()
        assert math.isclose(loss[k].item(), expected_loss, rel_tol=1e-5)
        assert math.isclose(accuracy[k].item(), expected_accuracy, rel_tol=1e-12)


def test_class_mask_hides_missing_classes():
    model = MLP(16, (8,), 3)
    shards = make_shards(2, classes=2)
    simulator = Simulator(
        model, shards, nx.path_graph(2), SHARING, num_classes=[2, 3], batch_size=8
    )
    logits = simulator.logits(simulator.params, torch.randn(2, 5, 16))
    assert bool(torch.isinf(logits[0, :, 2]).all())
    assert bool(torch.isfinite(logits[1]).all())


def test_divergence_raises_clear_error():
    simulator = make_simulator("exact", "constant", step_size=1e6)
    with pytest.raises(DivergenceError, match="Lower the step size"):
        for _ in range(50):
            simulator.step()


def test_subspace_distance_matches_definition():
    simulator = make_simulator()
    for _ in range(3):
        simulator.step()
    distance = simulator.subspace_distance()
    for k in range(4):
        total = 0.0
        for name, tensor in zip(simulator.names, simulator.params):
            if name.startswith("trunk"):
                total += (tensor[k] - tensor.mean(dim=0)).pow(2).sum().item()
        assert math.isclose(distance[k].item(), math.sqrt(total), rel_tol=1e-4)


def test_shard_count_mismatch_rejected():
    with pytest.raises(ConfigError, match="3 agents"):
        Simulator(MLP(16, (8,), 3), make_shards(3), nx.cycle_graph(4), SHARING)


def test_batch_larger_than_shard_rejected():
    with pytest.raises(ConfigError, match="batch size"):
        Simulator(
            MLP(16, (8,), 3), make_shards(4, samples=5), nx.cycle_graph(4), SHARING
        )


def test_cnn_trains_on_tiny_images():
    generator = torch.Generator().manual_seed(0)
    shards = [
        (torch.randn(40, 1, 8, 8, generator=generator), torch.randint(0, 2, (40,)))
        for _ in range(3)
    ]
    simulator = Simulator(
        ReferenceCNN(1, (8, 8), 2), shards, nx.cycle_graph(3), SHARING, batch_size=8
    )
    first = simulator.step()
    assert first.shape == (3,)
    assert bool(torch.isfinite(first).all())


def test_same_seed_same_iterates():
    first = make_simulator(seed=3)
    second = make_simulator(seed=3)
    for _ in range(3):
        first.step()
        second.step()
    for a, b in zip(first.params, second.params):
        assert torch.equal(a, b)


def test_different_seed_different_iterates():
    first = make_simulator(seed=3)
    second = make_simulator(seed=4)
    first.step()
    second.step()
    assert not torch.equal(first.params[0], second.params[0])


def test_noncooperative_agd_shared_uses_own_norms():
    local = make_simulator("noncooperative", "agd-local", seed=2)
    shared = make_simulator("noncooperative", "agd-shared", seed=2)
    for _ in range(3):
        local.step()
        shared.step()
    for a, b in zip(local.params, shared.params):
        assert torch.equal(a, b)


def test_bytes_sent_centralized_counts_norms():
    simulator = make_simulator("centralized", "agd-shared")
    assert simulator.bytes_per_step.tolist() == [(16 * 8 + 8 + 1) * 4] * 4


def test_batch_norm_buffers_rejected():
    model = nn.Sequential()
    model.add_module("trunk", nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8)))
    model.add_module("head", nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="running"):
        Simulator(model, make_shards(4), nx.cycle_graph(4), SHARING, batch_size=8)


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        return self.head(self.dropout(torch.relu(self.trunk(x))))


def test_dropout_model_trains():
    simulator = Simulator(
        DropoutNet(),
        make_shards(4),
        nx.cycle_graph(4),
        SHARING,
        step_rule="constant",
        step_size=0.1,
        batch_size=8,
    )
    losses = simulator.step()
    assert bool(torch.isfinite(losses).all())
