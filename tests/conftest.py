import pathlib

import pytest

import kcaps  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from kcaps_training import datasets as _datasets

ROOT = pathlib.Path(__file__).resolve().parents[1]
MNIST_DIR = _datasets.mnist_dir()  # $KCAPS_MNIST_DIR, else ../shared/data/mnist beside the checkout


@pytest.fixture(autouse=True)
def _seed():
    tf.keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def mnist_dir():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real digits not found in {MNIST_DIR}: set KCAPS_MNIST_DIR")
    return MNIST_DIR


@pytest.fixture(scope="session")
def real_digits(mnist_dir):
    from kcaps_training import datasets

    return datasets.load_real_digits(mnist_dir)


def numpy_squash(s, axis=-1, eps=1e-7):
    sq = np.sum(s ** 2, axis=axis, keepdims=True)
    return s * sq / (1 + sq) / np.sqrt(sq + eps)


def numpy_sign(x):
    """The XnODR/XnIDR authors' binarizer: +1 where x > 0, -1 where x <= 0."""
    return np.where(x > 0, 1.0, -1.0)


def numpy_routing(u_hat, iterations, agreement="dot", bias=None):
    """Dynamic routing of Sabour et al., written from the paper with explicit loops over j.

    u_hat: (batch, num_in, num_out, dim). Returns v: (batch, num_out, dim).
    """
    batch, num_in, num_out, dim = u_hat.shape
    b = np.zeros((batch, num_in, num_out))
    for r in range(iterations):
        c = np.exp(b - b.max(axis=2, keepdims=True))
        c /= c.sum(axis=2, keepdims=True)
        v = np.zeros((batch, num_out, dim))
        for j in range(num_out):
            s_j = np.sum(c[:, :, j, None] * u_hat[:, :, j, :], axis=1)
            if bias is not None:
                s_j = s_j + bias[j]
            v[:, j] = numpy_squash(s_j)
        if r < iterations - 1:
            for j in range(num_out):
                if agreement == "dot":
                    b[:, :, j] += np.sum(u_hat[:, :, j, :] * v[:, None, j, :], axis=-1)
                else:  # XnIDR: K_ij * beta_j * <sign(u_hat), sign(v)>
                    k = np.mean(np.abs(u_hat[:, :, j, :]), axis=-1)
                    beta = np.mean(np.abs(v[:, j, :]), axis=-1)[:, None]
                    dot = np.sum(numpy_sign(u_hat[:, :, j, :]) * numpy_sign(v[:, None, j, :]), axis=-1)
                    b[:, :, j] += k * beta * dot
    return v


def _examples(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y))
