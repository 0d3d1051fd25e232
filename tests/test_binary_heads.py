"""XnODR and XnIDR capsule layers against NumPy references of the authors' definitions."""
import os
import subprocess
import sys

import larq
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot

import kcaps
from conftest import numpy_routing, numpy_sign


def _relu_capsules(rng, batch, num_in, dim_in):
    """Inputs like the authors' head gives them (after a ReLU): many exact zeros."""
    return np.maximum(rng.normal(size=(batch, num_in, dim_in)), 0).astype(np.float32)


def _layer(routing, num_in=12, dim_in=8, num_out=5, dim_out=6, iterations=3, **kwargs):
    layer = kcaps.layers.CapsuleDense(num_out, dim_out, routing=routing,
                                      routing_iterations=iterations, **kwargs)
    layer.build((None, num_in, dim_in))
    w = np.random.default_rng(7).uniform(-1, 1, size=layer.kernel.shape).astype(np.float32)
    layer.kernel.assign(w)
    return layer, w


def numpy_xnodr_u_hat(u, w):
    """u_hat[b, i, j, d] = K_i alpha_ijd sum_k sign(u_ik) sign(W_ikjd), as (batch, in, out, dim)."""
    k = np.abs(u).mean(-1)  # (batch, in)
    alpha = np.abs(w).mean(1)  # (in, out, dim)
    products = np.einsum("bik,ikjd->bijd", numpy_sign(u), numpy_sign(w))
    return k[:, :, None, None] * alpha[None] * products


def test_sign_sends_zero_to_minus_one_with_a_hard_tanh_gradient():
    x = tf.constant([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kcaps.xnor.sign(x)
    np.testing.assert_array_equal(y.numpy(), [-1, -1, -1, -1, 1, 1, 1])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 1, 1, 0])


@pytest.mark.parametrize("iterations", [1, 3])
def test_xnodr_matches_numpy(iterations):
    layer, w = _layer("xnodr", iterations=iterations)
    u = _relu_capsules(np.random.default_rng(0), 4, 12, 8)
    assert (u == 0).mean() > 0.3  # zeros must binarize to -1, as in the authors' code
    expected = numpy_routing(numpy_xnodr_u_hat(u, w), iterations)
    np.testing.assert_allclose(layer(u).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("iterations", [2, 3])
def test_xnidr_matches_numpy(iterations):
    layer, w = _layer("xnidr", iterations=iterations)
    u = _relu_capsules(np.random.default_rng(1), 4, 12, 8)
    u_hat = np.einsum("bid,idjk->bijk", u, w)  # float projection
    expected = numpy_routing(u_hat, iterations, agreement="xnor")
    np.testing.assert_allclose(layer(u).numpy(), expected, rtol=1e-5, atol=1e-6)
    dynamic = numpy_routing(u_hat, iterations)
    assert np.abs(expected - dynamic).max() > 1e-4  # the binarized agreement does change routing


@pytest.mark.parametrize("dim_in,sharing", [(8, None), (5, None), (40, None), (8, 3)])
def test_binary_conv_form_is_bit_identical(dim_in, sharing):
    """The grouped-conv form that LCE binarizes gives exactly the matmul form's projection."""
    projection = kcaps.projections.XnorProjection(4, 6, weight_sharing=sharing)
    u = _relu_capsules(np.random.default_rng(2), 3, 9, dim_in)
    matmul = projection(u).numpy()
    with kcaps.projections.binary_conv_scope():
        conv = projection(u).numpy()
    np.testing.assert_array_equal(conv, matmul)
    w = projection.full_kernel(projection.kernel.latent_variable).numpy()
    expected = numpy_xnodr_u_hat(u, w).transpose(0, 2, 1, 3)  # routing layout (batch, J, N, K)
    np.testing.assert_allclose(matmul, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("routing", ["xnodr", "xnidr"])
def test_gradients_reach_the_latent_weights(routing):
    layer, _ = _layer(routing)
    u = _relu_capsules(np.random.default_rng(3), 4, 12, 8)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(kcaps.ops.safe_norm(layer(u)))
    grad = tape.gradient(loss, layer.trainable_weights)[0]
    assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).max() > 0


def test_xnodr_kernel_is_binary_and_clipped():
    layer, _ = _layer("xnodr")
    assert isinstance(layer.kernel, larq.quantized_variable.QuantizedVariable)
    assert layer.kernel.precision == 1
    assert layer.projection.kernel_constraint(tf.constant([-3.0, 0.5, 2.0])).numpy().tolist() == [
        -1.0, 0.5, 1.0]


@pytest.mark.parametrize("routing", ["xnodr", "xnidr"])
def test_config_round_trips(routing):
    layer = kcaps.layers.CapsuleDense(10, 16, routing=routing, routing_iterations=2)
    clone = kcaps.layers.CapsuleDense.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.routing, clone.projection_name) == kcaps.layers.LEGACY_ROUTINGS[routing]


@pytest.mark.parametrize("save_format", ["keras", "tf"])
def test_binarized_model_saves_and_loads(tmp_path, save_format):
    model = kcaps.models.backbone_capsnet("cnn", "xnodr", input_shape=(12, 12, 1), num_classes=4)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(size=(8, 12, 12, 1)).astype(np.float32)
    model.fit(x, np.arange(8) % 4, epochs=1, verbose=0)
    path = str(tmp_path / ("m.keras" if save_format == "keras" else "saved"))
    model.save(path, save_format=save_format)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("class_capsules").kernel.precision == 1


@pytest.mark.parametrize("routing", ["xnodr", "xnidr"])
def test_prunable_with_tfmot(routing):
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    x_in = tf.keras.Input((12, 8))
    caps = tfmot.sparsity.keras.prune_low_magnitude(
        kcaps.layers.CapsuleDense(5, 6, routing=routing, name="caps"), pruning_schedule=schedule)
    pruned = tf.keras.Model(x_in, kcaps.layers.CapsuleLength()(caps(x_in)))
    pruned.compile("adam", loss=kcaps.losses.MarginLoss())
    u = _relu_capsules(np.random.default_rng(4), 16, 12, 8)
    pruned.fit(u, np.arange(16) % 5, epochs=2, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernel = stripped.get_layer("caps").kernel
    latent = kernel.latent_variable if routing == "xnodr" else kernel
    assert abs(float(np.mean(latent.numpy() == 0)) - 0.5) < 0.01


@pytest.mark.parametrize("routing", ["xnodr", "xnidr"])
def test_binarized_layers_without_larq_say_what_to_install(monkeypatch, routing):
    monkeypatch.setitem(sys.modules, "larq", None)  # `import larq` now raises ImportError
    with pytest.raises(ImportError, match="pip install larq"):
        kcaps.layers.CapsuleDense(10, 16, routing=routing)
    with pytest.raises(ImportError, match="pip install larq"):
        kcaps.models.backbone_capsnet("cnn", routing, input_shape=(28, 28, 1))
    kcaps.layers.CapsuleDense(10, 16, routing="dynamic")  # float layers still work


def test_tensorflow_imported_first_keeps_kcaps_importable_and_binarized_heads_say_why():
    code = ("import tensorflow as tf; import kcaps; "
            "kcaps.layers.CapsuleDense(10, 16, routing='dynamic'); print('float ok'); "
            "kcaps.layers.CapsuleDense(10, 16, routing='xnodr')")
    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environment.update(TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, timeout=300)
    assert "float ok" in result.stdout, result.stderr[-2000:]
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "Import kcaps before TensorFlow" in result.stderr
