"""Datasets for training and evaluation, all as float32 NHWC images in [0, 1] with int labels.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), scaled to
  20x20 and centred in 28x28 like MNIST; the offline default of the quickstart.
- `real_digits`: the MNIST test set in `../shared/data/mnist` (idx files), split as the project
  does: images 0-7,999 to train, 8,000-9,999 to evaluate.
- `idx`: any directory of MNIST-format idx files (`train-*` and `t10k-*`, gzip or not).
- `mnist`, `fashion_mnist`, `cifar10`, `smallnorb`: TensorFlow Datasets through `tfds.load`
  (needs a network or a prepared `data_dir`).
"""
import dataclasses
import os
import pathlib

import numpy as np
import tensorflow as tf

from kcaps_training import idx

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "smallnorb")
NAMES = ("digits", "real_digits", "idx", *TFDS_NAMES)
REAL_DIGITS_TRAIN = 8000
# training/kcaps_training/datasets.py -> the checkout is parents[2]; ../shared lies beside it
DEFAULT_MNIST_DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def mnist_dir():
    """The real-digits directory: `$KCAPS_MNIST_DIR`, else `../shared/data/mnist` of the checkout."""
    return pathlib.Path(os.environ.get("KCAPS_MNIST_DIR", DEFAULT_MNIST_DIR))


@dataclasses.dataclass
class Dataset:
    """Train and test arrays of one dataset."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    def describe(self):
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images of "
                f"{'x'.join(map(str, self.input_shape))}, {self.num_classes} classes")


def _images(array):
    """uint8 `(n, h, w[, c])` -> float32 `(n, h, w, c)` in [0, 1]."""
    x = np.asarray(array, np.float32)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    return x / 255.0 if array.dtype == np.uint8 else x


def load_digits(test_fraction=0.2, seed=0):
    """scikit-learn's 8x8 digits, bilinearly scaled to 20x20 and padded to 28x28 (MNIST layout)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.images.astype(np.float32)[..., np.newaxis] / 16.0
    x = tf.image.resize(x, (20, 20), method="bilinear").numpy().clip(0.0, 1.0)
    x = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(round(len(x) * (1 - test_fraction)))
    train, test = order[:split], order[split:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10)


def load_real_digits(directory=None):
    """The MNIST test set split 8,000 / 2,000 (first images train, last images evaluate)."""
    images, labels = idx.load_idx_split(directory or mnist_dir(), "t10k")
    x, y = _images(images), labels.astype(np.int64)
    n = REAL_DIGITS_TRAIN
    return Dataset("real_digits", x[:n], y[:n], x[n:], y[n:], 10)


def load_idx(directory):
    """A directory with `train-*` and `t10k-*` idx files."""
    x_train, y_train = idx.load_idx_split(directory, "train")
    x_test, y_test = idx.load_idx_split(directory, "t10k")
    classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(f"idx:{directory}", _images(x_train), y_train.astype(np.int64),
                   _images(x_test), y_test.astype(np.int64), classes)


def load_tfds(name, data_dir=None):
    """A TensorFlow Datasets dataset by name, with the real `tfds.load` call."""
    import tensorflow_datasets as tfds

    splits, info = tfds.load(name, split=["train", "test"], as_supervised=True,
                             data_dir=data_dir, with_info=True)
    (x_train, y_train), (x_test, y_test) = (_to_numpy(tfds, split) for split in splits)
    classes = info.features[info.supervised_keys[1]].num_classes
    return Dataset(name, _images(x_train), y_train.astype(np.int64), _images(x_test),
                   y_test.astype(np.int64), classes)


def _to_numpy(tfds, split, chunk=4096):
    """A supervised tf.data split -> (images, labels) arrays, read in chunks.

    (`batch_size=-1` would batch by the split's cardinality, which mocked and generator-backed
    builders do not know.)
    """
    images, labels = [], []
    for x, y in tfds.as_numpy(split.batch(chunk)):
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def load(name, data_dir=None):
    """Load a dataset by name (see the module doc); `data_dir` is the idx or tfds directory."""
    if name == "digits":
        return load_digits()
    if name == "real_digits":
        return load_real_digits(data_dir)
    if name == "idx":
        if data_dir is None:
            raise ValueError("dataset 'idx' needs a data directory (--data-dir)")
        return load_idx(data_dir)
    if name in TFDS_NAMES:
        return load_tfds(name, data_dir)
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(NAMES)}")


# Mixed into `examples`' seed for the stream of per-example shift seeds.
_SHIFT_STREAM = 0x5EED


def shift_augment(image, max_shift, seed=None):
    """Shift one image by up to `max_shift` pixels each way, zero-filled (Sabour et al. use 2).

    `seed`: None draws the shift from TensorFlow's global random state; a shape-[2] integer
    tensor draws it statelessly (`tf.image.stateless_random_crop`): the same seed, the same shift.
    """
    if max_shift <= 0:
        return image
    padded = tf.pad(image, [[max_shift, max_shift], [max_shift, max_shift], [0, 0]])
    if seed is None:
        return tf.image.random_crop(padded, tf.shape(image))
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)


def examples(x, y, shuffle=False, max_shift=0, seed=0):
    """An unbatched `tf.data.Dataset` of `(image, label)`, optionally shuffled and shifted.

    Reproducible for a given `seed` (and TensorFlow's global seed): the shuffle is seeded, and
    each example's shift is drawn statelessly from a seed of its own, taken from a seeded stream
    that is new every epoch. (A stateful random op inside the parallel map would be drawn in the
    order the threads happen to run, so two runs with the same seed would see other shifts.)
    """
    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if max_shift:
        # Its own seed: with the shuffle's, the two streams would draw the same numbers.
        stream_seed = None if seed is None else seed ^ _SHIFT_STREAM
        seeds = tf.data.Dataset.random(seed=stream_seed, rerandomize_each_iteration=True).batch(
            2, drop_remainder=True)
        data = tf.data.Dataset.zip(data, seeds).map(
            lambda example, pair: (shift_augment(example[0], max_shift, pair), example[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return data


def pipeline(x, y, batch_size, shuffle=False, max_shift=0, seed=0):
    """A batched `tf.data.Dataset` of `(images, labels)`, optionally shuffled and shifted."""
    data = examples(x, y, shuffle=shuffle, max_shift=max_shift, seed=seed)
    return shard_by_element(data.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def shard_by_element(data):
    """`data` with multi-worker auto-sharding by element (in-memory data has no files to shard)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)
