"""Per-operator latency from LiteRT's profiler, and the share of it that is capsule routing.

`op_profile(model)` runs the model in LiteRT with the interpreter's op profiler on (the profiler
behind the C++ benchmark tool's `--enable_op_profiling=true`, reached through LiteRT's C API;
see `kcaps_tflite._op_profiler`) and returns its summary text and its "Run Order" rows.
`parse_profile(text)` reads that table, also from the C++ tool's own output.

`routing_share(model, rows)` adds the average time of every operator by the part of the model
it belongs to (`kcaps_tflite.graph.Graph.parts`: the layers, and inside a capsule layer the
projection u_hat = W u apart from the routing), and returns the routing's share of the total.

Attribution needs one profiler row per model operator, i.e. TFLite's builtin kernels
(`use_xnnpack=False`): with XNNPACK, the delegated operators become XNNPACK's own operators,
numbered inside each delegate partition, which no longer map to model operators.
"""
import dataclasses
import re
import subprocess
import sys

from kcaps_tflite import files, graph

_ROW = re.compile(
    r"^\s*(?P<type>\S.*?)\s+(?P<start>[\d.]+)\s+(?P<first>[\d.]+)\s+(?P<avg>[\d.]+)\s+"
    r"(?P<percent>[\d.]+)%\s+(?P<cdf>[\d.]+)%\s+(?P<mem>[\d.]+)\s+(?P<times>\d+)\s+"
    r"(?P<name>\S.*?)\s*$")
_REGULAR_RUNS = "Operator-wise Profiling Info for Regular Benchmark Runs"


@dataclasses.dataclass
class ProfileRow:
    """One operator of the "Run Order" table (times in milliseconds, as the table prints them)."""

    node_type: str
    first_ms: float
    avg_ms: float
    percent: float
    times_called: int
    name: str
    index: int  # the node index (`[...]:k`), or the row's position when the name has none
    delegate: bool


def parse_profile(text):
    """The rows of the first "Run Order" table of a profile summary.

    Reads LiteRT's `LiteRtGetProfileSummary` text and the C++ `benchmark_model
    --enable_op_profiling=true` output (where the regular-runs table follows the initialization
    one).
    """
    if _REGULAR_RUNS in text:
        text = text.split(_REGULAR_RUNS, 1)[1]
    if "Run Order" not in text:
        raise ValueError("no 'Run Order' table in the profile text")
    section = text.split("Run Order", 1)[1].split("\n", 1)[1]
    rows = []
    for line in section.splitlines()[1:]:  # skip the column header
        if not line.strip() or line.lstrip().startswith("="):
            break
        match = _ROW.match(line)
        if not match:
            continue
        name = match["name"]
        index = re.search(r":(\d+)$", name)
        rows.append(ProfileRow(
            node_type=match["type"], first_ms=float(match["first"]), avg_ms=float(match["avg"]),
            percent=float(match["percent"]), times_called=int(match["times"]), name=name,
            index=int(index.group(1)) if index else len(rows),
            delegate=name.startswith("[Delegate]") or "Delegate" in match["type"]))
    if not rows:
        raise ValueError("the 'Run Order' table of the profile text has no rows")
    return rows


@dataclasses.dataclass
class OpProfile:
    summary: str
    rows: list

    def total_ms(self):
        return sum(row.avg_ms for row in self.rows)


def op_profile(model, num_threads=1, warmup_runs=1, num_runs=50, use_xnnpack=False,
               timeout=600):
    """Profile a `.tflite` file's operators in LiteRT (see the module doc); an `OpProfile`."""
    path = str(model)
    files.read_tflite(path)  # a clear error for a missing or corrupt file, before the child
    result = subprocess.run(
        [sys.executable, "-m", "kcaps_tflite._op_profiler", path, str(num_threads),
         str(warmup_runs), str(num_runs), "true" if use_xnnpack else "false"],
        capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{path}: the LiteRT op profiler failed (exit {result.returncode}): "
                           f"{result.stderr.strip()[-1500:]}")
    return OpProfile(summary=result.stdout, rows=parse_profile(result.stdout))


def routing_share(model, rows):
    """Average milliseconds per model part and the routing's share of the total.

    Args:
      model: the profiled `.tflite` (bytes or path), to attribute operators to layers.
      rows: `ProfileRow`s of a builtin-kernel profile (`op_profile(..., use_xnnpack=False)`).
    Returns:
      `{"parts_ms": {part: ms}, "total_ms", "routing_ms", "routing_share", "projection_share"}`.
    """
    if any(row.delegate for row in rows):
        raise ValueError("operators ran inside a delegate (XNNPACK), whose profile rows do not "
                         "map to model operators; profile with use_xnnpack=False")
    parts = graph.read(model).parts()
    totals = {}
    for row in rows:
        if row.index >= len(parts):
            raise ValueError(f"profile row {row.name!r} names node {row.index}, but the model "
                             f"has {len(parts)} operators: profile of another model?")
        totals[parts[row.index]] = totals.get(parts[row.index], 0.0) + row.avg_ms
    total = sum(totals.values())
    routing = totals.get(graph.ROUTING, 0.0)
    return {
        "parts_ms": totals,
        "total_ms": total,
        "routing_ms": routing,
        "routing_share": routing / total if total else 0.0,
        "projection_share": totals.get(graph.PROJECTION, 0.0) / total if total else 0.0,
    }
