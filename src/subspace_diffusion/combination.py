"""Design and validation of combination matrices for a subspace on a graph.

A combination matrix A lets agent k combine the iterates of its neighbours,
``w_k = sum_l A_kl psi_l``. Diffusion under the constraint ``W in range(U)``
converges when A meets the conditions of Nassif, Vlaski and Sayed:

- ``A U = U`` and ``U^T A = U^T``, so the subspace is kept;
- ``A_kl = 0`` unless k and l are neighbours or ``k == l``;
- ``spectral_radius(A - P_U) < 1``, so that ``A^i`` converges to ``P_U``.

Exact subspace diffusion (Nassif, Wadehra, Vlaski) also needs A symmetric:
with a non-symmetric A that meets the other conditions it diverges for
every step size. :func:`validate_combination_matrix` measures all of them,
and :func:`design_combination_matrix` builds a matrix that meets them.

References
----------
R. Nassif, S. Vlaski, A. H. Sayed, "Adaptation and learning over networks
under subspace constraints, Part I: stability analysis", arXiv:1905.08750.

R. Nassif, S. Wadehra, S. Vlaski, "Exact subspace diffusion for
decentralized multitask learning", arXiv:2304.07358.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from subspace_diffusion.errors import (
    ConfigError,
    InfeasibleSubspaceError,
    InvalidCombinationMatrixError,
)
from subspace_diffusion.graphs import (
    AVERAGING_WARNING,
    adjacency_matrix,
    averaging_weights,
    describe_graph,
    metropolis_weights,
    spectral_radius,
    validate_agent_graph,
)
from subspace_diffusion.subspaces import AgentSubspace, VectorSubspace

__all__ = [
    "CONDITIONS",
    "METHODS",
    "WEIGHTS",
    "ConditionCheck",
    "ValidationReport",
    "design_combination_matrix",
    "is_symmetric",
    "measure_combination_matrix",
    "sparsity_pattern",
    "validate_combination_matrix",
]

Subspace = AgentSubspace | VectorSubspace

METHODS = ("auto", "closed-form", "least-squares", "spectral")
WEIGHTS = ("metropolis", "averaging")

CONDITIONS = {
    "A U = U": "max |A U - U|",
    "U^T A = U^T": "max |U^T A - U^T|",
    "symmetry": "max |A - A^T|",
    "sparsity": "max |A_kl| off the graph",
    "spectral radius": "rho(A - P_U)",
}
"""Condition names of a :class:`ValidationReport` and the quantity each measures."""

_HINTS = {
    "A U = U": (
        "Each row must reproduce the basis (for a shared subspace, rows sum to 1)."
    ),
    "U^T A = U^T": (
        "Each column must reproduce the basis too (for a shared subspace, columns "
        "sum to 1, so A must be doubly stochastic, unlike the averaging rule)."
    ),
    "symmetry": (
        "Exact diffusion diverges with a non-symmetric matrix. Pass "
        "require_symmetric=False only for approximate projection."
    ),
    "sparsity": (
        "An agent may only weight itself and its neighbours. Set the entry to 0 "
        "or add the edge to the graph."
    ),
    "spectral radius": "A^i does not converge to P_U, so diffusion cannot converge.",
}

_CLOSED_FORM_KINDS = ("shared", "local", "clustered")

_SPECTRAL_HINT = (
    "That design minimises the spectral radius over all symmetric matrices on "
    "this graph, so none is valid. Use a smaller subspace or a denser graph."
)
_LEAST_SQUARES_HINT = (
    "Use a smaller subspace, a denser graph, or method='spectral' (needs cvxpy), "
    "which minimises the spectral radius directly and so decides whether any "
    "symmetric matrix is valid."
)

LSTSQ_RCOND = 1e-10
"""Relative cutoff below which singular values of the design constraints count as zero."""


@dataclass(frozen=True)
class ConditionCheck:
    """Measured residual of one condition and whether it passed.

    ``limit`` is the tolerance the residual must not exceed, except for the
    spectral radius, which must stay below ``1 - tol``. ``required`` is False
    for a condition that was measured but not demanded (symmetry with
    ``require_symmetric=False``).
    """

    name: str
    residual: float
    limit: float
    passed: bool
    required: bool = True
    detail: str = ""


@dataclass
class ValidationReport:
    """Result of checking a combination matrix against a subspace and a graph.

    Attributes
    ----------
    conditions : dict of str to ConditionCheck
        One entry per name in :data:`CONDITIONS`, in that order.
    spectral_gap : float
        ``1 - spectral_radius(A - P_U)``. Larger means faster convergence of
        ``A^i`` to ``P_U``.
    subspace_name, graph_name : str
        Descriptions used in messages.
    notes : list of str
        Caveats that are not conditions, such as the averaging rule's bias.
    """

    conditions: dict[str, ConditionCheck]
    spectral_gap: float
    subspace_name: str = ""
    graph_name: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every required condition passed."""
        return not self.failures

    @property
    def failures(self) -> list[ConditionCheck]:
        """Required conditions that failed."""
        return [c for c in self.conditions.values() if c.required and not c.passed]

    def __str__(self) -> str:
        title = f"combination matrix for subspace {self.subspace_name}"
        lines = [
            f"{title} on graph {self.graph_name}",
            f"  {'condition':<17}{'measures':<26}{'residual':>10}  {'limit':<10}result",
        ]
        for check in self.conditions.values():
            if check.name == "spectral radius":
                limit = "< 1"
            else:
                limit = f"<= {check.limit:.0e}"
            result = "pass" if check.passed else "FAIL"
            if not check.required:
                result += " (not required)"
            if check.detail and not check.passed:
                result += f", {check.detail}"
            lines.append(
                f"  {check.name:<17}{CONDITIONS[check.name]:<26}"
                f"{check.residual:>10.3g}  {limit:<10}{result}"
            )
        lines.append(f"  spectral gap: {self.spectral_gap:.4g}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """Return the report as plain types, ready for JSON."""
        return {
            "ok": self.ok,
            "spectral_gap": self.spectral_gap,
            "subspace": self.subspace_name,
            "graph": self.graph_name,
            "conditions": {
                name: dataclasses.asdict(check)
                for name, check in self.conditions.items()
            },
            "notes": list(self.notes),
        }


def is_symmetric(matrix: np.ndarray, tol: float = 1e-8) -> bool:
    """Return True when ``matrix`` is square and ``max |A - A^T| <= tol``."""
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        return False
    return bool(np.max(np.abs(array - array.T), initial=0.0) <= tol)


def sparsity_pattern(subspace: Subspace, graph: nx.Graph) -> np.ndarray:
    """Return the boolean mask of the entries a combination matrix may use.

    For an :class:`AgentSubspace` it is the K x K adjacency plus the diagonal.
    For a :class:`VectorSubspace` it is N x N, with block ``(k, l)`` of size
    ``M_k x M_l`` allowed when agents k and l are neighbours or ``k == l``.
    """
    num_agents = validate_agent_graph(graph)
    if subspace.num_agents != num_agents:
        raise ConfigError(
            f"the subspace {subspace.describe()} has {subspace.num_agents} agents "
            f"but the graph {describe_graph(graph)} has {num_agents}. Build both "
            "for the same number of agents."
        )
    agent_pattern = (adjacency_matrix(graph) + np.eye(num_agents)) > 0
    if isinstance(subspace, AgentSubspace):
        return agent_pattern
    owner = np.repeat(np.arange(num_agents), subspace.sizes)
    return agent_pattern[np.ix_(owner, owner)]


def measure_combination_matrix(
    matrix: np.ndarray,
    subspace: Subspace,
    graph: nx.Graph,
    *,
    require_symmetric: bool = True,
    tol: float = 1e-8,
    subspace_name: str | None = None,
    graph_name: str | None = None,
) -> ValidationReport:
    """Measure every condition on ``matrix`` and return the report, without raising.

    Parameters are those of :func:`validate_combination_matrix`. Only an
    invalid shape or a NaN or infinite entry raises, because the conditions
    cannot be measured then.
    """
    pattern = sparsity_pattern(subspace, graph)
    subspace_label = subspace_name or subspace.describe()
    graph_label = describe_graph(graph, graph_name)
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != pattern.shape:
        raise InvalidCombinationMatrixError(
            f"the combination matrix has shape {array.shape}, but subspace "
            f"{subspace_label} on graph {graph_label} needs {pattern.shape}. Build "
            "it with design_combination_matrix()."
        )
    if not np.all(np.isfinite(array)):
        raise InvalidCombinationMatrixError(
            f"the combination matrix for subspace {subspace_label} contains NaN or "
            "infinite entries. Rebuild it with design_combination_matrix()."
        )

    basis = subspace.basis
    right_residual = _max_abs(array @ basis - basis)
    left_residual = _max_abs(basis.T @ array - basis.T)
    symmetry_residual = _max_abs(array - array.T)
    off_graph = np.where(pattern, 0.0, np.abs(array))
    sparsity_residual = _max_abs(off_graph)
    sparsity_detail = ""
    if sparsity_residual > tol:
        row, column = np.unravel_index(np.argmax(off_graph), off_graph.shape)
        sparsity_detail = f"largest at entry ({row}, {column})"
    radius = spectral_radius(array - subspace.projector)

    def equality(name: str, residual: float, **options) -> ConditionCheck:
        return ConditionCheck(name, residual, tol, residual <= tol, **options)

    checks = [
        equality("A U = U", right_residual),
        equality("U^T A = U^T", left_residual),
        equality("symmetry", symmetry_residual, required=require_symmetric),
        equality("sparsity", sparsity_residual, detail=sparsity_detail),
        ConditionCheck("spectral radius", radius, 1.0 - tol, radius < 1.0 - tol),
    ]
    conditions = {check.name: check for check in checks}
    return ValidationReport(conditions, 1.0 - radius, subspace_label, graph_label)


def validate_combination_matrix(
    matrix: np.ndarray,
    subspace: Subspace,
    graph: nx.Graph,
    *,
    require_symmetric: bool = True,
    tol: float = 1e-8,
    subspace_name: str | None = None,
    graph_name: str | None = None,
) -> ValidationReport:
    """Check that ``matrix`` is a valid combination matrix and return the report.

    Parameters
    ----------
    matrix : numpy.ndarray
        K x K for an :class:`AgentSubspace`, N x N for a :class:`VectorSubspace`.
    subspace : AgentSubspace or VectorSubspace
        The subspace ``range(U)``.
    graph : networkx.Graph
        Graph on agents ``0 .. K-1``. A vector subspace's matrix may use the
        whole ``M_k x M_l`` block of neighbouring agents k and l.
    require_symmetric : bool, default True
        Whether symmetry is required. Exact diffusion needs it, and approximate
        projection does not.
    tol : float, default 1e-8
        Largest absolute residual accepted for the equality conditions. The
        spectral radius of ``A - P_U`` must stay below ``1 - tol``.
    subspace_name, graph_name : str, optional
        Names used in messages instead of ``subspace.describe()`` and the
        graph's own name.

    Returns
    -------
    ValidationReport
        The report, with every required condition passed.

    Raises
    ------
    InvalidCombinationMatrixError
        If the shape is wrong, an entry is not finite, or a required condition
        fails. The message names each failed condition with its residual, the
        subspace, the graph and what to do. The report is attached as the
        exception's ``report`` attribute.
    ConfigError
        If the subspace and the graph have different numbers of agents.

    Examples
    --------
    >>> from subspace_diffusion.graphs import make_graph, metropolis_weights
    >>> from subspace_diffusion.subspaces import shared_subspace
    >>> graph = make_graph("ring", 6)
    >>> report = validate_combination_matrix(
    ...     metropolis_weights(graph), shared_subspace(6), graph
    ... )
    >>> round(report.spectral_gap, 4)
    0.3333
    """
    report = measure_combination_matrix(
        matrix,
        subspace,
        graph,
        require_symmetric=require_symmetric,
        tol=tol,
        subspace_name=subspace_name,
        graph_name=graph_name,
    )
    if not report.ok:
        error = InvalidCombinationMatrixError(
            f"invalid combination matrix for subspace {report.subspace_name} on "
            f"graph {report.graph_name}: {_describe_failures(report.failures, True)} "
            "Build a valid one with design_combination_matrix()."
        )
        error.report = report
        raise error
    return report


def _describe_failures(failures: list[ConditionCheck], with_hints: bool) -> str:
    sentences = []
    for check in failures:
        if check.name == "spectral radius":
            sentence = (
                "condition 'spectral radius(A - P_U) < 1' fails with "
                f"{check.residual:.6g}."
            )
        else:
            where = f" ({check.detail})" if check.detail else ""
            sentence = (
                f"condition '{check.name}' fails with residual {check.residual:.3g}"
                f"{where}, above the tolerance {check.limit:.0e}."
            )
        sentences.append(f"{sentence} {_HINTS[check.name]}" if with_hints else sentence)
    return " ".join(sentences)


def design_combination_matrix(
    subspace: Subspace,
    graph: nx.Graph,
    *,
    method: str = "auto",
    weights: str = "metropolis",
    tol: float = 1e-8,
    subspace_name: str | None = None,
    graph_name: str | None = None,
) -> tuple[np.ndarray, ValidationReport]:
    """Build a combination matrix for ``subspace`` on ``graph`` and validate it.

    Parameters
    ----------
    subspace : AgentSubspace or VectorSubspace
        The subspace ``range(U)``.
    graph : networkx.Graph
        Graph on agents ``0 .. K-1``.
    method : {"auto", "closed-form", "least-squares", "spectral"}
        ``"closed-form"`` exists for shared (Metropolis weights), local (the
        identity) and clustered subspaces (one Metropolis matrix per cluster,
        on the cluster's induced subgraph). ``"least-squares"`` minimises
        ``||A - P_U||_F`` over symmetric A with ``A U = U`` on the sparsity
        pattern. It is a linear problem and available for every subspace, but
        its optimum may have ``spectral_radius(A - P_U) >= 1`` where the
        spectral design finds a valid matrix.
        ``"spectral"`` minimises ``||A - P_U||_2``, which for a symmetric A is
        ``spectral_radius(A - P_U)`` itself, and needs cvxpy. ``"auto"`` uses
        the closed form where one exists and least squares otherwise.
    weights : {"metropolis", "averaging"}
        Rule of the closed forms. ``"averaging"`` is only allowed for a shared
        subspace and warns, because its matrix is only row stochastic.
    tol, subspace_name, graph_name
        As in :func:`validate_combination_matrix`.

    Returns
    -------
    matrix : numpy.ndarray
        K x K or N x N float64 matrix.
    report : ValidationReport
        Its validation. With ``weights="averaging"`` on a graph that is not
        regular, ``U^T A = U^T`` fails and the report is returned rather than
        raised, so that approximate projection can still use the matrix.

    Raises
    ------
    InfeasibleSubspaceError
        If the designed matrix has ``spectral_radius(A - P_U) >= 1``, or a
        cluster's induced subgraph is disconnected in the closed form. The
        message names the subspace, the graph and the measured value.
    ConfigError
        If ``method`` or ``weights`` is unknown or does not apply to the
        subspace, or ``"spectral"`` is requested without cvxpy installed.

    Notes
    -----
    For ``VectorSubspace.from_agent_subspace(U_g, dim)`` the matrix is
    ``A_g (x) I_dim``, with ``A_g`` designed for ``U_g``. Both design problems
    are convex and unchanged by ``A -> (I_K (x) Q) A (I_K (x) Q)^T`` for any
    orthogonal Q, so they have an optimum of that form, and the least-squares
    optimum is unique. Designing on K x K therefore loses nothing.
    """
    if method not in METHODS:
        raise ConfigError(
            f"unknown method {method!r}. Use one of {', '.join(METHODS)}."
        )
    if weights not in WEIGHTS:
        raise ConfigError(
            f"unknown weights {weights!r}. Use one of {', '.join(WEIGHTS)}."
        )
    sparsity_pattern(subspace, graph)  # checks that the agent counts agree
    subspace_label = subspace_name or subspace.describe()
    graph_label = describe_graph(graph, graph_name)
    # A lifted subspace U_g (x) I_dim is designed on the K x K level (see Notes).
    design_subspace = subspace
    if isinstance(subspace, VectorSubspace) and subspace.agent_subspace is not None:
        design_subspace = subspace.agent_subspace
    kind = design_subspace.kind if isinstance(design_subspace, AgentSubspace) else None
    if method == "auto":
        method = "closed-form" if kind in _CLOSED_FORM_KINDS else "least-squares"
    if method == "closed-form" and kind not in _CLOSED_FORM_KINDS:
        raise ConfigError(
            f"no closed form exists for subspace {subspace_label}. Use "
            "method='least-squares' or method='spectral'."
        )
    if weights == "averaging":
        if kind != "shared" or method != "closed-form":
            raise ConfigError(
                "weights='averaging' is only defined for the closed form of a shared "
                f"subspace, got subspace {subspace_label} with method {method!r}. "
                "Use weights='metropolis'."
            )
        degrees = [degree for _, degree in graph.degree()]
        if min(degrees) != max(degrees):
            warnings.warn(AVERAGING_WARNING, UserWarning, stacklevel=2)

    if method == "closed-form":
        matrix = _closed_form_matrix(design_subspace, graph, weights)
    else:
        pattern = sparsity_pattern(design_subspace, graph)
        target = design_subspace.projector
        if method == "spectral":
            target = _spectral_design(design_subspace.basis, target, pattern)
        # Least squares moves P_U to the closest feasible matrix. The spectral
        # solution meets the constraints only to the solver's tolerance, so it
        # is moved the same way.
        matrix = _closest_feasible_matrix(target, design_subspace.basis, pattern)
    if design_subspace is not subspace:
        matrix = np.kron(matrix, np.eye(subspace.sizes[0]))

    report = measure_combination_matrix(
        matrix,
        subspace,
        graph,
        require_symmetric=weights == "metropolis",
        tol=tol,
        subspace_name=subspace_label,
        graph_name=graph_name,
    )
    # The averaging rule breaks U^T A = U^T by construction, and that is reported
    # rather than raised.
    failures = [
        check
        for check in report.failures
        if weights == "metropolis" or check.name != "U^T A = U^T"
    ]
    if failures:
        hint = _SPECTRAL_HINT if method == "spectral" else _LEAST_SQUARES_HINT
        error = InfeasibleSubspaceError(
            f"no valid combination matrix found for subspace {subspace_label} on "
            f"graph {graph_label}: in the {method} design, "
            f"{_describe_failures(failures, False)} {hint}"
        )
        error.report = report
        raise error
    if weights == "averaging" and not report.ok:
        report.notes.append(
            "averaging weights are only row stochastic, so exact diffusion "
            "converges to a wrong point with this matrix"
        )
    return matrix, report


def _closed_form_matrix(
    subspace: AgentSubspace, graph: nx.Graph, weights: str
) -> np.ndarray:
    if subspace.kind == "local":
        return np.eye(subspace.num_agents)
    if subspace.kind == "shared":
        if weights == "averaging":
            with warnings.catch_warnings():
                # design_combination_matrix has already warned at the caller.
                warnings.simplefilter("ignore", UserWarning)
                return averaging_weights(graph)
        return metropolis_weights(graph)

    # Clustered: one Metropolis matrix per cluster, on its induced subgraph.
    matrix = np.zeros((subspace.num_agents, subspace.num_agents))
    for index, members in enumerate(subspace.clusters or ()):
        subgraph = graph.subgraph(members)
        if not nx.is_connected(subgraph):
            components = [sorted(c) for c in nx.connected_components(subgraph)]
            raise InfeasibleSubspaceError(
                f"cluster {index} (agents {list(members)}) of subspace "
                f"{subspace.describe()} is disconnected on graph "
                f"{describe_graph(graph)}: its agents form the separate groups "
                f"{components}. Add edges inside the cluster, regroup the agents, "
                "or try method='least-squares', which may relay through other "
                "clusters."
            )
        local = nx.convert_node_labels_to_integers(subgraph, ordering="sorted")
        matrix[np.ix_(members, members)] = metropolis_weights(local)
    return matrix


def _free_entries(pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the (row, column) indices of the upper triangle of the pattern."""
    return np.nonzero(np.triu(pattern))


def _constraint_matrix(
    basis: np.ndarray, rows: np.ndarray, columns: np.ndarray
) -> np.ndarray:
    """Return the matrix that maps the free entries x to ``vec(A(x) U)``.

    ``A(x)`` sets ``A[r, c] = A[c, r] = x_i`` for free entry ``i = (r, c)``.
    Entry ``(i, j)`` of ``A U`` is row ``i * P + j``, and a free entry adds
    ``x_i U[c, j]`` to row r and, off the diagonal, ``x_i U[r, j]`` to row c.
    """
    size, dimension = basis.shape
    constraint = np.zeros((size * dimension, rows.size))
    entries = np.arange(rows.size)
    off_diagonal = rows != columns
    for j in range(dimension):
        constraint[rows * dimension + j, entries] = basis[columns, j]
        constraint[columns[off_diagonal] * dimension + j, entries[off_diagonal]] = (
            basis[rows[off_diagonal], j]
        )
    return constraint


def _closest_feasible_matrix(
    target: np.ndarray, basis: np.ndarray, pattern: np.ndarray
) -> np.ndarray:
    """Return the feasible A closest to ``target`` in Frobenius norm.

    Feasible means symmetric, zero outside ``pattern`` and ``A U = U``, which
    also gives ``U^T A = U^T``. Entries outside the pattern are fixed at zero,
    so only the free entries x enter the objective, an off-diagonal one twice.
    With ``y = sqrt(weight) (x - target)`` the problem is the minimum-norm
    solution of the linear system ``C diag(1 / sqrt(weight)) y = vec(U) -
    C target``. The identity is always feasible, so the system is consistent.

    NOTE: the dense system has ``N P`` rows and one column per allowed entry on
    or above the diagonal, so for a general VectorSubspace its memory and SVD
    time grow quickly with N. Lifted subspaces are designed on K x K instead.
    """
    rows, columns = _free_entries(pattern)
    scale = np.sqrt(np.where(rows == columns, 1.0, 2.0))
    constraint = _constraint_matrix(basis, rows, columns)
    start = 0.5 * (target + target.T)[rows, columns]

    rhs = basis.reshape(-1) - constraint @ start
    # The equations are linearly dependent (for symmetric A, U^T (A U - U) is
    # symmetric, so P(P-1)/2 of them repeat others). Rounding in U turns their
    # zero singular values into noise of about 1e-14, which the default cutoff
    # of lstsq keeps, so cut at a relative 1e-10 instead. If a genuine
    # equation were cut, validation would report A U != U.
    step = np.linalg.lstsq(constraint / scale, rhs, rcond=LSTSQ_RCOND)[0]
    free = start + step / scale

    matrix = np.zeros(pattern.shape)
    matrix[rows, columns] = free
    matrix[columns, rows] = free
    return matrix


def _spectral_design(
    basis: np.ndarray, projector: np.ndarray, pattern: np.ndarray
) -> np.ndarray:
    """Minimise ``||A - P_U||_2`` over feasible A with cvxpy and return A."""
    try:
        import cvxpy as cp
    except ImportError as error:
        raise ConfigError(
            "method='spectral' needs cvxpy, which is not installed. Install it "
            "with `pip install cvxpy` (or the package's 'design' extra), or use "
            "method='least-squares'."
        ) from error

    size = pattern.shape[0]
    matrix = cp.Variable((size, size), symmetric=True)
    outside = (~pattern).astype(np.float64)
    problem = cp.Problem(
        cp.Minimize(cp.sigma_max(matrix - projector)),
        [matrix @ basis == basis, cp.multiply(outside, matrix) == 0],
    )
    try:
        problem.solve()
    except cp.error.SolverError as error:
        raise InfeasibleSubspaceError(
            f"cvxpy failed to solve the spectral design: {error}. Try "
            "method='least-squares'."
        ) from error
    # The identity is always feasible, so any other status is a solver failure.
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise InfeasibleSubspaceError(
            f"cvxpy returned status {problem.status!r} for the spectral design. "
            "Try method='least-squares'."
        )
    return np.asarray(matrix.value, dtype=np.float64)


def _max_abs(array: np.ndarray) -> float:
    return float(np.max(np.abs(array), initial=0.0))
