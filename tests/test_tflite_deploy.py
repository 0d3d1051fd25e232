"""The deployment commands and the README's main job end to end."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from kcaps_tflite import graph, micro
from tflite_helpers import trained_model, write
from kcaps_training import cli, deploy

pytestmark = pytest.mark.slow


def test_convert_command_converts_verifies_and_reports(tmp_path, capsys):
    model_path = tmp_path / "model.keras"
    trained_model().save(model_path)
    out = tmp_path / "model_int8.tflite"
    assert cli.main(["convert", str(model_path), "--precision", "int8", "--output", str(out),
                     "--calibration-samples", "50", "--verify-samples", "100"]) == 0
    printed = capsys.readouterr().out
    assert "top-1 agreement with Keras" in printed and "verified in LiteRT on 100" in printed
    assert graph.read(out).input_types == ("int8",)


def test_convert_command_fails_cleanly_on_a_missing_model(tmp_path, capsys):
    assert cli.main(["convert", str(tmp_path / "nope.keras")]) == 2
    assert "Keras model not found" in capsys.readouterr().err


def test_micro_command_reports_arena_budget_and_exports_c(tmp_path, capsys):
    path = write(tmp_path, "int8")
    assert cli.main(["micro", str(path), "--samples", "20", "--target", "mcu-256k-64k",
                     "--export", str(tmp_path / "fw"), "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "TFLite Micro arena" in printed and "mcu-256k-64k" in printed
    assert (tmp_path / "fw" / "model_data.cc").is_file()
    found = json.loads((tmp_path / "m.json").read_text())
    assert found["arena_bytes"] == micro.find_arena_size(path)
    assert cli.main(["micro", str(path), "--dataset", "", "--arena-size", "512"]) == 2
    assert "arena of 512 bytes is too small" in capsys.readouterr().err


def test_deploy_config_refuses_bad_values():
    with pytest.raises(ValueError, match="unknown precision"):
        deploy.DeployConfig(precisions=("int3",))
    with pytest.raises(ValueError, match="unknown target 'esp8266'"):
        deploy.DeployConfig(targets=("esp8266",))
    with pytest.raises(ValueError, match="`num_runs` must be an integer >= 1"):
        deploy.DeployConfig(num_runs=0)


def test_quickstart_trains_converts_checks_benchmarks_and_reports(tmp_path):
    """The README's main job (`./scripts/quickstart` runs `kcaps quickstart`), three epochs
    (after one, near-ties between capsule lengths make int8 agreement noisy)."""
    out = tmp_path / "quickstart"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "kcaps_training", "quickstart", "--epochs", "3",
                             "--output", str(out)], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.keras", "report.md", "comparison.png", "metrics.json",
                 "micro/model_data.cc", "micro/model_data.h",
                 *(f"tflite/small_capsnet_{p}.tflite" for p in deploy.DeployConfig.precisions),
                 "benchmarks/int8_1threads.json", "benchmarks/float32_2threads.json",
                 "benchmarks/int8_op_profile.txt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0  # training metrics kept
    d = metrics["deployment"]
    assert set(d["conversions"]) == set(deploy.DeployConfig.precisions)
    assert all(c["passed"] for c in d["conversions"].values())
    assert d["micro"]["arena_bytes"] > 0 and d["micro"]["samples"] > 0
    assert {b["target"] for b in d["micro"]["budgets"]} == set(micro.TARGETS)
    assert 0 < d["routing_profile"]["int8"]["routing_share"] < 1
    latency = {v["precision"]: v["latency_us"] for v in d["variants"]}
    assert all(latency[p]["1"] > 0 and latency[p]["2"] > 0 for p in latency)
    report = (out / "report.md").read_text()
    for heading in ("## Variants", "## TFLite Micro (int8)", "## Benchmark tool results",
                    "## Where the time goes"):
        assert heading in report
    assert "deployment outputs in" in result.stdout
