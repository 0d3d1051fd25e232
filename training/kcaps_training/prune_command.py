"""`kcaps prune`: channel-prune a saved model, fine-tune it with the recipe, save and report.

Fine-tuning is `kcaps_training.train.fit` (the recipe of `kcaps train`) at a fixed learning rate;
it writes `log.csv` and `tensorboard/` into `--output`.

    kcaps prune runs/digits/model.keras --ratio 0.5 --criterion l1 --dataset real_digits \\
        --epochs 3 --output runs/pruned
    kcaps prune model.keras --layer-ratio conv1=0.25 --layer-ratio primary_capsules=0.5
"""
import json
import os

import tensorflow as tf

import kcaps
from kcaps_training import datasets
from kcaps_training import train as recipe


def _layer_ratios(items):
    ratios = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--layer-ratio expects LAYER=RATIO, got {item!r}")
        try:
            ratios[name] = float(value)
        except ValueError:
            raise ValueError(f"--layer-ratio {item!r}: {value!r} is not a number") from None
    return ratios


def _accuracy(model, data):
    return recipe.evaluate(model, data.x_test, data.y_test)["accuracy"]


def cmd_prune(args):
    if not os.path.exists(args.model_path):
        raise FileNotFoundError(f"model file not found: {args.model_path}")
    ratios = _layer_ratios(args.layer_ratio) if args.layer_ratio else args.ratio
    if ratios is None:
        raise ValueError("give --ratio (every conv and primary capsule layer) or --layer-ratio")
    config = None  # the fine-tuning recipe: Adam at a fixed rate (every flag checked here)
    if args.epochs:
        config = recipe.TrainConfig(
            dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.learning_rate, lr_policy="fixed",
            max_shift=args.max_shift, seed=args.seed, verbose=args.verbose,
            output_dir=args.output)
    model = tf.keras.models.load_model(args.model_path)
    kcaps.pruning.surgery.layer_ratios(model, ratios)  # bad ratios and layers fail before data loads
    data = datasets.load(args.dataset, args.data_dir)
    before = {"parameters": int(model.count_params()), "accuracy": _accuracy(model, data),
              "flops": kcaps.pruning.count_flops(kcaps.models.classifier(model))}
    small = kcaps.pruning.prune_channels(model, ratios, args.criterion,
                                         data=data.x_train[:args.samples])
    pruned_accuracy = _accuracy(small, data)
    os.makedirs(args.output, exist_ok=True)
    if config is not None:
        tf.keras.utils.set_random_seed(args.seed)
        recipe.fit(small, data, config, output_dir=args.output)
    small.save(os.path.join(args.output, "model.keras"))
    after = {"parameters": int(small.count_params()), "accuracy": _accuracy(small, data),
             "flops": kcaps.pruning.count_flops(kcaps.models.classifier(small)),
             "accuracy_before_finetune": pruned_accuracy}
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump({"ratios": ratios, "criterion": args.criterion, "before": before,
                   "after": after}, f, indent=2)
    print(f"parameters  {before['parameters']:,} -> {after['parameters']:,}")
    print(f"FLOPs       {before['flops']:,} -> {after['flops']:,}")
    print(f"accuracy    {before['accuracy']:.4f} -> {pruned_accuracy:.4f} pruned -> "
          f"{after['accuracy']:.4f} after {args.epochs} fine-tuning epochs")
    print(f"outputs     {args.output}/ (model.keras, metrics.json, log.csv)")
    return 0
