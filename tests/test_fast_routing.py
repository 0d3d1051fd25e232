"""Issue 19: routing under XLA, with the stopped routing gradient and with the hand-written
routing gradient, against NumPy references; XLA's fallback in `CapsuleModel.compile`."""
import warnings

import numpy as np
import pytest
import tensorflow as tf

import kcaps
from conftest import numpy_routing, numpy_squash

NUM_IN, DIM_IN, NUM_OUT, DIM_OUT, BATCH = 6, 3, 4, 5, 2


def _setup(**kwargs):
    rng = np.random.default_rng(7)
    u = kcaps.ops.squash(rng.normal(size=(BATCH, NUM_IN, DIM_IN))).numpy().astype(np.float64)
    w = rng.normal(scale=0.7, size=(NUM_IN, DIM_IN, NUM_OUT, DIM_OUT))
    layer = kcaps.layers.CapsuleDense(NUM_OUT, DIM_OUT, routing_iterations=3, **kwargs)
    layer.build((None, NUM_IN, DIM_IN))
    layer.kernel.assign(w.astype(np.float32))
    return layer, u, w


def _numpy_loss(u, w, frozen=None):
    """Sum of the output lengths; with `frozen` (a u_hat), c comes from routing `frozen`."""
    u_hat = np.einsum("bid,idjk->bijk", u, w)
    if frozen is None:
        v = numpy_routing(u_hat, 3)
    else:  # c of the last iteration from the frozen prediction vectors, then one weighted sum
        b = np.zeros(frozen.shape[:3])
        for _ in range(2):
            c = np.exp(b) / np.exp(b).sum(axis=2, keepdims=True)
            v = numpy_squash(np.einsum("bij,bijk->bjk", c, frozen))
            b += np.einsum("bijk,bjk->bij", frozen, v)
        c = np.exp(b) / np.exp(b).sum(axis=2, keepdims=True)
        v = numpy_squash(np.einsum("bij,bijk->bjk", c, u_hat))
    return np.sqrt((v ** 2).sum(-1) + 1e-7).sum(), v


def _numpy_gradients(u, w, frozen=False, eps=1e-6):
    """Central finite differences in float64 of `_numpy_loss` w.r.t. u and W."""
    held = np.einsum("bid,idjk->bijk", u, w) if frozen else None

    def loss(u_, w_):
        return _numpy_loss(u_, w_, frozen=held)[0]

    grads = []
    for which, x in (("u", u), ("w", w)):
        g = np.zeros_like(x)
        for index in np.ndindex(*x.shape):
            plus, minus = x.copy(), x.copy()
            plus[index] += eps
            minus[index] -= eps
            args_p = (plus, w) if which == "u" else (u, plus)
            args_m = (minus, w) if which == "u" else (u, minus)
            g[index] = (loss(*args_p) - loss(*args_m)) / (2 * eps)
        grads.append(g)
    return grads


def _tf_step(layer, u, jit):
    u = tf.constant(u, tf.float32)

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(u)
            v = layer(u)
            loss = tf.reduce_sum(kcaps.ops.safe_norm(v))
        grad_u, grad_w = tape.gradient(loss, [u, layer.kernel])
        return v, grad_u, grad_w

    return [t.numpy() for t in step()]


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_routing_outputs_and_gradients_match_numpy(jit):
    layer, u, w = _setup()
    v, grad_u, grad_w = _tf_step(layer, u, jit)
    _, v_ref = _numpy_loss(u, w)
    ref_u, ref_w = _numpy_gradients(u, w)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_u, ref_u, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grad_w, ref_w, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_stopped_routing_gradient_keeps_outputs_and_follows_frozen_coupling(jit):
    layer, u, w = _setup(stop_routing_gradient=True)
    v, grad_u, grad_w = _tf_step(layer, u, jit)
    _, v_ref = _numpy_loss(u, w)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-6)  # forward unchanged
    ref_u, ref_w = _numpy_gradients(u, w, frozen=True)
    np.testing.assert_allclose(grad_u, ref_u, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grad_w, ref_w, rtol=1e-3, atol=1e-5)
    exact_u, _ = _numpy_gradients(u, w)
    assert np.abs(exact_u - ref_u).max() > 1e-3  # the option really changes the gradient


def test_stop_routing_gradient_round_trips_in_config():
    layer = kcaps.layers.CapsuleDense(4, 5, stop_routing_gradient=True)
    assert kcaps.layers.CapsuleDense.from_config(layer.get_config()).stop_routing_gradient


# --- the hand-written routing gradient (`dynamic_routing(gradient="fused")`, the default) ---

# (batch, num_out, num_in, dim) of u_hat in kcaps' layout; batch 1 included.
FUSED_SHAPES = [(1, 3, 5, 4), (2, 4, 6, 3), (3, 2, 7, 5)]


def _fused_case(shape, bias):
    rng = np.random.default_rng(sum(shape))
    u_hat = rng.normal(scale=0.6, size=shape)
    weights = rng.normal(size=(shape[0], shape[1], shape[3]))  # loss = sum(v * weights)
    b = rng.normal(scale=0.4, size=(shape[1], shape[3])) if bias else None
    return u_hat, weights, b


def _numpy_routed_loss(u_hat, iterations, bias, weights):
    """`sum(v * weights)` in float64 by conftest's NumPy routing (layout (batch, in, out, dim))."""
    return float(np.sum(numpy_routing(np.transpose(u_hat, (0, 2, 1, 3)), iterations,
                                      bias=bias) * weights))


def _central_differences(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        g[index] = (f(plus) - f(minus)) / (2 * eps)
    return g


def _tf_routed_gradients(u_hat, weights, bias, iterations, gradient, dtype, function=False):
    u_hat = tf.constant(u_hat, dtype)
    bias = None if bias is None else tf.constant(bias, dtype)

    def step():
        with tf.GradientTape() as tape:
            tape.watch(u_hat)
            if bias is not None:
                tape.watch(bias)
            v = kcaps.routing.dynamic_routing(u_hat, iterations, bias=bias, gradient=gradient)
            loss = tf.reduce_sum(v * tf.constant(weights, dtype))
        return [v] + tape.gradient(loss, [u_hat] + ([] if bias is None else [bias]))

    return [t.numpy() for t in (tf.function(step) if function else step)()]


@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_routing_gradient_matches_finite_differences(shape, iterations, bias):
    u_hat, weights, b = _fused_case(shape, bias)
    v, grad_u_hat, *grad_bias = _tf_routed_gradients(u_hat, weights, b, iterations, "fused",
                                                     tf.float64)
    np.testing.assert_allclose(
        v, numpy_routing(np.transpose(u_hat, (0, 2, 1, 3)), iterations, bias=b), atol=1e-12)
    ref = _central_differences(lambda x: _numpy_routed_loss(x, iterations, b, weights), u_hat)
    np.testing.assert_allclose(grad_u_hat, ref, rtol=1e-6, atol=1e-8)
    if bias:
        ref_bias = _central_differences(
            lambda x: _numpy_routed_loss(u_hat, iterations, x, weights), b)
        np.testing.assert_allclose(grad_bias[0], ref_bias, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("function", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_fused_routing_gradient_equals_autodiff_in_float32(iterations, function):
    u_hat, weights, b = _fused_case((2, 4, 6, 3), bias=True)
    fused = _tf_routed_gradients(u_hat, weights, b, iterations, "fused", tf.float32, function)
    autodiff = _tf_routed_gradients(u_hat, weights, b, iterations, "autodiff", tf.float32,
                                    function)
    for a, f in zip(autodiff, fused):
        np.testing.assert_allclose(f, a, rtol=1e-5, atol=1e-6)


def test_fused_gradient_falls_back_to_autodiff_where_it_does_not_apply():
    u_hat, weights, _ = _fused_case((2, 4, 6, 3), bias=False)
    for kwargs in ({"agreement": "xnor"}, {"stop_gradient": True}):
        grads = []
        for gradient in ("fused", "autodiff"):
            u = tf.constant(u_hat, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(u)
                v = kcaps.routing.dynamic_routing(u, 3, gradient=gradient, **kwargs)
            grads.append(tape.gradient(v, u, output_gradients=tf.constant(weights, tf.float32)))
        np.testing.assert_array_equal(grads[0], grads[1])
    u = tf.constant(u_hat, tf.float16)  # mixed precision: autodiff, finite
    with tf.GradientTape() as tape:
        tape.watch(u)
        v = kcaps.routing.dynamic_routing(u, 3)
    assert v.dtype == tf.float16
    assert np.isfinite(tape.gradient(v, u, output_gradients=tf.ones_like(v)).numpy()).all()


@pytest.mark.parametrize("sharing", [None, 4], ids=["per_capsule", "shared_gather"])
def test_hand_written_projection_gradient_matches_finite_differences(sharing):
    """The projection's hand-written gradient, also through the gather of shared matrices."""
    kwargs = {} if sharing is None else dict(weight_sharing=sharing, capsule_types=2,
                                             sharing_order="type_major")
    layer = kcaps.layers.CapsuleDense(NUM_OUT, DIM_OUT, routing_iterations=2, **kwargs)
    layer.build((None, NUM_IN, DIM_IN))
    rng = np.random.default_rng(3)
    w = rng.normal(scale=0.7, size=tuple(layer.kernel.shape))
    layer.kernel.assign(w.astype(np.float32))
    if sharing is not None:
        assert layer.projection.layout is None  # 3 positions x 2 types, K = 4: the gather path
        p, t = np.divmod(np.arange(NUM_IN), 2)  # kcaps' capsule i = p * 2 + t
        index = (t * (NUM_IN // 2) + p) % sharing  # FasTrCaps' type-major count, tiled mod K
    else:
        index = np.arange(NUM_IN)
    u = rng.normal(scale=0.5, size=(BATCH, NUM_IN, DIM_IN))
    weights = rng.normal(size=(BATCH, NUM_OUT, DIM_OUT))

    def loss(u_, w_):
        u_hat = np.einsum("bid,idjk->bijk", u_, w_[index])
        return float(np.sum(numpy_routing(u_hat, 2) * weights))

    ut = tf.constant(u, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(ut)
        out = tf.reduce_sum(layer(ut) * weights)
    grad_u, grad_w = tape.gradient(out, [ut, layer.kernel])
    np.testing.assert_allclose(grad_u, _central_differences(lambda x: loss(x, w), u),
                               rtol=1e-3, atol=1e-5)
    grad_w = tf.convert_to_tensor(grad_w)  # IndexedSlices through the gather
    np.testing.assert_allclose(grad_w, _central_differences(lambda x: loss(u, x), w),
                               rtol=1e-3, atol=1e-5)


def test_unknown_routing_gradient_is_named():
    with pytest.raises(ValueError, match="'numeric'"):
        kcaps.routing.dynamic_routing(tf.zeros([1, 2, 3, 4]), gradient="numeric")
    projection = kcaps.projections.DenseProjection(2, 4)
    projection.build((None, 3, 5))
    with pytest.raises(ValueError, match="DenseProjection.project.*'numeric'"):
        projection.project(tf.zeros([1, 3, 5]), projection.kernel, gradient="numeric")


def test_fused_gradient_leaves_the_converted_graph_unchanged():
    from kcaps_tflite import graph

    ops = {}
    for gradient in ("fused", "autodiff"):
        bias = tf.constant(np.full((3, 4), 0.1, np.float32))
        fn = tf.function(lambda u, g=gradient: kcaps.routing.dynamic_routing(
            u, 3, bias=bias, gradient=g), input_signature=[tf.TensorSpec([1, 3, 5, 4])])
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [fn.get_concrete_function()], fn)
        ops[gradient] = [op.name for op in graph.read(converter.convert()).operators]
    assert ops["fused"] == ops["autodiff"]
    assert "SOFTMAX" in ops["fused"] and not any("IDENTITY" in name for name in ops["fused"])


def test_saved_model_keeps_the_fused_gradient(tmp_path):
    layer, u, _ = _setup(use_bias=True)
    model = tf.keras.Sequential([tf.keras.Input((NUM_IN, DIM_IN)), layer])
    tf.saved_model.save(model, str(tmp_path / "saved"))
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    u = tf.constant(u, tf.float32)
    grads = []
    for fn, weights in ((model, layer.trainable_weights), (restored, restored.trainable_variables)):
        with tf.GradientTape() as tape:
            tape.watch(u)
            loss = tf.reduce_sum(kcaps.ops.safe_norm(fn(u, training=True)))
        grads.append(tape.gradient(loss, [u] + sorted(weights, key=lambda w: w.name)))
    assert len(grads[1]) == 3  # u, kernel and bias
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


class _HostScale(tf.keras.layers.Layer):
    """Multiplies by a scale computed in Python: `tf.numpy_function` has no XLA kernel."""

    def call(self, x):
        scale = tf.numpy_function(lambda: np.float32(1.0), [], tf.float32)
        scale.set_shape([])
        return x * scale


def _model_with_host_op():
    image = tf.keras.Input((12, 12, 1))
    h = kcaps.layers.PrimaryCapsules(4, 4, 5, strides=3)(image)
    h = _HostScale()(kcaps.layers.CapsuleDense(3, 4)(h))
    return kcaps.models.CapsuleModel(image, kcaps.layers.CapsuleLength(name="lengths")(h))


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(8, 12, 12, 1)).astype(np.float32), np.arange(8) % 3


def test_jit_compile_falls_back_with_the_reason_when_xla_cannot_compile():
    model = _model_with_host_op()
    with pytest.warns(UserWarning, match=r"XLA cannot compile this model .*PyFunc"):
        model.compile("adam", jit_compile=True)
    assert model.jit_compile is False
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    # without the fallback the same model fails in its first step
    plain = _model_with_host_op()
    tf.keras.Model.compile(plain, "adam", loss=kcaps.losses.MarginLoss(), jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="PyFunc"):
        plain.fit(x, y, batch_size=4, epochs=1, verbose=0)


def test_jit_compile_stays_on_for_a_compilable_model():
    model = kcaps.models.small_capsnet((20, 20, 1), 3, conv_filters=(4, 4), capsule_types=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.compile("adam", jit_compile=True)
    assert model.jit_compile is True
    x, y = _data()
    x = np.resize(x, (8, 20, 20, 1))
    assert np.isfinite(model.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"][0])


def test_jit_compile_is_off_by_default():
    model = kcaps.models.small_capsnet((20, 20, 1), 3, conv_filters=(4, 4), capsule_types=2)
    model.compile()
    assert not model.jit_compile


def test_kcaps_train_jit_compile_flag_reaches_the_config():
    import argparse

    from kcaps_training import cli

    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    assert cli.config_from_args(parser.parse_args([]), "out").jit_compile is False
    assert cli.config_from_args(parser.parse_args(["--jit-compile"]), "out").jit_compile is True
