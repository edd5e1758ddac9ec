"""The ``experiment msd`` command and its Python API, end to end."""

from __future__ import annotations

import csv
import json

import pytest

from subspace_diffusion.cli import main
from subspace_diffusion.errors import ConfigError
from subspace_diffusion.experiments.msd import (
    SUMMARY_COLUMNS,
    MSDExperimentConfig,
    format_table,
    run_msd_experiment,
    write_results,
)

TINY = [
    "--noise-levels",
    "0.1,0.01",
    "--step-sizes",
    "0.05",
    "--iterations",
    "60",
    "--repetitions",
    "3",
    "--agents",
    "4",
    "--quiet",
]


def test_command_writes_all_files(tmp_path, capsys):
    out = tmp_path / "msd"
    status = main(["experiment", "msd", "--out", str(out), *TINY])
    captured = capsys.readouterr()
    assert status == 0
    for name in ("msd.csv", "summary.csv", "summary.json", "msd.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp"))
    assert "simulated" in captured.out
    assert "predicted" in captured.out
    assert "approximate projection" in captured.out
    assert "exact diffusion" in captured.out


def test_command_csv_contents(tmp_path, capsys):
    out = tmp_path / "msd"
    assert main(["experiment", "msd", "--out", str(out), *TINY]) == 0
    capsys.readouterr()

    with open(out / "msd.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["iteration", "strategy", "step_size", "noise", "msd_db"]
    # 2 strategies x 1 step size x 2 noise levels, iterations 0 .. 60
    assert len(rows) == 2 * 1 * 2 * 61
    assert {row["strategy"] for row in rows} == {"approximate", "exact"}
    assert {float(row["noise"]) for row in rows} == {0.1, 0.01}

    with open(out / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 4
    assert tuple(summary[0]) == SUMMARY_COLUMNS

    data = json.loads((out / "summary.json").read_text())
    assert data["config"]["iterations"] == 60
    assert data["config"]["noise_levels"] == [0.1, 0.01]
    assert len(data["summary"]) == 4
    assert data["network"]["spectral_gap"] > 0


def test_command_rejects_negative_step(tmp_path, capsys):
    args = ["experiment", "msd", "--out", str(tmp_path), *TINY]
    args[args.index("--step-sizes") + 1] = "-0.1"
    status = main(args)
    captured = capsys.readouterr()
    assert status == 2
    assert "step size must be positive" in captured.err
    assert not (tmp_path / "msd.csv").exists()


def test_command_rejects_unstable_step(tmp_path, capsys):
    args = ["experiment", "msd", "--out", str(tmp_path), *TINY]
    args[args.index("--step-sizes") + 1] = "5"
    status = main(args)
    captured = capsys.readouterr()
    assert status == 2
    assert "unstable" in captured.err


def test_command_rejects_non_numeric_list(tmp_path, capsys):
    args = ["experiment", "msd", "--out", str(tmp_path), *TINY]
    args[args.index("--noise-levels") + 1] = "0.1,abc"
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert "comma-separated numbers" in captured.err


def test_command_keeps_earlier_results(tmp_path, capsys):
    out = tmp_path / "msd"
    assert main(["experiment", "msd", "--out", str(out), *TINY]) == 0
    status = main(["experiment", "msd", "--out", str(out), *TINY])
    captured = capsys.readouterr()
    assert status == 2
    assert "--overwrite" in captured.err
    assert main(["experiment", "msd", "--out", str(out), *TINY, "--overwrite"]) == 0


def test_api_summary_and_table(tmp_path):
    config = MSDExperimentConfig(
        noise_levels=(0.1,),
        step_sizes=(0.02, 0.06),
        iterations=40,
        repetitions=2,
        agents=4,
        subspace="shared",
    )
    result = run_msd_experiment(config)
    assert len(result.summary) == 4
    assert set(result.curves) == {
        (strategy, mu, 0.1)
        for strategy in ("approximate", "exact")
        for mu in (0.02, 0.06)
    }
    assert all(len(curve) == 41 for curve in result.curves.values())
    table = format_table(result.summary)
    assert len(table.splitlines()) == 2 + 4
    paths = write_results(result, tmp_path / "out")
    assert all(path.is_file() for path in paths)


def test_config_rejects_too_many_clusters():
    config = MSDExperimentConfig(agents=4, clusters=5)
    with pytest.raises(ConfigError, match="clusters"):
        config.validate()


def test_msd_too_large_network_rejected(tmp_path, capsys):
    status = main(
        [
            "experiment",
            "msd",
            "--out",
            str(tmp_path / "msd"),
            "--agents",
            "100000",
            "--quiet",
        ]
    )
    assert status == 2
    assert "N = 200000" in capsys.readouterr().err
