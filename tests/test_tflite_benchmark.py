"""The benchmark command: the official tool as host engine, the C++ tool's output parsed, the
per-operator profile and the routing's share of it."""
import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT
from kcaps_tflite import benchmark, files, graph, profile
from tflite_helpers import write
from kcaps_training import cli

# Published outputs of the C++ `benchmark_model` (the tool's own text, quoted in documentation).
# 1. NobuoTsukamoto/meta-tensorflow-lite, docs for the benchmark recipe (mobilenet_v1 on RISC-V
#    QEMU, --num_threads=4 --enable_op_profiling=true); rows of the tables shortened to three.
NEW_FORMAT_WITH_OP_PROFILING = """STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [./mobilenet_v1_1.0_224.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         AllocateTensors\t            0.000\t    1.356\t    1.356\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0

Timings (microseconds): count=1 curr=1356
Memory (bytes): count=0
1 nodes observed



Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t            0.066\t   87.754\t   60.957\t  2.066%\t  2.066%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0
\t       DEPTHWISE_CONV_2D\t           61.033\t   53.628\t   49.870\t  1.691%\t  3.757%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6]:1
\t                 CONV_2D\t          110.912\t  134.346\t  147.808\t  5.011%\t  8.768%\t     0.000\t        1\t[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]:2

Timings (microseconds): count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.9499e+06 std=109770
"""

# 2. TI Processor SDK Linux documentation, "TensorFlow Lite" (AM62x, ssd_mobilenet_v2_coco,
#    --num_threads=4 --use_xnnpack=false): INFO-prefixed lines, percentiles.
INFO_PREFIXED_WITH_PERCENTILES = """   INFO: STARTING!
   INFO: Graph: [/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite]
   INFO: Use xnnpack: [0]
   INFO: The input model file size (MB): 67.3128
   INFO: Initialized session in 5.579ms.
   INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
   INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

   INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
   INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

   INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
   INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
   INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""

# 3. An Android run with --report_peak_memory_footprint=true, as logged in a public project
#    README: warm-up and timed statistics lines, peak memory.
ANDROID_WITH_PEAK_MEMORY = """INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 58 out of 58 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions for the whole graph.
INFO: Initialized session in 3.337ms.
INFO: count=9 first=81913 curr=55502 min=55502 max=81913 avg=58984.7 std=8115
INFO: count=1061 first=56576 curr=56299 min=54669 max=60236 avg=56265.8 std=982
INFO: Inference timings in us: Init: 3337, First inference: 81913, Warmup (avg): 58984.7, Inference (avg): 56265.8
INFO: Overall peak memory footprint (MB) via periodic monitoring: 93.2383
"""

# 4. tensorflow/tensorflow, tensorflow/lite/tools/benchmark/README.md, the op-profiling example
#    in the format before TF 2.2 (no first inference; "Peak memory" absent).
OLD_README_FORMAT = """============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                 CONV_2D\t       15\t     1.406\t    89.270%\t    89.270%\t     0.000\t        0

Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed


Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""


def test_parser_reads_the_current_format_and_its_op_profile():
    r = benchmark.parse_benchmark_model_output(NEW_FORMAT_WITH_OP_PROFILING)
    assert (r["init_us"], r["first_inference_us"], r["warmup_avg_us"]) == (17187, 3512391, 3.51239e6)
    i = r["inference_us"]
    assert (i["count"], i["first"], i["curr"], i["min"], i["max"], i["avg"], i["std"]) == \
        (50, 2990275, 2913402, 2727568, 3189954, 2.95034e6, 109798)  # the timed runs, not warm-up
    assert r["memory_mb"] == {"init": 4.21094, "overall": 46.0859, "peak": None}
    rows = profile.parse_profile(r["op_profile"])  # the regular runs' table, not initialization
    assert [(row.node_type, row.avg_ms, row.index) for row in rows] == [
        ("CONV_2D", 60.957, 0), ("DEPTHWISE_CONV_2D", 49.87, 1), ("CONV_2D", 147.808, 2)]


def test_parser_reads_info_prefixes_and_percentiles():
    r = benchmark.parse_benchmark_model_output(INFO_PREFIXED_WITH_PERCENTILES)
    i = r["inference_us"]
    assert (i["count"], i["avg"], i["p5"], i["median"], i["p95"]) == \
        (50, 1.24027e6, 1238753, 1239807, 1247415)
    assert r["init_us"] == 5579 and r["first_inference_us"] == 1357602
    assert r["memory_mb"]["init"] == 6.36328 and r["memory_mb"]["overall"] == 109.832


def test_parser_takes_the_last_statistics_line_and_the_peak_memory():
    r = benchmark.parse_benchmark_model_output(ANDROID_WITH_PEAK_MEMORY)
    assert r["inference_us"]["count"] == 1061 and r["inference_us"]["std"] == 982
    assert r["warmup_avg_us"] == 58984.7
    assert r["memory_mb"] == {"init": None, "overall": None, "peak": 93.2383}


def test_parser_reads_the_format_before_tf_2_2():
    r = benchmark.parse_benchmark_model_output(OLD_README_FORMAT)
    assert (r["init_us"], r["warmup_avg_us"], r["inference_us"]["avg"]) == (38467, 83235, 79760.9)
    assert r["first_inference_us"] is None and r["inference_us"]["min"] == 77385


def test_parser_refuses_other_text():
    with pytest.raises(ValueError, match="not benchmark_model output"):
        benchmark.parse_benchmark_model_output("Segmentation fault")


@pytest.mark.slow
def test_host_engine_measures_with_the_official_tool(tmp_path):
    path = write(tmp_path, "int8")
    r = benchmark.benchmark(path, num_threads=1, warmup_runs=2, num_runs=20)
    assert r["engine"].startswith("ai_edge_litert.tools.benchmark_litert_model")
    i = r["inference_us"]
    assert i["count"] == 20 and 0 < i["min"] <= i["avg"] <= i["max"] and i["std"] >= 0
    assert r["init_us"] > 0 and r["first_inference_us"] > 0 and r["warmup_avg_us"] > 0
    assert r["memory_mb"]["overall"] > 0 and r["memory_mb"]["peak"] > r["memory_mb"]["overall"]
    assert "BENCHMARK RESULTS" in r["output"]  # the tool's own report
    assert r["model_size_bytes"] == path.stat().st_size
    # printed in the C++ tool's shape: the C++ tool's parser reads it back
    again = benchmark.parse_benchmark_model_output(benchmark.format_result(r))
    assert again["inference_us"]["avg"] == pytest.approx(i["avg"], rel=1e-5)
    assert again["init_us"] == pytest.approx(r["init_us"], rel=1e-5)
    assert again["memory_mb"]["overall"] == pytest.approx(r["memory_mb"]["overall"], rel=1e-5)


@pytest.mark.slow
def test_benchmark_command_prints_the_tool_shape_and_writes_json(tmp_path, capsys):
    path = write(tmp_path, "float32")
    out = tmp_path / "result.json"
    assert cli.main(["benchmark", "--graph", str(path), "--num_threads", "2", "--num_runs=10",
                     "--use_xnnpack=false", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Inference timings in us: Init:" in printed and "Use xnnpack: [0]" in printed
    result = json.loads(out.read_text())
    assert result["num_threads"] == 2 and result["use_xnnpack"] is False
    assert result["inference_us"]["count"] == 10


def _fake_tool(tmp_path, text):
    """A stand-in `benchmark_model` that records its flags and prints published output."""
    script = tmp_path / "benchmark_model"
    sample = tmp_path / "sample.txt"
    sample.write_text(text)
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/flags.txt\ncat {sample}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.slow
def test_a_real_tool_binary_runs_with_the_same_flags(tmp_path, monkeypatch):
    path = write(tmp_path, "float32")
    tool = _fake_tool(tmp_path, INFO_PREFIXED_WITH_PERCENTILES)
    r = benchmark.benchmark(path, num_threads=4, warmup_runs=3, num_runs=7, use_xnnpack=False,
                            tool=str(tool))
    flags = (tmp_path / "flags.txt").read_text().split()
    assert flags == [f"--graph={path}", "--num_threads=4", "--warmup_runs=3", "--num_runs=7",
                     "--use_xnnpack=false"]
    assert r["engine"] == f"benchmark_model ({tool})" and r["inference_us"]["avg"] == 1.24027e6
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert benchmark.find_tool() == str(tool)  # found on PATH without --tool
    assert benchmark.benchmark(path, num_runs=5)["engine"].startswith("benchmark_model")


def test_benchmark_command_parses_a_saved_tool_output(tmp_path, capsys):
    saved = tmp_path / "phone.txt"
    saved.write_text(ANDROID_WITH_PEAK_MEMORY)
    out = tmp_path / "phone.json"
    assert cli.main(["benchmark", "--graph", str(tmp_path / "on_the_phone.tflite"), "--parse",
                     str(saved), "--num_threads", "4", "--use_xnnpack", "false",
                     "--json", str(out)]) == 0
    assert "Inference timings in us: Init:" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["inference_us"]["avg"] == 56265.8 and result["num_threads"] == 4
    assert result["use_xnnpack"] is False and result["engine"].startswith("benchmark_model (output")
    missing = str(tmp_path / "none.txt")
    assert cli.main(["benchmark", "--graph", "m.tflite", "--parse", missing]) == 2
    assert "benchmark output not found" in capsys.readouterr().err


def test_bad_benchmark_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        benchmark.benchmark(tmp_path / "missing.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\0" * 64)
    with pytest.raises(files.TFLiteFileError, match="corrupt.tflite"):
        benchmark.benchmark(corrupt)
    with pytest.raises(FileNotFoundError, match="benchmark tool not found: /no/such/tool"):
        benchmark.find_tool("/no/such/tool")
    assert cli.main(["benchmark", "--graph", str(corrupt)]) == 2


@pytest.mark.slow
def test_op_profile_has_one_row_per_operator_and_gives_the_routing_share(tmp_path):
    path = write(tmp_path, "int8")
    op = profile.op_profile(path, num_runs=20, use_xnnpack=False)
    g = graph.read(path)
    assert sorted(row.index for row in op.rows) == list(range(len(g.operators)))
    assert [row.node_type for row in sorted(op.rows, key=lambda r: r.index)] == \
        [o.name for o in g.operators]
    assert all(row.times_called == 20 for row in op.rows)
    share = profile.routing_share(path, op.rows)
    assert set(share["parts_ms"]) >= {"conv1", "conv2", "primary_capsules", "projection",
                                      "routing", "lengths"}
    assert 0 < share["routing_share"] < 1 and 0 < share["projection_share"] < 1
    assert share["total_ms"] == pytest.approx(sum(share["parts_ms"].values()))
    assert share["routing_ms"] == pytest.approx(
        sum(r.avg_ms for r in op.rows if g.parts()[r.index] == "routing"))


@pytest.mark.slow
def test_routing_share_refuses_a_delegated_profile(tmp_path):
    path = write(tmp_path, "float32")
    op = profile.op_profile(path, num_runs=5, use_xnnpack=True)
    assert any(row.delegate for row in op.rows)
    with pytest.raises(ValueError, match="use_xnnpack=False"):
        profile.routing_share(path, op.rows)


FAKE_ADB = """#!/bin/sh
# A stand-in for adb: the phone's /data/local/tmp is $FAKE_PHONE/data/local/tmp.
map() { echo "$1" | sed "s#/data/local/tmp#$FAKE_PHONE/data/local/tmp#g"; }
echo "$@" >> "$FAKE_PHONE/adb.log"
command=$1; shift
case $command in
  get-state) echo device ;;
  push) mkdir -p "$(dirname "$(map "$2")")"; cp "$1" "$(map "$2")" ;;
  pull) cp "$(map "$1")" "$2" ;;
  shell) sh -c "$(map "$*")" ;;
esac
"""


@pytest.mark.slow
def test_android_script_pushes_runs_with_the_same_flags_and_pulls(tmp_path):
    phone = tmp_path / "phone"
    phone.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB)
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    tool = _fake_tool(tmp_path, ANDROID_WITH_PEAK_MEMORY)
    model = write(tmp_path, "int8", "small_int8.tflite")
    env = dict(os.environ, FAKE_PHONE=str(phone), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([str(ROOT / "tflite" / "android_benchmark.sh"), str(model),
                          "--num_threads", "4", "--num_runs=30", "--tool", str(tool),
                          "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    flags = (tmp_path / "flags.txt").read_text().split()
    remote = f"{phone}/data/local/tmp/kcaps"
    assert flags[:5] == [f"--graph={remote}/small_int8.tflite", "--num_threads=4",
                         "--warmup_runs=1", "--num_runs=30", "--use_xnnpack=true"]
    assert (phone / "data/local/tmp/kcaps/small_int8.tflite").read_bytes() == model.read_bytes()
    result = json.loads((tmp_path / "out" / "small_int8.benchmark.json").read_text())
    assert result["inference_us"]["avg"] == 56265.8 and result["num_threads"] == 4
    assert result["memory_mb"]["peak"] == 93.2383
    assert "push" in (phone / "adb.log").read_text() and "pull" in (phone / "adb.log").read_text()
