"""FasTrCaps' training policies on the real-digits split, against the fixed-rate baseline, same run.

    python -m benchmarks.fast_training [--epochs 15] [--model small_capsnet] \\
        [--output runs/bench_fast_training] [--steps-per-execution 50]
    python -m benchmarks.fast_training --claim-only --seeds 0 1 2 --epochs 30 \\
        --scaled-warm-batch-sizes 1     # the claim alone, repeated over seeds

Trains, one after the other in this process (through `kcaps sweep`'s `run_sweep`, so a run cut
short resumes where it stopped): the baseline (Adam, fixed learning rate 1e-3, fixed batch size
128 - the authors' default - for the epoch budget), exponential decay, one-cycle, warm restarts,
adaptive batch alone, and WarmAdaBatch (the paper's rule: batch 1 for 3 epochs, then 16, cosine
restart at the switch) plus WarmAdaBatch with the warm phase scaled to 1 epoch at batch 1 or 4.
On the real-digits split (first 8,000 MNIST test images train, last 2,000 evaluate).

Prints every policy's figures next to the paper's (CapsNet, MNIST, 100 epochs, GPU) and checks
the claim of issue 5: the best WarmAdaBatch configuration reaches the baseline's final accuracy
within 0.3 percentage point in at most half the baseline's training time; with several
`--seeds`, each seed is one complete same-run comparison and the verdict is the median ratio
(one run's ratio moved between 44% and 70% on this shared CPU). Times:
- FasTrCaps' metric: epochs to the best accuracy x mean seconds per epoch;
- the honest one: the seconds really spent until the accuracy first reaches the target,
  against the baseline's total seconds (its final accuracy is reached at its last epoch).
"""
import argparse
import os
import statistics
import sys


from benchmarks.common import print_table  # noqa: E402
from kcaps_training import sweep  # noqa: E402
from kcaps_training import train as recipe  # noqa: E402

# The paper's MNIST figures (authors' plotting script: accuracy %, epochs to the best accuracy,
# mean seconds per epoch; time = epochs x seconds; reduction against the baseline's 8,700 s).
PAPER = {
    "baseline": (99.366, 29, 300),
    "exp_decay": (99.404, 12, 300),
    "one_cycle": (99.384, 24, 300),
    "warm_restarts": (99.44, 11, 300),
    "adabatch": (99.41, 8, 754),
    "warm_adabatch": (99.454, 3, 800),
}
TOLERANCE = 0.003  # 0.3 percentage point
RESOLUTION = 1e-6  # accuracies are multiples of 1 / 2,000 logged in float32: compare with slack


def grids(warm_epochs_scaled, warm_batch_sizes_scaled, claim_only=False):
    """Every policy of the paper's comparison, or with `claim_only` the baseline and the scaled
    WarmAdaBatch points only (what the issue's claim compares)."""
    scaled = {"lr_policy": ["warm_adabatch"], "batch_policy": ["adabatch"],
              "warm_epochs": warm_epochs_scaled, "warm_batch_size": warm_batch_sizes_scaled}
    if claim_only:
        return [{"lr_policy": ["fixed"], "batch_policy": ["fixed"]}, scaled]
    return [
        {"lr_policy": ["fixed", "exp_decay", "one_cycle", "warm_restarts"],
         "batch_policy": ["fixed"]},
        {"lr_policy": ["fixed", "warm_adabatch"], "batch_policy": ["adabatch"]},
        scaled,
    ]


def policy_name(row):
    if row["lr_policy"] == "fixed" and row.get("batch_policy") == "fixed":
        return "baseline"
    if row.get("batch_policy") == "adabatch" and row["lr_policy"] == "fixed":
        return "adabatch"
    return row["lr_policy"]


def seconds_to_reach(point_dir, target):
    """(wall s, CPU s, epochs) summed up to the first epoch whose test accuracy is >= target."""
    rows = sweep.read_log(os.path.join(point_dir, "log.csv"))
    by_epoch = {int(r["epoch"]): r for r in rows}
    key = next(k for k in rows[0] if k.startswith("val_") and k.endswith("accuracy"))
    wall = cpu = 0.0
    for epoch in sorted(by_epoch):
        wall += float(by_epoch[epoch]["epoch_seconds"])
        cpu += float(by_epoch[epoch]["epoch_cpu_seconds"])
        if float(by_epoch[epoch][key]) >= target - RESOLUTION:
            return wall, cpu, epoch + 1
    return None, None, None


def batch_cost_rows(model_name, n=1024):
    """Training seconds per image at batch 1, 16 and 128, one vs 50 steps per TensorFlow call.

    On a 2-core CPU a batch-1 step is dominated by per-step overhead (Keras' loop, the call into
    TensorFlow, dozens of small kernels), not by arithmetic: this is what the warm phase costs.
    """
    import time

    import kcaps
    import tensorflow as tf
    from kcaps.adaptive_batch import AdaptiveBatchDataset
    from kcaps_training import datasets

    data = datasets.load_real_digits()
    x, y = data.x_train[:n], data.y_train[:n]
    rows = []
    for batch, spe in [(1, 1), (1, 50), (16, 1), (16, 50), (128, 1)]:
        tf.keras.utils.set_random_seed(0)
        model = kcaps.models.get(model_name)()
        model.compile(tf.keras.optimizers.Adam(1e-3), steps_per_execution=spe)
        train = AdaptiveBatchDataset(datasets.examples(x, y, shuffle=True, max_shift=2), batch)
        model.fit(train, epochs=1, verbose=0)  # trace and warm up
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(train, epochs=1, verbose=0)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        rows.append({"batch size": batch, "steps per execution": spe,
                     "ms per image": 1e3 * seconds / n, "CPU ms per image": 1e3 * cpu / n,
                     "ms per step": 1e3 * seconds / int(train.cardinality()),
                     "s per 8,000-image epoch": seconds * 8000 / n})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="small_capsnet")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--output", default="runs/bench_fast_training")
    parser.add_argument("--steps-per-execution", type=int, default=50,
                        help="optimizer steps per TensorFlow call, for every policy alike")
    parser.add_argument("--scaled-warm-epochs", type=int, nargs="+", default=[1],
                        help="WarmAdaBatch variants with a shorter warm phase")
    parser.add_argument("--scaled-warm-batch-sizes", type=int, nargs="+", default=[1, 4],
                        help="... and these warm batch sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one complete same-run comparison per seed (in OUTPUT/seed<N> when "
                             "more than one); the verdict is the median ratio")
    parser.add_argument("--claim-only", action="store_true",
                        help="train the baseline and the scaled WarmAdaBatch points only")
    parser.add_argument("--skip-batch-cost", action="store_true")
    args = parser.parse_args(argv)

    if not args.skip_batch_cost:
        print("== per-image training cost against batch size (AdaptiveBatchDataset, 1,024 images)")
        print_table(batch_cost_rows(args.model), ["batch size", "steps per execution",
                                                  "ms per image", "CPU ms per image",
                                                  "ms per step", "s per 8,000-image epoch"])
    ratios = []
    for seed in args.seeds:
        output = (args.output if len(args.seeds) == 1
                  else os.path.join(args.output, f"seed{seed}"))
        print(f"\n== seed {seed}: {output}")
        ratios.append(compare(args, seed, output))
    if len(ratios) > 1:
        print("\nper seed (wall, CPU ratio to the baseline's run; None = target never reached): "
              + ", ".join(f"seed {s}: {r}" for s, r in zip(args.seeds, ratios)))
    median = statistics.median(r[0] if r else float("inf") for r in ratios)
    ok = median <= 0.5
    print(f"claim over {len(ratios)} seed(s): median wall-clock ratio {100 * median:.0f}% "
          f"(target <= 50%): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def compare(args, seed, output):
    """Train the points of one same-run comparison; print the table; return the best
    WarmAdaBatch's (wall, CPU) time-to-target ratio to the baseline, or None."""
    base = recipe.TrainConfig(
        model=args.model, dataset="real_digits", epochs=args.epochs, batch_size=128,
        learning_rate=1e-3, steps_per_execution=args.steps_per_execution, seed=seed,
        verbose=2)
    rows = sweep.run_sweep(base, grids(args.scaled_warm_epochs, args.scaled_warm_batch_sizes,
                                       args.claim_only), output)
    baseline = next(r for r in rows if policy_name(r) == "baseline")
    target = baseline["final_accuracy"] - TOLERANCE
    paper_base = PAPER["baseline"][1] * PAPER["baseline"][2]

    def vs(value, reference):
        return f"{100 * (value / reference - 1):+.1f}%"

    print(f"\n{args.model} on real digits (8,000 train / 2,000 test), {args.epochs} epochs, "
          f"steps_per_execution={args.steps_per_execution}; baseline final accuracy "
          f"{100 * baseline['final_accuracy']:.2f}%, target {100 * target:.2f}%")
    print("time columns: wall-clock s (CPU s of the process); 'to target' = spent until the test "
          "accuracy first reached the target, against the baseline's whole run")
    columns = ["policy", "point", "best acc", "final acc", "epochs to best", "s/epoch",
               "FasTrCaps time", "vs baseline", "CPU vs baseline", "to target", "vs baseline",
               "CPU vs baseline", "paper acc", "paper time", "paper vs baseline"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    verdicts = []
    for row in rows:
        name = policy_name(row)
        wall, cpu, epoch = seconds_to_reach(os.path.join(output, "points", row["point"]),
                                            target)
        paper = PAPER.get(name) if "warm_epochs" not in row["point"] else None
        cells = [name, row["point"], f"{100 * row['best_accuracy']:.2f}%",
                 f"{100 * row['final_accuracy']:.2f}%", str(row["best_epoch"]),
                 f"{row['mean_epoch_seconds']:.1f} ({row['mean_epoch_cpu_seconds']:.0f})",
                 f"{row['fastrcaps_seconds']:.0f} ({row['fastrcaps_cpu_seconds']:.0f})",
                 vs(row["fastrcaps_seconds"], baseline["fastrcaps_seconds"]),
                 vs(row["fastrcaps_cpu_seconds"], baseline["fastrcaps_cpu_seconds"])]
        if wall is None:
            cells += ["never", "", ""]
        else:
            cells += [f"{wall:.0f} ({cpu:.0f}), epoch {epoch}",
                      vs(wall, baseline["total_seconds"]), vs(cpu, baseline["total_cpu_seconds"])]
        if paper:
            paper_time = paper[1] * paper[2]
            cells += [f"{paper[0]:.2f}%", f"{paper[1]} x {paper[2]} = {paper_time:,} s",
                      vs(paper_time, paper_base)]
        else:
            cells += ["", "", ""]
        print("| " + " | ".join(cells) + " |")
        if name == "warm_adabatch" and wall is not None:
            verdicts.append((wall / baseline["total_seconds"], cpu / baseline["total_cpu_seconds"],
                             row["point"]))

    print(f"\nbaseline: {100 * baseline['final_accuracy']:.2f}% final in "
          f"{baseline['total_seconds']:.0f} s wall, {baseline['total_cpu_seconds']:.0f} CPU s "
          f"(FasTrCaps time {baseline['fastrcaps_seconds']:.0f} s)")
    if not verdicts:
        print("claim: no WarmAdaBatch configuration reached the target: FAIL")
        return None
    wall_ratio, cpu_ratio, point = min(verdicts)
    print(f"claim: best WarmAdaBatch ({point}) reaches {100 * target:.2f}% in "
          f"{100 * wall_ratio:.0f}% of the baseline's wall-clock training time "
          f"({100 * cpu_ratio:.0f}% of its CPU time); target <= 50%: "
          f"{'PASS' if wall_ratio <= 0.5 else 'FAIL'}")
    return round(wall_ratio, 3), round(cpu_ratio, 3)


if __name__ == "__main__":
    sys.exit(main())
