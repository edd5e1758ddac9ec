"""The benchmark command's quick mode: it runs, and its checks hold.

The quick mode times nothing seriously. These tests check that every part of
``benchmarks/run.py`` runs. They also check that the per-agent loop it
compares against computes the same iterates as the engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
RUN = REPOSITORY / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> dict:
    """Run ``benchmarks/run.py --quick`` once and return its JSON results."""
    output = tmp_path_factory.mktemp("benchmarks") / "results.json"
    completed = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, (
        f"benchmarks/run.py --quick failed with status {completed.returncode}:\n"
        f"{completed.stderr}"
    )
    return json.loads(output.read_text(encoding="utf-8"))


def test_quick_mode_records_machine(quick_results):
    machine = quick_results["machine"]
    assert quick_results["mode"] == "quick"
    for key in ("cpu", "logical_cores", "python", "torch", "numpy", "device"):
        assert machine[key], f"machine info lacks {key}"


def test_loop_baseline_matches_engine(quick_results):
    checks = quick_results["equivalence"]
    assert {(c["model"], c["step_rule"]) for c in checks} == {
        ("cnn", "agd-shared"),
        ("cnn", "constant"),
        ("mlp", "agd-shared"),
        ("mlp", "constant"),
    }
    for check in checks:
        label = f"{check['model']} with {check['step_rule']}"
        assert check["max_parameter_difference"] < 1e-12, label
        assert check["max_loss_difference"] < 1e-12, label


def test_equivalence_covers_diagonal_product(quick_results):
    mlp = [c for c in quick_results["equivalence"] if c["model"] == "mlp"]
    assert all(c["diagonal_product_eligible"] for c in mlp)


def test_steps_time_every_variant(quick_results):
    expected = {
        "engine agd-shared",
        "engine constant",
        "loop agd-shared",
        "loop constant",
        "floor",
    }
    models = {result["model"] for result in quick_results["steps"]}
    assert models == {"cnn", "mlp"}
    for result in quick_results["steps"]:
        assert expected <= set(result["timings"]), result["model"]
        for name, timing in result["timings"].items():
            assert timing["wall"]["median"] > 0, f"{result['model']} {name}"
        share = result["combination_share agd-shared"]["median"]
        assert 0 < share < 1, f"{result['model']} combination share {share}"


def test_cnn_floor_tries_channels_last(quick_results):
    cnn = next(r for r in quick_results["steps"] if r["model"] == "cnn")
    assert "floor channels_last" in cnn["timings"]


def test_memory_probes_and_fit(quick_results):
    probes = quick_results["memory_probes"]
    assert [p["agents"] for p in probes] == [4, 8]
    for probe in probes:
        assert probe["peak_rss"] >= probe["rss_after_build"] > 0
    assert "peak_fit" in quick_results["memory"]["cnn"]


def test_threads_and_combine_parts(quick_results):
    threads = quick_results["threads"][0]["timings"]
    assert set(threads) == {"threads=1", "threads=2"}
    combine = quick_results["combine"][0]
    assert set(combine["timings"]) == {"dense", "diagonals"}
    assert combine["max_difference"] < 1e-5, "diagonal product differs from dense"


def test_epoch_runs_through_command_line(quick_results):
    epoch = quick_results["epoch"]
    assert epoch["dataset"] == "digits"
    assert epoch["runs"][0]["steps"] > 0
    assert epoch["run_seconds"]["median"] > 0
