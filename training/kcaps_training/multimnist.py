"""MultiMNIST as in Sabour et al. (2017): two overlapping digits of different classes.

Each example takes a base digit and a top digit of another class from the same source split,
pads both from 28x28 to 36x36 and shifts each by up to 4 pixels in each direction (independent
uniform integer shifts), then overlays them as a clipped sum, `min(base + top, 1)` - the
"maximum pixel value of 255" of Sabour et al.'s reference code. The label is two-hot. Every base
image is paired with `pairs_per_image` top images (1,000 in the paper); which ones, and all
shifts, are drawn from a seeded NumPy generator, so a seed gives the same dataset every time.

Any MNIST-format source works: pass images and labels, or a `kcaps_training.datasets.Dataset` from
`datasets.load` (`idx`, `real_digits`, or tfds `mnist`). `from_dataset(data)` builds the train
split from the source's training images and the test split from its test images, as Sabour et
al. do; on the real-digits split that is images 0-7,999 and 8,000-9,999.

>>> import numpy as np
>>> from kcaps_training import multimnist
>>> images = np.zeros((4, 28, 28), np.uint8); images[:, 10:18, 10:18] = 255
>>> data = multimnist.multimnist(images, np.array([0, 1, 2, 3]), pairs_per_image=2, seed=0)
>>> image, label = next(iter(data))
>>> image.shape, label.numpy().sum()
(TensorShape([36, 36, 1]), 2.0)

Both-digits-correct accuracy (the two longest capsules are the two labelled classes) is
`kcaps.metrics.MultiDigitAccuracy`.
"""
import dataclasses

import numpy as np
import tensorflow as tf

MAX_SHIFT = 4  # pixels in each direction (Sabour et al.)


@dataclasses.dataclass
class PairPlan:
    """Which digits are overlaid and how far each is shifted: `(n,)` indices, `(n, 2)` shifts."""

    base: np.ndarray
    top: np.ndarray
    base_shift: np.ndarray  # (dy, dx) in [-max_shift, max_shift]
    top_shift: np.ndarray


def plan_pairs(labels, pairs_per_image=1, max_shift=MAX_SHIFT, seed=0):
    """Pair every image with `pairs_per_image` images of other classes; draw all shifts.

    Top images are drawn uniformly among the images of a different class (redrawn until the
    classes differ). Raises ValueError if fewer than two classes are present.
    """
    labels = np.asarray(labels).reshape(-1)
    if pairs_per_image < 1:
        raise ValueError(f"multimnist: pairs_per_image must be >= 1, got {pairs_per_image}")
    if max_shift < 0:
        raise ValueError(f"multimnist: max_shift must be >= 0, got {max_shift}")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"multimnist: need digits of at least two classes, got {np.unique(labels)}")
    rng = np.random.default_rng(seed)
    base = np.repeat(np.arange(len(labels)), pairs_per_image)
    top = rng.integers(0, len(labels), size=len(base))
    same = labels[top] == labels[base]
    while same.any():
        top[same] = rng.integers(0, len(labels), size=int(same.sum()))
        same = labels[top] == labels[base]
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(base), 2, 2))
    return PairPlan(base, top, shifts[:, 0], shifts[:, 1])


def _as_float_images(images):
    x = np.asarray(images)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"multimnist: expected grey images (n, h, w) or (n, h, w, 1), got {x.shape}")
    return x


def multimnist(images, labels, pairs_per_image=1, max_shift=MAX_SHIFT, seed=0, num_classes=10):
    """A `tf.data.Dataset` of `(image, two_hot)`: images `(h + 2 max_shift, w + 2 max_shift, 1)`
    float32 in [0, 1] (36x36 for MNIST), labels `(num_classes,)` float32 with two ones.

    Args:
      images: `(n, h, w)` or `(n, h, w, 1)`, uint8 (0-255) or float (0-1).
      labels: `(n,)` integer classes.
      pairs_per_image: top digits per base digit.
      max_shift: largest shift in pixels, each direction.
      seed: seed of the pairing and the shifts.
      num_classes: length of the two-hot labels.
    """
    x = _as_float_images(images)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labels) != len(x):
        raise ValueError(f"multimnist: {len(x)} images but {len(labels)} labels")
    plan = plan_pairs(labels, pairs_per_image, max_shift, seed)
    height, width = x.shape[1] + 2 * max_shift, x.shape[2] + 2 * max_shift
    pixels = tf.constant(x)
    classes = tf.constant(labels)

    def shifted(index, shift):
        return tf.image.pad_to_bounding_box(tf.gather(pixels, index), max_shift + shift[0],
                                            max_shift + shift[1], height, width)

    def compose(base, top, base_shift, top_shift):
        image = tf.minimum(shifted(base, base_shift) + shifted(top, top_shift), 1.0)
        two_hot = (tf.one_hot(tf.gather(classes, base), num_classes)
                   + tf.one_hot(tf.gather(classes, top), num_classes))
        return image, two_hot

    slices = tuple(tf.constant(a, tf.int32) for a in (plan.base, plan.top, plan.base_shift,
                                                      plan.top_shift))
    return tf.data.Dataset.from_tensor_slices(slices).map(compose)  # sequential: deterministic order


def from_dataset(data, train_pairs_per_image=1, test_pairs_per_image=1, seed=0):
    """Train and test MultiMNIST `tf.data.Dataset`s from a `kcaps_training.datasets.Dataset`.

    The train split overlays the source's training digits, the test split its test digits
    (seeds `seed` and `seed + 1`).
    """
    train = multimnist(data.x_train, data.y_train, train_pairs_per_image, seed=seed,
                       num_classes=data.num_classes)
    test = multimnist(data.x_test, data.y_test, test_pairs_per_image, seed=seed + 1,
                      num_classes=data.num_classes)
    return train, test


def to_numpy(dataset):
    """All `(images, labels)` of a MultiMNIST dataset as two arrays."""
    images, labels = [], []
    for x, y in dataset.batch(1024):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)
