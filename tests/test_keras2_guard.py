"""`import kcaps` sets Keras 2 up, or says what to do if TensorFlow already chose Keras 3."""
import os
import subprocess
import sys

from conftest import ROOT


def _python(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environment.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_import_kcaps_first_selects_keras2():
    result = _python("import os, kcaps, tensorflow as tf; "
                     "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.layers.Layer.__module__)")
    assert result.returncode == 0, result.stderr[-2000:]
    flag, module = result.stdout.split()
    assert flag == "1" and module.startswith("tf_keras")


def test_tensorflow_imported_with_keras3_gives_a_clear_import_error():
    result = _python("import tensorflow as tf; tf.keras.layers.Layer; import kcaps")
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr and "Import kcaps before TensorFlow" in result.stderr


def test_deployment_modules_imported_first_select_keras2():
    # kcaps_tflite loads its submodules lazily; each must import kcaps before TensorFlow, or a
    # script that starts with `from kcaps_tflite import convert` loads models with Keras 3.
    result = _python("from kcaps_tflite import convert, lce, xnnpack_int8; import tensorflow as tf; "
                     "print(tf.keras.models.load_model.__module__)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1].startswith("tf_keras")
