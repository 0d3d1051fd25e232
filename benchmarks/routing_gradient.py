"""Accuracy of the exact routing gradient against the stopped one, on the real-digits split.

`CapsuleDense(stop_routing_gradient=True)` routes `tf.stop_gradient(u_hat)` in the iterations
before the last (see `kcaps.routing.dynamic_routing`): the same forward pass, a cheaper and
approximate gradient. This trains `small_capsnet` both ways, same seeds, same data (the first
8,000 MNIST test images train, the last 2,000 evaluate; no augmentation) and prints test accuracy
and seconds per epoch of each run.

    python -m benchmarks.routing_gradient [--seeds 0 1 2] [--epochs 5] [--batch-size 64]
"""
import argparse
import statistics
import sys
import time

import kcaps
import tensorflow as tf
from kcaps_training import datasets, train as recipe


def run(data, stop, seed, epochs, batch_size):
    tf.keras.utils.set_random_seed(seed)
    model = kcaps.models.small_capsnet(data.x_train.shape[1:], 10, stop_routing_gradient=stop)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    seconds = (time.perf_counter() - start) / epochs
    return recipe.evaluate(model, data.x_test, data.y_test.reshape(-1))["accuracy"], seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    data = datasets.load("real_digits")
    print(f"small_capsnet, real digits (8,000 train / 2,000 test), {args.epochs} epochs, "
          f"batch {args.batch_size}, Adam 1e-3")
    print("| gradient | seed | test accuracy | s/epoch |")
    print("|---|---|---|---|")
    results = {False: [], True: []}
    for seed in args.seeds:
        for stop in (False, True):  # interleaved, so the epoch times share the machine's load
            accuracy, seconds = run(data, stop, seed, args.epochs, args.batch_size)
            results[stop].append(accuracy)
            print(f"| {'stopped' if stop else 'exact'} | {seed} | {accuracy:.4f} | {seconds:.1f} |",
                  flush=True)
    for stop, accuracies in results.items():
        print(f"{'stopped' if stop else 'exact'}: mean accuracy {statistics.mean(accuracies):.4f} "
              f"over {len(accuracies)} seed(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
