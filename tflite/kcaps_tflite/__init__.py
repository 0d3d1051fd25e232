"""kcaps_tflite: deploy kcaps models to phones and microcontrollers.

Named so as not to shadow PyPI's `tflite` package. It imports `kcaps` (to load capsule layers),
never `kcaps_training` (the application calls it with paths and arrays).

- `convert`: Keras model or saved file -> `.tflite` (float32, float16, dynamic, int8, binary)
- `verify`: run in the LiteRT interpreter next to Keras; top-1 agreement, length differences
- `micro`: TFLite Micro op coverage, smallest arena, budgets, agreement with LiteRT
- `c_export`: `model_data.cc` / `.h` for firmware
- `benchmark`: the TFLite benchmark tool's method and flags (host engine or the real binary)
- `profile`: per-operator latency from LiteRT's profiler; the routing's share
- `report`: the deployment report (report.md, comparison.png, deployment.json), written once
- `pipeline`: a saved model file -> phone variants and the microcontroller int8 build, verified,
  TFLite Micro, C export, firmware hook, benchmark, report (`kcaps deploy`, `kcaps quickstart`)
- `firmware`, `firmware_build`: the int8 model as TFLite Micro firmware on emulated Cortex-M
  boards (QEMU): build (cached), run, instructions, sizes, agreement (`kcaps firmware`)
- `lce`: binary conversion of larq models and LCE's interpreter
- `xnnpack_int8`: int8 forms that LiteRT's XNNPACK engine runs in int8 (first conv, matmuls)
- `int8_sums`, `cmsis_nn_int8`: the microcontroller build's SUMs as MEAN x count, and those MEANs
  as all-ones FULLY_CONNECTED that CMSIS-NN accelerates, with the same integers
- `graph`, `float_islands`, `files`: what a flatbuffer holds, TFLite-Micro-ready int8, safe files

Submodules load on first use, so the benchmark tool's child processes
(`python -m kcaps_tflite._host_benchmark`) start without TensorFlow, whose memory they would
otherwise count.
"""
import importlib

__all__ = ["benchmark", "c_export", "cmsis_nn_int8", "convert", "files", "firmware",
           "firmware_build", "float_islands", "graph", "int8_sums", "lce", "micro", "pipeline",
           "profile", "report", "verify", "xnnpack_int8"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"kcaps_tflite.{name}")
    raise AttributeError(f"module 'kcaps_tflite' has no attribute {name!r}")
