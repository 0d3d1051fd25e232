"""kcaps.complexity: parameters, MACs and size of capsule networks, and larq left untouched."""
import os
import subprocess
import sys

import larq
import tensorflow as tf

import kcaps

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


def _summary_text(model):
    lines = []
    kcaps.complexity.summary(model, print_fn=lines.append)
    return "\n".join(lines)


def test_larq_summary_counts_binary_parameters_and_macs():
    """Hand count: 12 capsules x 8-D -> 5 x 6-D, 3 iterations (N J K = 12 x 5 x 6 = 360)."""
    x_in = tf.keras.Input((12, 8))
    layer = kcaps.layers.CapsuleDense(5, 6, routing="xnodr", name="caps")
    model = tf.keras.Model(x_in, layer(x_in))
    assert layer.macs() == {1: 12 * 8 * 5 * 6,                 # binary u_hat products
                            32: 2 * 360 + 3 * 360 + 2 * 360}   # K, alpha; 3 sums; 2 agreements
    profile = kcaps.complexity.ModelProfile(model)
    assert profile.weight_count(bitwidth=1) == 2880 and profile.weight_count(bitwidth=32) == 0
    assert profile.op_count("mac", 1) == 2880 and profile.op_count("mac", 32) == 2520
    text = _summary_text(model)
    assert "1-bit MACs" in text and "32-bit MACs" in text
    row = next(line for line in text.splitlines() if line.strip("| ").startswith("caps"))
    assert "2880" in row and "2520" in row and "0.35" in row  # 2880 bits = 0.35 kB


def test_xnidr_and_primary_capsules_macs_and_profile():
    image = tf.keras.Input((9, 9, 2))
    primary = kcaps.layers.PrimaryCapsules(3, 4, kernel_size=3, strides=2, name="primary")(image)
    caps = kcaps.layers.CapsuleDense(5, 6, routing="xnidr", routing_iterations=3, name="caps")
    model = tf.keras.Model(image, caps(primary))
    n = 4 * 4 * 3  # 48 input capsules of 4-D
    conv_macs = 3 * 3 * 2 * 12 * 16  # kernel x 16 positions
    assert model.get_layer("primary").macs() == {32: conv_macs}
    njk = n * 5 * 6
    assert caps.macs() == {32: n * 4 * 30 + 3 * njk + 2 * (njk + 2 * n * 5), 1: 2 * njk}
    figures = kcaps.complexity.profile(model)
    assert figures["binary_params"] == 0 and figures["binary_macs"] == 2 * njk
    assert figures["float_macs"] == conv_macs + caps.macs()[32]
    assert figures["float_params"] == figures["params"] == 3 * 3 * 2 * 12 + 12 + n * 4 * 30


def test_profile_counts_larq_layers_and_xnodr_scaling_factors():
    image = tf.keras.Input((6, 6, 1))
    h = tf.keras.layers.Conv2D(16, 3, name="conv")(image)  # larq's own count: 144 x 16 positions
    h = tf.keras.layers.Reshape((32, 8))(h)
    model = tf.keras.Model(image, kcaps.layers.CapsuleDense(2, 4, routing="xnodr")(h))
    figures = kcaps.complexity.profile(model)
    assert figures["binary_params"] == 32 * 8 * 2 * 4
    assert figures["float_params"] == 9 * 16 + 16
    njk = 32 * 2 * 4
    assert figures["binary_macs"] == njk * 8
    assert figures["float_macs"] == 9 * 16 * 16 + 2 * njk + 3 * njk + 2 * njk
    # binary kernel in bits, conv kernel and bias in float32, alpha one float per (i, j, d)
    assert figures["deployment_bytes"] == (njk * 8 + 32 * (160 + njk)) // 8
