"""Capsule layers for `tf.keras` (Keras 2): primary capsules, routed capsules, lengths, masks, decoder.

>>> import kcaps, tensorflow as tf
>>> x = tf.keras.Input((28, 28, 1))
>>> h = tf.keras.layers.Conv2D(64, 9, activation="relu")(x)
>>> u = kcaps.layers.PrimaryCapsules(capsule_types=8, capsule_dim=8, kernel_size=9, strides=2)(h)
>>> v = kcaps.layers.CapsuleDense(num_capsules=10, capsule_dim=16)(u)
>>> scores = kcaps.layers.CapsuleLength()(v)
>>> tf.keras.Model(x, scores).output_shape
(None, 10)
"""
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from kcaps import _checks, _optional, ops, projections, prunable_view
from kcaps import routing as routing_lib

_register = tf.keras.utils.register_keras_serializable(package="kcaps")

# Names of kcaps <= issue 18, when one `routing` name chose both the projection and the routing
# (Sun et al.'s XnODR and XnIDR). They still load from saved configs and still work as arguments.
LEGACY_ROUTINGS = {
    "xnodr": ("dynamic", "xnor"),  # XnODR: xnorized u_hat = W u outside routing
    "xnidr": ("xnor_agreement", "float"),  # XnIDR: xnorized agreement inside routing
}
DEFAULT_ROUTING_ITERATIONS = 3


def conv_output_length(size, kernel, padding, stride):
    """Output length of a convolution along one axis (Keras' "valid" / "same" rules)."""
    return -(-size // stride) if padding == "same" else (size - kernel) // stride + 1


class WeightlessPrunable(tfmot.sparsity.keras.PrunableLayer):
    """For layers without weights: tfmot can wrap a whole kcaps model, and prunes nothing here."""

    def get_prunable_weights(self):
        return []


@_register
class PrimaryCapsules(tf.keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """A convolution whose output channels are grouped into capsules and squashed.

    The convolution has `capsule_types * capsule_dim` filters; at every output position each
    group of `capsule_dim` consecutive channels is one capsule. Capsules are ordered
    position-major: capsule `i = position * capsule_types + type`.

    With `depthwise=True` the convolution is depthwise (one `kernel_size` filter per input
    channel, Efficient-CapsNet's primary capsules): the input must have exactly
    `capsule_types * capsule_dim` channels, and capsule type t is made of input channels
    `t * capsule_dim ... t * capsule_dim + capsule_dim - 1`. Efficient-CapsNet's kernel covers the
    whole feature map (one position), so each capsule summarizes the map. Channel pruning
    (`kcaps.pruning`) removes a whole capsule type there by removing its channels in the
    convolution that feeds this layer.

    Args:
      capsule_types: capsule types (per position).
      capsule_dim: dimension of the capsules.
      kernel_size, strides, padding: of the convolution.
      squash: a name in `kcaps.ops.SQUASHES` or a callable (registered there to be saved).
      depthwise: a depthwise convolution (`tf.keras.layers.DepthwiseConv2D`) instead of a dense
        one.
      kernel_initializer, kernel_regularizer, use_bias: of the convolution (its depthwise kernel
        with `depthwise=True`).

    Input shape: `(batch, height, width, channels)`.
    Output shape: `(batch, out_height * out_width * capsule_types, capsule_dim)`.
    """

    def __init__(self, capsule_types, capsule_dim, kernel_size, strides=1, padding="valid",
                 squash="squash", kernel_initializer="glorot_uniform", kernel_regularizer=None,
                 use_bias=True, depthwise=False, **kwargs):
        super().__init__(**kwargs)
        self.capsule_types = _checks.positive_int("PrimaryCapsules", "capsule_types", capsule_types)
        self.capsule_dim = _checks.positive_int("PrimaryCapsules", "capsule_dim", capsule_dim)
        self._squash = ops.get_squash(squash)
        self.squash = squash
        self.depthwise = bool(depthwise)
        if self.depthwise:
            self.conv = tf.keras.layers.DepthwiseConv2D(
                kernel_size, strides=strides, padding=padding,
                depthwise_initializer=kernel_initializer, depthwise_regularizer=kernel_regularizer,
                use_bias=use_bias, name="conv")
        else:
            self.conv = tf.keras.layers.Conv2D(
                self.capsule_types * self.capsule_dim, kernel_size, strides=strides,
                padding=padding, kernel_initializer=kernel_initializer,
                kernel_regularizer=kernel_regularizer, use_bias=use_bias, name="conv",
            )

    @property
    def kernel(self):
        """The convolution's kernel: `(kh, kw, in, out)`; `(kh, kw, channels, 1)` if depthwise."""
        return self.conv.depthwise_kernel if self.depthwise else self.conv.kernel

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(
                f"PrimaryCapsules: expected a feature map of shape (batch, height, width, channels), "
                f"got a rank-{len(shape)} input of shape {shape}"
            )
        channels = self.capsule_types * self.capsule_dim
        if self.depthwise and shape[-1] != channels:
            raise ValueError(
                f"PrimaryCapsules(depthwise=True): {self.capsule_types} capsule types of "
                f"{self.capsule_dim}-D need an input with {channels} channels, got input shape "
                f"{shape}")
        if any(d is not None and conv_output_length(d, k, self.conv.padding, st) < 1
               for d, k, st in zip(shape[1:3], self.conv.kernel_size, self.conv.strides)):
            raise ValueError(
                f"PrimaryCapsules: a {self.conv.kernel_size} kernel with strides {self.conv.strides} "
                f"leaves no positions on an input of shape {shape}"
            )
        self.conv.build(shape)
        out = self.conv.compute_output_shape(shape)
        self._conv_output_shape = tuple(out)
        # Known at build time, the capsule count stays static even when a call's input spec only
        # gives ranks (Keras feeds `Sequence` data with unknown height and width).
        self._positions = out[1] * out[2] if out[1] is not None and out[2] is not None else None
        super().build(input_shape)

    def call(self, inputs):
        x = self.conv(inputs)
        positions = self._positions or self._num_positions(x)
        if positions == -1:
            return self._squash(tf.reshape(x, [tf.shape(x)[0], -1, self.capsule_dim]))
        return self._squash(tf.reshape(x, [-1, positions * self.capsule_types, self.capsule_dim]))

    @staticmethod
    def _num_positions(x):
        h, w = x.shape[1], x.shape[2]
        return h * w if h is not None and w is not None else -1

    def compute_output_shape(self, input_shape):
        out = self.conv.compute_output_shape(input_shape)
        positions = None if out[1] is None or out[2] is None else out[1] * out[2]
        return tf.TensorShape(
            [out[0], None if positions is None else positions * self.capsule_types, self.capsule_dim])

    def get_prunable_weights(self):
        return [self.kernel]

    def macs(self):
        """Float multiply-accumulates of the convolution per example, as `{32: count}`."""
        _require_built(self)
        _, height, width, _ = self._conv_output_shape
        return {32: int(np.prod(self.kernel.shape)) * height * width}

    def get_config(self):
        conv = self.conv.get_config()
        prefix = "depthwise" if self.depthwise else "kernel"
        config = super().get_config()
        config.update(
            capsule_types=self.capsule_types, capsule_dim=self.capsule_dim,
            kernel_size=conv["kernel_size"], strides=conv["strides"], padding=conv["padding"],
            squash=ops.SQUASHES.serialize(self.squash),
            kernel_initializer=conv[f"{prefix}_initializer"],
            kernel_regularizer=conv[f"{prefix}_regularizer"], use_bias=conv["use_bias"],
            depthwise=self.depthwise,
        )
        return config


@_register
class CapsuleDense(tf.keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """Fully connected capsules: a projection to prediction vectors, then routing.

    `u_hat[j|i] = W[i, j] u[i]` with one matrix per (input capsule i, output capsule j) pair and no
    bias (the `projection`), then the `routing` of the predictions to the output capsules (see
    `kcaps.routing`). The two are independent choices. Both are vectorized: one batched matmul,
    no tiling of W over the batch, no per-example Python work.

    - `projection`: `"float"` (float W, Sabour et al.) or `"xnor"` (inputs and W binarized,
      XNOR-Net scaled: XnODR).
    - `routing`: `"dynamic"` (`routing_iterations` of dynamic routing with the dot-product
      agreement, Sabour et al.), `"xnor_agreement"` (the same with the xnorized agreement: XnIDR)
      or `"self_attention"` (one pass of self-attention plus a learned per-pair bias:
      Efficient-CapsNet).

    The names of kcaps <= issue 18 still work: `routing="xnodr"` is `projection="xnor"` with
    dynamic routing, `routing="xnidr"` is `routing="xnor_agreement"` (saved configs load too).

    Args:
      num_capsules: number of output capsules J.
      capsule_dim: dimension of the output capsules.
      routing: `"dynamic"`, `"xnor_agreement"` or `"self_attention"` (list above).
      projection: `"float"` or `"xnor"` (list above); default `"float"`.
      routing_iterations: iterations of an iterative routing (>= 1). `"self_attention"` has none:
        any value but the default is refused.
      weight_sharing: None, an int K (input capsule i uses matrix `i mod K`, FasTrCaps' tiling),
        `"type"` (one matrix per primary-capsule type) or `"position"` (one per position); the two
        named modes need `capsule_types`. Routing stays per capsule. The table in
        `kcaps.projections.sharing_index` says which option is which of the paper's.
      capsule_types: capsule types of the input layer (for the named sharing modes).
      sharing_order: how an int K counts input capsules: `"position_major"` (kcaps' order,
        default) or `"type_major"` (FasTrCaps' order; `weight_sharing=32,
        sharing_order="type_major"` is the paper's shared CapsNet).
      squash: a name in `kcaps.ops.SQUASHES` (`"squash"`: Sabour et al.; `"approx"`:
        FasTrCaps'; `"efficient"`: Efficient-CapsNet's) or a callable (registered there to be
        saved).
      use_bias: add a learned bias to s_j (Google's reference code; not in the paper).
      stop_routing_gradient: stop the gradient through u_hat in the routing iterations before
        the last (`kcaps.routing.dynamic_routing`'s `stop_gradient`): same outputs, an
        approximate and cheaper gradient. Default False (the exact gradient).
      bias_initializer: initializer of that bias (default "zeros"). Peer et al.'s *bias routing*
        ("Limitation of Capsule Networks", 2021) for deep stacks is `use_bias=True,
        bias_initializer=tf.keras.initializers.Constant(0.1)`: every s_j starts at least
        `0.1 sqrt(capsule_dim)` long, so no layer starts silent whatever the depth.
      kernel_initializer: default `kcaps.initializers.CapsuleFanIn()` (variance 1 / input_dim per
        matrix; see its docstring for why not Glorot).

    Weights: `kernel` (the projection's W) and, for `"self_attention"`, `attention_bias`, the
    `(num_capsules, num_in)` bias on the coupling coefficients (zeros at first; read it, or set
    it with `layer.attention_bias = values`).

    Input shape: `(batch, num_in, input_dim)`.
    Output shape: `(batch, num_capsules, capsule_dim)`.
    """

    def __init__(self, num_capsules, capsule_dim, routing="dynamic",
                 routing_iterations=DEFAULT_ROUTING_ITERATIONS,
                 weight_sharing=None, capsule_types=None, squash="squash", use_bias=False,
                 kernel_initializer=None, kernel_regularizer=None,
                 kernel_constraint=None, sharing_order="position_major",
                 stop_routing_gradient=False, bias_initializer="zeros", projection=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.stop_routing_gradient = bool(stop_routing_gradient)
        self.num_capsules = _checks.positive_int("CapsuleDense", "num_capsules", num_capsules)
        self.capsule_dim = _checks.positive_int("CapsuleDense", "capsule_dim", capsule_dim)
        self.routing, self.projection_name = _routing_and_projection(routing, projection)
        self._routing = routing_lib.ROUTINGS.get(self.routing)
        if not self._routing.iterative and routing_iterations != DEFAULT_ROUTING_ITERATIONS:
            raise ValueError(
                f"CapsuleDense: routing={self.routing!r} is not iterative, so `routing_iterations` "
                f"has no meaning; got routing_iterations={routing_iterations!r} (leave it out)")
        self.routing_iterations = _checks.positive_int(
            "CapsuleDense", "routing_iterations", routing_iterations)
        if self._routing.needs_larq or self.projection_name == "xnor":
            _optional.larq()  # binarized variants: fail now, saying what to install
        self._squash = ops.get_squash(squash)
        self.squash = squash
        self.use_bias = bool(use_bias)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.projection = projections.PROJECTIONS.get(self.projection_name)(
            self.num_capsules, self.capsule_dim, weight_sharing=weight_sharing,
            capsule_types=capsule_types, sharing_order=sharing_order,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer, kernel_constraint=kernel_constraint,
            name="projection",
        )
        self._attention_bias = None

    @property
    def kernel(self):
        """The transformation matrices W, shape `(num_matrices, input_dim, num_capsules, capsule_dim)`."""
        return self.projection.kernel

    @property
    def attention_bias(self):
        """`"self_attention"`: the learned `(num_capsules, num_in)` coupling bias, else None."""
        return self._attention_bias

    @attention_bias.setter
    def attention_bias(self, value):
        if self._attention_bias is None:
            raise ValueError(
                f"CapsuleDense {self.name!r}: only a built layer with routing='self_attention' has "
                f"an attention bias (routing={self.routing!r}, built={self.built})")
        value = np.asarray(value, dtype=np.float32)
        if value.shape != tuple(self._attention_bias.shape):
            raise ValueError(
                f"CapsuleDense {self.name!r}: attention_bias must have shape "
                f"{tuple(self._attention_bias.shape)} (num_capsules, num_in), got {value.shape}")
        self._attention_bias.assign(value)

    def build(self, input_shape):
        num_in, _ = _checks.capsule_input_shape("CapsuleDense", input_shape)
        self.projection.build(input_shape)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.num_capsules, self.capsule_dim),
                initializer=self.bias_initializer)
        if self._routing.pair_bias:
            self._attention_bias = self.add_weight(
                name="attention_bias", shape=(self.num_capsules, num_in), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        u_hat = self.projection(inputs)
        return self._routing.route(u_hat, self.routing_iterations, self._squash, self.bias,
                                   self._attention_bias, self.stop_routing_gradient)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.num_capsules, self.capsule_dim])

    def get_prunable_weights(self):
        """The transformation matrices (for XnODR, the latent float weights behind the signs).

        Returned as a `kcaps.prunable_view.PermutedWeight` with `input_dim` (the axis `u_hat =
        W u` sums over) moved to axis 2, where tfmot's `sparsity_m_by_n` groups a rank-4 weight:
        2:4 pruning then zeroes 2 of every 4 consecutive weights along `input_dim`. Under a
        distribution strategy (a mirrored kernel) tfmot's update accepts only variables, so the
        kernel itself is returned: magnitude pruning is unaffected, 2:4 groups fall across the
        output capsules there (tfmot's reading of a rank-4 kernel).
        """
        kernel = self.projection.kernel
        if isinstance(kernel, tf.distribute.DistributedValues):
            return [kernel]
        return [prunable_view.PermutedWeight(kernel, (0, 2, 1, 3))]

    def macs(self):
        """Multiply-accumulates per example as `{bits: count}` (1 = binary, 32 = float).

        The projection's (see `kcaps.projections`), then routing's. Dynamic routing: every
        iteration sums `c_ij u_hat[j|i]` (N x J x K float MACs); every iteration but the last
        adds an agreement, a float dot product (N x J x K) for `"dynamic"`, and for
        `"xnor_agreement"` N x J x K binary products plus N x J x K float sums for K_ij and
        2 N x J float scalings. Self-attention: the sum of the predictions, their agreement with
        it and the weighted sum, 3 N x J x K. Softmax and squash are not counted (larq counts no
        activations either).
        """
        _require_built(self)
        counts = dict(self.projection.macs())
        n, j, k = self.projection.num_in, self.num_capsules, self.capsule_dim

        def add(bits, count):
            counts[bits] = counts.get(bits, 0) + count

        if not self._routing.iterative:
            add(32, 3 * n * j * k)
            return counts
        agreements = self.routing_iterations - 1
        add(32, self.routing_iterations * n * j * k)
        if self._routing.agreement == "xnor":
            add(1, agreements * n * j * k)
            add(32, agreements * (n * j * k + 2 * n * j))
        else:
            add(32, agreements * n * j * k)
        return counts

    def get_config(self):
        config = super().get_config()
        projection = self.projection.get_config()
        config.update(
            num_capsules=self.num_capsules, capsule_dim=self.capsule_dim, routing=self.routing,
            projection=self.projection_name, routing_iterations=self.routing_iterations,
            squash=ops.SQUASHES.serialize(self.squash), use_bias=self.use_bias,
            stop_routing_gradient=self.stop_routing_gradient,
            bias_initializer=tf.keras.initializers.serialize(self.bias_initializer),
            **{key: projection[key] for key in (
                "weight_sharing", "capsule_types", "sharing_order", "kernel_initializer",
                "kernel_regularizer", "kernel_constraint")},
        )
        return config


def _routing_and_projection(routing, projection):
    """`(routing, projection)` names from the arguments, reading kcaps' older combined names."""
    if isinstance(routing, str) and routing in LEGACY_ROUTINGS:
        new_routing, implied = LEGACY_ROUTINGS[routing]
        if projection is not None and projection != implied:
            raise ValueError(
                f"CapsuleDense: routing={routing!r} (the older name for routing={new_routing!r} "
                f"with projection={implied!r}) contradicts projection={projection!r}; pass "
                f"routing={new_routing!r}, projection={projection!r} instead")
        return new_routing, implied
    routing_lib.ROUTINGS.get(routing)  # an unknown name fails here, listing the valid ones
    projection = "float" if projection is None else projection
    projections.PROJECTIONS.get(projection)  # an unknown name fails here, listing the valid ones
    return routing, projection


def _require_built(layer):
    if not layer.built:
        raise ValueError(f"{type(layer).__name__} {layer.name!r}: build the layer before counting MACs")


@_register
class Squash(tf.keras.layers.Layer, WeightlessPrunable):
    """Squash capsules along the last axis (`"squash"`: Sabour et al.; `"approx"`: FasTrCaps').

    Input and output shape: `(batch, ..., capsule_dim)`.

    >>> import kcaps, tensorflow as tf
    >>> kcaps.layers.Squash()(tf.constant([[3.0, 4.0]])).numpy().round(4)
    array([[0.5769, 0.7692]], dtype=float32)
    """

    def __init__(self, squash="squash", **kwargs):
        super().__init__(**kwargs)
        self.squash = squash
        self._squash = ops.get_squash(squash)

    def call(self, inputs):
        return self._squash(inputs)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(squash=ops.SQUASHES.serialize(self.squash))
        return config


@_register
class CapsuleLength(tf.keras.layers.Layer, WeightlessPrunable):
    """Capsule lengths `|v_j|` (safe norm), used as class scores.

    Input shape: `(batch, num_capsules, capsule_dim)`. Output shape: `(batch, num_capsules)`.
    """

    def call(self, inputs):
        return ops.safe_norm(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape[:-1])


@_register
class CapsuleMask(tf.keras.layers.Layer, WeightlessPrunable):
    """Keep one capsule per example and zero the others, then flatten (input of the decoder).

    Called on `capsules` or on `[capsules, labels]`. While training and given labels, the capsule
    of the true class is kept (Sabour et al., 2017); otherwise, and always at inference, the
    longest capsule. Labels may be integer class ids or one-hot (multi-hot keeps several).

    Input shape: `(batch, num_capsules, capsule_dim)` [and labels `(batch,)` or
    `(batch, num_capsules)`]. Output shape: `(batch, num_capsules * capsule_dim)`.
    """

    def call(self, inputs, training=None):
        labels = None
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"CapsuleMask: expected [capsules, labels], got {len(inputs)} inputs")
            inputs, labels = inputs
        mask = ops.selected_capsules(inputs, labels, training)
        masked = inputs * mask[..., tf.newaxis]
        return tf.reshape(masked, [-1, inputs.shape[1] * inputs.shape[2]])

    def compute_output_shape(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and not isinstance(
            input_shape[0], (int, type(None))) else input_shape
        return tf.TensorShape([shape[0], shape[1] * shape[2]])


@_register
class CapsuleDecoder(tf.keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """The reconstruction decoder of Sabour et al. (2017): ReLU 512 -> ReLU 1024 -> sigmoid pixels.

    Args:
      target_shape: shape of one reconstruction (e.g. `(28, 28, 1)`).
      hidden_units: sizes of the ReLU layers.
      kernel_initializer: of the ReLU layers' kernels (Keras' default `"glorot_uniform"`;
        Efficient-CapsNet's generator: `"he_normal"`).
      pixels_initializer: of the sigmoid pixel layer's kernel; None (default): the same as
        `kernel_initializer` (Efficient-CapsNet's generator: `"glorot_normal"`).
      Biases start at zero.

    Input shape: `(batch, features)` (a masked, flattened capsule layer).
    Output shape: `(batch, *target_shape)`.

    >>> decoder = CapsuleDecoder((28, 28, 1), kernel_initializer="he_normal",
    ...                          pixels_initializer="glorot_normal")
    >>> decoder.build((None, 160))
    >>> decoder.count_params()     # 160*512+512 + 512*1024+1024 + 1024*784+784
    1411344
    """

    def __init__(self, target_shape, hidden_units=(512, 1024), kernel_initializer="glorot_uniform",
                 pixels_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        self.hidden_units = tuple(
            _checks.positive_int("CapsuleDecoder", "hidden_units", u) for u in hidden_units)
        size = 1
        for d in self.target_shape:
            size *= _checks.positive_int("CapsuleDecoder", "target_shape", d)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.pixels_initializer = tf.keras.initializers.get(
            kernel_initializer if pixels_initializer is None else pixels_initializer)
        # one initializer object per layer: Keras draws the same values from a reused instance
        fresh = tf.keras.initializers.serialize
        self.hidden = [tf.keras.layers.Dense(u, activation="relu", name=f"dense_{k}",
                                             kernel_initializer=fresh(self.kernel_initializer))
                       for k, u in enumerate(self.hidden_units)]
        self.pixels = tf.keras.layers.Dense(size, activation="sigmoid", name="pixels",
                                            kernel_initializer=fresh(self.pixels_initializer))

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        for layer in self.hidden + [self.pixels]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        super().build(input_shape)

    def call(self, inputs):
        x = inputs
        for layer in self.hidden:
            x = layer(x)
        return tf.reshape(self.pixels(x), [-1, *self.target_shape])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], *self.target_shape])

    def get_prunable_weights(self):
        return [layer.kernel for layer in self.hidden + [self.pixels]]

    def get_config(self):
        config = super().get_config()
        config.update(target_shape=self.target_shape, hidden_units=self.hidden_units,
                      kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer),
                      pixels_initializer=tf.keras.initializers.serialize(self.pixels_initializer))
        return config
