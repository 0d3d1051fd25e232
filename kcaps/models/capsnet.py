"""Reference capsule networks: Sabour et al.'s CapsNet and a small one for phones and MCUs."""
import tensorflow as tf

from kcaps import _checks
from kcaps.layers import CapsuleDecoder, CapsuleDense, CapsuleLength, CapsuleMask, PrimaryCapsules
from kcaps.small_decoder import SelectedCapsule
from kcaps.models.capsule_model import LABEL_INPUT, LENGTHS, RECONSTRUCTION, CapsuleModel


def image_input(owner, input_shape, min_size):
    """An `Input` for `(height, width, channels)` images, checking rank and minimum size."""
    shape = tuple(input_shape)
    if len(shape) != 3 or any(d is None or int(d) < 1 for d in shape):
        raise ValueError(f"{owner}: input_shape must be (height, width, channels), got {input_shape!r}")
    if shape[0] < min_size or shape[1] < min_size:
        raise ValueError(
            f"{owner}: input of {shape[0]}x{shape[1]} is too small; the minimum is "
            f"{min_size}x{min_size}")
    return tf.keras.Input(shape, name="image")


def capsule_head(features, num_classes, capsule_dim, routing_iterations, decoder, image, name,
                 decoder_options=None, **capsule_kwargs):
    """Class capsules + lengths (+ masked decoder): the shared top of every kcaps model.

    `decoder`: falsy for none, True for Sabour et al.'s (all capsules, masked), `"small"` for
    FasTrCaps' (only the selected capsule, `kcaps.small_decoder`). `decoder_options`: more
    `CapsuleDecoder` arguments (e.g. its initializers).
    """
    _checks.positive_int(name, "num_classes", num_classes)
    if decoder not in (None, False, True, "small"):
        raise ValueError(f"{name}: `decoder` must be True, False or 'small', got {decoder!r}")
    capsules = CapsuleDense(num_classes, capsule_dim, routing_iterations=routing_iterations,
                            name="class_capsules", **capsule_kwargs)(features)
    # float32 output, as Keras advises for the last layer under mixed precision
    lengths = CapsuleLength(name=LENGTHS, dtype="float32")(capsules)
    if not decoder:
        return CapsuleModel(image, lengths, name=name)
    label = tf.keras.Input((num_classes,), name=LABEL_INPUT)
    select = SelectedCapsule if decoder == "small" else CapsuleMask
    masked = select(name="mask")([capsules, label])
    reconstruction = CapsuleDecoder(image.shape[1:], name=RECONSTRUCTION,
                                    **(decoder_options or {}))(masked)
    return CapsuleModel([image, label], [lengths, reconstruction], name=name)


def capsnet(input_shape=(28, 28, 1), num_classes=10, routing_iterations=3, decoder=True,
            squash="squash", **capsule_kwargs):
    """CapsNet of Sabour et al. (2017).

    Conv 9x9x256 (ReLU) -> PrimaryCapsules 32 types x 8-D (9x9, stride 2) -> class capsules
    `num_classes` x 16-D with dynamic routing -> lengths; with `decoder`, a 512-1024-pixels
    reconstruction decoder masked by the label while training. 8,215,568 parameters for 28x28x1
    and 10 classes (the published Keras reference). FasTrCaps' options: `decoder="small"` (the
    decoder reads the selected capsule only), `squash="approx"` (in primary and class capsules)
    and weight sharing in the class capsules; `weight_sharing=32, sharing_order="type_major",
    decoder="small"` is the paper's 6,719,920-parameter network (6,708,240 here: the paper also
    counts the 11,520 coupling coefficients and a 160-value bias).

    Extra keyword arguments go to the class-capsule `CapsuleDense` (e.g. `routing="xnodr"`,
    `weight_sharing=32`).

    >>> import kcaps
    >>> kcaps.models.capsnet().count_params()
    8215568
    """
    image = image_input("capsnet", input_shape, min_size=25)
    h = tf.keras.layers.Conv2D(256, 9, activation="relu", name="conv1")(image)
    primary = PrimaryCapsules(32, 8, 9, strides=2, squash=squash, name="primary_capsules")(h)
    capsule_kwargs.setdefault("capsule_types", 32)
    capsule_kwargs["squash"] = squash
    return capsule_head(primary, num_classes, 16, routing_iterations, decoder, image, "capsnet",
                        **capsule_kwargs)


def small_capsnet(input_shape=(28, 28, 1), num_classes=10, routing_iterations=3, decoder=False,
                  conv_filters=(32, 64), capsule_types=8, primary_dim=8, capsule_dim=8,
                  squash="squash", **capsule_kwargs):
    """A capsule network of under 200k parameters for phones and microcontrollers.

    Conv 5x5x32 (ReLU) -> Conv 5x5x64 stride 2 (ReLU) -> PrimaryCapsules 8 types x 8-D (3x3,
    stride 2; 4x4 positions = 128 capsules for 28x28 inputs) -> class capsules `num_classes` x 8-D
    with dynamic routing. 170,944 parameters for 28x28x1 and 10 classes; in int8 it fits a
    256 KB-flash microcontroller.

    >>> import kcaps
    >>> kcaps.models.small_capsnet().count_params()
    170944
    """
    image = image_input("small_capsnet", input_shape, min_size=19)
    h = image
    for k, filters in enumerate(conv_filters):
        h = tf.keras.layers.Conv2D(filters, 5, strides=1 if k == 0 else 2, activation="relu",
                                   name=f"conv{k + 1}")(h)
    primary = PrimaryCapsules(capsule_types, primary_dim, 3, strides=2, squash=squash,
                              name="primary_capsules")(h)
    capsule_kwargs.setdefault("capsule_types", capsule_types)
    capsule_kwargs["squash"] = squash
    return capsule_head(primary, num_classes, capsule_dim, routing_iterations, decoder, image,
                        "small_capsnet", **capsule_kwargs)
