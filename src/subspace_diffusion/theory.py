"""Steady-state theory of subspace diffusion on quadratic costs.

Every function works on plain NumPy matrices over the stacked vector
``W = col{w_1, ..., w_K}`` of length ``N = sum_k M_k``, so it applies to any
quadratic problem, with the multi-task regression model of
:mod:`subspace_diffusion.vector` as the main user.

The costs are quadratic with block-diagonal Hessian ``H`` and unconstrained
minimiser ``W*``, so the gradient is ``g(W) = H (W - W*) + s``, where ``s`` is
zero-mean gradient noise with block-diagonal covariance ``S``. The constraint
is ``W in range(U)`` with ``U^T U = I``.

Glossary:

==========  =====================  ======================================  =======
symbol      name                   meaning                                 shape
==========  =====================  ======================================  =======
U           basis                  orthonormal basis of the subspace       (N, P)
H           hessian                block-diagonal Hessian of the costs     (N, N)
W*          optimum                unconstrained minimisers                (N,)
W°          constrained            constrained minimiser                   (N,)
A           combination_matrix     combination matrix                      (N, N)
A_bar       (I + A) / 2            exact diffusion's combination matrix    (N, N)
S           noise_covariance       gradient-noise covariance at W°         (N, N)
mu          step_size              constant step size                      scalar
K           num_agents             number of agents (the MSD divides by K) int
==========  =====================  ======================================  =======

The mean-square deviation is ``MSD = limsup_i (1/K) E ||W° - W_i||^2``.

* First order, for approximate projection, exact diffusion and centralised
  projection alike (Nassif, Vlaski, Sayed, Part II)::

      MSD ~= (mu / 2K) Tr((U^T H U)^{-1} U^T S U)

* Long-term model of approximate projection. The recursion
  ``W_i = A (W_{i-1} - mu g(W_{i-1}))`` has the fixed point
  ``W_inf = (I - A + mu A H)^{-1} mu A H W*``, which differs from ``W°`` by
  ``O(mu)``, and the error ``W_inf - W_i`` obeys
  ``e_i = F e_{i-1} + mu A s_i`` with ``F = A (I - mu H)``. Hence::

      MSD ~= ||W° - W_inf||^2 / K + Tr(Sigma) / K,
      Sigma = F Sigma F^T + mu^2 A S A^T.

* Long-term model of exact diffusion. With ``B = ((I - A) / 2)^{1/2}`` (the
  symmetric square root), Algorithm 1 is the primal-dual recursion
  ``W_i = A_bar (W_{i-1} - mu g(W_{i-1})) - B Y_{i-1}``,
  ``Y_i = Y_{i-1} + B W_i``, because eliminating ``Y`` gives
  ``W_i = A_bar (2 W_{i-1} - W_{i-2} - mu (g_{i-1} - g_{i-2}))``. The error
  ``x_i = [W° - W_i; Y° - Y_i]`` obeys ``x_i = F x_{i-1} + mu G s_i`` with::

      F = [[A_bar (I - mu H),     -B   ],      G = [[A_bar  ],
           [B A_bar (I - mu H), I - B^2]],          [B A_bar]],

      Sigma = F Sigma F^T + mu^2 G S G^T,   MSD ~= Tr(Sigma_11) / K,

  where ``Sigma_11`` is the top-left N x N block. There is no bias term: the
  fixed point is ``W°`` itself.

The dual error in ``range(U)`` is never excited, because ``B U = 0``, and
``F`` has eigenvalue 1 on it. So this module writes the dual variable in an
orthonormal basis ``Q`` of ``range(I - P_U)``, replacing ``B`` by ``Q^T B``
in the second block row and ``B`` by ``B Q`` in the first. The reduced ``F``
has spectral radius below 1 exactly when the recursion is mean-square stable,
and the Lyapunov equation then has a unique solution.

The long-term models are derived for this library rather than quoted. They
are exact for additive white gradient noise, and for data-driven noise they
take ``S`` at ``W°``.

References
----------
R. Nassif, S. Vlaski, A. H. Sayed, "Adaptation and learning over networks
under subspace constraints, Part I: stability analysis", IEEE Trans. Signal
Processing 68, 2020, arXiv:1905.08750. Part II (performance analysis),
arXiv:1906.12250.

R. Nassif, S. Wadehra, S. Vlaski, "Exact subspace diffusion for
decentralized multitask learning", IEEE CDC 2023, arXiv:2304.07358.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .combination import is_symmetric
from .errors import ConfigError, InvalidCombinationMatrixError
from .graphs import spectral_radius

__all__ = [
    "MSDPrediction",
    "approximate_error_recursion",
    "approximate_fixed_point",
    "approximate_msd",
    "centralized_msd",
    "check_stability",
    "constrained_solution",
    "exact_error_recursion",
    "exact_msd",
    "first_order_msd",
    "mse_noise_covariance",
    "to_db",
]

SYMMETRY_TOL = 1e-8
"""Largest ``|A - A^T|`` entry accepted as symmetric for exact diffusion."""


@dataclass(frozen=True)
class MSDPrediction:
    """Predicted steady-state MSD and its parts.

    Attributes
    ----------
    msd : float
        ``bias + fluctuation``, in linear units (divide by K included).
    bias : float
        ``||W° - W_inf||^2 / K``, the deterministic error floor. Zero for exact
        diffusion and centralised projection.
    fluctuation : float
        ``Tr(Sigma) / K``, the part caused by gradient noise.
    spectral_radius : float
        Spectral radius of the error recursion ``F``, below 1 when stable.
    """

    msd: float
    bias: float
    fluctuation: float
    spectral_radius: float

    @property
    def msd_db(self) -> float:
        """``10 log10(msd)``, ``-inf`` for an MSD of zero."""
        return to_db(self.msd)


def to_db(value: float) -> float:
    """Return ``10 log10(value)``, ``-inf`` for zero."""
    value = float(value)
    if value <= 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(value))


def constrained_solution(
    basis: np.ndarray, hessian: np.ndarray, optimum: np.ndarray
) -> np.ndarray:
    """Return the constrained minimiser ``W° = U (U^T H U)^{-1} U^T H W*``.

    ``W° = U x°`` where ``x°`` minimises ``(1/2) (U x - W*)^T H (U x - W*)``,
    so ``U^T grad J(W°) = U^T H (W° - W*) = 0``.

    Parameters
    ----------
    basis : numpy.ndarray
        ``U``, N x P with orthonormal columns.
    hessian : numpy.ndarray
        ``H``, N x N, symmetric, with ``U^T H U`` positive definite.
    optimum : numpy.ndarray
        ``W*``, length N.

    Returns
    -------
    numpy.ndarray
        ``W°``, length N.
    """
    basis, hessian = _as_basis(basis), _as_square(hessian, "hessian")
    optimum = _as_vector(optimum, hessian.shape[0], "optimum")
    reduced = basis.T @ hessian @ basis
    return basis @ np.linalg.solve(reduced, basis.T @ hessian @ optimum)


def approximate_fixed_point(
    combination_matrix: np.ndarray,
    hessian: np.ndarray,
    optimum: np.ndarray,
    step_size: float,
) -> np.ndarray:
    """Return approximate projection's fixed point ``W_inf``.

    The deterministic recursion ``W = A (W - mu H (W - W*))`` is solved by
    ``W_inf = (I - A + mu A H)^{-1} mu A H W*``. It equals ``W°`` only when
    ``H (W° - W*) = 0``, and otherwise differs by ``O(mu)``.
    """
    matrix = _as_square(combination_matrix, "combination_matrix")
    hessian = _as_square(hessian, "hessian", matrix.shape[0])
    optimum = _as_vector(optimum, matrix.shape[0], "optimum")
    mu = _check_step_size(step_size)
    identity = np.eye(matrix.shape[0])
    system = identity - matrix + mu * matrix @ hessian
    return np.linalg.solve(system, mu * matrix @ hessian @ optimum)


def mse_noise_covariance(
    covariances: Sequence[np.ndarray],
    noise_variances: Sequence[float],
    deviation: np.ndarray,
) -> np.ndarray:
    """Return the gradient-noise covariance ``S`` of the regression model at a point.

    For ``d_k = u_k^T w_k* + v_k`` with ``u_k ~ N(0, R_k)`` and
    ``v_k ~ N(0, sigma_k^2)``, the stochastic gradient ``-u (d - u^T w)`` at
    ``w`` has noise covariance (Gaussian fourth moments)::

        R_s,k = sigma_k^2 R_k + R_k D_k D_k^T R_k + Tr(R_k D_k D_k^T) R_k,
        D_k = w_k - w_k*.

    Parameters
    ----------
    covariances : sequence of numpy.ndarray
        ``R_k``, one ``M_k x M_k`` matrix per agent.
    noise_variances : sequence of float
        ``sigma_k^2``, one per agent.
    deviation : numpy.ndarray
        ``D = W - W*`` stacked over agents, length ``N = sum M_k``. Pass
        ``W° - W*`` for the covariance at the constrained minimiser.

    Returns
    -------
    numpy.ndarray
        ``S = blockdiag(R_s,1, ..., R_s,K)``, N x N.
    """
    covariances = [np.asarray(c, dtype=np.float64) for c in covariances]
    variances = np.asarray(noise_variances, dtype=np.float64).reshape(-1)
    if variances.size != len(covariances):
        raise ConfigError(
            f"got {variances.size} noise variances for {len(covariances)} agents. "
            "Give one variance per agent."
        )
    sizes = [c.shape[0] for c in covariances]
    deviation = _as_vector(deviation, sum(sizes), "deviation")
    blocks = []
    start = 0
    for covariance, variance, size in zip(covariances, variances, sizes):
        d = deviation[start : start + size]
        start += size
        rd = covariance @ d
        blocks.append(
            variance * covariance + np.outer(rd, rd) + float(d @ rd) * covariance
        )
    return scipy.linalg.block_diag(*blocks)


def first_order_msd(
    basis: np.ndarray,
    hessian: np.ndarray,
    noise_covariance: np.ndarray,
    step_size: float,
    num_agents: int,
) -> float:
    """Return the first-order MSD ``(mu / 2K) Tr((U^T H U)^{-1} U^T S U)``.

    It holds for small step sizes for approximate projection, exact diffusion
    and centralised projection alike. It ignores approximate projection's
    ``O(mu^2)`` bias.
    """
    basis = _as_basis(basis)
    hessian = _as_square(hessian, "hessian", basis.shape[0])
    noise = _as_square(noise_covariance, "noise_covariance", basis.shape[0])
    mu = _check_step_size(step_size)
    reduced = basis.T @ hessian @ basis
    trace = np.trace(np.linalg.solve(reduced, basis.T @ noise @ basis))
    return float(mu / (2.0 * _check_agents(num_agents)) * trace)


def approximate_error_recursion(
    combination_matrix: np.ndarray, hessian: np.ndarray, step_size: float
) -> np.ndarray:
    """Return approximate projection's error matrix ``F = A (I - mu H)``."""
    matrix = _as_square(combination_matrix, "combination_matrix")
    hessian = _as_square(hessian, "hessian", matrix.shape[0])
    mu = _check_step_size(step_size)
    return matrix @ (np.eye(matrix.shape[0]) - mu * hessian)


def exact_error_recursion(
    combination_matrix: np.ndarray,
    hessian: np.ndarray,
    step_size: float,
    basis: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return exact diffusion's primal-dual error matrices ``F`` and ``G``.

    ``F`` is square of size ``2N - P`` and ``G`` is ``(2N - P) x N``, with the
    dual error written in an orthonormal basis ``Q`` of ``range(I - P_U)``
    (see the module notes)::

        F = [[A_bar (I - mu H),          -B Q       ],
             [Q^T B A_bar (I - mu H),  I - Q^T B^2 Q]],
        G = [[A_bar], [Q^T B A_bar]],   B = ((I - A) / 2)^{1/2}.

    Raises
    ------
    InvalidCombinationMatrixError
        If A is not symmetric, or has an eigenvalue above 1, so that ``B`` is
        not real.
    """
    matrix = _as_square(combination_matrix, "combination_matrix")
    size = matrix.shape[0]
    hessian = _as_square(hessian, "hessian", size)
    basis = _as_basis(basis, size)
    mu = _check_step_size(step_size)
    if not is_symmetric(matrix, SYMMETRY_TOL):
        raise InvalidCombinationMatrixError(
            "exact diffusion needs a symmetric combination matrix, but max "
            f"|A - A^T| = {np.max(np.abs(matrix - matrix.T)):.3g}. Use "
            "Metropolis-Hastings weights or design_combination_matrix()."
        )

    # B = ((I - A) / 2)^{1/2}: symmetric square root through eigh.
    b_squared = 0.5 * (np.eye(size) - 0.5 * (matrix + matrix.T))
    eigenvalues, eigenvectors = np.linalg.eigh(b_squared)
    if eigenvalues.min() < -1e-10:
        raise InvalidCombinationMatrixError(
            f"A has eigenvalue {1 - 2 * eigenvalues.min():.6g} above 1, so "
            "(I - A) / 2 has no real square root. A valid combination matrix "
            "has eigenvalues in (-1, 1]."
        )
    b_matrix = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    b_matrix = b_matrix @ eigenvectors.T

    # Write the dual error in a basis Q of range(I - P_U), the only part B excites.
    complement = scipy.linalg.null_space(basis.T)
    averaged = 0.5 * (np.eye(size) + matrix)
    primal = averaged @ (np.eye(size) - mu * hessian)
    dual_b = complement.T @ b_matrix
    recursion = np.block(
        [
            [primal, -b_matrix @ complement],
            [
                dual_b @ primal,
                np.eye(complement.shape[1]) - dual_b @ b_matrix @ complement,
            ],
        ]
    )
    noise_gain = np.vstack([averaged, dual_b @ averaged])
    return recursion, noise_gain


def check_stability(recursion: np.ndarray, step_size: float, strategy: str) -> float:
    """Return the spectral radius of an error recursion, raising if it is 1 or more.

    Raises
    ------
    ConfigError
        If the spectral radius is at least 1, because the iterates then
        diverge for this step size. The message gives the radius and suggests
        a smaller step size.
    """
    radius = spectral_radius(recursion)
    if not radius < 1.0:
        raise ConfigError(
            f"{strategy} is unstable at step size {step_size:g}: the spectral "
            f"radius of its error recursion is {radius:.6g}, not below 1. Use a "
            "smaller step size."
        )
    return radius


def approximate_msd(
    combination_matrix: np.ndarray,
    hessian: np.ndarray,
    noise_covariance: np.ndarray,
    step_size: float,
    optimum: np.ndarray,
    basis: np.ndarray,
    num_agents: int,
) -> MSDPrediction:
    """Predict approximate projection's steady-state MSD (long-term model).

    ``MSD = ||W° - W_inf||^2 / K + Tr(Sigma) / K`` with
    ``Sigma = F Sigma F^T + mu^2 A S A^T`` and ``F = A (I - mu H)``.

    Raises
    ------
    ConfigError
        If ``spectral_radius(F) >= 1`` (see :func:`check_stability`).
    """
    matrix = _as_square(combination_matrix, "combination_matrix")
    noise = _as_square(noise_covariance, "noise_covariance", matrix.shape[0])
    mu = _check_step_size(step_size)
    agents = _check_agents(num_agents)
    recursion = approximate_error_recursion(matrix, hessian, mu)
    radius = check_stability(recursion, mu, "approximate projection")

    target = constrained_solution(basis, hessian, optimum)
    fixed_point = approximate_fixed_point(matrix, hessian, optimum, mu)
    bias = float(np.sum((target - fixed_point) ** 2)) / agents
    covariance = scipy.linalg.solve_discrete_lyapunov(
        recursion, mu**2 * matrix @ noise @ matrix.T
    )
    fluctuation = float(np.trace(covariance)) / agents
    return MSDPrediction(bias + fluctuation, bias, fluctuation, radius)


def exact_msd(
    combination_matrix: np.ndarray,
    hessian: np.ndarray,
    noise_covariance: np.ndarray,
    step_size: float,
    basis: np.ndarray,
    num_agents: int,
) -> MSDPrediction:
    """Predict exact diffusion's steady-state MSD (long-term model).

    ``MSD = Tr(Sigma_11) / K`` with ``Sigma = F Sigma F^T + mu^2 G S G^T``
    (see :func:`exact_error_recursion`). The bias is zero.

    Raises
    ------
    ConfigError
        If ``spectral_radius(F) >= 1`` (see :func:`check_stability`).
    InvalidCombinationMatrixError
        If A is not symmetric.
    """
    matrix = _as_square(combination_matrix, "combination_matrix")
    size = matrix.shape[0]
    noise = _as_square(noise_covariance, "noise_covariance", size)
    mu = _check_step_size(step_size)
    agents = _check_agents(num_agents)
    recursion, noise_gain = exact_error_recursion(matrix, hessian, mu, basis)
    radius = check_stability(recursion, mu, "exact diffusion")
    covariance = scipy.linalg.solve_discrete_lyapunov(
        recursion, mu**2 * noise_gain @ noise @ noise_gain.T
    )
    fluctuation = float(np.trace(covariance[:size, :size])) / agents
    return MSDPrediction(fluctuation, 0.0, fluctuation, radius)


def centralized_msd(
    hessian: np.ndarray,
    noise_covariance: np.ndarray,
    step_size: float,
    basis: np.ndarray,
    num_agents: int,
) -> MSDPrediction:
    """Predict centralised projection's steady-state MSD.

    ``W_i = P_U (W_{i-1} - mu g(W_{i-1}))`` keeps ``W_i = U x_i``, and the
    error ``x° - x_i`` obeys ``e_i = F e_{i-1} + mu U^T s_i`` with
    ``F = I - mu U^T H U``. So ``MSD = Tr(Sigma) / K`` with
    ``Sigma = F Sigma F^T + mu^2 U^T S U``.

    Raises
    ------
    ConfigError
        If ``spectral_radius(F) >= 1`` (see :func:`check_stability`).
    """
    basis = _as_basis(basis)
    hessian = _as_square(hessian, "hessian", basis.shape[0])
    noise = _as_square(noise_covariance, "noise_covariance", basis.shape[0])
    mu = _check_step_size(step_size)
    agents = _check_agents(num_agents)
    recursion = np.eye(basis.shape[1]) - mu * basis.T @ hessian @ basis
    radius = check_stability(recursion, mu, "centralized projection")
    covariance = scipy.linalg.solve_discrete_lyapunov(
        recursion, mu**2 * basis.T @ noise @ basis
    )
    fluctuation = float(np.trace(covariance)) / agents
    return MSDPrediction(fluctuation, 0.0, fluctuation, radius)


def _check_step_size(step_size: float) -> float:
    if isinstance(step_size, bool) or not isinstance(
        step_size, (int, float, np.floating)
    ):
        raise ConfigError(f"step_size must be a number, got {step_size!r}.")
    if not np.isfinite(step_size) or step_size <= 0:
        raise ConfigError(f"step_size must be positive and finite, got {step_size}.")
    return float(step_size)


def _check_agents(num_agents: int) -> int:
    if isinstance(num_agents, bool) or not isinstance(num_agents, (int, np.integer)):
        raise ConfigError(f"num_agents must be an integer, got {num_agents!r}.")
    if num_agents < 1:
        raise ConfigError(f"num_agents must be at least 1, got {num_agents}.")
    return int(num_agents)


def _as_square(matrix: np.ndarray, name: str, size: int | None = None) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ConfigError(f"{name} must be a square matrix, got shape {array.shape}.")
    if size is not None and array.shape[0] != size:
        raise ConfigError(
            f"{name} has shape {array.shape}, but the problem has {size} entries. "
            f"Pass a {size} x {size} matrix."
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} contains NaN or infinite entries.")
    return array


def _as_basis(basis: np.ndarray, size: int | None = None) -> np.ndarray:
    array = np.asarray(basis, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or (size is not None and array.shape[0] != size):
        raise ConfigError(
            f"basis must be an N x P matrix with N = {size}, got shape {array.shape}."
        )
    return array


def _as_vector(vector: np.ndarray, size: int, name: str) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64).reshape(-1)
    if array.size != size:
        raise ConfigError(
            f"{name} has {array.size} entries, but the problem has {size}."
        )
    return array
