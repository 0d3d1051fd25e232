"""MultiMNIST (Sabour et al.) against a NumPy reference, and the both-digits metric."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps
from kcaps_training import datasets, multimnist


def numpy_shift_onto_canvas(image, dy, dx, max_shift=4):
    """A 28x28 digit placed in a (28 + 2 max_shift)^2 canvas, moved by (dy, dx)."""
    h, w = image.shape
    canvas = np.zeros((h + 2 * max_shift, w + 2 * max_shift), np.float32)
    canvas[max_shift + dy: max_shift + dy + h, max_shift + dx: max_shift + dx + w] = image
    return canvas


def test_examples_match_a_numpy_reference(real_digits):
    images, labels = real_digits.x_test[:50, ..., 0], real_digits.y_test[:50]
    data = multimnist.multimnist(images, labels, pairs_per_image=3, seed=5)
    x, y = multimnist.to_numpy(data)
    plan = multimnist.plan_pairs(labels, 3, seed=5)
    assert x.shape == (150, 36, 36, 1) and y.shape == (150, 10)
    assert np.all(labels[plan.base] != labels[plan.top])
    assert np.all(np.abs(np.concatenate([plan.base_shift, plan.top_shift])) <= 4)
    assert set(np.unique(np.concatenate([plan.base_shift, plan.top_shift]))) == set(range(-4, 5))
    for n in range(150):
        a = numpy_shift_onto_canvas(images[plan.base[n]], *plan.base_shift[n])
        b = numpy_shift_onto_canvas(images[plan.top[n]], *plan.top_shift[n])
        np.testing.assert_allclose(x[n, ..., 0], np.minimum(a + b, 1.0), atol=1e-7)
        expected = np.zeros(10)
        expected[[labels[plan.base[n]], labels[plan.top[n]]]] = 1
        np.testing.assert_array_equal(y[n], expected)
    assert np.all(np.repeat(np.arange(50), 3) == plan.base)  # every digit is a base 3 times


def test_same_seed_same_data_other_seed_other_data():
    images = np.random.default_rng(0).integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    first = multimnist.to_numpy(multimnist.multimnist(images, labels, seed=1))
    again = multimnist.to_numpy(multimnist.multimnist(images, labels, seed=1))
    other = multimnist.to_numpy(multimnist.multimnist(images, labels, seed=2))
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])
    assert first[0].max() <= 1.0 and first[0].dtype == np.float32  # uint8 scaled, sum clipped


def test_from_dataset_splits_like_the_source(real_digits):
    train, test = multimnist.from_dataset(real_digits, train_pairs_per_image=2)
    assert int(train.cardinality()) == 2 * 8000 and int(test.cardinality()) == 2000


def test_built_from_the_tfds_mnist_loader():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        data = datasets.load("mnist")
    train, _ = multimnist.from_dataset(data)
    x, y = multimnist.to_numpy(train)
    assert x.shape[1:] == (36, 36, 1) and np.all(y.sum(-1) == 2)


def test_bad_input_fails_clearly():
    with pytest.raises(ValueError, match="at least two classes"):
        multimnist.plan_pairs(np.zeros(5, int))
    with pytest.raises(ValueError, match="grey images"):
        multimnist.multimnist(np.zeros((3, 28, 28, 3)), np.arange(3))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        multimnist.multimnist(np.zeros((3, 28, 28)), np.arange(2))


def test_both_digits_accuracy_against_numpy():
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(200, 10)).astype(np.float32)
    pairs = np.stack([rng.permutation(10)[:2] for _ in range(200)])
    labels = np.zeros((200, 10), np.float32)
    labels[np.arange(200)[:, None], pairs] = 1
    labels[:60] = 0  # make some predictions right: label = the two best scores
    labels[np.arange(60)[:, None], np.argsort(-scores[:60], axis=1)[:, :2]] = 1
    top2 = np.sort(np.argsort(-scores, axis=1)[:, :2], axis=1)
    expected = np.mean(np.all(top2 == np.sort(np.argwhere(labels)[:, 1].reshape(200, 2), 1), 1))
    metric = kcaps.metrics.MultiDigitAccuracy()
    metric.update_state(labels, scores)
    assert float(metric.result()) == pytest.approx(expected) and expected >= 0.3
    clone = kcaps.metrics.MultiDigitAccuracy.from_config(metric.get_config())
    assert clone.num_digits == 2 and clone.name == metric.name
    with pytest.raises(ValueError, match="num_digits"):
        kcaps.metrics.MultiDigitAccuracy(num_digits=0)


def test_margin_loss_trains_on_two_hot_labels():
    model = kcaps.models.backbone_capsnet("cnn", "dynamic", (36, 36, 1), 10)
    model.compile(tf.keras.optimizers.Adam(1e-3),
                  metrics={"lengths": [kcaps.metrics.MultiDigitAccuracy()]})
    images = np.random.default_rng(0).uniform(size=(10, 28, 28)).astype(np.float32)
    train = multimnist.multimnist(images, np.arange(10)).batch(5)
    history = model.fit(train, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and "both_digits_accuracy" in history
