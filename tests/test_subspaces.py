"""Tests of the subspace factories and the vector subspace."""

import networkx as nx
import numpy as np
import pytest

from subspace_diffusion.errors import ConfigError
from subspace_diffusion.graphs import make_graph
from subspace_diffusion.subspaces import (
    AgentSubspace,
    VectorSubspace,
    clustered_subspace,
    general_subspace,
    local_subspace,
    shared_subspace,
    smooth_subspace,
    vector_subspace,
)


def assert_orthonormal(basis):
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-12)


def assert_projector(projector):
    np.testing.assert_allclose(projector, projector.T, atol=1e-12)
    np.testing.assert_allclose(projector @ projector, projector, atol=1e-12)


def span_projector(matrix):
    """Projector onto the column span, computed by the normal equations."""
    return matrix @ np.linalg.solve(matrix.T @ matrix, matrix.T)


@pytest.mark.parametrize(
    "subspace",
    [
        shared_subspace(5),
        local_subspace(4),
        clustered_subspace([0, 1, 0, 2, 1]),
        smooth_subspace(make_graph("grid", 9), 3),
        general_subspace(np.random.default_rng(0).standard_normal((6, 3))),
    ],
    ids=lambda subspace: subspace.describe(),
)
def test_factory_basis_orthonormal(subspace):
    assert_orthonormal(subspace.basis)
    assert_projector(subspace.projector)
    np.testing.assert_allclose(subspace.projector, subspace.basis @ subspace.basis.T)


def test_shared_projector_is_average():
    subspace = shared_subspace(4)
    np.testing.assert_allclose(subspace.projector, np.full((4, 4), 0.25))
    assert subspace.dimension == 1
    assert not subspace.is_identity


def test_local_is_identity():
    subspace = local_subspace(3)
    np.testing.assert_allclose(subspace.projector, np.eye(3))
    assert subspace.is_identity
    assert subspace.num_agents == 3


def test_clustered_labels_projector():
    subspace = clustered_subspace(["a", "b", "a", "a", "b"])
    # P_kl = 1/|c| when k and l share cluster c, else 0.
    expected = np.zeros((5, 5))
    for members in ([0, 2, 3], [1, 4]):
        expected[np.ix_(members, members)] = 1.0 / len(members)
    np.testing.assert_allclose(subspace.projector, expected, atol=1e-12)
    assert subspace.clusters == ((0, 2, 3), (1, 4))


def test_clustered_lists_match_labels():
    from_lists = clustered_subspace([[4, 1], [0, 3, 2]])
    from_labels = clustered_subspace([0, 1, 0, 0, 1])
    assert from_lists == from_labels
    assert hash(from_lists) == hash(from_labels)


def test_clustered_describe():
    assert clustered_subspace([0, 1, 2, 0]).describe() == "clustered(3 clusters)"


def test_clustered_agent_twice_rejected():
    with pytest.raises(ConfigError, match="agent 1 appears twice"):
        clustered_subspace([[0, 1], [1, 2]])


def test_clustered_agent_missing_rejected():
    with pytest.raises(ConfigError, match=r"agents \[2\] are in no cluster"):
        clustered_subspace([[0, 1], [3]])


def test_clustered_last_agent_missing_rejected():
    with pytest.raises(ConfigError, match=r"agents \[3\] are in no cluster"):
        clustered_subspace([[0, 1], [2]], num_agents=4)


def test_clustered_label_count_mismatch():
    with pytest.raises(ConfigError, match="cover 3 agents but num_agents=4"):
        clustered_subspace([0, 1, 0], num_agents=4)


def test_clustered_empty_cluster_rejected():
    with pytest.raises(ConfigError, match="cluster 1 is empty"):
        clustered_subspace([[0, 1], []])


def test_clustered_mixed_input_rejected():
    with pytest.raises(ConfigError, match="mixes labels and lists"):
        clustered_subspace([0, [1, 2]])


def test_clustered_kind_needs_clusters():
    with pytest.raises(ConfigError, match="needs its clusters"):
        AgentSubspace("clustered", np.eye(3))


def test_smooth_path_eigenvalues():
    # Laplacian eigenvalues of a path of K nodes are 2 - 2 cos(pi j / K).
    num_agents = 7
    graph = nx.path_graph(num_agents)
    subspace = smooth_subspace(graph, 3)
    laplacian = nx.laplacian_matrix(graph).toarray().astype(float)
    for j in range(3):
        eigenvalue = 2.0 - 2.0 * np.cos(np.pi * j / num_agents)
        column = subspace.basis[:, j]
        np.testing.assert_allclose(laplacian @ column, eigenvalue * column, atol=1e-10)


def test_smooth_first_vector_constant():
    subspace = smooth_subspace(make_graph("random-geometric", 8, seed=0), 2)
    np.testing.assert_allclose(subspace.basis[:, 0], 1.0 / np.sqrt(8))
    assert subspace.describe() == "smooth(2 eigenvectors)"


def test_smooth_one_vector_is_shared():
    graph = make_graph("grid", 9)
    np.testing.assert_allclose(
        smooth_subspace(graph, 1).projector, shared_subspace(9).projector
    )


def test_smooth_split_eigenspace_warns():
    # A ring of 6 has Laplacian eigenvalues 0, 1, 1, 3, 3, 4.
    with pytest.warns(UserWarning, match="not unique"):
        smooth_subspace(make_graph("ring", 6), 2)


def test_smooth_too_many_vectors():
    with pytest.raises(ConfigError, match="num_eigenvectors=5"):
        smooth_subspace(make_graph("ring", 4), 5)


def test_general_keeps_span():
    raw = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 1.0]])
    subspace = general_subspace(raw)
    np.testing.assert_allclose(subspace.projector, span_projector(raw), atol=1e-12)
    assert subspace.describe() == "general(dimension 2)"


def test_general_orthonormal_input_unchanged():
    basis = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 2)))[0]
    np.testing.assert_allclose(
        np.abs(general_subspace(basis).basis), np.abs(basis), atol=1e-12
    )


def test_general_vector_is_one_column():
    subspace = general_subspace(np.array([3.0, 4.0]))
    np.testing.assert_allclose(subspace.basis[:, 0], [0.6, 0.8])


def test_general_rank_deficient_rejected():
    basis = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    with pytest.raises(ConfigError, match="rank 1"):
        general_subspace(basis)


def test_general_too_many_columns_rejected():
    with pytest.raises(ConfigError, match=r"shape \(2, 3\)"):
        general_subspace(np.ones((2, 3)))


def test_general_nan_rejected():
    with pytest.raises(ConfigError, match="NaN"):
        general_subspace(np.array([[1.0], [np.nan]]))


def test_non_orthonormal_basis_rejected():
    with pytest.raises(ConfigError, match="not orthonormal"):
        AgentSubspace("general", np.array([[1.0], [1.0]]))


def test_shared_kind_wrong_basis_rejected():
    with pytest.raises(ConfigError, match="does not span the shared subspace"):
        AgentSubspace("shared", np.array([[1.0], [0.0]]))


def test_unknown_kind_rejected():
    with pytest.raises(ConfigError, match="unknown subspace kind"):
        AgentSubspace("tree", np.eye(2))


def test_basis_read_only():
    subspace = shared_subspace(3)
    with pytest.raises(ValueError, match="read-only"):
        subspace.basis[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        subspace.projector[0, 0] = 1.0


def test_vector_from_shared_kronecker():
    agent = shared_subspace(3)
    subspace = VectorSubspace.from_agent_subspace(agent, 2)
    np.testing.assert_allclose(subspace.basis, np.kron(agent.basis, np.eye(2)))
    np.testing.assert_allclose(
        subspace.projector, np.kron(np.full((3, 3), 1.0 / 3.0), np.eye(2))
    )
    assert subspace.sizes == (2, 2, 2)
    assert subspace.describe() == "shared (x) I_2"


def test_vector_unequal_sizes_offsets():
    basis = np.random.default_rng(2).standard_normal((6, 2))
    subspace = vector_subspace(basis, [2, 3, 1])
    assert subspace.num_agents == 3
    assert subspace.offsets == (0, 2, 5, 6)
    assert subspace.agent_slice(1) == slice(2, 5)
    assert_orthonormal(subspace.basis)
    np.testing.assert_allclose(subspace.projector, span_projector(basis), atol=1e-12)


def test_vector_size_mismatch_rejected():
    with pytest.raises(ConfigError, match="add up to 5"):
        vector_subspace(np.ones((6, 1)), [2, 3])


def test_vector_zero_size_rejected():
    with pytest.raises(ConfigError, match="at least 1"):
        vector_subspace(np.ones((3, 1)), [3, 0])
