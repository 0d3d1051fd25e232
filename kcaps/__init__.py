"""kcaps: efficient capsule networks for Keras 2 (`tf.keras` through tf_keras), larq and tfmot.

Importing kcaps sets `TF_USE_LEGACY_KERAS=1` (larq 0.14 and tfmot 0.8 need Keras 2) and raises an
ImportError saying what to do if TensorFlow was already imported with Keras 3. It changes nothing
in larq or tfmot: capsule layers' MACs are counted by `kcaps.complexity`.

>>> import kcaps
>>> model = kcaps.models.small_capsnet()
>>> model.compile("adam")            # margin loss + accuracy on the capsule lengths
"""
from kcaps._keras2 import ensure_keras2

ensure_keras2()

from kcaps import callbacks, initializers, layers, losses, metrics, models, ops, projections, routing  # noqa: E402
from kcaps import adaptive_batch, lr_schedules, policies, small_decoder  # noqa: E402  (FasTrCaps)
from kcaps import complexity, xnor  # noqa: E402  (binarized heads)
from kcaps import activity, pruning  # noqa: E402

__version__ = "0.1.0"
__all__ = ["callbacks", "complexity", "initializers", "layers", "losses", "metrics", "models",
           "ops", "projections", "routing", "xnor"]
__all__ += ["adaptive_batch", "lr_schedules", "policies", "small_decoder"]
__all__ += ["activity", "pruning"]
