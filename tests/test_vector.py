"""Vector-problem executor and regression data model against closed forms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from subspace_diffusion.combination import design_combination_matrix
from subspace_diffusion.errors import (
    ConfigError,
    DivergenceError,
    InvalidCombinationMatrixError,
)
from subspace_diffusion.graphs import make_graph
from subspace_diffusion.strategies import make_strategy
from subspace_diffusion.subspaces import (
    VectorSubspace,
    clustered_subspace,
    local_subspace,
    shared_subspace,
    vector_subspace,
)
from subspace_diffusion.theory import approximate_fixed_point, mse_noise_covariance
from subspace_diffusion.vector import (
    VectorCombiner,
    make_regression_problem,
    simulate,
)


def clustered_network(num_agents=6, size=2, heterogeneity=1.0, seed=0):
    graph = make_graph("ring", num_agents)
    labels = [0] * (num_agents // 2) + [1] * (num_agents - num_agents // 2)
    subspace = VectorSubspace.from_agent_subspace(clustered_subspace(labels), size)
    matrix, _ = design_combination_matrix(subspace, graph)
    problem = make_regression_problem(
        subspace, heterogeneity=heterogeneity, covariances="random", seed=seed
    )
    return problem, matrix


def nonsymmetric_consensus_matrix(num_agents, size):
    """Doubly stochastic circulant on a ring: 0.5 I + 0.3 shift + 0.2 shift^-1."""
    shift = np.roll(np.eye(num_agents), 1, axis=1)
    agent_matrix = 0.5 * np.eye(num_agents) + 0.3 * shift + 0.2 * shift.T
    return np.kron(agent_matrix, np.eye(size))


def test_centralized_converges_to_constrained_solution():
    problem, _ = clustered_network()
    result = simulate(problem, "centralized", 0.2, 400)
    error = np.max(np.abs(result.final[:, 0] - problem.constrained_solution))
    assert error < 1e-10
    assert result.msd[-1] < 1e-20


def test_noncooperative_converges_to_local_minimisers():
    problem, _ = clustered_network()
    result = simulate(problem, "noncooperative", 0.2, 400, reference=problem.optimum)
    error = np.max(np.abs(result.final[:, 0] - problem.optimum))
    assert error < 1e-10
    assert result.msd[-1] < 1e-20


def test_exact_diffusion_converges_to_constrained_solution():
    problem, matrix = clustered_network()
    result = simulate(problem, "exact", 0.1, 2000, combination_matrix=matrix)
    error = np.max(np.abs(result.final[:, 0] - problem.constrained_solution))
    assert error < 1e-10


def test_approximate_converges_to_its_fixed_point():
    problem, matrix = clustered_network()
    mu = 0.1
    result = simulate(problem, "approximate", mu, 2000, combination_matrix=matrix)
    fixed_point = approximate_fixed_point(matrix, problem.hessian, problem.optimum, mu)
    assert np.max(np.abs(result.final[:, 0] - fixed_point)) < 1e-10
    # The fixed point is biased: it is not the constrained solution.
    assert np.max(np.abs(fixed_point - problem.constrained_solution)) > 1e-3


def test_exact_rejects_nonsymmetric_matrix():
    problem = make_regression_problem(
        VectorSubspace.from_agent_subspace(shared_subspace(5), 2), seed=1
    )
    matrix = nonsymmetric_consensus_matrix(5, 2)
    with pytest.raises(InvalidCombinationMatrixError, match="symmetric"):
        simulate(problem, "exact", 0.05, 10, combination_matrix=matrix)


def test_approximate_accepts_nonsymmetric_matrix():
    problem = make_regression_problem(
        VectorSubspace.from_agent_subspace(shared_subspace(5), 2), seed=1
    )
    matrix = nonsymmetric_consensus_matrix(5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = simulate(problem, "approximate", 0.05, 10, combination_matrix=matrix)
    assert np.all(np.isfinite(result.msd))


def test_averaging_weights_warn_and_reject():
    graph = make_graph("star", 5)
    subspace = VectorSubspace.from_agent_subspace(shared_subspace(5), 2)
    with pytest.warns(UserWarning, match="row stochastic"):
        matrix, _ = design_combination_matrix(subspace, graph, weights="averaging")
    problem = make_regression_problem(subspace, seed=2)
    with pytest.warns(UserWarning, match="U\\^T A = U\\^T"):
        simulate(problem, "approximate", 0.05, 10, combination_matrix=matrix)
    with pytest.raises(InvalidCombinationMatrixError, match="symmetric"):
        simulate(problem, "exact", 0.05, 10, combination_matrix=matrix)


def test_missing_matrix_is_config_error():
    problem, _ = clustered_network()
    with pytest.raises(ConfigError, match="combination matrix"):
        simulate(problem, "approximate", 0.05, 10)


def test_matrix_breaking_subspace_rejected():
    problem, matrix = clustered_network()
    broken = matrix.copy()
    broken[0, 0] += 0.1
    broken[1, 1] -= 0.1
    with pytest.raises(InvalidCombinationMatrixError, match="A U = U"):
        simulate(problem, "approximate", 0.05, 10, combination_matrix=broken)


def test_large_step_raises_divergence():
    problem, matrix = clustered_network()
    with pytest.raises(DivergenceError, match="smaller step size"):
        simulate(problem, "exact", 5.0, 400, combination_matrix=matrix)


def test_mixed_agent_sizes_converge():
    graph = make_graph("ring", 4)
    basis = np.random.default_rng(0).standard_normal((8, 1))
    subspace = vector_subspace(basis, (1, 2, 3, 2))
    matrix, _ = design_combination_matrix(subspace, graph)
    problem = make_regression_problem(subspace, covariances="random", seed=3)
    solution = problem.constrained_solution
    result = simulate(problem, "exact", 0.2, 3000, combination_matrix=matrix)
    assert np.max(np.abs(result.final[:, 0] - solution)) < 1e-9
    # W° lies in range(U) and is the weighted projection of W*.
    assert np.allclose(subspace.projector @ solution, solution, atol=1e-12)


def test_combiner_operators_match_numpy():
    problem, matrix = clustered_network()
    combiner = VectorCombiner(matrix, problem.subspace.projector)
    values = torch.randn(problem.size, 3, dtype=torch.float64)
    expected = {
        "A": matrix,
        "A_bar": 0.5 * (np.eye(problem.size) + matrix),
        "P": problem.subspace.projector,
    }
    for operator, reference in expected.items():
        (combined,) = combiner.combine([values], operator)
        np.testing.assert_allclose(combined.numpy(), reference @ values.numpy())
    assert not combiner.is_local(0)


def test_combiner_local_subspace_is_identity():
    subspace = VectorSubspace.from_agent_subspace(local_subspace(3), 2)
    combiner = VectorCombiner(np.eye(6), subspace.projector)
    values = torch.randn(6, 4, dtype=torch.float64)
    (combined,) = combiner.combine([values], "A_bar")
    assert combiner.is_local(0)
    assert combined is values


def test_sampled_gradient_moments_match_model():
    problem, _ = clustered_network(num_agents=3, size=2)
    point = problem.constrained_solution
    samples = 200_000
    generator = torch.Generator().manual_seed(0)
    oracle = problem.gradient_oracle("sampled", generator)
    params = torch.as_tensor(point)[:, None].repeat(1, samples)
    (grads,) = oracle([params])
    grads = grads.numpy()

    mean = grads.mean(axis=1)
    expected_mean = problem.hessian @ (point - problem.optimum)
    noise = grads - mean[:, None]
    covariance = noise @ noise.T / (samples - 1)
    expected_covariance = mse_noise_covariance(
        problem.covariances, problem.noise_std**2, point - problem.optimum
    )
    scale = np.max(np.abs(expected_covariance))
    assert np.max(np.abs(mean - expected_mean)) < 0.02 * np.sqrt(scale)
    assert np.max(np.abs(covariance - expected_covariance)) < 0.03 * scale


def test_additive_noise_has_requested_std():
    problem, _ = clustered_network()
    generator = torch.Generator().manual_seed(0)
    oracle = problem.gradient_oracle("additive", generator, gradient_noise_std=0.3)
    params = torch.zeros(problem.size, 50_000, dtype=torch.float64)
    (grads,) = oracle([params])
    exact = problem.hessian @ (-problem.optimum)
    noise = grads.numpy() - exact[:, None]
    assert abs(noise.mean()) < 0.01
    assert abs(noise.std() - 0.3) < 0.005


def test_zero_heterogeneity_puts_optimum_in_subspace():
    problem, _ = clustered_network(heterogeneity=0.0)
    projector = problem.subspace.projector
    assert np.allclose(projector @ problem.optimum, problem.optimum, atol=1e-12)
    assert np.allclose(problem.constrained_solution, problem.optimum, atol=1e-12)


def test_heterogeneity_scales_outside_component():
    subspace = VectorSubspace.from_agent_subspace(shared_subspace(4), 2)
    projector = subspace.projector
    outside = []
    for heterogeneity in (1.0, 3.0):
        problem = make_regression_problem(subspace, heterogeneity=heterogeneity, seed=5)
        outside.append(np.linalg.norm(problem.optimum - projector @ problem.optimum))
    assert outside[0] > 0
    assert outside[1] == pytest.approx(3.0 * outside[0])


def test_problem_is_seeded():
    subspace = VectorSubspace.from_agent_subspace(shared_subspace(4), 2)
    first = make_regression_problem(subspace, covariances="random", seed=7)
    second = make_regression_problem(subspace, covariances="random", seed=7)
    other = make_regression_problem(subspace, covariances="random", seed=8)
    assert np.array_equal(first.optimum, second.optimum)
    assert np.array_equal(first.hessian, second.hessian)
    assert not np.array_equal(first.optimum, other.optimum)


def test_simulation_is_seeded():
    problem, matrix = clustered_network()
    runs = [
        simulate(
            problem,
            "exact",
            0.05,
            50,
            repetitions=4,
            seed=seed,
            combination_matrix=matrix,
            gradient="sampled",
        ).msd
        for seed in (1, 1, 2)
    ]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_strategy_instance_matches_name():
    problem, matrix = clustered_network()
    options = {
        "repetitions": 3,
        "seed": 4,
        "combination_matrix": matrix,
        "gradient": "additive",
        "gradient_noise_std": 0.1,
    }
    strategy = make_strategy("exact")
    simulate(problem, strategy, 0.1, 20, **options)
    # A used instance is reset, so a second run repeats the first.
    by_instance = simulate(problem, strategy, 0.1, 20, **options)
    by_name = simulate(problem, "exact", 0.1, 20, **options)
    assert np.array_equal(by_instance.msd, by_name.msd)


def test_simulate_restores_thread_count():
    problem, _ = clustered_network()
    before = torch.get_num_threads()
    simulate(problem, "centralized", 0.1, 5, num_threads=1)
    assert torch.get_num_threads() == before


def test_invalid_covariance_rejected():
    subspace = VectorSubspace.from_agent_subspace(shared_subspace(2), 2)
    bad = [np.eye(2), np.array([[1.0, 2.0], [2.0, 1.0]])]
    with pytest.raises(ConfigError, match="positive definite"):
        make_regression_problem(subspace, covariances=bad)


def test_unknown_gradient_mode_rejected():
    problem, _ = clustered_network()
    with pytest.raises(ConfigError, match="gradient mode"):
        simulate(problem, "centralized", 0.1, 5, gradient="noisy")
