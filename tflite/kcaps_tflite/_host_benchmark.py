"""Child process of `kcaps_tflite.benchmark`: the official LiteRT benchmark tool, plus memory.

    python -m kcaps_tflite._host_benchmark RESULT.json --model M.tflite --num_threads 1 \
        --warmup_runs 1 --num_runs 50 [--use_xnnpack false]

Runs `ai_edge_litert.tools.benchmark_litert_model` (the Python port of LiteRT's C++ benchmark
tool, shipped in ai-edge-litert) with its own flag parser and its own timing, and prints its
report. Two things the port lacks are added around it, without touching its measurements:

- `--use_xnnpack false`: the CPU kernel mode of the compiled model becomes BUILTIN (TFLite's own
  kernels) instead of the XNNPACK delegate, as `--use_xnnpack=false` does in the C++ tool;
- memory, as the C++ tool reports it: the resident-set growth from the start of the tool to the
  end of initialization (`init`) and of the whole run (`overall`), and the peak resident set
  (`peak`, from the kernel's high-water mark, reset at the start of the tool).

It runs in its own process so that its memory figures are its own, and so that the tool's
`sys.exit` on bad input cannot end the caller.
"""
import json
import sys


def _status_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB -> MB
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def main(argv):
    result_path, tool_argv = argv[0], argv[1:]
    use_xnnpack = True
    if "--use_xnnpack" in tool_argv:  # ours, not the port's: take it out before the port parses
        k = tool_argv.index("--use_xnnpack")
        use_xnnpack = tool_argv[k + 1].lower() in ("1", "true", "yes")
        del tool_argv[k:k + 2]

    from ai_edge_litert import cpu_kernel_mode
    from ai_edge_litert.tools import benchmark_litert_model as tool

    sys.argv = ["benchmark_litert_model", *tool_argv]
    args = tool.parse_args()
    memory = {}
    peak_tracked = _reset_peak()
    start = _status_mb("VmRSS")

    import_litert = tool._import_litert

    def import_litert_recording_init():
        classes = list(import_litert())
        compiled_model = classes[0]

        class CompiledModelRecordingInit:  # the tool only calls `from_file`
            @staticmethod
            def from_file(*args, **kwargs):
                model = compiled_model.from_file(*args, **kwargs)
                memory["init"] = _status_mb("VmRSS") - start
                return model

        classes[0] = CompiledModelRecordingInit
        return tuple(classes)

    create_model_options = tool.create_model_options

    def create_model_options_with_kernel_mode(args, options, cpu_options, accelerators):
        model_options = create_model_options(args, options, cpu_options, accelerators)
        if not use_xnnpack:
            model_options.cpu_options.kernel_mode = cpu_kernel_mode.CpuKernelMode.BUILTIN
        return model_options

    tool._import_litert = import_litert_recording_init
    tool.create_model_options = create_model_options_with_kernel_mode
    results = tool.run_benchmark(args)
    memory["overall"] = _status_mb("VmRSS") - start
    memory["peak"] = _status_mb("VmHWM") if peak_tracked else None
    sys.stdout.flush()
    with open(result_path, "w") as f:
        json.dump({"tool": results, "memory_mb": memory, "use_xnnpack": use_xnnpack}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
