"""Vanishing activations in deep capsnets, without and with pruning (Sahu and Altahhan's study).

    flock /tmp/kcaps-cpu.lock python -m benchmarks.deep_capsnet_pruning [--depths 1,3,5]

For each depth (intermediate capsule layers of 32 capsules of 12-D, Peer et al.'s stack), a
`deep_capsnet` (conv 9x9 x32 -> 8 primary types of 8-D, 9x9 stride 2: 6x6x8 = 288 primary
capsules -> intermediate layers -> 10 class capsules of 16-D; Peer et al.'s conv is 512 wide
with 64 primary types, too slow for 2 CPU cores) is trained on the first 8,000 MNIST
test images (`--epochs`, batch 64, Adam 1e-3 x 0.9/epoch, 2-px shifts) with a
`CapsuleActivityMonitor` on 512 held training images. Then, from that same trained model:

- *unpruned*: training goes on for `--finetune-epochs` more epochs;
- *pruned*: backbone channels (conv1) are pruned at `--backbone-ratio` by CHIP, and every
  capsule layer but the class capsules (primary capsule types, intermediate capsules) at
  `--capsule-ratio` by activity (mean capsule length: inactive capsules go first, "dropping
  inactive capsules"), the smaller model is rebuilt, and it is fine-tuned for the same epochs.

Printed per depth and layer: the inactive fraction (capsules whose length stays below 0.01 on
every held image, `kcaps.activity`) and mean capsule length at initialization, after training,
and after the extra epochs without / with pruning; and the accuracy on the last 2,000 images.
Sahu and Altahhan's claim: pruning reduces the inactive capsules and gives better accuracy than
the unpruned model. The output says whether that holds here.
"""
import argparse
import json
import os
import sys


import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kcaps  # noqa: E402
from kcaps_training import datasets  # noqa: E402

THRESHOLD = 0.01


def build(depth, initializer, ccm_weight=0.0):
    kwargs = {} if initializer == "capsule_fan_in" else {"kernel_initializer": initializer}
    return kcaps.models.deep_capsnet(
        num_intermediate=depth, intermediate_capsules=32, intermediate_dims=12, capsule_dim=16,
        conv_filters=32, conv_kernel=9, primary_types=8, primary_dim=8, primary_kernel=9,
        primary_strides=2, ccm_weight=ccm_weight, **kwargs)


def fit(model, train, epochs, lr, held):
    model.compile(tf.keras.optimizers.Adam(lr))
    monitor = kcaps.activity.CapsuleActivityMonitor(held, threshold=THRESHOLD)
    schedule = tf.keras.callbacks.LearningRateScheduler(lambda e: lr * 0.9 ** e)
    model.fit(train, epochs=epochs, verbose=2, callbacks=[monitor, schedule])
    return monitor.history


def accuracy(model, data):
    scores = kcaps.models.classifier(model).predict(data.x_test, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(scores, axis=-1) == data.y_test))


def prune(model, data, backbone_ratio, capsule_ratio):
    """CHIP on the backbone channels, activity on the capsule layers, then the physical shrink."""
    sample = data.x_train[:256]
    capsule_layers = [name for name in kcaps.pruning.prunable_units(model) if name != "conv1"]
    scores = kcaps.pruning.unit_scores(model, ["conv1"], "chip", sample)
    scores.update(kcaps.pruning.unit_scores(model, capsule_layers, "activity", sample))
    ratios = {"conv1": backbone_ratio, **{name: capsule_ratio for name in capsule_layers}}
    keep = kcaps.pruning.select(model, ratios, scores=scores)
    before = kcaps.activity.capsule_activity(model, data.x_train[:512], THRESHOLD)
    removed_inactive = {}
    for name in capsule_layers:
        if name == "primary_capsules":
            continue  # its capsules are position x type; report the routed layers
        dropped = np.setdiff1d(np.arange(len(before[name]["inactive"])), keep[name])
        removed_inactive[name] = (int(before[name]["inactive"][dropped].sum()), len(dropped))
    return kcaps.pruning.shrink(model, keep), removed_inactive


def run_depth(depth, data, args):
    tf.keras.utils.set_random_seed(args.seed)
    train = datasets.pipeline(data.x_train, data.y_train, 64, shuffle=True, max_shift=2,
                              seed=args.seed)
    held = data.x_train[:512]
    model = build(depth, args.initializer, args.ccm_weight)
    history = fit(model, train, args.epochs, 1e-3, held)
    trained_accuracy = accuracy(model, data)
    trained = {n: (h["inactive_fraction"][-1], h["mean_length"][-1]) for n, h in history.items()}
    init = {n: (h["inactive_fraction"][0], h["mean_length"][0]) for n, h in history.items()}

    lr = 1e-3 * 0.9 ** args.epochs
    pruned, removed_inactive = prune(model, data, args.backbone_ratio, args.capsule_ratio)
    pruned_before_ft = accuracy(pruned, data)
    pruned_history = fit(pruned, train, args.finetune_epochs, lr, held)
    unpruned_history = fit(model, train, args.finetune_epochs, lr, held)
    last = lambda h: {n: (v["inactive_fraction"][-1], v["mean_length"][-1]) for n, v in h.items()}  # noqa: E731
    return {
        "depth": depth, "init": init, "trained": trained, "trained_accuracy": trained_accuracy,
        "unpruned": last(unpruned_history), "unpruned_accuracy": accuracy(model, data),
        "pruned": last(pruned_history), "pruned_accuracy": accuracy(pruned, data),
        "pruned_accuracy_before_finetune": pruned_before_ft,
        "removed_inactive": removed_inactive,
        "capsules": {layer.name: layer.output_shape[1] for layer in pruned.layers
                     if isinstance(layer, (kcaps.layers.CapsuleDense, kcaps.layers.PrimaryCapsules))},
        "capsules_unpruned": {layer.name: layer.output_shape[1] for layer in model.layers
                              if isinstance(layer, (kcaps.layers.CapsuleDense,
                                                    kcaps.layers.PrimaryCapsules))},
        "parameters": [int(model.count_params()), int(pruned.count_params())],
    }


def init_table(depths, data):
    """Inactive fraction / mean length per layer at initialization, both capsule initializers."""
    print("\nat initialization (no training), inactive fraction / mean length per capsule layer:")
    for initializer in ("capsule_fan_in", "glorot_uniform"):
        for depth in depths:
            tf.keras.utils.set_random_seed(0)
            stats = kcaps.activity.capsule_activity(build(depth, initializer), data.x_train[:512],
                                                    THRESHOLD)
            cells = "  ".join(f"{name} {v['inactive_fraction']:.2f}/{v['mean_length']:.2g}"
                              for name, v in stats.items())
            print(f"  {initializer:>14}, depth {depth}: {cells}")


def report(result, args):
    total = args.epochs + args.finetune_epochs
    print(f"\n### {result['depth']} intermediate capsule layer(s): parameters "
          f"{result['parameters'][0]:,} unpruned, {result['parameters'][1]:,} pruned")
    print(f"| layer | capsules (unpruned -> pruned) | inactive @init | inactive @{args.epochs} ep "
          f"| inactive unpruned @{total} | inactive pruned @{total} | mean length @init | "
          f"@{args.epochs} | unpruned @{total} | pruned @{total} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in result["init"]:
        cells = [name, f"{result['capsules_unpruned'][name]} -> {result['capsules'][name]}"]
        cells += [f"{result[k][name][0]:.3f}" for k in ("init", "trained", "unpruned", "pruned")]
        cells += [f"{result[k][name][1]:.4f}" for k in ("init", "trained", "unpruned", "pruned")]
        print("| " + " | ".join(cells) + " |")
    removed = ", ".join(f"{n}: {i} of {r} removed were inactive"
                        for n, (i, r) in result["removed_inactive"].items())
    print(f"accuracy: {result['trained_accuracy']:.4f} after {args.epochs} epochs; after "
          f"{total}: unpruned {result['unpruned_accuracy']:.4f}, pruned "
          f"{result['pruned_accuracy']:.4f} (right after pruning "
          f"{result['pruned_accuracy_before_finetune']:.4f}); {removed or 'no routed layer pruned'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="1,3,5")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--backbone-ratio", type=float, default=0.25)
    parser.add_argument("--capsule-ratio", type=float, default=0.5)
    parser.add_argument("--initializer", default="capsule_fan_in",
                        help="capsule kernel initializer: capsule_fan_in (kcaps default) or a "
                             "Keras name such as glorot_uniform")
    parser.add_argument("--ccm-weight", type=float, default=0.0,
                        help="train with Sahu and Altahhan's CCM loss after conv1 (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/deep_capsnet_pruning")
    parser.add_argument("--init-only", action="store_true",
                        help="only print the activity at initialization (no training)")
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    data = datasets.load_real_digits()
    if args.init_only:
        init_table([int(d) for d in args.depths.split(",")], data)
        return 0
    print(f"real digits: 8,000 train / 2,000 test; {args.epochs} epochs + {args.finetune_epochs} "
          f"(unpruned or pruned: conv1 {args.backbone_ratio:.0%} by CHIP, capsule layers "
          f"{args.capsule_ratio:.0%} by activity); capsule init {args.initializer}; CCM weight "
          f"{args.ccm_weight:g}; inactive = "
          f"|v| < {THRESHOLD} on all 512 held images", flush=True)
    results = []
    for depth in (int(d) for d in args.depths.split(",")):
        results.append(run_depth(depth, data, args))
        tag = f"depth_{depth}_{args.initializer}_ccm{args.ccm_weight:g}"
        with open(os.path.join(args.output, f"{tag}.json"), "w") as f:
            json.dump(results[-1], f, indent=2)
    init_table([int(d) for d in args.depths.split(",")], data)
    for result in results:
        report(result, args)
    print("\nclaim check (after the same number of epochs):")
    for r in results:
        routed = [n for n in r["pruned"] if n.startswith("capsules_")]
        fewer = [n for n in routed if r["pruned"][n][0] < r["unpruned"][n][0]]
        print(f"  depth {r['depth']}: pruning {'raised' if r['pruned_accuracy'] > r['unpruned_accuracy'] else 'did not raise'} "
              f"accuracy ({r['unpruned_accuracy']:.4f} -> {r['pruned_accuracy']:.4f}); "
              f"inactive fraction lower in {len(fewer)} of {len(routed)} intermediate layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
