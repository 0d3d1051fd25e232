"""An int8 model as TFLite Micro firmware on emulated Cortex-M boards (QEMU), measured.

`run(model, board, kernels, x)` builds the firmware (`kcaps_tflite.firmware_build`: TFLite Micro
compiled for the board's core with only the model's kernels, the harness in `tflite/firmware/`,
the model as a C array, a static arena), runs it under `qemu-system-arm` with semihosting on the
inputs `x`, and returns the `firmware` report (a dict, also written as JSON):

- agreement: the firmware's int8 outputs against a host (x86) build of the same TFLite Micro
  sources with reference kernels, made by the same build code (identical, or the count of
  differing values), and against the Python `tflite-micro` interpreter (top-1 agreement, largest
  difference in LSB; that wheel is newer than the sources, so single values may differ).
- instructions: instructions per inference counted by the emulator: QEMU runs with
  `-icount shift=0` (every guest instruction advances virtual time by 1 ns) and the harness reads
  SysTick on the processor clock, so one tick is `1e9 / clock_hz` instructions (40 on the MPS2
  boards, 31.25 on MPS3). These are emulated instruction counts, not cycles: QEMU has no timing
  model. The estimated latency assumes one cycle per instruction at the board's nominal clock.
- profile: per operator, from TFLite Micro's MicroProfiler on the same clock, with the share of
  the capsule layers' routing (`kcaps_tflite.graph` names each operator's part).
- sizes: flash (text + rodata + data) split into model, TFLite Micro, kernels (TFLite Micro's and
  CMSIS-NN), C library and harness from the linker map; RAM (data + bss + heap + stack + arena);
  the arena TFLite Micro actually used; budgets against `kcaps_tflite.micro.TARGETS`.

The arena is sized by the firmware itself: a first run with all free RAM as the arena reports
what AllocateTensors used, and the firmware is relinked with that (rounded up to 16 bytes, plus 16).

Errors: an unknown board or kernel set (ValueError listing the valid ones), a missing toolchain
(`ToolchainMissingError` naming the Debian packages), missing TFLite Micro sources
(`TFLMSourcesError` naming the directory and how to get it), an operator the kernels lack
(`FirmwareOpError`), a model or arena that does not fit the board (`FirmwareSizeError` with the
sizes), an emulator crash or HardFault (`FirmwareCrashError` with the output) and a hang
(`FirmwareTimeoutError`).

>>> from kcaps_tflite import firmware
>>> firmware.BOARDS.get("mps3-an547").target
'cortex-m55'
>>> firmware.BOARDS.get("stm32")
Traceback (most recent call last):
...
ValueError: unknown board 'stm32'; valid boards: mps2-an386, mps2-an500, mps3-an547
"""
import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np

from kcaps.registry import Registry
from kcaps_tflite import c_export, files, firmware_build, graph
from kcaps_tflite.firmware_build import (FirmwareError, FirmwareOpError,  # noqa: F401 (re-export)
                                         TFLMSourcesError, ToolchainMissingError)

KIB = 1024
STACK_BYTES = 16 * KIB
HEAP_BYTES = 16 * KIB
QEMU = "qemu-system-arm"


class FirmwareSizeError(ValueError):
    """The model or its arena does not fit the board's memory."""


class FirmwareCrashError(FirmwareError):
    """The firmware faulted (HardFault, ...), failed, or the emulator crashed."""


class FirmwareTimeoutError(FirmwareError):
    """The firmware did not finish in time (a hang)."""


@dataclasses.dataclass(frozen=True)
class Board:
    """A QEMU board: machine, core, where code and data go, the processor clock."""

    name: str
    machine: str
    cpu: str | None
    target: str  # kcaps_tflite.firmware_build.TARGETS
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    clock_hz: int
    description: str

    def qemu_command(self, elf, icount=True):
        command = [QEMU, "-M", self.machine]
        if self.cpu:
            command += ["-cpu", self.cpu]
        command += ["-display", "none", "-monitor", "none", "-serial", "null",
                    "-semihosting-config", "enable=on,target=native"]
        if icount:
            command += ["-icount", "shift=0"]
        return command + ["-kernel", str(elf)]


BOARDS = Registry("board")
BOARDS.register("mps2-an386", Board(
    "mps2-an386", "mps2-an386", "cortex-m4", "cortex-m4", 0x0, 4096 * KIB, 0x20000000,
    4096 * KIB, 25_000_000, "Arm MPS2 AN386, Cortex-M4 (FPU, DSP), 4 MB SSRAM1 + 4 MB SSRAM2/3"))
BOARDS.register("mps2-an500", Board(
    "mps2-an500", "mps2-an500", "cortex-m7", "cortex-m7", 0x0, 4096 * KIB, 0x20000000,
    4096 * KIB, 25_000_000, "Arm MPS2 AN500, Cortex-M7 (FPU, DSP), 4 MB SSRAM1 + 4 MB SSRAM2/3"))
BOARDS.register("mps3-an547", Board(
    "mps3-an547", "mps3-an547", None, "cortex-m55", 0x10000000, 512 * KIB, 0x30000000,
    512 * KIB, 32_000_000, "Arm MPS3 AN547, Cortex-M55 (MVE), 512 KB ITCM + 512 KB DTCM "
                           "(secure aliases)"))


def _linker_script(board, path, arena_bytes):
    template = (firmware_build.FIRMWARE_SOURCES / "link.ld.in").read_text()
    values = {"FLASH_ORIGIN": hex(board.flash_origin), "FLASH_LENGTH": hex(board.flash_bytes),
              "RAM_ORIGIN": hex(board.ram_origin), "RAM_LENGTH": hex(board.ram_bytes),
              "STACK_SIZE": hex(STACK_BYTES), "HEAP_SIZE": hex(HEAP_BYTES),
              "ARENA_SIZE": hex(arena_bytes)}
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    path.write_text(template)
    return path


# ---------------------------------------------------------------------------------------------
# Linker map -> flash and RAM


_SECTION = re.compile(r"^(\.[\w.]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")
_INPUT = re.compile(r"^ (\S+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
FLASH_SECTIONS = (".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".init_array", ".data")
RAM_SECTIONS = (".data", ".bss", ".heap", ".stack", ".arena")


def _part_of(path):
    name = path.strip()
    if "model_data.o" in name:
        return "model"
    if "libtflm_core.a" in name:
        return "tflm"
    if "libtflm_kernels.a" in name:
        return "kernels"
    if "libcmsis_nn.a" in name:
        return "cmsis_nn"
    if any(lib in name for lib in ("libc.a", "libm.a", "librdimon", "libgcc.a", "libg.a",
                                   "libc_nano", "libnosys")):
        return "c_library"
    if "harness.o" in name or "startup.o" in name:
        return "harness"
    return "other"


def map_sizes(map_text):
    """`{output section: size}` and `{part: flash bytes}` from a GNU ld map file."""
    text = map_text.split("Linker script and memory map", 1)[-1]
    sections, parts, cursor = {}, {}, {}
    current, pending = None, None
    for line in text.splitlines():
        top = _SECTION.match(line)
        if top:
            current = top.group(1)
            sections[current] = int(top.group(3), 16)
            pending = None
            continue
        if re.match(r"^\.[\w.]+\s*$", line):  # long output section name, numbers on the next line
            current, pending = line.strip(), "section"
            continue
        if pending == "section":
            nums = re.match(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", line)
            if nums:
                sections[current] = int(nums.group(2), 16)
            pending = None
            continue
        if current not in FLASH_SECTIONS:
            continue
        found = _INPUT.match(line)
        if not found:
            continue
        address, size, where = int(found.group(2), 16), int(found.group(3), 16), found.group(4)
        if size == 0 or not (".o" in where or ".a(" in where):
            continue
        # Merged string sections overlap (the linker lists each input's original extent): count
        # only the bytes past the end of what was already counted.
        start, end = max(address, cursor.get(current, 0)), address + size
        if end > start:
            part = _part_of(where)
            parts[part] = parts.get(part, 0) + end - start
            cursor[current] = end
    return sections, parts


def sizes_from_map(map_text, arena_used=None, stack_used=None, heap_used=None):
    sections, parts = map_sizes(map_text)
    flash = sum(sections.get(s, 0) for s in FLASH_SECTIONS)
    parts["padding"] = flash - sum(parts.values())
    ram = {s.lstrip("."): sections.get(s, 0) for s in RAM_SECTIONS}
    return {
        "flash_bytes": flash,
        "flash_parts": {**parts, "kernels_total": parts.get("kernels", 0)
                        + parts.get("cmsis_nn", 0)},
        "text_bytes": sections.get(".text", 0), "rodata_bytes": sections.get(".rodata", 0),
        "data_bytes": sections.get(".data", 0),
        "ram_bytes": sum(ram.values()), "ram_parts": ram,
        "arena_used_bytes": arena_used, "stack_used_bytes": stack_used,
        "heap_used_bytes": heap_used,
    }


# ---------------------------------------------------------------------------------------------
# Running


def _parse(output):
    values, profile = {}, []
    ticks = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("KCAPS "):
            _, key, value = line.split(" ", 2)
            if key == "invoke_ticks":
                ticks.append(int(value))
            else:
                values[key] = int(value)
        elif line.startswith("KCAPS_OP "):
            _, index, tag, tick = line.split()
            profile.append((int(index), tag, int(tick)))
    return values, ticks, profile


def _execute(command, cwd, timeout, what):
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        partial = (error.stdout or b"")
        partial = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        raise FirmwareTimeoutError(f"{what} did not finish in {timeout:g} s (a hang?); output so "
                                   f"far:\n{partial[-3000:]}") from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        fault = re.search(r"KCAPS_FAULT .*", output)
        if fault:
            raise FirmwareCrashError(f"{what} crashed: {fault.group(0)}\noutput:\n"
                                     f"{output[-3000:]}")
        if result.returncode < 0:
            raise FirmwareCrashError(f"{what}: the emulator crashed (signal "
                                     f"{-result.returncode}); output:\n{output[-3000:]}")
        raise FirmwareCrashError(f"{what} failed with exit status {result.returncode}; "
                                 f"output:\n{output[-3000:]}")
    return output


def run_elf(board, elf, cwd, timeout=60, icount=True):
    """Run an ELF on `board` under QEMU in `cwd`; its output, or the crash / timeout error."""
    board = BOARDS.get(board) if isinstance(board, str) else board
    return _execute(board.qemu_command(elf, icount), cwd, timeout, f"{elf} on {board.name}")


def _overflow(message, board, model_bytes):
    found = re.findall(r"region `(\w+)' overflowed by (\d+) bytes", message)
    if not found:
        return None
    parts = []
    for region, extra in found:
        size = board.flash_bytes if region == "FLASH" else board.ram_bytes
        kind = "flash" if region == "FLASH" else "RAM"
        parts.append(f"{kind}: needs {size + int(extra)} bytes, the board has {size}")
    return FirmwareSizeError(f"the firmware does not fit {board.name} ({'; '.join(parts)}; the "
                             f"model alone is {model_bytes} bytes)")


def _input_details(data):
    from kcaps_tflite import verify

    interpreter = verify.load_interpreter(data)
    return interpreter.get_input_details(), interpreter.get_output_details()


@dataclasses.dataclass
class Build:
    """A linked firmware (or host program) for one model."""

    board: str
    kernels: str
    work_dir: pathlib.Path
    program: pathlib.Path
    map_path: pathlib.Path | None
    libraries: firmware_build.Libraries
    arena_bytes: int | None
    graph: "graph.Graph"  # the model's operators, as `_prepare` read them
    model_c: pathlib.Path  # the model as C source (`c_export`), as `_prepare` wrote it


def _prepare(data, source, work_dir, target, kernels, tflm_dir, jobs, log, clock_hz=0,
             like=None):
    """Read the model, compile the libraries and the program's objects; `like`: a `Build` of
    the same model whose graph and C source are reused instead of read and exported again."""
    if like is None:
        g = graph.read(data, source)
        custom = sorted({op.name for op in g.operators if op.custom})
        if custom:
            raise FirmwareOpError(f"{source}: TFLite Micro firmware runs builtin operators only; "
                                  f"custom operator(s) {', '.join(custom)}")
    else:
        g = like.graph
    ops = list(g.op_counts())
    libraries = firmware_build.build_libraries(ops, target, kernels, tflm_dir, jobs, log)
    if like is None:
        model_c = c_export.export_c(data, work_dir, source=source)[1]
    else:
        model_c = like.model_c
    objects = firmware_build.compile_program(libraries, model_c, work_dir, jobs,
                                             [f"-DKCAPS_CLOCK_HZ={clock_hz}"],
                                             len(g.operators))
    return g, model_c, libraries, objects


def build_firmware(model, board="mps2-an386", kernels="cmsis_nn", work_dir=None, tflm_dir=None,
                   arena_bytes=None, jobs=None, timeout=120, log=print, source=None):
    """Compile and link the firmware; size its arena by a first run unless `arena_bytes` given."""
    board = BOARDS.get(board)
    if kernels not in firmware_build.KERNEL_SETS:
        raise ValueError(f"unknown kernels {kernels!r}; valid: "
                         f"{', '.join(firmware_build.KERNEL_SETS)}")
    data, source = files.model_bytes(model, source)
    if len(data) > board.flash_bytes:
        raise FirmwareSizeError(f"{source}: the model alone is {len(data)} bytes; {board.name} "
                                f"has {board.flash_bytes} bytes for code and constants")
    firmware_build.check_toolchain(board.target)
    work_dir = pathlib.Path(work_dir or tempfile.mkdtemp(prefix="kcaps-firmware-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    g, model_c, libraries, objects = _prepare(data, source, work_dir, board.target, kernels,
                                              tflm_dir, jobs, log, board.clock_hz)
    elf, map_path, script = work_dir / "firmware.elf", work_dir / "firmware.map", \
        work_dir / "link.ld"

    def link(arena):
        _linker_script(board, script, arena)
        error = firmware_build.link(libraries, objects, elf, script, map_path)
        if error:
            raise _overflow(error, board, len(data)) or FirmwareError(
                f"linking the firmware for {board.name} failed:\n{error[-4000:]}")

    probe_dir = work_dir / "probe"

    def probe(arena):
        """Run the firmware linked with `arena` bytes on the zero input; its output."""
        return _execute(board.qemu_command(elf, icount=False), probe_dir, timeout,
                        f"the firmware on {board.name} (arena probe, {arena} bytes)")

    if arena_bytes is None:
        link(16)  # where the arena would start: all RAM after it becomes the probe arena
        sections, _ = map_sizes(map_path.read_text())
        used = sum(sections.get(s, 0) for s in (".data", ".bss", ".heap", ".stack"))
        free = (board.ram_bytes - used - 64) // 16 * 16
        link(free)
        probe_dir.mkdir(exist_ok=True)
        record = _input_details(data)[0][0]  # one zero input for every probe
        (probe_dir / "inputs.bin").write_bytes(bytes(int(np.prod(record["shape"]))
                                                     * np.dtype(record["dtype"]).itemsize))
        try:
            output = probe(free)
        except FirmwareCrashError as error:
            if "KCAPS_ERROR allocate" in str(error):
                raise FirmwareSizeError(
                    f"{source}: the tensor arena does not fit {board.name}: all {free} bytes of "
                    f"RAM left after code data, heap and stack are too few; TFLite Micro "
                    f"said:\n{str(error)[-1500:]}") from None
            raise
        values, _, _ = _parse(output)
        arena_bytes = -(-values["arena_used"] // 16) * 16 + 16
        # `arena_used_bytes()` leaves out the memory planner's temporary lists, which
        # AllocateTensors also needs (40 bytes per planned buffer): with few activations (a small
        # model) they are more than the plan. Relink at the used size and grow until it allocates.
        while True:
            link(arena_bytes)
            try:
                probe(arena_bytes)
                break
            except FirmwareCrashError as error:
                if "KCAPS_ERROR allocate" not in str(error) or arena_bytes >= free:
                    raise
                arena_bytes = min(free, arena_bytes + max(256, arena_bytes // 8 // 16 * 16))
        log(f"arena: TFLite Micro used {values['arena_used']} bytes; linking {arena_bytes}")
    else:
        link(int(arena_bytes))
    return Build(board.name, kernels, work_dir, elf, map_path, libraries, int(arena_bytes), g,
                 model_c)


def build_host(model, work_dir=None, tflm_dir=None, jobs=None, log=print, source=None):
    """The same TFLite Micro sources built for this machine (reference kernels)."""
    data, source = files.model_bytes(model, source)
    return _build_host(data, source, work_dir, tflm_dir, jobs, log)


def _build_host(data, source, work_dir, tflm_dir, jobs, log, like=None):
    """`build_host`; `like`: a firmware `Build` of the same model, whose C source it compiles."""
    work_dir = pathlib.Path(work_dir or tempfile.mkdtemp(prefix="kcaps-host-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    g, model_c, libraries, objects = _prepare(data, source, work_dir, "host", "reference",
                                              tflm_dir, jobs, log, like=like)
    program = work_dir / "host_model"
    error = firmware_build.link(libraries, objects, program)
    if error:
        raise FirmwareError(f"linking the host build failed:\n{error[-4000:]}")
    return Build("host", "reference", work_dir, program, None, libraries, None, g, model_c)


def _run_program(build, inputs, timeout, icount=True):
    """Run a build on int8 input records; return (outputs bytes, parsed values, ticks, profile)."""
    run_dir = build.work_dir / ("run" if build.board != "host" else "host_run")
    run_dir.mkdir(exist_ok=True)
    (run_dir / "inputs.bin").write_bytes(inputs.tobytes())
    if (run_dir / "outputs.bin").exists():
        (run_dir / "outputs.bin").unlink()
    if build.board == "host":
        command, what = [str(build.program)], "the host build"
    else:
        board = BOARDS.get(build.board)
        command, what = board.qemu_command(build.program, icount), \
            f"the firmware on {board.name}"
    start = time.perf_counter()
    output = _execute(command, run_dir, timeout, what)
    seconds = time.perf_counter() - start
    values, ticks, profile = _parse(output)
    if values.get("samples") != len(inputs):
        raise FirmwareCrashError(f"{what} ran {values.get('samples')} of {len(inputs)} "
                                 f"inputs; output:\n{output[-3000:]}")
    (run_dir / "output.txt").write_text(output)
    return (run_dir / "outputs.bin").read_bytes(), values, ticks, profile, seconds


def _plugin():
    """The instruction-counting TCG plugin (tflite/firmware/icount_plugin.c), built once."""
    source = firmware_build.FIRMWARE_SOURCES / "icount_plugin.c"
    command = ["gcc", "-shared", "-fPIC", "-O2"]

    def build(tmp):
        result = subprocess.run(command + ["-o", str(tmp / "icount_plugin.so"), str(source)],
                                capture_output=True, text=True)
        if result.returncode:
            raise FirmwareError(f"building the QEMU plugin failed:\n{result.stderr}")

    entry, _ = firmware_build._cached_build(
        "icount-plugin", firmware_build._key(command, source.read_text()), build, lambda _: None)
    return entry / "icount_plugin.so"


def plugin_instructions(build, records, timeout=300):
    """Instructions per Invoke counted by a TCG plugin, with SysTick's count from the same run.

    Returns `(plugin counts, SysTick-derived counts)`, one per input: the cross-check of the two
    ways of counting.
    """
    board = BOARDS.get(build.board)
    symbols = subprocess.run(["arm-none-eabi-nm", str(build.program)], capture_output=True,
                             text=True).stdout
    address = {name: int(value, 16) & ~1 for value, _, name in
               (line.split() for line in symbols.splitlines() if len(line.split()) == 3)}
    plugin = (f"{_plugin()},begin={address['kcaps_invoke_begin']:#x},"
              f"end={address['kcaps_invoke_end']:#x}")
    run_dir = build.work_dir / "plugin_run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "inputs.bin").write_bytes(records.tobytes())
    command = board.qemu_command(build.program)
    command[-2:-2] = ["-plugin", plugin, "-d", "plugin"]  # qemu_plugin_outs writes to the log
    output = _execute(command, run_dir, timeout, f"the firmware on {board.name} (plugin)")
    counts = [int(line.split()[1]) for line in output.splitlines()
              if line.startswith("KCAPS_PLUGIN ")]
    _, ticks, _ = _parse(output)
    return counts, [t * 1e9 / board.clock_hz for t in ticks]


def _outputs(raw, output_details, count):
    """Split the harness's output records into per-output arrays `(count, ...)`."""
    sizes = [int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in output_details]
    records = np.frombuffer(raw, np.uint8).reshape(count, sum(sizes))
    arrays, offset = [], 0
    for detail, size in zip(output_details, sizes):
        chunk = records[:, offset:offset + size].copy()
        arrays.append(chunk.view(detail["dtype"]).reshape(count, *detail["shape"][1:]))
        offset += size
    return arrays


def quantize_inputs(data, x):
    """Float inputs `(n, ...)` -> the model's input records (int8 with its scale/zero point)."""
    return _quantize(_input_details(data)[0], x)


def _quantize(inputs, x):
    """`quantize_inputs` with the model's input details already read."""
    from kcaps_tflite import verify

    if len(inputs) != 1:
        raise ValueError(f"the firmware harness feeds one input tensor; the model has "
                         f"{len(inputs)}")
    detail = inputs[0]
    x = np.asarray(x)
    shape = tuple(detail["shape"][1:])
    if x.shape[1:] != shape and int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise ValueError(f"inputs of shape {x.shape[1:]} do not match the model's input {shape}")
    if x.dtype == detail["dtype"]:
        return x.reshape(len(x), *shape)
    return verify.quantize(x.reshape(len(x), *shape), detail)


def _python_outputs(data, records, source):
    from kcaps_tflite import micro

    interpreter = micro.MicroInterpreter(data, micro.find_arena_size(data, source), source)
    return np.stack([interpreter.invoke(r[None]).reshape(-1) for r in records])


def _budgets(flash, ram):
    from kcaps_tflite import micro

    # the firmware's whole flash and RAM, not the model and arena that `check_budget` names
    return [{k: v for k, v in micro.check_budget(flash, ram, target).items()
             if k not in ("model_bytes", "arena_bytes")} for target in micro.TARGETS.values()]


def run(model, board="mps2-an386", kernels="cmsis_nn", x=None, y=None, output_dir=None,
        json_path=None, tflm_dir=None, arena_bytes=None, timeout=300, reference=True,
        python_reference=True, cross_check=False, jobs=None, log=print, source=None):
    """Build the firmware for `board`, run it on `x`, measure; the `firmware` report (a dict).

    Args:
      model: int8 `.tflite` bytes or path.
      board: a name from `BOARDS`.
      kernels: "cmsis_nn" (optimized kernels, the default) or "reference".
      x: inputs `(n, ...)`: float (quantized with the model's parameters) or the input dtype.
      y: optional labels for the accuracy.
      output_dir: where the build, the ELF, the map and the run files go (default: a temp dir).
      json_path: also write the report there.
      reference: compare with a host build of the same sources (bit for bit).
      python_reference: compare with the Python tflite-micro interpreter (top-1, LSB).
      timeout: seconds before a run counts as a hang.
      cross_check: also count instructions with the TCG plugin (`plugin_instructions`).
    """
    board = BOARDS.get(board)
    data, source = files.model_bytes(model, source)
    if x is None:
        raise ValueError("firmware.run needs inputs x (n, ...)")
    input_details, output_details = _input_details(data)
    records = _quantize(input_details, x)
    started = time.perf_counter()
    output_dir = pathlib.Path(output_dir or tempfile.mkdtemp(prefix="kcaps-firmware-")).resolve()
    build = build_firmware(data, board.name, kernels, output_dir / f"{board.name}-{kernels}",
                           tflm_dir, arena_bytes, jobs, timeout, log, source)
    raw, values, ticks, profile, seconds = _run_program(build, records, timeout)
    outputs = _outputs(raw, output_details, len(records))
    g = build.graph
    per_tick = 1e9 / board.clock_hz
    instructions = np.asarray(ticks, np.float64) * per_tick
    report = {
        "board": board.name, "core": board.target, "kernels": kernels,
        "description": board.description, "model": source, "model_bytes": len(data),
        "ops": g.op_counts(), "samples": len(records),
        "tflm_revision": build.libraries.revision, "tflm_dir": str(build.libraries.tflm_dir),
        "elf": str(build.program), "map": str(build.map_path),
        "emulator_seconds": round(seconds, 2),
        "build": {"library_seconds": round(build.libraries.seconds, 1),
                  "cached": build.libraries.cached,
                  "objects_built": build.libraries.objects_built},
    }
    cost = {
        "counted_by": (f"QEMU -icount shift=0 (1 ns per instruction) with SysTick on the "
                       f"{board.clock_hz / 1e6:g} MHz processor clock: 1 tick = {per_tick:g} "
                       f"emulated instructions; emulated instruction counts, not cycles"),
        "instructions_per_inference": float(instructions.mean()),
        "instructions_min": float(instructions.min()),
        "instructions_max": float(instructions.max()),
        "allocate_tensors_instructions": values.get("allocate_ticks", 0) * per_tick,
        "estimated_ms_at_nominal_clock": float(instructions.mean() / board.clock_hz * 1e3),
        "latency_assumes": f"1 cycle per instruction at {board.clock_hz / 1e6:g} MHz",
    }
    if cross_check:
        counts, systick = plugin_instructions(build, records, timeout)
        cost["plugin_instructions_per_inference"] = float(np.mean(counts))
        cost["plugin_minus_systick_max"] = float(np.max(np.abs(np.subtract(counts, systick))))
        cost["plugin_note"] = ("TCG plugin: every executed guest instruction between markers "
                               "around Invoke; SysTick resolution is one tick")
    report["cost"] = cost
    parts = g.parts()
    rows, total = [], sum(t for _, _, t in profile) or 1
    for index, tag, tick in profile:
        op = g.operators[index] if index < len(g.operators) else None
        rows.append({"index": index, "op": tag, "part": parts[index] if op else None,
                     "instructions": tick * per_tick, "share": tick / total})
    routing = sum(r["share"] for r in rows if r["part"] == graph.ROUTING)
    report["profile"] = {"operators": rows, "routing_share": routing,
                         "projection_share": sum(r["share"] for r in rows
                                                 if r["part"] == graph.PROJECTION),
                         "profiled_instructions": total * per_tick}
    sizes = sizes_from_map(build.map_path.read_text(), values.get("arena_used"),
                           values.get("stack_used"), values.get("heap_used"))
    sizes["arena_linked_bytes"] = build.arena_bytes
    sizes["budgets"] = _budgets(sizes["flash_bytes"], sizes["ram_bytes"])
    report["sizes"] = sizes
    agreement = {}
    first = outputs[0].reshape(len(records), -1)
    if y is not None:
        agreement["accuracy"] = float(np.mean(first.argmax(-1) == np.asarray(y).reshape(-1)))
    if reference:
        host = _build_host(data, source, output_dir / "host", tflm_dir, jobs, log, like=build)
        host_raw, _, _, _, _ = _run_program(host, records, timeout)
        host_outputs = _outputs(host_raw, output_details, len(records))
        host_first = host_outputs[0].reshape(len(records), -1)
        differing = int(sum(np.sum(a != b) for a, b in zip(outputs, host_outputs)))
        agreement["host_identical"] = differing == 0
        agreement["host_differing_values"] = differing
        agreement["host_top1_agreement"] = float(np.mean(first.argmax(-1)
                                                         == host_first.argmax(-1)))
    if python_reference:
        python = _python_outputs(data, records, source)
        agreement["python_top1_agreement"] = float(np.mean(first.argmax(-1)
                                                           == python.argmax(-1)))
        agreement["python_max_lsb_difference"] = int(np.max(np.abs(
            first.astype(np.int64) - python.astype(np.int64))))
        agreement["python_differing_samples"] = int(np.sum(np.any(first != python, axis=-1)))
    report["agreement"] = agreement
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["outputs_path"] = str(build.work_dir / "run" / "outputs.bin")
    if json_path:
        files.write_text(pathlib.Path(json_path), json.dumps(report, indent=2, default=str))
    return report


def format_report(report):
    """The `firmware` section of a report, as text lines."""
    c, s, a = report["cost"], report["sizes"], report.get("agreement", {})
    parts = s["flash_parts"]
    lines = [
        f"firmware          {report['board']} ({report['core']}, {report['kernels']} kernels), "
        f"{report['samples']} inputs",
        f"instructions      {c['instructions_per_inference'] / 1e6:.2f} M per inference "
        f"(emulated instruction counts, not cycles; ~{c['estimated_ms_at_nominal_clock']:.1f} ms "
        f"at {c['latency_assumes']})",
        *([f"TCG plugin        {c['plugin_instructions_per_inference'] / 1e6:.4f} M per inference "
           f"(largest difference to SysTick {c['plugin_minus_systick_max']:.0f} instructions)"]
          if "plugin_instructions_per_inference" in c else []),
        f"routing share     {report['profile']['routing_share']:.1%} of the profiled "
        f"instructions (projection {report['profile']['projection_share']:.1%})",
        f"flash             {s['flash_bytes']:,} B: model {parts.get('model', 0):,}, TFLM "
        f"{parts.get('tflm', 0):,}, kernels {parts.get('kernels_total', 0):,} (CMSIS-NN "
        f"{parts.get('cmsis_nn', 0):,}), C library {parts.get('c_library', 0):,}, harness "
        f"{parts.get('harness', 0):,}",
        f"RAM               {s['ram_bytes']:,} B (arena {s['ram_parts']['arena']:,}, used "
        f"{s['arena_used_bytes']:,}; stack used {s['stack_used_bytes']:,} of "
        f"{s['ram_parts']['stack']:,}; heap {s['ram_parts']['heap']:,})",
    ]
    if "host_identical" in a:
        lines.append(f"vs host build     {'identical int8 outputs' if a['host_identical'] else str(a['host_differing_values']) + ' differing values'}")
    if "python_top1_agreement" in a:
        lines.append(f"vs Python TFLM    top-1 {a['python_top1_agreement']:.1%}, largest "
                     f"difference {a['python_max_lsb_difference']} LSB")
    fits = [b["target"] for b in s["budgets"] if b["fits"]]
    lines.append(f"fits              {', '.join(fits) or 'none of ' + ', '.join(b['target'] for b in s['budgets'])}")
    return lines


def run_firmware(model, board="mps2-an386", kernels="cmsis_nn", inputs=None, labels=None,
                 **kwargs):
    """`run` for the deployment pipeline (`kcaps_tflite.pipeline`): the headline figures as
    scalars (the report's table) and the whole report under `details`."""
    report = run(model, board, kernels, inputs, labels, log=kwargs.pop("log", lambda _: None),
                 **kwargs)
    c, s, a = report["cost"], report["sizes"], report["agreement"]
    return {
        "instructions_per_inference": round(c["instructions_per_inference"]),
        "instruction_count": "emulated (QEMU -icount, SysTick), not cycles",
        "routing_share": round(report["profile"]["routing_share"], 4),
        "flash_bytes": s["flash_bytes"], "flash_model_bytes": s["flash_parts"].get("model", 0),
        "flash_tflm_bytes": s["flash_parts"].get("tflm", 0),
        "flash_kernels_bytes": s["flash_parts"].get("kernels_total", 0),
        "ram_bytes": s["ram_bytes"], "arena_used_bytes": s["arena_used_bytes"],
        "host_identical": a.get("host_identical"),
        "python_top1_agreement": a.get("python_top1_agreement"),
        "python_max_lsb_difference": a.get("python_max_lsb_difference"),
        "details": report,
    }


def available():
    """None when firmware can be built and run here, else why not (the install command)."""
    problem = firmware_build.toolchain_problem()
    if problem:
        return problem
    try:
        firmware_build.find_tflm()
    except TFLMSourcesError as error:
        return str(error)
    return None


def _cleanup(path):
    shutil.rmtree(path, ignore_errors=True)
