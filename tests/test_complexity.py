"""kcaps.complexity: parameters, MACs and size of capsule networks, and larq left untouched."""
import os
import subprocess
import sys

LARQ_STATE = """
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import larq, larq.models
def state():
    return {key: id(value) for key, value in vars(larq.models).items()}
before = state()
import kcaps
after_import = state()
import tensorflow as tf
x = tf.keras.Input((4, 8))
model = tf.keras.Model(x, kcaps.layers.CapsuleDense(3, 4, routing="xnodr")(x))
figures = kcaps.complexity.profile(model)
kcaps.complexity.summary(model, print_fn=lambda line: None)
after_profile = state()
def changed(after):
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
print("IMPORT", changed(after_import))
print("PROFILE", changed(after_profile))
print("MACS", figures["binary_macs"], larq.models.ModelProfile(model).op_count("mac", 1))
"""


def test_import_kcaps_and_profiling_leave_larq_as_it_was():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", LARQ_STATE], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["IMPORT"] == "[]" and lines["PROFILE"] == "[]", lines
    # kcaps counts the layer's 4 x 8 x 3 x 4 binary MACs; larq's own profiler, untouched, counts 0
    assert lines["MACS"] == "384 0", lines["MACS"]
