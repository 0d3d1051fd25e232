"""FasTrCaps' training policies: schedules against NumPy references, the adaptive batch size inside
one model.fit, weight sharing, the small decoder, and the recipe's options."""
import math

import numpy as np
import pytest
import tensorflow as tf

import kcaps
from kcaps.adaptive_batch import AdaptiveBatchDataset, AdaptiveBatchSize, BatchSizeSchedule
from kcaps.lr_schedules import CosineRestarts
from conftest import _examples
from crash import Interrupt, StopAfter
from kcaps_training import datasets, fast_training
from kcaps_training import train as recipe


def _tiny_digits(n_train=24, n_test=16):
    full = datasets.load("digits")
    return datasets.Dataset("digits", full.x_train[:n_train], full.y_train[:n_train],
                            full.x_test[:n_test], full.y_test[:n_test], 10)


@pytest.mark.slow
def test_batch_size_and_learning_rate_change_inside_one_fit():
    data = _tiny_digits()
    lr, batches = kcaps.policies.warm_adabatch(len(data.x_train), epochs=4, warm_epochs=2,
                                               warm_batch_size=4, batch_size=16)
    train = AdaptiveBatchDataset(_examples(data.x_train, data.y_train).shuffle(24), 4)
    model = kcaps.models.small_capsnet()
    model.compile(tf.keras.optimizers.Adam(lr))
    history = model.fit(train, epochs=4, verbose=0, callbacks=[
        kcaps.callbacks.EpochTimer(), kcaps.lr_schedules.LearningRateLogger(),
        AdaptiveBatchSize(batches, train)]).history
    assert history["batch_size"] == [4, 4, 16, 16]
    assert all(s > 0 for s in history["epoch_cpu_seconds"])
    assert int(model.optimizer.iterations.numpy()) == 6 + 6 + 2 + 2  # 24 examples per epoch
    starts = [0, 6, 12, 14]
    np.testing.assert_allclose(history["lr"], [float(lr(s)) for s in starts], rtol=1e-6)
    np.testing.assert_allclose(history["lr_end"], [float(lr(s + n - 1)) for s, n in
                                                   zip(starts, [6, 6, 2, 2])], rtol=1e-6)
    assert history["lr"][2] == pytest.approx(1e-3)  # the restart at the batch switch


def _regression(strategy, weights=None):
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
        model.compile(tf.keras.optimizers.SGD(0.1), "mse")
    if weights is not None:
        model.set_weights(weights)
    return model


class _Steps(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.steps = getattr(self, "steps", [])

    def on_epoch_end(self, epoch, logs=None):
        self.steps.append(int(self.model.optimizer.iterations.numpy()))


def _regression_examples():
    rng = np.random.default_rng(0)
    return _examples(rng.normal(size=(24, 3)).astype(np.float32),
                     rng.normal(size=(24, 1)).astype(np.float32))


@pytest.mark.slow
def test_fit_adaptive_switches_the_batch_size_under_a_strategy():
    # one replica in-process (tests/test_distribute.py runs two); no shuffling: same batches
    batches = BatchSizeSchedule([4, 12], [2])
    runs = {}
    for name, strategy in (("default", tf.distribute.get_strategy()),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0"]))):
        model = _regression(strategy, runs["default"][2] if runs else None)
        initial = model.get_weights()
        data, steps = AdaptiveBatchDataset(_regression_examples(), 4), _Steps()
        history = kcaps.adaptive_batch.fit_adaptive(
            model, data, 4, [AdaptiveBatchSize(batches, data), steps], verbose=0)
        assert history.epoch == [0, 1, 2, 3] and model.history is history
        runs[name] = (history.history, steps.steps, initial, model.get_weights())
    for history, steps, _, _ in runs.values():
        assert history["batch_size"] == [4, 4, 12, 12]
        assert steps == [6, 12, 14, 16]  # 24 examples: 6 steps of 4, then 2 of 12
    np.testing.assert_allclose(runs["mirrored"][0]["loss"], runs["default"][0]["loss"], rtol=1e-5)
    for mirrored, default in zip(runs["mirrored"][3], runs["default"][3]):
        np.testing.assert_allclose(mirrored, default, rtol=1e-5, atol=1e-6)


def test_one_fit_under_a_strategy_cannot_switch_the_batch_size():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    data = AdaptiveBatchDataset(_regression_examples(), 12)
    callback = AdaptiveBatchSize(BatchSizeSchedule([12, 24], [1]), data)
    with pytest.raises(ValueError, match="this model.fit distributed its data once, in batches "
                                         "of 12; train with kcaps.adaptive_batch.fit_adaptive"):
        _regression(strategy).fit(data, epochs=2, verbose=0, callbacks=[callback])
    with pytest.raises(ValueError, match="one AdaptiveBatchSize of `data`, found 0"):
        kcaps.adaptive_batch.fit_adaptive(_regression(strategy), data, 2, [])


def test_batch_sizes_must_cover_the_replicas():
    BatchSizeSchedule([2, 16], [3]).check_replicas(2)
    with pytest.raises(ValueError, match=r"`batch_sizes\[0\]` = 1 is smaller than the 2 replicas"):
        BatchSizeSchedule.warm(3, 1, 16).check_replicas(2)


@pytest.mark.slow
def test_fit_adaptive_under_a_strategy_deletes_the_backup_when_a_callback_stops(tmp_path):
    class StopNow(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    model = _regression(tf.distribute.MirroredStrategy(["/cpu:0"]))
    data = AdaptiveBatchDataset(_regression_examples(), 4)
    backup = tf.keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    history = kcaps.adaptive_batch.fit_adaptive(model, data, 4, [
        backup, AdaptiveBatchSize(BatchSizeSchedule([4, 12], [2]), data), StopNow()], verbose=0)
    assert history.epoch == [0]  # stopped in the first batch phase: no second fit
    assert backup.delete_checkpoint  # given back after the phases
    assert not any((tmp_path / "backup").rglob("checkpoint"))


@pytest.mark.slow
def test_recipe_warm_adabatch_resumes_with_the_right_batch_size_and_step(tmp_path):
    data = _tiny_digits()
    config = recipe.TrainConfig(epochs=4, lr_policy="warm_adabatch", batch_policy="adabatch",
                                warm_epochs=2, warm_batch_size=4, adabatch_size=16,
                                steps_per_execution=4, output_dir=str(tmp_path), verbose=0)
    with pytest.raises(Interrupt):
        recipe.train(config, callbacks=[StopAfter(epoch=1)], data=data)
    result = recipe.train(config, data=data)
    assert result.history["batch_size"] == [16, 16]  # epochs 3 and 4 only
    assert int(result.model.optimizer.iterations.numpy()) == 6 + 6 + 2 + 2
    log = (tmp_path / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in log[1:]]
    assert [r["batch_size"] for r in rows] == ["4", "4", "16", "16"]
    assert float(rows[2]["lr"]) == pytest.approx(1e-3)  # restart at the switch, after resuming


def test_default_config_keeps_the_recipe():
    # epoch_decay is a policy of kcaps.policies: a step schedule in the optimizer (saved and
    # restored with it) that is learning_rate * lr_decay ** epoch on every step of an epoch
    config = recipe.TrainConfig()
    assert fast_training.model_options(config) == {}
    data = _tiny_digits(n_train=150)
    plan = fast_training.plan(config, data)
    assert plan.data_callbacks == [] and isinstance(plan.train_data, tf.data.Dataset)
    assert isinstance(plan.schedule_callbacks[0], kcaps.lr_schedules.LearningRateLogger)
    steps = math.ceil(150 / config.batch_size)  # 3 steps per epoch
    for step in range(steps * config.epochs + 5):
        expected = 1e-3 * 0.9 ** min(step // steps, config.epochs - 1)
        assert float(plan.learning_rate(step)) == pytest.approx(expected, rel=1e-6), step


@pytest.mark.parametrize("field,value", [
    ("lr_policy", "cyclic"), ("batch_policy", "grow"), ("warm_epochs", 0),
    ("warm_batch_size", 0), ("adabatch_size", -16), ("steps_per_execution", 0),
    ("decay_steps", 0), ("weight_sharing", 0), ("weight_sharing", "diagonal"),
    ("sharing_order", "random"), ("decoder", "tiny"), ("squash", "tanh"),
])
def test_train_config_rejects_bad_fast_training_fields(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        recipe.TrainConfig(**{field: value})


class _Digits(tf.keras.utils.Sequence):
    def __init__(self, data):
        super().__init__()
        self.data = data

    def __len__(self):
        return 2

    def __getitem__(self, k):
        return self.data.x_train[4 * k:4 * k + 4], self.data.y_train[4 * k:4 * k + 4]


@pytest.mark.slow
def test_capsnets_train_on_data_whose_spec_gives_only_ranks():
    # Keras feeds a Sequence as (None, None, None, 1) images: capsule counts must stay static
    model = kcaps.models.small_capsnet()
    model.compile("adam")
    history = model.fit(_Digits(_tiny_digits(8, 4)), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


# ---- weight sharing and the FasTrCaps model options -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_shared_small_decoder_model_and_schedule_save_and_load(tmp_path, fmt):
    model = kcaps.models.small_capsnet(decoder="small", weight_sharing="type", squash="approx")
    model.compile(tf.keras.optimizers.Adam(CosineRestarts(1e-4, 1e-3, [3, 5])))
    data = _tiny_digits(8, 4)
    model.fit(data.x_train, data.y_train, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / ("m.keras" if fmt == "keras" else "saved")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(data.x_test, verbose=0)[0],
                               model.predict(data.x_test, verbose=0)[0], rtol=1e-5, atol=1e-6)
    if fmt == "keras":
        schedule = loaded.optimizer.get_config()["learning_rate"]
        assert schedule["class_name"].endswith("CosineRestarts")
        assert schedule["config"]["cycle_steps"] == [3, 5]


def test_the_models_own_squash_unless_one_is_asked_for():
    from kcaps_training.config import TrainConfig

    assert "squash" not in fast_training.model_options(TrainConfig(model="efficient_capsnet"))
    assert fast_training.model_options(TrainConfig(squash="squash"))["squash"] == "squash"
    with pytest.raises(ValueError, match="`squash` must be one of"):
        TrainConfig(squash="tanh")
