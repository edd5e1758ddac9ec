"""Slow per-agent reference implementation of the strategies and step rules.

It is written from the equations, with one ``nn.Module`` copy per agent and
explicit Python loops over agents, neighbours, layers and convolution slices.
It shares no code with the library's strategies, step rules, combination
matrices or stacked forward passes, so a test can run both on the same
minibatches and compare the iterates.

Recursions, per parameter group with combination matrix ``A`` and projector
``P_U = U U^T``::

    adapt (E times, a new minibatch each time)
        psi_k <- psi_k - increment_k(psi_k) / E,   starting from psi_k = w_k
    noncooperative   w_k = psi_k
    centralized      w_k = sum_l (P_U)_kl psi_l
    approximate      w_k = sum_{l in N_k} A_kl psi_l
    exact            phi_k = psi_k + w_k - psi_prev_k,  psi_prev_{-1} = w_{-1}
                     w_k = sum_{l in N_k} A_bar_kl phi_l,  A_bar = (I + A) / 2

The constant increment is ``mu * grad``. The AGD increment (Bernstein et al.,
arXiv:2304.05187) of agent k, with ``L`` weight tensors and per-layer scale
``s_l = sqrt(out / in) / sqrt(kh kw)``::

    G_k   = (1 / L) sum_l s_l sum_slices n_k,l,slice
    eta_k = gain * log((1 + sqrt(1 + 4 G_k)) / 2)
    W_l,slice <- W_l,slice - (eta_k / L) s_l grad W_l,slice / n_k,l,slice
    b_l       <- b_l - (eta_k / L) s_l grad b_l / m_k,l

where ``n`` is the slice's gradient norm and ``m`` the whole weight's Frobenius
norm. With shared norms (``agd-shared``), for layers of non-local groups,
``n`` and ``m`` are replaced by their neighbourhood averages
``sum_{j in N_k} A_kj n_j``. A zero norm gives a zero update.
"""

from __future__ import annotations

import copy
import fnmatch
import math

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

STRATEGIES = ("noncooperative", "centralized", "approximate", "exact")
STEP_RULES = ("constant", "agd-local", "agd-shared")


def metropolis_matrix(graph: nx.Graph, members: list[int], num_agents: int):
    """Build the Metropolis-Hastings weights of the subgraph on ``members``.

    Returns a ``num_agents x num_agents`` nested list that is zero outside
    ``members``. Degrees count only edges inside the subgraph.
    """
    inside = set(members)
    degree = {k: sum(1 for m in graph.neighbors(k) if m in inside) for k in members}
    matrix = [[0.0] * num_agents for _ in range(num_agents)]
    for k in members:
        for m in graph.neighbors(k):
            if m in inside and m != k:
                matrix[k][m] = 1.0 / (1.0 + max(degree[k], degree[m]))
        matrix[k][k] = 1.0 - sum(matrix[k][m] for m in members if m != k)
    return matrix


def group_matrices(value, graph: nx.Graph, num_agents: int):
    """Return ``(A, P_U, is_local)`` for one sharing value, as nested lists."""
    if value == "shared":
        clusters = [list(range(num_agents))]
    elif value == "local":
        clusters = [[k] for k in range(num_agents)]
    elif isinstance(value, dict) and value.get("kind") == "clustered":
        labels = list(value["clusters"])
        clusters = [
            [k for k in range(num_agents) if labels[k] == label]
            for label in sorted(set(labels))
        ]
    else:
        raise ValueError(
            f"Unsupported sharing value {value!r}: the reference handles 'shared', "
            "'local' and {'kind': 'clustered', 'clusters': labels}."
        )

    # U has one column per cluster: the cluster's indicator over sqrt(size).
    basis = torch.zeros(num_agents, len(clusters), dtype=torch.float64)
    for column, members in enumerate(clusters):
        for k in members:
            basis[k, column] = 1.0 / math.sqrt(len(members))
    projector = (basis @ basis.T).tolist()

    combination = [[0.0] * num_agents for _ in range(num_agents)]
    for members in clusters:
        block = metropolis_matrix(graph, members, num_agents)
        for k in members:
            for m in members:
                combination[k][m] = block[k][m]
    return combination, projector, value == "local"


class ReferenceNetwork:
    """K agents, each with its own copy of ``model``, trained step by step.

    Parameters
    ----------
    model : nn.Module
        Template network. Each agent gets a float64 deep copy.
    initial : sequence of torch.Tensor
        Initial parameters stacked over agents, ``(K, *shape)`` each, in
        ``model.named_parameters()`` order.
    graph : nx.Graph
        Communication graph with nodes ``0..K-1``.
    sharing : dict
        Pattern to ``"shared"``, ``"local"`` or
        ``{"kind": "clustered", "clusters": labels}``. The first match wins.
    strategy, step_rule : str
        One of :data:`STRATEGIES` and one of :data:`STEP_RULES`.
    step_size : float, optional
        ``mu`` of the constant rule.
    local_steps : int
        Adapt steps per exchange, ``E``.
    gain : float
        Multiplies AGD's ``eta``.
    """

    def __init__(
        self,
        model: nn.Module,
        initial,
        graph: nx.Graph,
        sharing: dict,
        *,
        strategy: str,
        step_rule: str,
        step_size: float | None = None,
        local_steps: int = 1,
        gain: float = 1.0,
    ) -> None:
        self.num_agents = graph.number_of_nodes()
        self.graph = graph
        self.strategy = strategy
        self.step_rule = step_rule
        self.step_size = step_size
        self.local_steps = local_steps
        self.gain = gain
        self.names = [name for name, _ in model.named_parameters()]

        self.modules = [copy.deepcopy(model).double() for _ in range(self.num_agents)]
        self.weights = [
            {
                name: initial[i][k].detach().double().clone()
                for i, name in enumerate(self.names)
            }
            for k in range(self.num_agents)
        ]

        # Each parameter takes the matrices of the first pattern it matches.
        self.matrices = {}
        for name in self.names:
            value = next(
                value
                for pattern, value in sharing.items()
                if fnmatch.fnmatchcase(name, pattern)
            )
            self.matrices[name] = group_matrices(value, graph, self.num_agents)

        # AGD layers: every Linear and Conv2d, with its bias if it has one.
        self.layers = []
        for prefix, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                start = f"{prefix}." if prefix else ""
                bias = None
                if module.bias is not None:
                    bias = start + "bias"
                self.layers.append((start + "weight", bias))
        self.previous_adapted = None

    def neighbours(self, k: int) -> list[int]:
        """Return agent ``k`` and its graph neighbours."""
        return [k] + sorted(self.graph.neighbors(k))

    def stacked(self) -> list[torch.Tensor]:
        """Return the iterates stacked over agents, in parameter order."""
        return [
            torch.stack([self.weights[k][name] for k in range(self.num_agents)])
            for name in self.names
        ]

    def gradients(self, iterates, batch):
        """Return each agent's gradients of its mean cross-entropy on ``batch``."""
        images, labels = batch
        grads = []
        for k in range(self.num_agents):
            module = self.modules[k]
            with torch.no_grad():
                for name, parameter in module.named_parameters():
                    parameter.copy_(iterates[k][name])
            module.zero_grad()
            loss = F.cross_entropy(module(images[k].double()), labels[k])
            loss.backward()
            grads.append(
                {name: p.grad.detach().clone() for name, p in module.named_parameters()}
            )
        return grads

    def increments(self, grads, scale: float):
        """Return each agent's adapt-step increment, already scaled by ``1 / E``."""
        if self.step_rule == "constant":
            mu = self.step_size * scale
            return [{name: mu * g for name, g in agent.items()} for agent in grads]
        return self._agd_increments(grads, scale)

    def _agd_increments(self, grads, scale: float):
        num_agents = self.num_agents
        num_layers = len(self.layers)

        # Own norms: per slice for the weight, Frobenius for the whole weight.
        slice_norms = [{} for _ in range(num_agents)]
        weight_norms = [{} for _ in range(num_agents)]
        for k in range(num_agents):
            for weight, _ in self.layers:
                g = grads[k][weight]
                norms = []
                if g.dim() == 2:
                    norms.append(float(torch.linalg.norm(g)))
                else:
                    for i in range(g.shape[2]):
                        for j in range(g.shape[3]):
                            norms.append(float(torch.linalg.norm(g[:, :, i, j])))
                slice_norms[k][weight] = norms
                weight_norms[k][weight] = float(torch.linalg.norm(g))

        # agd-shared: neighbourhood averages for layers of non-local groups.
        # Non-cooperative agents exchange nothing, so they keep their own norms.
        if self.step_rule == "agd-shared" and self.strategy != "noncooperative":
            averaged_slices = [{} for _ in range(num_agents)]
            averaged_weights = [{} for _ in range(num_agents)]
            for k in range(num_agents):
                for weight, _ in self.layers:
                    combination, _, is_local = self.matrices[weight]
                    if is_local:
                        averaged_slices[k][weight] = slice_norms[k][weight]
                        averaged_weights[k][weight] = weight_norms[k][weight]
                        continue
                    count = len(slice_norms[k][weight])
                    averaged_slices[k][weight] = [
                        sum(
                            combination[k][m] * slice_norms[m][weight][s]
                            for m in self.neighbours(k)
                        )
                        for s in range(count)
                    ]
                    averaged_weights[k][weight] = sum(
                        combination[k][m] * weight_norms[m][weight]
                        for m in self.neighbours(k)
                    )
            slice_norms, weight_norms = averaged_slices, averaged_weights

        increments = []
        for k in range(num_agents):
            # G_k and eta_k from this agent's norms, averaged for agd-shared.
            summary = 0.0
            for weight, _ in self.layers:
                summary += _layer_scale(grads[k][weight]) * sum(slice_norms[k][weight])
            summary /= num_layers
            eta = self.gain * math.log((1 + math.sqrt(1 + 4 * summary)) / 2)

            update = {}
            for weight, bias in self.layers:
                g = grads[k][weight]
                coefficient = eta / num_layers * _layer_scale(g) * scale
                norms = slice_norms[k][weight]
                if g.dim() == 2:
                    update[weight] = _divide(coefficient * g, norms[0])
                else:
                    step = torch.zeros_like(g)
                    s = 0
                    for i in range(g.shape[2]):
                        for j in range(g.shape[3]):
                            step[:, :, i, j] = _divide(
                                coefficient * g[:, :, i, j], norms[s]
                            )
                            s += 1
                    update[weight] = step
                if bias is not None:
                    norm = weight_norms[k][weight]
                    update[bias] = _divide(coefficient * grads[k][bias], norm)
            increments.append(update)
        return increments

    def combine(self, tensors, operator: str):
        """Return ``sum_l M_kl tensors_l`` for each agent with the group's matrix."""
        combined = [{} for _ in range(self.num_agents)]
        for name in self.names:
            combination, projector, _ = self.matrices[name]
            for k in range(self.num_agents):
                if operator == "P":
                    sources = range(self.num_agents)
                    weights = projector[k]
                elif operator == "A":
                    sources = self.neighbours(k)
                    weights = combination[k]
                elif operator == "A_bar":
                    sources = self.neighbours(k)
                    weights = [
                        ((1.0 if k == m else 0.0) + combination[k][m]) / 2
                        for m in range(self.num_agents)
                    ]
                else:
                    raise ValueError(f"Unknown operator {operator!r}.")
                total = torch.zeros_like(tensors[k][name])
                for m in sources:
                    total = total + weights[m] * tensors[m][name]
                combined[k][name] = total
        return combined

    def step(self, batches) -> None:
        """Run one exchange on ``E`` minibatches ``(images, labels)``.

        Images are ``(K, B, ...)`` and labels ``(K, B)``, one row per agent.
        """
        if len(batches) != self.local_steps:
            raise ValueError(
                f"Expected {self.local_steps} minibatches, got {len(batches)}."
            )
        current = self.weights

        # adapt: E steps, each on its own minibatch, increments scaled by 1 / E
        adapted = [dict(agent) for agent in current]
        for batch in batches:
            grads = self.gradients(adapted, batch)
            increments = self.increments(grads, 1.0 / self.local_steps)
            adapted = [
                {name: adapted[k][name] - increments[k][name] for name in self.names}
                for k in range(self.num_agents)
            ]

        if self.strategy == "noncooperative":
            self.weights = adapted
        elif self.strategy == "centralized":
            self.weights = self.combine(adapted, "P")
        elif self.strategy == "approximate":
            self.weights = self.combine(adapted, "A")
        elif self.strategy == "exact":
            previous = self.previous_adapted
            if previous is None:
                previous = current

            # correct: phi_k = psi_k + w_k - psi_prev_k
            corrected = [
                {
                    name: adapted[k][name] + current[k][name] - previous[k][name]
                    for name in self.names
                }
                for k in range(self.num_agents)
            ]
            self.previous_adapted = adapted

            # combine: w_k = sum_l A_bar_kl phi_l
            self.weights = self.combine(corrected, "A_bar")
        else:
            raise ValueError(f"Unknown strategy {self.strategy!r}.")


def _layer_scale(weight: torch.Tensor) -> float:
    """Return ``sqrt(out / in) / sqrt(kh kw)`` for a linear or conv weight."""
    fan_out, fan_in = weight.shape[0], weight.shape[1]
    kernel = 1
    for size in weight.shape[2:]:
        kernel *= size
    return math.sqrt(fan_out / fan_in) / math.sqrt(kernel)


def _divide(numerator: torch.Tensor, norm: float) -> torch.Tensor:
    """Return ``numerator / norm``, or zeros when ``norm`` is zero."""
    if norm == 0:
        return torch.zeros_like(numerator)
    return numerator / norm
