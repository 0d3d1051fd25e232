"""Firmware: an int8 model built as TFLite Micro firmware and run on an emulated Cortex-M4.

One real build and run (a small model of few operators, so few kernels: the cold TFLite Micro
build is a few minutes, cached afterwards): the microcontroller build, whose SUMs are computed as
all-ones FULLY_CONNECTED (`kcaps_tflite.cmsis_nn_int8`), held bit for bit against the host build
of the same model and of the model without that rewrite. Then the bad inputs, none of which
builds TFLite Micro.
"""
import pathlib
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from kcaps_tflite import convert, firmware, firmware_build, graph

MISSING = firmware.available()


def _tflm_missing():
    try:
        firmware_build.find_tflm()
    except firmware.TFLMSourcesError as error:
        return str(error)
    return None


TFLM_MISSING = _tflm_missing()
needs_toolchain = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def _tiny_model(real_digits):
    """Conv (stride 3: 8 x 8 x 8) -> dense of three features: the feature map, its sum over rows
    (a reduction over an axis that is not the last) and its squared length per pixel (over the
    last axis), trained one epoch on 4,000 real digits. Both sums count 8 elements, so both
    MEANs of the microcontroller build become all-ones FULLY_CONNECTED whatever the trained
    scales (`kcaps_tflite.cmsis_nn_int8`)."""
    inputs = tf.keras.Input(real_digits.x_train.shape[1:])
    h = tf.keras.layers.Conv2D(8, 5, strides=3, activation="relu")(inputs)
    rows = tf.keras.layers.Lambda(lambda t: tf.reduce_sum(t, axis=1))(h)
    squares = tf.keras.layers.Lambda(lambda t: tf.reduce_sum(t * t, axis=-1))(h)
    outputs = tf.keras.layers.Add()([tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(t))
                                     for t in (h, rows, squares)])
    model = tf.keras.Model(inputs, outputs)
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(real_digits.x_train[:4000], real_digits.y_train[:4000], epochs=1, batch_size=64,
              verbose=0)
    return model


@pytest.mark.slow
@needs_toolchain
def test_firmware_on_real_digits_equals_the_host_build_and_the_python_top1(real_digits,
                                                                          tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative output folder, as `kcaps firmware --output fw` gives
    model = _tiny_model(real_digits)
    calibration = real_digits.x_train[:100]
    data = convert.convert(model, "int8", representative_data=calibration, **convert.MICRO_BUILD)
    means = convert.convert(model, "int8", representative_data=calibration,
                            **{**convert.MICRO_BUILD, "cmsis_nn_forms": False})
    assert graph.read(means).op_counts()["MEAN"] == 2  # the two SUMs, as int8_sums writes them
    assert "MEAN" not in graph.read(data).op_counts()
    path = tmp_path / "tiny_int8.tflite"
    path.write_bytes(data)
    x, y = real_digits.x_test[:12], real_digits.y_test[:12]
    report = firmware.run(path, "mps2-an386", "cmsis_nn", x, y, output_dir="fw",
                          json_path=tmp_path / "firmware.json")

    agreement = report["agreement"]
    assert agreement["host_identical"] and agreement["host_differing_values"] == 0
    assert agreement["python_top1_agreement"] == 1.0
    # The outputs are the model's: their argmax follows the Keras model's on these digits.
    raw = np.fromfile(report["outputs_path"], np.int8).reshape(12, 10)
    keras_top1 = model.predict(x, verbose=0).argmax(-1)
    assert np.mean(raw.argmax(-1) == keras_top1) >= 10 / 12  # int8 vs float: rare near-ties
    # Same integers as the model before the rewrite: its host build (reference MEAN kernel).
    host = firmware.build_host(means, tmp_path / "host_means")
    before, *_ = firmware._run_program(host, firmware.quantize_inputs(means, x), timeout=120)
    np.testing.assert_array_equal(np.frombuffer(before, np.int8).reshape(12, 10), raw)

    # The rows' sum is a TRANSPOSE (rows last), an all-ones FULLY_CONNECTED and a RESHAPE; the
    # squared lengths a FULLY_CONNECTED and a RESHAPE; their count MULs are gone.
    # (the converter's order of the three dense branches and the two ADDs varies between runs)
    profiled = [r["op"] for r in report["profile"]["operators"]]
    assert profiled[0] == "CONV_2D" and profiled[-1] == "ADD"
    assert sorted(profiled) == sorted([
        "CONV_2D", "RESHAPE", "TRANSPOSE", "FULLY_CONNECTED", "RESHAPE", "RESHAPE", "MUL",
        "FULLY_CONNECTED", "RESHAPE", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED",
        "FULLY_CONNECTED", "ADD", "ADD"])
    cost = report["cost"]
    assert 1e4 < cost["instructions_min"] <= cost["instructions_per_inference"] < 1e8
    assert report["profile"]["profiled_instructions"] <= cost["instructions_max"]

    sizes = report["sizes"]
    parts = sizes["flash_parts"]
    assert parts["model"] == len(data)  # the byte array, in flash
    assert parts["cmsis_nn"] > 0 and parts["tflm"] > 0 and parts["c_library"] > 0
    assert 0 <= parts["padding"] < 1024
    assert sizes["arena_used_bytes"] <= sizes["ram_parts"]["arena"]
    assert sizes["ram_bytes"] == sum(sizes["ram_parts"].values())
    assert (tmp_path / "firmware.json").exists()


def test_unknown_board_and_kernels_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown board 'stm32'; valid boards: mps2-an386, "
                                         "mps2-an500, mps3-an547"):
        firmware.run(b"", "stm32", x=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="unknown kernels 'arm'; valid: cmsis_nn, reference"):
        firmware.build_firmware(b"", "mps2-an386", "arm")


def test_missing_toolchain_names_the_debian_packages(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(firmware.ToolchainMissingError,
                       match="gcc-arm-none-eabi, libnewlib-arm-none-eabi, "
                             "libstdc\\+\\+-arm-none-eabi-dev, qemu-system-arm"):
        firmware_build.check_toolchain("cortex-m4")


def test_missing_tflm_sources_name_the_directory_and_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(firmware.TFLMSourcesError, match=rf"{tmp_path}.*git clone "
                                                        r"https://github.com/tensorflow/"
                                                        r"tflite-micro"):
        firmware_build.find_tflm(tmp_path)
    monkeypatch.setenv("KCAPS_TFLM_DIR", str(tmp_path / "none"))
    with pytest.raises(firmware.TFLMSourcesError, match="none"):
        firmware_build.find_tflm()


@pytest.mark.skipif(TFLM_MISSING is not None, reason=str(TFLM_MISSING))
def test_an_operator_the_kernels_lack_is_named():
    methods, files = firmware_build.kernel_plan(["CONV_2D", "FULLY_CONNECTED"], "cmsis_nn")
    assert methods == {"CONV_2D": "AddConv2D", "FULLY_CONNECTED": "AddFullyConnected"}
    assert any(f.endswith("kernels/cmsis_nn/conv.cc") for f in files)
    _, reference = firmware_build.kernel_plan(["CONV_2D"], "reference")
    assert not any("cmsis_nn" in f for f in reference)
    # resolver methods without a default registration argument (they call Register_X() inside)
    methods, files = firmware_build.kernel_plan(["DYNAMIC_UPDATE_SLICE", "RESIZE_NEAREST_NEIGHBOR"],
                                                "reference")
    assert methods == {"DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice",
                       "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor"}
    assert any(f.endswith("kernels/dynamic_update_slice.cc") for f in files)
    with pytest.raises(firmware.FirmwareOpError, match="lack operator\\(s\\) TOPK_V2, SIGN"):
        firmware_build.kernel_plan(["CONV_2D", "TOPK_V2", "SIGN"], "cmsis_nn")


def test_a_model_larger_than_the_board_is_refused_with_sizes(tmp_path):
    inputs = tf.keras.Input((400,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(400)(inputs))  # 641 KB in float32
    path = tmp_path / "big.tflite"
    path.write_bytes(convert.convert(model, "float32"))
    size = path.stat().st_size
    with pytest.raises(firmware.FirmwareSizeError,
                       match=rf"big.tflite: the model alone is {size} bytes; mps3-an547 has "
                             rf"524288 bytes"):
        firmware.build_firmware(path, "mps3-an547")


def test_link_overflow_names_region_sizes():
    board = firmware.BOARDS.get("mps3-an547")
    error = firmware._overflow("ld: region `FLASH' overflowed by 1000 bytes\n", board, 500_000)
    assert isinstance(error, firmware.FirmwareSizeError)
    assert "flash: needs 525288 bytes, the board has 524288" in str(error)


def _bare_program(tmp_path, body):
    """A program on the kcaps start-up code alone (no TFLite Micro), for fault and hang checks."""
    source = tmp_path / "main.c"
    source.write_text(f"int main(void) {{ {body} }}\n")
    board = firmware.BOARDS.get("mps2-an386")
    script = firmware._linker_script(board, tmp_path / "link.ld", 64)
    flags = list(firmware_build.TARGETS.get("cortex-m4").cpu_flags)
    elf = tmp_path / "bare.elf"
    subprocess.run(["arm-none-eabi-gcc", *flags, "-O1", "-nostartfiles", "--specs=rdimon.specs",
                    "-T", str(script), str(source),
                    str(firmware_build.FIRMWARE_SOURCES / "startup.c"), "-o", str(elf)],
                   check=True, capture_output=True)
    return board, elf


@needs_toolchain
def test_a_hardfault_is_reported_with_its_registers(tmp_path):
    board, elf = _bare_program(tmp_path, "return *(volatile int *)0x70000000;")  # no memory there
    with pytest.raises(firmware.FirmwareCrashError, match=r"crashed: KCAPS_FAULT \w+Fault "
                                                          r"CFSR=0x[0-9a-f]{8}"):
        firmware.run_elf(board, elf, tmp_path, timeout=30)


@needs_toolchain
def test_a_hang_is_stopped_by_the_timeout(tmp_path):
    board, elf = _bare_program(tmp_path, "for (;;) {}")
    with pytest.raises(firmware.FirmwareTimeoutError, match="did not finish in 3 s"):
        firmware.run_elf(board, elf, tmp_path, timeout=3)


@needs_toolchain
def test_exit_status_and_output_come_back(tmp_path):
    board, elf = _bare_program(tmp_path, 'extern int printf(const char *, ...); '
                                         'printf("KCAPS samples 7\\n"); return 0;')
    assert "KCAPS samples 7" in firmware.run_elf(board, elf, tmp_path, timeout=30)
    board, elf = _bare_program(tmp_path, "return 5;")
    with pytest.raises(firmware.FirmwareCrashError, match="exit status 5"):
        firmware.run_elf(board, elf, tmp_path, timeout=30)


def test_map_sizes_count_merged_strings_once():
    text = """Linker script and memory map

.text           0x00000000      0x100
 .text.a        0x00000000       0x80 /c/libtflm_core.a(x.o)
 .text.b        0x00000080       0x80 /w/model_data.o
.rodata         0x00000100       0x40
 .rodata.s.str1.4
                0x00000100       0x30 /c/libtflm_core.a(x.o)
 .rodata.t.str1.4
                0x00000100       0x20 /c/libcmsis_nn.a(y.o)
 *fill*         0x00000130       0x10
.bss            0x20000000      0x200
 .bss.k         0x20000000      0x200 /w/harness.o
"""
    sections, parts = firmware.map_sizes(text)
    assert sections == {".text": 0x100, ".rodata": 0x40, ".bss": 0x200}
    assert parts == {"tflm": 0x80 + 0x30, "model": 0x80}  # the overlapped string counts once
