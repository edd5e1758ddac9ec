"""Tests of combination-matrix design and validation."""

import json
import sys
import warnings

import networkx as nx
import numpy as np
import pytest
import scipy.linalg

from subspace_diffusion.combination import (
    CONDITIONS,
    design_combination_matrix,
    is_symmetric,
    measure_combination_matrix,
    sparsity_pattern,
    validate_combination_matrix,
)
from subspace_diffusion.errors import (
    ConfigError,
    InfeasibleSubspaceError,
    InvalidCombinationMatrixError,
)
from subspace_diffusion.graphs import averaging_weights, make_graph, metropolis_weights
from subspace_diffusion.subspaces import (
    VectorSubspace,
    clustered_subspace,
    general_subspace,
    local_subspace,
    shared_subspace,
    smooth_subspace,
    vector_subspace,
)

THIRD = 1.0 / 3.0

# Each graph comes with cluster labels whose induced subgraphs are connected.
GRAPHS = {
    "ring6": (make_graph("ring", 6), [0, 0, 0, 1, 1, 1]),
    "grid3x3": (make_graph("grid", 9), [0, 0, 0, 1, 1, 1, 2, 2, 2]),
    "rgg8": (make_graph("random-geometric", 8, seed=0), [0, 1, 0, 0, 1, 0, 2, 1]),
    "star5": (make_graph("star", 5), [0, 0, 0, 1, 2]),
}


def allowed(graph, k, m):
    return k == m or graph.has_edge(k, m)


def assert_valid_matrix(matrix, basis, graph):
    """Check every condition directly, without the library's validator."""
    np.testing.assert_allclose(matrix @ basis, basis, atol=1e-9)
    np.testing.assert_allclose(basis.T @ matrix, basis.T, atol=1e-9)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    for k in range(graph.number_of_nodes()):
        for m in range(graph.number_of_nodes()):
            if not allowed(graph, k, m):
                assert matrix[k, m] == 0.0, f"weight on non-edge ({k}, {m})"
    radius = np.max(np.abs(np.linalg.eigvals(matrix - basis @ basis.T)))
    assert radius < 1.0


def feasible_directions(basis, graph):
    """Return a basis of {D symmetric on the graph pattern, D U = 0}.

    Built by a plain loop over the allowed entries, independently of the
    library's vectorised constraint matrix.
    """
    size = graph.number_of_nodes()
    units = []
    for k in range(size):
        for m in range(k, size):
            if allowed(graph, k, m):
                unit = np.zeros((size, size))
                unit[k, m] = unit[m, k] = 1.0
                units.append(unit)
    constraint = np.column_stack([(unit @ basis).ravel() for unit in units])
    null = scipy.linalg.null_space(constraint)
    return [sum(c * unit for c, unit in zip(column, units)) for column in null.T]


def random_basis(rows, columns, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, columns))


def rotated_cluster_basis(labels, seed=0):
    """Return the cluster indicators mixed by a random invertible matrix."""
    indicators = clustered_subspace(labels).basis
    mixing = random_basis(indicators.shape[1], indicators.shape[1], seed)
    return indicators @ mixing


@pytest.mark.parametrize("name", GRAPHS)
def test_design_shared_valid(name):
    graph, _ = GRAPHS[name]
    subspace = shared_subspace(graph.number_of_nodes())
    matrix, report = design_combination_matrix(subspace, graph)
    assert report.ok
    np.testing.assert_allclose(matrix, metropolis_weights(graph))
    assert_valid_matrix(matrix, subspace.basis, graph)


@pytest.mark.parametrize("name", GRAPHS)
def test_design_clustered_valid(name):
    graph, labels = GRAPHS[name]
    subspace = clustered_subspace(labels)
    for members in subspace.clusters:
        assert nx.is_connected(graph.subgraph(members)), "test clusters must connect"
    matrix, report = design_combination_matrix(subspace, graph)
    assert report.ok
    assert_valid_matrix(matrix, subspace.basis, graph)


@pytest.mark.parametrize("name", GRAPHS)
def test_design_clustered_block_diagonal(name):
    graph, labels = GRAPHS[name]
    matrix, _ = design_combination_matrix(clustered_subspace(labels), graph)
    for k, label in enumerate(labels):
        for m, other in enumerate(labels):
            if label != other:
                assert matrix[k, m] == 0.0


@pytest.mark.parametrize("name", GRAPHS)
def test_design_smooth_one_vector_valid(name):
    graph, _ = GRAPHS[name]
    subspace = smooth_subspace(graph, 1)
    matrix, report = design_combination_matrix(subspace, graph)
    assert report.ok
    assert_valid_matrix(matrix, subspace.basis, graph)


def test_design_smooth_two_vectors_dense():
    # Smooth subspaces with P >= 2 need many edges: an agent of degree 1
    # whose neighbour differs in the second eigenvector must keep A_kk = 1,
    # which leaves eigenvalue 1 in A - P_U.
    graph = make_graph("erdos-renyi", 8, seed=1, probability=0.8)
    subspace = smooth_subspace(graph, 2)
    matrix, report = design_combination_matrix(subspace, graph)
    assert report.ok
    assert_valid_matrix(matrix, subspace.basis, graph)


@pytest.mark.parametrize("name", GRAPHS)
def test_design_general_vector_valid(name):
    graph, _ = GRAPHS[name]
    subspace = general_subspace(random_basis(graph.number_of_nodes(), 1))
    matrix, report = design_combination_matrix(subspace, graph)
    assert report.ok
    assert_valid_matrix(matrix, subspace.basis, graph)


@pytest.mark.parametrize("name", GRAPHS)
def test_design_general_rotated_clusters(name):
    graph, labels = GRAPHS[name]
    subspace = general_subspace(rotated_cluster_basis(labels))
    np.testing.assert_allclose(
        subspace.projector, clustered_subspace(labels).projector, atol=1e-12
    )
    matrix, report = design_combination_matrix(subspace, graph)
    assert report.ok
    assert_valid_matrix(matrix, subspace.basis, graph)


def test_design_local_identity():
    graph, _ = GRAPHS["ring6"]
    matrix, report = design_combination_matrix(local_subspace(6), graph)
    np.testing.assert_allclose(matrix, np.eye(6))
    assert report.spectral_gap == pytest.approx(1.0)


def test_least_squares_shared_ring():
    # By symmetry A = a I + b (neighbours) with a + 2b = 1. Minimising
    # 6 (a - 1/6)^2 + 12 (b - 1/6)^2 gives a = b = 1/3, the Metropolis matrix.
    graph, _ = GRAPHS["ring6"]
    matrix, _ = design_combination_matrix(
        shared_subspace(6), graph, method="least-squares"
    )
    np.testing.assert_allclose(matrix, metropolis_weights(graph), atol=1e-12)


def test_least_squares_shared_star():
    # By symmetry the hub weighs itself a, each leaf b, leaves keep c, with
    # a + 4b = 1 and b + c = 1. Minimising (a - 1/5)^2 + 4 (c - 1/5)^2
    # + 8 (b - 1/5)^2 gives 56 b = 16, so b = 2/7, a = -1/7, c = 5/7.
    graph, _ = GRAPHS["star5"]
    subspace = shared_subspace(5)
    matrix, report = design_combination_matrix(subspace, graph, method="least-squares")
    assert report.ok
    assert_valid_matrix(matrix, subspace.basis, graph)
    assert matrix[0, 0] == pytest.approx(-1.0 / 7.0)
    assert matrix[0, 1] == pytest.approx(2.0 / 7.0)
    assert matrix[1, 1] == pytest.approx(5.0 / 7.0)


@pytest.mark.parametrize("name", GRAPHS)
def test_least_squares_first_order_optimal(name):
    # The Frobenius optimum leaves A - P_U orthogonal to every feasible
    # direction D (symmetric, on the pattern, D U = 0).
    graph, labels = GRAPHS[name]
    subspace = general_subspace(rotated_cluster_basis(labels, seed=3))
    matrix, _ = design_combination_matrix(subspace, graph, method="least-squares")
    directions = feasible_directions(subspace.basis, graph)
    assert directions, "the test needs a problem with free directions"
    for direction in directions:
        inner = np.sum((matrix - subspace.projector) * direction)
        assert inner == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize(
    "graph",
    [
        make_graph("ring", 8),
        nx.path_graph(8),
        make_graph("random-geometric", 8, seed=3, radius=0.4),
    ],
    ids=["ring8", "path8", "rgg8-sparse"],
)
def test_smooth_three_vectors_infeasible(graph):
    subspace = smooth_subspace(graph, 3)
    with pytest.raises(InfeasibleSubspaceError, match="spectral radius") as info:
        design_combination_matrix(subspace, graph)
    assert "smooth(3 eigenvectors)" in str(info.value)
    assert "K=8" in str(info.value)


@pytest.mark.parametrize(
    "graph",
    [
        make_graph("ring", 8),
        nx.path_graph(8),
        make_graph("random-geometric", 8, seed=3, radius=0.4),
    ],
    ids=["ring8", "path8", "rgg8-sparse"],
)
def test_smooth_three_vectors_only_identity(graph):
    # No symmetric D on the pattern has D U = 0, so A = I is the only matrix
    # with A U = U, and I - P_U keeps eigenvalue 1 on the complement of U.
    # That proves no valid A exists, whatever the design method.
    subspace = smooth_subspace(graph, 3)
    assert feasible_directions(subspace.basis, graph) == []
    radius = np.max(np.abs(np.linalg.eigvalsh(np.eye(8) - subspace.projector)))
    assert radius == pytest.approx(1.0)


def test_infeasible_error_carries_report():
    graph = make_graph("ring", 8)
    with pytest.raises(InfeasibleSubspaceError) as info:
        design_combination_matrix(smooth_subspace(graph, 3), graph)
    report = info.value.report
    assert not report.conditions["spectral radius"].passed
    assert report.conditions["A U = U"].passed


def test_clustered_disconnected_cluster_infeasible():
    graph, _ = GRAPHS["ring6"]
    subspace = clustered_subspace([[0, 3], [1, 2], [4, 5]])
    with pytest.raises(InfeasibleSubspaceError, match=r"cluster 0 \(agents \[0, 3\]\)"):
        design_combination_matrix(subspace, graph)


def test_least_squares_ill_conditioned_basis():
    # Orthonormalising a badly scaled basis leaves rounding noise of about
    # 1e-14 where the cluster basis has zeros, which must not change the design.
    graph, labels = GRAPHS["ring6"]
    indicators = clustered_subspace(labels).basis
    subspace = general_subspace(indicators @ np.array([[1.0, 1.0], [1.0, 1.01]]))
    matrix, report = design_combination_matrix(subspace, graph)
    assert report.ok
    assert report.spectral_gap == pytest.approx(0.4)
    assert_valid_matrix(matrix, subspace.basis, graph)


@pytest.mark.parametrize("dimension", [1, 2])
def test_vector_unequal_sizes_design(dimension):
    graph = nx.path_graph(3)
    subspace = vector_subspace(random_basis(6, dimension, seed=4), [2, 3, 1])
    matrix, report = design_combination_matrix(subspace, graph)
    assert matrix.shape == (6, 6)
    assert report.ok
    np.testing.assert_allclose(matrix @ subspace.basis, subspace.basis, atol=1e-9)
    np.testing.assert_allclose(subspace.basis.T @ matrix, subspace.basis.T, atol=1e-9)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    # Agents 0 and 2 are not neighbours, so their block is zero.
    assert np.all(matrix[0:2, 5:6] == 0.0)
    assert np.all(matrix[5:6, 0:2] == 0.0)
    radius = np.max(np.abs(np.linalg.eigvals(matrix - subspace.projector)))
    assert radius < 1.0


def test_vector_unequal_sizes_pattern():
    subspace = vector_subspace(random_basis(6, 1), [2, 3, 1])
    pattern = sparsity_pattern(subspace, nx.path_graph(3))
    expected = np.ones((6, 6), dtype=bool)
    expected[0:2, 5:6] = expected[5:6, 0:2] = False
    np.testing.assert_array_equal(pattern, expected)


def test_vector_from_shared_kronecker_design():
    graph, _ = GRAPHS["star5"]
    subspace = VectorSubspace.from_agent_subspace(shared_subspace(5), 3)
    matrix, report = design_combination_matrix(subspace, graph)
    assert report.ok
    np.testing.assert_allclose(matrix, np.kron(metropolis_weights(graph), np.eye(3)))


def test_vector_lifted_equals_full_design():
    # The K x K design lifted by (x) I_dim equals the N x N least-squares design.
    graph, labels = GRAPHS["grid3x3"]
    agent = general_subspace(rotated_cluster_basis(labels))
    lifted = VectorSubspace.from_agent_subspace(agent, 2)
    plain = vector_subspace(lifted.basis, lifted.sizes)
    lifted_matrix, _ = design_combination_matrix(lifted, graph)
    plain_matrix, _ = design_combination_matrix(plain, graph)
    np.testing.assert_allclose(lifted_matrix, plain_matrix, atol=1e-9)


def test_validate_non_symmetric_named():
    graph, _ = GRAPHS["ring6"]
    # Doubly stochastic circulant: self 1/2, next agent 1/3, previous 1/6.
    matrix = 0.5 * np.eye(6)
    for k in range(6):
        matrix[k, (k + 1) % 6] = THIRD
        matrix[k, (k - 1) % 6] = 1.0 / 6.0
    with pytest.raises(InvalidCombinationMatrixError, match="'symmetry'"):
        validate_combination_matrix(matrix, shared_subspace(6), graph)
    report = validate_combination_matrix(
        matrix, shared_subspace(6), graph, require_symmetric=False
    )
    assert report.ok
    assert not report.conditions["symmetry"].passed


def test_validate_non_edge_weight_named():
    graph, _ = GRAPHS["ring6"]
    matrix = metropolis_weights(graph)
    matrix[0, 2] = matrix[2, 0] = 0.1
    matrix[0, 0] -= 0.1
    matrix[2, 2] -= 0.1
    with pytest.raises(InvalidCombinationMatrixError, match="'sparsity'") as info:
        validate_combination_matrix(matrix, shared_subspace(6), graph)
    assert "entry (0, 2)" in str(info.value)
    assert "ring(6)" in str(info.value)


def test_validate_broken_right_condition_named():
    graph, _ = GRAPHS["ring6"]
    matrix = 0.9 * metropolis_weights(graph)
    with pytest.raises(InvalidCombinationMatrixError, match="'A U = U'") as info:
        validate_combination_matrix(matrix, shared_subspace(6), graph)
    assert "'U^T A = U^T'" in str(info.value)
    assert "subspace shared" in str(info.value)


def test_validate_identity_shared_radius_named():
    graph, _ = GRAPHS["ring6"]
    with pytest.raises(
        InvalidCombinationMatrixError, match=r"spectral radius\(A - P_U\)"
    ):
        validate_combination_matrix(np.eye(6), shared_subspace(6), graph)


def test_validate_averaging_weights_rejected():
    graph, _ = GRAPHS["star5"]
    with pytest.warns(UserWarning):
        matrix = averaging_weights(graph)
    with pytest.raises(InvalidCombinationMatrixError, match="'U\\^T A = U\\^T'"):
        validate_combination_matrix(matrix, shared_subspace(5), graph)


def test_validate_wrong_shape():
    graph, _ = GRAPHS["ring6"]
    with pytest.raises(InvalidCombinationMatrixError, match=r"shape \(5, 5\)"):
        validate_combination_matrix(np.eye(5), shared_subspace(6), graph)


def test_validate_nan_entry():
    graph, _ = GRAPHS["ring6"]
    matrix = metropolis_weights(graph)
    matrix[1, 1] = np.nan
    with pytest.raises(InvalidCombinationMatrixError, match="NaN"):
        validate_combination_matrix(matrix, shared_subspace(6), graph)


def test_validate_agent_count_mismatch():
    graph, _ = GRAPHS["ring6"]
    with pytest.raises(ConfigError, match="5 agents"):
        validate_combination_matrix(np.eye(5), shared_subspace(5), graph)


def test_validate_error_carries_report():
    graph, _ = GRAPHS["ring6"]
    with pytest.raises(InvalidCombinationMatrixError) as info:
        validate_combination_matrix(np.eye(6), shared_subspace(6), graph)
    assert not info.value.report.ok


def test_report_table_and_dict():
    graph, _ = GRAPHS["grid3x3"]
    report = validate_combination_matrix(
        metropolis_weights(graph), shared_subspace(9), graph, graph_name="my grid"
    )
    table = str(report)
    for name in CONDITIONS:
        assert name in table
    assert "my grid" in table
    data = json.loads(json.dumps(report.as_dict()))
    assert data["ok"] is True
    assert set(data["conditions"]) == set(CONDITIONS)


def test_report_spectral_gap_independent():
    graph, _ = GRAPHS["ring6"]
    matrix = metropolis_weights(graph)
    report = validate_combination_matrix(matrix, shared_subspace(6), graph)
    # Metropolis on a ring of 6 is 1/3 (I + neighbours), with eigenvalues
    # 1/3 + 2/3 cos(2 pi j / 6), so radius(A - 11^T/6) = 2/3.
    assert report.spectral_gap == pytest.approx(THIRD)


def test_measure_does_not_raise():
    graph, _ = GRAPHS["ring6"]
    report = measure_combination_matrix(np.eye(6), shared_subspace(6), graph)
    assert not report.ok
    assert [check.name for check in report.failures] == ["spectral radius"]


def test_is_symmetric():
    assert is_symmetric(np.array([[1.0, 2.0], [2.0, 1.0]]))
    assert not is_symmetric(np.array([[1.0, 2.0], [2.5, 1.0]]))
    assert is_symmetric(np.array([[1.0, 2.0], [2.0 + 1e-12, 1.0]]), 1e-10)
    assert not is_symmetric(np.ones((2, 3)))


def test_spectral_without_cvxpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    graph, _ = GRAPHS["ring6"]
    with pytest.raises(ConfigError, match="pip install cvxpy"):
        design_combination_matrix(shared_subspace(6), graph, method="spectral")


def test_design_averaging_weights_warns():
    graph, _ = GRAPHS["star5"]
    with pytest.warns(UserWarning, match="only row stochastic"):
        matrix, report = design_combination_matrix(
            shared_subspace(5), graph, weights="averaging"
        )
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert not report.conditions["U^T A = U^T"].passed
    assert report.conditions["spectral radius"].passed


def test_design_averaging_needs_closed_form():
    graph, _ = GRAPHS["ring6"]
    with pytest.raises(ConfigError, match="method 'least-squares'"):
        design_combination_matrix(
            shared_subspace(6), graph, method="least-squares", weights="averaging"
        )


def test_design_averaging_needs_shared():
    graph, labels = GRAPHS["ring6"]
    with pytest.raises(
        ConfigError, match="only defined for the closed form of a shared"
    ):
        design_combination_matrix(
            clustered_subspace(labels), graph, weights="averaging"
        )


def test_design_averaging_regular_graph_valid():
    # On a regular graph the averaging rule is symmetric and doubly stochastic.
    graph, _ = GRAPHS["ring6"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        matrix, report = design_combination_matrix(
            shared_subspace(6), graph, weights="averaging"
        )
    assert report.ok
    np.testing.assert_allclose(matrix, metropolis_weights(graph))


def test_design_unknown_method():
    graph, _ = GRAPHS["ring6"]
    with pytest.raises(ConfigError, match="unknown method 'newton'"):
        design_combination_matrix(shared_subspace(6), graph, method="newton")


def test_design_closed_form_missing():
    graph, _ = GRAPHS["ring6"]
    with pytest.raises(ConfigError, match="no closed form"):
        design_combination_matrix(
            smooth_subspace(graph, 1), graph, method="closed-form"
        )


def test_spectral_design_beats_least_squares():
    pytest.importorskip("cvxpy")
    graph = make_graph("random-geometric", 8, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subspace = smooth_subspace(graph, 1)
    _, least_squares = design_combination_matrix(subspace, graph, method="least-squares")
    matrix, spectral = design_combination_matrix(subspace, graph, method="spectral")
    assert spectral.ok
    assert 1 - spectral.spectral_gap < 1 - least_squares.spectral_gap
    assert np.allclose(matrix, matrix.T)


def test_spectral_design_finds_feasible_case():
    pytest.importorskip("cvxpy")
    graph = make_graph("random-geometric", 8, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subspace = smooth_subspace(graph, 2)
    with pytest.raises(InfeasibleSubspaceError):
        design_combination_matrix(subspace, graph, method="least-squares")
    _, report = design_combination_matrix(subspace, graph, method="spectral")
    assert report.ok
