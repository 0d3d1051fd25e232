"""small_capsnet's microcontroller build as TFLite Micro firmware on emulated M4, M7 and M55.

    python -m benchmarks.firmware [--model runs/deployment/small_capsnet/model.keras]
        [--epochs 3] [--samples 10] [--boards mps2-an386 mps2-an500 mps3-an547]
        [--kernels reference cmsis_nn] [--output runs/firmware]

Converts the model (trained on the real digits for `--epochs` if the file is missing) with
`kcaps_tflite.convert.MICRO_BUILD` (`kcaps convert --for-micro`), then builds and runs it with
`kcaps_tflite.firmware` on every board with reference and CMSIS-NN kernels, on `--samples` real
test digits: emulated instructions per inference (QEMU -icount with SysTick: instruction counts,
not cycles), the routing's share of them (TFLite Micro's profiling hooks), flash and RAM, and
agreement with the host build of the same sources and with the Python TFLite Micro interpreter.

Beside it, Q7-CapsNets' published figures (Costa et al., arXiv 2110.02911): an int8 CapsNet on an
STM32H755 (Cortex-M7 at 480 MHz) took 119.94 ms for the primary-capsule layer and 90.60 ms for
the capsule layer (dynamic routing). Their network is not ours: they run their own CMSIS-based
C kernels (not TFLite Micro) on a larger MNIST CapsNet; small_capsnet here is the kcaps default
(small conv trunk, 10 x 16-D digit capsules, 3 routing iterations), so only orders of magnitude
compare, and their milliseconds are measured cycles on silicon where ours are emulated
instruction counts converted at one instruction per cycle.
"""
import argparse
import json
import pathlib

from benchmarks.common import print_table
from benchmarks.deployment import trained_file_and_calibration
from kcaps_tflite import convert, firmware, graph
from kcaps_training import datasets

Q7_CAPSNETS = {"board": "STM32H755 Cortex-M7 @ 480 MHz (silicon)", "primary_capsules_ms": 119.94,
               "capsule_layer_ms": 90.60}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="runs/deployment/small_capsnet/model.keras")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--boards", nargs="+", default=list(firmware.BOARDS))
    parser.add_argument("--kernels", nargs="+", default=["reference", "cmsis_nn"])
    parser.add_argument("--output", default="runs/firmware")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = datasets.load("real_digits")
    model, representative = trained_file_and_calibration(args.model, args.epochs, data, args.seed)
    flatbuffer = convert.convert(model, "int8", representative_data=representative,
                                 **convert.MICRO_BUILD)
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "small_capsnet_int8_micro.tflite"
    path.write_bytes(flatbuffer)
    print(f"{path}: {len(flatbuffer):,} bytes; operators "
          f"{', '.join(f'{k} x{v}' for k, v in graph.read(flatbuffer).op_counts().items())}")
    x, y = data.x_test[:args.samples], data.y_test[:args.samples]
    rows, reports = [], {}
    for board in args.boards:
        for kernels in args.kernels:
            report = firmware.run(path, board, kernels, x, y, output_dir=output / "build",
                                  json_path=output / f"{board}-{kernels}.json")
            reports[f"{board}/{kernels}"] = report
            c, s, a = report["cost"], report["sizes"], report["agreement"]
            rows.append({
                "board": f"{board} ({report['core']})", "kernels": kernels,
                "M instr / inference": c["instructions_per_inference"] / 1e6,
                "ms @ clock, CPI 1": c["estimated_ms_at_nominal_clock"],
                "routing share": f"{report['profile']['routing_share']:.1%}",
                "projection share": f"{report['profile']['projection_share']:.1%}",
                "flash B": s["flash_bytes"], "kernels B": s["flash_parts"]["kernels_total"],
                "RAM B": s["ram_bytes"], "arena used B": s["arena_used_bytes"],
                "= host build": a["host_identical"],
                "top-1 vs Python": f"{a['python_top1_agreement']:.0%}",
                "max LSB vs Python": a["python_max_lsb_difference"]})
    print_table(rows, list(rows[0]))
    print(f"\nQ7-CapsNets (Costa et al., arXiv 2110.02911), {Q7_CAPSNETS['board']}: primary "
          f"capsules {Q7_CAPSNETS['primary_capsules_ms']} ms, capsule layer "
          f"{Q7_CAPSNETS['capsule_layer_ms']} ms (their larger MNIST CapsNet, their own kernels; "
          f"measured cycles, not emulated instructions)")
    for key, report in reports.items():
        if key.endswith("cmsis_nn") and "an500" in key:
            ms = report["cost"]["instructions_per_inference"] / 480e6 * 1e3
            print(f"small_capsnet on the M7 board with CMSIS-NN: "
                  f"{report['cost']['instructions_per_inference'] / 1e6:.2f} M instructions = "
                  f"{ms:.2f} ms at 480 MHz if one instruction took one cycle")
    (output / "firmware_benchmark.json").write_text(json.dumps(
        {"rows": rows, "q7_capsnets": Q7_CAPSNETS}, indent=2, default=str))


if __name__ == "__main__":
    main()
