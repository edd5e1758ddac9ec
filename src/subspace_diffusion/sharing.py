"""Sharing specifications: which parameters live in which subspace.

A :class:`SharingSpec` maps parameter-name patterns to agent-level subspaces,
for example ``{"trunk.*": "shared", "head.*": "local"}``. It compiles, once
per model and graph, into :class:`CompiledSharing`: parameter groups, each
with its combination matrix ``A``, ``A_bar = (I + A) / 2``, the projector
``P_U`` and the validation report. Strategies never see the subspace kind;
they only call the combine operator built from these matrices.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from .combination import ValidationReport, design_combination_matrix, is_symmetric
from .errors import ConfigError, InvalidCombinationMatrixError
from .subspaces import (
    AgentSubspace,
    clustered_subspace,
    general_subspace,
    local_subspace,
    shared_subspace,
    smooth_subspace,
)

SUBSPACE_KINDS = ("shared", "local", "clustered", "smooth", "general")


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


def resolve_subspace(spec, num_agents: int, graph: nx.Graph) -> AgentSubspace:
    """Turn one rule's value into an :class:`AgentSubspace`.

    Accepted values: ``"shared"``, ``"local"``, an :class:`AgentSubspace`, a
    ``K x P`` array (a general basis), or a mapping with ``kind`` and its
    options: ``{"kind": "clustered", "clusters": [0, 0, 1, 1]}``,
    ``{"kind": "smooth", "num_eigenvectors": 2}``, ``{"kind": "general",
    "basis": [[...], ...]}``. Any mapping may also name the combination-matrix
    design, ``"method": "least-squares"`` or ``"spectral"`` (needs cvxpy).
    """
    if isinstance(spec, AgentSubspace):
        if spec.num_agents != num_agents:
            raise ConfigError(
                f"Subspace {spec.describe()} is for {spec.num_agents} agents, but "
                f"the network has {num_agents}."
            )
        return spec
    if isinstance(spec, np.ndarray):
        return general_subspace(spec)
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ConfigError(
            f"Invalid sharing value {spec!r}: use 'shared', 'local' or a mapping "
            "with a 'kind' key (one of: " + ", ".join(SUBSPACE_KINDS) + ")."
        )
    kind = spec["kind"]
    options = {
        key: value for key, value in spec.items() if key not in ("kind", "method")
    }
    allowed = {"clustered": {"clusters"}, "smooth": {"num_eigenvectors"}}
    allowed["general"] = {"basis"}
    unknown = set(options) - allowed.get(kind, set())
    if unknown and kind in SUBSPACE_KINDS:
        raise ConfigError(
            f"Sharing kind {kind!r} got unknown options {sorted(unknown)}; it "
            f"takes {sorted(allowed.get(kind, set())) or 'none'} and 'method'."
        )
    try:
        if kind == "shared" and not options:
            return shared_subspace(num_agents)
        if kind == "local" and not options:
            return local_subspace(num_agents)
        if kind == "clustered":
            return clustered_subspace(options["clusters"], num_agents=num_agents)
        if kind == "smooth":
            count = options["num_eigenvectors"]
            if isinstance(count, bool) or not isinstance(count, int):
                raise ConfigError(
                    f"num_eigenvectors must be an integer, got {count!r}."
                )
            return smooth_subspace(graph, count)
        if kind == "general":
            return general_subspace(np.asarray(options["basis"], dtype=float))
    except KeyError as missing:
        raise ConfigError(
            f"Sharing kind {kind!r} needs the option {missing.args[0]!r}."
        ) from None
    if kind in SUBSPACE_KINDS:
        raise ConfigError(f"Sharing kind {kind!r} takes no options {options}.")
    raise ConfigError(
        f"Unknown sharing kind {kind!r}. Choose one of: {', '.join(SUBSPACE_KINDS)}."
    )


@dataclass
class ParameterGroup:
    """Parameters that share one subspace and one combination matrix."""

    pattern: str
    subspace: AgentSubspace
    parameter_indices: list[int]
    combination: np.ndarray
    report: ValidationReport | None = None
    matrices: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        """Whether the group is never combined (identity subspace)."""
        return self.subspace.is_identity

    @property
    def is_symmetric(self) -> bool:
        """Whether the combination matrix is symmetric."""
        return is_symmetric(self.combination, 1e-10)


@dataclass
class CompiledSharing:
    """Sharing specification compiled for one model and one graph."""

    names: list[str]
    groups: list[ParameterGroup]
    group_of: list[int]
    num_agents: int

    def is_local(self, index: int) -> bool:
        """Return whether parameter ``index`` belongs to a local group."""
        return self.groups[self.group_of[index]].is_local

    def require_symmetric(self, strategy: str) -> None:
        """Raise if a non-local group has a non-symmetric combination matrix."""
        for group in self.groups:
            if not group.is_local and not group.is_symmetric:
                raise InvalidCombinationMatrixError(
                    f"Strategy {strategy!r} needs a symmetric combination matrix, "
                    f"but the matrix of group {group.pattern!r} "
                    f"({group.subspace.describe()}) is not symmetric. Use "
                    "Metropolis-Hastings weights or a designed symmetric matrix."
                )

    def describe(self) -> str:
        """Return one line per group: pattern, subspace, size and spectral gap."""
        lines = []
        for group in self.groups:
            names = [self.names[i] for i in group.parameter_indices]
            gap = (
                "" if group.report is None else f", gap {group.report.spectral_gap:.4f}"
            )
            lines.append(
                f"{group.pattern}: {group.subspace.describe()}, "
                f"{len(names)} tensors{gap}"
            )
        return "\n".join(lines)


class SharingSpec:
    """Ordered rules from parameter-name patterns to subspaces.

    Patterns are shell-style (``fnmatch``); a pattern also matches every
    parameter under a module of that name (``"trunk"`` matches
    ``"trunk.0.weight"``). The first matching rule wins. Every parameter must
    be matched and every rule must match something.

    Parameters
    ----------
    rules : mapping or sequence of (pattern, value)
        Values as accepted by :func:`resolve_subspace`.

    Examples
    --------
    >>> spec = SharingSpec({"trunk.*": "shared", "head.*": "local"})
    """

    def __init__(self, rules) -> None:
        items = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
        if not items:
            raise ConfigError(
                "The sharing specification is empty: map at least one parameter "
                "pattern to 'shared' or 'local', for example {'*': 'shared'}."
            )
        for item in items:
            if not (
                isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
            ):
                raise ConfigError(
                    f"Invalid sharing rule {item!r}: expected (pattern, value)."
                )
        self.rules: list[tuple[str, object]] = items

    def to_config(self) -> dict:
        """Return a YAML-friendly mapping (arrays become nested lists)."""
        out = {}
        for pattern, value in self.rules:
            if isinstance(value, AgentSubspace):
                value = {"kind": "general", "basis": value.basis.tolist()}
            elif isinstance(value, np.ndarray):
                value = {"kind": "general", "basis": value.tolist()}
            out[pattern] = value
        return out

    def compile(
        self,
        names: Sequence[str],
        graph: nx.Graph,
        *,
        weights: str = "metropolis",
        method: str = "auto",
    ) -> CompiledSharing:
        """Assign parameters to groups and build each group's matrices.

        Raises
        ------
        ConfigError
            If a rule matches no parameter or a parameter matches no rule.
        InvalidCombinationMatrixError, InfeasibleSubspaceError
            If a group's combination matrix cannot be built or validated.
        """
        names = list(names)
        num_agents = graph.number_of_nodes()
        assignment: list[int | None] = [None] * len(names)
        for r, (pattern, _) in enumerate(self.rules):
            hits = [i for i, n in enumerate(names) if _matches(n, pattern)]
            if not hits:
                listed = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
                raise ConfigError(
                    f"Sharing pattern {pattern!r} matches no parameter. "
                    f"Parameter names are: {listed}."
                )
            for i in hits:
                if assignment[i] is None:
                    assignment[i] = r
        unmatched = [names[i] for i, a in enumerate(assignment) if a is None]
        if unmatched:
            raise ConfigError(
                f"No sharing rule matches the parameters {unmatched}. Add a rule "
                "for them, for example '*': 'local' as the last rule."
            )

        groups: list[ParameterGroup] = []
        group_of = [0] * len(names)
        for r, (pattern, value) in enumerate(self.rules):
            indices = [i for i, a in enumerate(assignment) if a == r]
            if not indices:
                continue  # every parameter it matched was taken by an earlier rule
            subspace = resolve_subspace(value, num_agents, graph)
            rule_method = method
            if isinstance(value, Mapping) and "method" in value:
                rule_method = value["method"]
            if subspace.is_identity:
                matrix, report = np.eye(num_agents), None
            else:
                matrix, report = design_combination_matrix(
                    subspace, graph, method=rule_method, weights=weights
                )
            group = ParameterGroup(pattern, subspace, indices, matrix, report)
            group.matrices = {
                "A": matrix,
                "A_bar": (np.eye(num_agents) + matrix) / 2,
                "P": subspace.projector,
            }
            for i in indices:
                group_of[i] = len(groups)
            groups.append(group)
        return CompiledSharing(names, groups, group_of, num_agents)
