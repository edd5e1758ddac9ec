"""Comparison points of the step benchmark: a per-agent loop and a compute floor.

:class:`PerAgentLoop` is how a research notebook usually writes decentralised
training: one ``nn.Module`` per agent, the summed losses back-propagated once,
then each parameter group's tensors flattened, padded and stacked into a
``K x D`` matrix, combined densely with a ``K x K`` matrix and written back
into the modules. It runs the same algorithm as the engine (exact diffusion
with the constant or the shared AGD step rule), and the benchmark checks that
both give the same iterates in float64.

:class:`ComputeFloor` is one model doing forward and backward on ``K * B``
samples: the arithmetic of the agents' forward and backward passes with no
per-agent structure, no step rule and no combination.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from subspace_diffusion.engine import BatchSampler, Simulator
from subspace_diffusion.step_rules import ConstantStep, Layer


def clone_sampler(sampler: BatchSampler) -> BatchSampler:
    """Return a sampler that draws the same minibatches as ``sampler`` from now on.

    The data tensors are shared, and the random state is copied.
    """
    clone = copy.copy(sampler)
    clone.generator = torch.Generator().set_state(sampler.generator.get_state())
    clone.permutation = sampler.permutation.clone()
    return clone


class PerAgentLoop:
    """Exact diffusion written with one module per agent and Python loops.

    Build it with :meth:`from_simulator`, which copies the simulator's current
    iterates, combination matrices, step rule and minibatch stream, so the two
    run the same recursion on the same data.

    Parameters
    ----------
    modules : list of nn.Module
        One model per agent, each holding that agent's parameters.
    groups : list of (list of int, Tensor or None)
        Parameter indices of each group with its ``(A, A_bar)`` pair, or None
        for a local group.
    step_rule : ConstantStep or AutomaticGradientDescent
        The engine's step rule object; only its settings are read.
    sampler : BatchSampler
        Source of the minibatches ``(K, B, ...)``.
    """

    def __init__(self, modules, groups, step_rule, sampler: BatchSampler) -> None:
        self.modules = modules
        self.groups = groups
        self.step_rule = step_rule
        self.sampler = sampler
        self.num_agents = len(modules)
        self.previous_adapted: dict[int, torch.Tensor] = {}
        self.group_of = {}
        for number, (indices, _) in enumerate(groups):
            for index in indices:
                self.group_of[index] = number

    @classmethod
    def from_simulator(cls, simulator: Simulator) -> PerAgentLoop:
        """Return a loop that continues from the simulator's current state.

        Raises
        ------
        ValueError
            If the simulator runs something the loop does not implement: a
            strategy other than exact diffusion with one adapt step, masked
            logits or a custom loss function.
        """
        strategy = simulator.strategy
        if strategy.name != "exact" or strategy.local_steps != 1:
            raise ValueError(
                f"The per-agent loop implements exact diffusion with one adapt "
                f"step, but the simulator runs {strategy.name!r} with "
                f"local_steps={strategy.local_steps}. Build the simulator with "
                "strategy='exact' and local_steps=1."
            )
        if simulator.logit_mask is not None or simulator.loss_function is not None:
            raise ValueError(
                "The per-agent loop uses plain cross-entropy on all logits, but "
                "the simulator masks logits or has its own loss function. Build "
                "it without num_classes and loss_function."
            )
        modules = []
        for k in range(simulator.num_agents):
            module = copy.deepcopy(simulator.model)
            module.to(device=simulator.device, dtype=simulator.dtype)
            with torch.no_grad():
                for parameter, stacked in zip(module.parameters(), simulator.params):
                    parameter.copy_(stacked[k])
            modules.append(module)
        groups = []
        for number, group in enumerate(simulator.sharing.groups):
            matrices = simulator.combiner.matrices[number]
            pair = None if group.is_local else (matrices["A"], matrices["A_bar"])
            groups.append((list(group.parameter_indices), pair))
        loop = cls(
            modules, groups, simulator.step_rule, clone_sampler(simulator.sampler)
        )

        # Exact diffusion's state: the previous adapted iterate of shared groups.
        previous = getattr(simulator.strategy, "previous_adapted", None)
        if previous is not None:
            for number, (indices, pair) in enumerate(groups):
                if pair is not None:
                    rows = [
                        previous[i].reshape(simulator.num_agents, -1) for i in indices
                    ]
                    loop.previous_adapted[number] = torch.cat(rows, dim=1).clone()
        return loop

    def parameters_of(self, agent: int) -> list[nn.Parameter]:
        """Return agent ``agent``'s parameters in ``named_parameters`` order."""
        return list(self.modules[agent].parameters())

    def step(self) -> torch.Tensor:
        """Run one step of exact diffusion; return each agent's loss ``(K,)``."""
        images, labels = self.sampler.next()

        # Forward every agent's module on its own minibatch, then one backward.
        losses = []
        for k, module in enumerate(self.modules):
            module.zero_grad(set_to_none=True)
            losses.append(F.cross_entropy(module(images[k]), labels[k]))
        torch.stack(losses).sum().backward()

        with torch.no_grad():
            increments = self._increments()
            for number, (indices, pair) in enumerate(self.groups):
                if pair is None:
                    self._adapt_local(indices, increments)
                else:
                    self._adapt_correct_combine(number, indices, pair[1], increments)
        return torch.stack(losses).detach()

    def _adapt_local(self, indices, increments) -> None:
        # A local group is only adapted: w_k <- w_k - increment_k.
        for k in range(self.num_agents):
            params = self.parameters_of(k)
            for index in indices:
                params[index].sub_(increments[k][index])

    def _adapt_correct_combine(self, number, indices, a_bar, increments) -> None:
        # Flatten each agent's group into one row, padded to the longest row.
        rows = []
        increment_rows = []
        for k in range(self.num_agents):
            params = self.parameters_of(k)
            rows.append(torch.cat([params[i].reshape(-1) for i in indices]))
            increment_rows.append(
                torch.cat([increments[k][i].reshape(-1) for i in indices])
            )
        width = max(len(row) for row in rows)
        w = torch.stack([F.pad(row, (0, width - len(row))) for row in rows])
        increment = torch.stack(
            [F.pad(row, (0, width - len(row))) for row in increment_rows]
        )

        # adapt: psi = w - increment; correct: phi = psi + w - psi_previous
        psi = w - increment
        previous = self.previous_adapted.get(number, w)
        phi = psi + w - previous
        self.previous_adapted[number] = psi

        # combine: w = A_bar phi, then write each agent's row back.
        combined = a_bar @ phi
        for k in range(self.num_agents):
            params = self.parameters_of(k)
            offset = 0
            for index in indices:
                size = params[index].numel()
                params[index].copy_(
                    combined[k, offset : offset + size].view_as(params[index])
                )
                offset += size

    def _increments(self) -> list[list[torch.Tensor]]:
        """Return the adapt-step increment of every agent and parameter."""
        if isinstance(self.step_rule, ConstantStep):
            mu = self.step_rule.step_size
            return [
                [mu * p.grad for p in self.parameters_of(k)]
                for k in range(self.num_agents)
            ]
        return self._agd_increments()

    def _agd_increments(self) -> list[list[torch.Tensor]]:
        layers: list[Layer] = self.step_rule.layers
        num_layers = len(layers)

        # Each agent's gradient norms per (kh, kw) slice and per whole weight,
        # averaged over neighbours for shared layers with agd-shared.
        norms = []
        weight_norms = []
        for layer in layers:
            per_agent = []
            for k in range(self.num_agents):
                grad = self.parameters_of(k)[layer.weight].grad
                slices = grad.reshape(layer.fan_out, layer.fan_in, -1)
                per_agent.append(torch.linalg.vector_norm(slices, dim=(0, 1)))
            slice_norms = torch.stack(per_agent)
            whole_norms = torch.linalg.vector_norm(slice_norms, dim=1)
            pair = self.groups[self.group_of[layer.weight]][1]
            if self.step_rule.shared_norms and pair is not None:
                slice_norms = pair[0] @ slice_norms
                whole_norms = pair[0] @ whole_norms
            norms.append(slice_norms)
            weight_norms.append(whole_norms)

        # G_k = (1/L) sum_l s_l sum ||g||, gossiped once when the rule's agree is set.
        summaries = []
        for k in range(self.num_agents):
            summary = sum(
                layer.scale * float(n[k].sum()) for layer, n in zip(layers, norms)
            )
            summaries.append(summary / num_layers)
        if getattr(self.step_rule, "agree", False):
            summaries = self._gossip(summaries, layers)

        # eta_k = log((1 + sqrt(1 + 4 G_k)) / 2), then each agent's increments.
        increments = []
        for k in range(self.num_agents):
            eta = (
                math.log((1 + math.sqrt(1 + 4 * summaries[k])) / 2)
                * self.step_rule.gain
            )
            params = self.parameters_of(k)
            agent_increments = [torch.zeros_like(p) for p in params]
            for layer, n, whole in zip(layers, norms, weight_norms):
                coefficient = eta / num_layers * layer.scale
                grad = params[layer.weight].grad
                slices = grad.reshape(layer.fan_out, layer.fan_in, -1)
                safe = torch.where(n[k] > 0, n[k], torch.ones_like(n[k]))
                factor = torch.where(n[k] > 0, coefficient / safe, 0.0)
                agent_increments[layer.weight] = (slices * factor).reshape(grad.shape)
                if layer.bias is not None:
                    weight_norm = float(whole[k])
                    bias_factor = coefficient / weight_norm if weight_norm > 0 else 0.0
                    agent_increments[layer.bias] = params[layer.bias].grad * bias_factor
            increments.append(agent_increments)
        return increments

    def _gossip(self, summaries: list[float], layers: list[Layer]) -> list[float]:
        # One neighbourhood average with the first shared layer's A.
        for layer in layers:
            pair = self.groups[self.group_of[layer.weight]][1]
            if pair is not None:
                values = torch.tensor(
                    summaries, dtype=pair[0].dtype, device=pair[0].device
                )
                return (pair[0] @ values).tolist()
        return summaries

    def stacked_parameters(self) -> list[torch.Tensor]:
        """Return the agents' parameters stacked as the engine stores them."""
        per_agent = [self.parameters_of(k) for k in range(self.num_agents)]
        return [
            torch.stack([p[i].detach() for p in per_agent])
            for i in range(len(per_agent[0]))
        ]


class ComputeFloor:
    """One model doing forward and backward on ``K * B`` samples.

    Parameters
    ----------
    model : nn.Module
        Template network; a copy is used.
    input_shape : tuple of int
        Shape of one sample.
    num_outputs : int
        Classes of the random labels.
    num_samples : int
        ``K * B``.
    channels_last : bool
        Store the model and the images in the channels-last memory format
        (4-dimensional inputs only).
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        num_outputs: int,
        num_samples: int,
        *,
        channels_last: bool = False,
        device="cpu",
        dtype=torch.float32,
        seed: int = 0,
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.model = copy.deepcopy(model).to(device=device, dtype=dtype)
        images = torch.randn(
            num_samples, *input_shape, generator=generator, dtype=dtype
        )
        self.images = images.to(device)
        self.labels = torch.randint(0, num_outputs, (num_samples,), generator=generator)
        self.labels = self.labels.to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)

    def step(self) -> torch.Tensor:
        """Run one forward and backward pass; return the loss."""
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.images), self.labels)
        loss.backward()
        return loss.detach()
