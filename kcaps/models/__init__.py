"""Capsule-network models: `capsnet` (Sabour et al.), `small_capsnet` (phones and MCUs),
`efficient_capsnet` (Mazzia et al.), `backbone_capsnet` (MobileNetV2 / ResNet-50 / cnn with a
dense, dynamic, XnODR or XnIDR head).

`get(name)` returns a builder by name (`MODELS`, a `kcaps.registry.Registry`):

>>> import kcaps
>>> kcaps.models.get("small_capsnet")(num_classes=4).output_shape
(None, 4)
>>> kcaps.models.MODELS.names()[:4]
['capsnet', 'cnn_capsnet', 'cnn_dense', 'cnn_dynamic']
"""
import functools

from kcaps.models.backbone_capsnet import BACKBONES, HEADS, backbone_capsnet
from kcaps.models.capsnet import capsnet, small_capsnet
from kcaps.models.capsule_model import CapsuleModel, classifier
from kcaps.models.cnn_capsnet import cnn_capsnet
from kcaps.models.deep_capsnet import deep_capsnet
from kcaps.models.efficient_capsnet import efficient_capsnet
from kcaps.registry import Registry

__all__ = ["BACKBONES", "HEADS", "MODELS", "CapsuleModel", "backbone_capsnet", "capsnet",
           "classifier", "get", "small_capsnet", "cnn_capsnet", "deep_capsnet",
           "efficient_capsnet"]

MODELS = Registry("model")
for _builder in (capsnet, small_capsnet, cnn_capsnet, deep_capsnet, efficient_capsnet):
    MODELS.register(_builder.__name__, _builder)
# "mobilenetv2_xnodr", "resnet50_dense", ...: backbone_capsnet by name, for `kcaps train --model`
for _backbone in BACKBONES:
    for _head in HEADS:
        MODELS.register(f"{_backbone}_{_head}",
                        functools.partial(backbone_capsnet, _backbone, _head))


def get(identifier):
    """A model builder by name (or a callable, passed through), e.g. `get("small_capsnet")`."""
    return MODELS.get(identifier)
