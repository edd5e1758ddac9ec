"""Benchmarks that run in this process: step times, threads, combine, profile.

Compared variants are timed round by round in one process (see
:func:`timing.time_interleaved`): the engine, the per-agent loop and the
compute floor of one case, one and two threads, or the dense and the
diagonal product. :func:`check_equivalence` first makes sure that the loop
and the engine compute the same iterates.
"""

from __future__ import annotations

import time

import torch
from cases import MODEL_CASES, build_simulator
from loop_baseline import ComputeFloor, PerAgentLoop
from timing import load_average, summarise, synchronise, time_interleaved


def check_equivalence(device: torch.device) -> list[dict]:
    """Compare the per-agent loop with the engine over three float64 steps.

    Eight agents on a ring make the engine apply the MLP's large shared
    weights diagonal by diagonal, while the loop multiplies by the dense matrix.
    """
    results = []
    for name, case in MODEL_CASES.items():
        for step_rule in ("agd-shared", "constant"):
            simulator = build_simulator(
                case, 8, step_rule, batch_size=8, device=device, dtype=torch.float64
            )
            loop = PerAgentLoop.from_simulator(simulator)
            for _ in range(3):
                engine_losses = simulator.step()
                loop_losses = loop.step()
            difference = max(
                float((a - b).abs().max())
                for a, b in zip(simulator.params, loop.stacked_parameters())
            )
            shared_group = next(
                number
                for number, group in enumerate(simulator.sharing.groups)
                if not group.is_local
            )
            diagonals = simulator.combiner.diagonals[shared_group]["A_bar"]
            results.append(
                {
                    "model": name,
                    "step_rule": step_rule,
                    "diagonal_product_eligible": diagonals is not None,
                    "max_parameter_difference": difference,
                    "max_loss_difference": float(
                        (engine_losses - loop_losses).abs().max()
                    ),
                }
            )
    return results


class CooperateTimer:
    """Wrap a strategy's ``cooperate`` (correct and combine) to time each call."""

    def __init__(self, strategy, device: torch.device) -> None:
        self.original = strategy.cooperate
        self.device = device
        self.seconds: list[float] = []
        strategy.cooperate = self

    def __call__(self, *arguments):
        synchronise(self.device)
        start = time.perf_counter()
        result = self.original(*arguments)
        synchronise(self.device)
        self.seconds.append(time.perf_counter() - start)
        return result


def benchmark_case(name, num_agents, arguments, settings, device) -> dict:
    """Time the engine, the per-agent loop and the compute floor for one case."""
    case = MODEL_CASES[name]
    batch_size = 32
    functions = {}
    cooperate_timers = {}
    for step_rule in ("agd-shared", "constant"):
        simulator = build_simulator(
            case, num_agents, step_rule, topology=arguments.topology, device=device
        )
        if num_agents <= arguments.loop_max_agents:
            functions[f"loop {step_rule}"] = PerAgentLoop.from_simulator(simulator).step
        cooperate_timers[step_rule] = CooperateTimer(simulator.strategy, device)
        functions[f"engine {step_rule}"] = simulator.step
    samples = num_agents * batch_size
    functions["floor"] = ComputeFloor(
        case.build(), case.input_shape, case.num_outputs, samples, device=device
    ).step
    if any(isinstance(module, torch.nn.Conv2d) for module in case.build().modules()):
        functions["floor channels_last"] = ComputeFloor(
            case.build(),
            case.input_shape,
            case.num_outputs,
            samples,
            channels_last=True,
            device=device,
        ).step

    load_before = load_average()
    timings = time_interleaved(functions, device=device, **settings["timing"])
    result = {
        "model": name,
        "agents": num_agents,
        "batch_size": batch_size,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "timings": {key: value["summary"] for key, value in timings.items()},
    }

    # Share of each engine step spent in correct and combine, step by step.
    for step_rule, timer in cooperate_timers.items():
        steps = timings[f"engine {step_rule}"]["samples"]
        cooperate = timer.seconds[-len(steps) :]
        shares = [part / whole for part, whole in zip(cooperate, steps)]
        result[f"combination_share {step_rule}"] = summarise(shares)
        result[f"combination_seconds {step_rule}"] = summarise(cooperate)
    return result


def benchmark_threads(cases: list[tuple[str, int]], settings, device) -> list[dict]:
    """Time the engine's shared-AGD step with one and with two torch threads.

    Each thread count gets its own simulator, and the count is set before
    every timed step, so both run interleaved in one process.
    """
    original = torch.get_num_threads()
    results = []
    try:
        for name, num_agents in cases:
            functions = {}
            for threads in (1, 2):
                simulator = build_simulator(MODEL_CASES[name], num_agents, "agd-shared")
                functions[f"threads={threads}"] = _with_threads(simulator.step, threads)
            load_before = load_average()
            timings = time_interleaved(functions, device=device, **settings["timing"])
            results.append(
                {
                    "model": name,
                    "agents": num_agents,
                    "load_average_before": load_before,
                    "load_average_after": load_average(),
                    "timings": {
                        key: value["summary"] for key, value in timings.items()
                    },
                }
            )
    finally:
        torch.set_num_threads(original)
    return results


def _with_threads(step, threads: int):
    def run():
        torch.set_num_threads(threads)
        return step()

    return run


def benchmark_combine(agent_counts: list[int], widths: list[int], settings, device):
    """Time the dense and the diagonal-by-diagonal product with a ring's A_bar.

    This is the choice that ``StackedCombiner`` makes for every shared tensor;
    ``widths`` are the columns of the ``K x D`` tensor.
    """
    import networkx as nx

    from subspace_diffusion.engine import _cyclic_diagonals, _diagonal_product
    from subspace_diffusion.graphs import metropolis_weights

    results = []
    generator = torch.Generator().manual_seed(0)
    for num_agents in agent_counts:
        weights = metropolis_weights(nx.cycle_graph(num_agents))
        a_bar = (torch.eye(num_agents) + torch.tensor(weights, dtype=torch.float32)) / 2
        a_bar = a_bar.to(device)
        diagonals = _cyclic_diagonals(a_bar)
        for width in widths:
            flat = torch.randn(num_agents, width, generator=generator).to(device)
            functions = {"dense": lambda a=a_bar, x=flat: a @ x}
            if diagonals is not None:
                functions["diagonals"] = lambda d=diagonals, x=flat: _diagonal_product(
                    d, x
                )
            timings = time_interleaved(functions, device=device, **settings["timing"])
            difference = None
            if diagonals is not None:
                dense = functions["dense"]()
                difference = float((functions["diagonals"]() - dense).abs().max())
            results.append(
                {
                    "agents": num_agents,
                    "width": width,
                    "diagonals": None if diagonals is None else len(diagonals),
                    "max_difference": difference,
                    "timings": {
                        key: value["summary"] for key, value in timings.items()
                    },
                }
            )
    return results


def profile_engine(name: str, num_agents: int, device, steps: int = 10) -> list[dict]:
    """Profile the engine's shared-AGD step with torch.profiler.

    Returns the operators by self CPU time per step, one row per operator and
    input shapes, largest first.
    """
    from torch.profiler import ProfilerActivity, profile

    simulator = build_simulator(
        MODEL_CASES[name], num_agents, "agd-shared", device=device
    )
    for _ in range(3):
        simulator.step()
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as profiler:
        for _ in range(steps):
            simulator.step()
    events = profiler.key_averages(group_by_input_shape=True)
    rows = [
        {
            "operator": event.key,
            "input_shapes": str(event.input_shapes),
            "calls_per_step": event.count / steps,
            "self_cpu_ms_per_step": event.self_cpu_time_total / steps / 1e3,
        }
        for event in events
    ]
    return sorted(rows, key=lambda row: -row["self_cpu_ms_per_step"])
