"""Deep capsule networks: a stack of fully connected capsule layers between primary and class capsules.

Sahu and Altahhan ("Mitigating Vanishing Activations in Deep CapsNets Using Channel Pruning")
build one convolution -> primary capsules -> several intermediate capsule layers -> class
capsules with dynamic routing, and vary capsule counts, capsule dimensions and depth; deeper
stacks lose active capsules (their lengths vanish). Their exact sizes were not readable; the
defaults here are the public deep stack of Peer et al. ("Limitation of Capsule Networks", code
peerdavid/capsnet-limitations): conv 9x9 with 512 filters -> 64 primary types of 8-D (9x9,
stride 2: 6x6x64 = 2,304 capsules for 28x28) -> 4 layers of 32 capsules of 12-D -> 10 class
capsules of 16-D.
"""
import tensorflow as tf

from kcaps import _checks, initializers
from kcaps.registry import Registry
from kcaps.layers import CapsuleDense, PrimaryCapsules
from kcaps.models.capsnet import capsule_head, image_input
from kcaps.losses import ChannelCorrelationLoss

CAPSULE_INITS = Registry("capsule initializer")
CAPSULE_INITS.register("fan_in", initializers.CapsuleFanIn)
CAPSULE_INITS.register("length_preserving", initializers.CapsuleLengthPreserving)


def _per_layer(owner, field, value, count):
    values = list(value) if isinstance(value, (list, tuple)) else [value] * count
    if len(values) != count:
        raise ValueError(f"{owner}: `{field}` needs {count} values (one per intermediate layer), "
                         f"got {len(values)}")
    return [_checks.positive_int(owner, field, v) for v in values]


def deep_capsnet(input_shape=(28, 28, 1), num_classes=10, num_intermediate=4,
                 intermediate_capsules=32, intermediate_dims=12, capsule_dim=16,
                 conv_filters=512, conv_kernel=9, primary_types=64, primary_dim=8,
                 primary_kernel=9, primary_strides=2, routing_iterations=3, decoder=False,
                 ccm_weight=0.0, conv_initializer="he_normal", capsule_init="fan_in",
                 bias_routing=False, **capsule_kwargs):
    """Conv (ReLU) -> primary capsules -> `num_intermediate` capsule layers -> class capsules.

    Args:
      num_intermediate: intermediate capsule layers (0 gives a plain CapsNet), named
        `capsules_1` ... `capsules_n`.
      intermediate_capsules, intermediate_dims: capsule count and dimension of each
        intermediate layer: one int for all, or one value per layer.
      capsule_dim: dimension of the class capsules.
      conv_filters, conv_kernel: the single convolution (`conv1`, ReLU).
      primary_types, primary_dim, primary_kernel, primary_strides: the primary capsules.
      ccm_weight: if > 0, a `ChannelCorrelationLoss` (Sahu and Altahhan's CCM loss, named
        `ccm`) after the convolution with this weight.
      conv_initializer: kernel initializer of the convolution and of the primary-capsule
        convolution; "he_normal" as in Peer et al.'s code. (With Keras's glorot_uniform and a
        narrow convolution the primary capsules start ~0.01 long, and through the squash every
        routed layer above starts at ~0: the whole stack is silent and does not train.)
      capsule_init: kernel initializer of every routed capsule layer: "fan_in"
        (`kcaps.initializers.CapsuleFanIn`, kcaps' default: with >= 3 intermediate layers the
        capsules vanish at step 0 and the stack does not train) or "length_preserving"
        (`kcaps.initializers.CapsuleLengthPreserving`: |s| ~ 0.5 at every layer's first
        routing iteration; 5-layer stacks start live and train, see its docstring),
        or an initializer object (overridden by an explicit `kernel_initializer=`).
      bias_routing: Peer et al.'s bias routing: every routed layer adds a learned bias to s_j,
        initialized to 0.1 (`use_bias=True, bias_initializer=Constant(0.1)`).
      capsule_kwargs: passed to every `CapsuleDense` (e.g. `use_bias=True`, `routing=`,
        `kernel_initializer=`).

    >>> import kcaps
    >>> model = kcaps.models.deep_capsnet(num_intermediate=3, conv_filters=32, primary_types=8)
    >>> [model.get_layer(f"capsules_{k}").output_shape for k in (1, 2, 3)]
    [(None, 32, 12), (None, 32, 12), (None, 32, 12)]
    >>> model.get_layer("class_capsules").output_shape
    (None, 10, 16)
    """
    owner = "deep_capsnet"
    _checks.non_negative_int(owner, "num_intermediate", num_intermediate)
    counts = _per_layer(owner, "intermediate_capsules", intermediate_capsules, num_intermediate)
    dims = _per_layer(owner, "intermediate_dims", intermediate_dims, num_intermediate)
    if not ccm_weight >= 0:
        raise ValueError(f"{owner}: `ccm_weight` must be >= 0, got {ccm_weight!r}")
    if "kernel_initializer" not in capsule_kwargs:
        init = CAPSULE_INITS.get(capsule_init)  # a name, or an initializer passed through
        capsule_kwargs["kernel_initializer"] = init() if isinstance(init, type) else init
    if bias_routing:
        capsule_kwargs.setdefault("use_bias", True)
        capsule_kwargs.setdefault("bias_initializer", tf.keras.initializers.Constant(0.1))
    image = image_input(owner, input_shape, min_size=conv_kernel + primary_kernel - 1)
    h = tf.keras.layers.Conv2D(_checks.positive_int(owner, "conv_filters", conv_filters),
                               conv_kernel, activation="relu", kernel_initializer=conv_initializer,
                               name="conv1")(image)
    if ccm_weight:
        h = ChannelCorrelationLoss(ccm_weight, name="ccm")(h)
    capsules = PrimaryCapsules(primary_types, primary_dim, primary_kernel, strides=primary_strides,
                               kernel_initializer=conv_initializer, name="primary_capsules")(h)
    for k, (count, dim) in enumerate(zip(counts, dims), 1):
        capsules = CapsuleDense(count, dim, routing_iterations=routing_iterations,
                                name=f"capsules_{k}", **capsule_kwargs)(capsules)
    return capsule_head(capsules, num_classes, capsule_dim, routing_iterations, decoder, image,
                        owner, **capsule_kwargs)
