"""TFLite Micro against LiteRT's three kernel sets, for four int8 builds of one trained model.

    python -m benchmarks.tflm_agreement [--model runs/deployment/small_capsnet/model.keras]

Converts the model (trained by `benchmarks/deployment.py`; trained here for 15 epochs if the
file is missing) to int8 with and without the XNNPACK forms (`kcaps_tflite.xnnpack_int8`) and with
and without SUM as MEAN x count (`kcaps_tflite.int8_sums`), calibrated as `kcaps deploy` does,
and runs each on the 2,000 real test digits in TFLite Micro and in LiteRT with XNNPACK (the
default), with TFLite's builtin kernels and with its reference kernels. Prints accuracy, the
top-1 agreement of TFLite Micro with each, the share of images whose int8 outputs are identical,
the file size and the smallest arena.
"""
import argparse
import sys


import numpy as np  # noqa: E402

from benchmarks.common import print_table  # noqa: E402
from benchmarks.deployment import trained_file_and_calibration  # noqa: E402
from kcaps_tflite import convert, files, micro, verify  # noqa: E402
from kcaps_training import datasets  # noqa: E402

BUILDS = {"default (XNNPACK forms)": dict(),
          "XNNPACK forms + SUM as MEAN": dict(sums_as_means=True),
          "plain": dict(xnnpack_forms=False),
          "plain + SUM as MEAN (--for-micro)": convert.MICRO_BUILD}
KERNELS = {"XNNPACK": dict(), "builtin": dict(use_xnnpack=False),
           "reference": dict(reference_kernels=True)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="runs/deployment/small_capsnet/model.keras")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = datasets.load("real_digits")
    model, representative = trained_file_and_calibration(args.model, 15, data, args.seed)
    float32_bytes = len(convert.convert(model, "float32"))
    x, y = data.x_test, data.y_test.reshape(-1)
    rows = []
    for name, options in BUILDS.items():
        print(name)
        flatbuffer = convert.convert(model, "int8", representative_data=representative, **options)
        arena = micro.find_arena_size(flatbuffer)
        reference = micro.MicroInterpreter(flatbuffer, arena).predict(x)
        row = {"int8 build": name, "TFLM acc": f"{np.mean(reference.argmax(-1) == y):.2%}"}
        for kernels, options in KERNELS.items():
            try:
                outputs = verify.predict(flatbuffer, x, **options)
            except files.TFLiteFileError as error:  # no int8 DEPTH_TO_SPACE in the reference set
                print(f"  {kernels}: {str(error).splitlines()[0]}")
                row[f"vs {kernels}"] = "cannot load"
                continue
            row[f"vs {kernels}"] = (f"{np.mean(outputs.argmax(-1) == reference.argmax(-1)):.2%} "
                                    f"top-1, {np.mean((outputs == reference).all(-1)):.0%} same")
        row["file B"] = f"{len(flatbuffer):,} ({float32_bytes / len(flatbuffer):.2f}x)"
        row["TFLM arena B"] = f"{arena:,}"
        rows.append(row)
    print(f"\nsmall_capsnet, {len(x)} real test digits: TFLite Micro against LiteRT ('top-1': "
          "same class; 'same': identical outputs); file: bytes (times smaller than float32)")
    print_table(rows, list(rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
