"""Build TFLite Micro firmware for emulated Cortex-M boards, and the same sources for the host.

Only what one model needs is compiled: TFLite Micro's core (interpreter, allocator, planner,
flatbuffer parsing: ~40 files), the kernels of the model's operators (read from the flatbuffer)
and, with `kernels="cmsis_nn"`, the CMSIS-NN C files those kernels call (followed through their
`arm_*` calls). The op resolver (`MicroMutableOpResolver<N>` with one `Add...()` per operator) is
generated from the same list, so a kernel the model does not use is neither compiled nor linked.

Compiled libraries are cached outside the repository, in `$KCAPS_CACHE/tflm` (default
`~/.cache/kcaps/tflm`): one entry for the core per (TFLite Micro revision, target, flags) and one
for the kernels per (revision, target, kernel set, operators). An entry is built in a temporary
directory and renamed into place at the end, so a failed or interrupted build leaves nothing
half-filled.

The TFLite Micro tree comes from `tflm_dir`, else `$KCAPS_TFLM_DIR`, else `../shared/tflm` next to
the repository when it exists (`find_tflm`). Its third-party code (CMSIS, CMSIS-NN, flatbuffers,
gemmlowp, ruy) must sit in `tensorflow/lite/micro/tools/make/downloads/`, as TFLM's
`make ... third_party_downloads` leaves it.

Targets: `TARGETS["cortex-m4" | "cortex-m7" | "cortex-m55"]` (Debian's `gcc-arm-none-eabi`,
newlib with semihosting) and `TARGETS["host"]` (the machine's `g++`, reference kernels only: the
bit-exact reference for the firmware's outputs).

>>> from kcaps_tflite import firmware_build
>>> firmware_build.TARGETS.get("cortex-m55").cpu_flags[0]
'-mcpu=cortex-m55'
>>> firmware_build.TARGETS.get("cortex-m0")
Traceback (most recent call last):
...
ValueError: unknown target 'cortex-m0'; valid targets: cortex-m4, cortex-m55, cortex-m7, host
"""
import concurrent.futures
import dataclasses
import fcntl
import functools
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from kcaps.registry import Registry

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# tflite/firmware/ in a checkout (editable install); a wheel installs the same files as data
# under <prefix>/share/kcaps/firmware (pyproject.toml, [tool.setuptools.data-files]).
FIRMWARE_SOURCES = next((path for path in (pathlib.Path(__file__).resolve().parents[1] / "firmware",
                                           pathlib.Path(sys.prefix) / "share" / "kcaps" / "firmware")
                         if (path / "harness.cc").is_file()),
                        pathlib.Path(__file__).resolve().parents[1] / "firmware")
DEBIAN_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "libstdc++-arm-none-eabi-dev",
                   "qemu-system-arm")
INSTALL_COMMAND = ("apt-get install -y --no-install-recommends " + " ".join(DEBIAN_PACKAGES))
TFLM_REVISION = "90b983c2b3f1480642e040bbd2ddb37b998f3424"
TFLM_HOWTO = (f"git clone https://github.com/tensorflow/tflite-micro DIR && cd DIR && git checkout "
              f"{TFLM_REVISION} && make -f tensorflow/lite/micro/tools/make/Makefile "
              f"third_party_downloads; then pass --tflm-dir DIR or set KCAPS_TFLM_DIR=DIR")
KERNEL_SETS = ("cmsis_nn", "reference")
BUILD_VERSION = "1"  # bump when the flags or the file selection below change (cache key)
DOWNLOADS = "tensorflow/lite/micro/tools/make/downloads"
MICRO = "tensorflow/lite/micro"


class FirmwareError(RuntimeError):
    """A firmware build or run failed; the message carries the tool's output."""


class ToolchainMissingError(FirmwareError):
    """The cross compiler, newlib, the C++ headers or QEMU are not installed."""


class TFLMSourcesError(FileNotFoundError):
    """No usable TFLite Micro tree."""


class FirmwareOpError(ValueError):
    """The model has an operator the firmware's kernels lack."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A compiler target: its tools and the flags that select the core."""

    name: str
    cc: str
    cxx: str
    ar: str
    cpu_flags: tuple
    defines: tuple = ()

    @property
    def is_host(self):
        return self.name == "host"


TARGETS = Registry("target")
for _core in ("cortex-m4", "cortex-m7", "cortex-m55"):
    TARGETS.register(_core, Target(
        _core, "arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-ar",
        (f"-mcpu={_core}", "-mfpu=auto", "-mfloat-abi=hard", "-mthumb")))
TARGETS.register("host", Target("host", "gcc", "g++", "ar", (),
                                  ("-DKCAPS_HOST", "-DKCAPS_HOST_ARENA_BYTES=67108864")))

COMMON_FLAGS = ("-O2", "-funsigned-char", "-ffunction-sections", "-fdata-sections",
                "-DTF_LITE_STATIC_MEMORY", "-Wno-unused-parameter")
CXX_FLAGS = ("-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics")
C_FLAGS = ("-std=c11",)
# Core files that the harness replaces (micro_time: SysTick clock) or that only tests use.
CORE_EXCLUDED = {"micro_time.cc", "fake_micro_context.cc", "mock_micro_graph.cc",
                 "test_helpers.cc", "test_helper_custom_ops.cc"}


def toolchain_problem(target="cortex-m4"):
    """None when the tools for `target` are installed, else what is missing and how to install."""
    target = TARGETS.get(target) if isinstance(target, str) else target
    if target.is_host:
        missing = [tool for tool in (target.cc, target.cxx, target.ar) if not shutil.which(tool)]
        return f"host compiler missing: {', '.join(missing)}" if missing else None
    missing = [tool for tool in (target.cc, target.cxx, target.ar, "qemu-system-arm")
               if not shutil.which(tool)]
    if not missing:
        library = subprocess.run([target.cc, "-print-file-name=librdimon.a"],
                                 capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(library):
            missing.append("newlib (librdimon.a)")
        probe = subprocess.run([target.cxx, "-E", "-x", "c++", "-", "-o", os.devnull],
                               input="#include <cstdint>\n#include <algorithm>\n",
                               capture_output=True, text=True)
        if probe.returncode:
            missing.append("the C++ headers (<cstdint>)")
    if not missing:
        return None
    return (f"firmware toolchain missing: {', '.join(missing)}. Install the Debian packages "
            f"{', '.join(DEBIAN_PACKAGES)}: sudo {INSTALL_COMMAND}")


def check_toolchain(target="cortex-m4"):
    problem = toolchain_problem(target)
    if problem:
        raise ToolchainMissingError(problem)


def find_tflm(tflm_dir=None):
    """The TFLite Micro tree: `tflm_dir`, `$KCAPS_TFLM_DIR`, or `../shared/tflm` if it exists."""
    if tflm_dir is None:
        tflm_dir = os.environ.get("KCAPS_TFLM_DIR")
    if tflm_dir is None:
        default = REPO_ROOT.parent / "shared" / "tflm"
        if not default.is_dir():
            raise TFLMSourcesError(f"TFLite Micro sources not found: no --tflm-dir, no "
                                   f"KCAPS_TFLM_DIR and no {default}. To get them: {TFLM_HOWTO}")
        tflm_dir = default
    tflm_dir = pathlib.Path(tflm_dir).expanduser().resolve()
    needed = [f"{MICRO}/micro_interpreter.cc", f"{DOWNLOADS}/flatbuffers/include",
              f"{DOWNLOADS}/gemmlowp", f"{DOWNLOADS}/cmsis_nn/Source"]
    missing = [path for path in needed if not (tflm_dir / path).exists()]
    if missing:
        raise TFLMSourcesError(f"{tflm_dir} is not a TFLite Micro tree with its third-party "
                               f"downloads (missing {', '.join(missing)}). To get one: "
                               f"{TFLM_HOWTO}")
    return tflm_dir


def tflm_revision(tflm_dir):
    """The tree's git revision (its `.git` or the MANIFEST.md of ../shared/tflm)."""
    tflm_dir = pathlib.Path(tflm_dir)
    if (tflm_dir / ".git").exists():
        result = subprocess.run(["git", "-C", str(tflm_dir), "rev-parse", "HEAD"],
                                capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.strip()
    manifest = tflm_dir / "MANIFEST.md"
    if manifest.exists():
        found = re.search(r"tflite-micro \| `\.` \| ([0-9a-f]{40})", manifest.read_text())
        if found:
            return found.group(1)
    stamp = hashlib.sha256()
    for path in sorted((tflm_dir / MICRO).glob("*.cc")):
        stamp.update(f"{path.name}:{path.stat().st_size}".encode())
    return "unknown-" + stamp.hexdigest()[:12]


def cache_dir():
    """Where compiled TFLite Micro libraries are kept (outside the repository)."""
    root = os.environ.get("KCAPS_CACHE")
    base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache" / "kcaps"
    return base / "tflm"


def include_flags(tflm_dir):
    d = pathlib.Path(tflm_dir) / DOWNLOADS
    return [f"-I{tflm_dir}", f"-I{d}/flatbuffers/include", f"-I{d}/gemmlowp", f"-I{d}/ruy",
            f"-I{d}/cmsis_nn", f"-I{d}/cmsis_nn/Include", f"-I{d}/cmsis/CMSIS/Core/Include"]


def core_sources(tflm_dir):
    """TFLite Micro's runtime without kernels: relative paths, sorted."""
    tflm_dir = pathlib.Path(tflm_dir)
    sources = [p for p in (tflm_dir / MICRO).glob("*.cc")
               if not p.name.endswith("_test.cc") and p.name not in CORE_EXCLUDED]
    for sub in ("arena_allocator", "memory_planner", "tflite_bridge"):
        sources += [p for p in (tflm_dir / MICRO / sub).glob("*.cc")
                    if not p.name.endswith("_test.cc")]
    # TensorFlow Lite files the runtime shares (TFLM's TFL_CC_SRCS, less array.cc).
    for top in ("tensorflow/lite", "tensorflow/compiler"):
        for p in (tflm_dir / top).rglob("*.c*"):
            rel = p.relative_to(tflm_dir).as_posix()
            if (p.suffix in (".cc", ".c") and not rel.startswith(MICRO + "/")
                    and "/experimental/" not in rel and p.name != "array.cc"
                    and not p.name.endswith("_test.cc")):
                sources.append(p)
    sources += [tflm_dir / MICRO / "kernels" / name
                for name in ("kernel_util.cc", "micro_tensor_utils.cc")]
    return sorted({p.relative_to(tflm_dir).as_posix() for p in sources})


@functools.lru_cache(maxsize=4)
def resolver_methods(tflm_dir=None):
    """`{builtin op name: MicroMutableOpResolver method}` read from TFLite Micro's header."""
    tflm_dir = find_tflm(tflm_dir)
    text = (tflm_dir / MICRO / "micro_mutable_op_resolver.h").read_text()
    methods = {}
    for method, body in re.findall(r"TfLiteStatus (Add\w+)\(([^{]*\{[^}]*)\}", text):
        found = re.search(r"AddBuiltin\(\s*BuiltinOperator_(\w+)", body)
        if found:
            methods.setdefault(found.group(1), method)
    return methods


def _registration_symbol(tflm_dir, method):
    """The `Register_X` a resolver method uses: its default argument (`registration =
    Register_X()`) or, for methods without one, the call inside its `AddBuiltin(...)`."""
    text = (tflm_dir / MICRO / "micro_mutable_op_resolver.h").read_text()
    found = re.search(rf"TfLiteStatus {method}\([^)]*?=\s*(?:tflite::)?(\w+)\(\)", text, re.S)
    if found:
        return found.group(1)
    body = re.search(rf"TfLiteStatus {method}\(\)\s*\{{([^}}]*)\}}", text)
    found = body and re.search(r"AddBuiltin\(\s*BuiltinOperator_\w+,\s*(?:tflite::)?"
                               r"(Register_\w+)\(\)", body.group(1))
    return found.group(1) if found else None


@functools.lru_cache(maxsize=4)
def _kernel_definitions(tflm_dir):
    """`{Register_X symbol: kernel file}` over TFLite Micro's reference kernels."""
    definitions = {}
    for path in sorted((tflm_dir / MICRO / "kernels").glob("*.cc")):
        if path.name.endswith("_test.cc"):
            continue
        for symbol in re.findall(r"TFLMRegistration\s+(Register_\w+)\(\)\s*\{", path.read_text()):
            definitions.setdefault(symbol, path.name)
    return definitions


def kernel_plan(ops, kernels="cmsis_nn", tflm_dir=None):
    """The resolver methods and kernel files for builtin `ops`; FirmwareOpError names the lacking.

    Returns `(methods, kernel_files)`: `{op: method}` in the given order, and relative paths of
    the kernel sources (the CMSIS-NN variant of a kernel where `kernels="cmsis_nn"` has one,
    with the `<kernel>_common.cc` it shares with the reference kernel).
    """
    if kernels not in KERNEL_SETS:
        raise ValueError(f"unknown kernels {kernels!r}; valid: {', '.join(KERNEL_SETS)}")
    tflm_dir = find_tflm(tflm_dir)
    methods_of = resolver_methods(tflm_dir)
    definitions = _kernel_definitions(tflm_dir)
    methods, files, lacking = {}, set(), []
    for op in ops:
        method = methods_of.get(op)
        symbol = _registration_symbol(tflm_dir, method) if method else None
        if symbol is None or symbol not in definitions:
            lacking.append(op)
            continue
        methods[op] = method
        name = definitions[symbol]
        stem = name[:-3]
        optimized = tflm_dir / MICRO / "kernels" / "cmsis_nn" / name
        if kernels == "cmsis_nn" and optimized.exists():
            files.add(f"{MICRO}/kernels/cmsis_nn/{name}")
        else:
            files.add(f"{MICRO}/kernels/{name}")
        for extra in (f"{stem}_common.cc",):
            if (tflm_dir / MICRO / "kernels" / extra).exists():
                files.add(f"{MICRO}/kernels/{extra}")
    if lacking:
        raise FirmwareOpError(f"the TFLite Micro kernels in {tflm_dir} lack operator(s) "
                              f"{', '.join(lacking)} (no MicroMutableOpResolver method or no "
                              f"kernel registration)")
    return methods, sorted(files)


def cmsis_nn_sources(kernel_files, tflm_dir):
    """CMSIS-NN C files the CMSIS-NN kernels call, followed through their `arm_*` calls.

    Every `arm_*` function defined in a CMSIS-NN C file (at the start of a line, as CMSIS-NN
    writes its definitions) maps to that file; the files of the functions the kernels name are
    taken, then the files of the functions those name, until nothing new appears.
    """
    tflm_dir = pathlib.Path(tflm_dir)
    source_root = tflm_dir / DOWNLOADS / "cmsis_nn" / "Source"
    defined_in, texts = {}, {}
    for path in sorted(source_root.rglob("*.c")):
        if path.stem.endswith(("_f16", "_f32")) or path.name == "arm_nntables_flt.c":
            continue
        texts[path] = path.read_text(errors="replace")
        for name in re.findall(r"^[A-Za-z_][\w \t\*]*?\b(arm_\w+)\s*\(", texts[path], re.M):
            defined_in.setdefault(name, path)
        for name in re.findall(r"^(?:const\s+)?[\w]+\s+(arm_\w+)\s*\[", texts[path], re.M):
            defined_in.setdefault(name, path)  # tables (arm_nntables.c)
    queue = [(tflm_dir / f).read_text(errors="replace") for f in kernel_files if "/cmsis_nn/" in f]
    wanted = set()
    while queue:
        for name in set(re.findall(r"\barm_\w+", queue.pop())):
            path = defined_in.get(name)
            if path is not None and path not in wanted:
                wanted.add(path)
                queue.append(texts[path])
    return sorted(p.relative_to(tflm_dir).as_posix() for p in wanted)


def _flags(target, tflm_dir, cmsis_nn):
    flags = list(target.cpu_flags) + list(COMMON_FLAGS) + list(target.defines)
    if cmsis_nn:
        flags.append("-DCMSIS_NN")
    return flags + include_flags(tflm_dir)


def _compile_all(target, tflm_dir, sources, out_dir, flags, jobs):
    """Compile `sources` (relative to tflm_dir) into `out_dir`; FirmwareError with the output."""
    def one(source):
        obj = out_dir / (source.replace("/", "__").rsplit(".", 1)[0] + ".o")
        is_c = source.endswith(".c")
        command = ([target.cc] + flags + list(C_FLAGS) if is_c
                   else [target.cxx] + flags + list(CXX_FLAGS))
        command += ["-c", str(tflm_dir / source), "-o", str(obj)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise FirmwareError(f"compiling {source} for {target.name} failed:\n"
                                f"{' '.join(command)}\n{result.stderr[-4000:]}")
        return obj

    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, sources))


def _archive(target, objects, library):
    result = subprocess.run([target.ar, "rcs", str(library)] + [str(o) for o in objects],
                            capture_output=True, text=True)
    if result.returncode:
        raise FirmwareError(f"{target.ar} failed for {library.name}: {result.stderr}")


def _jobs(jobs):
    return int(jobs or os.environ.get("KCAPS_BUILD_JOBS") or os.cpu_count() or 1)


def _cached_build(name, key, build, log):
    """The cache entry `name-key`, made by `build(tmp_dir)` in a temporary directory first."""
    root = cache_dir()
    entry = root / f"{name}-{key}"
    if (entry / "DONE").exists():
        log(f"cached {entry}")
        return entry, True
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first one's build
        if (entry / "DONE").exists():
            log(f"cached {entry}")
            return entry, True
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
        try:
            build(tmp)
            (tmp / "DONE").write_text("ok\n")
            if entry.exists():  # a half-filled entry left by an older layout: replace it
                shutil.rmtree(entry)
            os.rename(tmp, entry)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return entry, False


def _key(*parts):
    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Libraries:
    """The compiled TFLite Micro pieces for one (target, kernels, ops)."""

    target: str
    kernels: str
    ops: tuple
    methods: dict
    core: pathlib.Path  # libtflm_core.a
    kernel_library: pathlib.Path  # libtflm_kernels.a
    cmsis_nn: pathlib.Path | None  # libcmsis_nn.a
    tflm_dir: pathlib.Path
    revision: str
    seconds: float
    cached: bool
    objects_built: int

    @property
    def archives(self):
        return [p for p in (self.kernel_library, self.cmsis_nn, self.core) if p]


def build_libraries(ops, target="cortex-m4", kernels="cmsis_nn", tflm_dir=None, jobs=None,
                    log=print):
    """Compile (or find in the cache) TFLite Micro's core and the kernels of `ops`."""
    import time

    start = time.perf_counter()
    target = TARGETS.get(target) if isinstance(target, str) else target
    if target.is_host:
        kernels = "reference"
    check_toolchain(target)
    tflm_dir = find_tflm(tflm_dir)
    revision = tflm_revision(tflm_dir)
    methods, kernel_files = kernel_plan(ops, kernels, tflm_dir)
    use_cmsis = kernels == "cmsis_nn"
    jobs = _jobs(jobs)
    built = [0]

    core_files = core_sources(tflm_dir)
    core_flags = _flags(target, tflm_dir, False)  # one core for both kernel sets
    kernel_flags = _flags(target, tflm_dir, use_cmsis)

    def build_core(tmp):
        log(f"compiling TFLite Micro core for {target.name}: {len(core_files)} files")
        objects = _compile_all(target, tflm_dir, core_files, tmp, core_flags, jobs)
        built[0] += len(objects)
        _archive(target, objects, tmp / "libtflm_core.a")
        for obj in objects:
            obj.unlink()

    core_entry, core_cached = _cached_build(
        f"core-{target.name}",
        _key(BUILD_VERSION, revision, target, core_flags, core_files), build_core, log)

    cmsis_files = cmsis_nn_sources(kernel_files, tflm_dir) if use_cmsis else []

    def build_kernels(tmp):
        log(f"compiling {len(kernel_files)} kernel files and {len(cmsis_files)} CMSIS-NN files "
            f"for {target.name} ({kernels}: {', '.join(ops)})")
        objects = _compile_all(target, tflm_dir, kernel_files, tmp, kernel_flags, jobs)
        _archive(target, objects, tmp / "libtflm_kernels.a")
        if cmsis_files:
            cmsis = _compile_all(target, tflm_dir, cmsis_files, tmp, kernel_flags, jobs)
            _archive(target, cmsis, tmp / "libcmsis_nn.a")
            objects += cmsis
        built[0] += len(objects)
        for obj in objects:
            obj.unlink()

    kernel_entry, kernels_cached = _cached_build(
        f"kernels-{target.name}-{kernels}",
        _key(BUILD_VERSION, revision, target, kernel_flags, kernels, sorted(ops), kernel_files,
             cmsis_files), build_kernels, log)
    cmsis_library = kernel_entry / "libcmsis_nn.a"
    return Libraries(target.name, kernels, tuple(ops), methods, core_entry / "libtflm_core.a",
                     kernel_entry / "libtflm_kernels.a",
                     cmsis_library if cmsis_library.exists() else None, tflm_dir, revision,
                     time.perf_counter() - start, core_cached and kernels_cached, built[0])


def write_resolver(methods, path, operators=0):
    """`kcaps_ops.h`: the op count, `kcaps_register_ops(resolver)` adding each operator, and
    the profiler's slots (`operators`, the model's operator count, plus a few)."""
    lines = [f"// Generated by kcaps_tflite.firmware_build: the model's {len(methods)} operators.",
             "#ifndef KCAPS_OPS_H_", "#define KCAPS_OPS_H_",
             '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"', "",
             f"#define KCAPS_OP_COUNT {max(1, len(methods))}",
             f"#define KCAPS_MAX_EVENTS {int(operators) + 8}", "",
             "static TfLiteStatus kcaps_register_ops(",
             "    tflite::MicroMutableOpResolver<KCAPS_OP_COUNT>& resolver) {"]
    for op, method in methods.items():
        lines.append(f"  if (resolver.{method}() != kTfLiteOk) return kTfLiteError;  // {op}")
    lines += ["  return kTfLiteOk;", "}", "", "#endif  // KCAPS_OPS_H_", ""]
    path = pathlib.Path(path)
    path.write_text("\n".join(lines))
    return path


def compile_program(libraries, model_c, work_dir, jobs=None, defines=(), operators=0):
    """Compile the harness, the start-up code and the model's C array into objects (in
    `work_dir`). `work_dir` comes first on the include path, on purpose: its `kcaps_ops.h` (the
    op resolver of this build) wins over one next to `model_c`, which may be another build's;
    `model_data.h` (declarations only, the same for every model) is found next to `model_c`."""
    target = TARGETS.get(libraries.target)
    work_dir = pathlib.Path(work_dir)
    write_resolver(libraries.methods, work_dir / "kcaps_ops.h", operators)
    flags = _flags(target, libraries.tflm_dir, libraries.kernels == "cmsis_nn")
    flags += [f"-I{work_dir}", f"-I{pathlib.Path(model_c).parent}", *defines]
    sources = [(FIRMWARE_SOURCES / "harness.cc", flags), (pathlib.Path(model_c), flags)]
    if not target.is_host:
        sources.append((FIRMWARE_SOURCES / "startup.c", flags))
    objects = []

    def one(item):
        source, source_flags = item
        obj = work_dir / (source.stem + ".o")
        command = ([target.cc] + source_flags + list(C_FLAGS) if source.suffix == ".c"
                   else [target.cxx] + source_flags + list(CXX_FLAGS))
        command += ["-c", str(source), "-o", str(obj)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise FirmwareError(f"compiling {source.name} failed:\n{' '.join(command)}\n"
                                f"{result.stderr[-4000:]}")
        return obj

    with concurrent.futures.ThreadPoolExecutor(_jobs(jobs)) as pool:
        objects = list(pool.map(one, sources))
    return objects


def link(libraries, objects, output, linker_script=None, map_path=None):
    """Link `objects` with the libraries into `output` (an ELF, or the host program)."""
    target = TARGETS.get(libraries.target)
    archives = [str(a) for a in libraries.archives]
    if target.is_host:
        command = [target.cxx, "-O2", *map(str, objects), *archives, "-lm", "-o", str(output)]
    else:
        command = [target.cc, *target.cpu_flags, "-nostartfiles", "--specs=rdimon.specs",
                   "-Wl,--gc-sections", f"-Wl,-Map={map_path}", "-T", str(linker_script),
                   *map(str, objects), "-Wl,--start-group", *archives, "-lm", "-lc", "-lrdimon",
                   "-lgcc", "-Wl,--end-group", "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        return result.stderr
    return None
