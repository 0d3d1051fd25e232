"""Imports of optional packages, failing with the pip command that fixes them."""


def larq():
    """Import larq, or say how to install it (binarized capsule layers need it)."""
    try:
        import larq as module
    except ImportError as error:
        raise ImportError(
            "Binarized capsule layers (routing='xnodr' or 'xnidr') need larq: "
            "pip install larq==0.14.0"
        ) from error
    except AttributeError as error:
        # larq imports `tensorflow.keras.optimizers.legacy`, a module path TensorFlow binds when
        # it is imported: imported before kcaps, it is Keras 3's and larq's import fails.
        raise ImportError(
            "larq needs Keras 2 behind `tensorflow.keras`, but TensorFlow was imported before "
            "kcaps and bound it to Keras 3. Import kcaps before TensorFlow, or set the "
            "environment variable TF_USE_LEGACY_KERAS=1 before starting Python."
        ) from error
    return module
