"""A backbone with a capsule head: the networks of "XnODR and XnIDR" (Sun, Fard, Mahoor).

`backbone_capsnet(backbone, head, input_shape, num_classes)` stacks a feature extractor and a
classification head. Backbones: `"mobilenetv2"` and `"resnet50"` (`tf.keras.applications`, no
top, `weights=None` unless given) and `"cnn"` (the three-convolution trunk of the authors' small
MNIST capsule network). Heads: `"dynamic"`, `"xnodr"` and `"xnidr"` (capsules with Sabour's
routing, the binarized projection outside routing, the binarized agreement inside routing) and
`"dense"` (the authors' fully connected baseline).

The capsule head follows the authors' code (not Sabour's spatial primary capsules):

    feature map -> extra conv block -> global average pooling -> reshape to 8-D capsules
    -> squash -> BatchNorm -> ReLU -> class capsules (num_classes x 16-D, 3 iterations)
    -> BatchNorm -> ReLU -> lengths

- MobileNetV2 and cnn: depthwise 3x3 + BatchNorm, then a 1x1 conv to 1024 channels: 128 capsules.
- ResNet-50: one more bottleneck block (1x1 512, 3x3 512, 1x1 2048, L2 0.001, identity skip):
  2048 channels, 256 capsules.

The dense heads are the authors' baselines: global average pooling, then for MobileNetV2 (and
cnn) Dropout 0.5 - Dense 512 - Dense 256 - Dropout 0.3 - Dense 128 - Dropout 0.2 - softmax, for
ResNet-50 Dense 1024 - Dense 512 - softmax. Every model is a `CapsuleModel` whose class scores
(capsule lengths, or the softmax for "dense") are the output named `lengths`, so all heads train
with the same recipe (kcaps' margin loss by default).

Choices, where the paper leaves room:
- Frozen layers: the authors freeze the last 5 layers of their ImageNet-pretrained MobileNetV2
  and the last 10 of ResNet-50 under the capsule heads, and nothing under the dense heads.
  `frozen_backbone_layers="paper"` (the default) does the same, so trainable parameters at
  224x224x3 and 10 classes are the authors' logged counts: MobileNetV2 + XnODR 2,994,864
  (the paper's "2.99M"), its dense baseline 3,045,258, ResNet-50 + XnIDR 23,862,320, its dense
  baseline 26,162,698. With `weights=None` those frozen layers keep their random weights; pass
  `frozen_backbone_layers=0` to train everything.
- Small inputs are zero-padded, not re-strided: MobileNetV2 and ResNet-50 need 32x32, so inputs
  of 28 to 31 pixels are zero-padded to 32x32 (the authors pad MNIST 28 -> 32 the same way);
  the minimum is 28x28. `upsample` then enlarges by nearest-neighbour repetition (the authors'
  `UpSampling2D`: x7 to reach 224 from 32). The default `upsample=1` keeps CPU cost low; MACs
  grow with upsample squared.
- Inputs are images in [0, 1] (as kcaps' datasets give them). With `weights="imagenet"` they are
  rescaled to what the weights expect (MobileNetV2: [-1, 1]; ResNet-50: 0-255 minus the ImageNet
  channel means, caffe-style, so give BGR images) and grey images are repeated to 3 channels.

>>> import kcaps
>>> model = kcaps.models.backbone_capsnet("cnn", "xnodr", input_shape=(28, 28, 1), num_classes=10)
>>> model.output_shape
(None, 10)
>>> model.get_layer("class_capsules").kernel.shape   # 128 capsules x 8-D -> 10 x 16-D
TensorShape([128, 8, 10, 16])
"""
import functools

import tensorflow as tf

from kcaps import _checks, _optional
from kcaps.layers import CapsuleDense, CapsuleLength, Squash
from kcaps.models.capsnet import image_input
from kcaps.models.capsule_model import LENGTHS, CapsuleModel
from kcaps.registry import Registry

# name -> builder `(input shape, weights) -> feature extractor`; name -> head builder (below)
BACKBONES = Registry("backbone", allow_callables=False)
HEADS = Registry("head", allow_callables=False)
BINARIZED_HEADS = ("xnodr", "xnidr")
# The authors freeze the last layers of their pretrained backbones under the capsule heads.
PAPER_FROZEN_LAYERS = {"mobilenetv2": 5, "resnet50": 10, "cnn": 0}
_APPLICATION_SIZE = 32  # the smallest input tf.keras.applications accepts for both backbones
_MIN_SIZE = {"mobilenetv2": 28, "resnet50": 28, "cnn": 10}  # cnn: 3 valid convs and a 2x2 pool
_CAPSULE_DIM_IN = 8
_IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)


def backbone_capsnet(backbone="mobilenetv2", head="xnodr", input_shape=(32, 32, 3),
                     num_classes=10, weights=None, upsample=1, routing_iterations=3,
                     capsule_dim=16, frozen_backbone_layers="paper", bn_momentum=0.99, name=None):
    """Build `backbone` + `head` (see the module doc) as a `CapsuleModel`.

    Args:
      backbone: "mobilenetv2", "resnet50" or "cnn".
      head: "dense", "dynamic", "xnodr" or "xnidr".
      input_shape: `(height, width, channels)`; at least 28x28 for MobileNetV2 and ResNet-50,
        10x10 for cnn.
      num_classes: number of classes (class capsules).
      weights: None (random) or a `tf.keras.applications` weights argument ("imagenet", a path)
        for MobileNetV2 and ResNet-50.
      upsample: integer nearest-neighbour upsampling factor applied before the backbone.
      routing_iterations: routing iterations of the capsule heads.
      capsule_dim: dimension of the class capsules (16 in the paper).
      frozen_backbone_layers: "paper" (see the module doc) or the number of last backbone
        layers to freeze.
      bn_momentum: momentum of the head's BatchNorm layers (Keras' default 0.99, which the
        authors kept). Their moving statistics start at variance 1 while the head's activations
        have variances near 0.01, so short runs (a few hundred steps) need a lower momentum such
        as 0.9 for inference-mode BatchNorm to match training mode.
      name: model name (default `"{backbone}_{head}"`).
    Returns:
      A `CapsuleModel` from images to class scores `(batch, num_classes)` named `lengths`.
    """
    build_backbone, build_head = BACKBONES.get(backbone), HEADS.get(head)
    if head in BINARIZED_HEADS:
        _optional.larq()  # before anything is built: say which package is missing
    owner = f"backbone_capsnet({backbone!r}, {head!r})"
    _checks.positive_int(owner, "num_classes", num_classes)
    _checks.positive_int(owner, "upsample", upsample)
    _checks.positive_int(owner, "routing_iterations", routing_iterations)
    _checks.positive_int(owner, "capsule_dim", capsule_dim)
    if weights is not None and backbone == "cnn":
        raise ValueError(f"{owner}: pretrained `weights` exist only for mobilenetv2 and resnet50, "
                         f"got weights={weights!r}")
    image = image_input(owner, input_shape, min_size=_MIN_SIZE[backbone])

    x = _prepare_input(image, backbone, weights, upsample)
    extractor = build_backbone(tuple(x.shape[1:]), weights)
    frozen = _frozen_count(owner, backbone, head, frozen_backbone_layers, len(extractor.layers))
    for layer in extractor.layers[len(extractor.layers) - frozen:]:
        layer.trainable = False
    features = extractor(x)
    if not 0.0 <= bn_momentum < 1.0:
        raise ValueError(f"{owner}: `bn_momentum` must be in [0, 1), got {bn_momentum!r}")
    norm = functools.partial(tf.keras.layers.BatchNormalization, momentum=bn_momentum)
    scores = build_head(features, backbone, num_classes, capsule_dim=capsule_dim,
                        routing_iterations=routing_iterations, norm=norm)
    return CapsuleModel(image, scores, name=name or f"{backbone}_{head}")


def _prepare_input(image, backbone, weights, upsample):
    """Rescale for pretrained weights, pad small inputs to 32x32, upsample."""
    x = image
    if weights is not None:
        if x.shape[-1] == 1:
            x = tf.keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
        elif x.shape[-1] != 3:
            raise ValueError(f"backbone_capsnet({backbone!r}): pretrained weights need 1 or 3 "
                             f"input channels, got {x.shape[-1]}")
        if backbone == "mobilenetv2":
            x = tf.keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus_one_one")(x)
        else:
            x = tf.keras.layers.Rescaling(255.0, name="to_0_255")(x)
            x = tf.keras.layers.Normalization(mean=_IMAGENET_BGR_MEANS, variance=(1.0,) * 3,
                                              name="imagenet_means")(x)
    if backbone != "cnn":
        height, width = x.shape[1], x.shape[2]
        pad_h, pad_w = max(0, _APPLICATION_SIZE - height), max(0, _APPLICATION_SIZE - width)
        if pad_h or pad_w:
            x = tf.keras.layers.ZeroPadding2D(
                ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)),
                name="pad_to_32")(x)
    if upsample > 1:
        x = tf.keras.layers.UpSampling2D(upsample, name="upsample")(x)
    return x


def _frozen_count(owner, backbone, head, frozen, available):
    if frozen == "paper":
        return 0 if head == "dense" else PAPER_FROZEN_LAYERS[backbone]
    if isinstance(frozen, bool) or not isinstance(frozen, int) or not 0 <= frozen <= available:
        raise ValueError(f"{owner}: `frozen_backbone_layers` must be 'paper' or an integer from 0 "
                         f"to {available} (the backbone's layers), got {frozen!r}")
    return frozen


@BACKBONES.register("mobilenetv2")
def _mobilenetv2(shape, weights):
    return tf.keras.applications.MobileNetV2(input_shape=shape, include_top=False, weights=weights)


@BACKBONES.register("resnet50")
def _resnet50(shape, weights):
    return tf.keras.applications.ResNet50(input_shape=shape, include_top=False, weights=weights)


@BACKBONES.register("cnn")
def _cnn(shape, weights=None):
    """The authors' small MNIST trunk: conv 128 - conv 128 + max pool - conv 256 (3x3, valid).

    Each conv is followed by BatchNorm (their momentum 0.9 and epsilon 1e-6) and ReLU.
    """
    image = tf.keras.Input(shape)
    x = image
    for k, filters in enumerate((128, 128, 256), start=1):
        x = tf.keras.layers.Conv2D(filters, 3, name=f"conv{k}")(x)
        if k == 2:
            x = tf.keras.layers.MaxPooling2D(2, name="pool2")(x)
        x = tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-6, name=f"bn{k}")(x)
        x = tf.keras.layers.ReLU(name=f"relu{k}")(x)
    return tf.keras.Model(image, x, name="cnn")


def _primary_capsules(features, backbone, norm):
    """The authors' extra conv block, pooled into 8-D capsules, squashed, normalized, ReLU'd."""
    layers = tf.keras.layers
    if backbone == "resnet50":
        regularizer = tf.keras.regularizers.L2(0.001)
        x = features
        for k, (filters, size) in enumerate(((512, 1), (512, 3), (2048, 1)), start=1):
            x = layers.Conv2D(filters, size, padding="same", kernel_regularizer=regularizer,
                              name=f"head_conv{k}")(x)
            x = norm(name=f"head_bn{k}")(x)
            if k < 3:
                x = layers.ReLU(name=f"head_relu{k}")(x)
        x = layers.Add(name="head_add")([x, features])
    else:
        x = layers.DepthwiseConv2D(3, padding="same", name="head_depthwise")(features)
        x = norm(name="head_depthwise_bn")(x)
        x = layers.Conv2D(1024, 1, name="head_conv")(x)
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = layers.Reshape((x.shape[-1] // _CAPSULE_DIM_IN, _CAPSULE_DIM_IN), name="to_capsules")(x)
    x = Squash(name="primary_squash")(x)
    x = norm(name="primary_bn")(x)
    return layers.ReLU(name="primary_relu")(x)


def _capsule_head(routing, features, backbone, num_classes, capsule_dim, routing_iterations,
                  norm):
    """Primary capsules (`_primary_capsules`) -> class capsules -> BatchNorm -> ReLU -> lengths."""
    capsules = _primary_capsules(features, backbone, norm)
    v = CapsuleDense(num_classes, capsule_dim, routing=routing,
                     routing_iterations=routing_iterations, name="class_capsules")(capsules)
    v = norm(name="class_capsules_bn")(v)
    v = tf.keras.layers.ReLU(name="class_capsules_relu")(v)
    return CapsuleLength(name=LENGTHS)(v)


for _routing in ("dynamic", "xnodr", "xnidr"):
    HEADS.register(_routing, functools.partial(_capsule_head, _routing))


@HEADS.register("dense")
def _dense_head(features, backbone, num_classes, **_capsule_options):
    """The authors' fully connected baseline (module doc); ignores the capsule options."""
    layers = tf.keras.layers
    x = layers.GlobalAveragePooling2D(name="head_pool")(features)
    if backbone == "resnet50":
        x = layers.Dense(1024, activation="relu", name="dense_1024")(x)
        x = layers.Dense(512, activation="relu", name="dense_512")(x)
    else:
        x = layers.Dropout(0.5, name="dropout_0.5")(x)
        x = layers.Dense(512, activation="relu", name="dense_512")(x)
        x = layers.Dense(256, activation="relu", name="dense_256")(x)
        x = layers.Dropout(0.3, name="dropout_0.3")(x)
        x = layers.Dense(128, activation="relu", name="dense_128")(x)
        x = layers.Dropout(0.2, name="dropout_0.2")(x)
    return layers.Dense(num_classes, activation="softmax", name=LENGTHS)(x)
