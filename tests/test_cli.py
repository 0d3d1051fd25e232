import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import kcaps
from crash import Interrupt, StopAfter
from conftest import ROOT
from kcaps_training import cli
from kcaps_training import train as recipe


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "kcaps_training", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


def test_help_lists_the_training_flags():
    result = _run("train", "--help")
    assert result.returncode == 0
    for flag in ("--model", "--dataset", "--epochs", "--batch-size", "--learning-rate", "--output"):
        assert flag in result.stdout


@pytest.mark.slow
def test_train_end_to_end_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    result = _run("train", "--dataset", "digits", "--epochs", "2", "--batch-size", "128",
                  "--output", str(out), "--verbose", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test accuracy" in result.stdout
    assert "[==============================]" in result.stdout  # the Keras progress bar
    for name in ("model.keras", "metrics.json", "log.csv", "training_curves.png", "config.json"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert not any((out / "backup").iterdir())  # BackupAndRestore cleans up after a finished run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and 0.0 <= metrics["test_accuracy"] <= 1.0
    model = tf.keras.models.load_model(out / "model.keras")
    assert model.count_params() == metrics["parameters"]

    # the same command again: the run is finished, nothing trains and no file changes
    before = {name: (out / name).read_bytes() for name in ("log.csv", "metrics.json")}
    args = ["train", "--dataset", "digits", "--epochs", "2", "--batch-size", "128", "--output",
            str(out), "--verbose", "0"]
    assert cli.main(args) == 0
    assert "already finished" in capsys.readouterr().out
    assert before == {name: (out / name).read_bytes() for name in before}
    # other settings into the same directory: refused, naming the field
    assert cli.main([*args[:4], "3", *args[5:]]) == 2
    assert "holds a run of another config ({'epochs': (2, 3)}" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (("--dataset", "svhn"), "unknown dataset 'svhn'"),
    (("--model", "lenet"), "unknown model 'lenet'"),
    (("--epochs", "0"), "`epochs` must be a positive integer, got 0"),
    (("--learning-rate", "-1"), "`learning_rate` must be > 0"),
    (("--dataset", "idx", "--data-dir", "/nonexistent/dir"), "idx directory not found"),
])
def test_bad_arguments_fail_before_training_with_a_clear_message(args, message, capsys, tmp_path):
    assert cli.main(["train", "--output", str(tmp_path / "x"), *args]) == 2
    assert message in capsys.readouterr().err


def _tiny_digits():
    from kcaps_training import datasets

    full = datasets.load("digits")
    return datasets.Dataset("digits", full.x_train[:256], full.y_train[:256], full.x_test[:64],
                            full.y_test[:64], 10)


def _log_epochs(out):
    return [line.split(",")[0] for line in (out / "log.csv").read_text().splitlines()[1:]]


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    data = _tiny_digits()
    config = recipe.TrainConfig(epochs=3, batch_size=64, output_dir=str(tmp_path), verbose=0)
    with pytest.raises(Interrupt):
        recipe.train(config, callbacks=[StopAfter(epoch=1)], data=data)
    assert any((tmp_path / "backup").iterdir())
    assert not (tmp_path / "metrics.json").exists()
    result = recipe.train(config, data=data)
    assert result.metrics["epochs_run"] == 1  # only epoch 3 was left
    assert _log_epochs(tmp_path) == ["0", "1", "2"]
    assert np.isclose(result.history["lr"][0], 1e-3 * 0.9 ** 2)  # the schedule resumed too
    # metrics.json (and the curves drawn from it) hold the whole run, as log.csv does
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and len(metrics["history"]["loss"]) == 3
    np.testing.assert_allclose(metrics["history"]["lr"], [1e-3, 9e-4, 8.1e-4], rtol=1e-6)


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again_unless_overwritten(tmp_path):
    data = _tiny_digits()
    config = recipe.TrainConfig(epochs=2, batch_size=64, output_dir=str(tmp_path), verbose=0)
    first = recipe.train(config, data=data)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert set(files) == {"config.json", "log.csv", "metrics.json", "model.keras",
                          "training_curves.png"}

    again = recipe.train(config, data=data)  # the rerun of a finished run
    assert again.already_finished and again.history == {}
    assert again.metrics == json.loads(files["metrics.json"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files
    x = data.x_test[:8]
    np.testing.assert_allclose(kcaps.models.classifier(again.model).predict(x, verbose=0),
                               kcaps.models.classifier(first.model).predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)

    longer = recipe.TrainConfig(epochs=3, batch_size=64, output_dir=str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match=r"holds a run of another config \(\{'epochs': \(2, 3\)\}"):
        recipe.train(longer, data=data)

    # --overwrite: fresh files, from epoch 1, even over an interrupted run's backup
    with pytest.raises(Interrupt):
        recipe.train(longer, callbacks=[StopAfter(epoch=0)], data=data, overwrite=True)
    assert _log_epochs(tmp_path) == ["0"] and not (tmp_path / "metrics.json").exists()
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 3
    result = recipe.train(longer, data=data, overwrite=True)
    assert result.metrics["epochs_run"] == 3 and _log_epochs(tmp_path) == ["0", "1", "2"]
    assert len(result.metrics["history"]["loss"]) == 3


def test_python_dash_m_training_runs_the_same_cli():
    assert _run("--help").returncode == 0


# Every subcommand of `kcaps` and every flag it had when the deployment commands moved into this
# module (issue 16); new flags may join, none may leave.
SUBCOMMAND_FLAGS = {
    "benchmark": ["--enable_op_profiling", "--graph", "--json", "--num_runs", "--num_threads",
                  "--parse", "--tool", "--use_xnnpack", "--warmup_runs"],
    "convert": ["--calibration-samples", "--data-dir", "--dataset", "--for-micro",
                "--min-agreement", "--output", "--precision", "--seed", "--verify-samples",
                "model"],
    "deploy": ["--data-dir", "--dataset", "--micro-samples", "--num-runs", "--output",
               "--precisions", "model", "--firmware", "--firmware-board", "--firmware-kernels"],
    "firmware": ["--board", "--cross-check", "--data-dir", "--dataset", "--json", "--kernels",
                 "--output", "--samples", "--tflm-dir", "--timeout", "model"],
    "heads": ["--backbones", "--bn-momentum", "--classes", "--data-dir", "--dataset", "--epochs",
              "--heads", "--input-shape", "--multimnist", "--routing-iterations", "--seed",
              "--train-samples", "--upsample", "--verbose"],
    "micro": ["--arena-size", "--data-dir", "--dataset", "--export", "--json", "--samples",
              "--target", "model"],
    "prune": ["--batch-size", "--criterion", "--data-dir", "--dataset", "--epochs",
              "--layer-ratio", "--learning-rate", "--max-shift", "--output", "--ratio",
              "--samples", "--seed", "--verbose", "model_path"],
    "quickstart": ["--adabatch-size", "--batch-policy", "--batch-size", "--cpu-replicas",
                   "--data-dir", "--dataset", "--decay-steps", "--decoder", "--epochs",
                   "--learning-rate", "--lr-decay", "--lr-policy", "--max-shift", "--model",
                   "--output", "--precision", "--routing-iterations", "--seed",
                   "--sharing-order", "--squash", "--steps-per-execution", "--strategy",
                   "--verbose", "--warm-batch-size", "--warm-epochs", "--weight-sharing",
                   "--firmware", "--firmware-board", "--firmware-kernels"],
    "sweep": ["--accuracy-metric", "--adabatch-size", "--batch-policy", "--batch-size",
              "--cpu-replicas", "--data-dir", "--dataset", "--decay-steps", "--decoder",
              "--epochs", "--grid", "--learning-rate", "--lr-decay", "--lr-policy", "--max-shift",
              "--model", "--output", "--precision", "--routing-iterations", "--seed",
              "--sharing-order", "--squash", "--steps-per-execution", "--strategy",
              "--time-metric", "--verbose", "--warm-batch-size", "--warm-epochs",
              "--weight-sharing"],
}
SUBCOMMAND_FLAGS["train"] = [f for f in SUBCOMMAND_FLAGS["quickstart"] if "firmware" not in f]


def test_every_subcommand_and_flag_is_still_there(capsys):
    import argparse

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(SUBCOMMAND_FLAGS) <= set(commands.choices)
    for name, flags in SUBCOMMAND_FLAGS.items():
        found = {option for action in commands.choices[name]._actions
                 for option in (action.option_strings or [action.dest])}
        assert set(flags) <= found, (name, sorted(set(flags) - found))
        with pytest.raises(SystemExit) as exit_:  # `kcaps NAME --help` prints every flag
            parser.parse_args([name, "--help"])
        assert exit_.value.code == 0
        printed = capsys.readouterr().out
        assert all(flag in printed for flag in flags if flag.startswith("--")), name


def test_argument_parsing_lives_in_the_cli_module_only():
    sources = [*(ROOT / "tflite" / "kcaps_tflite").glob("*.py"),
               *(ROOT / "training" / "kcaps_training").glob("*.py")]
    parsers = sorted(p.name for p in sources
                     if "add_parser(" in p.read_text() or "ArgumentParser(" in p.read_text())
    assert parsers == ["cli.py"]
    # the deployment package parses no flags and imports nothing of the application
    import ast

    for path in (ROOT / "tflite" / "kcaps_tflite").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("argparse", "kcaps_training")], \
                (path.name, names)
