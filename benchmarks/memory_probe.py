"""Measure the peak memory of one simulator in a fresh process.

Run by ``run.py`` once per model and number of agents, because a process's
peak resident set size only grows. Prints one JSON object on stdout. Memory
is in bytes: the resident set size (RSS) after imports, after building the
simulator, and its peak over the training steps; on CUDA also the peak of
``torch.cuda.max_memory_allocated``.

Usage: ``python memory_probe.py MODEL AGENTS STEPS DEVICE``
"""

from __future__ import annotations

import json
import resource
import sys

import torch

from cases import MODEL_CASES, build_simulator, parameter_bytes


def resident_bytes() -> int:
    """Return the current RSS, read from /proc/self/statm."""
    with open("/proc/self/statm", encoding="utf-8") as file:
        pages = int(file.read().split()[1])
    return pages * resource.getpagesize()


def peak_resident_bytes() -> int:
    """Return the peak RSS so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> None:
    model_name, agents, steps, device_name = argv
    case = MODEL_CASES[model_name]
    num_agents = int(agents)
    device = torch.device(device_name)
    after_import = resident_bytes()

    simulator = build_simulator(case, num_agents, "agd-shared", device=device)
    data_bytes = simulator.sampler.images.numel() * simulator.sampler.images.element_size()
    after_build = resident_bytes()
    peak_before_steps = peak_resident_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_after_build = torch.cuda.memory_allocated(device)

    for _ in range(int(steps)):
        simulator.step()

    shared, local = parameter_bytes(case)
    result = {
        "model": model_name,
        "agents": num_agents,
        "rss_after_import": after_import,
        "rss_after_build": after_build,
        "peak_rss_before_steps": peak_before_steps,
        "peak_rss": peak_resident_bytes(),
        "data_bytes": data_bytes,
        "shared_parameter_bytes_per_agent": shared,
        "local_parameter_bytes_per_agent": local,
    }
    if device.type == "cuda":
        result["cuda_after_build"] = cuda_after_build
        result["cuda_peak"] = torch.cuda.max_memory_allocated(device)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
