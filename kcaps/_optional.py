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
    return module
