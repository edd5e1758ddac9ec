"""Step rules: the adapt-step increment of every strategy.

``ConstantStep`` returns ``mu * g``. ``AutomaticGradientDescent`` returns the
automatic gradient descent (AGD) update of Bernstein et al., computed per
agent. With ``agd-local`` (Algorithm 2 of Wadehra's exact diffusion with AGD)
each agent uses its own gradient norms. With ``agd-shared`` (Algorithm 3),
shared parameter groups use neighbourhood averages of those norms.

AGD for a network of ``L`` weight tensors ``W_l`` of shape ``d_l x d_{l-1}``::

    G   = (1 / L) sum_l s_l ||grad W_l||_F,          s_l = sqrt(d_l / d_{l-1})
    eta = log((1 + sqrt(1 + 4 G)) / 2)
    W_l <- W_l - (eta / L) s_l grad W_l / ||grad W_l||_F

Rules of this implementation:

* ``L`` counts weight tensors (linear and convolution weights), not scalars.
* A convolution weight ``out x in x kh x kw`` is ``kh * kw`` matrices
  (slices) of shape ``out x in``, with ``s_l = sqrt(out / in) / sqrt(kh kw)``.
  Norms are taken per slice: each slice is normalised by its own norm in the
  update, and the layer adds ``s_l`` times the sum of its slice norms to
  ``G``. For a linear layer (one slice) this is the formula above.
* Biases: each bias belongs to the weight before it (same module) and is
  updated by ``(eta / L) s_l grad b / ||grad W_l||_F``, with the whole
  weight's Frobenius norm. Biases do not count in ``L`` or ``G``.
* A zero gradient norm gives a zero update (no division by zero).
* ``agd-shared``: for parameters of shared (non-local) groups, every norm
  ``||grad W_l^(k)||`` above (per slice) is replaced by the neighbourhood
  average ``sum_m A_km ||grad W_l^(m)||`` with the group's combination
  matrix, and a bias is divided by the average of the weight's Frobenius
  norms. Local groups keep their own norms.
* ``gain`` multiplies ``eta``; with ``E`` local steps, the increment is also
  scaled by ``1 / E``.
* ``agree``: every agent's ``G_k`` is replaced by its neighbourhood average
  ``sum_m A_km G_m`` (one gossip step per exchange with the combination matrix
  of the first shared layer), which pulls the agents' step sizes together.
  Different step sizes move exact diffusion's fixed point to
  ``U^T M grad J(W) = 0`` with ``M = diag(mu_k)``, so agreeing step sizes keep
  it closer to the constrained optimum.

References
----------
J. Bernstein, C. Mingard, K. Huang, N. Azizan, Y. Yue, "Automatic gradient
descent: deep learning without hyperparameters", arXiv:2304.05187.

S. Wadehra, "Automatic exact subspace diffusion for deep, distributed,
multi-task learning", MSc thesis, Imperial College London, 2023.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import ConfigError

STEP_RULES = ("constant", "agd-local", "agd-shared")


@dataclass(frozen=True)
class Layer:
    """One AGD layer: a weight tensor and the optional bias grouped with it.

    Indices point into the stacked parameter list; shapes exclude the agent
    dimension.
    """

    name: str
    weight: int
    bias: int | None
    fan_out: int
    fan_in: int
    kernel_size: int  # kh * kw, 1 for linear layers

    @property
    def scale(self) -> float:
        """``s_l = sqrt(fan_out / fan_in) / sqrt(kh kw)``."""
        return math.sqrt(self.fan_out / self.fan_in) / math.sqrt(self.kernel_size)


def find_layers(names: Sequence[str], shapes: Sequence[torch.Size]) -> list[Layer]:
    """Group parameters into AGD layers from their names and per-agent shapes.

    A ``*.weight`` of 2 dimensions is a linear layer and one of 4 dimensions a
    convolution. A 1-dimensional ``*.bias`` joins the weight of the same module.

    Raises
    ------
    ConfigError
        If a parameter is neither such a weight nor such a bias (for example a
        normalisation scale), because AGD has no rule for it.
    """
    index = {name: i for i, name in enumerate(names)}
    layers = []
    claimed = set()
    for i, (name, shape) in enumerate(zip(names, shapes)):
        if not name.endswith("weight") or len(shape) not in (2, 4):
            continue
        prefix = name[: -len("weight")]
        bias = index.get(prefix + "bias")
        if bias is not None and len(shapes[bias]) != 1:
            bias = None
        kernel = int(shape[2] * shape[3]) if len(shape) == 4 else 1
        layers.append(Layer(name, i, bias, int(shape[0]), int(shape[1]), kernel))
        claimed.add(i)
        if bias is not None:
            claimed.add(bias)
    for i, (name, shape) in enumerate(zip(names, shapes)):
        if i not in claimed:
            raise ConfigError(
                f"AGD has no update rule for parameter {name!r} of shape "
                f"{tuple(shape)}: it supports linear and 2-D convolution weights "
                "and their biases. Use --step-rule constant, or remove the "
                "parameter (for example affine normalisation) from the model."
            )
    if not layers:
        raise ConfigError("AGD found no weight tensors in the model.")
    return layers


class ConstantStep:
    """Constant step size: the increment is ``mu * g``.

    Parameters
    ----------
    step_size : float
        ``mu``, positive.
    """

    name = "constant"

    def __init__(self, step_size: float) -> None:
        if not isinstance(step_size, (int, float)) or isinstance(step_size, bool):
            raise ConfigError(f"step_size must be a number, got {step_size!r}.")
        if not math.isfinite(step_size) or step_size <= 0:
            raise ConfigError(
                f"step_size must be positive and finite, got {step_size}. "
                "Typical values are 0.001 to 0.1."
            )
        self.step_size = float(step_size)
        self.last_step_size: torch.Tensor | None = None

    def increment(self, params, grads, combiner, scale: float = 1.0):
        mu = self.step_size * scale
        self.last_step_size = torch.full((grads[0].shape[0],), mu)
        return [g.mul_(mu) for g in grads]


class AutomaticGradientDescent:
    """Automatic gradient descent per agent, local or shared norms.

    Parameters
    ----------
    layers : list of Layer
        Output of :func:`find_layers` for the model.
    shared_norms : bool
        False for ``agd-local``, True for ``agd-shared``.
    gain : float
        Multiplies ``eta``; 1 is the published rule.
    agree : bool
        Average ``G`` over neighbours before computing ``eta``.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        shared_norms: bool,
        gain: float = 1.0,
        agree: bool = False,
    ) -> None:
        if not math.isfinite(gain) or gain <= 0:
            raise ConfigError(f"AGD gain must be positive, got {gain}.")
        self.layers = list(layers)
        self.shared_norms = shared_norms
        self.gain = float(gain)
        self.agree = bool(agree)
        self.name = "agd-shared" if shared_norms else "agd-local"
        self.last_step_size: torch.Tensor | None = None
        self.last_gradient_summary: torch.Tensor | None = None

    def _norms(self, layer: Layer, grad: torch.Tensor, combiner, shared: bool):
        """Return the slice norms ``(K, kh kw)`` and weight norms ``(K,)`` of a layer.

        With ``shared``, both are neighbourhood averages of the agents' own
        norms (one matrix product for both).
        """
        num_agents = grad.shape[0]
        slices = torch.linalg.vector_norm(
            grad.reshape(num_agents, layer.fan_out, layer.fan_in, -1), dim=(1, 2)
        )
        whole = torch.linalg.vector_norm(slices, dim=1, keepdim=True)
        if shared:
            averaged = combiner.neighbour_average(
                torch.cat([slices, whole], dim=1), layer.weight
            )
            slices, whole = averaged[:, :-1], averaged[:, -1:]
        return slices, whole.squeeze(1)

    def _gossip(self, summary: torch.Tensor, combiner) -> torch.Tensor:
        for layer in self.layers:
            if not combiner.is_local(layer.weight):
                return combiner.neighbour_average(summary[:, None], layer.weight)[:, 0]
        return summary  # nothing is shared, so there is no one to agree with

    def increment(self, params, grads, combiner, scale: float = 1.0):
        num_layers = len(self.layers)
        norms = []
        weight_norms = []
        for layer in self.layers:
            shared = self.shared_norms and not combiner.is_local(layer.weight)
            slices, whole = self._norms(layer, grads[layer.weight], combiner, shared)
            norms.append(slices)
            weight_norms.append(whole)

        # G_k = (1/L) sum_l s_l sum_slices ||grad W_l,slice||
        summary = sum(
            layer.scale * n.sum(dim=1) for layer, n in zip(self.layers, norms)
        )
        summary = summary / num_layers
        if self.agree:
            summary = self._gossip(summary, combiner)
        eta = torch.log((1 + torch.sqrt(1 + 4 * summary)) / 2) * self.gain
        self.last_gradient_summary = summary
        self.last_step_size = eta * scale

        increments: list[torch.Tensor | None] = [None] * len(grads)
        for layer, n, weight_norm in zip(self.layers, norms, weight_norms):
            coefficient = (eta * scale / num_layers) * layer.scale  # (K,)
            grad = grads[layer.weight]
            k = grad.shape[0]

            # W_l,slice <- W_l,slice - (eta/L) s_l grad / ||grad||, zero if norm 0
            safe = torch.where(n > 0, n, torch.ones_like(n))
            factor = torch.where(
                n > 0, coefficient[:, None] / safe, torch.zeros_like(n)
            )
            if grad.dim() == 3:
                update = grad.mul_(factor.reshape(k, 1, 1))
            else:
                update = grad.mul_(factor.reshape(k, 1, 1, *grad.shape[3:]))
            increments[layer.weight] = update

            # bias: (eta/L) s_l grad b / ||grad W_l||_F (whole weight)
            if layer.bias is not None:
                safe_norm = torch.where(weight_norm > 0, weight_norm, 1.0)
                bias_factor = torch.where(
                    weight_norm > 0,
                    coefficient / safe_norm,
                    torch.zeros_like(safe_norm),
                )
                bias_grad = grads[layer.bias]
                increments[layer.bias] = bias_grad.mul_(
                    bias_factor.reshape(k, *([1] * (bias_grad.dim() - 1)))
                )
        return increments


def make_step_rule(
    name: str,
    *,
    step_size: float | None = None,
    layers: Sequence[Layer] | None = None,
    gain: float = 1.0,
    agree: bool = False,
):
    """Build a step rule by name (one of :data:`STEP_RULES`)."""
    if name == "constant":
        if step_size is None:
            raise ConfigError(
                "The constant step rule needs a step size: pass --step-size "
                "(for example 0.01) or choose --step-rule agd-shared."
            )
        return ConstantStep(step_size)
    if name in ("agd-local", "agd-shared"):
        if layers is None:
            raise ConfigError(f"Step rule {name!r} needs the model's layers.")
        return AutomaticGradientDescent(
            layers, shared_norms=name == "agd-shared", gain=gain, agree=agree
        )
    raise ConfigError(
        f"Unknown step rule {name!r}. Choose one of: {', '.join(STEP_RULES)}."
    )
