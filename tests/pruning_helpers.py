"""Small pruning test models and images shared by test_surgery and test_criteria."""
import numpy as np
import tensorflow as tf

import kcaps

RNG = np.random.default_rng(0)


def _images(n=6):
    return RNG.uniform(size=(n, 28, 28, 1)).astype(np.float32)


def _randomize_batch_norm(model):
    """Non-trivial moving statistics, so that slicing them wrongly would show."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.set_weights([RNG.uniform(0.5, 1.5, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    return model


def _cnn_capsnet(**kwargs):
    kwargs.setdefault("kernel_initializer", kcaps.initializers.CapsuleFanIn(scale=100.0))
    return _randomize_batch_norm(kcaps.models.cnn_capsnet(
        conv_filters=(8, 16), kernel_sizes=(5, 3), strides=(2, 2), **kwargs))


def _deep_capsnet(**kwargs):
    # Larger capsule matrices than the default, so that routed capsules do not vanish at
    # initialization and the comparisons below compare non-trivial outputs.
    kwargs.setdefault("kernel_initializer", kcaps.initializers.CapsuleFanIn(scale=100.0))
    # With these matrices, he_normal convolutions make the routing logits so large that float32
    # summation order (masked zero channels vs removed ones) shows at 1e-4 after three routed
    # layers; glorot keeps the "same function" comparisons at float32 rounding.
    kwargs.setdefault("conv_initializer", "glorot_uniform")
    return kcaps.models.deep_capsnet(num_intermediate=2, intermediate_capsules=6,
                                     intermediate_dims=4, conv_filters=16, conv_kernel=5,
                                     primary_types=4, primary_kernel=5, primary_strides=3, **kwargs)
