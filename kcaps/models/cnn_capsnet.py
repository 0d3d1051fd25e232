"""A CNN backbone with a capsule head whose primary-capsule count follows the channel count.

Renzulli and Grangetto ("Towards Efficient Capsule Networks", ICIP 2022) put a capsule head on
channel-pruned backbones (ResNet-50, MobileNetV1): the primary-capsule layer is a convolution
whose kernel covers the whole final feature map, with `floor(C / 8)` capsule types of 8-D, so
one position and `floor(C / 8)` primary capsules; class capsules are one 16x8 matrix per
(primary capsule, class) pair with 3 iterations of dynamic routing and the margin loss, no
decoder. Fewer backbone channels therefore mean fewer capsules, a smaller primary convolution
and less routing. `cnn_capsnet` is that head on a small conv-BN-ReLU backbone sized for 28x28
digits (the paper's backbones are ImageNet-sized; see the authors' code,
EIDOSLAB/towards-efficient-capsule-networks).
"""
import tensorflow as tf

from kcaps import _checks
from kcaps.layers import PrimaryCapsules, conv_output_length
from kcaps.models.capsnet import capsule_head, image_input


def cnn_capsnet(input_shape=(28, 28, 1), num_classes=10, conv_filters=(32, 64, 128, 256),
                kernel_sizes=(5, 3, 3, 3), strides=(1, 2, 2, 1), primary_dim=8, capsule_dim=16,
                routing_iterations=3, decoder=False, bn_momentum=0.9, **capsule_kwargs):
    """Conv-BN-ReLU blocks -> primary capsules covering the whole map -> class capsules.

    Each block is `Conv2D` (no bias, "valid") -> `BatchNormalization` -> ReLU, named
    `conv{k}`, `bn{k}`, `relu{k}`. With C channels in the last block, the primary layer has
    `C // primary_dim` capsule types of `primary_dim`-D and a kernel as large as the final map,
    so the model has `C // primary_dim` primary capsules. Defaults for 28x28x1: maps 24, 11, 5,
    3; 256 channels -> 32 primary capsules of 8-D -> 10 class capsules of 16-D.

    `bn_momentum=0.9` is PyTorch's default (its `momentum=0.1`), which the authors' backbones
    were trained with; Keras's 0.99 lets the moving statistics lag so far behind the quickly
    changing early weights that inference accuracy swung between 33% and 59% for the first
    epochs on the real-digits split while training accuracy was 97%.

    Extra keyword arguments go to the class-capsule `CapsuleDense`.

    >>> import kcaps
    >>> model = kcaps.models.cnn_capsnet()
    >>> model.get_layer("primary_capsules").output_shape, model.count_params()
    ((None, 32, 8), 1020832)
    """
    owner = "cnn_capsnet"
    if not len(conv_filters) == len(kernel_sizes) == len(strides) >= 1:
        raise ValueError(
            f"{owner}: conv_filters, kernel_sizes and strides need the same length >= 1, got "
            f"{len(conv_filters)}, {len(kernel_sizes)} and {len(strides)}")
    image = image_input(owner, input_shape, min_size=1)
    size = list(input_shape[:2])
    h = image
    for k, (filters, kernel, stride) in enumerate(zip(conv_filters, kernel_sizes, strides), 1):
        _checks.positive_int(owner, "conv_filters", filters)
        size = [conv_output_length(d, kernel, "valid", stride) for d in size]
        if min(size) < 1:
            raise ValueError(f"{owner}: block {k} ({kernel}x{kernel}, stride {stride}) leaves no "
                             f"positions on a {input_shape[0]}x{input_shape[1]} input")
        h = tf.keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=False,
                                   name=f"conv{k}")(h)
        h = tf.keras.layers.BatchNormalization(momentum=bn_momentum, name=f"bn{k}")(h)
        h = tf.keras.layers.ReLU(name=f"relu{k}")(h)
    _checks.positive_int(owner, "primary_dim", primary_dim)
    types = conv_filters[-1] // primary_dim
    if types < 1:
        raise ValueError(f"{owner}: the last block's {conv_filters[-1]} channels make no "
                         f"{primary_dim}-D capsule type")
    primary = PrimaryCapsules(types, primary_dim, tuple(size), name="primary_capsules")(h)
    return capsule_head(primary, num_classes, capsule_dim, routing_iterations, decoder, image,
                        owner, **capsule_kwargs)
