"""backbone_capsnet: the XnODR / XnIDR paper's networks, their sizes, small inputs, bad input."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.slow
@pytest.mark.parametrize("backbone,head,expected", [
    ("mobilenetv2", "xnodr", 2_994_864),   # the paper's "2.99M"
    ("mobilenetv2", "dense", 3_045_258),
    ("resnet50", "xnidr", 23_862_320),
    ("resnet50", "dense", 26_162_698),
])
def test_trainable_parameters_are_the_authors_logged_counts(backbone, head, expected):
    model = kcaps.models.backbone_capsnet(backbone, head, (224, 224, 3), 10)
    assert _trainable(model) == expected


def test_capsule_head_structure_follows_the_authors():
    model = kcaps.models.backbone_capsnet("mobilenetv2", "dynamic", (32, 32, 3), 10)
    caps = model.get_layer("class_capsules")
    assert caps.routing == "dynamic" and caps.routing_iterations == 3
    assert caps.kernel.shape == (128, 8, 10, 16)  # 1024 channels -> 128 capsules of 8-D
    backbone = model.get_layer("mobilenetv2_1.00_32")
    assert [layer.trainable for layer in backbone.layers[-6:]] == [True] + [False] * 5
    dense = kcaps.models.backbone_capsnet("mobilenetv2", "dense", (32, 32, 3), 10)
    assert all(layer.trainable for layer in dense.get_layer("mobilenetv2_1.00_32").layers)
    unfrozen = kcaps.models.backbone_capsnet("mobilenetv2", "xnodr", (32, 32, 3), 10,
                                             frozen_backbone_layers=0)
    assert _trainable(unfrozen) > _trainable(model)


@pytest.mark.parametrize("backbone,head,shape,padded", [
    ("mobilenetv2", "xnodr", (28, 28, 1), True),
    ("resnet50", "xnidr", (32, 32, 3), False),
    ("cnn", "dense", (28, 28, 1), False),
    ("cnn", "dynamic", (36, 36, 1), False),
])
def test_small_inputs_work(backbone, head, shape, padded):
    model = kcaps.models.backbone_capsnet(backbone, head, shape, 10)
    x = np.random.default_rng(0).uniform(size=(2, *shape)).astype(np.float32)
    scores = model.predict(x, verbose=0)
    assert scores.shape == (2, 10) and np.all(np.isfinite(scores))
    assert ("pad_to_32" in [layer.name for layer in model.layers]) == padded


def test_upsample_enlarges_the_backbone_input():
    model = kcaps.models.backbone_capsnet("mobilenetv2", "xnodr", (28, 28, 1), 10, upsample=2)
    assert model.get_layer("upsample").output_shape == (None, 64, 64, 1)  # padded to 32, then x2


def test_models_registry_and_training_step():
    model = kcaps.models.get("cnn_xnidr")(input_shape=(12, 12, 1), num_classes=3,
                                          routing_iterations=2)
    assert model.name == "cnn_xnidr" and model.get_layer("class_capsules").routing_iterations == 2
    model.compile(tf.keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(size=(6, 12, 12, 1)).astype(np.float32)
    loss = model.fit(x, np.arange(6) % 3, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)


@pytest.mark.parametrize("kwargs,match", [
    ({"backbone": "vgg16"}, "unknown backbone 'vgg16'; valid backbones: cnn, mobilenetv2, resnet50"),
    ({"head": "em"}, "unknown head 'em'; valid heads: dense, dynamic, xnidr, xnodr"),
    ({"input_shape": (20, 20, 1)}, r"input of 20x20 is too small; the minimum is 28x28"),
    ({"backbone": "resnet50", "input_shape": (27, 40, 3)}, "the minimum is 28x28"),
    ({"backbone": "cnn", "input_shape": (8, 8, 1)}, "the minimum is 10x10"),
    ({"input_shape": (28, 28)}, "input_shape must be"),
    ({"frozen_backbone_layers": -1}, "frozen_backbone_layers"),
    ({"upsample": 0}, "`upsample`"),
    ({"bn_momentum": 1.0}, "bn_momentum"),
    ({"backbone": "cnn", "weights": "imagenet"}, "only for mobilenetv2 and resnet50"),
])
def test_bad_arguments_fail_clearly(kwargs, match):
    args = {"backbone": "mobilenetv2", "head": "xnodr", "input_shape": (32, 32, 3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kcaps.models.backbone_capsnet(**args)
