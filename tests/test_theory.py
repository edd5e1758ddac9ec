"""Steady-state theory against simulation and against its own definitions."""

from __future__ import annotations

import numpy as np
import pytest

from subspace_diffusion.combination import design_combination_matrix
from subspace_diffusion.errors import (
    ConfigError,
    DivergenceError,
    InvalidCombinationMatrixError,
)
from subspace_diffusion.graphs import make_graph
from subspace_diffusion.subspaces import VectorSubspace, clustered_subspace
from subspace_diffusion.theory import (
    approximate_error_recursion,
    approximate_fixed_point,
    approximate_msd,
    centralized_msd,
    check_stability,
    constrained_solution,
    exact_error_recursion,
    exact_msd,
    first_order_msd,
    to_db,
)
from subspace_diffusion.vector import make_regression_problem, predict_msd, simulate

STEADY_FRACTION = 1 / 3


@pytest.fixture(scope="module")
def network():
    """Six agents on a ring in two clusters of three, two entries each."""
    graph = make_graph("ring", 6)
    subspace = VectorSubspace.from_agent_subspace(
        clustered_subspace([0, 0, 0, 1, 1, 1]), 2
    )
    matrix, _ = design_combination_matrix(subspace, graph)
    problem = make_regression_problem(
        subspace, heterogeneity=1.0, noise_std=0.3, covariances="random", seed=11
    )
    return problem, matrix


def simulated_db(problem, matrix, strategy, mu, **options):
    result = simulate(problem, strategy, mu, combination_matrix=matrix, **options)
    return to_db(result.steady_state(STEADY_FRACTION))


def test_constrained_solution_is_stationary(network):
    problem, _ = network
    basis, hessian = problem.subspace.basis, problem.hessian
    solution = constrained_solution(basis, hessian, problem.optimum)
    gradient = hessian @ (solution - problem.optimum)
    assert np.max(np.abs(basis.T @ gradient)) < 1e-12
    assert np.max(np.abs(solution - basis @ (basis.T @ solution))) < 1e-12
    # The constraint binds: the unconstrained gradient is not zero.
    assert np.max(np.abs(gradient)) > 1e-2


def test_constrained_solution_minimises_cost(network):
    problem, _ = network
    basis, hessian = problem.subspace.basis, problem.hessian
    solution = constrained_solution(basis, hessian, problem.optimum)

    def cost(w):
        return 0.5 * (w - problem.optimum) @ hessian @ (w - problem.optimum)

    rng = np.random.default_rng(0)
    for _ in range(20):
        perturbed = solution + basis @ rng.standard_normal(basis.shape[1]) * 1e-2
        assert cost(perturbed) > cost(solution)


def test_fixed_point_is_unchanged_by_step(network):
    problem, matrix = network
    mu = 0.05
    fixed_point = approximate_fixed_point(matrix, problem.hessian, problem.optimum, mu)

    # One step of the recursion, written out here.
    stepped = matrix @ (
        fixed_point - mu * problem.hessian @ (fixed_point - problem.optimum)
    )
    assert np.max(np.abs(stepped - fixed_point)) < 1e-12

    # One step of the library's strategy from the same point.
    result = simulate(
        problem,
        "approximate",
        mu,
        1,
        combination_matrix=matrix,
        initial=fixed_point,
    )
    assert np.max(np.abs(result.final[:, 0] - fixed_point)) < 1e-12


def test_stability_flags_large_step(network):
    problem, matrix = network
    large = 4.0 / np.max(np.linalg.eigvalsh(problem.hessian))
    recursion = approximate_error_recursion(matrix, problem.hessian, large)
    with pytest.raises(ConfigError, match="unstable"):
        check_stability(recursion, large, "approximate projection")
    with pytest.raises(ConfigError, match="smaller step size"):
        predict_msd(problem, "exact", large, combination_matrix=matrix)
    # The simulation confirms the prediction by diverging.
    with pytest.raises(DivergenceError):
        simulate(problem, "approximate", large, 500, combination_matrix=matrix)


def test_stability_accepts_small_step(network):
    problem, matrix = network
    approximate = approximate_error_recursion(matrix, problem.hessian, 0.05)
    exact, _ = exact_error_recursion(
        matrix, problem.hessian, 0.05, problem.subspace.basis
    )
    assert check_stability(approximate, 0.05, "approximate projection") < 1.0
    assert check_stability(exact, 0.05, "exact diffusion") < 1.0


def test_exact_theory_rejects_nonsymmetric_matrix(network):
    problem, matrix = network
    skewed = matrix.copy()
    skewed[0, 2] += 0.01
    with pytest.raises(InvalidCombinationMatrixError, match="symmetric"):
        exact_msd(
            skewed,
            problem.hessian,
            np.eye(problem.size),
            0.05,
            problem.subspace.basis,
            problem.num_agents,
        )


@pytest.mark.parametrize("gradient", ["additive", "sampled"])
@pytest.mark.parametrize("strategy", ["approximate", "exact"])
@pytest.mark.parametrize("mu", [0.01, 0.03])
def test_theory_within_one_db(network, strategy, mu, gradient):
    problem, matrix = network
    options = {"gradient": gradient, "gradient_noise_std": 0.3}
    simulated = simulated_db(
        problem,
        matrix,
        strategy,
        mu,
        iterations=3000,
        repetitions=200,
        seed=3,
        **options,
    )
    predicted = predict_msd(problem, strategy, mu, combination_matrix=matrix, **options)
    assert abs(simulated - predicted.msd_db) < 1.0


def test_approximate_bias_scales_as_step_squared(network):
    problem, matrix = network
    floors = []
    for mu in (0.003, 0.009):
        result = simulate(problem, "approximate", mu, 6000, combination_matrix=matrix)
        floors.append(to_db(result.msd[-1]))
    assert floors[1] - floors[0] == pytest.approx(9.5, abs=0.7)


def test_theory_bias_matches_deterministic_floor(network):
    problem, matrix = network
    mu = 0.03
    result = simulate(problem, "approximate", mu, 3000, combination_matrix=matrix)
    prediction = predict_msd(problem, "approximate", mu, combination_matrix=matrix)
    assert prediction.fluctuation == 0.0
    assert to_db(result.msd[-1]) == pytest.approx(to_db(prediction.bias), abs=0.01)


def test_exact_deterministic_error_vanishes(network):
    problem, matrix = network
    result = simulate(problem, "exact", 0.03, 3000, combination_matrix=matrix)
    assert result.msd[-1] < 1e-10


def test_noise_decade_effects(network):
    problem, matrix = network
    mu = 0.03
    levels = (1e-1, 1e-2, 1e-3)
    options = {"iterations": 1500, "repetitions": 50, "seed": 5, "gradient": "additive"}
    exact, approximate = [], []
    for noise in levels:
        exact.append(
            simulated_db(
                problem, matrix, "exact", mu, gradient_noise_std=noise, **options
            )
        )
        approximate.append(
            simulated_db(
                problem, matrix, "approximate", mu, gradient_noise_std=noise, **options
            )
        )

    # Exact diffusion: MSD proportional to sigma_s^2, so 20 dB per decade.
    assert exact[0] - exact[1] == pytest.approx(20.0, abs=1.5)
    assert exact[1] - exact[2] == pytest.approx(20.0, abs=1.5)
    # Approximate projection saturates at its bias floor.
    assert abs(approximate[1] - approximate[2]) < 0.5
    assert approximate[2] - exact[2] > 20.0


def test_first_order_matches_centralized(network):
    problem, _ = network
    noise = problem.noise_covariance("sampled")
    basis, agents = problem.subspace.basis, problem.num_agents
    mu = 1e-4
    first = first_order_msd(basis, problem.hessian, noise, mu, agents)
    central = centralized_msd(problem.hessian, noise, mu, basis, agents)
    assert to_db(first) == pytest.approx(central.msd_db, abs=0.01)


def test_small_step_strategies_agree(network):
    problem, matrix = network
    noise = problem.noise_covariance("additive", 1.0)
    basis, agents = problem.subspace.basis, problem.num_agents
    mu = 1e-4
    first = first_order_msd(basis, problem.hessian, noise, mu, agents)
    exact = exact_msd(matrix, problem.hessian, noise, mu, basis, agents)
    approximate = approximate_msd(
        matrix, problem.hessian, noise, mu, problem.optimum, basis, agents
    )
    assert exact.msd_db == pytest.approx(to_db(first), abs=0.1)
    assert approximate.fluctuation == pytest.approx(first, rel=0.03)
