"""Subspaces that couple the agents' parameters.

The constraint ``W in range(U)`` is described in one of two ways.

:class:`AgentSubspace` is the agent-level basis ``U_g`` (K x P) of one
parameter group. It acts as ``U_g (x) I`` on every entry of the group, so a
neural network never needs an N x N matrix. The factories build the usual
kinds: :func:`shared_subspace` (consensus), :func:`local_subspace` (no
coupling), :func:`clustered_subspace`, :func:`smooth_subspace` (graph
Laplacian eigenvectors) and :func:`general_subspace` (any basis).

:class:`VectorSubspace` is a full basis ``U`` (N x P) over the stacked vector
``W = col{w_1, ..., w_K}``, for vector problems in which agent k owns
``M_k`` entries and the sizes may differ between agents.

Reference: R. Nassif, S. Vlaski, A. H. Sayed, "Adaptation and learning over
networks under subspace constraints, Part I: stability analysis",
arXiv:1905.08750.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
import numpy as np

from subspace_diffusion.errors import ConfigError
from subspace_diffusion.graphs import adjacency_matrix, as_graph

__all__ = [
    "KINDS",
    "AgentSubspace",
    "VectorSubspace",
    "clustered_subspace",
    "general_subspace",
    "local_subspace",
    "shared_subspace",
    "smooth_subspace",
    "vector_subspace",
]

KINDS = ("shared", "local", "clustered", "smooth", "general")

ORTHONORMALITY_TOL = 1e-8
"""Largest entry of ``|U^T U - I|`` accepted as orthonormal."""


@dataclass(frozen=True, eq=False, repr=False)
class AgentSubspace:
    """Agent-level basis ``U_g`` of one parameter group.

    The group's constraint is ``W_g in range(U_g (x) I)``: every entry of the
    group, taken across the K agents, lies in the column span of ``U_g``.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`. ``"shared"`` must span the all-ones vector,
        ``"local"`` must have P == K, and ``"clustered"`` must span the cluster
        indicators given in ``clusters``. The combination-matrix design relies
        on these, so they are checked.
    basis : numpy.ndarray
        K x P matrix with orthonormal columns. A read-only float64 copy is
        stored.
    clusters : tuple of tuple of int, optional
        Agent indices of each cluster, only for ``kind="clustered"``.

    Raises
    ------
    ConfigError
        If the kind is unknown, the basis is not K x P with orthonormal
        columns, or the basis does not match its kind.
    """

    kind: str
    basis: np.ndarray
    clusters: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"unknown subspace kind {self.kind!r}. Use one of {', '.join(KINDS)}."
            )
        basis = _checked_orthonormal_basis(self.basis, "agent subspace basis")
        object.__setattr__(self, "basis", basis)
        num_agents, dimension = basis.shape

        if self.kind == "clustered":
            if self.clusters is None:
                raise ConfigError(
                    "a clustered subspace needs its clusters. Build it with "
                    "clustered_subspace()."
                )
            clusters = _normalise_groups(self.clusters, num_agents)
            object.__setattr__(self, "clusters", clusters)
            expected = _cluster_basis(clusters, num_agents)
        elif self.clusters is not None:
            raise ConfigError(
                f"clusters are only used by kind 'clustered', got kind {self.kind!r}. "
                "Drop the clusters or use clustered_subspace()."
            )
        elif self.kind == "shared":
            expected = np.full((num_agents, 1), 1.0 / np.sqrt(num_agents))
        elif self.kind == "local":
            expected = np.eye(num_agents)
        else:
            return

        if dimension != expected.shape[1] or not np.allclose(
            basis @ basis.T, expected @ expected.T, atol=ORTHONORMALITY_TOL
        ):
            raise ConfigError(
                f"a {self.kind} subspace basis of shape {basis.shape} does not span "
                f"the {self.kind} subspace of {num_agents} agents. Build it with "
                f"{self.kind}_subspace(), or use kind 'general'."
            )

    @property
    def num_agents(self) -> int:
        """Number of agents K."""
        return self.basis.shape[0]

    @property
    def dimension(self) -> int:
        """Subspace dimension P."""
        return self.basis.shape[1]

    @cached_property
    def projector(self) -> np.ndarray:
        """Read-only K x K orthogonal projector ``U_g U_g^T``."""
        return _read_only(self.basis @ self.basis.T)

    @property
    def is_identity(self) -> bool:
        """True when P == K, so the projector is the identity and agents are uncoupled."""
        return self.dimension == self.num_agents

    def describe(self) -> str:
        """Return a short label such as ``"clustered(3 clusters)"``."""
        if self.kind == "clustered":
            count = len(self.clusters or ())
            return f"clustered({count} cluster{'s' if count != 1 else ''})"
        if self.kind == "smooth":
            count = self.dimension
            return f"smooth({count} eigenvector{'s' if count != 1 else ''})"
        if self.kind == "general":
            return f"general(dimension {self.dimension})"
        return self.kind

    def __repr__(self) -> str:
        return (
            f"AgentSubspace(kind={self.kind!r}, num_agents={self.num_agents}, "
            f"dimension={self.dimension})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentSubspace):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.clusters == other.clusters
            and np.array_equal(self.basis, other.basis)
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.clusters, self.basis.shape, self.basis.tobytes()))


@dataclass(frozen=True, eq=False, repr=False)
class VectorSubspace:
    """Basis ``U`` (N x P) over the stacked vector of all agents' parameters.

    Agent k owns the entries ``offsets[k]:offsets[k + 1]`` of the stacked
    vector, ``M_k = sizes[k]`` of them, with agents in order.

    Parameters
    ----------
    basis : numpy.ndarray
        N x P matrix with orthonormal columns, ``N = sum(sizes)``. A read-only
        float64 copy is stored.
    sizes : tuple of int
        Number of entries ``M_k`` of each agent.
    agent_subspace : AgentSubspace, optional
        Set by :meth:`from_agent_subspace` when ``basis = U_g (x) I_dim``, so
        that the combination matrix can be designed on the K x K level.

    Raises
    ------
    ConfigError
        If a size is below 1, ``N != sum(sizes)``, or the columns are not
        orthonormal.
    """

    basis: np.ndarray
    sizes: tuple[int, ...]
    agent_subspace: AgentSubspace | None = field(default=None)

    def __post_init__(self) -> None:
        sizes = tuple(_check_size(size) for size in self.sizes)
        if not sizes:
            raise ConfigError(
                "sizes is empty. Give the number of entries of each agent."
            )
        object.__setattr__(self, "sizes", sizes)
        basis = _checked_orthonormal_basis(self.basis, "vector subspace basis")
        if basis.shape[0] != sum(sizes):
            raise ConfigError(
                f"the basis has {basis.shape[0]} rows but the agent sizes {sizes} add "
                f"up to {sum(sizes)}. Give one row per entry of the stacked vector."
            )
        object.__setattr__(self, "basis", basis)

    @classmethod
    def from_agent_subspace(
        cls, agent_subspace: AgentSubspace, dim: int
    ) -> VectorSubspace:
        """Build ``U = U_g (x) I_dim`` for K agents of ``dim`` entries each.

        Entry ``j`` of agent ``k`` is row ``k * dim + j`` of the stacked vector.
        """
        dim = _check_size(dim)
        basis = np.kron(agent_subspace.basis, np.eye(dim))
        sizes = (dim,) * agent_subspace.num_agents
        return cls(basis, sizes, agent_subspace)

    @property
    def num_agents(self) -> int:
        """Number of agents K."""
        return len(self.sizes)

    @property
    def dimension(self) -> int:
        """Subspace dimension P."""
        return self.basis.shape[1]

    @property
    def total_size(self) -> int:
        """Length N of the stacked vector."""
        return self.basis.shape[0]

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each agent's entries, plus N at the end (K + 1 values)."""
        return tuple(
            int(offset) for offset in np.concatenate([[0], np.cumsum(self.sizes)])
        )

    @cached_property
    def projector(self) -> np.ndarray:
        """Read-only N x N orthogonal projector ``U U^T``."""
        return _read_only(self.basis @ self.basis.T)

    def agent_slice(self, agent: int) -> slice:
        """Slice of agent ``agent``'s entries in the stacked vector."""
        return slice(self.offsets[agent], self.offsets[agent + 1])

    def describe(self) -> str:
        """Return a short label such as ``"shared (x) I_3"``."""
        if self.agent_subspace is not None:
            return f"{self.agent_subspace.describe()} (x) I_{self.sizes[0]}"
        return f"vector(dimension {self.dimension}, sizes {list(self.sizes)})"

    def __repr__(self) -> str:
        return (
            f"VectorSubspace(sizes={self.sizes}, dimension={self.dimension}, "
            f"agent_subspace={self.agent_subspace!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorSubspace):
            return NotImplemented
        return (
            self.sizes == other.sizes
            and self.agent_subspace == other.agent_subspace
            and np.array_equal(self.basis, other.basis)
        )

    def __hash__(self) -> int:
        return hash((self.sizes, self.basis.shape, self.basis.tobytes()))


def shared_subspace(num_agents: int) -> AgentSubspace:
    """Build the consensus subspace ``U_g = 1 / sqrt(K)``, one model for all agents."""
    num_agents = _check_size(num_agents, "num_agents")
    return AgentSubspace("shared", np.full((num_agents, 1), 1.0 / np.sqrt(num_agents)))


def local_subspace(num_agents: int) -> AgentSubspace:
    """Build the uncoupled subspace ``U_g = I_K``: every agent keeps its own model."""
    num_agents = _check_size(num_agents, "num_agents")
    return AgentSubspace("local", np.eye(num_agents))


def clustered_subspace(
    clusters: Sequence[Hashable] | Sequence[Sequence[int]],
    num_agents: int | None = None,
) -> AgentSubspace:
    """Build the subspace in which agents of the same cluster share a model.

    Parameters
    ----------
    clusters : sequence
        Either one cluster label per agent (``[0, 1, 0, 1]`` or
        ``["a", "b", "a", "b"]``), or the agent indices of each cluster
        (``[[0, 2], [1, 3]]``).
    num_agents : int, optional
        Number of agents K. When given, it is checked, which catches agents
        missing at the end of a list of clusters.

    Returns
    -------
    AgentSubspace
        Kind ``"clustered"``. Column c is the indicator of cluster c divided by
        ``sqrt(|c|)``, with clusters ordered by their smallest agent.

    Raises
    ------
    ConfigError
        If an agent is missing or appears in two clusters, a cluster is empty,
        the input mixes labels and lists, or the count differs from
        ``num_agents``.
    """
    items = list(clusters)
    if not items:
        raise ConfigError("clusters is empty. Give a cluster label for every agent.")
    is_group = [
        isinstance(item, (Sequence, set, frozenset, np.ndarray))
        and not isinstance(item, str)
        for item in items
    ]
    if all(is_group):
        groups = _normalise_groups(items, num_agents)
    elif not any(is_group):
        groups = _groups_from_labels(items)
    else:
        raise ConfigError(
            f"clusters mixes labels and lists of agents: {items!r}. Give either "
            "one label per agent or one list of agent indices per cluster."
        )
    size = sum(len(group) for group in groups)
    if num_agents is not None and size != num_agents:
        raise ConfigError(
            f"the clusters cover {size} agents but num_agents={num_agents}. "
            "Assign every agent to exactly one cluster."
        )
    return AgentSubspace("clustered", _cluster_basis(groups, size), groups)


def smooth_subspace(graph: nx.Graph, num_eigenvectors: int) -> AgentSubspace:
    """Build the subspace of the graph Laplacian's smoothest eigenvectors.

    The columns of ``U_g`` are the ``P = num_eigenvectors`` eigenvectors of ``L = D - A``
    (degree minus adjacency matrix) with the smallest eigenvalues. The first
    one is always ``1 / sqrt(K)``. Each eigenvector's sign is fixed so that
    its largest entry is positive, so the basis is reproducible.

    Parameters
    ----------
    graph : networkx.Graph
        Connected graph, converted by :func:`~subspace_diffusion.graphs.as_graph`.
    num_eigenvectors : int
        P, between 1 and K.

    Warns
    -----
    UserWarning
        If eigenvalue P and eigenvalue P + 1 are equal, because the subspace
        then splits an eigenspace and which vectors it keeps is arbitrary.

    Raises
    ------
    ConfigError
        If P is not between 1 and K.
    """
    graph = as_graph(graph)
    num_agents = graph.number_of_nodes()
    dimension = _check_size(num_eigenvectors, "num_eigenvectors")
    if dimension > num_agents:
        raise ConfigError(
            f"num_eigenvectors={dimension} exceeds the number of agents "
            f"{num_agents}. Use at most {num_agents}."
        )
    adjacency = adjacency_matrix(graph)
    laplacian = np.diag(adjacency.sum(axis=1)) - adjacency
    eigenvalues, eigenvectors = np.linalg.eigh(laplacian)

    if dimension < num_agents:
        scale = max(1.0, float(eigenvalues[-1]))
        if eigenvalues[dimension] - eigenvalues[dimension - 1] < 1e-9 * scale:
            warnings.warn(
                f"Laplacian eigenvalues {dimension} and {dimension + 1} are equal "
                f"({eigenvalues[dimension - 1]:.6g}), so the {dimension} smoothest "
                "eigenvectors split an eigenspace and the subspace is not unique. "
                "Choose num_eigenvectors so that it keeps whole eigenspaces.",
                stacklevel=2,
            )

    basis = eigenvectors[:, :dimension]
    basis[:, 0] = 1.0 / np.sqrt(num_agents)
    largest = np.argmax(np.abs(basis), axis=0)
    basis = basis * np.sign(basis[largest, np.arange(dimension)])
    return AgentSubspace("smooth", basis)


def general_subspace(basis: np.ndarray) -> AgentSubspace:
    """Build the subspace spanned by the columns of any K x P ``basis``.

    The columns are orthonormalised by QR with the diagonal of R made
    positive, so a basis that is already orthonormal is kept. A 1-D array is
    taken as a single column.

    Raises
    ------
    ConfigError
        If the basis is not finite, has more columns than rows, or its columns
        are linearly dependent. The message gives the rank found.
    """
    return AgentSubspace("general", _orthonormalise(basis, "basis"))


def vector_subspace(basis: np.ndarray, sizes: Sequence[int]) -> VectorSubspace:
    """Build a :class:`VectorSubspace` from any N x P ``basis``.

    The columns are orthonormalised as in :func:`general_subspace`.

    Raises
    ------
    ConfigError
        If the basis is rank deficient or ``N != sum(sizes)``.
    """
    return VectorSubspace(_orthonormalise(basis, "basis"), tuple(sizes))


def _check_size(value: int, name: str = "size") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}."
        )
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}.")
    return int(value)


def _as_basis_array(basis: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(basis, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[1] > array.shape[0]:
        raise ConfigError(
            f"{name} must be a matrix with 1 <= columns <= rows, got shape "
            f"{array.shape}. Give one row per agent entry and one column per "
            "basis vector."
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(
            f"{name} contains NaN or infinite entries. Pass a finite basis."
        )
    return array


def _checked_orthonormal_basis(basis: np.ndarray, name: str) -> np.ndarray:
    array = _as_basis_array(basis, name)
    gram_error = np.max(np.abs(array.T @ array - np.eye(array.shape[1])))
    if gram_error > ORTHONORMALITY_TOL:
        raise ConfigError(
            f"{name} columns are not orthonormal: max |U^T U - I| = {gram_error:.3g} "
            f"exceeds {ORTHONORMALITY_TOL}. Pass the basis through "
            "general_subspace() to orthonormalise it."
        )
    return _read_only(array.copy())


def _orthonormalise(basis: np.ndarray, name: str) -> np.ndarray:
    array = _as_basis_array(basis, name)
    singular_values = np.linalg.svd(array, compute_uv=False)
    threshold = singular_values[0] * max(array.shape) * np.finfo(np.float64).eps
    rank = int(np.sum(singular_values > threshold))
    if rank < array.shape[1]:
        raise ConfigError(
            f"{name} of shape {array.shape} has rank {rank}, below its "
            f"{array.shape[1]} columns, so the columns are linearly dependent. "
            f"Drop dependent columns to keep {rank} independent ones."
        )
    q, r = np.linalg.qr(array)
    return q * np.sign(np.diag(r))


def _normalise_groups(
    groups: Sequence[Sequence[int]], num_agents: int | None
) -> tuple[tuple[int, ...], ...]:
    owner: dict[int, int] = {}
    for index, group in enumerate(groups):
        members = list(group)
        if not members:
            raise ConfigError(
                f"cluster {index} is empty. Every cluster needs an agent."
            )
        for agent in members:
            if isinstance(agent, bool) or not isinstance(agent, (int, np.integer)):
                raise ConfigError(
                    f"cluster {index} contains {agent!r}, which is not an agent index. "
                    "Use integer indices 0 .. K-1."
                )
            if agent < 0:
                raise ConfigError(
                    f"cluster {index} contains negative agent index {agent}."
                )
            if int(agent) in owner:
                raise ConfigError(
                    f"agent {agent} appears twice, in cluster {owner[int(agent)]} and "
                    f"cluster {index}. Put every agent in exactly one cluster."
                )
            owner[int(agent)] = index
    size = max(owner) + 1 if num_agents is None else num_agents
    missing = sorted(set(range(size)) - set(owner))
    if missing:
        raise ConfigError(
            f"agents {missing[:10]} are in no cluster. Put every agent 0 .. "
            f"{size - 1} in exactly one cluster."
        )
    extra = sorted(agent for agent in owner if agent >= size)
    if extra:
        raise ConfigError(
            f"agents {extra[:10]} are out of range for {size} agents. Use indices "
            f"0 .. {size - 1}."
        )
    ordered = sorted(tuple(sorted(int(a) for a in group)) for group in groups)
    return tuple(ordered)


def _groups_from_labels(labels: list[Hashable]) -> tuple[tuple[int, ...], ...]:
    members: dict[Hashable, list[int]] = {}
    for agent, label in enumerate(labels):
        if isinstance(label, np.generic):
            label = label.item()
        try:
            members.setdefault(label, []).append(agent)
        except TypeError as error:
            raise ConfigError(
                f"cluster label {label!r} of agent {agent} is not hashable. Use an "
                "integer or a string."
            ) from error
    return tuple(tuple(group) for group in members.values())


def _cluster_basis(
    clusters: tuple[tuple[int, ...], ...], num_agents: int
) -> np.ndarray:
    basis = np.zeros((num_agents, len(clusters)))
    for column, members in enumerate(clusters):
        basis[list(members), column] = 1.0 / np.sqrt(len(members))
    return basis


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
