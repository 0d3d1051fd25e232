"""Binary conversion of larq models with Larq Compute Engine (LCE), and LCE's interpreter.

LCE converts larq's binarized layers (`QuantConv2D`, `QuantDense` with `ste_sign` on inputs and
kernels) to its own `LceBconv2d` / `LceQuantize` custom ops, storing such weights in 1 bit; layers
it does not recognise (kcaps's `XnorProjection`, which multiplies signs with a batched matmul)
stay float ops. Its custom ops are not builtins, so the file runs in LCE's interpreter (which this
module wraps), not in LiteRT or TFLite Micro; the benchmark tool on a phone needs LCE's own
`lce_benchmark_model` build. LCE's kernels are tuned for Arm: on x86 they may be slower than the
float model under XNNPACK.

larq-compute-engine is optional: it is imported here, on first use only.
"""
import numpy as np


def _lce():
    try:
        import larq_compute_engine
    except ImportError:
        raise ImportError("precision 'binary' needs Larq Compute Engine: "
                          "pip install larq-compute-engine==0.16.0") from None
    return larq_compute_engine


def convert_lce(model):
    """A Keras (larq) model -> `.tflite` bytes with LCE's binary ops; float inputs and outputs."""
    return bytes(_lce().convert_keras_model(model))


def run_lce(flatbuffer, x, num_threads=1):
    """Run LCE-converted `flatbuffer` (bytes) on float inputs `x`; return float32 outputs."""
    _lce()
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    interpreter = Interpreter(bytes(flatbuffer), num_threads=num_threads)
    x = np.asarray(x, np.float32)
    outputs = [np.asarray(interpreter.predict(x[i:i + 1])) for i in range(len(x))]
    return np.concatenate(outputs).astype(np.float32)
