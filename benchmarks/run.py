"""Run every benchmark of subspace-diffusion and print the tables of the page.

``python benchmarks/run.py`` measures, side by side in one process:

* step time of the engine (``Simulator.step``, exact diffusion, shared AGD and
  constant step rules) against a per-agent loop written the way research
  notebooks do it, and against a compute floor (one model, forward and
  backward on ``K * B`` samples), for the reference CNN and an MLP;
* the share of the engine's step spent in exact diffusion's correct and
  combine steps;
* peak memory against the number of agents, each in a fresh process;
* one epoch of the reference MNIST experiment through the command line,
  evaluation included.

``--quick`` runs every part at small sizes in a few seconds, to check that
everything works; its numbers mean nothing. ``--output FILE`` writes the raw
results as JSON. See docs/benchmarks.md for the recorded numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cases import MODEL_CASES, build_simulator, parameter_bytes
from loop_baseline import ComputeFloor, PerAgentLoop
from timing import load_average, machine_info, summarise, synchronise, time_interleaved

HERE = Path(__file__).resolve().parent
MIB = 2**20


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, few repeats: a smoke test"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--output", type=Path, help="write the raw results to this JSON file")
    parser.add_argument(
        "--data-dir",
        help="folder with the MNIST IDX files for the epoch benchmark (default: "
        "$SUBSPACE_DIFFUSION_DATA_DIR/mnist; the benchmark is skipped if missing)",
    )
    parser.add_argument(
        "--agents", type=int, nargs="+", help="numbers of agents K (default: 4 16 64 256)"
    )
    parser.add_argument(
        "--loop-max-agents",
        type=int,
        default=256,
        help="skip the per-agent loop above this many agents (default: 256)",
    )
    parser.add_argument(
        "--topology",
        choices=("ring", "complete"),
        default="ring",
        help="graph of the step benchmark (default: ring)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("equivalence", "steps", "memory", "epoch"),
        help="run only these parts",
    )
    return parser.parse_args(argv)


def settings_for(arguments: argparse.Namespace) -> dict:
    """Return the sizes and repeat counts of quick or full mode."""
    if arguments.quick:
        settings = {
            "agents": [4],
            "memory_agents": {"cnn": [4, 8]},
            "memory_steps": 2,
            "timing": {"min_rounds": 2, "max_rounds": 2, "max_seconds": 0.0, "warmup": 1},
            "epoch_repeats": 1,
        }
    else:
        settings = {
            "agents": [4, 16, 64, 256],
            "memory_agents": {"cnn": [4, 16, 64, 256], "mlp": [4, 16, 64, 256]},
            "memory_steps": 5,
            "timing": {"min_rounds": 7, "max_rounds": 40, "max_seconds": 25.0, "warmup": 3},
            "epoch_repeats": 3,
        }
    if arguments.agents:
        settings["agents"] = sorted(arguments.agents)
        settings["memory_agents"] = {name: sorted(arguments.agents) for name in MODEL_CASES}
    return settings


def check_equivalence(device: torch.device) -> list[dict]:
    """Compare the per-agent loop with the engine over three float64 steps."""
    results = []
    for name, case in MODEL_CASES.items():
        for step_rule in ("agd-shared", "constant"):
            simulator = build_simulator(
                case, 4, step_rule, batch_size=8, device=device, dtype=torch.float64
            )
            loop = PerAgentLoop.from_simulator(simulator)
            for _ in range(3):
                engine_losses = simulator.step()
                loop_losses = loop.step()
            difference = max(
                float((a - b).abs().max())
                for a, b in zip(simulator.params, loop.stacked_parameters())
            )
            results.append(
                {
                    "model": name,
                    "step_rule": step_rule,
                    "max_parameter_difference": difference,
                    "max_loss_difference": float((engine_losses - loop_losses).abs().max()),
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
    if len(case.input_shape) == 3:
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


def run_memory_probes(settings, device: torch.device) -> list[dict]:
    """Measure peak memory per model and number of agents, a process each."""
    results = []
    for name, agent_counts in settings["memory_agents"].items():
        for num_agents in agent_counts:
            command = [
                sys.executable,
                str(HERE / "memory_probe.py"),
                name,
                str(num_agents),
                str(settings["memory_steps"]),
                str(device),
            ]
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                raise RuntimeError(
                    f"Memory probe failed for {name} with K={num_agents} (exit status "
                    f"{completed.returncode}):\n{completed.stderr}"
                )
            results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return results


def resolve_mnist_dir(data_dir: str | None) -> Path | None:
    """Return the MNIST folder to use, or None when there is none."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from subspace_diffusion.data import default_data_dir

    found = default_data_dir("mnist")
    return found if found is not None and found.is_dir() else None


def run_epoch(arguments, settings, device: torch.device) -> dict:
    """Time one epoch of the reference MNIST experiment through the command line.

    Quick mode trains on the bundled digits dataset instead, so that it needs
    no data files.
    """
    common = ["--agents", "4", "--topology", "complete", "--epochs", "1"]
    common += ["--strategy", "exact", "--step-rule", "agd-shared", "--device", str(device)]
    if arguments.quick:
        dataset = ["--dataset", "digits"]
    else:
        mnist_dir = resolve_mnist_dir(arguments.data_dir)
        if mnist_dir is None:
            return {
                "skipped": "no MNIST folder: pass --data-dir or set "
                "SUBSPACE_DIFFUSION_DATA_DIR"
            }
        dataset = ["--dataset", "mnist", "--data-dir", str(mnist_dir)]

    runs = []
    with tempfile.TemporaryDirectory(prefix="subspace-diffusion-epoch-") as folder:
        for repeat in range(settings["epoch_repeats"]):
            out = Path(folder) / f"run{repeat}"
            command = [sys.executable, "-m", "subspace_diffusion.cli", "train"]
            command += dataset + common + ["--out", str(out), "--quiet"]
            start = time.perf_counter()
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
            if completed.returncode != 0:
                raise RuntimeError(
                    f"The epoch run failed (exit status {completed.returncode}):\n"
                    f"{completed.stderr}"
                )
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
            runs.append(
                {
                    "process_seconds": wall,
                    "run_seconds": summary["seconds"],
                    "training_seconds": summary["training_seconds"],
                    "steps": summary["steps"],
                    "min_test_accuracy": summary["min_test_accuracy"],
                }
            )
    result = {"dataset": dataset[1], "command": " ".join(["subspace-diffusion", "train"] + dataset + common), "runs": runs}
    for key in ("process_seconds", "run_seconds", "training_seconds"):
        result[key] = summarise([run[key] for run in runs])
    return result
