"""Convert Keras models to TFLite and time them with LiteRT's official benchmark tool.

The tool is `python -m ai_edge_litert.tools.benchmark_litert_model` (XNNPACK on CPU); its flags
are passed through unchanged. (The project's deployment package wraps the same tool; the
benchmarks call it directly so they depend on nothing but the converter and ai-edge-litert.)
"""
import json
import os
import subprocess
import sys
import tempfile

import tensorflow as tf


def convert(model, path, batch_size=1, optimizations=()):
    """Write a float TFLite file of `model` with a fixed batch size; return its size in bytes."""
    specs = [tf.TensorSpec([batch_size, *t.shape[1:]], t.dtype) for t in model.inputs]
    function = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function(*specs)], model)
    converter.optimizations = list(optimizations)
    with open(path, "wb") as f:
        f.write(converter.convert())
    return os.path.getsize(path)


def benchmark(path, num_threads=1, warmup_runs=5, num_runs=50):
    """Run the official LiteRT benchmark tool on `path`; return its result JSON (latency in ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        command = [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model",
                   "--model", path, "--num_threads", str(num_threads),
                   "--warmup_runs", str(warmup_runs), "--num_runs", str(num_runs),
                   "--result_json", result]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0 or not os.path.exists(result):
            raise RuntimeError(f"benchmark tool failed on {path}:\n{run.stdout[-2000:]}\n"
                               f"{run.stderr[-2000:]}")
        with open(result) as f:
            return json.load(f)


def op_names(path):
    """The builtin op names of a TFLite file, in execution order (checks DENSIFY etc.)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    return [op["op_name"] for op in interpreter._get_ops_details()]
