"""Measure the memory of one simulator in a fresh process.

Run by ``run.py`` once per model and number of agents, because a process's
peak resident set size (RSS) only grows. Prints one JSON object on stdout,
with memory in bytes:

* ``rss_after_import``, ``rss_after_build``: RSS after the imports and after
  building the simulator;
* ``rss_after_warmup``: RSS after one training step, which also loads the
  kernels and libraries that the first step needs;
* ``peak_rss``: the process's peak RSS, the larger of ``VmHWM`` before and
  after the measured steps (``ru_maxrss`` is no use here, because Linux
  carries the parent's peak over into it when this process is started);
* ``step_peak_rss``: the peak RSS during the measured steps alone, read from
  ``VmHWM`` after resetting it through ``/proc/self/clear_refs``, or None
  where that reset fails;
* on CUDA, ``cuda_after_build`` and ``cuda_peak`` from the caching allocator.

``run.py`` starts this script with ``MALLOC_MMAP_THRESHOLD_`` set, so glibc
returns every freed block of 64 KiB or more to the system at once and the RSS
follows the live tensors instead of what the allocator keeps cached.

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


def reset_high_water_mark() -> bool:
    """Reset ``VmHWM`` to the current RSS; return False where that fails."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as file:
            file.write("5")
    except OSError:
        return False
    return True


def high_water_mark() -> int:
    """Return ``VmHWM`` from /proc/self/status in bytes."""
    with open("/proc/self/status", encoding="ascii") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM is missing from /proc/self/status.")


def main(argv: list[str]) -> None:
    model_name, agents, steps, device_name = argv
    case = MODEL_CASES[model_name]
    num_agents = int(agents)
    device = torch.device(device_name)
    after_import = resident_bytes()

    simulator = build_simulator(case, num_agents, "agd-shared", device=device)
    images = simulator.sampler.images
    after_build = resident_bytes()
    if device.type == "cuda":
        cuda_after_build = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)

    simulator.step()
    after_warmup = resident_bytes()
    peak_before_steps = high_water_mark()
    can_reset = reset_high_water_mark()
    for _ in range(int(steps)):
        simulator.step()
    peak_of_steps = high_water_mark()

    shared, local = parameter_bytes(case)
    result = {
        "model": model_name,
        "agents": num_agents,
        "rss_after_import": after_import,
        "rss_after_build": after_build,
        "rss_after_warmup": after_warmup,
        "rss_after_steps": resident_bytes(),
        "step_peak_rss": peak_of_steps if can_reset else None,
        "peak_rss": max(peak_before_steps, peak_of_steps),
        "data_bytes": images.numel() * images.element_size(),
        "shared_parameter_bytes_per_agent": shared,
        "local_parameter_bytes_per_agent": local,
    }
    if device.type == "cuda":
        result["cuda_after_build"] = cuda_after_build
        result["cuda_peak"] = torch.cuda.max_memory_allocated(device)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
