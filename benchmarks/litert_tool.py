"""Convert Keras models to TFLite and time them with LiteRT's official benchmark tool.

Timing and op lists come from `kcaps_tflite` (the official tool's Python port that
ai-edge-litert ships, XNNPACK on CPU); only the conversion is the benchmarks' own, because it
fixes the batch size (to time a whole batch) and passes converter optimizations (2:4 sparsity).
"""
import os

import tensorflow as tf

from kcaps_tflite import benchmark as tflite_benchmark, graph


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
    """Time `path` with the benchmark tool through `kcaps_tflite.benchmark`; latency in ms."""
    timing = tflite_benchmark.benchmark(path, num_threads=num_threads, warmup_runs=warmup_runs,
                                        num_runs=num_runs)["inference_us"]
    return {"latency": {"median_ms": timing["median"] / 1000, "avg_ms": timing["avg"] / 1000}}


def op_names(path):
    """The op names of a TFLite file, in execution order (checks DENSIFY etc.)."""
    return [op.name for op in graph.read(path).operators]
