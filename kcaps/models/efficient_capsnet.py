"""Efficient-CapsNet (Mazzia, Salvetti, Chiaberge, Scientific Reports 2021), MNIST graph.

Four convolutions, each followed by batch norm (the authors put it after the ReLU), depthwise
primary capsules whose kernel covers the whole final map (128 channels -> 16 capsules of 8-D),
and class capsules with self-attention routing (`CapsuleDense(routing="self_attention")`),
Efficient-CapsNet's squash everywhere. kcaps builds it from its own layers, so the model
converts to TFLite with builtin ops only (the authors' `einsum` becomes a `tf.Einsum` that TFLite
rejects), prunes, and trains with `kcaps train --model efficient_capsnet`. Choices where the
authors' code and paper differ: docs/notes/issue18.md.
"""
import tensorflow as tf

from kcaps import _checks
from kcaps.layers import PrimaryCapsules
from kcaps.models.capsnet import capsule_head, image_input

# (filters, kernel, stride) of the authors' four convolutions ("valid" padding, ReLU, then BN)
CONVOLUTIONS = ((32, 5, 1), (64, 3, 1), (64, 3, 1), (128, 3, 2))
# The authors' generator: He-normal ReLU layers, a Glorot-normal sigmoid layer, zero biases.
GENERATOR_INITIALIZERS = dict(kernel_initializer="he_normal", pixels_initializer="glorot_normal")


def efficient_capsnet(input_shape=(28, 28, 1), num_classes=10, decoder=False,
                      routing_iterations=3, squash="efficient", primary_dim=8, capsule_dim=16,
                      bn_momentum=0.99, **capsule_kwargs):
    """The authors' MNIST graph as a `CapsuleModel`.

    Conv 5x5x32 -> Conv 3x3x64 -> Conv 3x3x64 -> Conv 3x3x128 stride 2 (each ReLU then batch
    norm; He-normal kernels) -> `PrimaryCapsules(16, 8, kernel = the whole map, depthwise=True)`
    -> `CapsuleDense(num_classes, 16, routing="self_attention")` (He-normal W, as the authors
    initialize theirs) -> lengths. 161,824 trainable parameters for 28x28x1 and 10 classes,
    as in the paper (plus 576 batch-norm moving statistics).

    Args:
      input_shape: `(height, width, channels)`, at least 11x11.
      num_classes: number of class capsules.
      decoder: False (default), True (the authors' generator: `kcaps.layers.CapsuleDecoder`,
        512-1024-pixels, with their initializers `GENERATOR_INITIALIZERS`, fed the class
        capsules masked by the label while training) or `"small"`. Trained by
        `CapsuleModel.compile`'s default losses, this is the authors' training graph: margin
        loss + 0.392 x the mean squared error (= 0.0005 x the sum).
      routing_iterations: accepted for a uniform builder signature; self-attention routing has
        no iterations, so any value but 3 is refused.
      squash: the squash of the primary and class capsules (the authors': `"efficient"`).
      primary_dim: dimension of the primary capsules (128 channels / primary_dim capsules).
      capsule_dim: dimension of the class capsules.
      bn_momentum: momentum of the batch norms (Keras' 0.99, the authors' default).
      **capsule_kwargs: more `CapsuleDense` arguments (e.g. `projection="xnor"`).

    >>> import kcaps
    >>> model = kcaps.models.efficient_capsnet()
    >>> model.get_layer("primary_capsules").output_shape
    (None, 16, 8)
    >>> sum(int(tf.size(w)) for w in model.trainable_weights)
    161824
    """
    owner = "efficient_capsnet"
    image = image_input(owner, input_shape, min_size=11)
    _checks.positive_int(owner, "primary_dim", primary_dim)
    h = image
    for k, (filters, kernel, stride) in enumerate(CONVOLUTIONS, 1):
        h = tf.keras.layers.Conv2D(filters, kernel, strides=stride, activation="relu",
                                   kernel_initializer="he_normal", name=f"conv{k}")(h)
        h = tf.keras.layers.BatchNormalization(momentum=bn_momentum, name=f"bn{k}")(h)
    channels = CONVOLUTIONS[-1][0]
    if channels % primary_dim:
        raise ValueError(f"{owner}: `primary_dim` must divide the {channels} channels of the last "
                         f"convolution, got primary_dim={primary_dim!r}")
    primary = PrimaryCapsules(channels // primary_dim, primary_dim,
                              tuple(h.shape.as_list()[1:3]), depthwise=True,
                              squash=squash, name="primary_capsules")(h)
    capsule_kwargs.setdefault("routing", "self_attention")
    capsule_kwargs.setdefault("kernel_initializer", "he_normal")
    capsule_kwargs["squash"] = squash
    return capsule_head(primary, num_classes, capsule_dim, routing_iterations, decoder, image,
                        owner, decoder_options=GENERATOR_INITIALIZERS, **capsule_kwargs)
