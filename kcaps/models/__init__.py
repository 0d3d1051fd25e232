"""Capsule-network models: `capsnet` (Sabour et al.), `small_capsnet` (phones and MCUs),
`backbone_capsnet` (MobileNetV2 / ResNet-50 / cnn with a dense, dynamic, XnODR or XnIDR head)."""
import functools

from kcaps.models.backbone_capsnet import BACKBONES, HEADS, backbone_capsnet
from kcaps.models.capsnet import capsnet, small_capsnet
from kcaps.models.capsule_model import CapsuleModel, classifier
from kcaps.models.cnn_capsnet import cnn_capsnet
from kcaps.models.deep_capsnet import deep_capsnet

__all__ = ["MODELS", "CapsuleModel", "backbone_capsnet", "capsnet", "classifier", "get",
           "small_capsnet", "cnn_capsnet", "deep_capsnet"]

MODELS = {"capsnet": capsnet, "small_capsnet": small_capsnet}
MODELS.update(cnn_capsnet=cnn_capsnet, deep_capsnet=deep_capsnet)
# "mobilenetv2_xnodr", "resnet50_dense", ...: backbone_capsnet by name, for `kcaps train --model`
MODELS.update({f"{b}_{h}": functools.partial(backbone_capsnet, b, h) for b in BACKBONES for h in HEADS})


def get(name):
    """A model builder by name, e.g. `kcaps.models.get("small_capsnet")(input_shape, 10)`."""
    if callable(name):
        return name
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]
