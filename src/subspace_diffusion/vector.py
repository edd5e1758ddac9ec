"""Vector problems: the multi-task linear-regression model and its executor.

Agent k owns ``w_k`` in ``R^{M_k}`` and streams data from the model::

    d_k = u_k^T w_k* + v_k,   u_k ~ N(0, R_k),   v_k ~ N(0, sigma_k^2),
    J_k(w) = (1/2) E (d_k - u_k^T w)^2,

so ``grad J_k(w) = R_k (w - w_k*)`` and the Hessian is
``H = blockdiag(R_1, ..., R_K)``. The agents' sizes ``M_k`` may differ.

This module does not implement the algorithms again. :func:`simulate` runs
the strategies of :mod:`subspace_diffusion.strategies` with
:class:`~subspace_diffusion.step_rules.ConstantStep`, the same code the
neural-network engine runs, and provides their operators:

* the parameters are one tensor ``W`` of shape ``(N, R)``: the stacked vector
  ``col{w_1, ..., w_K}`` down the rows and ``R`` independent Monte-Carlo
  repetitions across the columns, in float64;
* the gradient oracle returns the exact gradient ``H (W - W*)``, a sampled
  stochastic gradient ``-u (d - u^T w)`` with fresh data, or the exact gradient
  plus additive white noise (:data:`GRADIENT_MODES`);
* :class:`VectorCombiner` applies the ``N x N`` matrices ``A``,
  ``A_bar = (I + A) / 2`` and ``P_U = U U^T`` to the rows.

References
----------
R. Nassif, S. Vlaski, A. H. Sayed, "Adaptation and learning over networks
under subspace constraints, Part I: stability analysis", arXiv:1905.08750.

R. Nassif, S. Wadehra, S. Vlaski, "Exact subspace diffusion for
decentralized multitask learning", arXiv:2304.07358.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg
import torch

from . import theory
from .combination import is_symmetric
from .errors import ConfigError, DivergenceError, InvalidCombinationMatrixError
from .graphs import spectral_radius
from .step_rules import ConstantStep
from .strategies import Strategy, make_strategy
from .subspaces import VectorSubspace

__all__ = [
    "COVARIANCE_KINDS",
    "GRADIENT_MODES",
    "RegressionProblem",
    "SimulationResult",
    "VectorCombiner",
    "make_regression_problem",
    "predict_msd",
    "simulate",
]

GRADIENT_MODES = ("exact", "sampled", "additive")
"""Gradient oracles. ``"exact"`` returns ``H (W - W*)``, ``"sampled"`` returns
``-u (d - u^T w)`` on fresh data, and ``"additive"`` adds white noise of standard
deviation ``gradient_noise_std`` to the exact gradient."""

COVARIANCE_KINDS = ("identity", "random-diagonal", "random")
"""Regressor covariances ``R_k`` that :func:`make_regression_problem` draws."""

CONDITION_TOL = 1e-8
"""Largest residual of ``A U = U`` and ``U^T A = U^T`` that :func:`simulate` accepts."""

DIVERGENCE_CHECK_EVERY = 100
"""Iterations between two checks that the iterates are finite."""


@dataclass(frozen=True, eq=False)
class RegressionProblem:
    """Multi-task linear regression over a vector subspace.

    Parameters
    ----------
    subspace : VectorSubspace
        ``U`` (N x P) and the agents' sizes ``M_k``.
    covariances : tuple of numpy.ndarray
        Regressor covariances ``R_k``, each ``M_k x M_k`` symmetric positive
        definite.
    noise_std : numpy.ndarray
        Measurement-noise standard deviations ``sigma_k``, one per agent.
    optimum : numpy.ndarray
        Unconstrained minimisers ``W* = col{w_1*, ..., w_K*}``, length N.

    Raises
    ------
    ConfigError
        If a shape does not match the subspace, a covariance is not symmetric
        positive definite, or a noise level is negative.
    """

    subspace: VectorSubspace
    covariances: tuple[np.ndarray, ...]
    noise_std: np.ndarray
    optimum: np.ndarray

    def __post_init__(self) -> None:
        sizes = self.subspace.sizes
        if len(self.covariances) != len(sizes):
            raise ConfigError(
                f"got {len(self.covariances)} covariances for {len(sizes)} agents. "
                "Give one regressor covariance per agent."
            )
        checked = []
        for agent, (covariance, size) in enumerate(zip(self.covariances, sizes)):
            checked.append(_checked_covariance(covariance, size, agent))
        object.__setattr__(self, "covariances", tuple(checked))

        noise = np.asarray(self.noise_std, dtype=np.float64).reshape(-1)
        if noise.size == 1:
            noise = np.full(len(sizes), float(noise[0]))
        if (
            noise.size != len(sizes)
            or not np.all(np.isfinite(noise))
            or noise.min() < 0
        ):
            raise ConfigError(
                f"noise_std must be one non-negative number or one per agent "
                f"({len(sizes)}), got {self.noise_std!r}."
            )
        object.__setattr__(self, "noise_std", noise)

        optimum = np.asarray(self.optimum, dtype=np.float64).reshape(-1)
        if optimum.size != self.subspace.total_size or not np.all(np.isfinite(optimum)):
            raise ConfigError(
                f"optimum must have {self.subspace.total_size} finite entries "
                f"(sum of the agents' sizes), got {optimum.size}."
            )
        object.__setattr__(self, "optimum", optimum)

    @property
    def num_agents(self) -> int:
        """Number of agents K."""
        return self.subspace.num_agents

    @property
    def size(self) -> int:
        """Length N of the stacked vector."""
        return self.subspace.total_size

    @cached_property
    def hessian(self) -> np.ndarray:
        """``H = blockdiag(R_1, ..., R_K)``, N x N."""
        return scipy.linalg.block_diag(*self.covariances)

    @cached_property
    def constrained_solution(self) -> np.ndarray:
        """``W° = U (U^T H U)^{-1} U^T H W*``, length N."""
        return theory.constrained_solution(
            self.subspace.basis, self.hessian, self.optimum
        )

    def gradient(self, params: np.ndarray) -> np.ndarray:
        """Return the exact gradient ``H (W - W*)`` at a stacked vector ``W``."""
        params = np.asarray(params, dtype=np.float64)
        return self.hessian @ (params - self.optimum)

    def noise_covariance(
        self, gradient: str = "sampled", gradient_noise_std: float = 0.0
    ) -> np.ndarray:
        """Return the gradient-noise covariance ``S`` at ``W°`` for a gradient mode.

        ``"exact"``: zero. ``"additive"``: ``gradient_noise_std^2 I``.
        ``"sampled"``: ``blockdiag(R_s,k)`` of
        :func:`~subspace_diffusion.theory.mse_noise_covariance` at
        ``D = W° - W*``.
        """
        gradient = _check_gradient_mode(gradient)
        if gradient == "exact":
            return np.zeros((self.size, self.size))
        if gradient == "additive":
            std = _check_noise_std(gradient_noise_std)
            return std**2 * np.eye(self.size)
        return theory.mse_noise_covariance(
            self.covariances,
            self.noise_std**2,
            self.constrained_solution - self.optimum,
        )

    def gradient_oracle(
        self,
        gradient: str,
        generator: torch.Generator,
        gradient_noise_std: float = 0.0,
    ) -> Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]:
        """Build the strategies' gradient oracle for ``[W]`` with ``W`` of shape (N, R).

        Every call draws fresh noise from ``generator``.
        """
        gradient = _check_gradient_mode(gradient)
        std = _check_noise_std(gradient_noise_std)
        hessian = torch.as_tensor(self.hessian)
        optimum = torch.as_tensor(self.optimum)[:, None]

        if gradient == "exact":
            return lambda params: [hessian @ (params[0] - optimum)]

        if gradient == "additive":

            def additive(params):
                (w,) = params
                noise = torch.randn(w.shape, generator=generator, dtype=w.dtype)
                return [hessian @ (w - optimum) + std * noise]

            return additive

        # Sampled: u = L z with L the block-diagonal Cholesky factor of H, and the
        # per-agent inner products u_k^T (w_k* - w_k) as an indicator product.
        cholesky = torch.as_tensor(np.linalg.cholesky(self.hessian))
        owner = np.repeat(np.arange(self.num_agents), self.subspace.sizes)
        indicator = torch.as_tensor(
            (owner[None, :] == np.arange(self.num_agents)[:, None]).astype(float)
        )
        owner_index = torch.as_tensor(owner)
        measurement_std = torch.as_tensor(self.noise_std)[:, None]

        def sampled(params):
            (w,) = params
            shape = w.shape
            regressors = cholesky @ torch.randn(
                shape, generator=generator, dtype=w.dtype
            )
            noise = torch.randn(
                (self.num_agents, shape[1]), generator=generator, dtype=w.dtype
            )
            # e_k = d_k - u_k^T w_k = u_k^T (w_k* - w_k) + v_k
            residuals = indicator @ (regressors * (optimum - w))
            residuals = residuals + measurement_std * noise
            return [-regressors * residuals[owner_index]]

        return sampled


def make_regression_problem(
    subspace: VectorSubspace,
    *,
    heterogeneity: float = 1.0,
    noise_std: float | Sequence[float] = 0.1,
    covariances: str | Sequence[np.ndarray] = "random-diagonal",
    eigenvalue_range: tuple[float, float] = (0.5, 1.5),
    seed: int = 0,
) -> RegressionProblem:
    """Draw a regression problem whose minimisers leave the subspace by a set amount.

    The minimisers are ``W* = U x + h (I - P_U) z`` with ``x ~ N(0, I_P)`` and
    ``z ~ N(0, I_N)``, so ``h = 0`` puts ``W*`` in ``range(U)`` (then
    ``W° = W*`` and approximate projection has no bias), and a larger ``h``
    makes the tasks more heterogeneous.

    Parameters
    ----------
    subspace : VectorSubspace
        ``U`` and the agents' sizes.
    heterogeneity : float, default 1.0
        ``h``, non-negative.
    noise_std : float or sequence of float, default 0.1
        Measurement-noise standard deviations ``sigma_k``, one for all agents
        or one per agent. They matter only for sampled gradients.
    covariances : str or sequence of numpy.ndarray, default "random-diagonal"
        Regressor covariances ``R_k``: one of :data:`COVARIANCE_KINDS`, or the
        matrices themselves. ``"random-diagonal"`` draws diagonal entries
        uniformly from ``eigenvalue_range``. ``"random"`` draws eigenvalues the
        same way and a random orthogonal eigenbasis.
    eigenvalue_range : tuple of float, default (0.5, 1.5)
        Positive range of the drawn eigenvalues of ``R_k``.
    seed : int, default 0
        Seed of every draw.

    Returns
    -------
    RegressionProblem

    Raises
    ------
    ConfigError
        If a setting is out of range or of the wrong shape.
    """
    if not isinstance(subspace, VectorSubspace):
        raise ConfigError(
            f"subspace must be a VectorSubspace, got {type(subspace).__name__}. "
            "Build one with VectorSubspace.from_agent_subspace() or vector_subspace()."
        )
    if not math.isfinite(heterogeneity) or heterogeneity < 0:
        raise ConfigError(
            f"heterogeneity must be non-negative and finite, got {heterogeneity}."
        )
    low, high = (float(value) for value in eigenvalue_range)
    if not (0 < low <= high and math.isfinite(high)):
        raise ConfigError(
            f"eigenvalue_range must satisfy 0 < low <= high, got {eigenvalue_range}."
        )
    rng = np.random.default_rng(seed)
    sizes = subspace.sizes

    if isinstance(covariances, str):
        if covariances not in COVARIANCE_KINDS:
            raise ConfigError(
                f"unknown covariance kind {covariances!r}. Use one of "
                f"{', '.join(COVARIANCE_KINDS)}, or pass the matrices."
            )
        matrices = tuple(
            _draw_covariance(covariances, m, low, high, rng) for m in sizes
        )
    else:
        matrices = tuple(covariances)

    basis = subspace.basis
    coefficients = rng.standard_normal(basis.shape[1])
    direction = rng.standard_normal(basis.shape[0])
    outside = direction - basis @ (basis.T @ direction)
    optimum = basis @ coefficients + heterogeneity * outside
    return RegressionProblem(subspace, matrices, np.asarray(noise_std), optimum)


class VectorCombiner:
    """Combine operator of vector problems: ``N x N`` matrices on the rows.

    Implements the strategies' ``Combiner`` protocol for a parameter list
    ``[W]`` with ``W`` of shape ``(N, ...)``. The operators are ``"A"``,
    ``"A_bar" = (I + A) / 2`` and ``"P" = U U^T``. When ``U`` spans everything
    (P == N), the parameter is local: it is returned unchanged.

    Parameters
    ----------
    combination_matrix : numpy.ndarray
        ``A``, N x N.
    projector : numpy.ndarray
        ``P_U``, N x N.
    """

    def __init__(self, combination_matrix: np.ndarray, projector: np.ndarray) -> None:
        matrix = np.asarray(combination_matrix, dtype=np.float64)
        projector = np.asarray(projector, dtype=np.float64)
        size = projector.shape[0]
        if matrix.shape != (size, size):
            raise InvalidCombinationMatrixError(
                f"the combination matrix has shape {matrix.shape}, but the problem "
                f"has {size} entries. Pass a {size} x {size} matrix."
            )
        if not np.all(np.isfinite(matrix)):
            raise InvalidCombinationMatrixError(
                "the combination matrix contains NaN or infinite entries."
            )
        self.combination_matrix = matrix
        self.projector = projector
        self.local = bool(np.allclose(projector, np.eye(size), atol=CONDITION_TOL))
        self.matrices = {
            "A": torch.as_tensor(matrix),
            "A_bar": torch.as_tensor(0.5 * (np.eye(size) + matrix)),
            "P": torch.as_tensor(projector.copy()),
        }

    def is_local(self, index: int) -> bool:
        return self.local

    def combine(self, tensors, operator: str):
        if operator not in self.matrices:
            raise ConfigError(
                f"unknown combine operator {operator!r}. Use 'A', 'A_bar' or 'P'."
            )
        if self.local:
            return list(tensors)
        matrix = self.matrices[operator]
        out = []
        for tensor in tensors:
            flat = tensor.reshape(tensor.shape[0], -1)
            out.append((matrix.to(flat.dtype) @ flat).reshape(tensor.shape))
        return out

    def neighbour_average(self, values: torch.Tensor, index: int) -> torch.Tensor:
        """Apply ``A`` to values with one row per entry of the stacked vector."""
        if self.local:
            return values
        return self.matrices["A"].to(values.dtype) @ values

    def check(self, strategy: str, basis: np.ndarray) -> None:
        """Check the conditions ``strategy`` relies on.

        Raises
        ------
        InvalidCombinationMatrixError
            For exact diffusion, if A is not symmetric. For approximate
            projection and exact diffusion, if ``A U != U`` or
            ``spectral_radius(A - P_U) >= 1``.

        Warns
        -----
        UserWarning
            If ``U^T A != U^T`` (for example the row-stochastic averaging rule
            on a non-regular graph), because approximate projection then
            converges to a point farther from ``W°``.
        """
        if strategy not in ("approximate", "exact") or self.local:
            return
        matrix = self.combination_matrix
        if strategy == "exact" and not is_symmetric(matrix, theory.SYMMETRY_TOL):
            raise InvalidCombinationMatrixError(
                "exact diffusion needs a symmetric combination matrix, but max "
                f"|A - A^T| = {np.max(np.abs(matrix - matrix.T)):.3g}. With a "
                "non-symmetric A it diverges for every step size. Use "
                "design_combination_matrix() with Metropolis-Hastings weights."
            )
        right = float(np.max(np.abs(matrix @ basis - basis)))
        if right > CONDITION_TOL:
            raise InvalidCombinationMatrixError(
                f"the combination matrix breaks A U = U by {right:.3g}, so it does "
                "not keep the subspace. Build it with design_combination_matrix()."
            )
        radius = spectral_radius(matrix - self.projector)
        if not radius < 1.0:
            raise InvalidCombinationMatrixError(
                f"spectral_radius(A - P_U) = {radius:.6g} is not below 1, so A^i "
                "does not converge to P_U. Build A with design_combination_matrix()."
            )
        left = float(np.max(np.abs(basis.T @ matrix - basis.T)))
        if left > CONDITION_TOL:
            warnings.warn(
                f"the combination matrix breaks U^T A = U^T by {left:.3g} (it is "
                "only row stochastic, like the averaging rule), so "
                f"{strategy} converges to a point away from the constrained "
                "solution. Use Metropolis-Hastings weights or a designed matrix.",
                UserWarning,
                stacklevel=3,
            )


@dataclass
class SimulationResult:
    """Learning curve of one simulated strategy.

    Attributes
    ----------
    msd : numpy.ndarray
        ``(1/K) ||W_ref - W_i||^2`` averaged over repetitions, for
        ``i = 0 .. iterations`` (entry 0 is the initial point).
    final : numpy.ndarray
        Iterates after the last iteration, shape (N, R).
    strategy : str
        Strategy name.
    step_size : float
        ``mu``.
    repetitions : int
        Number of Monte-Carlo repetitions R.
    """

    msd: np.ndarray
    final: np.ndarray
    strategy: str
    step_size: float
    repetitions: int

    @property
    def msd_db(self) -> np.ndarray:
        """``10 log10(msd)`` per iteration."""
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(self.msd)

    def steady_state(self, fraction: float = 0.25) -> float:
        """Return the mean MSD over the last ``fraction`` of the iterations.

        The mean is in linear units, not in dB.
        """
        if not 0 < fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction}.")
        count = max(1, round(fraction * (self.msd.size - 1)))
        return float(np.mean(self.msd[-count:]))


def simulate(
    problem: RegressionProblem,
    strategy: str | Strategy,
    step_size: float,
    iterations: int,
    repetitions: int = 1,
    seed: int = 0,
    *,
    combination_matrix: np.ndarray | None = None,
    gradient: str = "exact",
    gradient_noise_std: float = 0.0,
    local_steps: int = 1,
    initial: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    num_threads: int | None = 1,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Run a strategy on a regression problem and return its MSD curve.

    Each iteration calls ``strategy.step([W], gradient, ConstantStep(mu),
    combiner)`` once on all ``R`` repetitions together.

    Parameters
    ----------
    problem : RegressionProblem
    strategy : str or Strategy
        A name from :data:`~subspace_diffusion.strategies.STRATEGIES` or an
        instance, which is reset first.
    step_size : float
        ``mu``.
    iterations : int
        Number of exchanges.
    repetitions : int, default 1
        Independent Monte-Carlo runs R, simulated side by side.
    seed : int, default 0
        Seed of the gradient noise.
    combination_matrix : numpy.ndarray, optional
        ``A`` (N x N). Required by approximate projection and exact diffusion.
    gradient : {"exact", "sampled", "additive"}, default "exact"
        Gradient oracle (see :data:`GRADIENT_MODES`).
    gradient_noise_std : float, default 0.0
        ``sigma_s`` of ``"additive"`` gradients.
    local_steps : int, default 1
        Adapt steps per exchange ``E``, used when ``strategy`` is a name.
    initial : numpy.ndarray, optional
        Starting point ``W_{-1}`` (length N), zero by default.
    reference : numpy.ndarray, optional
        Point the MSD is measured from, ``W°`` by default.
    num_threads : int or None, default 1
        torch intra-op threads during the run, restored afterwards; None keeps
        the current setting. The matrices of vector problems are small, so
        extra threads only add synchronisation: on a 2-core CPU shared with
        other processes, 2000 iterations of 100 repetitions took 0.25 s with
        one thread and 4 to 20 s with two.
    progress : callable, optional
        Called with the number of iterations completed since its last call,
        every :data:`DIVERGENCE_CHECK_EVERY` iterations and at the end.

    Raises
    ------
    ConfigError
        If a setting is invalid, or A is missing for a strategy that needs it.
    InvalidCombinationMatrixError
        See :meth:`VectorCombiner.check`.
    DivergenceError
        If the iterates become NaN or infinite (the step size is too large).
    """
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, local_steps)
    elif not isinstance(strategy, Strategy):
        raise ConfigError(
            f"strategy must be a name or a Strategy, got {type(strategy).__name__}."
        )
    strategy.reset()
    step_rule = ConstantStep(step_size)
    iterations = _check_count(iterations, "iterations")
    repetitions = _check_count(repetitions, "repetitions")
    size = problem.size

    if combination_matrix is None:
        if strategy.name in ("approximate", "exact"):
            raise ConfigError(
                f"strategy {strategy.name!r} needs a combination matrix. Build one "
                "with design_combination_matrix(subspace, graph)."
            )
        combination_matrix = np.eye(size)
    combiner = VectorCombiner(combination_matrix, problem.subspace.projector)
    combiner.check(strategy.name, problem.subspace.basis)

    generator = torch.Generator().manual_seed(int(seed))
    oracle = problem.gradient_oracle(gradient, generator, gradient_noise_std)
    target = problem.constrained_solution if reference is None else reference
    target = torch.as_tensor(_vector(target, size, "reference"))[:, None]
    start = np.zeros(size) if initial is None else _vector(initial, size, "initial")
    w = torch.as_tensor(start)[:, None].repeat(1, repetitions)

    msd = torch.empty(iterations + 1, dtype=torch.float64)
    scale = 1.0 / (problem.num_agents * repetitions)
    msd[0] = torch.sum((w - target) ** 2) * scale
    reported = 0
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(_check_count(num_threads, "num_threads"))
    try:
        for i in range(1, iterations + 1):
            (w,) = strategy.step([w], oracle, step_rule, combiner)
            msd[i] = torch.sum((w - target) ** 2) * scale
            if i % DIVERGENCE_CHECK_EVERY == 0 or i == iterations:
                _check_finite(msd[i], strategy.name, step_rule.step_size, i)
                if progress is not None:
                    progress(i - reported)
                    reported = i
    finally:
        torch.set_num_threads(previous_threads)

    return SimulationResult(
        msd.numpy(), w.numpy(), strategy.name, step_rule.step_size, repetitions
    )


def predict_msd(
    problem: RegressionProblem,
    strategy: str,
    step_size: float,
    *,
    combination_matrix: np.ndarray | None = None,
    gradient: str = "exact",
    gradient_noise_std: float = 0.0,
    model: str = "long-term",
) -> theory.MSDPrediction:
    """Predict the steady-state MSD that :func:`simulate` measures.

    Parameters
    ----------
    problem, strategy, step_size, combination_matrix, gradient, gradient_noise_std
        As in :func:`simulate`. ``strategy`` is ``"approximate"``, ``"exact"``
        or ``"centralized"``.
    model : {"long-term", "first-order"}, default "long-term"
        ``"long-term"`` solves the strategy's Lyapunov equation (and adds the
        bias of approximate projection). ``"first-order"`` returns
        ``(mu / 2K) Tr((U^T H U)^{-1} U^T S U)``, the same for every strategy.

    Raises
    ------
    ConfigError
        If the strategy has no model, or the step size is unstable.
    """
    if model not in ("long-term", "first-order"):
        raise ConfigError(f"unknown model {model!r}. Use 'long-term' or 'first-order'.")
    basis = problem.subspace.basis
    noise = problem.noise_covariance(gradient, gradient_noise_std)
    agents = problem.num_agents
    if model == "first-order":
        value = theory.first_order_msd(basis, problem.hessian, noise, step_size, agents)
        return theory.MSDPrediction(value, 0.0, value, float("nan"))
    if strategy == "centralized":
        return theory.centralized_msd(problem.hessian, noise, step_size, basis, agents)
    if strategy not in ("approximate", "exact"):
        raise ConfigError(
            f"no steady-state model for strategy {strategy!r}. Use 'approximate', "
            "'exact' or 'centralized'."
        )
    if combination_matrix is None:
        raise ConfigError(f"strategy {strategy!r} needs a combination matrix.")
    if strategy == "exact":
        return theory.exact_msd(
            combination_matrix, problem.hessian, noise, step_size, basis, agents
        )
    return theory.approximate_msd(
        combination_matrix,
        problem.hessian,
        noise,
        step_size,
        problem.optimum,
        basis,
        agents,
    )


def _draw_covariance(
    kind: str, size: int, low: float, high: float, rng: np.random.Generator
) -> np.ndarray:
    if kind == "identity":
        return np.eye(size)
    eigenvalues = rng.uniform(low, high, size)
    if kind == "random-diagonal":
        return np.diag(eigenvalues)
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    q = q * np.sign(np.diag(r))
    return (q * eigenvalues) @ q.T


def _checked_covariance(covariance: np.ndarray, size: int, agent: int) -> np.ndarray:
    matrix = np.asarray(covariance, dtype=np.float64)
    if matrix.shape != (size, size):
        raise ConfigError(
            f"the covariance of agent {agent} has shape {matrix.shape}, but the "
            f"agent has {size} entries. Pass a {size} x {size} matrix."
        )
    if not np.all(np.isfinite(matrix)) or not np.allclose(matrix, matrix.T):
        raise ConfigError(
            f"the covariance of agent {agent} must be finite and symmetric."
        )
    smallest = float(np.linalg.eigvalsh(matrix).min())
    if smallest <= 0:
        raise ConfigError(
            f"the covariance of agent {agent} is not positive definite (smallest "
            f"eigenvalue {smallest:.3g}). Pass a positive definite matrix."
        )
    matrix = matrix.copy()
    matrix.setflags(write=False)
    return matrix


def _check_gradient_mode(gradient: str) -> str:
    if gradient not in GRADIENT_MODES:
        raise ConfigError(
            f"unknown gradient mode {gradient!r}. Use one of "
            f"{', '.join(GRADIENT_MODES)}."
        )
    return gradient


def _check_noise_std(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ConfigError(f"gradient_noise_std must be a number, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"gradient_noise_std must be non-negative and finite, got {value}."
        )
    return float(value)


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}.")
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}.")
    return int(value)


def _vector(value: np.ndarray, size: int, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size != size:
        raise ConfigError(f"{name} must have {size} entries, got {array.size}.")
    return array


def _check_finite(value: torch.Tensor, strategy: str, step_size: float, i: int) -> None:
    if not torch.isfinite(value):
        raise DivergenceError(
            f"{strategy} diverged at iteration {i} with step size {step_size:g}: "
            "the iterates are no longer finite. Use a smaller step size."
        )
