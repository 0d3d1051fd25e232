"""Deep capsnets that train: Sahu and Altahhan's grid and their pruning claim (issue 21).

    nice -n 10 python -m benchmarks.deep_capsnets --table grid     # depth x dim x capsules x init
    nice -n 10 python -m benchmarks.deep_capsnets --table pruning  # pruned vs unpruned, same epochs
    nice -n 10 python -m benchmarks.deep_capsnets --table both --print-only   # tables from JSON
    nice -n 10 python -m benchmarks.deep_capsnets --table step0    # lengths at step 0, no training

Model: `kcaps.models.deep_capsnet` narrowed for CPUs (conv 9x9 x`--conv-filters` (he_normal) ->
`--primary-types` primary types of 8-D, 9x9 stride 2 (6x6 positions) -> `depth` intermediate
layers of `capsules` capsules of `dim`-D -> 10 class capsules of 16-D, 3 routing iterations).
Data: the real-digits split (`kcaps_training.datasets`, "real_digits": first 8,000 MNIST test
images train, last 2,000 test); `--train-size` takes a prefix of the training part. Adam
`--lr` x 0.9 per epoch, batch 64, 2-px shifts. Activity (`kcaps.activity`): a capsule is
inactive when its length stays below `--threshold` (0.01) on all `--held` training images.

**grid**: one run per (init, depth, dim, capsules, seed): test accuracy, and per capsule layer
the inactive fraction and mean length at step 0 and after training; printed per run and over
seeds (median [min, max]). `--val-size N` turns on the convergence rule: Keras `EarlyStopping`
on the loss of N held-out images of the training part (after the `--train-size` prefix),
`--patience`, `--min-delta`, best weights restored, at most `--epochs` epochs. Inits: "fan_in" (kcaps'
`CapsuleFanIn`, the old default), "length_preserving" (`CapsuleLengthPreserving`), with
"+bias" for Peer et al.'s bias routing (e.g. `--inits fan_in,fan_in+bias,length_preserving`).

**pruning**: for one deep configuration (`--prune-depth/dim/capsules/init`), backbone (conv1) at
`--backbone-ratio` x r and every capsule layer but the class capsules (primary types and
intermediate capsules) at r for r in `--ratios`, by each of `--criteria`:
- "after": train `--epochs`, prune (`kcaps.pruning.select` + `shrink`), fine-tune
  `--finetune-epochs`;
- "during": train `--epochs` with `IterativeChannelPruning` (two steps up to r), shrink,
  fine-tune `--finetune-epochs`;
against the unpruned net trained `--epochs + --finetune-epochs` (the same total). Printed: test
accuracy, difference to the unpruned net, inactive fraction per layer before/after.

Every run is one JSON file under `--output` (reused unless `--fresh`), so the grid can be run in
pieces and on a bigger budget (`--seeds 0,1,2 --epochs 20 --train-size 8000 --depths 1,2,3,4,5
--dims 8,16,32 --capsules 16,32`).
"""
import argparse
import json
import os
import sys
import time

import kcaps  # first: it selects Keras 2 before TensorFlow is imported
import numpy as np
import tensorflow as tf
from kcaps_training import datasets, plots, train as recipe


def build(args, depth, dim, capsules, init):
    name, _, bias = init.partition("+")
    return kcaps.models.deep_capsnet(
        num_intermediate=depth, intermediate_capsules=capsules, intermediate_dims=dim,
        capsule_dim=16, conv_filters=args.conv_filters, conv_kernel=9,
        primary_types=args.primary_types, primary_dim=8, primary_kernel=9, primary_strides=2,
        capsule_init=name, bias_routing=bias == "bias")


def activity(model, held, threshold):
    stats = kcaps.activity.capsule_activity(model, held, threshold)
    return {n: [v["inactive_fraction"], v["mean_length"]] for n, v in stats.items()}


def accuracy(model, data):
    return recipe.evaluate(model, data.x_test, data.y_test)["accuracy"]


def fit(model, data, args, epochs, first_epoch=0, callbacks=(), history_out=None):
    """Train `epochs` epochs (or fewer: `callbacks` may stop it); returns the training losses.

    With `args.val` (the held-out split) the validation loss is computed after every epoch and
    stored in `history_out["val_loss"]`.
    """
    lr = args.lr
    model.compile(tf.keras.optimizers.Adam(lr))
    train = datasets.pipeline(data.x_train, data.y_train, 64, shuffle=True, max_shift=2,
                              seed=args.seed_now)
    val = None
    if history_out is not None and args.val is not None:
        val = datasets.pipeline(*args.val, 256)
    schedule = tf.keras.callbacks.LearningRateScheduler(lambda e: lr * 0.9 ** (e + first_epoch))
    history = model.fit(train, epochs=epochs, verbose=0, validation_data=val,
                        callbacks=[schedule, *callbacks])
    if history_out is not None:
        history_out.update({k: [float(v) for v in history.history[k]]
                            for k in ("loss", "val_loss") if k in history.history})
    return [float(v) for v in history.history["loss"]]


def convergence(args):
    """The grid's convergence rule: Keras `EarlyStopping` on the held-out split's loss.

    Stops when `val_loss` has not improved by `--min-delta` for `--patience` epochs (at most
    `--epochs`) and restores the weights of the best epoch; None without a held-out split.
    """
    if args.val is None:
        return None
    return tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience,
                                            min_delta=args.min_delta, restore_best_weights=True)


def cached(path, args, run):
    if os.path.exists(path) and not args.fresh:
        with open(path) as f:
            return json.load(f)
    if args.print_only:
        return None
    start = time.process_time()
    result = run()
    result["cpu_seconds"] = time.process_time() - start  # this process, all threads
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return result


def grid_cell(args, data, init, depth, dim, capsules, seed):
    args.seed_now = seed
    tf.keras.utils.set_random_seed(seed)
    model = build(args, depth, dim, capsules, init)
    held = data.x_train[:args.held]
    start = activity(model, held, args.threshold)
    monitor = kcaps.activity.CapsuleActivityMonitor(held, args.threshold)
    stop = convergence(args)
    history = {}
    losses = fit(model, data, args, args.epochs, history_out=history,
                 callbacks=[monitor] + ([stop] if stop else []))
    if (init, depth, dim, capsules, seed) == tuple(args.plot_cell):
        plots.plot_capsule_activity(monitor.history, os.path.join(args.output, "activity_plots"),
                                    args.threshold)
    best = len(losses) if stop is None else stop.best_epoch + 1  # 1-based; weights restored
    return {"init": init, "depth": depth, "dim": dim, "capsules": capsules, "seed": seed,
            "epochs": args.epochs, "epochs_run": len(losses), "best_epoch": best,
            "rule": rule_name(args), "train_size": len(data.x_train), "losses": losses,
            "val_losses": history.get("val_loss", []), "step0": start,
            "trained": activity(model, held, args.threshold), "monitor": monitor.history,
            "accuracy": accuracy(model, data), "parameters": int(model.count_params())}


def rule_name(args):
    if args.val is None:
        return f"fixed {args.epochs} epochs"
    return (f"EarlyStopping(val_loss on {len(args.val[0])} held-out training-part images, "
            f"patience {args.patience}, min_delta {args.min_delta:g}, restore best), "
            f"at most {args.epochs} epochs")


def ratios_for(model, ratio, backbone_ratio):
    names = kcaps.pruning.prunable_units(model)
    return {n: (backbone_ratio if n == "conv1" else ratio) for n in names}


def pruning_cell(args, data, mode, criterion, ratio, seed):
    args.seed_now = seed
    tf.keras.utils.set_random_seed(seed)
    model = build(args, args.prune_depth, args.prune_dim, args.prune_capsules, args.prune_init)
    held, sample = data.x_train[:args.held], data.x_train[:256]
    total = args.epochs + args.finetune_epochs
    result = {"mode": mode, "criterion": criterion, "ratio": ratio, "seed": seed,
              "epochs": [args.epochs, args.finetune_epochs],
              "params_before": int(model.count_params())}
    if mode == "unpruned":
        result["losses"] = fit(model, data, args, total)
        result["before"] = result["after"] = activity(model, held, args.threshold)
        result.update(accuracy=accuracy(model, data), params_after=result["params_before"])
        return result
    ratios = ratios_for(model, ratio, args.backbone_ratio * ratio)
    if mode == "after":
        losses = fit(model, data, args, args.epochs)
        result["before"] = activity(model, held, args.threshold)
        result["accuracy_unpruned_at_prune"] = accuracy(model, data)
        keep = kcaps.pruning.select(model, ratios, criterion, sample)
    else:  # during: two pruning events, the last one at the end of the first phase
        every = max(1, args.epochs // 2)
        step = max(ratios.values()) / 2 + 1e-9
        schedule = kcaps.pruning.IterativeChannelPruning(ratios, step=min(step, 0.99), every=every,
                                                         criterion=criterion, data=sample)
        losses = fit(model, data, args, args.epochs, callbacks=[schedule])
        result["before"] = activity(model, held, args.threshold)  # masked, not yet shrunk
        keep = schedule.keep
    pruned = kcaps.pruning.shrink(model, keep)
    result["accuracy_right_after_pruning"] = accuracy(pruned, data)
    result["losses"] = losses + fit(pruned, data, args, args.finetune_epochs,
                                    first_epoch=args.epochs)
    result.update(after=activity(pruned, held, args.threshold), accuracy=accuracy(pruned, data),
                  params_after=int(pruned.count_params()),
                  units={n: len(k) for n, k in keep.items()})
    return result


def step0_table(args, data):
    """Step 0 only (no training): mean length per routed layer and its dependence on the input."""
    print(f"\n## step 0 (no training), {args.held} held images: per capsule layer mean length "
          f"[input dependence: RMS over capsules of the std across images of v, / mean length]")
    held = data.x_train[:args.held]
    for init in args.inits.split(","):
        for depth in [int(v) for v in args.depths.split(",")]:
            for dim in [int(v) for v in args.dims.split(",")]:
                for caps in [int(v) for v in args.capsules.split(",")]:
                    tf.keras.utils.set_random_seed(0)
                    model = build(args, depth, dim, caps, init)
                    names = kcaps.activity.capsule_layers(model)
                    probe = tf.keras.Model(model.inputs, [model.get_layer(n).output for n in names])
                    cells = []
                    for name, v in zip(names, probe.predict(held, batch_size=256, verbose=0)):
                        length = np.linalg.norm(v, axis=-1).mean()
                        spread = np.sqrt(np.mean(np.sum(v.var(axis=0), axis=-1)))
                        cells.append(f"{short(name)} {length:.2g} "
                                     f"[{spread / max(length, 1e-30):.2g}]")
                    print(f"  {init:>22} depth {depth} dim {dim:>2} caps {caps}: "
                          + "  ".join(cells), flush=True)


def short(name):
    return name.replace("capsules", "c").replace("primary_c", "prim")


def fmt_layers(stats):
    return " ".join(f"{short(n)} {v[0]:.2f}/{v[1]:.2g}" for n, v in stats.items())


def fmt_median_layers(stats_list):
    """Per layer: median over runs of the inactive fraction / of the mean length."""
    names = list(stats_list[0])
    return " ".join(f"{short(n)} {np.median([s[n][0] for s in stats_list]):.2f}/"
                    f"{np.median([s[n][1] for s in stats_list]):.2g}" for n in names)


def acc_range(values):
    return f"{np.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]"


def late_drop(run):
    """How far from converged: relative fall of the held-out loss over the last 2 epochs run."""
    val = run.get("val_losses") or []
    if len(val) < 3 or val[-3] <= 0:
        return "-"
    return f"{100 * (val[-3] - val[-1]) / val[-3]:.0f}"


def print_grid(rows, args):
    print(f"\n## grid, per run (accuracy; epochs: best / run; training loss first -> last)")
    for r in rows:
        print(f"  {r['init']} depth {r['depth']} dim {r['dim']} caps {r['capsules']} seed "
              f"{r['seed']}: acc {r['accuracy']:.4f}, epochs {r.get('best_epoch', r['epochs'])}/"
              f"{r.get('epochs_run', r['epochs'])}, loss {r['losses'][0]:.4f} -> "
              f"{r['losses'][-1]:.4f}")
    rules = sorted({r.get("rule", f"fixed {r['epochs']} epochs") for r in rows})
    print(f"\n## grid over seeds: test accuracy median [min, max]; epochs to convergence per seed "
          f"(best epoch, weights restored; rule: {'; '.join(rules)}); per capsule layer median "
          f"inactive fraction / median mean length (inactive: |v| < {args.threshold} on all "
          f"{args.held} held training images), at step 0 and after training")
    print("| init | depth | capsules | dim | seeds | acc median [min, max] | seeds > 20% | "
          "epochs (best per seed) | stopped by the rule | val loss drop, last 2 epochs (%) | "
          "step 0 | trained |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    keys = []
    for r in rows:
        key = (r["init"], r["depth"], r["capsules"], r["dim"])
        if key not in keys:
            keys.append(key)
    keys.sort()
    for key in keys:
        runs = sorted((r for r in rows if (r["init"], r["depth"], r["capsules"], r["dim"]) == key),
                      key=lambda r: r["seed"])
        accs = [r["accuracy"] for r in runs]
        print(f"| {' | '.join(str(v) for v in key)} | {len(runs)} | {acc_range(accs)} | "
              f"{sum(a > 0.2 for a in accs)} | "
              f"{', '.join(str(r.get('best_epoch', r['epochs'])) for r in runs)} | "
              f"{sum(r.get('epochs_run', r['epochs']) < r['epochs'] for r in runs)}/{len(runs)} | "
              f"{', '.join(late_drop(r) for r in runs)} | "
              f"{fmt_median_layers([r['step0'] for r in runs])} | "
              f"{fmt_median_layers([r['trained'] for r in runs])} |")
    print("\nlarger dimensions make deeper nets trainable? (median test accuracy over seeds "
          "[min, max], by dim, per init, capsules and depth)")
    for init, caps, depth in sorted({(k[0], k[2], k[1]) for k in keys}):
        cells = []
        for dim in sorted({k[3] for k in keys if (k[0], k[2], k[1]) == (init, caps, depth)}):
            accs = [r["accuracy"] for r in rows
                    if (r["init"], r["capsules"], r["depth"], r["dim"]) == (init, caps, depth, dim)]
            cells.append(f"dim {dim} {acc_range(accs)} (n={len(accs)})")
        print(f"  {init:>22} caps {caps} depth {depth}: " + ", ".join(cells))


def print_pruning(rows, args):
    unpruned = [r for r in rows if r["mode"] == "unpruned"]
    if not unpruned:
        return
    base = {r["seed"]: r["accuracy"] for r in unpruned}
    print(f"\n## pruning: depth {args.prune_depth}, {args.prune_capsules} x {args.prune_dim}-D, "
          f"init {args.prune_init}; {args.epochs} + {args.finetune_epochs} epochs in every row; "
          f"backbone ratio = {args.backbone_ratio} x capsule ratio")
    print("| mode | criterion | capsule ratio | seed | params | acc right after prune | acc | "
          "vs unpruned (pp) | inactive/length before prune | after fine-tune |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        right_after = r.get("accuracy_right_after_pruning")
        print(f"| {r['mode']} | {r['criterion']} | {r['ratio']} | {r['seed']} | "
              f"{r['params_before']:,} -> {r['params_after']:,} | "
              f"{'-' if right_after is None else f'{right_after:.4f}'} | {r['accuracy']:.4f} | "
              f"{100 * (r['accuracy'] - base.get(r['seed'], np.nan)):+.2f} | "
              f"{fmt_layers(r['before'])} | {fmt_layers(r['after'])} |")
    pruned = [r for r in rows if r["mode"] != "unpruned" and r["seed"] in base]
    if not pruned:
        return
    print(f"\n## pruning over seeds (pairs: the same seed's unpruned net, {args.epochs} + "
          f"{args.finetune_epochs} epochs): median over seeds; per layer median inactive fraction "
          f"/ median mean length")
    print("| mode | criterion | capsule ratio | seeds | pruned acc median [min, max] | "
          "unpruned acc median | pruned - unpruned, median (pp) | pruning wins | "
          "before prune | after fine-tune |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    configs = []
    for r in rows:
        if (r["mode"], r["criterion"], r["ratio"]) not in configs:
            configs.append((r["mode"], r["criterion"], r["ratio"]))
    for config in configs:
        runs = [r for r in rows if (r["mode"], r["criterion"], r["ratio"]) == config
                and r["seed"] in base]
        if not runs:
            continue
        accs = [r["accuracy"] for r in runs]
        diffs = [100 * (r["accuracy"] - base[r["seed"]]) for r in runs]
        wins = sum(r["accuracy"] > base[r["seed"]] for r in runs)
        paired = config[0] != "unpruned"
        print(f"| {' | '.join(str(v) for v in config)} | {len(runs)} | {acc_range(accs)} | "
              f"{np.median([base[r['seed']] for r in runs]):.4f} | "
              f"{f'{np.median(diffs):+.2f}' if paired else '-'} | "
              f"{f'{wins}/{len(runs)}' if paired else '-'} | "
              f"{fmt_median_layers([r['before'] for r in runs])} | "
              f"{fmt_median_layers([r['after'] for r in runs])} |")
    gains = [100 * (r["accuracy"] - base[r["seed"]]) for r in pruned]
    better = sum(g > 0 for g in gains)
    print(f"\npruned beats the unpruned net (same seed, same total epochs) in {better} of "
          f"{len(pruned)} (config, seed) pairs; difference median {np.median(gains):+.2f} pp, "
          f"best {max(gains):+.2f} pp, worst {min(gains):+.2f} pp")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", choices=("step0", "grid", "pruning", "both"), default="both")
    parser.add_argument("--inits", default="fan_in,length_preserving")
    parser.add_argument("--depths", default="1,3,5")
    parser.add_argument("--dims", default="8,16,32")
    parser.add_argument("--capsules", default="32")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--val-size", type=int, default=0,
                        help="grid only: held-out images of the training part after the "
                             "--train-size prefix; > 0 turns on the convergence rule "
                             "(EarlyStopping on their loss, --epochs the cap)")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--min-delta", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--conv-filters", type=int, default=32)
    parser.add_argument("--primary-types", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=kcaps.activity.DEFAULT_THRESHOLD)
    parser.add_argument("--held", type=int, default=512)
    parser.add_argument("--prune-depth", type=int, default=3)
    parser.add_argument("--prune-dim", type=int, default=16)
    parser.add_argument("--prune-capsules", type=int, default=32)
    parser.add_argument("--prune-init", default="length_preserving")
    parser.add_argument("--ratios", default="0.25,0.5")
    parser.add_argument("--backbone-ratio", type=float, default=0.5,
                        help="conv1's ratio as a multiple of the capsule ratio")
    parser.add_argument("--criteria", default="chip,activity,l1")
    parser.add_argument("--modes", default="after,during")
    parser.add_argument("--plot-cell", default="length_preserving,5,16,32,0",
                        help="init,depth,dim,capsules,seed of the grid run whose "
                             "CapsuleActivityMonitor plots are written")
    parser.add_argument("--output", default="runs/deep_capsnets")
    parser.add_argument("--fresh", action="store_true", help="rerun cells that have a JSON")
    parser.add_argument("--print-only", action="store_true", help="only print stored cells")
    args = parser.parse_args(argv)
    init, *rest = args.plot_cell.split(",")
    args.plot_cell = [init, *(int(v) for v in rest)]
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    os.makedirs(args.output, exist_ok=True)
    data = datasets.load_real_digits()
    if args.train_size + args.val_size > len(data.x_train):
        raise ValueError(f"--train-size {args.train_size} + --val-size {args.val_size} exceed the "
                         f"{len(data.x_train)} training-part images")
    held_out = slice(args.train_size, args.train_size + args.val_size)
    args.val = (data.x_train[held_out], data.y_train[held_out]) if args.val_size else None
    data = datasets.Dataset(data.name, data.x_train[:args.train_size],
                            data.y_train[:args.train_size], data.x_test, data.y_test, 10)
    print(f"real digits: {len(data.x_train)} train / {len(data.x_test)} test; conv "
          f"{args.conv_filters}, {args.primary_types} primary types; Adam {args.lr} x 0.9/epoch",
          flush=True)
    if args.table == "step0":
        step0_table(args, data)
    if args.table in ("grid", "both"):
        rows = []
        suffix = f"_v{args.val_size}p{args.patience}" if args.val_size else ""
        # whole rows (init, capsules, depth: all dims) first, seed-major inside a row, so a run
        # cut off leaves complete rows and every dim at the same seeds
        for init in args.inits.split(","):
            for caps in ints(args.capsules):
                for depth in ints(args.depths):
                    for seed in ints(args.seeds):
                        for dim in ints(args.dims):
                            tag = (f"grid_{init}_d{depth}_dim{dim}_c{caps}_s{seed}_e{args.epochs}"
                                   f"_n{len(data.x_train)}{suffix}")
                            cell = (init, depth, dim, caps, seed)
                            row = cached(os.path.join(args.output, tag + ".json"), args,
                                         lambda: grid_cell(args, data, *cell))
                            if row:
                                rows.append(row)
                                print(f"  {tag}: acc {row['accuracy']:.4f} epochs "
                                      f"{row.get('best_epoch')}/{row.get('epochs_run')} cpu "
                                      f"{row.get('cpu_seconds', 0):.0f} s", flush=True)
        print_grid(rows, args)
    if args.table in ("pruning", "both"):
        rows = []
        cells = [("unpruned", "-", 0.0)] + [
            (mode, criterion, float(r)) for mode in args.modes.split(",")
            for criterion in args.criteria.split(",") for r in args.ratios.split(",")]
        for seed in ints(args.seeds):
            for mode, criterion, ratio in cells:
                tag = (f"prune_{args.prune_init}_d{args.prune_depth}_dim{args.prune_dim}_c"
                       f"{args.prune_capsules}_{mode}_{criterion}_r{ratio}_b{args.backbone_ratio}"
                       f"_s{seed}_e{args.epochs}+{args.finetune_epochs}_n{len(data.x_train)}")
                row = cached(os.path.join(args.output, tag + ".json"), args,
                             lambda: pruning_cell(args, data, mode, criterion, ratio, seed))
                if row:
                    rows.append(row)
                    print(f"  {tag}: acc {row['accuracy']:.4f} cpu "
                          f"{row.get('cpu_seconds', 0):.0f} s", flush=True)
        print_pruning(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
