"""Self-attention routing, the efficient squash, depthwise primary capsules, efficient_capsnet."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot

import kcaps
from kcaps import pruning


def _reference_self_attention(u, kernel, pair_bias, squash):
    """NumPy, float64: u (b, N, D), kernel (N, D, J, K), pair_bias (J, N) -> v (b, J, K)."""
    u, kernel = (np.asarray(a, np.float64) for a in (u, kernel))
    return _reference_attention_routing(np.einsum("bnd,ndjk->bjnk", u, kernel), pair_bias, squash)


def _reference_attention_routing(u_hat, pair_bias, squash):
    """NumPy, float64: u_hat (b, J, N, K), pair_bias (J, N) -> v (b, J, K)."""
    u_hat, pair_bias = np.asarray(u_hat, np.float64), np.asarray(pair_bias, np.float64)
    dim = u_hat.shape[-1]
    agreement = np.einsum("bjnk,bjmk->bjn", u_hat, u_hat) / np.sqrt(dim)  # a_i . sum_m a_m
    e = np.exp(agreement - agreement.max(axis=1, keepdims=True))
    c = e / e.sum(axis=1, keepdims=True) + pair_bias[None]
    s = np.einsum("bjn,bjnk->bjk", c, u_hat)
    norm = np.linalg.norm(s, axis=-1, keepdims=True)
    if squash == "efficient":
        return (1.0 - np.exp(-norm)) * s / norm
    return norm ** 2 / (1.0 + norm ** 2) * s / norm


@pytest.mark.parametrize("squash", ["efficient", "squash"])
def test_self_attention_layer_matches_a_numpy_reference(squash):
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3, 12, 8)).astype(np.float32)
    layer = kcaps.layers.CapsuleDense(5, 6, routing="self_attention", squash=squash)
    layer.build(u.shape)
    kernel = rng.normal(0.0, 0.3, size=tuple(layer.kernel.shape)).astype(np.float32)
    pair_bias = rng.normal(0.0, 0.2, size=(5, 12)).astype(np.float32)
    layer.kernel.assign(kernel)
    layer.attention_bias = pair_bias
    np.testing.assert_allclose(layer.attention_bias.numpy(), pair_bias)
    expected = _reference_self_attention(u, kernel, pair_bias, squash)
    np.testing.assert_allclose(layer(u).numpy(), expected, atol=1e-5, rtol=1e-5)


def test_self_attention_keeps_the_projection_options():
    """Weight sharing and XnODR's binarized projection feed the same routing."""
    rng = np.random.default_rng(1)
    u = tf.constant(rng.normal(size=(2, 12, 8)), tf.float32)
    shared = kcaps.layers.CapsuleDense(4, 6, routing="self_attention", weight_sharing="type",
                                       capsule_types=3)
    assert shared(u).shape == (2, 4, 6) and shared.kernel.shape == (3, 8, 4, 6)
    kernel = shared.kernel.numpy()
    full = kernel[np.arange(12) % 3]  # position-major: capsule i has type i mod 3
    np.testing.assert_allclose(
        shared(u).numpy(), _reference_self_attention(u, full, np.zeros((4, 12)), "squash"),
        atol=1e-5, rtol=1e-5)
    pytest.importorskip("larq")
    from test_binary_heads import numpy_xnodr_u_hat  # XnODR's u_hat, written in NumPy there

    binary = kcaps.layers.CapsuleDense(4, 6, routing="self_attention", projection="xnor")
    binary.build(u.shape)
    assert isinstance(binary.projection, kcaps.projections.XnorProjection)
    w = rng.uniform(-1, 1, size=tuple(binary.kernel.shape)).astype(np.float32)
    binary.kernel.assign(w)
    pair_bias = rng.normal(0.0, 0.2, size=(4, 12)).astype(np.float32)
    binary.attention_bias = pair_bias
    u_hat = numpy_xnodr_u_hat(u.numpy(), w).transpose(0, 2, 1, 3)  # (batch, J, N, K)
    np.testing.assert_allclose(binary(u).numpy(),
                               _reference_attention_routing(u_hat, pair_bias, "squash"),
                               atol=1e-5, rtol=1e-5)


def test_efficient_squash_value_and_gradient_are_finite_at_zero():
    s = tf.zeros([2, 8])
    with tf.GradientTape() as tape:
        tape.watch(s)
        v = kcaps.ops.squash_efficient(s)
    jacobian = tape.batch_jacobian(v, s).numpy()
    assert np.all(v.numpy() == 0.0)
    assert np.all(np.isfinite(jacobian))
    np.testing.assert_allclose(jacobian[0], np.eye(8), atol=1e-3)  # the limit of (1-e^-n)/n is 1
    x = np.array([[3.0, 4.0], [0.3, -0.4]])
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    np.testing.assert_allclose(kcaps.ops.squash_efficient(tf.constant(x, tf.float32)).numpy(),
                               (1 - 1 / np.exp(n)) * x / n, atol=1e-6)
    assert kcaps.ops.get_squash("efficient") is kcaps.ops.squash_efficient


def test_self_attention_refuses_iterations_and_bad_input():
    with pytest.raises(ValueError, match=r"routing='self_attention' is not iterative.*"
                                         r"routing_iterations=2"):
        kcaps.layers.CapsuleDense(10, 16, routing="self_attention", routing_iterations=2)
    kcaps.layers.CapsuleDense(10, 16, routing="self_attention", routing_iterations=3)  # default
    layer = kcaps.layers.CapsuleDense(10, 16, routing="self_attention")
    with pytest.raises(ValueError, match=r"rank-4 input of shape \(None, 4, 4, 8\)"):
        layer(tf.keras.Input((4, 4, 8)))
    with pytest.raises(ValueError, match="only a built layer with routing='self_attention'"):
        kcaps.layers.CapsuleDense(10, 16).attention_bias = np.zeros((10, 4))
    layer.build((None, 4, 8))
    with pytest.raises(ValueError,
                       match=r"shape \(10, 4\) \(num_capsules, num_in\), got \(4, 10\)"):
        layer.attention_bias = np.zeros((4, 10))
    with pytest.raises(ValueError, match="unknown projection 'binary'; valid projections: float"):
        kcaps.layers.CapsuleDense(10, 16, projection="binary")
    with pytest.raises(ValueError, match="contradicts projection='float'"):
        kcaps.layers.CapsuleDense(10, 16, routing="xnodr", projection="float")


# A CapsuleDense config exactly as kcaps saved it before routing and projection were separate.
OLD_CONFIG = {
    "name": "class_capsules", "trainable": True, "dtype": "float32", "num_capsules": 10,
    "capsule_dim": 16, "routing": None, "routing_iterations": 3, "squash": "squash",
    "use_bias": False, "weight_sharing": None, "capsule_types": None,
    "sharing_order": "position_major",
    "kernel_initializer": {"module": "kcaps.initializers", "class_name": "CapsuleFanIn",
                           "config": {"scale": 1.0, "seed": None},
                           "registered_name": "kcaps>CapsuleFanIn"},
    "kernel_regularizer": None, "kernel_constraint": None,
}


@pytest.mark.parametrize("old,routing,projection", [
    ("dynamic", "dynamic", "float"), ("xnodr", "dynamic", "xnor"),
    ("xnidr", "xnor_agreement", "float")])
def test_old_configs_and_argument_values_still_load(old, routing, projection):
    if old != "dynamic":
        pytest.importorskip("larq")
    config = dict(OLD_CONFIG, routing=old)
    layer = tf.keras.layers.deserialize(
        {"module": "kcaps.layers", "class_name": "CapsuleDense", "config": config,
         "registered_name": "kcaps>CapsuleDense"})
    assert (layer.routing, layer.projection_name) == (routing, projection)
    expected = {"float": kcaps.projections.DenseProjection,
                "xnor": kcaps.projections.XnorProjection}[projection]
    assert type(layer.projection) is expected
    assert layer(tf.zeros([2, 6, 8])).shape == (2, 10, 16)
    from_argument = kcaps.layers.CapsuleDense(10, 16, routing=old)
    assert from_argument.get_config()["routing"] == routing
    assert from_argument.get_config()["projection"] == projection


def test_squash_configs_name_registered_functions_and_refuse_others():
    layer = kcaps.layers.CapsuleDense(4, 4, squash=kcaps.ops.squash_efficient)
    assert layer.get_config()["squash"] == "efficient"
    primary = kcaps.layers.PrimaryCapsules(2, 4, 3, squash=kcaps.ops.squash_approx)
    assert primary.get_config()["squash"] == "approx"

    def my_squash(s):
        return s

    custom = kcaps.layers.Squash(my_squash)
    assert custom(tf.ones([1, 2])).shape == (1, 2)  # a callable works ...
    with pytest.raises(ValueError, match="squash .*my_squash.* is not registered"):
        custom.get_config()  # ... but a config cannot name it


def test_efficient_capsnet_has_the_papers_parameter_count_and_is_registered():
    model = kcaps.models.efficient_capsnet()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 161_824
    assert model.count_params() == 161_824 + 576  # + the batch norms' moving statistics
    primary = model.get_layer("primary_capsules")
    assert primary.depthwise and primary.output_shape == (None, 16, 8)
    caps = model.get_layer("class_capsules")
    assert caps.routing == "self_attention" and caps.attention_bias.shape == (10, 16)
    assert model.output_shape == (None, 10)
    assert kcaps.models.get("efficient_capsnet") is kcaps.models.efficient_capsnet
    with_decoder = kcaps.models.efficient_capsnet(decoder=True)
    assert with_decoder.output_names == ["lengths", "reconstruction"]
    generator = with_decoder.get_layer("reconstruction")  # the authors' generator
    assert generator.count_params() == 160 * 512 + 512 + 512 * 1024 + 1024 + 1024 * 784 + 784
    assert [type(layer.kernel_initializer).__name__ for layer in
            generator.hidden + [generator.pixels]] == ["HeNormal", "HeNormal", "GlorotNormal"]
    from kcaps_training import train

    train.TrainConfig(model="efficient_capsnet")  # `kcaps train --model efficient_capsnet`
    with pytest.raises(ValueError, match="not iterative"):
        kcaps.models.efficient_capsnet(routing_iterations=2)
    with pytest.raises(ValueError, match="input of 10x10 is too small"):
        kcaps.models.efficient_capsnet(input_shape=(10, 10, 1))


def test_depthwise_primary_capsules_need_the_matching_channel_count():
    layer = kcaps.layers.PrimaryCapsules(4, 8, 5, depthwise=True)
    with pytest.raises(ValueError, match=r"need an input with 32 channels, got input shape "
                                         r"\(None, 5, 5, 16\)"):
        layer(tf.keras.Input((5, 5, 16)))
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 32)).astype(np.float32)
    layer = kcaps.layers.PrimaryCapsules(4, 8, 5, depthwise=True, squash="efficient")
    out = layer(x).numpy()
    kernel, bias = layer.conv.depthwise_kernel.numpy()[..., 0], layer.conv.bias.numpy()
    s = np.einsum("bhwc,hwc->bc", x, kernel).reshape(2, 4, 8) + bias.reshape(4, 8)
    n = np.linalg.norm(s, axis=-1, keepdims=True)
    np.testing.assert_allclose(out, (1 - np.exp(-n)) * s / n, atol=1e-5)
    clone = kcaps.layers.PrimaryCapsules.from_config(layer.get_config())
    assert clone.depthwise and clone.get_config() == layer.get_config()


def _compare_outputs(model, loaded, x):
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for a, b in zip(*(o if isinstance(o, list) else [o] for o in (got, expected))):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("save_format", ["keras", "tf"])
def test_efficient_capsnet_saves_and_loads(tmp_path, save_format):
    model = kcaps.models.efficient_capsnet(decoder=True)
    model.get_layer("class_capsules").attention_bias = np.full((10, 16), 0.05)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(3).random((4, 28, 28, 1)).astype(np.float32)
    model.fit(x, np.arange(4), epochs=1, verbose=0)
    path = str(tmp_path / ("model.keras" if save_format == "keras" else "saved"))
    model.save(path, save_format=save_format)
    loaded = tf.keras.models.load_model(path)
    _compare_outputs(model, loaded, x)
    if save_format == "keras":
        assert (loaded.get_layer("reconstruction").get_config()
                == model.get_layer("reconstruction").get_config())
        caps = loaded.get_layer("class_capsules")
        np.testing.assert_allclose(caps.attention_bias.numpy(),
                                   model.get_layer("class_capsules").attention_bias.numpy())


def test_channel_pruning_removes_whole_depthwise_capsules():
    model = kcaps.models.efficient_capsnet()
    model.get_layer("class_capsules").attention_bias = np.linspace(0, 0.1, 160).reshape(10, 16)
    units = pruning.prunable_units(model)
    assert units["primary_capsules"] == 16 and "conv4" not in units  # conv4 goes by capsule
    keep = {"primary_capsules": [0, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 15]}
    small = pruning.surgery.shrink(model, keep)
    assert small.get_layer("conv4").filters == 96
    assert small.get_layer("bn4").gamma.shape == (96,)
    assert small.get_layer("primary_capsules").output_shape == (None, 12, 8)
    caps = small.get_layer("class_capsules")
    assert caps.kernel.shape == (12, 8, 10, 16)
    np.testing.assert_allclose(caps.attention_bias.numpy(),
                               model.get_layer("class_capsules").attention_bias.numpy()[:, keep[
                                   "primary_capsules"]])
    x = np.random.default_rng(4).random((4, 28, 28, 1)).astype(np.float32)
    pruning.surgery.apply_masks(pruning.surgery.masks(model, keep))
    _compare_outputs(model, small, x)  # zeroing the capsules' weights computes the same
    with pytest.raises(ValueError, match=r"would split capsule type\(s\) \[0\]"):
        pruning.surgery.shrink(model, {"conv4": list(range(1, 128))})
    every = pruning.prune_channels(kcaps.models.efficient_capsnet(), 0.25)
    assert every.get_layer("conv4").filters == 96
    assert every.get_layer("primary_capsules").capsule_types == 12


def test_tfmot_prunes_the_self_attention_kernel():
    model = kcaps.models.efficient_capsnet()
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile(tf.keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(5).random((16, 28, 28, 1)).astype(np.float32)
    pruned.fit(x, np.arange(16) % 10, batch_size=8, epochs=1, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    for name in ("class_capsules", "primary_capsules"):  # W, and the depthwise kernel
        kernel = stripped.get_layer(name).kernel.numpy()
        assert abs(np.mean(kernel == 0.0) - 0.5) < 0.01, name
