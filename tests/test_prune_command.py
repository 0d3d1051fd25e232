"""`kcaps prune`: prune a saved model, fine-tune, save and report."""
import json

import pytest
import tensorflow as tf

import kcaps
from kcaps_training import cli


@pytest.fixture()
def saved_model(tmp_path):
    model = kcaps.models.cnn_capsnet(conv_filters=(8, 16), kernel_sizes=(5, 3), strides=(2, 2))
    path = tmp_path / "model.keras"
    model.save(path)
    return path


@pytest.mark.slow
def test_prune_writes_a_smaller_fine_tuned_model(saved_model, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert cli.main(["prune", str(saved_model), "--ratio", "0.5", "--dataset", "digits",
                     "--epochs", "1", "--verbose", "0", "--output", str(out)]) == 0
    assert "parameters" in capsys.readouterr().out
    small = tf.keras.models.load_model(out / "model.keras")
    assert small.get_layer("conv2").filters == 8 and small.get_layer("primary_capsules").capsule_types == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["parameters"] == small.count_params() < metrics["before"]["parameters"]
    assert (out / "log.csv").is_file()


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.5"], r"pruning ratio must be a number in [0, 1), got 1.5"),
    (["--layer-ratio", "bn1=0.5"], "'bn1' (BatchNormalization) is not prunable"),
    (["--layer-ratio", "conv1"], "expects LAYER=RATIO"),
    ([], "give --ratio"),
])
def test_bad_prune_arguments_fail_with_a_clear_message(saved_model, tmp_path, capsys, args, message):
    assert cli.main(["prune", str(saved_model), "--dataset", "digits", "--epochs", "0",
                     "--output", str(tmp_path / "x"), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_model_file_is_named(tmp_path, capsys):
    assert cli.main(["prune", str(tmp_path / "nope.keras"), "--ratio", "0.5"]) == 2
    assert "model file not found" in capsys.readouterr().err
