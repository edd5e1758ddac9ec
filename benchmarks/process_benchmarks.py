"""Benchmarks that start other processes: peak memory and the MNIST epoch."""

from __future__ import annotations

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
from timing import summarise

HERE = Path(__file__).resolve().parent


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
    options += [
        "--strategy",
        "exact",
        "--step-rule",
        "agd-shared",
        "--device",
        str(device),
    ]
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


def run_step_case_in_new_process(name: str, num_agents: int, arguments) -> dict:
    """Time one step case with ``run.py --only steps`` in a fresh process.

    The allocator's state changes step times by up to 2x for the large cases
    (how many new pages each step has to fault in), and it depends on what
    ran before in the process. A fresh process per case removes that order
    dependence; the variants of one case still share a process.
    """
    with tempfile.TemporaryDirectory(prefix="subspace-diffusion-steps-") as folder:
        output = Path(folder) / "steps.json"
        command = [sys.executable, str(HERE / "run.py"), "--only", "steps"]
        command += ["--models", name, "--agents", str(num_agents)]
        command += ["--topology", arguments.topology, "--device", arguments.device]
        command += ["--loop-max-agents", str(arguments.loop_max_agents)]
        command += ["--output", str(output)]
        if arguments.threads is not None:
            command += ["--threads", str(arguments.threads)]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"Timing {name} with K={num_agents} failed (exit status "
                f"{completed.returncode}):\n{completed.stderr}"
            )
        return json.loads(output.read_text(encoding="utf-8"))["steps"][0]
