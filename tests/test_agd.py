"""Automatic gradient descent: hand-computed updates, initialisation, layer rules.

The tiny network has a convolution ``conv`` (2 outputs, 1 input, 2x2 kernel,
bias) and a linear layer ``fc`` (2 -> 1, bias), so ``L = 2`` weight tensors.
Its scales are ``s_conv = sqrt(2 / 1) / sqrt(2 * 2)`` and
``s_fc = sqrt(1 / 2)``. Every expected value below is written out from the
AGD equations with these numbers.
"""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch
from torch import nn

from subspace_diffusion.engine import Simulator
from subspace_diffusion.errors import ConfigError
from subspace_diffusion.models import ReferenceCNN, agd_initialise
from subspace_diffusion.step_rules import AutomaticGradientDescent, find_layers

NAMES = ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]
SHAPES = [
    torch.Size([2, 1, 2, 2]),
    torch.Size([2]),
    torch.Size([1, 2]),
    torch.Size([1]),
]
CONV, CONV_BIAS, FC, FC_BIAS = range(4)
S_CONV = math.sqrt(2 / 1) / math.sqrt(2 * 2)
S_FC = math.sqrt(1 / 2)

# Neighbourhood weights of the two agents in the agd-shared tests.
MIXING = [[0.75, 0.25], [0.25, 0.75]]

# Gradient of each (kh, kw) slice of conv.weight, a vector over the 2 outputs.
# Agent 0 slice norms: 5, 0, 1, 2 (Frobenius sqrt(30)).
# Agent 1 slice norms: 1, 10, 0, 2 (Frobenius sqrt(105)).
CONV_SLICES = [
    {(0, 0): [3.0, 4.0], (0, 1): [0.0, 0.0], (1, 0): [1.0, 0.0], (1, 1): [0.0, 2.0]},
    {(0, 0): [0.0, 1.0], (0, 1): [6.0, 8.0], (1, 0): [0.0, 0.0], (1, 1): [2.0, 0.0]},
]
CONV_BIAS_GRADIENTS = [[1.0, -1.0], [2.0, 0.0]]
FC_GRADIENTS = [[[6.0, 8.0]], [[0.0, 3.0]]]  # norms 10 and 3
FC_BIAS_GRADIENTS = [[5.0], [-3.0]]

# agd-local: G_k = (1 / L) (s_conv * sum of slice norms + s_fc * ||grad fc||).
G_LOCAL = [
    (1 / 2) * (S_CONV * (5 + 0 + 1 + 2) + S_FC * 10),
    (1 / 2) * (S_CONV * (1 + 10 + 0 + 2) + S_FC * 3),
]
ETA_LOCAL = [math.log((1 + math.sqrt(1 + 4 * g)) / 2) for g in G_LOCAL]

# agd-shared with conv shared and fc local: averaged conv slice norms are
# agent 0: 0.75 * [5, 0, 1, 2] + 0.25 * [1, 10, 0, 2] = [4, 2.5, 0.75, 2],
# agent 1: 0.25 * [5, 0, 1, 2] + 0.75 * [1, 10, 0, 2] = [2, 7.5, 0.25, 2].
G_SHARED = [
    (1 / 2) * (S_CONV * (4 + 2.5 + 0.75 + 2) + S_FC * 10),
    (1 / 2) * (S_CONV * (2 + 7.5 + 0.25 + 2) + S_FC * 3),
]
ETA_SHARED = [math.log((1 + math.sqrt(1 + 4 * g)) / 2) for g in G_SHARED]


class MatrixCombiner:
    """Combiner with one hand-chosen matrix for every non-local parameter."""

    def __init__(self, matrix, local_indices=()) -> None:
        self.matrix = torch.tensor(matrix, dtype=torch.float64)
        self.local_indices = set(local_indices)

    def is_local(self, index: int) -> bool:
        return index in self.local_indices

    def neighbour_average(self, values: torch.Tensor, index: int) -> torch.Tensor:
        if self.is_local(index):
            return values
        return self.matrix @ values

    def combine(self, tensors, operator):
        raise AssertionError("AGD must not combine iterates")


def conv_tensor(slices) -> torch.Tensor:
    """Build a ``(2, 1, 2, 2)`` tensor from its per-slice output vectors."""
    tensor = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    for (i, j), vector in slices.items():
        tensor[:, 0, i, j] = torch.tensor(vector, dtype=torch.float64)
    return tensor


def stacked_gradients() -> list[torch.Tensor]:
    """Return the hand-chosen gradients of both agents, stacked ``(2, ...)``."""
    return [
        torch.stack([conv_tensor(slices) for slices in CONV_SLICES]),
        torch.tensor(CONV_BIAS_GRADIENTS, dtype=torch.float64),
        torch.tensor(FC_GRADIENTS, dtype=torch.float64),
        torch.tensor(FC_BIAS_GRADIENTS, dtype=torch.float64),
    ]


def run_agd(grads, *, shared_norms, local_indices=(), gain=1.0, scale=1.0):
    rule = AutomaticGradientDescent(
        find_layers(NAMES, SHAPES), shared_norms=shared_norms, gain=gain
    )
    params = [torch.zeros_like(g) for g in grads]
    combiner = MatrixCombiner(MIXING, local_indices)
    increments = rule.increment(params, grads, combiner, scale)
    return rule, increments


def vector(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def assert_equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-15)


def test_find_layers_counts_weight_tensors():
    layers = find_layers(NAMES, SHAPES)
    assert len(layers) == 2
    assert [(layer.weight, layer.bias) for layer in layers] == [(0, 1), (2, 3)]
    assert layers[0].kernel_size == 4
    assert layers[0].scale == pytest.approx(S_CONV, rel=1e-15)
    assert layers[1].scale == pytest.approx(S_FC, rel=1e-15)


def test_agd_local_summary_and_eta():
    rule, _ = run_agd(stacked_gradients(), shared_norms=False)
    assert_equal(rule.last_gradient_summary, vector(G_LOCAL))
    assert_equal(rule.last_step_size, vector(ETA_LOCAL))


def test_agd_local_conv_slice_updates():
    _, increments = run_agd(stacked_gradients(), shared_norms=False)
    c0 = ETA_LOCAL[0] / 2 * S_CONV
    c1 = ETA_LOCAL[1] / 2 * S_CONV
    expected = torch.stack(
        [
            conv_tensor(
                {
                    (0, 0): [c0 * 3 / 5, c0 * 4 / 5],
                    (0, 1): [0.0, 0.0],  # zero slice gradient, zero update
                    (1, 0): [c0 * 1 / 1, 0.0],
                    (1, 1): [0.0, c0 * 2 / 2],
                }
            ),
            conv_tensor(
                {
                    (0, 0): [0.0, c1 * 1 / 1],
                    (0, 1): [c1 * 6 / 10, c1 * 8 / 10],
                    (1, 0): [0.0, 0.0],
                    (1, 1): [c1 * 2 / 2, 0.0],
                }
            ),
        ]
    )
    assert_equal(increments[CONV], expected)


def test_agd_local_linear_update():
    _, increments = run_agd(stacked_gradients(), shared_norms=False)
    c0 = ETA_LOCAL[0] / 2 * S_FC
    c1 = ETA_LOCAL[1] / 2 * S_FC
    expected = vector([[[c0 * 6 / 10, c0 * 8 / 10]], [[c1 * 0 / 3, c1 * 3 / 3]]])
    assert_equal(increments[FC], expected)


def test_agd_local_bias_updates():
    _, increments = run_agd(stacked_gradients(), shared_norms=False)
    c0 = ETA_LOCAL[0] / 2
    c1 = ETA_LOCAL[1] / 2
    # Each bias is divided by the Frobenius norm of its layer's whole weight.
    conv_bias = vector(
        [
            [c0 * S_CONV * 1 / math.sqrt(30), c0 * S_CONV * -1 / math.sqrt(30)],
            [c1 * S_CONV * 2 / math.sqrt(105), 0.0],
        ]
    )
    fc_bias = vector([[c0 * S_FC * 5 / 10], [c1 * S_FC * -3 / 3]])
    assert_equal(increments[CONV_BIAS], conv_bias)
    assert_equal(increments[FC_BIAS], fc_bias)


def test_agd_gain_multiplies_eta():
    _, plain = run_agd(stacked_gradients(), shared_norms=False)
    rule, doubled = run_agd(stacked_gradients(), shared_norms=False, gain=2.0)
    assert_equal(rule.last_step_size, vector([2 * ETA_LOCAL[0], 2 * ETA_LOCAL[1]]))
    for index in range(4):
        assert_equal(doubled[index], 2 * plain[index])


def test_agd_scale_divides_increment():
    _, plain = run_agd(stacked_gradients(), shared_norms=False)
    rule, halved = run_agd(stacked_gradients(), shared_norms=False, scale=0.5)
    assert_equal(rule.last_gradient_summary, vector(G_LOCAL))
    for index in range(4):
        assert_equal(halved[index], 0.5 * plain[index])


def test_agd_shared_summary_and_eta():
    rule, _ = run_agd(
        stacked_gradients(), shared_norms=True, local_indices=(FC, FC_BIAS)
    )
    assert_equal(rule.last_gradient_summary, vector(G_SHARED))
    assert_equal(rule.last_step_size, vector(ETA_SHARED))


def test_agd_shared_conv_uses_neighbour_norms():
    _, increments = run_agd(
        stacked_gradients(), shared_norms=True, local_indices=(FC, FC_BIAS)
    )
    c0 = ETA_SHARED[0] / 2 * S_CONV
    c1 = ETA_SHARED[1] / 2 * S_CONV
    # Averaged slice norms: agent 0 [4, 2.5, 0.75, 2], agent 1 [2, 7.5, 0.25, 2].
    expected = torch.stack(
        [
            conv_tensor(
                {
                    (0, 0): [c0 * 3 / 4, c0 * 4 / 4],
                    (0, 1): [0.0, 0.0],
                    (1, 0): [c0 * 1 / 0.75, 0.0],
                    (1, 1): [0.0, c0 * 2 / 2],
                }
            ),
            conv_tensor(
                {
                    (0, 0): [0.0, c1 * 1 / 2],
                    (0, 1): [c1 * 6 / 7.5, c1 * 8 / 7.5],
                    (1, 0): [0.0, 0.0],
                    (1, 1): [c1 * 2 / 2, 0.0],
                }
            ),
        ]
    )
    assert_equal(increments[CONV], expected)


def test_agd_shared_local_layer_own_norms():
    _, increments = run_agd(
        stacked_gradients(), shared_norms=True, local_indices=(FC, FC_BIAS)
    )
    c0 = ETA_SHARED[0] / 2 * S_FC
    c1 = ETA_SHARED[1] / 2 * S_FC
    # fc is local, so agent k divides by its own norm (10 and 3), not by the
    # neighbourhood average (0.75 * 10 + 0.25 * 3 = 8.25 for agent 0).
    weight = vector([[[c0 * 6 / 10, c0 * 8 / 10]], [[0.0, c1 * 3 / 3]]])
    bias = vector([[c0 * 5 / 10], [c1 * -3 / 3]])
    assert_equal(increments[FC], weight)
    assert_equal(increments[FC_BIAS], bias)


def test_agd_shared_conv_bias_norm():
    _, increments = run_agd(
        stacked_gradients(), shared_norms=True, local_indices=(FC, FC_BIAS)
    )
    # ||grad W_conv||_F is replaced by its neighbourhood average, like every
    # other norm of a shared layer.
    norm0 = 0.75 * math.sqrt(30) + 0.25 * math.sqrt(105)
    norm1 = 0.25 * math.sqrt(30) + 0.75 * math.sqrt(105)
    c0 = ETA_SHARED[0] / 2 * S_CONV
    c1 = ETA_SHARED[1] / 2 * S_CONV
    expected = vector([[c0 * 1 / norm0, c0 * -1 / norm0], [c1 * 2 / norm1, 0.0]])
    assert_equal(increments[CONV_BIAS], expected)


def test_agd_shared_without_local_groups():
    # Without local groups, fc's norms are averaged too: 8.25 and 4.75.
    rule, increments = run_agd(stacked_gradients(), shared_norms=True)
    g0 = (1 / 2) * (S_CONV * (4 + 2.5 + 0.75 + 2) + S_FC * (0.75 * 10 + 0.25 * 3))
    g1 = (1 / 2) * (S_CONV * (2 + 7.5 + 0.25 + 2) + S_FC * (0.25 * 10 + 0.75 * 3))
    eta0 = math.log((1 + math.sqrt(1 + 4 * g0)) / 2)
    eta1 = math.log((1 + math.sqrt(1 + 4 * g1)) / 2)
    weight = vector(
        [
            [[eta0 / 2 * S_FC * 6 / 8.25, eta0 / 2 * S_FC * 8 / 8.25]],
            [[0.0, eta1 / 2 * S_FC * 3 / 4.75]],
        ]
    )
    assert_equal(rule.last_gradient_summary, vector([g0, g1]))
    assert_equal(increments[FC], weight)


def test_agd_zero_gradients_zero_update():
    grads = [torch.zeros_like(g) for g in stacked_gradients()]
    for shared_norms in (False, True):
        rule, increments = run_agd(grads, shared_norms=shared_norms)
        assert_equal(rule.last_gradient_summary, vector([0.0, 0.0]))
        assert_equal(rule.last_step_size, vector([0.0, 0.0]))
        for increment in increments:
            assert bool(torch.isfinite(increment).all())
            assert not bool(increment.any())


def test_agd_zero_layer_zero_update():
    grads = stacked_gradients()
    grads[FC] = torch.zeros_like(grads[FC])
    grads[FC_BIAS] = torch.zeros_like(grads[FC_BIAS])
    rule, increments = run_agd(grads, shared_norms=False)
    g0 = (1 / 2) * (S_CONV * (5 + 0 + 1 + 2) + S_FC * 0)
    assert float(rule.last_gradient_summary[0]) == pytest.approx(g0, rel=1e-12)
    assert bool(torch.isfinite(increments[FC]).all())
    assert bool(torch.isfinite(increments[FC_BIAS]).all())
    assert not bool(increments[FC].any())
    assert not bool(increments[FC_BIAS].any())
    assert bool(increments[CONV].any())


def test_agd_shared_zero_own_gradient():
    # Agent 0's conv gradient is zero but agent 1's is not, so agent 0's
    # averaged norms are positive while its update must stay exactly zero.
    grads = stacked_gradients()
    grads[CONV][0] = 0.0
    grads[CONV_BIAS][0] = 0.0
    _, increments = run_agd(grads, shared_norms=True, local_indices=(FC, FC_BIAS))
    assert bool(torch.isfinite(increments[CONV]).all())
    assert bool(torch.isfinite(increments[CONV_BIAS]).all())
    assert not bool(increments[CONV][0].any())
    assert not bool(increments[CONV_BIAS][0].any())
    assert bool(increments[CONV][1].any())


def slice_matrices(weight: torch.Tensor) -> list[torch.Tensor]:
    """Return the ``out x in`` matrices of a linear weight or of each conv slice."""
    if weight.dim() == 2:
        return [weight]
    return [
        weight[:, :, i, j]
        for i in range(weight.shape[2])
        for j in range(weight.shape[3])
    ]


def assert_semi_orthogonal(weight: torch.Tensor, scale: float, rtol: float) -> None:
    for matrix in slice_matrices(weight):
        singular_values = torch.linalg.svdvals(matrix.double())
        assert len(singular_values) == min(matrix.shape)
        torch.testing.assert_close(
            singular_values,
            torch.full_like(singular_values, scale),
            rtol=rtol,
            atol=0.0,
        )


INITIALISED_LAYERS = [
    # (module, scale sqrt(out / in) / sqrt(kh kw))
    (nn.Conv2d(3, 5, (2, 3)), math.sqrt(5 / 3) / math.sqrt(2 * 3)),
    (nn.Conv2d(6, 2, 2), math.sqrt(2 / 6) / math.sqrt(2 * 2)),
    (nn.Conv2d(4, 4, 1), math.sqrt(4 / 4) / math.sqrt(1 * 1)),
    (nn.Linear(4, 7), math.sqrt(7 / 4)),
    (nn.Linear(7, 4, bias=False), math.sqrt(4 / 7)),
]


@pytest.mark.parametrize(
    ("layer", "scale"),
    INITIALISED_LAYERS,
    ids=["conv-3-5", "conv-6-2", "conv-1x1", "linear-4-7", "linear-7-4"],
)
def test_agd_initialise_semi_orthogonal_slices(layer, scale):
    module = nn.Sequential(layer).double()
    agd_initialise(module, torch.Generator().manual_seed(0))
    assert_semi_orthogonal(module[0].weight.detach(), scale, rtol=1e-12)


def test_agd_initialise_slices_differ():
    module = nn.Sequential(nn.Conv2d(3, 5, 2)).double()
    agd_initialise(module, torch.Generator().manual_seed(0))
    slices = slice_matrices(module[0].weight.detach())
    for i in range(len(slices)):
        for j in range(i + 1, len(slices)):
            assert not torch.allclose(slices[i], slices[j])


def test_agd_initialise_zeroes_biases():
    module = nn.Sequential(nn.Conv2d(3, 5, 2), nn.Flatten(), nn.Linear(5, 2))
    agd_initialise(module, torch.Generator().manual_seed(0))
    assert not bool(module[0].bias.any())
    assert not bool(module[2].bias.any())


def make_cnn_simulator(step_rule: str) -> Simulator:
    generator = torch.Generator().manual_seed(3)
    shards = [
        (torch.randn(16, 1, 8, 8, generator=generator), torch.randint(0, 3, (16,)))
        for _ in range(4)
    ]
    return Simulator(
        ReferenceCNN(1, (8, 8), 3),
        shards,
        nx.cycle_graph(4),
        {"trunk.*": "shared", "head.*": "local"},
        strategy="exact",
        step_rule=step_rule,
        step_size=0.1 if step_rule == "constant" else None,
        batch_size=8,
        dtype=torch.float64,
    )


# Weights of the reference CNN on 1x8x8 inputs and their AGD scales.
CNN_WEIGHT_SCALES = {
    "trunk.0.weight": math.sqrt(16 / 1) / math.sqrt(3 * 3),
    "trunk.3.weight": math.sqrt(32 / 16) / math.sqrt(3 * 3),
    "head.0.weight": math.sqrt(64 / 32) / math.sqrt(1 * 1),
    "head.4.weight": math.sqrt(3 / 64),
}
CNN_BIASES = ("trunk.0.bias", "trunk.3.bias", "head.0.bias", "head.4.bias")


@pytest.mark.parametrize("step_rule", ["agd-local", "agd-shared"])
def test_simulator_starts_from_agd_init(step_rule):
    simulator = make_cnn_simulator(step_rule)
    params = dict(zip(simulator.names, simulator.params, strict=True))
    for name, scale in CNN_WEIGHT_SCALES.items():
        for agent in range(simulator.num_agents):
            # The template model is float32, so the draws carry float32 rounding.
            assert_semi_orthogonal(params[name][agent], scale, rtol=1e-5)
    for name in CNN_BIASES:
        assert not bool(params[name].any()), f"{name} is not zero"


def test_constant_rule_keeps_default_init():
    # Shows that the semi-orthogonality check above can fail: PyTorch's
    # default initialisation gives spread singular values and nonzero biases.
    simulator = make_cnn_simulator("constant")
    params = dict(zip(simulator.names, simulator.params, strict=True))
    singular_values = torch.linalg.svdvals(params["trunk.3.weight"][0, :, :, 0, 0])
    assert float(singular_values.max() / singular_values.min()) > 1.5
    assert bool(params["trunk.0.bias"].any())


def test_find_layers_rejects_layer_norm():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    with pytest.raises(ConfigError) as error:
        find_layers(names, shapes)
    message = str(error.value)
    assert "'1.weight'" in message
    assert "(4,)" in message
    assert "constant" in message


def test_simulator_rejects_layer_norm_agd():
    model = nn.Sequential()
    model.add_module(
        "trunk", nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.LayerNorm(4))
    )
    model.add_module("head", nn.Linear(4, 2))
    shards = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    with pytest.raises(ConfigError, match="trunk.2.weight"):
        Simulator(
            model,
            shards,
            nx.path_graph(3),
            {"trunk.*": "shared", "head.*": "local"},
            step_rule="agd-local",
            batch_size=4,
        )


def test_agree_averages_gradient_summary():
    from subspace_diffusion.step_rules import AutomaticGradientDescent, find_layers

    class Combiner:
        matrix = torch.tensor([[0.75, 0.25], [0.25, 0.75]], dtype=torch.float64)

        def is_local(self, index):
            return False

        def neighbour_average(self, values, index):
            return self.matrix @ values

    names = ["fc.weight"]
    layers = find_layers(names, [torch.Size([1, 1])])
    grads = [torch.tensor([[[4.0]], [[0.0]]], dtype=torch.float64)]
    rule = AutomaticGradientDescent(layers, shared_norms=False, agree=True)
    rule.increment(grads, grads, Combiner())
    # Own G: 4 and 0; averaged: 0.75 * 4 = 3 and 0.25 * 4 = 1.
    expected = [math.log((1 + math.sqrt(1 + 4 * g)) / 2) for g in (3.0, 1.0)]
    assert rule.last_step_size[0].item() == pytest.approx(expected[0])
    assert rule.last_step_size[1].item() == pytest.approx(expected[1])
