#!/usr/bin/env bash
# Run TFLite's benchmark tool on an Android phone over adb, with the flags of `kcaps benchmark`:
# push the tool and the model, run, pull the output (and the op profile), parse it into JSON.
#
#   tflite/android_benchmark.sh MODEL.tflite [--num_threads 1] [--warmup_runs 1] [--num_runs 50]
#       [--use_xnnpack true] [--enable_op_profiling false] [--taskset f0]
#       [--tool path/to/android_aarch64_benchmark_model] [--out runs/android]
#
# Needs `adb` with one phone attached (or ANDROID_SERIAL set) and the benchmark_model binary
# built for the phone (--tool, or $BENCHMARK_MODEL): TensorFlow publishes prebuilt ones
# (android_aarch64_benchmark_model) next to its nightly builds, or build it with
#   bazel build -c opt --config=android_arm64 tensorflow/lite/tools/benchmark:benchmark_model
# Outputs in --out: <model>.benchmark.txt (the tool's own output), <model>.benchmark.json (the
# same result shape as `kcaps benchmark`), and with op profiling <model>.op_profile.csv.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage 0;; esac
MODEL="$1"; shift
NUM_THREADS=1 WARMUP_RUNS=1 NUM_RUNS=50 USE_XNNPACK=true OP_PROFILING=false TASKSET=""
TOOL="${BENCHMARK_MODEL:-}" OUT="runs/android"
while [ $# -gt 0 ]; do
  flag="${1%%=*}"; if [[ "$1" == *=* ]]; then value="${1#*=}"; shift; else value="${2:-}"; shift 2 || usage; fi
  case "$flag" in
    --num_threads) NUM_THREADS="$value";;
    --warmup_runs) WARMUP_RUNS="$value";;
    --num_runs) NUM_RUNS="$value";;
    --use_xnnpack) USE_XNNPACK="$value";;
    --enable_op_profiling) OP_PROFILING="$value";;
    --taskset) TASKSET="$value";;
    --tool) TOOL="$value";;
    --out) OUT="$value";;
    *) echo "android_benchmark.sh: unknown flag $flag" >&2; usage;;
  esac
done

for pair in "num_threads=$NUM_THREADS" "warmup_runs=$WARMUP_RUNS" "num_runs=$NUM_RUNS"; do
  [[ "${pair#*=}" =~ ^-?[0-9]+$ ]] || { echo "android_benchmark.sh: --${pair%%=*} must be an integer, got '${pair#*=}'" >&2; exit 2; }
done
[[ "$USE_XNNPACK" =~ ^(true|false)$ ]] || { echo "android_benchmark.sh: --use_xnnpack must be true or false, got '$USE_XNNPACK'" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "android_benchmark.sh: model not found: $MODEL" >&2; exit 2; }
[ -n "$TOOL" ] && [ -f "$TOOL" ] || {
  echo "android_benchmark.sh: benchmark_model binary for the phone not found: '${TOOL}' (--tool or \$BENCHMARK_MODEL)" >&2; exit 2; }
command -v adb >/dev/null || { echo "android_benchmark.sh: adb not found on PATH" >&2; exit 2; }
[ "$(adb get-state 2>/dev/null)" = "device" ] || { echo "android_benchmark.sh: no phone attached (adb get-state)" >&2; exit 2; }

REMOTE=/data/local/tmp/kcaps
NAME="$(basename "$MODEL" .tflite)"
mkdir -p "$OUT"
adb shell mkdir -p "$REMOTE" >/dev/null
adb push "$TOOL" "$REMOTE/benchmark_model" >/dev/null
adb shell chmod 755 "$REMOTE/benchmark_model"
adb push "$MODEL" "$REMOTE/$NAME.tflite" >/dev/null

FLAGS="--graph=$REMOTE/$NAME.tflite --num_threads=$NUM_THREADS --warmup_runs=$WARMUP_RUNS"
FLAGS="$FLAGS --num_runs=$NUM_RUNS --use_xnnpack=$USE_XNNPACK --report_peak_memory_footprint=true"
if [ "$OP_PROFILING" = "true" ]; then
  FLAGS="$FLAGS --enable_op_profiling=true --profiling_output_csv_file=$REMOTE/$NAME.op_profile.csv"
fi
PREFIX=""; [ -n "$TASKSET" ] && PREFIX="taskset $TASKSET "
echo "adb shell ${PREFIX}$REMOTE/benchmark_model $FLAGS"
adb shell "${PREFIX}$REMOTE/benchmark_model $FLAGS > $REMOTE/$NAME.benchmark.txt 2>&1"
adb pull "$REMOTE/$NAME.benchmark.txt" "$OUT/$NAME.benchmark.txt" >/dev/null
if [ "$OP_PROFILING" = "true" ]; then
  adb pull "$REMOTE/$NAME.op_profile.csv" "$OUT/$NAME.op_profile.csv" >/dev/null
fi
cat "$OUT/$NAME.benchmark.txt"

# The project's .venv unless $PYTHON names another interpreter.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3; [ -x "$(dirname "$0")/../.venv/bin/python" ] && PYTHON="$(dirname "$0")/../.venv/bin/python"
fi
# Parse it with the deployment library alone (kcaps_tflite.benchmark; the flags were parsed above):
# this script needs neither the application nor TensorFlow.
PYTHONPATH="$(cd "$(dirname "$0")" && pwd)${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c '
import sys
from kcaps_tflite import benchmark
model, text, json_path, threads, warmup, runs, xnnpack = sys.argv[1:]
result = benchmark.parse_output_file(text, model, int(threads), int(warmup), int(runs),
                                     xnnpack.lower() in ("1", "true", "yes", "on"))
print("result:", benchmark.write_result(result, json_path))
' "$MODEL" "$OUT/$NAME.benchmark.txt" "$OUT/$NAME.benchmark.json" "$NUM_THREADS" \
  "$WARMUP_RUNS" "$NUM_RUNS" "$USE_XNNPACK"
