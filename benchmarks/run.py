"""Run every benchmark of subspace-diffusion and print the tables of the page.

``python benchmarks/run.py`` measures, side by side in one process:

* step time of the engine (``Simulator.step``, exact diffusion, shared AGD and
  constant step rules) for the reference CNN and an MLP. It is compared with
  a per-agent loop written the way research notebooks do it, and with a
  compute floor: one model, forward and backward on ``K * B`` samples;
* the share of the engine's step spent in exact diffusion's correct and
  combine steps;
* the engine's step with one and with two torch threads (CPU only);
* the dense against the diagonal-by-diagonal product of the combine step;
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
import sys
import time
from pathlib import Path

import torch
from cases import MODEL_CASES
from process_benchmarks import (
    run_epoch,
    run_memory_probes,
    run_step_case_in_new_process,
)
from report import check_targets, format_report, summarise_memory
from steps import (
    benchmark_case,
    benchmark_combine,
    benchmark_threads,
    check_equivalence,
    profile_engine,
)
from timing import load_average, machine_info

PARTS = ("equivalence", "steps", "threads", "combine", "memory", "epoch")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, few repeats: a smoke test"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--output", type=Path, help="write the raw results to this JSON file"
    )
    parser.add_argument(
        "--data-dir",
        help="folder with the MNIST IDX files for the epoch benchmark (default: "
        "$SUBSPACE_DIFFUSION_DATA_DIR/mnist; the benchmark is skipped if missing)",
    )
    parser.add_argument(
        "--agents",
        type=int,
        nargs="+",
        help="numbers of agents K (default: 4 16 64 256)",
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
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's own choice)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=tuple(MODEL_CASES),
        default=list(MODEL_CASES),
        help="models of the step and memory benchmarks (default: all)",
    )
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="time every step case in this process (default in full mode: a "
        "fresh process per model and K)",
    )
    parser.add_argument(
        "--profile",
        nargs=2,
        metavar=("MODEL", "AGENTS"),
        help="also profile the engine's step for this model and K with "
        "torch.profiler, for example: --profile mlp 64",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PARTS,
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
            "timing": {
                "min_rounds": 2,
                "max_rounds": 2,
                "max_seconds": 0.0,
                "warmup": 1,
            },
            "epoch_repeats": 1,
            "thread_cases": [("cnn", 4)],
            "combine_agents": [8],
            "combine_widths": [4608],
        }
    else:
        settings = {
            "agents": [4, 16, 64, 256],
            "memory_agents": {"cnn": [4, 16, 64, 256], "mlp": [4, 16, 64, 256]},
            "memory_steps": 5,
            "timing": {
                "min_rounds": 7,
                "max_rounds": 40,
                "max_seconds": 25.0,
                "warmup": 3,
            },
            "epoch_repeats": 3,
            "thread_cases": [("cnn", 4), ("cnn", 64), ("mlp", 64)],
            "combine_agents": [16, 64, 256],
            "combine_widths": [4608, 200704],
        }
    if arguments.agents:
        settings["agents"] = sorted(arguments.agents)
        settings["memory_agents"] = {
            name: sorted(arguments.agents) for name in MODEL_CASES
        }
    settings["memory_agents"] = {
        name: counts
        for name, counts in settings["memory_agents"].items()
        if name in arguments.models
    }
    return settings


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
        os.environ["OMP_NUM_THREADS"] = str(arguments.threads)
    device = torch.device(arguments.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device {device} requested but CUDA is not available.",
            file=sys.stderr,
        )
        return 2
    settings = settings_for(arguments)
    parts = set(arguments.only or PARTS)
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
        cases = [(name, k) for name in arguments.models for k in settings["agents"]]
        isolate = len(cases) > 1 and not (arguments.quick or arguments.same_process)
        for name, num_agents in cases:
            print(f"timing {name}, K={num_agents}", file=sys.stderr, flush=True)
            if isolate:
                steps.append(run_step_case_in_new_process(name, num_agents, arguments))
            else:
                steps.append(
                    benchmark_case(name, num_agents, arguments, settings, device)
                )
    results["steps"] = steps
    if "threads" in parts and device.type == "cpu":
        print("timing thread counts", file=sys.stderr, flush=True)
        results["threads"] = benchmark_threads(
            settings["thread_cases"], settings, device
        )
    if "combine" in parts:
        print("timing the combine products", file=sys.stderr, flush=True)
        results["combine"] = benchmark_combine(
            settings["combine_agents"], settings["combine_widths"], settings, device
        )
    if "memory" in parts:
        print("measuring peak memory", file=sys.stderr, flush=True)
        results["memory_probes"] = run_memory_probes(settings, device)
        results["memory"] = summarise_memory(results["memory_probes"])
    if "epoch" in parts:
        print("timing one epoch", file=sys.stderr, flush=True)
        results["epoch"] = run_epoch(arguments, settings, device)

    if arguments.profile:
        name, agents = arguments.profile
        print(f"profiling {name}, K={agents}", file=sys.stderr, flush=True)
        results["profile"] = {
            "model": name,
            "agents": int(agents),
            "operators": profile_engine(name, int(agents), device),
        }

    results["targets"] = (
        []
        if arguments.quick
        else check_targets(steps, results.get("memory", {}), results.get("epoch"))
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
