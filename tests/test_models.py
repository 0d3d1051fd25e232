import numpy as np
import pytest
import tensorflow as tf

import kcaps


def test_capsnet_has_the_published_parameter_count():
    assert kcaps.models.capsnet().count_params() == 8_215_568


def test_capsnet_without_decoder_drops_exactly_the_decoder():
    decoder = 160 * 512 + 512 + 512 * 1024 + 1024 + 1024 * 784 + 784
    assert kcaps.models.capsnet(decoder=False).count_params() == 8_215_568 - decoder


def test_small_capsnet_is_small():
    model = kcaps.models.small_capsnet()
    assert model.count_params() <= 200_000
    assert model.get_layer("primary_capsules").output_shape[1] <= 300
    assert model.output_shape == (None, 10)


def test_capsnet_rejects_too_small_images():
    with pytest.raises(ValueError, match="minimum is 25x25"):
        kcaps.models.capsnet(input_shape=(20, 20, 1))
    with pytest.raises(ValueError, match="input_shape"):
        kcaps.models.small_capsnet(input_shape=(28, 28))


def test_unknown_model_name_lists_valid_ones():
    with pytest.raises(ValueError, match="small_capsnet"):
        kcaps.models.get("lenet")


def _tiny_capsnet():
    return kcaps.models.capsnet(input_shape=(28, 28, 1), num_classes=10)


def test_fit_evaluate_predict_with_plain_labels():
    model = _tiny_capsnet()
    model.compile(tf.keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)
    y = np.arange(8) % 10
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert {"lengths_loss", "reconstruction_loss", "lengths_accuracy"} <= set(history)
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) >= {"loss", "lengths_accuracy"}
    lengths, reconstruction = model.predict(x, verbose=0)
    assert lengths.shape == (8, 10) and reconstruction.shape == (8, 28, 28, 1)
    one_hot = model.fit(x, np.eye(10)[y], epochs=1, verbose=0).history["loss"]
    assert np.isfinite(one_hot[0])


def test_decoder_sees_the_label_capsule_in_training_and_the_longest_at_inference():
    model = _tiny_capsnet()
    masked = tf.keras.Model(model.inputs, model.get_layer("mask").output)
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[[3, 7]]
    kept = lambda out: np.abs(out.reshape(2, 10, 16)).sum(-1).argmax(-1)  # noqa: E731
    np.testing.assert_array_equal(kept(masked([x, labels], training=True).numpy()), [3, 7])
    longest = model.predict(x, verbose=0)[0].argmax(-1)
    np.testing.assert_array_equal(kept(masked([x, labels], training=False).numpy()), longest)


def test_classifier_shares_weights_and_drops_decoder():
    model = _tiny_capsnet()
    classifier = kcaps.models.classifier(model)
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(classifier.predict(x, verbose=0), model.predict(x, verbose=0)[0],
                               rtol=1e-5, atol=1e-6)
    assert classifier.inputs[0].shape.as_list() == [None, 28, 28, 1]


@pytest.mark.parametrize("save_format", ["keras", "tf"])
@pytest.mark.parametrize("builder", ["capsnet", "small_capsnet"])
def test_save_and_load_give_identical_predictions(tmp_path, save_format, builder):
    model = kcaps.models.get(builder)(routing_iterations=2)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    model.fit(x, np.arange(4), epochs=1, verbose=0)  # optimizer state must survive too
    path = str(tmp_path / ("model.keras" if save_format == "keras" else "saved_model"))
    model.save(path, save_format=save_format)
    loaded = tf.keras.models.load_model(path)  # no custom_objects: kcaps registers its classes
    assert type(loaded) is type(model)
    for a, b in zip(tf.nest.flatten(model.predict(x, verbose=0)),
                    tf.nest.flatten(loaded.predict(x, verbose=0))):
        np.testing.assert_array_equal(a, b)
    loaded.fit(x, np.arange(4), epochs=1, verbose=0)  # still trains with plain labels


@pytest.mark.slow
def test_short_fit_on_real_digits_lowers_the_loss(real_digits):
    model = kcaps.models.small_capsnet()
    model.compile(tf.keras.optimizers.Adam(1e-3))
    x, y = real_digits.x_train[:1024], real_digits.y_train[:1024]
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    assert after["loss"] < 0.7 * before["loss"]
    assert after["accuracy"] > 0.5


def test_papers_shared_capsnet_parameter_count():
    unshared = kcaps.models.capsnet().count_params()
    small = kcaps.models.capsnet(decoder="small").count_params()
    assert unshared - small == 73_728
    shared = kcaps.models.capsnet(weight_sharing=32, sharing_order="type_major", decoder="small")
    # the paper's 6,719,920 counts 11,520 coupling coefficients and a 160-value bias besides
    assert shared.count_params() == 6_719_920 - 11_520 - 160
    assert shared.get_layer("class_capsules").kernel.shape == (32, 8, 10, 16)


def test_squash_option_reaches_primary_and_class_capsules():
    model = kcaps.models.small_capsnet(squash="approx")
    assert model.get_layer("primary_capsules").squash == "approx"
    assert model.get_layer("class_capsules").squash == "approx"
    with pytest.raises(ValueError, match="decoder"):
        kcaps.models.capsnet(decoder="tiny")
