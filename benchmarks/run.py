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
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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


def run_memory_probe(name: str, num_agents: int, steps: int, device) -> dict:
    """Run memory_probe.py for one case in a fresh process; return its result."""
    command = [sys.executable, str(HERE / "memory_probe.py"), name, str(num_agents)]
    command += [str(steps), str(device)]
    # A fixed mmap threshold makes glibc return freed tensors to the system at
    # once, so the RSS follows the live memory (see memory_probe.py).
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 * 1024))
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, env=environment
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"Memory probe failed for {name} with K={num_agents} (exit status "
            f"{completed.returncode}):\n{completed.stderr}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_memory_probes(settings, device: torch.device) -> list[dict]:
    """Measure memory per model and number of agents, a fresh process each.

    Two probes run at a time: the RSS of one process does not depend on what
    another one does.
    """
    cases = [
        (name, num_agents)
        for name, agent_counts in settings["memory_agents"].items()
        for num_agents in agent_counts
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(run_memory_probe, name, k, settings["memory_steps"], device)
            for name, k in cases
        ]
        return [future.result() for future in futures]


def resolve_mnist_dir(data_dir: str | None) -> Path | None:
    """Return the MNIST folder to use, or None when there is none."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from subspace_diffusion.data import default_data_dir

    found = default_data_dir("mnist")
    return found if found is not None and found.is_dir() else None


def run_epoch(arguments, settings, device: torch.device) -> dict:
    """Time one epoch of the reference MNIST experiment through the command line.

    Full mode starts a fresh process per repeat, so its wall time includes the
    imports. Quick mode calls the command line in this process on the bundled
    digits dataset, so that it needs no data files and starts no interpreter.
    """
    options = ["--agents", "4", "--topology", "complete", "--epochs", "1"]
    options += ["--strategy", "exact", "--step-rule", "agd-shared", "--device", str(device)]
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
            argv = ["train"] + dataset + options + ["--out", str(out), "--quiet"]
            start = time.perf_counter()
            status, messages = run_command_line(argv, in_process=arguments.quick)
            wall = time.perf_counter() - start
            if status != 0:
                raise RuntimeError(
                    f"The epoch run failed (exit status {status}):\n{messages}"
                )
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
            runs.append(
                {
                    "command_seconds": wall,
                    "run_seconds": summary["seconds"],
                    "training_seconds": summary["training_seconds"],
                    "steps": summary["steps"],
                    "min_test_accuracy": summary["min_test_accuracy"],
                }
            )
    command = " ".join(["subspace-diffusion", "train"] + dataset + options)
    result = {"dataset": dataset[1], "command": command, "runs": runs}
    for key in ("command_seconds", "run_seconds", "training_seconds"):
        result[key] = summarise([run[key] for run in runs])
    return result


def run_command_line(argv: list[str], *, in_process: bool) -> tuple[int, str]:
    """Run ``subspace-diffusion ARGV``; return its exit status and its stderr."""
    if not in_process:
        command = [sys.executable, "-m", "subspace_diffusion.cli"] + argv
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        return completed.returncode, completed.stderr
    from subspace_diffusion.cli import main as command_line

    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        status = command_line(argv)
    return status, output.getvalue()


def fit_line(xs: list[float], ys: list[float]) -> dict:
    """Return the least-squares line through the points and its worst residual.

    The residual is relative to the largest ``|y|``, so values near zero at
    small ``x`` do not inflate it.
    """
    count = len(xs)
    mean_x = sum(xs) / count
    mean_y = sum(ys) / count
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    intercept = mean_y - slope * mean_x
    worst = max(abs(y - (intercept + slope * x)) for x, y in zip(xs, ys))
    scale = max(abs(y) for y in ys) or 1.0
    return {"slope": slope, "intercept": intercept, "max_relative_residual": worst / scale}


def summarise_memory(probes: list[dict]) -> dict:
    """Fit each memory quantity against K per model.

    ``peak`` is the peak RSS over the RSS after imports, ``state`` what the
    steps keep between them over the built simulator, and ``transient`` what
    a step allocates and frees again (its peak over the RSS between steps).
    """
    summary = {}
    for name in sorted({probe["model"] for probe in probes}):
        rows = [probe for probe in probes if probe["model"] == name]
        first = rows[0]
        entry = {
            "agents": [row["agents"] for row in rows],
            "peak": [row["peak_rss"] - row["rss_after_import"] for row in rows],
            "state": [row["rss_after_steps"] - row["rss_after_build"] for row in rows],
            "shared_parameter_bytes_per_agent": first["shared_parameter_bytes_per_agent"],
            "parameter_bytes_per_agent": first["shared_parameter_bytes_per_agent"]
            + first["local_parameter_bytes_per_agent"],
            "data_bytes_per_agent": first["data_bytes"] / first["agents"],
        }
        if all(row["step_peak_rss"] is not None for row in rows):
            entry["transient"] = [
                row["step_peak_rss"] - row["rss_after_steps"] for row in rows
            ]
        if len(rows) > 1:
            for key in ("peak", "state", "transient"):
                if key in entry:
                    entry[f"{key}_fit"] = fit_line(entry["agents"], entry[key])
        summary[name] = entry
    return summary


def median_ms(result: dict, variant: str) -> float | None:
    timing = result["timings"].get(variant)
    return None if timing is None else 1e3 * timing["wall"]["median"]


def best_floor(result: dict) -> tuple[float, str]:
    """Return the faster compute floor (median ms) and its memory format."""
    candidates = [(median_ms(result, "floor"), "contiguous")]
    if "floor channels_last" in result["timings"]:
        candidates.append((median_ms(result, "floor channels_last"), "channels_last"))
    return min(candidates)


def check_targets(steps: list[dict], memory: dict, epoch: dict | None) -> list[dict]:
    """Compare the measurements with the performance targets of the library."""
    targets = []

    def add(name: str, value, limit: float, met: bool) -> None:
        targets.append({"target": name, "value": value, "limit": limit, "met": met})

    for result in steps:
        k, model = result["agents"], result["model"]
        engine = median_ms(result, "engine agd-shared")
        loop = median_ms(result, "loop agd-shared")
        if model == "mlp" and k == 64 and loop is not None:
            add("MLP engine / loop at K=64", engine / loop, 1 / 3, engine / loop <= 1 / 3)
        if model == "cnn" and loop is not None:
            add(f"CNN engine / loop at K={k}", engine / loop, 1.0, engine <= loop)
        if model == "cnn" and k in (16, 64):
            ratio = engine / best_floor(result)[0]
            add(f"CNN engine / floor at K={k}", ratio, 1.3, ratio <= 1.3)
        if k == 64:
            share = result["combination_share agd-shared"]["median"]
            add(f"{model.upper()} correct + combine share at K=64", share, 0.1, share < 0.1)
    for name, entry in memory.items():
        if "peak_fit" in entry:
            residual = entry["peak_fit"]["max_relative_residual"]
            add(f"{name.upper()} peak memory linear in K", residual, 0.1, residual <= 0.1)
    if epoch and "run_seconds" in epoch and epoch["dataset"] == "mnist":
        seconds = epoch["run_seconds"]["median"]
        add("MNIST epoch seconds", seconds, 10.0, seconds < 10.0)
    return targets


def format_ms(value: float | None) -> str:
    return "skipped" if value is None else f"{value:.2f}"


def format_ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None:
        return "-"
    return f"{numerator / denominator:.2f}"


def format_steps(steps: list[dict], topology: str) -> list[str]:
    lines = []
    for name, case in MODEL_CASES.items():
        for step_rule in ("agd-shared", "constant"):
            rows = [r for r in steps if r["model"] == name]
            if not rows:
                continue
            lines += [
                f"\n{case.description}, exact diffusion, {step_rule}, {topology} graph, "
                "B=32, median ms per step",
                "",
                "| K | per-agent loop | engine | engine / loop | compute floor "
                "| engine / floor | correct + combine |",
                "|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for result in rows:
                engine = median_ms(result, f"engine {step_rule}")
                loop = median_ms(result, f"loop {step_rule}")
                floor, layout = best_floor(result)
                share = result[f"combination_share {step_rule}"]["median"]
                lines.append(
                    f"| {result['agents']} | {format_ms(loop)} | {format_ms(engine)} "
                    f"| {format_ratio(engine, loop)} | {floor:.2f} ({layout}) "
                    f"| {format_ratio(engine, floor)} | {100 * share:.1f}% |"
                )
    return lines


def format_memory(probes: list[dict], memory: dict) -> list[str]:
    lines = [
        "\nMemory of exact diffusion with shared AGD, float32, in MiB",
        "",
        "| model | K | peak RSS over imports | data | parameters, all agents "
        "| kept between steps | transient within a step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for probe in probes:
        entry = memory[probe["model"]]
        index = entry["agents"].index(probe["agents"])
        parameters = probe["agents"] * entry["parameter_bytes_per_agent"]
        transient = entry.get("transient")
        lines.append(
            f"| {probe['model']} | {probe['agents']} | {entry['peak'][index] / MIB:.1f} "
            f"| {probe['data_bytes'] / MIB:.1f} | {parameters / MIB:.1f} "
            f"| {entry['state'][index] / MIB:.1f} "
            f"| {'-' if transient is None else f'{transient[index] / MIB:.1f}'} |"
        )
    for name, entry in memory.items():
        if "peak_fit" not in entry:
            continue
        kib = 1024
        parts = [
            f"\n{name}: per agent, parameters {entry['parameter_bytes_per_agent'] / kib:.0f}"
            f" KiB (shared {entry['shared_parameter_bytes_per_agent'] / kib:.0f} KiB),"
            f" data {entry['data_bytes_per_agent'] / kib:.0f} KiB."
        ]
        for key, label in (("peak", "peak"), ("state", "kept"), ("transient", "transient")):
            if f"{key}_fit" in entry:
                fit = entry[f"{key}_fit"]
                parts.append(
                    f" {label}: {fit['intercept'] / MIB:.1f} MiB + "
                    f"{fit['slope'] / kib:.0f} KiB x K (worst residual "
                    f"{100 * fit['max_relative_residual']:.1f}%)."
                )
        lines.append("".join(parts))
    return lines


def format_report(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"machine: {machine['cpu']}, {machine['logical_cores']} logical cores, "
        f"{machine['torch_threads']} torch threads, device {machine['device']}",
        f"python {machine['python']}, torch {machine['torch']}, numpy {machine['numpy']}",
    ]
    if results.get("equivalence"):
        worst = max(r["max_parameter_difference"] for r in results["equivalence"])
        lines.append(f"loop vs engine, 3 float64 steps: max parameter difference {worst:.1e}")
    if results.get("steps"):
        lines += format_steps(results["steps"], results["topology"])
    if results.get("memory_probes"):
        lines += format_memory(results["memory_probes"], results["memory"])
    epoch = results.get("epoch")
    if epoch and "skipped" in epoch:
        lines.append(f"\nepoch benchmark skipped: {epoch['skipped']}")
    elif epoch:
        lines += [
            f"\none epoch, {epoch['dataset']}: `{epoch['command']}`",
            "",
            "| command wall (s) | run: load, train, evaluate, write (s) "
            "| training loop with evaluation (s) | steps |",
            "|---:|---:|---:|---:|",
            f"| {epoch['command_seconds']['median']:.2f} "
            f"| {epoch['run_seconds']['median']:.2f} "
            f"| {epoch['training_seconds']['median']:.2f} | {epoch['runs'][0]['steps']} |",
        ]
    if results.get("targets"):
        lines += ["", "| target | value | limit | met |", "|---|---:|---:|---|"]
        for target in results["targets"]:
            lines.append(
                f"| {target['target']} | {target['value']:.3f} | {target['limit']:.3f} "
                f"| {'yes' if target['met'] else 'no'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
        os.environ["OMP_NUM_THREADS"] = str(arguments.threads)
    device = torch.device(arguments.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {device} requested but CUDA is not available.", file=sys.stderr)
        return 2
    settings = settings_for(arguments)
    parts = set(arguments.only or ("equivalence", "steps", "memory", "epoch"))
    started = time.perf_counter()
    results = {
        "mode": "quick" if arguments.quick else "full",
        "machine": machine_info(device),
        "topology": arguments.topology,
        "load_average_start": load_average(),
    }

    if "equivalence" in parts:
        results["equivalence"] = check_equivalence(device)
    steps = []
    if "steps" in parts:
        for name in MODEL_CASES:
            for num_agents in settings["agents"]:
                print(f"timing {name}, K={num_agents}", file=sys.stderr, flush=True)
                steps.append(benchmark_case(name, num_agents, arguments, settings, device))
    results["steps"] = steps
    if "memory" in parts:
        print("measuring peak memory", file=sys.stderr, flush=True)
        results["memory_probes"] = run_memory_probes(settings, device)
        results["memory"] = summarise_memory(results["memory_probes"])
    if "epoch" in parts:
        print("timing one epoch", file=sys.stderr, flush=True)
        results["epoch"] = run_epoch(arguments, settings, device)

    results["targets"] = [] if arguments.quick else check_targets(
        steps, results.get("memory", {}), results.get("epoch")
    )
    results["load_average_end"] = load_average()
    results["seconds"] = time.perf_counter() - started
    print(format_report(results))
    print(f"\nbenchmarks took {results['seconds']:.1f} s", file=sys.stderr)
    if arguments.output is not None:
        arguments.output.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
