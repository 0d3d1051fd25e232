"""`kcaps heads`: the XnODR paper's table from the command line and the library function."""
import dataclasses

import pytest

import kcaps
from kcaps_training import cli, head_report


def test_heads_command_prints_profiled_rows(capsys):
    assert cli.main(["heads", "--backbones", "cnn", "--heads", "dynamic,xnodr",
                     "--input-shape", "28,28,1"]) == 0
    out = capsys.readouterr().out
    header, _, dynamic, xnodr = out.strip().splitlines()[-4:]
    assert "binary_params" in header and "deployment_bytes" in header and "accuracy" not in header
    expected = kcaps.complexity.profile(
        kcaps.models.backbone_capsnet("cnn", "xnodr", (28, 28, 1), 10))
    cells = [c.strip() for c in xnodr.strip("|").split("|")]
    assert cells[:2] == ["cnn", "xnodr"]
    assert cells[3] == f"{expected['binary_params']:,}" == "163,840"  # 128 x 8 x 10 x 16
    assert cells[5] == f"{expected['binary_macs']:,}"
    assert f"{expected['deployment_bytes']:,}" in xnodr
    assert "| cnn | dynamic |" in dynamic and "| 0 |" in dynamic  # no binary parameters


def test_heads_command_rejects_unknown_names(capsys):
    assert cli.main(["heads", "--backbones", "vgg16"]) == 2
    assert "valid backbones: cnn, mobilenetv2, resnet50" in capsys.readouterr().err
    assert cli.main(["heads", "--multimnist"]) == 2
    assert "--multimnist needs --dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_report_trains_and_evaluates_when_given_a_dataset(real_digits):
    small = dataclasses.replace(real_digits, x_train=real_digits.x_train[:64],
                                y_train=real_digits.y_train[:64], x_test=real_digits.x_test[:64],
                                y_test=real_digits.y_test[:64])
    rows = head_report.head_report(["cnn"], ["xnodr"], data=small, epochs=1)
    assert 0.0 <= rows[0]["accuracy"] <= 1.0 and rows[0]["seconds_per_epoch"] > 0
    assert rows[0]["binary_params"] == 163_840
