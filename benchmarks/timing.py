"""Interleaved timing and a description of the machine the numbers come from."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch

# Environment variables that change thread counts or memory allocation.
TUNING_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE")


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer includes all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarise(samples: list[float]) -> dict:
    """Return the median, quartiles, minimum and count of ``samples``."""
    quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return {
        "median": statistics.median(samples),
        "q1": quartiles[0],
        "q3": quartiles[2],
        "min": min(samples),
        "count": len(samples),
    }


def time_interleaved(
    functions: Mapping[str, Callable[[], object]],
    *,
    min_rounds: int,
    max_rounds: int,
    max_seconds: float,
    warmup: int,
    device: torch.device,
) -> dict[str, dict]:
    """Time each function once per round, all of them in every round.

    Interleaving spreads any change in machine load over every variant alike,
    so their medians stay comparable. Rounds continue until ``max_rounds``, or
    until ``max_seconds`` have passed once ``min_rounds`` are done.

    Returns
    -------
    dict
        For each name, ``summary`` with ``wall`` and ``cpu`` (process CPU
        time, all threads) summaries in seconds per call and
        ``minor_page_faults`` per call, as :func:`summarise` returns them, and
        ``samples``, the wall-clock seconds of every call.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    synchronise(device)

    wall = {name: [] for name in functions}
    cpu = {name: [] for name in functions}
    faults = {name: [] for name in functions}
    names = list(functions)
    started = time.perf_counter()
    for round_number in range(max_rounds):
        # Rotate the order so that no variant always runs right after another.
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            faults_start = minor_page_faults()
            cpu_start = time.process_time()
            wall_start = time.perf_counter()
            functions[name]()
            synchronise(device)
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
            faults[name].append(minor_page_faults() - faults_start)
        done = round_number + 1
        if done >= min_rounds and time.perf_counter() - started > max_seconds:
            break
    return {
        name: {
            "summary": {
                "wall": summarise(wall[name]),
                "cpu": summarise(cpu[name]),
                "minor_page_faults": summarise(faults[name]),
            },
            "samples": wall[name],
        }
        for name in functions
    }


def minor_page_faults() -> int:
    """Return this process's minor page faults so far (0 where unsupported).

    Each first touch of newly mapped memory is one, so they count the pages
    that large new tensors cost the kernel to map and zero.
    """
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages, where the system has them."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    """Describe the hardware and the software versions of this run."""
    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["environment"] = {
        name: value
        for name, value in os.environ.items()
        if name in TUNING_VARIABLES or name.startswith("MALLOC_")
    }
    return info
