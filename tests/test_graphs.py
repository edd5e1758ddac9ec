"""Tests of graph construction, edge-list files and combination weights."""

import math

import networkx as nx
import numpy as np
import pytest

from subspace_diffusion.errors import ConfigError, GraphError
from subspace_diffusion.graphs import (
    TOPOLOGIES,
    as_graph,
    averaging_weights,
    load_edge_list,
    make_graph,
    metropolis_weights,
    spectral_gap,
    write_edge_list,
)

THIRD = 1.0 / 3.0


def test_metropolis_ring_of_four():
    expected = np.array(
        [
            [THIRD, THIRD, 0.0, THIRD],
            [THIRD, THIRD, THIRD, 0.0],
            [0.0, THIRD, THIRD, THIRD],
            [THIRD, 0.0, THIRD, THIRD],
        ]
    )
    np.testing.assert_allclose(metropolis_weights(make_graph("ring", 4)), expected)


def test_metropolis_star_of_four():
    # Hub 0 has degree 3 and each leaf degree 1, so hub-leaf weights are
    # 1/(1 + 3), the hub keeps 1 - 3/4 and each leaf keeps 1 - 1/4.
    expected = np.array(
        [
            [0.25, 0.25, 0.25, 0.25],
            [0.25, 0.75, 0.0, 0.0],
            [0.25, 0.0, 0.75, 0.0],
            [0.25, 0.0, 0.0, 0.75],
        ]
    )
    np.testing.assert_allclose(metropolis_weights(make_graph("star", 4)), expected)


def test_metropolis_path_of_three():
    # Degrees 1, 2, 1: both edges weigh 1/(1 + 2).
    expected = np.array(
        [
            [2 * THIRD, THIRD, 0.0],
            [THIRD, THIRD, THIRD],
            [0.0, THIRD, 2 * THIRD],
        ]
    )
    np.testing.assert_allclose(metropolis_weights(nx.path_graph(3)), expected)


@pytest.mark.parametrize(
    "graph",
    [
        make_graph("grid", 12),
        make_graph("star", 7),
        make_graph("erdos-renyi", 15, seed=3, probability=0.3),
        make_graph("random-geometric", 10, seed=1),
    ],
    ids=lambda graph: graph.name,
)
def test_metropolis_doubly_stochastic_symmetric(graph):
    weights = metropolis_weights(graph)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    np.testing.assert_allclose(weights, weights.T)
    assert np.all(np.diag(weights) > 0)
    for k in range(len(weights)):
        for m in range(len(weights)):
            if k != m and not graph.has_edge(k, m):
                assert weights[k, m] == 0.0


def test_averaging_weights_warn():
    with pytest.warns(UserWarning, match="only row stochastic"):
        averaging_weights(make_graph("star", 4))


def test_averaging_weights_star_not_doubly_stochastic():
    with pytest.warns(UserWarning, match="exact diffusion converges to a wrong point"):
        weights = averaging_weights(make_graph("star", 4))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # The hub's column gets 1/4 from itself and 1/2 from each of three leaves.
    assert weights[:, 0].sum() == pytest.approx(0.25 + 3 * 0.5)
    assert not np.allclose(weights, weights.T)


def test_spectral_gap_ring_of_four():
    # Metropolis eigenvalues on a ring of 4 are 1/3 + 2/3 cos(2 pi j / 4):
    # 1, 1/3, -1/3, 1/3. Removing the consensus mode leaves radius 1/3.
    gap = spectral_gap(metropolis_weights(make_graph("ring", 4)))
    assert gap == pytest.approx(2.0 / 3.0)


def test_spectral_gap_complete_graph_one():
    gap = spectral_gap(metropolis_weights(make_graph("complete", 5)))
    assert gap == pytest.approx(1.0)


def test_spectral_gap_custom_projector():
    assert spectral_gap(np.eye(3), np.eye(3)) == pytest.approx(1.0)
    assert spectral_gap(np.eye(3)) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("topology", "num_agents", "edges"),
    [
        ("ring", 6, 6),
        ("grid", 6, 7),
        ("torus", 9, 18),
        ("torus", 12, 24),
        ("star", 5, 4),
        ("complete", 5, 10),
    ],
)
def test_topology_edge_counts(topology, num_agents, edges):
    graph = make_graph(topology, num_agents)
    assert sorted(graph.nodes) == list(range(num_agents))
    assert graph.number_of_edges() == edges
    assert nx.is_connected(graph)


def test_grid_two_by_three_shape():
    graph = make_graph("grid", 6)
    assert graph.name == "grid(2x3)"
    # Row-major numbering: 0 1 2 / 3 4 5.
    expected = {(0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (1, 4), (2, 5)}
    assert {tuple(sorted(edge)) for edge in graph.edges} == expected


def test_torus_every_degree_four():
    graph = make_graph("torus", 9)
    assert {degree for _, degree in graph.degree} == {4}


def test_star_hub_is_agent_zero():
    graph = make_graph("star", 5)
    assert graph.degree[0] == 4
    assert all(graph.degree[k] == 1 for k in range(1, 5))


def test_torus_invalid_size_lists_sizes():
    with pytest.raises(GraphError, match="9, 12"):
        make_graph("torus", 10)


def test_torus_prime_size_rejected():
    with pytest.raises(GraphError, match="both sides >= 3"):
        make_graph("torus", 7)


def test_topology_names_normalised():
    assert make_graph("Erdos_Renyi", 6, probability=1.0).number_of_edges() == 15


def test_unknown_topology_lists_names():
    with pytest.raises(ConfigError, match="ring, grid, torus"):
        make_graph("hypercube", 8)


@pytest.mark.parametrize(
    ("topology", "num_agents"), [("ring", 0), ("ring", 2), ("star", 1), ("grid", 0)]
)
def test_too_few_agents_rejected(topology, num_agents):
    with pytest.raises(ConfigError, match=f"got {num_agents}"):
        make_graph(topology, num_agents)


def test_erdos_renyi_seed_reproducible():
    first = make_graph("erdos-renyi", 12, seed=7, probability=0.4)
    second = make_graph("erdos-renyi", 12, seed=7, probability=0.4)
    assert sorted(first.edges) == sorted(second.edges)


def test_erdos_renyi_seeds_differ():
    edge_sets = {
        tuple(sorted(make_graph("erdos-renyi", 12, seed=s, probability=0.4).edges))
        for s in range(4)
    }
    assert len(edge_sets) > 1


def test_erdos_renyi_probability_one_complete():
    graph = make_graph("erdos-renyi", 4, probability=1.0)
    assert graph.number_of_edges() == 6


def test_erdos_renyi_unconnectable_error():
    with pytest.raises(GraphError, match="K=20") as info:
        make_graph("erdos-renyi", 20, probability=0.01)
    assert "p=0.01" in str(info.value)
    assert "Increase the probability" in str(info.value)


@pytest.mark.parametrize("probability", [0.0, -0.5, 1.5])
def test_erdos_renyi_probability_range(probability):
    with pytest.raises(ConfigError, match="probability"):
        make_graph("erdos-renyi", 5, probability=probability)


def test_random_geometric_edges_match_distances():
    radius = 0.45
    graph = make_graph("random-geometric", 10, seed=2, radius=radius)
    positions = nx.get_node_attributes(graph, "pos")
    assert nx.is_connected(graph)
    for k in range(10):
        for m in range(k + 1, 10):
            close = math.dist(positions[k], positions[m]) <= radius
            assert graph.has_edge(k, m) == close


def test_random_geometric_seed_reproducible():
    first = make_graph("random-geometric", 8, seed=5)
    second = make_graph("random-geometric", 8, seed=5)
    assert sorted(first.edges) == sorted(second.edges)


def test_random_geometric_unconnectable_error():
    with pytest.raises(GraphError, match="radius 0.01"):
        make_graph("random-geometric", 20, radius=0.01)


def test_unused_probability_warns():
    with pytest.warns(UserWarning, match="only applies to 'erdos-renyi'"):
        make_graph("ring", 5, probability=0.3)


def test_edge_list_round_trip(tmp_path):
    graph = make_graph("erdos-renyi", 9, seed=4, probability=0.4)
    path = tmp_path / "graph.txt"
    write_edge_list(graph, path)
    loaded = load_edge_list(path)
    assert sorted(loaded.nodes) == list(range(9))
    assert {tuple(sorted(e)) for e in loaded.edges} == {
        tuple(sorted(e)) for e in graph.edges
    }


def test_edge_list_round_trip_isolated_agent(tmp_path):
    graph = nx.Graph([(0, 1)])
    graph.add_node(2)
    path = tmp_path / "graph.txt"
    write_edge_list(graph, path)
    loaded = load_edge_list(path)
    assert loaded.number_of_nodes() == 3
    assert loaded.number_of_edges() == 1


def test_edge_list_comments_and_blanks(tmp_path):
    path = tmp_path / "graph.txt"
    path.write_text("# a path\n\n0 1  # first edge\n1\t2\n   \n2 3\n")
    graph = load_edge_list(path)
    assert sorted(graph.edges) == [(0, 1), (1, 2), (2, 3)]


def test_edge_list_missing_file(tmp_path):
    with pytest.raises(GraphError, match="not found"):
        load_edge_list(tmp_path / "absent.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 1\n1 2\n2 x\n", r"graph.txt:3: node ids must be integers"),
        ("0 1\n1 2 3\n", r"graph.txt:2: expected two node ids"),
        ("0 1\n-1 0\n", r"graph.txt:2: node ids must be non-negative"),
        ("0 1\n1 3\n", r"none for 2"),
        ("# only a comment\n", r"contains no edges"),
    ],
)
def test_edge_list_bad_file(tmp_path, text, message):
    path = tmp_path / "graph.txt"
    path.write_text(text)
    with pytest.raises(GraphError, match=message):
        load_edge_list(path)


def test_as_graph_relabels_sorted():
    original = nx.Graph([("b", "c"), ("a", "b"), ("c", "c")])
    graph = as_graph(original)
    assert sorted(graph.edges) == [(0, 1), (1, 2)]
    assert graph.graph["node_labels"] == ["a", "b", "c"]
    assert original.has_edge("c", "c")


def test_as_graph_topology_name():
    graph = as_graph("ring", 5)
    assert graph.number_of_edges() == 5


def test_as_graph_topology_needs_agents():
    with pytest.raises(ConfigError, match="needs num_agents"):
        as_graph("ring")


def test_as_graph_edge_list_path(tmp_path):
    path = tmp_path / "graph.txt"
    path.write_text("0 1\n1 2\n")
    assert as_graph(path).number_of_edges() == 2
    assert as_graph(str(path), 3).number_of_nodes() == 3


def test_as_graph_agent_count_mismatch():
    with pytest.raises(GraphError, match="num_agents=4"):
        as_graph(nx.path_graph(3), 4)


def test_as_graph_disconnected_names_components():
    graph = nx.Graph([(0, 1), (2, 3), (4, 5)])
    with pytest.raises(GraphError, match="3 connected components"):
        as_graph(graph)


def test_as_graph_directed_rejected():
    with pytest.raises(GraphError, match="directed"):
        as_graph(nx.DiGraph([(0, 1)]))


def test_as_graph_unknown_name():
    with pytest.raises(ConfigError, match="unknown topology"):
        as_graph("hypercube", 8)


def test_as_graph_missing_path():
    with pytest.raises(GraphError, match="not found"):
        as_graph("no/such/graph.txt")


def test_every_topology_builds():
    for topology in TOPOLOGIES:
        graph = make_graph(topology, 9)
        assert graph.number_of_nodes() == 9
        assert nx.is_connected(graph)
