"""Capsule-network models: `capsnet` (Sabour et al.), `small_capsnet` (phones and MCUs)."""
from kcaps.models.capsnet import capsnet, small_capsnet
from kcaps.models.capsule_model import CapsuleModel, classifier
from kcaps.models.cnn_capsnet import cnn_capsnet
from kcaps.models.deep_capsnet import deep_capsnet

__all__ = ["MODELS", "CapsuleModel", "capsnet", "classifier", "get", "small_capsnet"]
__all__ += ["cnn_capsnet", "deep_capsnet"]

MODELS = {"capsnet": capsnet, "small_capsnet": small_capsnet}
MODELS.update(cnn_capsnet=cnn_capsnet, deep_capsnet=deep_capsnet)


def get(name):
    """A model builder by name, e.g. `kcaps.models.get("small_capsnet")(input_shape, 10)`."""
    if callable(name):
        return name
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]
