"""XnODR networks in Larq Compute Engine vs the float TFLite model of the same network.

    python -m benchmarks.lce_deploy [--backbones mobilenetv2,cnn] [--runs 50] [--output runs/lce_deploy]

For each backbone (28x28x1 real digits; MobileNetV2 zero-pads them to 32x32): build the XnODR
network, train it briefly on real digits (so that agreement is checked on a meaningful model),
then in the same run
- convert it with LCE (`kcaps_tflite.lce`) and with `tf.lite.TFLiteConverter` (float32);
- print file sizes, the LCE op list's binary ops, and the bytes of the binary projection in the
  LCE file (packed filter, folded alpha) against its float32 kernel;
- check top-1 agreement with Keras on 256 held-out real digits for both files;
- time one image per inference, 1 thread: the LCE file in LCE's interpreter, the float file in
  LCE's interpreter (same engine) and in LiteRT with the official benchmark tool
  (`python -m ai_edge_litert.tools.benchmark_litert_model`, XNNPACK).
"""
import argparse
import json
import os
import subprocess
import sys
import time


import kcaps  # noqa: E402  (first: Keras 2 behind tf.keras, before TensorFlow loads)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from kcaps_tflite import lce  # noqa: E402
from kcaps_training import datasets  # noqa: E402


def lce_latency_ms(flatbuffer, x, runs):
    """Median milliseconds of one-image inferences in LCE's interpreter (1 thread)."""
    interpreter = lce.interpreter(flatbuffer, num_threads=1)
    for _ in range(5):
        interpreter.predict(x[:1])
    times = []
    for n in range(runs):
        start = time.perf_counter()
        interpreter.predict(x[n % len(x):n % len(x) + 1])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def litert_latency_ms(path, runs):
    """Median milliseconds from the official LiteRT benchmark tool (1 thread, XNNPACK)."""
    result = path + ".json"
    subprocess.run([sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model",
                    "--model", path, "--num_threads", "1", "--warmup_runs", "5",
                    "--num_runs", str(runs), "--result_json", result],
                   check=True, capture_output=True)
    with open(result) as f:
        return float(json.load(f)["latency"]["median_ms"])


def bconv_constant_bytes(flatbuffer):
    """Bytes of the constant inputs of each LceBconv2d (packed filter, multiplier, bias)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    sizes = []
    for op in graph.operators:
        if model.operatorCodes[op.opcodeIndex].customCode == b"LceBconv2d":
            total = 0
            for index in op.inputs:
                if index >= 0:
                    data = model.buffers[graph.tensors[index].buffer].data
                    total += 0 if data is None else len(data)
            sizes.append(total)
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="mobilenetv2,cnn")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--output", default="runs/lce_deploy")
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    data = datasets.load_real_digits()
    x_check = data.x_test[:256]
    rows = []
    for backbone in args.backbones.split(","):
        tf.keras.utils.set_random_seed(0)
        model = kcaps.models.backbone_capsnet(backbone, "xnodr", (28, 28, 1), 10, bn_momentum=0.9)
        model.compile(tf.keras.optimizers.Adam(1e-3))
        model.fit(data.x_train[:args.train_images], data.y_train[:args.train_images],
                  batch_size=64, epochs=1, verbose=0)
        keras_top1 = model.predict(x_check, verbose=0).argmax(-1)
        keras_accuracy = float(np.mean(keras_top1 == data.y_test[:256]))

        start = time.perf_counter()
        binary = lce.convert_lce(model)
        lce_seconds = time.perf_counter() - start
        floating = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        paths = {}
        for kind, flatbuffer in (("lce", binary), ("float32", floating)):
            paths[kind] = os.path.join(args.output, f"{backbone}_xnodr_{kind}.tflite")
            with open(paths[kind], "wb") as f:
                f.write(flatbuffer)

        kernel = model.get_layer("class_capsules").kernel
        float_kernel_bytes = 4 * int(np.prod(kernel.shape))
        bconv_bytes = bconv_constant_bytes(binary)
        print(f"\n== {backbone} + XnODR ({model.count_params():,} parameters, Keras top-1 "
              f"{keras_accuracy:.3f} on 256 test digits after 1 short epoch)")
        print(f"LCE conversion {lce_seconds:.1f} s; binary ops {lce.binary_op_counts(binary)}; "
              f"{len(lce.list_ops(binary))} ops in all")
        print(f"projection: float32 kernel {float_kernel_bytes:,} B; in the LCE file "
              f"{bconv_bytes} B (packed 32-channel filter words + folded alpha): "
              f"{float_kernel_bytes / max(1, sum(bconv_bytes)):.1f}x smaller; "
              f"1-bit kernel alone {int(np.prod(kernel.shape)) // 8:,} B (32x)")

        lce_top1 = lce.run_lce(binary, x_check).argmax(-1)
        float_interpreter = Interpreter(model_content=floating)
        runner = float_interpreter.get_signature_runner()
        input_name = list(runner.get_input_details())[0]
        float_top1 = np.concatenate([
            list(runner(**{input_name: x_check[n:n + 1]}).values())[0]
            for n in range(len(x_check))]).argmax(-1)
        lce_ms = lce_latency_ms(binary, x_check, args.runs)
        float_in_lce_ms = lce_latency_ms(floating, x_check, args.runs)
        litert_ms = litert_latency_ms(paths["float32"], args.runs)
        rows += [
            {"network": f"{backbone}+xnodr", "file": "LCE (binary projection)",
             "bytes": len(binary), "engine": "LCE interpreter", "median_ms": lce_ms,
             "top1_agrees_with_keras": float(np.mean(lce_top1 == keras_top1))},
            {"network": f"{backbone}+xnodr", "file": "float32 TFLite", "bytes": len(floating),
             "engine": "LCE interpreter", "median_ms": float_in_lce_ms,
             "top1_agrees_with_keras": float(np.mean(float_top1 == keras_top1))},
            {"network": f"{backbone}+xnodr", "file": "float32 TFLite", "bytes": len(floating),
             "engine": "LiteRT benchmark tool (XNNPACK)", "median_ms": litert_ms},
        ]
        print(f"size ratio float/LCE {len(floating) / len(binary):.3f}; latency LCE/float "
              f"(same engine) {lce_ms / float_in_lce_ms:.2f}, LCE / LiteRT float "
              f"{lce_ms / litert_ms:.2f}")
        tf.keras.backend.clear_session()
    print()
    print_table(rows, ["network", "file", "bytes", "engine", "median_ms", "top1_agrees_with_keras"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
