"""Full-int8 capsnet and small_capsnet against their float32 TFLite models, same run, real digits.

    python benchmarks/deployment.py [--small-epochs 15] [--capsnet-epochs 3] [--output runs/deployment]

Each model trains on the real-digits split (the first 8,000 MNIST test images; CapsNet only a
few epochs: about 1.5 minutes an epoch on 2 cores), is converted to float32 and to full int8
(int8 inputs and outputs, calibrated on 200 training images), and both TFLite models are measured
on the last 2,000 images: accuracy in LiteRT, file size, latency at 1 and 2 threads (the
official benchmark tool, XNNPACK on, as LiteRT runs by default, and TFLite's builtin kernels),
the routing's share of the latency (LiteRT's op profiler, builtin kernels, 1 thread) and, for
small_capsnet, TFLite Micro on all 2,000 images.

Targets (issue 6): int8 loses at most 0.3 percentage point of accuracy, is at least 3.5x
smaller, and is faster at 1 thread; small_capsnet int8 fits 256 KB of flash and 128 KB of arena
with the same top-1 as LiteRT.
"""
import argparse
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table  # noqa: E402
from kcaps_tflite import benchmark  # noqa: E402
from training import datasets, deploy  # noqa: E402
from training import train as recipe  # noqa: E402


def trained(model, epochs, data, output, seed):
    path = pathlib.Path(output) / "model.keras"
    if path.exists():
        print(f"reusing {path}")
        return path, None
    config = recipe.TrainConfig(model=model, dataset="real_digits", epochs=epochs,
                                output_dir=str(output), seed=seed, verbose=2)
    metrics = recipe.train(config, data=data).metrics
    return path, metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small-epochs", type=int, default=15)
    parser.add_argument("--capsnet-epochs", type=int, default=3)
    parser.add_argument("--output", default="runs/deployment")
    parser.add_argument("--num-runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = datasets.load("real_digits")

    rows, ok = [], True
    for model, epochs, micro_samples, num_runs in (
            ("small_capsnet", args.small_epochs, len(data.x_test), args.num_runs),
            ("capsnet", args.capsnet_epochs, 0, max(args.num_runs // 4, 20))):
        out = pathlib.Path(args.output) / model
        path, metrics = trained(model, epochs, data, out, args.seed)
        config = deploy.DeployConfig(precisions=("float32", "int8"), micro_samples=micro_samples,
                                     num_runs=num_runs, warmup_runs=10, seed=args.seed)
        d = deploy.deploy(path, data, out, config, name=model)
        builtin = {p: benchmark.benchmark(d["conversions"][p]["file"], num_threads=1,
                                          warmup_runs=10, num_runs=num_runs,
                                          use_xnnpack=False)["inference_us"]["avg"]
                   for p in ("float32", "int8")}
        f32, i8 = (next(v for v in d["variants"] if v["precision"] == p)
                   for p in ("float32", "int8"))
        loss_pp = 100 * (f32["accuracy"] - i8["accuracy"])
        smaller = f32["size_bytes"] / i8["size_bytes"]
        speedup = {t: f32["latency_us"][t] / i8["latency_us"][t] for t in config.threads}
        speedup_builtin = builtin["float32"] / builtin["int8"]
        m = d["micro"]
        rows.append({
            "model": f"{model} ({epochs} epochs)" if metrics else model,
            "float32 acc": f"{f32['accuracy']:.2%}", "int8 acc": f"{i8['accuracy']:.2%}",
            "loss (pp)": round(loss_pp, 2),
            "float32 KB": round(f32["size_bytes"] / 1024, 1),
            "int8 KB": round(i8["size_bytes"] / 1024, 1), "smaller": f"{smaller:.2f}x",
            "f32/int8 us 1 thr": f"{f32['latency_us'][1]:.0f}/{i8['latency_us'][1]:.0f}",
            "int8 speed-up 1 thr": f"{speedup[1]:.2f}x",
            "int8 speed-up 2 thr": f"{speedup[2]:.2f}x",
            "speed-up builtin 1 thr": f"{speedup_builtin:.2f}x",
            "routing share f32/int8": "/".join(f"{d['routing_profile'][p]['routing_share']:.1%}"
                                              for p in ("float32", "int8")),
            "TFLM arena KB": round(m["arena_bytes"] / 1024, 1),
        })
        ok &= loss_pp <= 0.3 and smaller >= 3.5 and speedup[1] > 1.0
        if model == "small_capsnet":
            fits = next(b for b in m["budgets"] if b["target"] == "mcu-256k-128k")["fits"]
            print(f"\nsmall_capsnet int8 in TFLite Micro: {m['model_bytes']:,} bytes, arena "
                  f"{m['arena_bytes']:,} bytes, 256 KB / 128 KB budget: "
                  f"{'fits' if fits else 'does NOT fit'}; top-1 agreement with LiteRT "
                  f"{m['agreement_with_litert']:.2%} on {m['samples']} images "
                  f"(accuracy {m['accuracy']:.2%} vs LiteRT {m['litert_accuracy']:.2%})")
            ok &= fits and m["agreement_with_litert"] == 1.0

    print("\nTargets: int8 accuracy loss <= 0.3 pp, >= 3.5x smaller, faster at 1 thread "
          "(XNNPACK, the default).")
    print_table(rows, list(rows[0]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
