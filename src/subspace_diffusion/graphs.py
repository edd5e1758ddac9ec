"""Communication graphs and doubly stochastic combination weights.

Every graph the library works with is an undirected :class:`networkx.Graph`
whose nodes are the agent indices ``0 .. K-1``. :func:`as_graph` turns the
accepted inputs (a topology name, an edge-list file, any networkx graph) into
that form and checks that the graph is connected. :func:`metropolis_weights`
builds the symmetric doubly stochastic matrix used for shared parameters.

Edge weights and self-loops of input graphs are ignored: an agent is always
its own neighbour, and the combination weights depend only on the degrees.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import numpy as np

from subspace_diffusion.errors import ConfigError, GraphError

__all__ = [
    "TOPOLOGIES",
    "adjacency_matrix",
    "as_graph",
    "averaging_weights",
    "describe_graph",
    "load_edge_list",
    "make_graph",
    "metropolis_weights",
    "spectral_gap",
    "spectral_radius",
    "validate_agent_graph",
    "write_edge_list",
]

TOPOLOGIES = (
    "ring",
    "grid",
    "torus",
    "complete",
    "star",
    "erdos-renyi",
    "random-geometric",
)

DEFAULT_PROBABILITY = 0.5
"""Edge probability of ``erdos-renyi`` graphs when none is given."""

DEFAULT_RADIUS = 0.5
"""Connection radius of ``random-geometric`` graphs (unit square) when none is given."""

MAX_DRAWS = 100
"""Number of random graphs drawn before giving up on a connected one."""

_MIN_AGENTS = {"ring": 3, "star": 2}

AVERAGING_WARNING = (
    "averaging weights c_kl = 1/(n_k + 1) are only row stochastic (and symmetric "
    "only on regular graphs), so U^T A != U^T and exact diffusion converges to a "
    "wrong point with them on graphs that are not regular. Use Metropolis "
    "weights (--weights metropolis, metropolis_weights()) unless you need this rule."
)


def make_graph(
    topology: str,
    num_agents: int,
    *,
    seed: int | None = 0,
    probability: float | None = None,
    radius: float | None = None,
) -> nx.Graph:
    """Build a connected graph of a named topology on agents ``0 .. K-1``.

    Parameters
    ----------
    topology : str
        One of :data:`TOPOLOGIES`. Case and ``_`` versus ``-`` do not matter.
        ``grid`` and ``torus`` are ``r x c`` lattices with ``r * c = K`` and the
        factors as close to square as possible (``r <= c``), numbered row by
        row. ``star`` has agent 0 as its hub. ``random-geometric`` places the
        agents uniformly in the unit square and stores the positions in the
        node attribute ``"pos"``.
    num_agents : int
        Number of agents K. A ring needs at least 3, a star at least 2.
    seed : int or None, default 0
        Seed of the random topologies. ``None`` draws a fresh graph each call.
    probability : float, optional
        Edge probability of ``erdos-renyi``, default :data:`DEFAULT_PROBABILITY`.
    radius : float, optional
        Connection radius of ``random-geometric``, default :data:`DEFAULT_RADIUS`.

    Returns
    -------
    networkx.Graph
        Connected graph with nodes ``0 .. K-1``. Its ``name`` describes it, for
        example ``"grid(2x3)"``.

    Raises
    ------
    ConfigError
        If the topology is unknown, ``num_agents`` is too small for it, or
        ``probability`` or ``radius`` is out of range.
    GraphError
        If no torus exists for K, or no connected random graph was drawn in
        :data:`MAX_DRAWS` attempts.

    Notes
    -----
    Random topologies draw from one generator seeded once, redrawing until the
    graph is connected, so the same seed always returns the same graph.

    Examples
    --------
    >>> make_graph("grid", 6).number_of_edges()
    7
    """
    name = _normalise_topology(topology)
    num_agents = _check_num_agents(num_agents, name)
    if probability is not None and name != "erdos-renyi":
        warnings.warn(
            f"probability={probability} only applies to 'erdos-renyi' and is "
            f"ignored for topology {name!r}.",
            stacklevel=2,
        )
    if radius is not None and name != "random-geometric":
        warnings.warn(
            f"radius={radius} only applies to 'random-geometric' and is ignored "
            f"for topology {name!r}.",
            stacklevel=2,
        )

    if name == "ring":
        graph = nx.cycle_graph(num_agents)
        graph.name = f"ring({num_agents})"
    elif name == "complete":
        graph = nx.complete_graph(num_agents)
        graph.name = f"complete({num_agents})"
    elif name == "star":
        graph = nx.star_graph(num_agents - 1)
        graph.name = f"star({num_agents})"
    elif name in ("grid", "torus"):
        graph = _make_lattice(num_agents, periodic=name == "torus")
    elif name == "erdos-renyi":
        graph = _make_erdos_renyi(num_agents, probability, seed)
    else:
        graph = _make_random_geometric(num_agents, radius, seed)
    return graph


def _normalise_topology(topology: str) -> str:
    if not isinstance(topology, str):
        raise ConfigError(
            f"topology must be a string, got {type(topology).__name__} "
            f"{topology!r}. Use one of {', '.join(TOPOLOGIES)}."
        )
    name = topology.strip().lower().replace("_", "-")
    if name not in TOPOLOGIES:
        raise ConfigError(
            f"unknown topology {topology!r}. Use one of {', '.join(TOPOLOGIES)}, "
            "or pass an edge-list file or a networkx graph to as_graph()."
        )
    return name


def _check_num_agents(num_agents: int, topology: str) -> int:
    if isinstance(num_agents, bool) or not isinstance(num_agents, (int, np.integer)):
        raise ConfigError(
            f"num_agents must be an integer, got {type(num_agents).__name__} "
            f"{num_agents!r}."
        )
    minimum = _MIN_AGENTS.get(topology, 1)
    if num_agents < minimum:
        raise ConfigError(
            f"topology {topology!r} needs num_agents >= {minimum}, got "
            f"{num_agents}. Use more agents or another topology."
        )
    return int(num_agents)


def _lattice_shape(num_agents: int) -> tuple[int, int]:
    rows = math.isqrt(num_agents)
    while num_agents % rows:
        rows -= 1
    return rows, num_agents // rows


def _make_lattice(num_agents: int, *, periodic: bool) -> nx.Graph:
    rows, cols = _lattice_shape(num_agents)
    if periodic and rows < 3:
        # The factorisation closest to a square has the largest smaller side,
        # so no other factorisation has both sides >= 3 either.
        candidates = range(max(9, num_agents - 12), num_agents + 13)
        valid = [k for k in candidates if _lattice_shape(k)[0] >= 3]
        nearest = sorted(sorted(valid, key=lambda k: abs(k - num_agents))[:4])
        raise GraphError(
            f"no torus with both sides >= 3 has {num_agents} agents (the closest "
            f"factorisation is {rows}x{cols}). Use a K that factors as r*c with "
            f"r, c >= 3, such as {', '.join(map(str, nearest))}, or use topology "
            "'grid'."
        )
    lattice = nx.grid_2d_graph(rows, cols, periodic=periodic)
    graph = nx.Graph()
    graph.add_nodes_from(range(num_agents))
    graph.add_edges_from(
        (i * cols + j, k * cols + m) for (i, j), (k, m) in lattice.edges
    )
    graph.name = f"{'torus' if periodic else 'grid'}({rows}x{cols})"
    return graph


def _make_erdos_renyi(
    num_agents: int, probability: float | None, seed: int | None
) -> nx.Graph:
    if probability is None:
        probability = DEFAULT_PROBABILITY
    if not 0.0 < probability <= 1.0:
        raise ConfigError(
            f"erdos-renyi probability must be in (0, 1], got {probability}."
        )
    threshold = math.log(num_agents) / num_agents if num_agents > 1 else 0.0
    hint = (
        f"Increase the probability well above ln(K)/K = {threshold:.3g}, the "
        "connectivity threshold, or try another seed."
    )
    graph = _draw_connected(
        lambda rng: nx.gnp_random_graph(num_agents, probability, seed=rng),
        seed,
        f"Erdos-Renyi graph with K={num_agents} and probability p={probability}",
        hint,
    )
    graph.name = f"erdos-renyi({num_agents}, p={probability}, seed={seed})"
    return graph


def _make_random_geometric(
    num_agents: int, radius: float | None, seed: int | None
) -> nx.Graph:
    if radius is None:
        radius = DEFAULT_RADIUS
    if not radius > 0.0:
        raise ConfigError(f"random-geometric radius must be positive, got {radius}.")
    # In the unit square the graph is connected with high probability roughly
    # once pi r^2 K exceeds ln K, so the hint suggests a radius above that.
    threshold = (
        math.sqrt(math.log(num_agents) / (math.pi * num_agents))
        if num_agents > 1
        else 0.0
    )
    hint = (
        f"Increase the radius well above sqrt(ln(K)/(pi K)) = {threshold:.3g}, "
        "the connectivity threshold, or try another seed."
    )
    graph = _draw_connected(
        lambda rng: nx.random_geometric_graph(num_agents, radius, seed=rng),
        seed,
        f"random geometric graph with K={num_agents} and radius {radius}",
        hint,
    )
    graph.name = f"random-geometric({num_agents}, radius={radius}, seed={seed})"
    return graph


def _draw_connected(
    draw: Callable[[random.Random], nx.Graph],
    seed: int | None,
    description: str,
    hint: str,
) -> nx.Graph:
    rng = random.Random(seed)
    for _ in range(MAX_DRAWS):
        graph = draw(rng)
        if nx.is_connected(graph):
            return graph
    raise GraphError(
        f"could not draw a connected {description} in {MAX_DRAWS} draws "
        f"(seed {seed}). {hint}"
    )


def load_edge_list(path: str | os.PathLike[str]) -> nx.Graph:
    """Read a graph from a text file of ``u v`` lines.

    Each non-blank line contains two integer node ids separated by whitespace.
    ``#`` starts a comment. The ids must be exactly ``0 .. K-1``, and no id
    is renumbered. A line ``k k`` declares agent ``k`` without adding an edge,
    which is how :func:`write_edge_list` stores an agent with no neighbours.

    Parameters
    ----------
    path : str or os.PathLike
        The edge-list file.

    Returns
    -------
    networkx.Graph
        Graph with nodes ``0 .. K-1``, named after the file. It may be
        disconnected, and :func:`as_graph` checks that.

    Raises
    ------
    GraphError
        If the file is missing or unreadable, a line is not two non-negative
        integers, or the ids are not contiguous from 0. The message names the
        file and the line number.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as error:
        raise GraphError(
            f"edge-list file {str(path)!r} not found. Check the path, or pass a "
            f"topology name ({', '.join(TOPOLOGIES)})."
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise GraphError(
            f"cannot read edge-list file {str(path)!r}: {error}"
        ) from error

    graph = nx.Graph()
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise GraphError(
                f"{path}:{line_number}: expected two node ids 'u v', got {line.strip()!r}."
            )
        try:
            u, v = (int(field) for field in fields)
        except ValueError as error:
            raise GraphError(
                f"{path}:{line_number}: node ids must be integers, got {line.strip()!r}."
            ) from error
        if u < 0 or v < 0:
            raise GraphError(
                f"{path}:{line_number}: node ids must be non-negative, got {line.strip()!r}."
            )
        graph.add_nodes_from((u, v))
        if u != v:
            graph.add_edge(u, v)

    if graph.number_of_nodes() == 0:
        raise GraphError(f"edge-list file {str(path)!r} contains no edges.")
    missing = sorted(set(range(max(graph.nodes) + 1)) - set(graph.nodes))
    if missing:
        raise GraphError(
            f"edge-list file {str(path)!r} has node ids up to {max(graph.nodes)} but "
            f"none for {_format_ids(missing)}. Number the agents 0 .. K-1 without "
            "gaps, or declare an agent with no neighbours by a line 'k k'."
        )
    ordered = nx.Graph(name=f"edge list {path.name}")
    ordered.add_nodes_from(range(graph.number_of_nodes()))
    ordered.add_edges_from(graph.edges)
    return ordered


def write_edge_list(graph: nx.Graph, path: str | os.PathLike[str]) -> None:
    """Write ``graph`` in the format :func:`load_edge_list` reads.

    Agents without neighbours are written as ``k k`` lines so that reading the
    file back gives the same number of agents.
    """
    num_agents = validate_agent_graph(graph)
    lines = [f"# {num_agents} agents, {graph.number_of_edges()} edges"]
    lines += [f"{u} {v}" for u, v in sorted(_sorted_edges(graph))]
    lines += [f"{k} {k}" for k in range(num_agents) if graph.degree(k) == 0]
    Path(path).write_text("\n".join(lines) + "\n")


def _format_ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def _sorted_edges(graph: nx.Graph) -> list[tuple[int, int]]:
    return [(min(u, v), max(u, v)) for u, v in graph.edges if u != v]


def as_graph(
    spec: nx.Graph | str | os.PathLike[str],
    num_agents: int | None = None,
    *,
    seed: int | None = 0,
) -> nx.Graph:
    """Convert a graph specification to a connected graph on ``0 .. K-1``.

    Parameters
    ----------
    spec : networkx.Graph, str or os.PathLike
        A networkx graph (its nodes are renumbered ``0 .. K-1`` in sorted
        order, and the original labels are stored in
        ``graph.graph["node_labels"]``), a topology name from
        :data:`TOPOLOGIES`, or the path of an edge-list file.
    num_agents : int, optional
        Number of agents. Required for a topology name. For a graph or a file
        it is checked against the number of nodes.
    seed : int or None, default 0
        Seed of the random topologies.

    Returns
    -------
    networkx.Graph
        A new undirected simple graph. The input graph is not modified.

    Raises
    ------
    GraphError
        If the graph is directed, disconnected, empty, has a number of nodes
        other than ``num_agents``, or the file is invalid.
    ConfigError
        If ``spec`` has an unsupported type or names an unknown topology.
    """
    if isinstance(spec, nx.Graph):
        graph = _relabel_graph(spec)
    elif isinstance(spec, (str, os.PathLike)):
        graph = _graph_from_name_or_path(spec, num_agents, seed)
    else:
        raise ConfigError(
            f"cannot build a graph from {type(spec).__name__} {spec!r}. Pass a "
            "networkx graph, a topology name or an edge-list path."
        )

    size = graph.number_of_nodes()
    if size == 0:
        raise GraphError("the graph has no nodes. Give it at least one agent.")
    if num_agents is not None and size != num_agents:
        raise GraphError(
            f"the graph {describe_graph(graph)} has {size} agents but "
            f"num_agents={num_agents}. Make the two agree."
        )
    if not nx.is_connected(graph):
        components = sorted(
            (len(c) for c in nx.connected_components(graph)), reverse=True
        )
        raise GraphError(
            f"the graph {describe_graph(graph)} is disconnected: it has "
            f"{len(components)} connected components of sizes {components}. "
            "Diffusion needs a connected graph, so add edges between the components."
        )
    return graph


def _relabel_graph(spec: nx.Graph) -> nx.Graph:
    if spec.is_directed():
        raise GraphError(
            f"the graph {describe_graph(spec)} is directed, but combination weights "
            "need an undirected graph. Convert it with graph.to_undirected()."
        )
    try:
        labels = sorted(spec.nodes)
    except TypeError as error:
        raise GraphError(
            "the graph's node labels cannot be sorted, so they cannot be numbered "
            f"0 .. K-1 in a defined order: {error}. Relabel the nodes first, for "
            "example with networkx.convert_node_labels_to_integers()."
        ) from error
    index = {label: k for k, label in enumerate(labels)}
    graph = nx.Graph(name=spec.name)
    for label in labels:
        graph.add_node(index[label], **spec.nodes[label])
    graph.add_edges_from((index[u], index[v]) for u, v in spec.edges if u != v)
    graph.graph["node_labels"] = labels
    return graph


def _graph_from_name_or_path(
    spec: str | os.PathLike[str], num_agents: int | None, seed: int | None
) -> nx.Graph:
    if isinstance(spec, str):
        name = spec.strip().lower().replace("_", "-")
        if name in TOPOLOGIES:
            if num_agents is None:
                raise ConfigError(
                    f"topology {spec!r} needs num_agents. Pass the number of agents."
                )
            return make_graph(name, num_agents, seed=seed)
        looks_like_path = any(sep in spec for sep in ("/", "\\", "."))
        if not looks_like_path and not Path(spec).is_file():
            _normalise_topology(spec)  # raises the unknown-topology ConfigError
    return load_edge_list(spec)


def validate_agent_graph(graph: nx.Graph) -> int:
    """Check that ``graph`` is undirected with nodes ``0 .. K-1`` and return K.

    Raises
    ------
    GraphError
        If it is not a networkx graph, is directed, or its nodes are not
        ``0 .. K-1``. Use :func:`as_graph` to renumber the nodes.
    """
    if not isinstance(graph, nx.Graph):
        raise GraphError(
            f"expected a networkx graph, got {type(graph).__name__}. Build one "
            "with as_graph()."
        )
    if graph.is_directed():
        raise GraphError(
            f"the graph {describe_graph(graph)} is directed. Convert it with "
            "graph.to_undirected() or as_graph()."
        )
    num_agents = graph.number_of_nodes()
    if set(graph.nodes) != set(range(num_agents)):
        raise GraphError(
            f"the graph's nodes must be the agent indices 0 .. {num_agents - 1}, "
            f"got {sorted(graph.nodes, key=str)[:10]}. Renumber them with as_graph()."
        )
    return num_agents


def describe_graph(graph: nx.Graph, name: str | None = None) -> str:
    """Return a short description such as ``"ring(6) (K=6, 6 edges)"``."""
    label = name if name is not None else graph.name
    sizes = f"K={graph.number_of_nodes()}, {graph.number_of_edges()} edges"
    return f"{label} ({sizes})" if label else f"graph ({sizes})"


def adjacency_matrix(graph: nx.Graph) -> np.ndarray:
    """Return the K x K 0/1 adjacency matrix, without self-loops, as float64."""
    num_agents = validate_agent_graph(graph)
    adjacency = np.zeros((num_agents, num_agents))
    for u, v in _sorted_edges(graph):
        adjacency[u, v] = adjacency[v, u] = 1.0
    return adjacency


def metropolis_weights(graph: nx.Graph) -> np.ndarray:
    """Build the Metropolis-Hastings combination matrix of ``graph``.

    ``c_kl = 1 / (1 + max(n_k, n_l))`` for neighbours ``l != k``, where ``n``
    is the degree, and ``c_kk = 1 - sum_{l != k} c_kl``. The matrix is
    symmetric, doubly stochastic, has a positive diagonal, and on a connected
    graph ``spectral_radius(C - 11^T/K) < 1``.

    Returns
    -------
    numpy.ndarray
        K x K float64 matrix, zero outside the edges and the diagonal.
    """
    adjacency = adjacency_matrix(graph)
    degrees = adjacency.sum(axis=1)
    weights = adjacency / (1.0 + np.maximum.outer(degrees, degrees))
    np.fill_diagonal(weights, 1.0 - weights.sum(axis=1))
    return weights


def averaging_weights(graph: nx.Graph) -> np.ndarray:
    """Build the averaging rule ``c_kl = 1 / (n_k + 1)`` over the neighbourhood.

    Every agent weights itself and each neighbour equally. The matrix is only
    row stochastic, and it is symmetric only on regular graphs.

    Warns
    -----
    UserWarning
        If the graph is not regular, because exact diffusion then converges to
        a wrong point with these weights (``U^T A != U^T``).
    """
    adjacency = adjacency_matrix(graph)
    degrees = adjacency.sum(axis=1)
    if degrees.min() != degrees.max():
        warnings.warn(AVERAGING_WARNING, UserWarning, stacklevel=2)
    weights = adjacency + np.eye(adjacency.shape[0])
    return weights / weights.sum(axis=1, keepdims=True)


def spectral_radius(matrix: np.ndarray) -> float:
    """Return the largest absolute eigenvalue of a square matrix."""
    matrix = _as_square(matrix, "matrix")
    if matrix.size == 0:
        return 0.0
    if np.array_equal(matrix, matrix.T):
        return float(np.max(np.abs(np.linalg.eigvalsh(matrix))))
    return float(np.max(np.abs(np.linalg.eigvals(matrix))))


def spectral_gap(matrix: np.ndarray, projector: np.ndarray | None = None) -> float:
    """Return ``1 - spectral_radius(A - P_U)``.

    Parameters
    ----------
    matrix : numpy.ndarray
        Combination matrix A, N x N.
    projector : numpy.ndarray, optional
        Projector P_U onto the subspace, N x N. Defaults to ``11^T / N``, the
        consensus projector.

    Returns
    -------
    float
        Positive when ``A^i`` converges to ``P_U``, and larger for faster
        convergence.
    """
    matrix = _as_square(matrix, "matrix")
    size = matrix.shape[0]
    if projector is None:
        projector = np.full((size, size), 1.0 / size)
    projector = _as_square(projector, "projector")
    if projector.shape != matrix.shape:
        raise ConfigError(
            f"projector has shape {projector.shape} but the matrix has shape "
            f"{matrix.shape}. Pass a projector of the same size."
        )
    return 1.0 - spectral_radius(matrix - projector)


def _as_square(matrix: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ConfigError(f"{name} must be a square matrix, got shape {array.shape}.")
    return array
