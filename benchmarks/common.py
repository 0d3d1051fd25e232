"""Helpers shared by the benchmark scripts: timing, and printing figures as a table."""
import statistics
import time


def median_seconds(fn, repeats=10, warmup=2):
    """Median wall-clock seconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(rows, columns):
    """Print a list of dicts as a markdown table with the given columns."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        print("| " + " | ".join(cells) + " |")
