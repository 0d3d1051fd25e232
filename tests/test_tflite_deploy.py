"""The deployment pipeline from a saved file, the deployment commands, and the README's main job."""
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import kcaps
from conftest import ROOT
from kcaps_tflite import convert, firmware, graph, micro, pipeline, verify
from tflite_helpers import digits, trained_model, write
from kcaps_training import cli

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


def test_pipeline_config_refuses_bad_values():
    with pytest.raises(ValueError, match="unknown precision"):
        pipeline.PipelineConfig(precisions=("int3",))
    with pytest.raises(ValueError, match="unknown target 'esp8266'"):
        pipeline.PipelineConfig(targets=("esp8266",))
    with pytest.raises(ValueError, match="`num_runs` must be an integer >= 1"):
        pipeline.PipelineConfig(num_runs=0)
    with pytest.raises(ValueError, match="`threads` must be integers >= 1"):
        pipeline.PipelineConfig(threads=(0,))


def test_firmware_stage_is_auto_by_default_and_refused_without_the_toolchain(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no arm-none-eabi-gcc, no qemu-system-arm here
    assert pipeline.firmware_stage(pipeline.PipelineConfig(firmware="off")) == \
        (False, "off (PipelineConfig.firmware / kcaps deploy --firmware)")
    assert pipeline.PipelineConfig().firmware == "auto"
    runs, why = pipeline.firmware_stage(pipeline.PipelineConfig())
    assert not runs and "arm-none-eabi-gcc" in why and "qemu-system-arm" in why
    with pytest.raises(ValueError, match="lacks .*arm-none-eabi-gcc, qemu-system-arm"):
        pipeline.firmware_stage(pipeline.PipelineConfig(firmware="on"))
    with pytest.raises(ValueError, match="runs the microcontroller build"):
        pipeline.firmware_stage(pipeline.PipelineConfig(firmware="on", micro_build=False))


def test_quickstart_with_firmware_on_and_no_toolchain_stops_before_training(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "run"
    assert cli.main(["quickstart", "--firmware", "on", "--output", str(out)]) == 2
    assert "lacks" in capsys.readouterr().err and not out.exists()


def _calibration(count):
    return convert.calibration_sample(digits().x_train, count, 0)


def test_pipeline_from_a_saved_file_builds_checks_analyses_the_micro_build_and_reports(
        tmp_path, monkeypatch):
    path = tmp_path / "model.keras"
    trained_model().save(path)
    # The firmware stage through the real kcaps_tflite.firmware.run_firmware, with a stand-in for
    # the emulator run (`firmware.run`, tested in test_firmware.py): it records what the pipeline
    # hands it and returns a report of the real shape, whose figures the report must carry.
    calls = []

    def run(model_path, board, kernels, x, y, log, output_dir=None):
        calls.append((open(model_path, "rb").read(), board, kernels, np.array(x), np.array(y),
                      output_dir))
        return {"cost": {"instructions_per_inference": 1234567.0},
                "sizes": {"flash_bytes": 300000, "flash_parts": {"model": 190000, "tflm": 30000,
                                                                 "kernels_total": 80000},
                          "ram_bytes": 90000, "arena_used_bytes": 57000},
                "agreement": {"host_identical": True, "python_top1_agreement": 1.0,
                              "python_max_lsb_difference": 3},
                "profile": {"routing_share": 0.25}}

    monkeypatch.setattr(firmware, "run", run)
    monkeypatch.setattr(pipeline, "firmware_missing", lambda: [])
    data = digits()
    config = pipeline.PipelineConfig(precisions=("float32", "int8"), threads=(1,), num_runs=5,
                                     warmup_runs=1, micro_samples=20, verify_samples=100,
                                     calibration_samples=50, firmware="auto", firmware_samples=3)
    lines = []
    d = pipeline.run(path, tmp_path / "out", data.x_train, data.x_test, data.y_test, config,
                     data_description="digits", log=lines.append)
    out = tmp_path / "out"
    tflite = {b: out / "tflite" / f"small_capsnet_{b}.tflite"
              for b in ("float32", "int8", "int8_micro")}
    for name in ("report.md", "comparison.png", "deployment.json", "micro/model_data.h",
                 "micro/model_data.cc", "benchmarks/int8_micro_1threads.json",
                 "benchmarks/int8_op_profile.txt", *tflite.values()):
        assert (out / name).is_file(), name
    # written once, from the dict returned
    assert json.loads((out / "deployment.json").read_text())["builds"]["int8"]["size_bytes"] == \
        d["builds"]["int8"]["size_bytes"]
    # converted from the file: its hash, and the same bytes as converting the file directly
    assert d["model_file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    direct = convert.convert(path, "int8", representative_data=_calibration(50),
                             **convert.MICRO_BUILD)
    assert tflite["int8_micro"].read_bytes() == direct
    assert tflite["int8"].read_bytes() != direct
    assert d["builds"]["int8_micro"]["options"] == convert.MICRO_BUILD
    assert all(b["verification"]["passed"] for b in d["builds"].values())
    # TFLite Micro: both int8 builds analysed, the microcontroller build is the one reported
    assert d["microcontroller_build"] == "int8_micro" and set(d["micro"]) == {"int8", "int8_micro"}
    arena = micro.find_arena_size(tflite["int8_micro"])
    assert d["micro"]["int8_micro"]["arena_bytes"] == arena
    assert d["micro"]["int8"]["arena_bytes"] == micro.find_arena_size(tflite["int8"])
    assert d["micro"]["int8_micro"]["samples"] == 20
    source = (out / "micro" / "model_data.cc").read_text()
    assert f"g_model_data_len = {len(direct)};" in source
    report = (out / "report.md").read_text()
    section = report.split("## TFLite Micro: the microcontroller build (`int8_micro`)")[1]
    assert f"smallest working arena {arena:,} bytes" in section.split("##")[0]
    side_by_side = report.split("## The int8 builds side by side")[1].split("##")[0]
    assert "| | `int8` | `int8_micro` |" in side_by_side
    for row in ("TFLite Micro arena (KB)", "fits mcu-256k-64k", "top-1 agreement with Keras",
                "TFLite Micro vs LiteRT (XNNPACK)"):
        assert row in side_by_side
    # the firmware hook got the microcontroller build and the first images
    assert len(calls) == 1 and calls[0][0] == direct
    assert calls[0][1:3] == ("mps2-an386", "cmsis_nn")
    np.testing.assert_array_equal(calls[0][3], data.x_test[:3])
    np.testing.assert_array_equal(calls[0][4], data.y_test[:3])
    assert calls[0][5] == out / "firmware"
    assert d["firmware"]["status"] == "ran" and d["firmware"]["build"] == "int8_micro"
    assert d["firmware"]["instructions_per_inference"] == 1234567
    assert d["firmware"]["flash_kernels_bytes"] == 80000
    assert "| instructions_per_inference | 1234567 |" in report
    assert d["benchmarks"]["int8_micro@1"]["inference_us"]["avg"] > 0
    assert 0 < d["routing_profile"]["int8"]["routing_share"] < 1
    assert any(line.startswith("TFLite Micro, int8_micro: arena") for line in lines)


def test_a_firmware_failure_is_recorded_under_auto_and_stops_the_pipeline_under_on(
        tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise firmware.FirmwareCrashError("HardFault: PC 0x1234")

    monkeypatch.setattr(firmware, "run", crash)
    x = np.zeros((4, 28, 28, 1), np.float32)
    section = pipeline._firmware(tmp_path / "m.tflite", x, None, pipeline.PipelineConfig(),
                                 tmp_path / "fw", log=lambda _: None)
    assert section["status"] == "failed: HardFault: PC 0x1234"
    assert section["board"] == "mps2-an386"
    with pytest.raises(firmware.FirmwareCrashError, match="HardFault"):
        pipeline._firmware(tmp_path / "m.tflite", x, None, pipeline.PipelineConfig(firmware="on"),
                           tmp_path / "fw", log=lambda _: None)


def test_pipeline_config_names_a_bad_firmware_board_or_kernel_set():
    with pytest.raises(ValueError, match="unknown firmware board 'stm32'; valid: mps2-an386"):
        pipeline.PipelineConfig(firmware_board="stm32")
    with pytest.raises(ValueError, match="unknown firmware kernels 'fast'; valid: cmsis_nn"):
        pipeline.PipelineConfig(firmware_kernels="fast")


def test_pipeline_refuses_a_model_in_memory_and_a_missing_file(tmp_path):
    data = digits()
    with pytest.raises(TypeError, match="starts from a saved model file"):
        pipeline.run(trained_model(), tmp_path, data.x_train, data.x_test)
    with pytest.raises(FileNotFoundError, match="Keras model not found"):
        pipeline.run(tmp_path / "nope.keras", tmp_path, data.x_train, data.x_test)


def _nan_model(tmp_path):
    model = kcaps.models.small_capsnet(conv_filters=(4, 8), capsule_types=2)
    model.set_weights([np.full(w.shape, np.nan, w.dtype) for w in model.get_weights()])
    path = tmp_path / "nan.keras"
    model.save(path)
    return model, path


def test_a_nan_weight_model_is_refused_naming_precision_and_count(tmp_path):
    model, path = _nan_model(tmp_path)
    x = digits().x_test[:20]
    flatbuffer = convert.convert(model, "int8", representative_data=x)
    with pytest.raises(verify.VerificationError,
                       match=r"int8 verification failed: 200 of 200 outputs of the Keras model "
                             r"are not finite"):
        verify.verify(model, flatbuffer, x, precision="int8")
    # a converted model's own non-finite outputs, against finite Keras outputs
    scores = model.predict(x, verbose=0)
    finite = np.ones_like(scores)
    tflite = finite.copy()
    tflite[3, 2], tflite[7] = np.inf, np.nan
    with pytest.raises(verify.VerificationError,
                       match=r"float16 verification failed: 11 of 200 outputs of the float16 "
                             r"model are not finite \(NaN or Inf\)"):
        verify.verify(model, flatbuffer, x, precision="float16", keras_scores=finite,
                      tflite_scores=tflite)
    # the pipeline stops there: no build, no report
    data = digits()
    config = pipeline.PipelineConfig(precisions=("int8",), micro_build=False, verify_samples=20,
                                     calibration_samples=20, profile=False)
    with pytest.raises(verify.VerificationError, match=r"int8 verification failed: 200 of 200"):
        pipeline.run(path, tmp_path / "out", data.x_train, data.x_test, data.y_test, config)
    assert not (tmp_path / "out" / "report.md").exists()
    assert not (tmp_path / "out" / "tflite").exists()


def test_quickstart_trains_saves_and_deploys_the_saved_file(tmp_path):
    """The README's main job (`./scripts/quickstart` runs `kcaps quickstart`), three epochs
    (after one, near-ties between capsule lengths make int8 agreement noisy)."""
    out = tmp_path / "quickstart"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # --firmware off: the firmware stage is tested in tests/test_firmware.py (one TFLM build per
    # CI run; building small_capsnet's kernels here too would add minutes on a fresh machine)
    result = subprocess.run([sys.executable, "-m", "kcaps_training", "quickstart", "--epochs", "3",
                             "--firmware", "off", "--output", str(out)], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    builds = (*pipeline.PipelineConfig.precisions, pipeline.MICRO_BUILD_NAME)
    for name in ("model.keras", "report.md", "comparison.png", "metrics.json", "deployment.json",
                 "micro/model_data.cc", "micro/model_data.h",
                 *(f"tflite/small_capsnet_{b}.tflite" for b in builds),
                 "benchmarks/int8_1threads.json", "benchmarks/float32_2threads.json",
                 "benchmarks/int8_op_profile.txt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0 and "deployment" not in metrics  # training's own file
    d = json.loads((out / "deployment.json").read_text())
    assert d["model_file"] == str(out / "model.keras")
    assert d["model_file_sha256"] == hashlib.sha256((out / "model.keras").read_bytes()).hexdigest()
    assert set(d["builds"]) == set(builds)
    assert all(b["verification"]["passed"] for b in d["builds"].values())
    assert d["microcontroller_build"] == "int8_micro"
    m = d["micro"]["int8_micro"]
    assert m["arena_bytes"] == micro.find_arena_size(out / "tflite/small_capsnet_int8_micro.tflite")
    assert m["samples"] > 0 and {b["target"] for b in m["budgets"]} == set(micro.TARGETS)
    assert d["firmware"]["status"].startswith("off")
    latency = {v["precision"]: v["latency_us"] for v in d["variants"]}
    assert all(latency[b]["1"] > 0 and latency[b]["2"] > 0 for b in latency)
    report = (out / "report.md").read_text()
    for heading in ("## Builds", "## The int8 builds side by side",
                    "## TFLite Micro: the microcontroller build (`int8_micro`)",
                    "## Firmware on an emulated Cortex-M", "## Benchmark tool results",
                    "## Where the time goes"):
        assert heading in report
    assert re.search(r"deployment of .*model\.keras", result.stdout)
    assert "deployment outputs in" in result.stdout
