"""deep_capsnet: Peer et al.'s stack by default, configurable depth and sizes, CCM, bad input;
deep stacks that train (the length-preserving init, bias routing, step-0 lengths vs NumPy)."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps
from kcaps.initializers import CapsuleFanIn, CapsuleLengthPreserving


def test_deep_capsnet_defaults_are_peer_et_al_stack():
    model = kcaps.models.deep_capsnet()
    assert model.get_layer("conv1").filters == 512
    assert model.get_layer("primary_capsules").output_shape == (None, 6 * 6 * 64, 8)
    for k in range(1, 5):
        assert model.get_layer(f"capsules_{k}").output_shape == (None, 32, 12)
    assert model.get_layer("class_capsules").output_shape == (None, 10, 16)
    kernel_counts = [2304 * 8 * 32 * 12] + [32 * 12 * 32 * 12] * 3 + [32 * 12 * 10 * 16]
    capsule_params = sum(layer.count_params() for layer in model.layers
                         if isinstance(layer, kcaps.layers.CapsuleDense))
    assert capsule_params == sum(kernel_counts)


@pytest.mark.parametrize("depth", [0, 1, 3, 5])
def test_deep_capsnet_depth_counts_and_dims_are_configurable(depth):
    counts = [8 + k for k in range(depth)]
    model = kcaps.models.deep_capsnet(num_intermediate=depth, intermediate_capsules=counts,
                                      intermediate_dims=6, conv_filters=16, primary_types=4)
    capsule_layers = [l for l in model.layers if isinstance(l, kcaps.layers.CapsuleDense)]
    assert [l.num_capsules for l in capsule_layers] == counts + [10]
    config = model.get_config()
    rebuilt = kcaps.models.CapsuleModel.from_config(config)
    assert [l.name for l in rebuilt.layers] == [l.name for l in model.layers]


def test_deep_capsnet_ccm_layer_and_bad_arguments():
    model = kcaps.models.deep_capsnet(num_intermediate=1, conv_filters=16, primary_types=4,
                                      ccm_weight=0.1)
    assert isinstance(model.get_layer("ccm"), kcaps.losses.ChannelCorrelationLoss)
    with pytest.raises(ValueError, match="`intermediate_capsules` needs 3 values"):
        kcaps.models.deep_capsnet(num_intermediate=3, intermediate_capsules=[8, 8])
    with pytest.raises(ValueError, match="`num_intermediate` must be an integer >= 0, got -1"):
        kcaps.models.deep_capsnet(num_intermediate=-1)
    with pytest.raises(ValueError, match="`ccm_weight` must be >= 0"):
        kcaps.models.deep_capsnet(ccm_weight=-1.0)


EPS = 1e-7


def _np_squash(s):
    squared = np.sum(s * s, axis=-1, keepdims=True)
    return s * squared / (1.0 + squared) / np.sqrt(squared + EPS)


def _np_routing(u, kernel, iterations, bias=None):
    """Sabour et al.'s dynamic routing, written out: u (batch, N, d_in), kernel (N, d_in, J, d_out)."""
    u_hat = np.einsum("bni,nijd->bjnd", u, kernel)  # (batch, J, N, d_out)
    logits = np.zeros(u_hat.shape[:3])
    for iteration in range(iterations):
        c = np.exp(logits - logits.max(axis=1, keepdims=True))
        c /= c.sum(axis=1, keepdims=True)  # softmax over the output capsules j
        s = np.einsum("bjn,bjnd->bjd", c, u_hat)
        if bias is not None:
            s = s + bias
        v = _np_squash(s)
        if iteration < iterations - 1:
            logits = logits + np.einsum("bjnd,bjd->bjn", u_hat, v)
    return v


def _small_deep(depth=5, **kwargs):
    return kcaps.models.deep_capsnet(
        input_shape=(20, 20, 1), num_intermediate=depth, intermediate_capsules=16,
        intermediate_dims=8, capsule_dim=8, conv_filters=16, conv_kernel=5, primary_types=4,
        primary_dim=8, primary_kernel=5, primary_strides=2, **kwargs)


def _step0_lengths(model, x):
    """Per routed layer, (model's mean length, NumPy's mean length) from the primary capsules."""
    names = [layer.name for layer in model.layers if isinstance(layer, kcaps.layers.CapsuleDense)]
    probe = tf.keras.Model(model.inputs, [model.get_layer(n).output
                                          for n in ["primary_capsules", *names]])
    outputs = [o.numpy().astype(np.float64) for o in probe(x)]
    u, pairs = outputs[0], []
    for name, model_v in zip(names, outputs[1:]):
        layer = model.get_layer(name)
        bias = None if layer.bias is None else layer.bias.numpy()
        u = _np_routing(u, layer.kernel.numpy().astype(np.float64), layer.routing_iterations, bias)
        pairs.append((np.linalg.norm(model_v, axis=-1).mean(), np.linalg.norm(u, axis=-1).mean()))
    return names, pairs


@pytest.mark.parametrize("target, length", [(0.5, 0.5), (1.0, 0.3)])
def test_first_routing_iteration_gives_the_target_norm(target, length):
    # E|s_j|^2 = d_out sigma^2 N l^2 / J^2 = target^2 for inputs of length l (the docstring).
    num_in, d_in, num_out, d_out = 64, 8, 16, 12
    kernel = CapsuleLengthPreserving(target, length, seed=3)((num_in, d_in, num_out, d_out)).numpy()
    rng = np.random.default_rng(0)
    u = rng.normal(size=(256, num_in, d_in))
    u *= length / np.linalg.norm(u, axis=-1, keepdims=True)
    s = np.einsum("bni,nijd->bjd", u, kernel) / num_out  # c = 1 / J at the first iteration
    assert np.mean(np.sum(s * s, axis=-1)) == pytest.approx(target ** 2, rel=0.1)
    # kcaps' fan-in init on the same inputs: |s|^2 ~ l^2 N d_out / (d_in J^2), 60x too short here.
    fan_in = CapsuleFanIn(seed=3)((num_in, d_in, num_out, d_out)).numpy()
    s_old = np.einsum("bni,nijd->bjd", u, fan_in) / num_out
    expected = length ** 2 * num_in * d_out / (d_in * num_out ** 2)
    assert np.mean(np.sum(s_old * s_old, axis=-1)) == pytest.approx(expected, rel=0.1)


def test_five_layer_deep_capsnet_is_live_at_step_0_and_the_old_init_is_not():
    x = np.random.default_rng(1).uniform(size=(16, 20, 20, 1)).astype(np.float32)
    names, pairs = _step0_lengths(_small_deep(capsule_init="length_preserving"), x)
    assert len(names) == 6  # 5 intermediate layers + class capsules
    for name, (model_len, numpy_len) in zip(names, pairs):
        assert model_len == pytest.approx(numpy_len, rel=1e-3), name
        assert 0.05 < model_len < 0.95, (name, model_len)
    names, pairs = _step0_lengths(_small_deep(capsule_init="fan_in"), x)
    for name, (model_len, numpy_len) in zip(names, pairs):
        assert model_len == pytest.approx(numpy_len, rel=1e-3, abs=1e-9), name
    assert pairs[-1][0] < 1e-3  # the old default: the deep layers start dead


def test_bias_routing_keeps_lengths_at_the_bias_and_matches_numpy():
    x = np.random.default_rng(1).uniform(size=(8, 20, 20, 1)).astype(np.float32)
    model = _small_deep(capsule_init="fan_in", bias_routing=True)
    layer = model.get_layer("capsules_5")
    assert layer.use_bias and np.allclose(layer.bias.numpy(), 0.1)
    names, pairs = _step0_lengths(model, x)
    for name, (model_len, numpy_len) in zip(names, pairs):
        assert model_len == pytest.approx(numpy_len, rel=1e-3), name
    # deep layers carry ~only the bias: |s| ~ 0.1 sqrt(8), |v| = |s|^2 / (1 + |s|^2)
    b2 = 0.01 * 8
    assert pairs[-2][0] == pytest.approx(b2 / (1 + b2), rel=0.1)


def test_initializer_and_bias_initializer_configs_round_trip():
    init = CapsuleLengthPreserving(target_norm=0.7, input_length=0.4, seed=5)
    again = tf.keras.initializers.deserialize(tf.keras.initializers.serialize(init))
    assert isinstance(again, CapsuleLengthPreserving) and again.get_config() == init.get_config()
    layer = kcaps.layers.CapsuleDense(4, 8, use_bias=True, kernel_initializer=init,
                                      bias_initializer=tf.keras.initializers.Constant(0.1))
    clone = kcaps.layers.CapsuleDense.from_config(layer.get_config())
    clone.build((None, 6, 8))
    assert np.allclose(clone.bias.numpy(), 0.1)
    assert clone.get_config()["kernel_initializer"]["config"] == init.get_config()


def test_saved_deep_capsnet_with_the_options_reloads(tmp_path):
    model = _small_deep(depth=3, capsule_init="length_preserving", bias_routing=True)
    x = np.random.default_rng(2).uniform(size=(4, 20, 20, 1)).astype(np.float32)
    path = str(tmp_path / "deep.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init", ["length_preserving", "fan_in"])
def test_a_few_steps_reduce_the_loss_of_a_depth_3_net_only_with_the_new_init(init, real_digits):
    x, y = real_digits.x_train[:64, 4:24, 4:24], real_digits.y_train[:64]
    model = _small_deep(depth=3, capsule_init=init)
    model.compile(tf.keras.optimizers.Adam(3e-3))
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    if init == "length_preserving":
        assert after < 0.8 * before, (before, after)
    else:  # dead from step 0: the loss does not move
        assert after == pytest.approx(before, rel=0.02), (before, after)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="target_norm must be > 0, got 0"):
        CapsuleLengthPreserving(target_norm=0)
    with pytest.raises(ValueError, match="rank-4 capsule kernel shape"):
        CapsuleLengthPreserving()((8, 8))
    with pytest.raises(ValueError, match="unknown capsule initializer 'nope'"):
        _small_deep(capsule_init="nope")
