"""Make sure `tf.keras` is Keras 2 (tf_keras) before any kcaps module touches it.

larq 0.14 and tensorflow-model-optimization 0.8 only work with Keras 2. TensorFlow 2.16+ picks
Keras 3 unless `TF_USE_LEGACY_KERAS=1` is set when `tf.keras` is first resolved, so this module
sets it and then checks which Keras `tf.keras` really is.
"""
import os
import sys

_HOW_TO_FIX = (
    "kcaps needs Keras 2 (the `tf_keras` package) behind `tf.keras`, but TensorFlow was already "
    "imported and `tf.keras` resolved to Keras 3. Import kcaps before TensorFlow, or set the "
    "environment variable TF_USE_LEGACY_KERAS=1 before starting Python "
    "(for example `TF_USE_LEGACY_KERAS=1 python train.py`)."
)


def ensure_keras2():
    """Set `TF_USE_LEGACY_KERAS=1` if still possible and fail clearly if Keras 3 is in use."""
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    else:
        # `tf.keras` is resolved lazily on first attribute access, so setting the variable can still
        # work after a bare `import tensorflow`; the check below tells whether it did.
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tf_keras  # noqa: F401  (the Keras 2 package must be installed)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "kcaps needs the `tf-keras` package (Keras 2 for TensorFlow): pip install tf-keras==2.21.0"
        ) from error
    import tensorflow as tf

    if not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
        raise ImportError(_HOW_TO_FIX)
