"""The ``subspace-diffusion train`` command: outputs, real data and bad input."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from subspace_diffusion.cli import main
from subspace_diffusion.runs import METRIC_COLUMNS, read_metrics


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the command in a fresh interpreter, as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", "subspace_diffusion.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("runs") / "digits"
    result = run_cli("train", "--epochs", "3", "--out", str(out), "--quiet")
    return out, result


def test_digits_run_succeeds(digits_run):
    _, result = digits_run
    assert result.returncode == 0, result.stderr


def test_digits_run_writes_files(digits_run):
    out, _ = digits_run
    for name in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "checkpoint.npz",
        "training_loss.png",
        "test_accuracy.png",
    ):
        assert (out / name).is_file(), name


def test_digits_run_metric_columns(digits_run):
    out, _ = digits_run
    with open(out / "metrics.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == list(METRIC_COLUMNS)


def test_digits_run_rows_per_agent(digits_run):
    out, _ = digits_run
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == 3 * 4
    assert sorted({row["agent"] for row in rows}) == [0, 1, 2, 3]


def test_digits_run_config_resolved(digits_run):
    out, _ = digits_run
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["dataset"] == "digits"
    assert config["strategy"] == "exact"
    assert config["step_rule"] == "agd-shared"
    assert config["epochs"] == 3


def test_digits_run_prints_summary(digits_run):
    _, result = digits_run
    assert "test acc" in result.stdout
    assert result.stdout.count("%") == 4


def test_config_file_sets_options(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "strategy: approximate\nstep-rule: constant\nstep_size: 0.05\n"
        "epochs: 1\ntopology: complete\n"
    )
    out = tmp_path / "run"
    status = main(["train", "--config", str(config), "--out", str(out), "--quiet"])
    assert status == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["strategy"] == "approximate"
    assert resolved["step_size"] == 0.05
    assert resolved["topology"] == "complete"


def test_existing_run_directory_rejected(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    assert "already contains results" in capsys.readouterr().err


BAD_INPUTS = [
    (["--dataset", "mnist", "--data-dir", "{tmp}/missing"], "not found"),
    (["--agents", "0"], "agents"),
    (["--agents", "2000"], "agents"),
    (["--topology", "hypercube"], "Unknown topology"),
    (["--step-rule", "constant"], "--step-size"),
    (["--step-rule", "constant", "--step-size", "-1"], "step_size"),
    (["--step-size", "0.1"], "no effect"),
    (["--batch-size", "0"], "batch-size"),
    (["--epochs", "0"], "epochs"),
    (["--local-steps", "0"], "local-steps"),
    (["--topology", "{tmp}/no-such-edges.txt"], "edge"),
    (["--weights", "averaging", "--topology", "star"], "symmetric"),
    (["--config", "{tmp}/missing.yaml"], "config file"),
]


@pytest.mark.parametrize("arguments, expected", BAD_INPUTS)
def test_bad_input_clear_error(tmp_path, capsys, arguments, expected):
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    status = main(["train", "--quiet", "--out", str(tmp_path / "out"), *arguments])
    err = capsys.readouterr().err
    assert status == 2
    assert expected.lower() in err.lower()
    assert "Traceback" not in err


def test_corrupt_mnist_file_clear_error(tmp_path, capsys):
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x03garbage")
    status = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(tmp_path),
            "--quiet",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "train-images" in err


def test_sharing_pattern_matching_nothing(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("sharing:\n  trunk.*: shared\n  body.*: local\n  head.*: local\n")
    status = main(
        ["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "body.*" in err


def test_task_without_classes(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("tasks: [[0, 1, 2], []]\n")
    status = main(
        ["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "out")]
    )
    assert status == 2
    assert "class" in capsys.readouterr().err


def test_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 0.1\n")
    status = main(["train", "--config", str(config), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert "learning_rate" in err


def final_accuracies(out: Path) -> list[float]:
    rows = read_metrics(out / "metrics.csv")
    last_step = max(row["step"] for row in rows)
    return [row["test_accuracy"] for row in rows if row["step"] == last_step]


@pytest.mark.slow
def test_mnist_end_to_end(tmp_path, mnist_dir):
    out = tmp_path / "mnist"
    result = run_cli(
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        "--topology",
        "complete",
        "--epochs",
        "0.5",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    accuracies = final_accuracies(out)
    assert len(accuracies) == 4
    # Chance is 20% on five classes.
    assert min(accuracies) > 0.85


@pytest.mark.slow
def test_fashion_mnist_end_to_end(tmp_path, fashion_mnist_dir):
    out = tmp_path / "fashion"
    result = run_cli(
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(fashion_mnist_dir),
        "--topology",
        "ring",
        "--epochs",
        "0.5",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    accuracies = final_accuracies(out)
    assert len(accuracies) == 4
    assert min(accuracies) > 0.7


def test_failed_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(
        [
            "train",
            "--step-rule",
            "constant",
            "--step-size",
            "-1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 2
    assert not out.exists()


def test_overwrite_removes_old_results(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    (out / "summary.json").write_text("stale")
    status = main(
        ["train", "--epochs", "1", "--out", str(out), "--quiet", "--overwrite"]
    )
    assert status == 0
    assert (out / "summary.json").read_text() != "stale"


def test_saved_config_never_overwrites(tmp_path):
    out = tmp_path / "run"
    assert (
        main(["train", "--epochs", "1", "--out", str(out), "--quiet", "--overwrite"])
        == 0
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert "overwrite" not in saved


def test_cluster_list_wrong_length(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        "sharing:\n  trunk.*: {kind: clustered, clusters: [0, 1]}\n  head.*: local\n"
    )
    status = main(
        ["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "out")]
    )
    assert status == 2
    assert "clusters" in capsys.readouterr().err
