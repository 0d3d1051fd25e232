"""Run an int8 model in TFLite Micro (the `tflite-micro` package): kernels, arena, budget.

- `check_ops(model)`: every operator of the model must have a TFLite Micro kernel. The kernels are
  read from the runtime library itself (its exported `tflite::micro::Register_<OP>` symbols), so
  the check matches the TFLite Micro build that runs here.
- `find_arena_size(model)`: the smallest tensor arena (bytes) with which the interpreter allocates
  and runs the model, found by bisection to 16 bytes (TFLite Micro's alignment).
- `MicroInterpreter`: a model running in TFLite Micro with a given arena; `predict(x)` quantizes
  float inputs with the model's own parameters and dequantizes the outputs.
- `check_budget(flash, arena, target)`: against named microcontroller classes (`TARGETS`).
- `analyze(model, x)`: all of the above plus top-1 agreement with LiteRT on real inputs, against
  LiteRT's default engine (XNNPACK) and against TFLite's builtin kernels. XNNPACK requantizes
  its int8 convolutions in fp32 where TFLite Micro and the builtin kernels use fixed-point
  multipliers, so single values differ by one step and rare near-ties flip; with
  `kcaps_tflite.int8_sums` the builtin kernels give TFLite Micro's top-1 on every image tried.

Errors name what is wrong: `MicroOpError` the operator (and its types), `ArenaTooSmallError` the
arena given and the smallest that works.

>>> from kcaps_tflite import micro
>>> micro.TARGETS["cortex-m7"].sram_bytes // 1024
320
"""
import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

from kcaps_tflite import files, graph

KIB = 1024
ARENA_ALIGNMENT = 16
MAX_ARENA_BYTES = 256 * KIB * KIB  # 256 MiB: beyond any microcontroller


class MicroOpError(ValueError):
    """The model has an operator (or operator type) TFLite Micro has no kernel for."""


class ArenaTooSmallError(ValueError):
    """The tensor arena is too small for the model."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A microcontroller class: flash holds the model, SRAM holds the tensor arena."""

    name: str
    flash_bytes: int
    sram_bytes: int
    description: str


TARGETS = {
    "cortex-m7": Target("cortex-m7", 1024 * KIB, 320 * KIB,
                        "Cortex-M7 board class, 1 MB flash / 320 KB SRAM (e.g. STM32F746)"),
    "mcu-256k-128k": Target("mcu-256k-128k", 256 * KIB, 128 * KIB,
                            "256 KB flash / 128 KB SRAM class (e.g. STM32F411CC, Cortex-M4)"),
    "mcu-256k-64k": Target("mcu-256k-64k", 256 * KIB, 64 * KIB,
                           "256 KB flash / 64 KB SRAM class (e.g. STM32L432KC, Cortex-M4)"),
}


def _runtime():
    from tflite_micro.python.tflite_micro import runtime

    return runtime


@functools.lru_cache(maxsize=1)
def micro_kernels():
    """Names of the builtin operators the installed TFLite Micro runtime has kernels for."""
    library = ctypes.CDLL(_runtime()._runtime.__file__)
    kernels = set()
    for name in graph.OP_NAMES.values():
        symbol = f"Register_{name}"
        if hasattr(library, f"_ZN6tflite5micro{len(symbol)}{symbol}Ev"):
            kernels.add(name)
    return frozenset(kernels)


@contextlib.contextmanager
def _captured_stderr(log):
    """Collect what C++ code writes to file descriptor 2 (TFLite Micro's MicroPrintf) in `log`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            log.append(capture.read().decode(errors="replace").replace("\r", ""))


def check_ops(model, source=None):
    """Op coverage: `{op: count}` of the model; raise MicroOpError naming ops without a kernel."""
    data, source = files.model_bytes(model, source)
    g = graph.read(data, source)
    missing = sorted({op.name for op in g.operators if op.custom or op.name not in micro_kernels()})
    if missing:
        raise MicroOpError(f"{source}: TFLite Micro has no kernel for operator(s) "
                           f"{', '.join(missing)}; it runs builtin operators only, of which this "
                           f"runtime has {len(micro_kernels())}")
    return g.op_counts()


def _explain(log, source, arena_size, g):
    """Turn TFLite Micro's messages into the error that names the cause."""
    text = "".join(log)
    missing = re.findall(r"Didn't find op for builtin opcode '(\w+)'", text)
    if missing:
        return MicroOpError(f"{source}: TFLite Micro has no kernel for operator(s) "
                            f"{', '.join(sorted(set(missing)))}")
    node = re.search(r"Node (\w+) \(number (\d+)\) failed to (prepare|invoke)", text)
    short = re.search(r"Requested: (\d+), available (\d+), missing: (\d+)", text)
    # The memory planner keeps its bookkeeping in the arena too: in a small arena it runs out of
    # room for the buffer list ("Too many buffers (max is N)") before any tensor is placed.
    if short or "Failed starting model allocation" in text or "Too many buffers" in text:
        detail = (f" (an allocation of {short.group(1)} bytes found {short.group(2)} free)"
                  if short else "")
        return ArenaTooSmallError(f"{source}: a tensor arena of {arena_size} bytes is too small"
                                  f"{detail}")
    if node:
        op_type, index, stage = node.group(1), int(node.group(2)), node.group(3)
        types = ""
        if index < len(g.operators):
            types = f" on {'/'.join(g.operators[index].input_types)} inputs"
        reason = text.strip().splitlines()[0] if text.strip() else "no message"
        return MicroOpError(f"{source}: TFLite Micro's {op_type} kernel (operator {index}) failed "
                            f"to {stage}{types}: {reason}")
    return RuntimeError(f"{source}: TFLite Micro failed: {text.strip() or 'no message'}")


class MicroInterpreter:
    """An int8 model running in TFLite Micro with a fixed tensor arena.

    Raises MicroOpError for operators TFLite Micro lacks (checked before loading) or cannot run
    on the model's types, ArenaTooSmallError when `arena_size` does not fit the model (compared
    with `find_arena_size` first, because TFLite Micro may crash on a too-small arena).
    """

    def __init__(self, model, arena_size, source=None, _probe=False):
        self.data, self.source = files.model_bytes(model, source)
        self.graph = graph.read(self.data, self.source)
        self.arena_size = int(arena_size)
        check_ops(self.data, self.source)
        if not _probe:  # `_probe`: inside kcaps_tflite._arena_probe, which survives crashes
            smallest = find_arena_size(self.data, self.source)
            if self.arena_size < smallest:
                raise ArenaTooSmallError(f"{self.source}: a tensor arena of {self.arena_size} "
                                         f"bytes is too small; the smallest that works is "
                                         f"{smallest} bytes")
        log = []
        try:
            with _captured_stderr(log):
                self._interpreter = _runtime().Interpreter.from_bytes(
                    self.data, arena_size=self.arena_size)
        except RuntimeError:
            raise _explain(log, self.source, self.arena_size, self.graph) from None
        self.input_details = self._interpreter.get_input_details(0)
        self.output_details = self._interpreter.get_output_details(0)

    @staticmethod
    def _params(details):
        quant = details.get("quantization_parameters") or {}
        scales, zero_points = quant.get("scales", []), quant.get("zero_points", [])
        if len(scales):
            return float(scales[0]), int(zero_points[0])
        return None

    def invoke(self, x):
        """Run one example of the input tensor's own dtype; return the raw output tensor."""
        log = []
        try:
            with _captured_stderr(log):
                self._interpreter.set_input(x, 0)
                self._interpreter.invoke()
        except (RuntimeError, ValueError) as error:
            explained = _explain(log, self.source, self.arena_size, self.graph)
            if isinstance(explained, RuntimeError) and isinstance(error, ValueError):
                raise ValueError(f"{self.source}: {error}") from None
            raise explained from None
        return np.array(self._interpreter.get_output(0))

    def predict(self, x):
        """Float inputs `(n, *input_shape)` -> float outputs `(n, ...)`, one invoke per example."""
        from kcaps_tflite.verify import dequantize, quantize

        in_params, out_params = self._params(self.input_details), self._params(self.output_details)
        in_dtype, out_dtype = self.input_details["dtype"], self.output_details["dtype"]
        shape = tuple(self.input_details["shape"])
        outputs = []
        for example in np.asarray(x, np.float32):
            q = quantize(example.reshape(shape), {"dtype": in_dtype, "quantization": in_params}) \
                if in_params else example.reshape(shape).astype(in_dtype)
            y = self.invoke(q)
            outputs.append(dequantize(y, {"dtype": out_dtype, "quantization": out_params})
                           if out_params else y.astype(np.float32))
        return np.concatenate(outputs).reshape(len(outputs), -1)

    def arena_used_bytes(self):
        """Arena bytes in use as TFLite Micro's RecordingMicroAllocator reports them."""
        log = []
        with _captured_stderr(log):
            self._interpreter.print_allocations()
        found = re.search(r"Arena allocation total (\d+) bytes", "".join(log))
        return int(found.group(1)) if found else None


# Smallest working arena per model (sha256 of its bytes), from `find_arena_size`.
_SMALLEST_ARENA = {}


def _probe(data, source, low=0, high=0):
    """Run `kcaps_tflite._arena_probe` until it reports the smallest arena in (low, high]."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as f:
            f.write(data)
        for _ in range(64):
            result = subprocess.run(
                [sys.executable, "-m", "kcaps_tflite._arena_probe", path, str(low), str(high),
                 source], capture_output=True, text=True, timeout=3600)
            tried = None
            for line in result.stdout.splitlines():
                word, _, value = line.partition(" ")
                if word == "try":
                    tried = int(value)
                elif word in ("ok", "small"):
                    tried = None
                    if word == "ok":
                        high = int(value)
                    else:
                        low = int(value)
                elif word == "arena":
                    return int(value)
                elif word == "error":
                    kind, _, message = value.partition(" ")
                    errors = {"MicroOpError": MicroOpError,
                              "ArenaTooSmallError": ArenaTooSmallError}
                    raise errors.get(kind, RuntimeError)(message)
            if tried is None:
                raise RuntimeError(f"{source}: the TFLite Micro arena probe failed (exit "
                                   f"{result.returncode}): {result.stderr.strip()[-1500:]}")
            low = tried  # it crashed trying `tried` bytes: too small (module doc of the probe)
    raise RuntimeError(f"{source}: TFLite Micro kept crashing while the arena was searched")


def find_arena_size(model, source=None):
    """The smallest arena (bytes, multiple of 16) with which TFLite Micro loads and runs `model`.

    A model whose operators TFLite Micro cannot run raises MicroOpError instead. The sizes are
    tried in a child process (`kcaps_tflite._arena_probe`): TFLite Micro's native code can crash
    on an arena a little too small instead of reporting it.
    """
    data, source = files.model_bytes(model, source)
    check_ops(data, source)
    digest = hashlib.sha256(data).hexdigest()
    if digest not in _SMALLEST_ARENA:
        _SMALLEST_ARENA[digest] = _probe(data, source)
    return _SMALLEST_ARENA[digest]


def check_budget(flash_bytes, arena_bytes, target):
    """Does a model of `flash_bytes` with an arena of `arena_bytes` fit `target` (name or Target)?

    Flash holds the model's byte array; the interpreter's own code (tens of KB, depending on the
    kernels linked) comes on top and is not counted. SRAM holds the tensor arena.
    """
    if isinstance(target, str):
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
        target = TARGETS[target]
    return {
        "target": target.name, "description": target.description,
        "flash_bytes": target.flash_bytes, "sram_bytes": target.sram_bytes,
        "model_bytes": int(flash_bytes), "arena_bytes": int(arena_bytes),
        "flash_headroom_bytes": target.flash_bytes - int(flash_bytes),
        "sram_headroom_bytes": target.sram_bytes - int(arena_bytes),
        "fits": int(flash_bytes) <= target.flash_bytes and int(arena_bytes) <= target.sram_bytes,
    }


@dataclasses.dataclass
class MicroReport:
    """What `analyze` found for one model."""

    model_bytes: int
    arena_bytes: int
    op_counts: dict
    float_operators: list  # ops computing in float inside the int8 model (islands)
    budgets: list
    samples: int = 0
    agreement_with_litert: float | None = None  # LiteRT as it runs by default (XNNPACK)
    agreement_with_litert_builtin: float | None = None  # TFLite's builtin kernels
    max_output_difference: float | None = None  # |TFLite Micro - LiteRT| on dequantized outputs
    accuracy: float | None = None
    litert_accuracy: float | None = None

    def as_dict(self):
        return dataclasses.asdict(self)


def analyze(model, x=None, y=None, targets=tuple(TARGETS), arena_size=None, source=None,
            litert_scores=None):
    """Op coverage, smallest arena, budgets and (with inputs `x`) agreement with LiteRT.

    Args:
      model: int8 `.tflite` bytes or path.
      x: optional float inputs `(n, *input_shape)` to compare TFLite Micro with LiteRT.
      y: optional labels for both accuracies.
      targets: names from `TARGETS` to check the budget against.
      arena_size: run with this arena instead of the smallest one (ArenaTooSmallError if it
        does not fit).
      litert_scores: the model's outputs on `x` in LiteRT's default engine, when the caller has
        them already (`kcaps_tflite.pipeline` computed them to verify the model): not run again.
    """
    from kcaps_tflite import verify

    data, source = files.model_bytes(model, source)
    counts = check_ops(data, source)
    arena = find_arena_size(data, source) if arena_size is None else int(arena_size)
    interpreter = MicroInterpreter(data, arena, source)
    g = interpreter.graph
    report = MicroReport(
        model_bytes=len(data), arena_bytes=arena, op_counts=counts,
        float_operators=[f"{op.name}#{op.index}" for op in g.float_operators()
                         if op.name not in ("QUANTIZE", "DEQUANTIZE")],
        budgets=[check_budget(len(data), arena, t) for t in targets])
    if x is not None:
        micro_scores = interpreter.predict(x)
        if litert_scores is None:
            litert_scores = verify.predict(data, x)
        litert_scores = np.asarray(litert_scores, np.float32).reshape(len(micro_scores), -1)
        report.samples = len(micro_scores)
        builtin_scores = verify.predict(data, x, use_xnnpack=False).reshape(len(micro_scores), -1)
        report.agreement_with_litert = float(
            np.mean(micro_scores.argmax(-1) == litert_scores.argmax(-1)))
        report.agreement_with_litert_builtin = float(
            np.mean(micro_scores.argmax(-1) == builtin_scores.argmax(-1)))
        report.max_output_difference = float(np.max(np.abs(micro_scores - litert_scores)))
        if y is not None:
            y = np.asarray(y).reshape(-1)
            report.accuracy = float(np.mean(micro_scores.argmax(-1) == y))
            report.litert_accuracy = float(np.mean(litert_scores.argmax(-1) == y))
    return report
