"""Single-process simulator: all K agents stacked and trained together.

Every parameter is one tensor with the agent as its leading dimension. One
training step runs one stacked forward and backward pass for all agents (see
:mod:`subspace_diffusion.stacked`), then the strategy's combine step as one
``K x K`` matrix product per shared parameter. There is no Python loop over
agents.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, DivergenceError
from .models import agd_initialise, default_initialise
from .sharing import CompiledSharing, SharingSpec
from .stacked import make_stacked_forward
from .step_rules import find_layers, make_step_rule
from .strategies import Strategy, make_strategy

logger = logging.getLogger(__name__)


# Measured with the combine part of benchmarks/run.py on a 2-core AMD EPYC
# with PyTorch 2.13, for a ring's A_bar. With 64 agents, the diagonal product
# took 10 to 30 ms against 30 to 44 ms for the dense one on 200,704 columns,
# and 0.1 to 0.2 ms against 0.3 to 0.4 ms on 4,608 columns. With 16 agents
# and 4,608 columns (74k elements), the dense product was the faster one.
_MIN_DIAGONAL_PRODUCT_SIZE = 2**18


def _cyclic_diagonals(matrix: torch.Tensor) -> list[tuple[int, torch.Tensor]] | None:
    """Split a ``K x K`` matrix into its nonzero cyclic diagonals.

    Returns ``(offset, coefficients)`` pairs with ``coefficients[k] =
    matrix[k, (k + offset) % K]`` as a ``(K, 1)`` column, or None when the
    matrix has ``K / 2`` or more nonzero diagonals (the dense product is
    faster then).
    """
    num_agents = matrix.shape[0]
    rows = torch.arange(num_agents, device=matrix.device)
    diagonals = []
    for offset in range(num_agents):
        coefficients = matrix[rows, (rows + offset) % num_agents]
        if bool((coefficients != 0).any()):
            diagonals.append((offset, coefficients.unsqueeze(1)))
    if 2 * len(diagonals) >= num_agents:
        return None
    return diagonals


def _diagonal_product(
    diagonals: list[tuple[int, torch.Tensor]], flat: torch.Tensor
) -> torch.Tensor:
    """Return ``matrix @ flat`` from the matrix's cyclic diagonals.

    Row ``k`` of the result is ``sum_o c_o[k] flat[(k + o) % K]``. Each
    diagonal is one or two in-place multiply-adds on row slices, so the only
    new tensor is the result.
    """
    num_agents = flat.shape[0]
    out = torch.empty_like(flat)
    for number, (offset, coefficients) in enumerate(diagonals):
        # Rows below K - offset read rows offset.., the rest wrap around.
        split = num_agents - offset
        pieces = [(out[:split], flat[offset:], coefficients[:split])]
        if offset:
            pieces.append((out[split:], flat[:offset], coefficients[split:]))
        for target, source, column in pieces:
            if number == 0:
                torch.mul(source, column, out=target)
            else:
                target.addcmul_(source, column)
    return out


class StackedCombiner:
    """Combine operator of the simulator: ``K x K`` products per group.

    Local groups are returned unchanged (never multiplied). On the CPU, a
    matrix with few nonzero cyclic diagonals (a ring or a lattice, for
    example) is applied diagonal by diagonal to large tensors, which reads
    each tensor a few times instead of doing ``K^2`` multiply-adds per column.
    The result equals the dense product up to floating-point rounding.
    """

    def __init__(self, sharing: CompiledSharing, dtype, device) -> None:
        self.sharing = sharing
        self.matrices = [
            {
                key: torch.tensor(value, dtype=dtype, device=device)
                for key, value in group.matrices.items()
            }
            for group in sharing.groups
        ]
        # NOTE: on GPUs the dense product was not compared with the diagonal
        # one, so GPUs always use the dense product.
        use_diagonals = torch.device(device).type == "cpu"
        self.diagonals = [
            {
                key: _cyclic_diagonals(matrix) if use_diagonals else None
                for key, matrix in matrices.items()
            }
            for matrices in self.matrices
        ]

    def is_local(self, index: int) -> bool:
        return self.sharing.is_local(index)

    def _matrix(self, index: int, operator: str) -> torch.Tensor:
        return self.matrices[self.sharing.group_of[index]][operator]

    def combine(self, tensors, operator: str):
        out = []
        for i, tensor in enumerate(tensors):
            if self.is_local(i):
                out.append(tensor)
                continue
            flat = tensor.reshape(tensor.shape[0], -1)
            diagonals = self.diagonals[self.sharing.group_of[i]][operator]
            if diagonals is not None and flat.numel() >= _MIN_DIAGONAL_PRODUCT_SIZE:
                combined = _diagonal_product(diagonals, flat)
            else:
                combined = self._matrix(i, operator) @ flat
            out.append(combined.reshape(tensor.shape))
        return out

    def neighbour_average(self, values: torch.Tensor, index: int) -> torch.Tensor:
        if self.is_local(index):
            return values
        return self._matrix(index, "A") @ values


class BatchSampler:
    """Draws one minibatch per agent from each agent's own shard, vectorised.

    Shards are concatenated into one tensor. Each agent walks its own random
    permutation of its shard, reshuffled when it is used up, so agents with
    the same task never see the same minibatch.
    """

    def __init__(
        self,
        shards: Sequence[tuple[torch.Tensor, torch.Tensor]],
        batch_size: int,
        generator: torch.Generator,
        device,
        dtype,
    ) -> None:
        sizes = [len(y) for _, y in shards]
        self.sizes = torch.tensor(sizes)
        self.offsets = torch.cumsum(torch.tensor([0] + sizes[:-1]), 0)
        self.images = torch.cat([x for x, _ in shards]).to(device=device, dtype=dtype)
        self.labels = torch.cat([y for _, y in shards]).to(device=device)
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.num_agents = len(shards)
        self.cursor = 0
        self.permutation = self._shuffle()

    def _shuffle(self) -> torch.Tensor:
        largest = int(self.sizes.max())
        keys = torch.rand(self.num_agents, largest, generator=self.generator)
        positions = torch.arange(largest).expand(self.num_agents, largest)
        keys = keys.masked_fill(positions >= self.sizes[:, None], math.inf)
        return torch.argsort(keys, dim=1)

    @property
    def batches_per_epoch(self) -> int:
        """Minibatches per agent in one pass over the smallest shard."""
        return max(1, int(self.sizes.min()) // self.batch_size)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return images ``(K, B, ...)`` and labels ``(K, B)``."""
        if self.cursor + self.batch_size > int(self.sizes.min()):
            self.permutation = self._shuffle()
            self.cursor = 0
        columns = torch.arange(self.cursor, self.cursor + self.batch_size)
        self.cursor += self.batch_size
        local = self.permutation[:, columns] % self.sizes[:, None]
        index = (self.offsets[:, None] + local).to(self.device)
        return self.images[index], self.labels[index]


class Simulator:
    """K agents of one model trained with a strategy and a step rule.

    Parameters
    ----------
    model : nn.Module
        Template model; every agent gets its own copy of its parameters.
    shards : sequence of (images, labels)
        Training data of each agent, one entry per agent.
    graph : nx.Graph
        Communication graph with nodes ``0..K-1``.
    sharing : SharingSpec or mapping
        Which parameters are shared, local or in another subspace.
    strategy : str or Strategy
        ``noncooperative``, ``centralized``, ``approximate`` or ``exact``.
    step_rule : str
        ``constant``, ``agd-local`` or ``agd-shared``.
    step_size : float, optional
        ``mu`` of the constant rule.
    batch_size : int
        Samples per agent per minibatch.
    local_steps : int
        Adapt steps per exchange, ``E``.
    num_classes : sequence of int, optional
        Classes of each agent's task. Output logits beyond them are masked, so
        agents with smaller tasks never predict classes they do not have.
    seed : int
        Seeds the initial weights and the minibatch order.
    device, dtype
        Where and in which precision the agents are stored.
    initialisation : {"auto", "default", "agd"}
        ``"auto"`` uses the AGD initialisation with the AGD step rules and
        PyTorch's defaults otherwise. Non-local groups start from one common
        draw (in consensus), local groups from a draw per agent.
    weights : str
        ``metropolis`` (default) or ``averaging`` combination weights.
    agd_gain : float
        Multiplies AGD's ``eta``.
    agd_agree : bool
        Gossip AGD's ``G`` over neighbours so step sizes agree across agents.
    forward_path : {"auto", "batched", "vmap"}
        See :func:`subspace_diffusion.stacked.make_stacked_forward`.
    loss_function : callable, optional
        ``loss_function(outputs, targets)`` with outputs ``(K, B, ...)`` and
        targets ``(K, B, ...)``, returning each agent's mean loss ``(K,)``.
        Defaults to cross-entropy on logits.
    """

    def __init__(
        self,
        model: nn.Module,
        shards: Sequence[tuple[torch.Tensor, torch.Tensor]],
        graph: nx.Graph,
        sharing,
        *,
        strategy="exact",
        step_rule: str = "agd-shared",
        step_size: float | None = None,
        batch_size: int = 32,
        local_steps: int = 1,
        num_classes: Sequence[int] | None = None,
        seed: int = 0,
        device="cpu",
        dtype=torch.float32,
        initialisation: str = "auto",
        weights: str = "metropolis",
        agd_gain: float = 1.0,
        agd_agree: bool = False,
        forward_path: str = "auto",
        loss_function=None,
    ) -> None:
        num_agents = graph.number_of_nodes()
        if len(shards) != num_agents:
            raise ConfigError(
                f"Got data for {len(shards)} agents but the graph has {num_agents} "
                "nodes; pass one (images, labels) shard per agent."
            )
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or batch_size < 1
        ):
            raise ConfigError(
                f"batch_size must be a positive integer, got {batch_size!r}."
            )
        smallest = min(len(y) for _, y in shards)
        if smallest < batch_size:
            raise ConfigError(
                f"The smallest agent shard has {smallest} samples, fewer than the "
                f"batch size {batch_size}. Lower --batch-size or use fewer agents."
            )
        self.num_agents = num_agents
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]
        if not self.names:
            raise ConfigError("The model has no parameters to train.")
        self.shapes = [p.shape for _, p in model.named_parameters()]
        buffers = [name for name, _ in model.named_buffers()]
        if buffers:
            raise ConfigError(
                f"The model has buffers {buffers[:4]}, such as batch-norm running "
                "statistics, which the simulator does not stack per agent. Use "
                "GroupNorm or LayerNorm, or BatchNorm with "
                "track_running_stats=False."
            )

        if not isinstance(sharing, (SharingSpec, CompiledSharing)):
            sharing = SharingSpec(sharing)
        if isinstance(sharing, SharingSpec):
            sharing = sharing.compile(self.names, graph, weights=weights)
        self.sharing = sharing

        self.strategy: Strategy = (
            strategy
            if isinstance(strategy, Strategy)
            else make_strategy(strategy, local_steps=local_steps)
        )
        if self.strategy.name == "exact":
            self.sharing.require_symmetric("exact")
        layers = (
            None if step_rule == "constant" else find_layers(self.names, self.shapes)
        )
        self.step_rule = make_step_rule(
            step_rule,
            step_size=step_size,
            layers=layers,
            gain=agd_gain,
            agree=agd_agree,
        )
        self.combiner = StackedCombiner(self.sharing, dtype, self.device)
        self.forward = make_stacked_forward(model, forward_path)
        self.loss_function = loss_function

        generator = torch.Generator().manual_seed(seed)
        if initialisation == "auto":
            initialisation = "default" if step_rule == "constant" else "agd"
        self.params = self._initial_parameters(initialisation, generator)
        self.sampler = BatchSampler(shards, batch_size, generator, self.device, dtype)

        self.num_outputs = None
        self.logit_mask = None
        if num_classes is not None:
            self._set_class_mask(num_classes)
        self.steps = 0
        self.last_losses: torch.Tensor | None = None
        self.bytes_per_step = self._communication_per_step()

    def _initial_parameters(self, initialisation: str, generator) -> list[torch.Tensor]:
        if initialisation not in ("default", "agd"):
            raise ConfigError(
                f"Unknown initialisation {initialisation!r}: use auto, default or agd."
            )
        draws = []
        for k in range(self.num_agents):  # one-off set-up, not the training step
            replica = _copy_module(self.model)
            agent_generator = torch.Generator().manual_seed(
                int(torch.randint(0, 2**62, (1,), generator=generator))
            )
            if initialisation == "agd":
                agd_initialise(replica, agent_generator)
            else:
                default_initialise(replica, agent_generator)
            draws.append([p.detach() for p in replica.parameters()])
        params = []
        for i in range(len(self.names)):
            if self.sharing.is_local(i):
                stacked = torch.stack([draw[i] for draw in draws])
            else:
                stacked = draws[0][i].expand(self.num_agents, *draws[0][i].shape)
            params.append(stacked.to(device=self.device, dtype=self.dtype).clone())
        return params

    def _communication_per_step(self) -> torch.Tensor:
        """Return the bytes each agent sends per exchange, ``(K,)``.

        Diffusion strategies send every non-local parameter to each neighbour
        with a nonzero weight in the group's matrix; local groups never travel.
        Centralised projection sends them once to the fusion centre. Shared
        AGD adds the gradient norms of each shared layer (one per weight slice,
        one more for a convolution's bias), and ``agd_agree`` one more scalar.
        """
        sent = torch.zeros(self.num_agents, dtype=torch.float64)
        name = self.strategy.name
        if name == "noncooperative":
            return sent
        element = torch.empty((), dtype=self.dtype).element_size()
        first_shared = next((g for g in self.sharing.groups if not g.is_local), None)
        for group in self.sharing.groups:
            if group.is_local:
                continue
            values = sum(self.params[i][0].numel() for i in group.parameter_indices)
            if name == "centralized":
                receivers = torch.ones(self.num_agents, dtype=torch.float64)
            else:
                # Agent k sends to every l != k with A_lk != 0.
                matrix = torch.as_tensor(group.combination)
                links = (matrix != 0) & ~torch.eye(self.num_agents, dtype=torch.bool)
                receivers = links.sum(dim=0).double()
            if getattr(self.step_rule, "shared_norms", False):
                # Slice norms, plus the whole weight's norm for a bias when
                # there are several slices.
                norms = sum(
                    layer.kernel_size
                    + (layer.bias is not None and layer.kernel_size > 1)
                    for layer in self.step_rule.layers
                    if layer.weight in group.parameter_indices
                )
                values += norms
            if getattr(self.step_rule, "agree", False) and group is first_shared:
                values += 1  # the gossiped G
            sent += receivers * values * element
        return sent

    def _set_class_mask(self, num_classes: Sequence[int]) -> None:
        if len(num_classes) != self.num_agents:
            raise ConfigError(
                f"num_classes has {len(num_classes)} entries for {self.num_agents} agents."
            )
        outputs = max(num_classes)
        if min(num_classes) == outputs:
            return
        mask = torch.zeros(self.num_agents, 1, outputs, dtype=self.dtype)
        for k, count in enumerate(num_classes):
            mask[k, 0, count:] = -math.inf
        self.logit_mask = mask.to(self.device)

    def logits(
        self, params: Sequence[torch.Tensor], images: torch.Tensor
    ) -> torch.Tensor:
        """Return every agent's logits ``(K, B, C)`` for its images ``(K, B, ...)``."""
        out = self.forward(params, images)
        if self.logit_mask is not None:
            out = out + self.logit_mask
        return out

    def _losses(self, params, images, labels) -> torch.Tensor:
        logits = self.logits(params, images)
        if self.loss_function is not None:
            return self.loss_function(logits, labels)
        k, b = labels.shape
        losses = F.cross_entropy(
            logits.reshape(k * b, -1), labels.reshape(-1), reduction="none"
        )
        return losses.reshape(k, b).mean(dim=1)

    def gradient(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Stacked gradients of each agent's loss on a new minibatch."""
        images, labels = self.sampler.next()
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in params]
            losses = self._losses(leaves, images, labels)
            grads = torch.autograd.grad(losses.sum(), leaves)
        self.last_losses = losses.detach()
        return list(grads)

    def step(self) -> torch.Tensor:
        """Run one exchange (``E`` adapt steps, then cooperate); return losses (K,)."""
        self.params = self.strategy.step(
            self.params, self.gradient, self.step_rule, self.combiner
        )
        self.steps += 1
        losses = self.last_losses
        if not bool(torch.isfinite(losses).all()):
            bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
            raise DivergenceError(
                f"Training loss became NaN or infinite at step {self.steps} for "
                f"agents {bad}. Lower the step size (now "
                f"{getattr(self.step_rule, 'step_size', 'automatic')}) or use an "
                "AGD step rule."
            )
        return losses

    @torch.no_grad()
    def evaluate(
        self,
        test_sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
        agent_task: Sequence[int],
        chunk: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return each agent's mean test loss and accuracy on its task's test set.

        Agents are evaluated together, ``chunk`` samples per agent at a time.
        The default is at most 1024, and fewer when ``K`` is large, so that one
        chunk of inputs stays under 2^24 values (64 MiB in float32).
        """
        sizes = torch.tensor([len(test_sets[t][1]) for t in agent_task])
        offsets_by_task = torch.cumsum(
            torch.tensor([0] + [len(y) for _, y in test_sets[:-1]]), 0
        )
        offsets = offsets_by_task[list(agent_task)]
        images = torch.cat([x for x, _ in test_sets]).to(self.device, self.dtype)
        labels = torch.cat([y for _, y in test_sets]).to(self.device)
        if chunk is None:
            per_sample = max(1, images[0].numel())
            chunk = max(1, min(1024, 2**24 // (self.num_agents * per_sample)))
        loss_sum = torch.zeros(self.num_agents, dtype=torch.float64)
        correct = torch.zeros(self.num_agents, dtype=torch.float64)
        for start in range(0, int(sizes.max()), chunk):
            columns = torch.arange(start, min(start + chunk, int(sizes.max())))
            valid = columns[None, :] < sizes[:, None]
            index = offsets[:, None] + torch.minimum(
                columns[None, :], sizes[:, None] - 1
            )
            index = index.to(self.device)
            logits = self.logits(self.params, images[index])
            k, b = index.shape
            target = labels[index]
            losses = F.cross_entropy(
                logits.reshape(k * b, -1), target.reshape(-1), reduction="none"
            ).reshape(k, b)
            hits = (logits.argmax(dim=-1) == target).to(torch.float64)
            valid = valid.to(self.device)
            loss_sum += (losses.double() * valid).sum(dim=1).cpu()
            correct += (hits * valid).sum(dim=1).cpu()
        return loss_sum / sizes, correct / sizes

    @torch.no_grad()
    def subspace_distance(self) -> torch.Tensor:
        """Return each agent's distance to the subspace, ``||w_k - (P_U W)_k||``."""
        projected = self.combiner.combine(self.params, "P")
        total = torch.zeros(self.num_agents, dtype=torch.float64, device=self.device)
        for w, p in zip(self.params, projected):
            total += (w - p).reshape(self.num_agents, -1).double().pow(2).sum(dim=1)
        return total.sqrt().cpu()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Return the stacked parameters by name."""
        return {name: p.detach().cpu() for name, p in zip(self.names, self.params)}

    def agent_module(self, agent: int) -> nn.Module:
        """Return a standalone copy of the model with agent ``agent``'s weights."""
        replica = _copy_module(self.model)
        with torch.no_grad():
            for p, stacked in zip(replica.parameters(), self.params):
                p.copy_(stacked[agent])
        return replica


def _copy_module(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)
