"""TFLite Micro: op coverage, the smallest arena, budgets, agreement with LiteRT, C export."""
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.tools import flatbuffer_utils

import kcaps
from kcaps_tflite import c_export, convert, files, micro, verify
from tflite_helpers import eval_images, flatbuffer, representative

pytestmark = pytest.mark.slow


def test_the_runtime_kernel_list_is_read_from_the_library():
    kernels = micro.micro_kernels()
    assert {"CONV_2D", "BATCH_MATMUL", "SOFTMAX", "RSQRT", "QUANTIZE", "DEQUANTIZE"} <= kernels
    assert "SIGN" not in kernels and "TOPK_V2" not in kernels  # absent from TFLite Micro


def test_smallest_arena_is_minimal_and_smaller_arenas_are_refused():
    data = flatbuffer("int8")
    arena = micro.find_arena_size(data)
    assert arena % micro.ARENA_ALIGNMENT == 0
    x = np.zeros((1, 28, 28, 1), np.int8)
    interpreter = micro.MicroInterpreter(data, arena)
    interpreter.invoke(x)
    assert interpreter.arena_used_bytes() <= arena
    with pytest.raises(micro.ArenaTooSmallError, match=rf"arena of {arena - 16} bytes is too small"):
        micro.MicroInterpreter(data, arena - 16).invoke(x)
    with pytest.raises(micro.ArenaTooSmallError, match="arena of 1000 bytes is too small"):
        micro.MicroInterpreter(data, 1000)


def test_int8_model_agrees_with_litert_on_real_digits():
    x, y = eval_images(100)
    report = micro.analyze(flatbuffer("int8"), x, y)
    assert report.samples == 100
    assert report.agreement_with_litert >= 0.98
    assert abs(report.accuracy - report.litert_accuracy) <= 0.02
    assert report.float_operators == [f"SQRT#{_sqrt_index()}"]
    assert report.op_counts["BATCH_MATMUL"] == 5  # projection + 2 x (s_j, agreement)


def _sqrt_index():
    from kcaps_tflite import graph

    return next(op.index for op in graph.read(flatbuffer("int8")).operators if op.name == "SQRT")


def test_micro_outputs_are_the_dequantized_int8_outputs():
    x, _ = eval_images(3)
    interpreter = micro.MicroInterpreter(flatbuffer("int8"), 200_000)
    scale, zero_point = interpreter._params(interpreter.output_details)
    q_in = verify.quantize(x[:1], verify.load_interpreter(flatbuffer("int8")).get_input_details()[0])
    raw = interpreter.invoke(q_in)
    assert raw.dtype == np.int8
    np.testing.assert_allclose(interpreter.predict(x[:1]), (raw.astype(np.float32) - zero_point)
                               * scale)


def test_a_model_with_ops_tflite_micro_lacks_is_refused_by_name(tmp_path):
    x = tf.keras.Input((8,))
    model = tf.keras.Model(x, tf.keras.layers.Lambda(tf.math.sign)(x))
    path = tmp_path / "sign.tflite"
    path.write_bytes(convert.convert(model, "float32"))
    with pytest.raises(micro.MicroOpError, match=r"sign.tflite: TFLite Micro has no kernel for "
                                                 r"operator\(s\) SIGN"):
        micro.check_ops(path)
    with pytest.raises(micro.MicroOpError, match="SIGN"):
        micro.MicroInterpreter(path, 10_000)
    with pytest.raises(micro.MicroOpError, match="SIGN"):
        micro.find_arena_size(path)


def test_an_int8_op_tflite_micro_runs_in_float_only_is_named():
    plain = flatbuffer("int8", micro_compatible=False)  # SQRT left in int8
    with pytest.raises(micro.MicroOpError, match=r"SQRT kernel \(operator \d+\) failed to invoke "
                                                 r"on int8 inputs"):
        micro.MicroInterpreter(plain, 200_000).invoke(np.zeros((1, 28, 28, 1), np.int8))


def test_budget_check_against_named_targets():
    fits = micro.check_budget(200 * 1024, 60 * 1024, "mcu-256k-64k")
    assert fits["fits"] and fits["flash_headroom_bytes"] == 56 * 1024
    too_big = micro.check_budget(300 * 1024, 10, "mcu-256k-64k")
    assert not too_big["fits"] and too_big["flash_headroom_bytes"] < 0
    assert not micro.check_budget(10, 330 * 1024, "cortex-m7")["fits"]
    with pytest.raises(ValueError, match="unknown target 'esp32'"):
        micro.check_budget(1, 1, "esp32")


def test_c_export_round_trips_and_compiles(tmp_path):
    data = flatbuffer("int8")
    header, source = c_export.export_c(data, tmp_path / "firmware")
    assert flatbuffer_utils.xxd_output_to_bytes(source) == data  # LiteRT's own xxd reader
    text = source.read_text()
    assert "alignas(16) const unsigned char g_model_data[]" in text
    assert f"const unsigned int g_model_data_len = {len(data)};" in text
    assert "extern const unsigned char g_model_data[];" in header.read_text()
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the exported source")
    main = tmp_path / "firmware" / "main.cc"
    main.write_text(
        '#include <cstdint>\n#include <cstring>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 1;\n"
        "  if (std::memcmp(g_model_data + 4, \"TFL3\", 4) != 0) return 2;\n"
        f"  return g_model_data_len == {len(data)}u ? 0 : 3;\n}}\n")
    binary = tmp_path / "firmware" / "check"
    subprocess.run([compiler, "-std=c++17", "-O0", str(main), str(source), "-o", str(binary)],
                   check=True, capture_output=True, timeout=120)
    assert subprocess.run([str(binary)]).returncode == 0


def test_c_export_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="not a C identifier"):
        c_export.export_c(flatbuffer("int8"), tmp_path, name="model-data")
    with pytest.raises(files.TFLiteFileError):
        c_export.export_c(b"not a model", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_small_capsnet_int8_fits_256k_flash_128k_arena_with_litert_top1(real_digits):
    """The issue's target: small_capsnet in int8 on a 256 KB-flash / 128 KB-arena MCU."""
    tf.keras.utils.set_random_seed(0)
    model = kcaps.models.small_capsnet()
    model.compile(tf.keras.optimizers.Adam(1e-3))
    model.fit(real_digits.x_train[:3000], real_digits.y_train[:3000], batch_size=64, epochs=1,
              verbose=0)
    data = convert.convert(model, "int8", representative_data=real_digits.x_train[:100])
    report = micro.analyze(data, real_digits.x_test[:300], real_digits.y_test[:300],
                           targets=("mcu-256k-128k",))
    assert report.model_bytes <= 256 * 1024
    assert report.arena_bytes <= 128 * 1024
    assert report.budgets[0]["fits"]
    assert report.agreement_with_litert >= 0.99
    # One short epoch: the model has learned (chance is 10%), and TFLite Micro scores as LiteRT.
    assert report.accuracy >= 0.5
    assert abs(report.accuracy - report.litert_accuracy) <= 0.01
