"""Shared, cached models for the deployment tests: one small trained capsule network, converted.

Cached per test session (functools), so the tests of every deployment module share one training
run (a few seconds) and one conversion per precision.
"""
import functools

import numpy as np
import tensorflow as tf

import kcaps
from kcaps_tflite import convert


@functools.lru_cache(maxsize=None)
def digits():
    from kcaps_training import datasets

    return datasets.load("digits")


@functools.lru_cache(maxsize=None)
def trained_model():
    """A small capsule network (decoder included) trained briefly on the embedded digits."""
    tf.keras.utils.set_random_seed(0)
    data = digits()
    model = kcaps.models.small_capsnet(conv_filters=(8, 16), capsule_types=4, decoder=True)
    model.compile(tf.keras.optimizers.Adam(3e-3))
    model.fit(data.x_train, data.y_train, batch_size=64, epochs=4, verbose=0)
    return model


def representative():
    return digits().x_train[:100]


@functools.lru_cache(maxsize=None)
def flatbuffer(precision, micro_compatible=True, xnnpack_forms=True):
    return convert.convert(trained_model(), precision, representative_data=representative(),
                           micro_compatible=micro_compatible, xnnpack_forms=xnnpack_forms)


def write(tmp_path, precision, name=None):
    path = tmp_path / (name or f"tiny_{precision}.tflite")
    path.write_bytes(flatbuffer(precision))
    return path


def eval_images(count=120):
    data = digits()
    return data.x_test[:count], data.y_test[:count]

