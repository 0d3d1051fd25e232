"""`kcaps sweep`: train a grid of configurations; record training time and accuracy; plot the front.

    kcaps sweep --dataset real_digits --epochs 10 --output runs/sweep \\
        --grid lr_policy=fixed,exp_decay,one_cycle,warm_restarts batch_policy=fixed \\
        --grid lr_policy=fixed,warm_adabatch batch_policy=adabatch

Each `--grid` is a set of `KEY=V1,V2,...` whose cartesian product gives points; several `--grid`
are joined (FasTrCaps' comparison is not a full product). Every other flag is that of
`kcaps train` and sets what the points share. Each point trains with the `kcaps train` recipe in
`OUTPUT/points/<point>/` and adds a row to `OUTPUT/sweep.csv`:

- `best_accuracy`, `best_epoch`: the best test accuracy over the epochs and the first epoch that
  reached it; `final_accuracy`: the last epoch's;
- `fastrcaps_seconds`: FasTrCaps' training time, epochs to the best accuracy x mean seconds per
  epoch; `seconds_to_best`: the seconds really spent up to that epoch; `total_seconds`: all
  epochs (epoch seconds include the epoch's evaluation, as `model.fit` measures an epoch);
- the same in CPU seconds of the training process (`*_cpu_seconds`), which other processes on
  a shared machine disturb far less than wall-clock seconds.

`OUTPUT/pareto.png` plots accuracy against time with the Pareto front highlighted; the Pareto set
is printed. Run the same command again to resume: finished points (rows of `sweep.csv`) are not
trained again, a point interrupted mid-run resumes from its last finished epoch.
"""
import csv
import dataclasses
import itertools
import json
import os
import re

from kcaps_training import config as config_lib
from kcaps_training import datasets, pareto
from kcaps_training import train as recipe

# grid keys (TrainConfig fields), each value parsed as its `kcaps train` flag is
GRID_KEYS = ("lr_policy", "batch_policy", "weight_sharing", "sharing_order", "routing_iterations",
             "epochs", "warm_epochs", "warm_batch_size", "adabatch_size", "batch_size",
             "learning_rate", "decay_steps", "squash", "decoder", "model", "seed",
             "steps_per_execution")
TIME_KEYS = ("fastrcaps_seconds", "seconds_to_best", "total_seconds", "fastrcaps_cpu_seconds",
             "total_cpu_seconds")
ACCURACY_KEYS = ("best_accuracy", "final_accuracy")
RESULT_COLUMNS = ("parameters", "epochs_run", "best_accuracy", "best_epoch", "final_accuracy",
                  "mean_epoch_seconds", "fastrcaps_seconds", "seconds_to_best", "total_seconds",
                  "mean_epoch_cpu_seconds", "fastrcaps_cpu_seconds", "total_cpu_seconds")
_UNSHARED = ("output_dir", "verbose")  # base-config fields that may change between resumes


def check_key(key):
    if key not in GRID_KEYS:
        raise ValueError(f"unknown sweep grid key {key!r}; valid keys: {', '.join(GRID_KEYS)}")


def parse_grid(tokens):
    """`["lr_policy=fixed,warm_adabatch", "epochs=5"]` -> `{"lr_policy": [...], "epochs": [5]}`."""
    grid = {}
    for token in tokens:
        key, sep, values = token.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise ValueError(f"sweep grid entries are KEY=V1,V2,...; got {token!r}")
        check_key(key)
        grid[key] = [config_lib.parse_value(key, v.strip()) for v in values.split(",")]
    return grid


def expand(grids):
    """The points of a list of grids: each grid's cartesian product, joined, duplicates dropped."""
    points = []
    for grid in grids:
        for key in grid:
            check_key(key)
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            if point not in points:
                points.append(point)
    return points


def point_name(point):
    """A readable id that is also a directory name, e.g. `lr_policy=fixed,epochs=5`."""
    text = ",".join(f"{k}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)


def summarize(log_rows):
    """Accuracy and time figures of one run from its `log.csv` rows (one per epoch)."""
    by_epoch = {int(row["epoch"]): row for row in log_rows}  # a resumed run may repeat an epoch
    rows = [by_epoch[e] for e in sorted(by_epoch)]
    if not rows:
        raise ValueError("the run's log.csv has no epochs")
    key = next((k for k in rows[0] if k.startswith("val_") and k.endswith("accuracy")), None)
    if key is None:
        raise ValueError(f"no validation accuracy in log.csv columns {sorted(rows[0])}")
    accuracy = [float(r[key]) for r in rows]
    seconds = [float(r["epoch_seconds"]) for r in rows]
    best = max(accuracy)
    best_epoch = accuracy.index(best) + 1  # epochs to reach it, as FasTrCaps counts
    mean = sum(seconds) / len(seconds)
    cpu = [float(r.get("epoch_cpu_seconds") or "nan") for r in rows]
    mean_cpu = sum(cpu) / len(cpu)
    return {
        "epochs_run": len(rows), "best_accuracy": best, "best_epoch": best_epoch,
        "final_accuracy": accuracy[-1], "mean_epoch_seconds": mean,
        "fastrcaps_seconds": best_epoch * mean, "seconds_to_best": sum(seconds[:best_epoch]),
        "total_seconds": sum(seconds), "mean_epoch_cpu_seconds": mean_cpu,
        "fastrcaps_cpu_seconds": best_epoch * mean_cpu, "total_cpu_seconds": sum(cpu),
    }


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows):
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _numeric(row):
    """The result columns of a row as numbers (a row read back from the CSV holds strings)."""
    counts = ("parameters", "epochs_run", "best_epoch")
    return {key: (int if key in counts else float)(row[key]) for key in RESULT_COLUMNS}


def _check_resume(base, output_dir, points):
    """Refuse to mix points of different shared settings in one sweep directory."""
    path = os.path.join(output_dir, "sweep.json")
    shared = {k: v for k, v in dataclasses.asdict(base).items() if k not in _UNSHARED}
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)["base"]
        changed = {k: (previous.get(k), v) for k, v in shared.items() if previous.get(k) != v}
        if changed:
            raise ValueError(
                f"{output_dir} holds a sweep with other shared settings ({changed}: old, new); "
                f"use another --output or the same flags")
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"base": shared, "points": points}, f, indent=2)


def run_sweep(base, grids, output_dir, data=None, time_key="fastrcaps_seconds",
              accuracy_key="best_accuracy", log=print):
    """Train every point of `grids` not yet in `output_dir/sweep.csv`; return all rows.

    Args:
      base: the `TrainConfig` the points share (its `output_dir` is ignored).
      grids: list of `{key: [values]}` (keys from `GRID_KEYS`).
      output_dir: the sweep's directory (CSV, PNG, one subdirectory per point).
      data: a loaded `kcaps_training.datasets.Dataset` (loaded once from `base` if None).
    """
    if time_key not in TIME_KEYS:
        raise ValueError(f"unknown time metric {time_key!r}; valid: {', '.join(TIME_KEYS)}")
    if accuracy_key not in ACCURACY_KEYS:
        raise ValueError(
            f"unknown accuracy metric {accuracy_key!r}; valid: {', '.join(ACCURACY_KEYS)}")
    points = expand(grids)
    if not points:
        raise ValueError("the sweep grid has no points")
    configs = {point_name(p): dataclasses.replace(  # every point is validated before training
        base, **p, output_dir=os.path.join(output_dir, "points", point_name(p))) for p in points}
    _check_resume(base, output_dir, points)
    csv_path = os.path.join(output_dir, "sweep.csv")
    rows = {row["point"]: row for row in read_rows(csv_path)}
    todo = [p for p in points if point_name(p) not in rows]
    done = len(points) - len(todo)
    log(f"sweep: {len(points)} points, {done} already done, {len(todo)} to train")
    if todo and data is None:
        data = datasets.load(base.dataset, base.data_dir)
    for k, point in enumerate(todo, 1):
        name = point_name(point)
        log(f"\n== point {k}/{len(todo)}: {name}")
        result = recipe.train(configs[name], data=data)
        figures = summarize(read_log(os.path.join(configs[name].output_dir, "log.csv")))
        rows[name] = {"point": name, **point, "parameters": result.metrics["parameters"], **figures}
        write_rows(csv_path, [rows[point_name(p)] for p in points if point_name(p) in rows])
    ordered = []  # grid values as parsed, results as numbers, whether trained now or read back
    for point in points:
        stored = _numeric(rows[point_name(point)])
        ordered.append({"point": point_name(point), **point,
                        **{key: stored[key] for key in RESULT_COLUMNS},
                        "label": ",".join(str(v) for v in point.values())})
    pareto.plot_front(ordered, os.path.join(output_dir, "pareto.png"), time_key, accuracy_key,
                      label_key="label", title=f"{base.model} on {base.dataset}")
    return ordered


def print_rows(rows, time_key, accuracy_key):
    print(f"\n{'point':60s} {'params':>9s} {'best acc':>9s} {'epoch':>5s} {'final':>7s} "
          f"{'s/epoch':>8s} {'FasTrCaps s':>11s} {'to best s':>9s} {'total s':>8s}")
    for r in rows:
        print(f"{r['point'][:60]:60s} {r['parameters']:>9,} {100 * r['best_accuracy']:8.2f}% "
              f"{r['best_epoch']:>5d} {100 * r['final_accuracy']:6.2f}% "
              f"{r['mean_epoch_seconds']:8.1f} {r['fastrcaps_seconds']:11.1f} "
              f"{r['seconds_to_best']:9.1f} {r['total_seconds']:8.1f}")
    print(f"\nPareto set ({accuracy_key} against {time_key}):")
    for r in pareto.pareto_front(rows, time_key, accuracy_key):
        print(f"  {r['point']}: {100 * r[accuracy_key]:.2f}% in {r[time_key]:.1f} s")
