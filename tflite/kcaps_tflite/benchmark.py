"""Benchmark a `.tflite` model the way TFLite's benchmark tool does, with the tool's flags.

    kcaps benchmark --graph model.tflite --num_threads 1 --warmup_runs 1 --num_runs 50 \
        [--use_xnnpack false] [--enable_op_profiling true] [--tool PATH] [--json out.json]

(the command's flags are parsed in `kcaps_training.cli`; this module is the library behind it)

Engines, in this order:

1. `--tool PATH`, or a `benchmark_model` binary on PATH: the C++ tool itself (on a desktop, or
   the phone script `tflite/android_benchmark.sh`). It runs with the same flags and its output
   is parsed (`parse_benchmark_model_output`) into the result below.
2. Otherwise the official tool shipped in ai-edge-litert,
   `python -m ai_edge_litert.tools.benchmark_litert_model`, in a child process
   (`kcaps_tflite._host_benchmark`), which times the runs; memory is measured around it, and
   `--use_xnnpack false` selects TFLite's builtin kernels. There is no x86 `benchmark_model`
   binary in the registries this project can reach.

Method (the tool's): one initialization (load + compile, timed), `warmup_runs` untimed-for-the-
average runs whose first is the "first inference", then `num_runs` timed runs; every run feeds
the same random input. The result, printed in the C++ tool's shape and written as JSON:

    count=50 first=251 curr=248 min=240 max=300 avg=250.3 std=9.1
    Inference timings in us: Init: 9100, First inference: 560, Warmup (avg): 480, Inference (avg): 250.3
    Memory footprint delta from the start of the tool (MB): init=1.5 overall=2.1
    Overall peak memory footprint (MB) via periodic monitoring: 160.2

Differences from the C++ tool, as measured here: the Python port reports milliseconds rounded to
0.01 (so microseconds come in steps of 10), runs exactly `num_runs` (no `min_secs`), and its
"first" is the first timed run. Its memory is that of a Python process (the peak includes the
interpreter and numpy, tens of MB); the deltas are the model's.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from kcaps_tflite import files

HOST_TOOL = "ai_edge_litert.tools.benchmark_litert_model"
BINARY_NAME = "benchmark_model"


def find_tool(tool=None):
    """The `benchmark_model` binary to use: `tool` if given (must exist), else one on PATH."""
    if tool is not None:
        path = shutil.which(str(tool)) or (str(tool) if os.path.isfile(tool) else None)
        if path is None:
            raise FileNotFoundError(f"benchmark tool not found: {tool}")
        return path
    return shutil.which(BINARY_NAME)


def _tool_flags(graph, num_threads, warmup_runs, num_runs, use_xnnpack, enable_op_profiling):
    flags = [f"--graph={graph}", f"--num_threads={num_threads}", f"--warmup_runs={warmup_runs}",
             f"--num_runs={num_runs}", f"--use_xnnpack={str(use_xnnpack).lower()}"]
    if enable_op_profiling:
        flags.append("--enable_op_profiling=true")
    return flags


def benchmark(graph, num_threads=1, warmup_runs=1, num_runs=50, use_xnnpack=True,
              enable_op_profiling=False, tool=None, timeout=900):
    """Benchmark `graph` (a `.tflite` path); return the result dict (see the module doc).

    Args mirror the tool's flags; `tool` is a `benchmark_model` binary to run instead of the
    host engine (None: one found on PATH, else the host engine).
    """
    graph = str(graph)
    files.read_tflite(graph)  # FileNotFoundError / TFLiteFileError naming the file
    for name, value, low in (("num_threads", num_threads, -1), ("warmup_runs", warmup_runs, 0),
                             ("num_runs", num_runs, 1)):
        if not isinstance(value, int) or value < low or (name == "num_threads" and value == 0):
            raise ValueError(f"--{name} must be an integer >= {low}"
                             f"{' (-1: the platform default)' if low < 0 else ''}, got {value!r}")
    binary = find_tool(tool)
    if binary:
        flags = _tool_flags(graph, num_threads, warmup_runs, num_runs, use_xnnpack,
                            enable_op_profiling)
        run = subprocess.run([binary, *flags], capture_output=True, text=True, timeout=timeout)
        text = run.stdout + run.stderr
        if run.returncode != 0:
            raise RuntimeError(f"{binary} failed (exit {run.returncode}): {text.strip()[-1500:]}")
        result = parse_benchmark_model_output(text)
        result.update(engine=f"benchmark_model ({binary})", graph=graph,
                      model_size_bytes=os.path.getsize(graph), num_threads=num_threads,
                      warmup_runs=warmup_runs, num_runs=num_runs, use_xnnpack=use_xnnpack,
                      output=text)
        return result
    result = _host_benchmark(graph, num_threads, warmup_runs, num_runs, use_xnnpack, timeout)
    if enable_op_profiling:
        from kcaps_tflite import profile

        op = profile.op_profile(graph, num_threads=num_threads, warmup_runs=warmup_runs,
                                num_runs=num_runs, use_xnnpack=use_xnnpack)
        result["op_profile"] = op.summary
        result["output"] += "\nOperator-wise Profiling Info for Regular Benchmark Runs:\n" + \
            op.summary
    return result


def _host_benchmark(graph, num_threads, warmup_runs, num_runs, use_xnnpack, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.json")
        command = [sys.executable, "-m", "kcaps_tflite._host_benchmark", result_path,
                   "--model", graph, "--num_threads", str(max(num_threads, 0)),
                   "--warmup_runs", str(warmup_runs), "--num_runs", str(num_runs),
                   "--use_xnnpack", str(use_xnnpack).lower()]
        run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0 or not os.path.exists(result_path):
            raise RuntimeError(f"{HOST_TOOL} failed on {graph} (exit {run.returncode}): "
                               f"{(run.stderr or run.stdout).strip()[-1500:]}")
        raw = json.loads(pathlib.Path(result_path).read_text())
    latency, memory = raw["tool"]["latency"], raw["memory_mb"]
    us = 1000.0
    result = {
        "engine": f"{HOST_TOOL} (ai-edge-litert {_litert_version()})",
        "graph": graph,
        "model_size_bytes": os.path.getsize(graph),
        "num_threads": num_threads,
        "warmup_runs": warmup_runs,
        "num_runs": num_runs,
        "use_xnnpack": use_xnnpack,
        "init_us": latency["init_ms"] * us,
        "first_inference_us": latency["warmup_first_ms"] * us if warmup_runs else None,
        "warmup_avg_us": latency["warmup_avg_ms"] * us if warmup_runs else None,
        "inference_us": {
            "count": latency["num_runs"],
            "first": None, "curr": None,  # not reported by the Python port
            "min": latency["min_ms"] * us, "max": latency["max_ms"] * us,
            "avg": latency["avg_ms"] * us, "std": latency["std_ms"] * us,
            "median": latency["median_ms"] * us, "p5": latency["p5_ms"] * us,
            "p95": latency["p95_ms"] * us,
        },
        "memory_mb": {"init": memory.get("init"), "overall": memory.get("overall"),
                      "peak": memory.get("peak")},
        "output": run.stdout,
    }
    return result


def _litert_version():
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return "unknown"


_NUMBER = r"([-+]?[\d.]+(?:e[-+]?\d+)?)"


def parse_benchmark_model_output(text):
    """Parse the C++ `benchmark_model`'s output into a result dict (formats since TF 1.x).

    Reads the timed runs' statistics line (`count=... first=... min=... avg=... std=...`, the
    last such line before the summary), the summary (`Inference timings in us: Init: ...,
    First inference: ..., Warmup (avg): ..., Inference (avg): ...`), the memory lines
    (`Memory footprint delta from the start of the tool (MB): init=... overall=...`, older
    `Peak memory footprint (MB): init=... overall=...`, and `Overall peak memory footprint (MB)
    via periodic monitoring: ...`) and, with op profiling, the profile text. Lines may carry a
    logging prefix (`INFO: `, `I tflite  : `).
    """
    summary = re.search(
        rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
        rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}", text)
    if summary:
        init, first, warmup, average = (float(v) for v in summary.groups())
    else:  # the format before TF 2.2: no first inference
        summary = re.search(rf"Average inference timings in us: Warmup: {_NUMBER}, "
                            rf"Init: {_NUMBER}, Inference: {_NUMBER}", text)
        if not summary:
            raise ValueError("not benchmark_model output: no 'Inference timings in us' line")
        warmup, init, average = (float(v) for v in summary.groups())
        first = None
    stats = None
    head = text[:summary.start()]
    for line in head.splitlines():
        if re.search(r"\bcount=\d+", line) and "avg=" in line:
            stats = line  # the last statistics line before the summary: the timed runs
    inference = {"count": None, "first": None, "curr": None, "min": None, "max": None,
                 "avg": average, "std": None, "median": None, "p5": None, "p95": None}
    if stats:
        for key in inference:
            found = re.search(rf"\b{key}={_NUMBER}", stats)
            if found:
                inference[key] = int(found.group(1)) if key == "count" else float(found.group(1))
        inference["avg"] = average  # the summary's figure is the tool's result
    memory = {"init": None, "overall": None, "peak": None}
    footprint = re.search(rf"(?:Memory footprint delta from the start of the tool|Peak memory "
                          rf"footprint) \(MB\): init={_NUMBER} overall={_NUMBER}", text)
    if footprint:
        memory["init"], memory["overall"] = float(footprint.group(1)), float(footprint.group(2))
    peak = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER}",
                     text)
    if peak:
        memory["peak"] = float(peak.group(1))
    result = {"init_us": init, "first_inference_us": first, "warmup_avg_us": warmup,
              "inference_us": inference, "memory_mb": memory}
    if "Run Order" in text:
        marker = "Operator-wise Profiling Info" if "Operator-wise" in text else "Run Order"
        result["op_profile"] = text[text.rfind("\n", 0, text.index(marker)) + 1:]
    return result


def _fmt(value):
    if value is None:
        return "n/a"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def format_result(result):
    """The result in the C++ tool's shape (statistics line, summary, memory)."""
    inference = result["inference_us"]
    stats = " ".join(f"{key}={_fmt(inference[key])}" for key in
                     ("count", "first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")
                     if inference.get(key) is not None)
    memory = result["memory_mb"]
    lines = [
        f"Graph: [{result.get('graph')}]  Num threads: [{result.get('num_threads')}]  "
        f"Use xnnpack: [{int(bool(result.get('use_xnnpack')))}]  Engine: {result.get('engine')}",
        f"The input model file size (MB): {result.get('model_size_bytes', 0) / 1e6:.6g}",
        stats,
        f"Inference timings in us: Init: {_fmt(result['init_us'])}, "
        f"First inference: {_fmt(result['first_inference_us'])}, "
        f"Warmup (avg): {_fmt(result['warmup_avg_us'])}, "
        f"Inference (avg): {_fmt(inference['avg'])}",
        f"Memory footprint delta from the start of the tool (MB): init={_fmt(memory['init'])} "
        f"overall={_fmt(memory['overall'])}",
    ]
    if memory.get("peak") is not None:
        lines.append(f"Overall peak memory footprint (MB) via periodic monitoring: "
                     f"{_fmt(memory['peak'])}")
    return "\n".join(lines)


def parse_output_file(path, graph, num_threads=1, warmup_runs=1, num_runs=50, use_xnnpack=True):
    """A saved `benchmark_model` output (e.g. pulled from a phone by `tflite/android_benchmark.sh`)
    as the result dict of `benchmark`, with the flags it ran with."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark output not found: {path}")
    result = parse_benchmark_model_output(path.read_text(errors="replace"))
    result.update(engine=f"benchmark_model (output {path})", graph=str(graph),
                  model_size_bytes=os.path.getsize(graph) if os.path.exists(graph) else 0,
                  num_threads=num_threads, warmup_runs=warmup_runs, num_runs=num_runs,
                  use_xnnpack=use_xnnpack)
    return result


def write_result(result, path):
    """Write a result as JSON (without the tool's raw output); return the path."""
    return files.write_text(path, json.dumps({k: v for k, v in result.items() if k != "output"},
                                             indent=2))
