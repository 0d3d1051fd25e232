"""kcaps.pruning.criteria: CHIP against its nuclear-norm definition, scores read on the layers."""
import numpy as np
import pytest
import tensorflow as tf

from kcaps import pruning
from pruning_helpers import RNG, _deep_capsnet, _images


def _numpy_chip(matrices):
    """CHIP written from its definition: mean over images of ||A||_* - ||A, row c zeroed||_*."""
    scores = np.zeros(matrices.shape[1])
    for a in matrices:
        total = np.linalg.norm(a, "nuc")
        for c in range(a.shape[0]):
            zeroed = a.copy()
            zeroed[c] = 0
            scores[c] += total - np.linalg.norm(zeroed, "nuc")
    return scores / len(matrices)


@pytest.mark.parametrize("shape", [(3, 6, 4), (3, 4, 9)])  # both Gram-matrix branches
def test_chip_scores_match_the_nuclear_norm_definition(shape):
    matrices = RNG.normal(size=shape)
    matrices[:, 1] = 2 * matrices[:, 0]  # a dependent row scores low
    np.testing.assert_allclose(pruning.chip_scores(matrices), _numpy_chip(matrices), atol=1e-8)


def test_data_driven_scores_read_the_layers_outputs():
    model = _deep_capsnet()
    x = _images(8)
    scores = pruning.unit_scores(model, ["conv1", "primary_capsules", "capsules_1"], "chip", x)
    probe = tf.keras.Model(model.inputs, model.get_layer("capsules_1").output)
    capsules = probe(x).numpy()  # (batch, capsules, dim): rows are capsules
    np.testing.assert_allclose(scores["capsules_1"], _numpy_chip(capsules), rtol=1e-6, atol=1e-9)
    maps = tf.keras.Model(model.inputs, model.get_layer("conv1").output)(x).numpy()
    np.testing.assert_allclose(scores["conv1"],
                               _numpy_chip(maps.reshape(8, -1, 16).transpose(0, 2, 1)),
                               rtol=1e-4, atol=1e-5)
    activity = pruning.unit_scores(model, ["capsules_1"], "activity", x)["capsules_1"]
    np.testing.assert_allclose(activity, np.linalg.norm(capsules, axis=-1).mean(0), rtol=1e-5)
