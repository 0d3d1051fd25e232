"""FasTrCaps' training policies: schedules against NumPy references, the adaptive batch size inside
one model.fit, weight sharing, the small decoder, and the recipe's options."""
import math

import numpy as np
import pytest
import tensorflow as tf

import kcaps
from kcaps.adaptive_batch import AdaptiveBatchDataset, AdaptiveBatchSize, BatchSizeSchedule
from kcaps.lr_schedules import CosineRestarts, OneCycle
from crash import Interrupt, StopAfter
from kcaps_training import datasets, fast_training
from kcaps_training import train as recipe


def numpy_cosine_restarts(step, lr_min, lr_max, cycles):
    """SGDR written out: find the cycle of `step` (the last one repeats), then the cosine."""
    start = 0
    for length in cycles[:-1]:
        if step < start + length:
            t, period = step - start, length
            break
        start += length
    else:
        t, period = (step - start) % cycles[-1], cycles[-1]
    return lr_min + (lr_max - lr_min) * 0.5 * (1 + math.cos(math.pi * t / period))


def numpy_one_cycle(step, lr0, total):
    """The authors' `one_cycle_policy`, transcribed (clamped at lr0 / 10 after the end)."""
    tsoc = 0.9 * total
    if step <= 0.9 * total / 2:
        lr = 9 * lr0 * step / (tsoc / 2) + lr0
    elif step > 0.9 * total:
        lr = 0.9 * lr0 * (step - total) / (tsoc - total) + lr0 / 10
    else:
        lr = -9 * lr0 * (step - tsoc / 2) / (tsoc / 2) + 10 * lr0
    return max(lr, lr0 / 10)


def test_cosine_restarts_matches_numpy_and_repeats_the_last_cycle():
    schedule = CosineRestarts(1e-4, 1e-3, [5, 7])
    for step in range(40):
        assert float(schedule(step)) == pytest.approx(
            numpy_cosine_restarts(step, 1e-4, 1e-3, [5, 7]), rel=1e-5)
    assert float(schedule(5)) == pytest.approx(1e-3) and float(schedule(12)) == pytest.approx(1e-3)


def test_one_cycle_matches_the_authors_formula():
    schedule = OneCycle(1e-4, 200)
    for step in range(0, 230, 3):
        assert float(schedule(step)) == pytest.approx(numpy_one_cycle(step, 1e-4, 200), rel=1e-4)
    assert float(schedule(90)) == pytest.approx(1e-3)  # the peak, 10 lr0 at 45%


def test_warm_adabatch_restarts_exactly_at_the_batch_switch():
    lr, batches = kcaps.policies.warm_adabatch(num_examples=10, epochs=5, learning_rate=2e-3,
                                               warm_epochs=2, warm_batch_size=1, batch_size=4)
    assert [batches.batch_size(e) for e in range(5)] == [1, 1, 4, 4, 4]
    assert lr.cycle_steps == [2 * 10, 3 * 3]  # batch 4 over 10 examples: 3 steps, one short
    assert (lr.lr_min, lr.lr_max) == (pytest.approx(2e-4), 2e-3)
    assert float(lr(19)) < 3e-4 and float(lr(20)) == pytest.approx(2e-3)
    assert float(lr(28)) < 4e-4


def test_named_policies_count_steps_from_the_dataset_size():
    batches = kcaps.policies.batch_size_schedule("adabatch", warm_epochs=1, warm_batch_size=2,
                                                 adabatch_size=5)
    per_epoch = [batches.steps_per_epoch(e, 20) for e in range(4)]
    assert per_epoch == [10, 4, 4, 4]
    wr = kcaps.policies.learning_rate_schedule("warm_restarts", 1e-3, batches, 20, 4)
    assert wr.cycle_steps == per_epoch and wr.lr_min == pytest.approx(1e-4)
    ocp = kcaps.policies.learning_rate_schedule("one_cycle", 1e-3, batches, 20, 4)
    assert ocp.total_steps == 22 and ocp.initial_learning_rate == pytest.approx(1e-4)
    exp = kcaps.policies.learning_rate_schedule("exp_decay", 1e-3, batches, 20, 4)
    assert float(exp(22)) == pytest.approx(1e-4, rel=0.1)  # tenfold decay over the run
    assert float(exp(7)) == pytest.approx(1e-3 * 0.96 ** (7 / exp.decay_steps), rel=1e-5)
    assert kcaps.policies.learning_rate_schedule("fixed", 1e-3, batches, 20, 4) == 1e-3


@pytest.mark.parametrize("make,field", [
    (lambda: CosineRestarts(0.0, 1e-3, [10]), "lr_min"),
    (lambda: CosineRestarts(1e-4, -1e-3, [10]), "lr_max"),
    (lambda: CosineRestarts(1e-4, 1e-3, [10, 0]), "cycle_steps"),
    (lambda: CosineRestarts(1e-4, 1e-3, []), "cycle_steps"),
    (lambda: OneCycle(1e-4, 0), "total_steps"),
    (lambda: OneCycle(-1.0, 10), "initial_learning_rate"),
    (lambda: BatchSizeSchedule([16, 0], [3]), "batch_sizes"),
    (lambda: BatchSizeSchedule([1, 16], [0]), "boundaries"),
    (lambda: BatchSizeSchedule([1, 2, 3], [4, 4]), "boundaries"),
    (lambda: BatchSizeSchedule.warm(warm_epochs=0), "warm_epochs"),
    (lambda: AdaptiveBatchDataset(_examples(np.zeros((4, 2)), np.zeros(4)), 0), "batch_size"),
    (lambda: kcaps.policies.learning_rate_schedule(
        "warm_restarts", 0.0, BatchSizeSchedule([4]), 10, 2), "learning_rate"),
    (lambda: kcaps.policies.learning_rate_schedule(
        "exp_decay", 1e-3, BatchSizeSchedule([4]), 10, 2, decay_steps=0), "decay_steps"),
])
def test_bad_schedule_parameters_raise_naming_the_field(make, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        make()


def test_unknown_policies_list_the_valid_ones():
    with pytest.raises(ValueError, match="exp_decay, fixed, one_cycle"):
        kcaps.policies.learning_rate_schedule("cyclic", 1e-3, BatchSizeSchedule([4]), 10, 2)
    with pytest.raises(ValueError, match="adabatch, fixed"):
        kcaps.policies.batch_size_schedule("grow")


def test_schedules_round_trip_their_config():
    for schedule in (CosineRestarts(1e-4, 1e-3, [7, 9]), OneCycle(1e-4, 50)):
        clone = tf.keras.optimizers.schedules.deserialize(
            tf.keras.optimizers.schedules.serialize(schedule))
        assert type(clone) is type(schedule) and clone.get_config() == schedule.get_config()
    batches = BatchSizeSchedule.warm(3, 1, 16)
    clone = tf.keras.utils.deserialize_keras_object(tf.keras.utils.serialize_keras_object(batches))
    assert clone.get_config() == batches.get_config()


def test_batch_size_schedule_bookkeeping():
    batches = BatchSizeSchedule([1, 16, 32], [3, 5])
    assert [batches.batch_size(e) for e in range(7)] == [1, 1, 1, 16, 16, 32, 32]
    assert [batches.steps_per_epoch(e, 100) for e in (0, 3, 5)] == [100, 7, 4]
    assert batches.steps_before(5, 100) == 300 + 14
    assert [batches.epoch_at_step(s, 100) for s in (0, 299, 300, 306, 307, 314)] == \
        [0, 2, 3, 3, 4, 5]


def _examples(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y))


def test_dataset_serves_every_example_once_per_iteration_at_the_current_size():
    x = np.arange(10, dtype=np.float32)[:, None]
    data = AdaptiveBatchDataset(_examples(x, np.arange(10)).shuffle(10, seed=1), batch_size=4)
    assert int(data.cardinality()) == 3 and data.num_examples == 10
    batches = [y.numpy() for _, y in data]
    assert [len(b) for b in batches] == [4, 4, 2]
    first_order = np.concatenate(batches)
    assert sorted(first_order) == list(range(10))
    data.batch_size = 1
    assert int(data.cardinality()) == 10 and data.element_spec[0].shape.as_list() == [None, 1]
    second = np.concatenate([y.numpy() for _, y in data])  # a new iterator: reshuffled
    assert sorted(second) == list(range(10)) and not np.array_equal(second, first_order)


def test_dataset_needs_single_examples_of_known_count():
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        AdaptiveBatchDataset(np.zeros((4, 2)), 2)
    unknown = _examples(np.zeros((4, 2)), np.zeros(4)).filter(lambda x, y: True)
    with pytest.raises(ValueError, match="known, finite"):
        AdaptiveBatchDataset(unknown, 2)
    with pytest.raises(ValueError, match="`data` must be an AdaptiveBatchDataset"):
        AdaptiveBatchSize(BatchSizeSchedule([2]), _examples(np.zeros((4, 2)), np.zeros(4)))


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
    config = recipe.TrainConfig()
    assert fast_training.model_options(config) == {}
    plan = fast_training.plan(config, _tiny_digits())
    assert plan.learning_rate == config.learning_rate and plan.data_callbacks == []
    assert isinstance(plan.train_data, tf.data.Dataset)
    assert isinstance(plan.schedule_callbacks[0], tf.keras.callbacks.LearningRateScheduler)
    assert plan.schedule_callbacks[0].schedule(2) == pytest.approx(1e-3 * 0.9 ** 2)


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

@pytest.mark.parametrize("sharing,order", [
    ("type", "position_major"), ("position", "position_major"), (4, "position_major"),
    (6, "type_major"), (3, "type_major"), (5, "position_major"), (4, "type_major")])
def test_every_sharing_layout_matches_the_gathered_kernel(sharing, order):
    # 24 capsules = 4 positions x 6 types; some layouts use the reshape path, others the gather
    layer = kcaps.layers.CapsuleDense(3, 4, weight_sharing=sharing, capsule_types=6,
                                      sharing_order=order, routing_iterations=1)
    u = np.random.default_rng(0).normal(size=(2, 24, 5)).astype(np.float32)
    layer.build(u.shape)
    w = np.random.default_rng(1).normal(size=layer.kernel.shape).astype(np.float32)
    layer.kernel.assign(w)
    p, t = np.arange(24) // 6, np.arange(24) % 6  # kcaps order: i = p * 6 + t
    index = {"type": t, "position": p}.get(sharing)
    if index is None:
        index = (t * 4 + p if order == "type_major" else np.arange(24)) % sharing
    u_hat = np.einsum("bid,idjk->bjik", u, w[index])
    np.testing.assert_allclose(layer.projection(u).numpy(), u_hat, rtol=1e-5, atol=1e-6)


def test_type_major_tiling_is_the_papers_digit_capsule_sharing():
    # FasTrCaps' capsule type t at position p is row 36 t + p and uses matrix (36 t + p) mod 32
    index = kcaps.projections.sharing_index(1152, 32, capsule_types=32, sharing_order="type_major")
    p, t = np.arange(1152) // 32, np.arange(1152) % 32
    np.testing.assert_array_equal(index, (36 * t + p) % 32)
    assert kcaps.projections.sharing_layout(index) is None  # no reshape form: gathered
    position = kcaps.projections.sharing_index(1152, 36, capsule_types=32,
                                               sharing_order="type_major")
    np.testing.assert_array_equal(position, p)  # K = 36 type-major is per-position sharing


def test_papers_shared_capsnet_parameter_count():
    unshared = kcaps.models.capsnet().count_params()
    small = kcaps.models.capsnet(decoder="small").count_params()
    assert unshared - small == 73_728
    shared = kcaps.models.capsnet(weight_sharing=32, sharing_order="type_major", decoder="small")
    # the paper's 6,719,920 counts 11,520 coupling coefficients and a 160-value bias besides
    assert shared.count_params() == 6_719_920 - 11_520 - 160
    assert shared.get_layer("class_capsules").kernel.shape == (32, 8, 10, 16)


def test_selected_capsule_uses_labels_in_training_and_lengths_at_inference():
    v = np.zeros((2, 3, 2), np.float32)
    v[0, 1], v[0, 2], v[1, 0], v[1, 2] = [3, 4], [1, 0], [0, 2], [0, 1]
    select = kcaps.small_decoder.SelectedCapsule()
    np.testing.assert_array_equal(select(v).numpy(), [[3, 4], [0, 2]])
    np.testing.assert_array_equal(select([v, np.array([2, 2])], training=True).numpy(),
                                  [[1, 0], [0, 1]])
    np.testing.assert_array_equal(select([v, np.array([2, 2])], training=False).numpy(),
                                  [[3, 4], [0, 2]])
    with pytest.raises(ValueError, match="rank-2"):
        select.build((None, 6))


def test_squash_option_reaches_primary_and_class_capsules():
    model = kcaps.models.small_capsnet(squash="approx")
    assert model.get_layer("primary_capsules").squash == "approx"
    assert model.get_layer("class_capsules").squash == "approx"
    with pytest.raises(ValueError, match="decoder"):
        kcaps.models.capsnet(decoder="tiny")


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
