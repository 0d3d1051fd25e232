"""`CapsuleModel`: a functional Keras model that trains on plain `(images, labels)`.

A capsule network with a reconstruction decoder needs the labels *inside* the graph while
training (the decoder sees only the true class's capsule). This model takes care of that: its
graph has an image input and, when it has a decoder, a one-hot `label` input; `fit`, `evaluate`
and `predict` accept ordinary `(x, y)` data and feed the labels (or zeros at inference, where the
mask picks the longest capsule) themselves. `compile()` defaults to the margin loss plus the
0.0005-scaled reconstruction loss, and accuracy on the capsule lengths.

It stays a functional model, so `tfmot` pruning, cloning, `model.save` (`.keras` and SavedModel)
and TFLite conversion see an ordinary graph of layers. Outputs are found by the name of the layer
that makes them, looking through wrappers, so a model whose layers tfmot wrapped
(`prune_low_magnitude_lengths`) still trains on plain labels.
"""
import warnings

import numpy as np
import tensorflow as tf

from kcaps import losses, ops
from kcaps import metrics as metrics_lib

LABEL_INPUT = "label"
LENGTHS = "lengths"
RECONSTRUCTION = "reconstruction"


@tf.keras.utils.register_keras_serializable(package="kcaps")
class CapsuleModel(tf.keras.Model):
    """A functional capsule network; build it as `CapsuleModel(inputs, outputs)`.

    Outputs must be named `lengths` (capsule lengths, the class scores) and optionally
    `reconstruction`; an input named `label` (one-hot, `(batch, num_classes)`) is filled from `y`.
    """

    @property
    def has_label_input(self):
        return LABEL_INPUT in self.input_names

    @property
    def num_classes(self):
        return self.outputs[self.output_names.index(self.output_key(LENGTHS))].shape[-1]

    def output_key(self, role):
        """The output name of `role` (`lengths` or `reconstruction`), or None if absent.

        Looks through layer wrappers: tfmot's pruning wrapper renames `lengths` to
        `prune_low_magnitude_lengths`.
        """
        for name, layer in zip(self.output_names, self._output_layers):
            if unwrap(layer).name == role:
                return name
        return None

    def _graph_inputs(self, x, y):
        """Plain images -> the graph's inputs (adds one-hot labels, or zeros, for the decoder)."""
        if not self.has_label_input or isinstance(x, (list, tuple, dict)):
            return x
        batch = tf.shape(x)[0]
        if y is None:
            labels = tf.zeros([batch, self.num_classes], self.compute_dtype)
        else:
            labels = ops.one_hot_labels(y, self.num_classes)
        return [x, labels]

    def _targets(self, x, y):
        reconstruction = self.output_key(RECONSTRUCTION)
        if y is None or reconstruction is None or isinstance(y, (list, tuple, dict)):
            return y
        return {self.output_key(LENGTHS): y, reconstruction: x}

    def _adapt(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        inputs = self._graph_inputs(x, y)
        return tf.keras.utils.pack_x_y_sample_weight(inputs, self._targets(x, y), sample_weight)

    def train_step(self, data):
        return super().train_step(self._adapt(data))

    def test_step(self, data):
        return super().test_step(self._adapt(data))

    def predict_step(self, data):
        x, _, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
        return self(self._graph_inputs(x, None), training=False)

    def compile(self, optimizer="adam", loss=None, metrics=None, jit_compile=False, **kwargs):
        """Keras `compile`, defaulting to the capsule-network losses and accuracy.

        Defaults: `MarginLoss()` on `lengths`, `ReconstructionLoss()` (0.0005 x sum of squared
        errors) on `reconstruction` if present, and accuracy on `lengths`.

        `jit_compile=True` compiles the train, test and predict steps with XLA. It is off by
        default: on CPU, XLA runs the class capsules about 1.5-2x faster but the 9x9 convolutions
        of `capsnet` tens of times slower (docs/notes/issue19.md). When XLA cannot compile the
        model (an op with no XLA kernel, e.g. `tf.numpy_function`), the model falls back to
        `jit_compile=False` with a warning naming the reason, before any step runs.
        """
        if jit_compile:
            reason = xla_unsupported_reason(self)
            if reason is not None:
                warnings.warn(f"{self.name}: XLA cannot compile this model ({reason}); "
                              f"training without XLA (jit_compile=False)", stacklevel=2)
                jit_compile = False
        kwargs["jit_compile"] = bool(jit_compile)
        lengths, reconstruction = self.output_key(LENGTHS), self.output_key(RECONSTRUCTION)
        if loss is None:
            loss = {lengths: losses.MarginLoss()}
            if reconstruction is not None:
                loss[reconstruction] = losses.ReconstructionLoss()
        if metrics is None:
            metrics = {lengths: [metrics_lib.CapsuleAccuracy()]}
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Re-compile a loaded model (Keras skips models whose `compile` is overridden)."""
        self.compile(**tf.keras.saving.deserialize_keras_object(config))
        if isinstance(self.optimizer, tf.keras.optimizers.Optimizer) and self.built:
            self.optimizer.build(self.trainable_variables)  # so saved optimizer state can load


def graph_inputs(model, x):
    """Images `x` -> what `model`'s graph takes: a `CapsuleModel` with a label input gets zero
    labels beside the images (its mask then picks the longest capsule); others get `x`."""
    x = tf.convert_to_tensor(x)
    return model._graph_inputs(x, None) if isinstance(model, CapsuleModel) else x


def probe(model, tensors, data, batch_size=256):
    """The values of `tensors` (symbolic tensors of `model`'s graph) on `data`, as NumPy arrays.

    One probe model from `model`'s inputs to `tensors`, run in inference mode on batches of
    `batch_size` images; returns a list with one `(examples, ...)` array per tensor.

    >>> import kcaps, numpy as np
    >>> model = kcaps.models.small_capsnet(decoder=True)
    >>> [v.shape for v in probe(model, [model.get_layer("primary_capsules").output],
    ...                         np.zeros([3, 28, 28, 1], np.float32), batch_size=2)]
    [(3, 128, 8)]
    """
    runner = tf.keras.Model(model.inputs, list(tensors))
    parts = [[] for _ in tensors]
    for start in range(0, len(data), batch_size):
        outputs = runner(graph_inputs(model, data[start:start + batch_size]), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for part, value in zip(parts, outputs):
            part.append(value.numpy())
    return [np.concatenate(part) for part in parts]


def xla_unsupported_reason(model):
    """Why XLA cannot compile `model`'s forward pass (training mode), or None if it can.

    Lowers the forward pass on a batch of one to XLA's HLO without running it (no step, no data
    consumed); the gradient of every op XLA lowers is lowered too. Keras itself disables XLA
    where the platform lacks it (Apple silicon, pluggable devices) with its own warning.
    """
    inputs = [tf.zeros([1 if d is None else d for d in t.shape], t.dtype) for t in model.inputs]
    forward = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=True),
                          jit_compile=True)
    try:
        forward.experimental_get_compiler_ir(*inputs)(stage="hlo")
    except Exception as error:  # noqa: BLE001 - any failure to lower is a reason not to use XLA
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = next((line for line in lines if "unsupported operations" in line or "XLA" in line),
                      lines[0] if lines else type(error).__name__)
        return f"{type(error).__name__}: {detail[:300]}"
    return None


def unwrap(layer):
    """The layer inside any `tf.keras.layers.Wrapper`s (e.g. tfmot's pruning wrapper)."""
    while isinstance(layer, tf.keras.layers.Wrapper):
        layer = layer.layer
    return layer


def classifier(model):
    """The image -> capsule lengths part of a capsule model, for inference and conversion.

    Drops the label input and the decoder; the layers (and weights) are shared with `model`.
    A model with one input and one output (a user's own classifier) is returned as it is.
    """
    if len(model.inputs) == 1 and len(model.outputs) == 1:
        return model
    image = [t for t, name in zip(model.inputs, model.input_names) if name != LABEL_INPUT]
    if len(image) != 1:
        raise ValueError(f"classifier: expected one image input, got inputs {model.input_names}")
    roles = [unwrap(layer).name for layer in model._output_layers]
    if roles == [LENGTHS] and len(model.inputs) == 1:
        return model
    if LENGTHS not in roles:
        raise ValueError(f"classifier: the model has no `{LENGTHS}` output, outputs {model.output_names}")
    lengths = model.outputs[roles.index(LENGTHS)]
    return tf.keras.Model(image[0], lengths, name=f"{model.name}_classifier")
