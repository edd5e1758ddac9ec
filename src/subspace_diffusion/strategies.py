"""Cooperation strategies: how agents combine their adapted iterates.

Every strategy is written once against three operators that an executor
provides, so the same code runs on stacked neural-network parameters, on flat
vector problems and on a distributed run:

* ``gradient(params)``: stacked stochastic gradients at ``params``, as new
  tensors that the step rule may overwrite; each call draws a new minibatch;
* ``step_rule.increment(params, grads, combiner, scale)``: the adapt-step
  increment, ``mu * g`` for a constant step size or the AGD update;
* ``combiner.combine(tensors, operator)``: for each tensor of the parameter
  list, the agent-wise product with the group's ``"A"``, ``"A_bar"`` or ``"P"``
  matrix (``A``, ``(I + A) / 2`` or the projector ``U U^T``).

Glossary (per parameter group):

=========  ================  ===========================================  ============
symbol     name              meaning                                      shape
=========  ================  ===========================================  ============
w          params            iterate of each agent                        (K, ...)
psi        adapted           iterate after the adapt step(s)              (K, ...)
phi        corrected         exact diffusion's corrected iterate          (K, ...)
A          combination       combination matrix of the group              (K, K)
A_bar      (I + A) / 2       exact diffusion's combination matrix         (K, K)
P_U        projector         projector onto the group's subspace, U U^T   (K, K)
mu         step_size         step size of the constant rule               scalar
E          local_steps       adapt steps between two exchanges            int
=========  ================  ===========================================  ============

References
----------
R. Nassif, S. Vlaski, A. H. Sayed, "Adaptation and learning over networks
under subspace constraints, Part I: stability analysis", IEEE Trans. Signal
Processing, 2020. arXiv:1905.08750.

R. Nassif, S. Wadehra, S. Vlaski, "Exact subspace diffusion for decentralized
multitask learning", IEEE CDC 2023. arXiv:2304.07358.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from .errors import ConfigError

Tensors = list[torch.Tensor]
GradientOracle = Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]]

STRATEGIES = ("noncooperative", "centralized", "approximate", "exact")


class Combiner(Protocol):
    """Operators an executor provides to the strategies."""

    def combine(self, tensors: Sequence[torch.Tensor], operator: str) -> Tensors:
        """Apply ``operator`` ("A", "A_bar" or "P") of each tensor's group."""

    def neighbour_average(self, values: torch.Tensor, index: int) -> torch.Tensor:
        """Average per-agent values over neighbours with parameter ``index``'s A."""

    def is_local(self, index: int) -> bool:
        """Return whether parameter ``index`` belongs to a local (identity) group."""


class StepRule(Protocol):
    """Adapt-step increment: ``mu * g`` for the constant rule, or AGD's.

    ``increment`` may overwrite ``grads`` and must return tensors that the
    caller owns, because the strategies write the adapted iterate into them.
    """

    def increment(
        self,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        combiner: Combiner,
        scale: float = 1.0,
    ) -> Tensors: ...


class Strategy:
    """Base class: adapt ``E`` times, then cooperate.

    Subclasses implement :meth:`cooperate`. A strategy instance keeps the state
    its recursion needs (exact diffusion stores the previous adapted iterate),
    so use one instance per run and call :meth:`reset` to start over.

    Parameters
    ----------
    local_steps : int
        Adapt steps between two exchanges, ``E``. Each draws a new minibatch and
        uses the increment scaled by ``1 / E``, so ``E`` steps move about as far
        as one. ``E = 1`` is the published algorithm. With ``E > 1`` the
        local iterates drift between exchanges, so exact diffusion's fixed
        point is no longer exactly the constrained optimum (its error is small
        but does not vanish).
    """

    name = "base"

    def __init__(self, local_steps: int = 1) -> None:
        if isinstance(local_steps, bool) or not isinstance(local_steps, int):
            raise ConfigError(
                f"local_steps must be a positive integer, got {local_steps!r}."
            )
        if local_steps < 1:
            raise ConfigError(
                f"local_steps must be at least 1, got {local_steps}. "
                "Use 1 for one adapt step per exchange."
            )
        self.local_steps = local_steps

    def reset(self) -> None:
        """Forget the recursion's state before a new run."""

    def adapt(
        self,
        params: Sequence[torch.Tensor],
        gradient: GradientOracle,
        step_rule: StepRule,
        combiner: Combiner,
    ) -> Tensors:
        """Run ``E`` adapt steps: ``psi <- psi - increment(psi, grad(psi)) / E``."""
        scale = 1.0 / self.local_steps
        adapted = list(params)
        for _ in range(self.local_steps):
            grads = gradient(adapted)
            increments = step_rule.increment(adapted, grads, combiner, scale)
            # psi = w - increment, written into the increment's buffer (the
            # strategy owns it) to avoid a new parameter-sized tensor per step.
            adapted = [torch.sub(p, d, out=d) for p, d in zip(adapted, increments)]
        return adapted

    def cooperate(
        self,
        params: Sequence[torch.Tensor],
        adapted: Sequence[torch.Tensor],
        combiner: Combiner,
    ) -> Tensors:
        raise NotImplementedError

    @torch.no_grad()
    def step(
        self,
        params: Sequence[torch.Tensor],
        gradient: GradientOracle,
        step_rule: StepRule,
        combiner: Combiner,
    ) -> Tensors:
        """Return the iterates after one exchange (``E`` adapt steps included)."""
        adapted = self.adapt(params, gradient, step_rule, combiner)
        return self.cooperate(params, adapted, combiner)


class _NoExchange:
    """Combiner view in which every group is local, so nothing is exchanged."""

    def __init__(self, combiner: Combiner) -> None:
        self.combiner = combiner

    def is_local(self, index: int) -> bool:
        return True

    def neighbour_average(self, values: torch.Tensor, index: int) -> torch.Tensor:
        return values

    def combine(self, tensors, operator: str) -> Tensors:
        return list(tensors)


class NonCooperative(Strategy):
    """Agents adapt alone: ``w_k <- w_k - mu g_k``. Nothing is exchanged.

    The step rule treats every group as local, so ``agd-shared`` uses each
    agent's own gradient norms here, as ``agd-local`` does.
    """

    name = "noncooperative"

    def adapt(self, params, gradient, step_rule, combiner):
        return super().adapt(params, gradient, step_rule, _NoExchange(combiner))

    def cooperate(self, params, adapted, combiner):
        return list(adapted)


class CentralizedProjection(Strategy):
    """Projected gradient descent through a fusion centre.

    ``W_i = P_U (W_{i-1} - mu g(W_{i-1}))``: the reference the distributed
    strategies try to match.
    """

    name = "centralized"

    def cooperate(self, params, adapted, combiner):
        return combiner.combine(adapted, "P")


class ApproximateProjection(Strategy):
    """Approximate-projection diffusion (adapt then combine), Nassif et al. 2020.

    .. math::

        \\psi_{k,i} = w_{k,i-1} - \\mu \\hat g_k(w_{k,i-1}), \\qquad
        w_{k,i} = \\sum_{l \\in N_k} A_{kl} \\psi_{l,i}

    Its fixed point is off by ``O(mu)`` when the constrained solution is not a
    stationary point of every agent, so its deterministic error floor scales as
    ``mu^2``.
    """

    name = "approximate"

    def cooperate(self, params, adapted, combiner):
        return combiner.combine(adapted, "A")


class ExactDiffusion(Strategy):
    """Exact subspace diffusion (Algorithm 1 of Nassif, Wadehra, Vlaski 2023).

    .. math::

        \\psi_{k,i} &= w_{k,i-1} - \\mu \\hat g_k(w_{k,i-1})
            && \\text{adapt} \\\\
        \\phi_{k,i} &= \\psi_{k,i} + w_{k,i-1} - \\psi_{k,i-1}
            && \\text{correct} \\\\
        w_{k,i} &= \\sum_{l \\in N_k} \\bar A_{kl} \\phi_{l,i},
            \\quad \\bar A = (I + A) / 2
            && \\text{combine}

    with ``psi_{-1} = w_{-1}``. Multiplying by ``U^T`` telescopes to
    ``U^T (W_i - W_{i-1}) + mu U^T g(W_{i-1}) = 0``, so any fixed point is the
    constrained optimum. ``A`` must be symmetric.

    For a local group ``A_bar = I`` and, by induction from ``psi_{-1} = w_{-1}``,
    ``w_{i-1} = psi_{i-1}``, so the correction vanishes: those groups keep no
    state and are never multiplied.
    """

    name = "exact"

    def __init__(self, local_steps: int = 1) -> None:
        super().__init__(local_steps)
        self.previous_adapted: list[torch.Tensor | None] | None = None

    def reset(self) -> None:
        self.previous_adapted = None

    def cooperate(self, params, adapted, combiner):
        if self.previous_adapted is None:
            # psi_{-1} = w_{-1}: the first correction is zero.
            self.previous_adapted = [
                None if combiner.is_local(i) else w for i, w in enumerate(params)
            ]

        # correct: phi = psi + w_{i-1} - psi_{i-1} (shared groups only)
        corrected = []
        for i, (w, psi) in enumerate(zip(params, adapted)):
            previous = self.previous_adapted[i]
            if previous is None:
                corrected.append(psi)
            elif previous is w:
                corrected.append(psi)  # first exchange: w - psi_{-1} = 0
            else:
                # psi_{i-1} is not needed after this, so phi reuses its buffer.
                corrected.append(torch.sub(w, previous, out=previous).add_(psi))
        self.previous_adapted = [
            None if previous is None else psi
            for previous, psi in zip(self.previous_adapted, adapted)
        ]

        # combine: w_i = A_bar phi
        return combiner.combine(corrected, "A_bar")

    def state_dict(self) -> dict:
        """Return the stored previous adapted iterates (for checkpoints)."""
        return {"previous_adapted": self.previous_adapted}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.previous_adapted = state["previous_adapted"]


_STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    "noncooperative": NonCooperative,
    "centralized": CentralizedProjection,
    "approximate": ApproximateProjection,
    "exact": ExactDiffusion,
}


def make_strategy(name: str, local_steps: int = 1) -> Strategy:
    """Build a strategy by name (one of :data:`STRATEGIES`)."""
    try:
        cls = _STRATEGY_CLASSES[name]
    except KeyError:
        raise ConfigError(
            f"Unknown strategy {name!r}. Choose one of: {', '.join(STRATEGIES)}."
        ) from None
    return cls(local_steps=local_steps)
