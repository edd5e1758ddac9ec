"""Summaries of the raw results: fits, target checks and Markdown tables."""

from __future__ import annotations

from cases import MODEL_CASES

MIB = 2**20


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
    return {
        "slope": slope,
        "intercept": intercept,
        "max_relative_residual": worst / scale,
    }


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
            "shared_parameter_bytes_per_agent": first[
                "shared_parameter_bytes_per_agent"
            ],
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
            add(
                "MLP engine / loop at K=64",
                engine / loop,
                1 / 3,
                engine / loop <= 1 / 3,
            )
        if model == "cnn" and loop is not None:
            add(f"CNN engine / loop at K={k}", engine / loop, 1.0, engine <= loop)
        if model == "cnn" and k in (16, 64):
            ratio = engine / best_floor(result)[0]
            add(f"CNN engine / floor at K={k}", ratio, 1.3, ratio <= 1.3)
        if k == 64:
            share = result["combination_share agd-shared"]["median"]
            add(
                f"{model.upper()} correct + combine share at K=64",
                share,
                0.1,
                share < 0.1,
            )
    for name, entry in memory.items():
        if "peak_fit" in entry:
            residual = entry["peak_fit"]["max_relative_residual"]
            add(
                f"{name.upper()} peak memory linear in K",
                residual,
                0.1,
                residual <= 0.1,
            )
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
                (
                    f"\n{case.description}, exact diffusion, {step_rule}, "
                    f"{topology} graph, "
                    "B=32, median ms per step"
                ),
                "",
                (
                    "| K | per-agent loop | engine | engine / loop | compute floor "
                    "| engine / floor | correct + combine |"
                ),
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
        (
            "| model | K | peak RSS over imports | data | parameters, all agents "
            "| kept between steps | transient within a step |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for probe in probes:
        entry = memory[probe["model"]]
        index = entry["agents"].index(probe["agents"])
        parameters = probe["agents"] * entry["parameter_bytes_per_agent"]
        transient = entry.get("transient")
        lines.append(
            f"| {probe['model']} | {probe['agents']} "
            f"| {entry['peak'][index] / MIB:.1f} "
            f"| {probe['data_bytes'] / MIB:.1f} | {parameters / MIB:.1f} "
            f"| {entry['state'][index] / MIB:.1f} "
            f"| {'-' if transient is None else f'{transient[index] / MIB:.1f}'} |"
        )
    for name, entry in memory.items():
        if "peak_fit" not in entry:
            continue
        kib = 1024
        parts = [
            (
                f"\n{name}: per agent, parameters "
                f"{entry['parameter_bytes_per_agent'] / kib:.0f} KiB (shared "
                f"{entry['shared_parameter_bytes_per_agent'] / kib:.0f} KiB),"
                f" data {entry['data_bytes_per_agent'] / kib:.0f} KiB."
            )
        ]
        for key, label in (
            ("peak", "peak"),
            ("state", "kept"),
            ("transient", "transient"),
        ):
            if f"{key}_fit" in entry:
                fit = entry[f"{key}_fit"]
                parts.append(
                    f" {label}: {fit['intercept'] / MIB:.1f} MiB + "
                    f"{fit['slope'] / kib:.0f} KiB x K (worst residual "
                    f"{100 * fit['max_relative_residual']:.1f}%)."
                )
        lines.append("".join(parts))
    return lines


def format_page_faults(steps: list[dict]) -> list[str]:
    lines = [
        "\nMinor page faults per step, thousands (median), shared AGD",
        "",
        "| model | K | per-agent loop | engine | compute floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in steps:
        counts = []
        for variant in ("loop agd-shared", "engine agd-shared", "floor"):
            timing = result["timings"].get(variant)
            if timing is None:
                counts.append("skipped")
            else:
                counts.append(f"{timing['minor_page_faults']['median'] / 1e3:.1f}")
        lines.append(
            f"| {result['model']} | {result['agents']} | " + " | ".join(counts) + " |"
        )
    return lines


def format_threads(threads: list[dict]) -> list[str]:
    lines = [
        "\nEngine step with 1 and 2 torch threads, shared AGD, median ms",
        "",
        "| model | K | 1 thread | 2 threads | 2 / 1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in threads:
        one_thread = median_ms(result, "threads=1")
        two_threads = median_ms(result, "threads=2")
        lines.append(
            f"| {result['model']} | {result['agents']} | {one_thread:.2f} "
            f"| {two_threads:.2f} "
            f"| {two_threads / one_thread:.2f} |"
        )
    return lines


def format_combine(combine: list[dict]) -> list[str]:
    lines = [
        "\nCombine with a ring's A_bar, K x D float32 tensor, median ms",
        "",
        "| K | D | nonzero diagonals | dense product | diagonal by diagonal |",
        "|---:|---:|---:|---:|---:|",
    ]
    for result in combine:
        diagonals = median_ms(result, "diagonals")
        lines.append(
            f"| {result['agents']} | {result['width']} "
            f"| {result['diagonals'] or 'too many'} "
            f"| {median_ms(result, 'dense'):.2f} | {format_ms(diagonals)} |"
        )
    return lines


def format_profile(profile: dict, rows: int = 15) -> list[str]:
    operators = profile["operators"]
    total = sum(row["self_cpu_ms_per_step"] for row in operators)
    lines = [
        (
            f"\nProfile of the engine's step, {profile['model']}, "
            f"K={profile['agents']}, "
            f"shared AGD: {total:.1f} ms self CPU time per step (all threads)"
        ),
        "",
        "| operator | input shapes | calls per step | self CPU ms per step | share |",
        "|---|---|---:|---:|---:|",
    ]
    for row in operators[:rows]:
        lines.append(
            f"| {row['operator']} | `{row['input_shapes']}` "
            f"| {row['calls_per_step']:g} | {row['self_cpu_ms_per_step']:.2f} "
            f"| {100 * row['self_cpu_ms_per_step'] / total:.1f}% |"
        )
    return lines


def format_report(results: dict) -> str:
    machine = results["machine"]
    lines = [
        (
            f"machine: {machine['cpu']}, {machine['logical_cores']} logical cores, "
            f"{machine['torch_threads']} torch threads, device {machine['device']}"
        ),
        (
            f"python {machine['python']}, torch {machine['torch']}, "
            f"numpy {machine['numpy']}"
        ),
    ]
    if results.get("equivalence"):
        worst = max(r["max_parameter_difference"] for r in results["equivalence"])
        lines.append(
            f"loop vs engine, 3 float64 steps: max parameter difference {worst:.1e}"
        )
    if results.get("steps"):
        lines += format_steps(results["steps"], results["topology"])
        lines += format_page_faults(results["steps"])
    if results.get("threads"):
        lines += format_threads(results["threads"])
    if results.get("combine"):
        lines += format_combine(results["combine"])
    if results.get("memory_probes"):
        lines += format_memory(results["memory_probes"], results["memory"])
    epoch = results.get("epoch")
    if epoch and "skipped" in epoch:
        lines.append(f"\nepoch benchmark skipped: {epoch['skipped']}")
    elif epoch:
        lines += [
            f"\none epoch, {epoch['dataset']}: `{epoch['command']}`",
            "",
            (
                "| command wall (s) | run: load, train, evaluate, write (s) "
                "| training loop with evaluation (s) | steps |"
            ),
            "|---:|---:|---:|---:|",
            (
                f"| {epoch['command_seconds']['median']:.2f} "
                f"| {epoch['run_seconds']['median']:.2f} "
                f"| {epoch['training_seconds']['median']:.2f} "
                f"| {epoch['runs'][0]['steps']} |"
            ),
        ]
    if results.get("profile"):
        lines += format_profile(results["profile"])
    if results.get("targets"):
        lines += ["", "| target | value | limit | met |", "|---|---:|---:|---|"]
        for target in results["targets"]:
            lines.append(
                f"| {target['target']} | {target['value']:.3f} | {target['limit']:.3f} "
                f"| {'yes' if target['met'] else 'no'} |"
            )
    return "\n".join(lines)
