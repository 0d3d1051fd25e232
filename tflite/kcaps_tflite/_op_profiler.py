"""Child process of `kcaps_tflite.profile`: LiteRT's per-operator profile of a model.

    python -m kcaps_tflite._op_profiler M.tflite NUM_THREADS WARMUP_RUNS NUM_RUNS USE_XNNPACK

LiteRT's C API (libLiteRt.so, shipped in ai-edge-litert) has the profiler that the C++
benchmark tool's `--enable_op_profiling` prints: the runtime option `enable_profiling` attaches
it to the interpreter, and `LiteRtGetProfileSummary` formats its events with TFLite's
ProfileSummarizer, the same tables ("Run Order", "Top by Computation Time", "Summary by node
type"). The Python API does not expose it, so this calls the C API through ctypes: compile the
model on the CPU with profiling on, run `WARMUP_RUNS` untimed, then `NUM_RUNS` with the profiler
started, and print the summary.

Inputs are left as allocated (zeros), as the value does not change the work of these kernels.
It runs in its own process because a mistake in a C call would take its process down.
"""
import ctypes
import os
import sys

P = ctypes.c_void_p
SIZE = ctypes.c_size_t
HW_ACCELERATOR_CPU = 1
# Identifiers and TOML payloads of LiteRT's opaque options (litert/c/options/*.cc).
RUNTIME_OPTIONS = "runtime_options_string"
CPU_OPTIONS = "xnnpack"


def _library():
    import ai_edge_litert

    lib = ctypes.CDLL(os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so"))
    signatures = {
        "LiteRtCreateEnvironment": [ctypes.c_int, P, ctypes.POINTER(P)],
        "LiteRtCreateModelFromFile": [P, ctypes.c_char_p, ctypes.POINTER(P)],
        "LiteRtCreateOptions": [ctypes.POINTER(P)],
        "LiteRtSetOptionsHardwareAccelerators": [P, ctypes.c_int],
        "LiteRtCreateOpaqueOptions": [ctypes.c_char_p, P, P, ctypes.POINTER(P)],
        "LiteRtAddOpaqueOptions": [P, P],
        "LiteRtCreateCompiledModel": [P, P, P, ctypes.POINTER(P)],
        "LiteRtGetModelSignature": [P, SIZE, ctypes.POINTER(P)],
        "LiteRtGetNumSignatureInputs": [P, ctypes.POINTER(SIZE)],
        "LiteRtGetNumSignatureOutputs": [P, ctypes.POINTER(SIZE)],
        "LiteRtGetSignatureInputTensorByIndex": [P, SIZE, ctypes.POINTER(P)],
        "LiteRtGetSignatureOutputTensorByIndex": [P, SIZE, ctypes.POINTER(P)],
        "LiteRtGetRankedTensorType": [P, ctypes.c_char_p],
        "LiteRtGetCompiledModelInputBufferRequirements": [P, SIZE, SIZE, ctypes.POINTER(P)],
        "LiteRtGetCompiledModelOutputBufferRequirements": [P, SIZE, SIZE, ctypes.POINTER(P)],
        "LiteRtCreateManagedTensorBufferFromRequirements": [P, ctypes.c_char_p, P,
                                                            ctypes.POINTER(P)],
        "LiteRtRunCompiledModel": [P, SIZE, SIZE, ctypes.POINTER(P), SIZE, ctypes.POINTER(P)],
        "LiteRtCompiledModelGetProfiler": [P, ctypes.POINTER(P)],
        "LiteRtResetProfiler": [P],
        "LiteRtStartProfiler": [P],
        "LiteRtStopProfiler": [P],
        "LiteRtGetProfileSummary": [P, P, ctypes.POINTER(ctypes.c_char_p)],
    }
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, ctypes.c_int
    return lib


def _check(status, call):
    if status != 0:
        raise RuntimeError(f"LiteRT C API {call} returned status {status}")


def profile(model_path, num_threads, warmup_runs, num_runs, use_xnnpack):
    """The ProfileSummarizer text of `num_runs` profiled runs."""
    lib = _library()
    libc = ctypes.CDLL(None)
    libc.strdup.restype, libc.strdup.argtypes = P, [ctypes.c_char_p]
    free = ctypes.cast(libc.free, P)

    environment, model, options, compiled = P(), P(), P(), P()
    _check(lib.LiteRtCreateEnvironment(0, None, ctypes.byref(environment)), "CreateEnvironment")
    _check(lib.LiteRtCreateModelFromFile(environment, os.fsencode(model_path),
                                         ctypes.byref(model)), "CreateModelFromFile")
    _check(lib.LiteRtCreateOptions(ctypes.byref(options)), "CreateOptions")
    _check(lib.LiteRtSetOptionsHardwareAccelerators(options, HW_ACCELERATOR_CPU), "SetAccelerators")
    kernel_mode = "delegate" if use_xnnpack else "builtin"
    for identifier, toml in ((RUNTIME_OPTIONS, "enable_profiling = true\n"),
                             (CPU_OPTIONS, f"num_threads = {max(num_threads, 0)}\n"
                                           f"kernel_mode = \"{kernel_mode}\"\n")):
        opaque = P()
        payload = libc.strdup(toml.encode())  # LiteRT frees it with `free` when done
        _check(lib.LiteRtCreateOpaqueOptions(identifier.encode(), payload, free,
                                             ctypes.byref(opaque)), "CreateOpaqueOptions")
        _check(lib.LiteRtAddOpaqueOptions(options, opaque), "AddOpaqueOptions")
    _check(lib.LiteRtCreateCompiledModel(environment, model, options, ctypes.byref(compiled)),
           "CreateCompiledModel")

    signature = P()
    _check(lib.LiteRtGetModelSignature(model, 0, ctypes.byref(signature)), "GetModelSignature")

    def buffers(kind):
        count = SIZE()
        _check(getattr(lib, f"LiteRtGetNumSignature{kind}s")(signature, ctypes.byref(count)),
               f"GetNumSignature{kind}s")
        made = []
        for k in range(count.value):
            tensor, requirements, buffer = P(), P(), P()
            _check(getattr(lib, f"LiteRtGetSignature{kind}TensorByIndex")(
                signature, k, ctypes.byref(tensor)), "GetSignatureTensor")
            tensor_type = ctypes.create_string_buffer(1024)  # LiteRtRankedTensorType, opaque
            _check(lib.LiteRtGetRankedTensorType(tensor, tensor_type), "GetRankedTensorType")
            _fix_batch_dimension(tensor_type)
            _check(getattr(lib, f"LiteRtGetCompiledModel{kind}BufferRequirements")(
                compiled, 0, k, ctypes.byref(requirements)), "GetBufferRequirements")
            _check(lib.LiteRtCreateManagedTensorBufferFromRequirements(
                environment, tensor_type, requirements, ctypes.byref(buffer)), "CreateBuffer")
            made.append(buffer)
        return (P * len(made))(*made), len(made)

    (inputs, num_inputs), (outputs, num_outputs) = buffers("Input"), buffers("Output")

    def run():
        _check(lib.LiteRtRunCompiledModel(compiled, 0, num_inputs, inputs, num_outputs, outputs),
               "RunCompiledModel")

    for _ in range(warmup_runs):
        run()
    profiler = P()
    _check(lib.LiteRtCompiledModelGetProfiler(compiled, ctypes.byref(profiler)), "GetProfiler")
    _check(lib.LiteRtResetProfiler(profiler), "ResetProfiler")
    _check(lib.LiteRtStartProfiler(profiler), "StartProfiler")
    for _ in range(num_runs):
        run()
    _check(lib.LiteRtStopProfiler(profiler), "StopProfiler")
    summary = ctypes.c_char_p()
    _check(lib.LiteRtGetProfileSummary(profiler, compiled, ctypes.byref(summary)),
           "GetProfileSummary")
    return summary.value.decode(errors="replace")


def _fix_batch_dimension(tensor_type):
    """Signature tensors keep the converter's dynamic batch (-1); buffers need a size: use 1.

    LiteRtRankedTensorType starts with the element type (int32) and the layout: a 32-bit word
    holding the rank in its low bits, then int32 dimensions.
    """
    words = (ctypes.c_int32 * 10).from_buffer(tensor_type)
    rank = words[1] & 0x7F
    for k in range(2, 2 + min(rank, 8)):
        if words[k] < 0:
            words[k] = 1


def main(argv):
    model_path, num_threads, warmup_runs, num_runs, use_xnnpack = argv
    text = profile(model_path, int(num_threads), int(warmup_runs), int(num_runs),
                   use_xnnpack.lower() in ("1", "true", "yes"))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
