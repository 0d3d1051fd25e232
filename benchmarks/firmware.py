"""small_capsnet's microcontroller build as TFLite Micro firmware on emulated M4, M7 and M55.

    python -m benchmarks.firmware [--model runs/deployment/small_capsnet/model.keras]
        [--epochs 3] [--samples 10] [--boards mps2-an386 mps2-an500 mps3-an547]
        [--kernels reference cmsis_nn] [--output runs/firmware] [--cmsis-nn-forms on|off|both]

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

`--cmsis-nn-forms both` runs the microcontroller build without and with
`kcaps_tflite.cmsis_nn_int8` (MEANs as all-ones FULLY_CONNECTED, on in the build by default) on
every board and kernel set: instructions before and after, the per-operator instructions of the
capsule layer's operators by type, and whether the rewritten firmware's outputs equal the
original firmware's bit for bit.
"""
import argparse
import collections
import itertools
import json
import pathlib

import numpy as np

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
    parser.add_argument("--cmsis-nn-forms", choices=("on", "off", "both"), default="on",
                        help="MEANs as all-ones FULLY_CONNECTED (kcaps_tflite.cmsis_nn_int8)")
    args = parser.parse_args(argv)
    data = datasets.load("real_digits")
    model, representative = trained_file_and_calibration(args.model, args.epochs, data, args.seed)
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    forms = ["off", "on"] if args.cmsis_nn_forms == "both" else [args.cmsis_nn_forms]
    paths = {}
    for form in forms:
        flatbuffer = convert.convert(model, "int8", representative_data=representative,
                                     **{**convert.MICRO_BUILD, "cmsis_nn_forms": form == "on"})
        suffix = "" if form == "on" else "_no_cmsis_nn_forms"
        paths[form] = output / f"small_capsnet_int8_micro{suffix}.tflite"
        paths[form].write_bytes(flatbuffer)
        print(f"{paths[form]}: {len(flatbuffer):,} bytes; operators "
              f"{', '.join(f'{k} x{v}' for k, v in graph.read(flatbuffer).op_counts().items())}")
    x, y = data.x_test[:args.samples], data.y_test[:args.samples]
    rows, reports = [], {}
    for board, kernels, form in itertools.product(args.boards, args.kernels, forms):
        suffix = "" if form == "on" else "-no_cmsis_nn_forms"
        report = firmware.run(paths[form], board, kernels, x, y,
                              output_dir=output / f"build{suffix}",
                              json_path=output / f"{board}-{kernels}{suffix}.json")
        reports[f"{board}/{kernels}/{form}"] = report
        c, s, a = report["cost"], report["sizes"], report["agreement"]
        rows.append({
            "board": f"{board} ({report['core']})", "kernels": kernels, "forms": form,
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
    if len(forms) == 2:
        comparison = compare(reports, args.boards, args.kernels)
    print(f"\nQ7-CapsNets (Costa et al., arXiv 2110.02911), {Q7_CAPSNETS['board']}: primary "
          f"capsules {Q7_CAPSNETS['primary_capsules_ms']} ms, capsule layer "
          f"{Q7_CAPSNETS['capsule_layer_ms']} ms (their larger MNIST CapsNet, their own kernels; "
          f"measured cycles, not emulated instructions)")
    for key, report in reports.items():
        if key.endswith(f"cmsis_nn/{forms[-1]}") and "an500" in key:
            ms = report["cost"]["instructions_per_inference"] / 480e6 * 1e3
            print(f"small_capsnet on the M7 board with CMSIS-NN: "
                  f"{report['cost']['instructions_per_inference'] / 1e6:.2f} M instructions = "
                  f"{ms:.2f} ms at 480 MHz if one instruction took one cycle")
    (output / "firmware_benchmark.json").write_text(json.dumps(
        {"rows": rows, "q7_capsnets": Q7_CAPSNETS,
         "cmsis_nn_forms": comparison if len(forms) == 2 else None}, indent=2, default=str))


def _by_type(report, part="routing"):
    """Instructions per operator type within `part` of the model, largest first."""
    totals = collections.Counter()
    for row in report["profile"]["operators"]:
        if row["part"] == part:
            totals[row["op"]] += row["instructions"]
    return dict(totals.most_common())


def compare(reports, boards, kernel_sets):
    """Before/after table of the CMSIS-NN forms: instructions, routing share, sizes, identity."""
    rows = []
    for board in boards:
        for kernels in kernel_sets:
            before, after = (reports[f"{board}/{kernels}/{form}"] for form in ("off", "on"))
            same = np.array_equal(np.fromfile(before["outputs_path"], np.int8),
                                  np.fromfile(after["outputs_path"], np.int8))
            b_cost = before["cost"]["instructions_per_inference"]
            a_cost = after["cost"]["instructions_per_inference"]
            b_routing, a_routing = (r["profile"]["routing_share"] for r in (before, after))
            rows.append({
                "board": board, "kernels": kernels,
                "M instr before": b_cost / 1e6, "M instr after": a_cost / 1e6,
                "saved": f"{1 - a_cost / b_cost:.1%}",
                "routing before": f"{b_routing:.1%}", "routing after": f"{a_routing:.1%}",
                "routing M instr before": b_routing * b_cost / 1e6,
                "routing M instr after": a_routing * a_cost / 1e6,
                "flash B before": before["sizes"]["flash_bytes"],
                "flash B after": after["sizes"]["flash_bytes"],
                "RAM B before": before["sizes"]["ram_bytes"],
                "RAM B after": after["sizes"]["ram_bytes"],
                "outputs = before": same})
    print("\nCMSIS-NN forms (kcaps_tflite.cmsis_nn_int8): before -> after")
    print_table(rows, list(rows[0]))
    for key, report in reports.items():
        print(f"routing instructions by operator, {key}: " + ", ".join(
            f"{op} {n / 1e6:.3f} M" for op, n in _by_type(report).items()))
    return rows


if __name__ == "__main__":
    main()
