import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import kcaps
from conftest import ROOT
from kcaps_training import cli, distribute
from kcaps_training import train as recipe

SCRIPT = str(ROOT / "tests" / "distributed_run.py")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run_script(*args):
    """Run `tests/distributed_run.py` with `args` in a fresh process; fail with its stderr."""
    run = subprocess.run([sys.executable, SCRIPT, *map(str, args)], env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]


def test_unknown_strategy_is_rejected_before_training(capsys, tmp_path):
    assert cli.main(["train", "--strategy", "horovod", "--output", str(tmp_path)]) == 2
    assert "unknown strategy 'horovod'; valid strategies: default, mirrored, multiworker" in \
        capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing started


@pytest.mark.parametrize("tf_config,message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('["worker"]', "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "no 'task'"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "is not in its cluster"),
])
def test_bad_tf_config_is_rejected_before_training(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        recipe.TrainConfig(strategy="multiworker")


def test_missing_tf_config_says_what_to_set(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        recipe.TrainConfig(strategy="multiworker")


def test_unknown_precision_lists_valid_ones():
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        recipe.TrainConfig(precision="int4")


def test_adaptive_batch_is_accepted_under_a_strategy_if_replicas_get_examples():
    config = recipe.TrainConfig(strategy="mirrored", batch_policy="adabatch", warm_batch_size=2)
    config.check_replicas(2)
    with pytest.raises(ValueError, match=r"`warm_batch_size` \(2\) is smaller than the 4 replicas "
                                         r"of strategy 'mirrored'"):
        config.check_replicas(4)
    fixed = recipe.TrainConfig(strategy="mirrored", batch_size=2)
    with pytest.raises(ValueError, match=r"`batch_size` \(2\) is smaller than the 3 replicas"):
        fixed.check_replicas(3)


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_follows_the_single_device_loss(tmp_path):
    result = tmp_path / "result.json"
    _run_script("compare", result)
    runs = json.loads(result.read_text())
    assert runs["default"]["replicas"] == 1 and runs["mirrored"]["replicas"] == 2
    np.testing.assert_allclose(runs["mirrored"]["loss"], runs["default"]["loss"], rtol=1e-3)
    assert runs["default"]["loss"][-1] < runs["default"]["loss"][0]


@pytest.mark.slow
def test_warm_adabatch_under_mirrored_switches_batch_size_and_follows_one_device(tmp_path):
    result = tmp_path / "result.json"
    _run_script("adabatch", result)
    runs = json.loads(result.read_text())
    assert runs["mirrored"]["replicas"] == 2
    for name in ("default", "mirrored"):
        assert runs[name]["batch_size"] == [32, 32, 128], name
        assert runs[name]["steps"] == [16, 32, 36], name  # 512 examples: 16, 16, then 4 steps
    np.testing.assert_allclose(runs["mirrored"]["loss"], runs["default"]["loss"], rtol=1e-3)
    # the paper's warm batch 1 cannot be split over 2 replicas: refused before training starts
    assert "`warm_batch_size` (1) is smaller than the 2 replicas of strategy 'mirrored'" in \
        runs["error"]
    assert not runs["started"]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_local_workers_train_warm_adabatch_and_agree_on_the_weights(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, SCRIPT, "worker", str(tmp_path / f"w{index}.npz"),
             str(tmp_path / "run")], env=_env(TF_CONFIG=tf_config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errors = []
    try:
        for proc in procs:  # both must finish: the chief often ends before the other worker
            errors.append(proc.communicate(timeout=600)[1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, err in zip(procs, errors):
        assert proc.returncode == 0, err[-3000:]
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert int(w0["replicas"]) == 2
    for w in (w0, w1):  # WarmAdaBatch: global batch 32, then 128 (16 then 4 steps of 512)
        assert list(w["batch_size"]) == [32, 128] and list(w["steps"]) == [16, 20]
    arrays = [k for k in w0.files if k not in ("replicas", "batch_size", "steps")]
    assert arrays and all(np.array_equal(w0[k], w1[k]) for k in arrays)
    assert (tmp_path / "run" / "model.keras").is_file()  # the chief wrote the outputs
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_routing_close_to_float32_and_trains(policy):
    x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)
    reference = kcaps.models.small_capsnet()
    expected = reference.predict(x, verbose=0)
    try:
        tf.keras.mixed_precision.set_global_policy(policy)
        model = kcaps.models.small_capsnet()
        model.set_weights(reference.get_weights())
        lengths = model.predict(x, verbose=0)
        assert model.get_layer("class_capsules").compute_dtype == policy.split("_")[1]
        assert lengths.dtype == np.float32
        np.testing.assert_allclose(lengths, expected, atol=2e-2)
        np.testing.assert_array_equal(lengths.argmax(-1), expected.argmax(-1))
        model.compile("adam")
        history = model.fit(x, np.arange(8), epochs=2, verbose=0).history
        assert np.all(np.isfinite(history["loss"]))
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def test_precision_auto_picks_bfloat16_on_cpu():
    try:
        expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
        assert distribute.set_precision("auto") == expected
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_kcaps_callbacks_and_resume_under_mirrored_strategy(tmp_path):
    result_path = tmp_path / "result.json"
    _run_script("callbacks", result_path)
    result = json.loads(result_path.read_text())
    assert result["replicas"] == 2
    # tfmot: UpdatePruningStep under the strategy reaches the schedule's sparsity
    for name in ("conv1", "conv2", "primary_capsules", "class_capsules"):
        assert abs(result["sparsity"][name] - 0.5) < 0.01, name
    assert "prune_low_magnitude_class_capsules_inactive_fraction" in result["activity_keys"]
    # iterative channel pruning: 25% then 50% of every prunable layer, then shrunk
    for name, count in result["units_before"].items():
        assert result["units_after"][name] == count - count // 2, name


@pytest.mark.slow
def test_an_interrupted_mirrored_warm_adabatch_run_resumes_in_a_new_process(tmp_path):
    result_path = tmp_path / "result.json"
    for phase in ("first", "second"):
        _run_script("resume", result_path, phase)
    result = json.loads(result_path.read_text())
    assert result["replicas"] == 2
    # crashed after epoch 3 (the first of batch 128): only epoch 4 runs, at batch 128
    assert result["epochs"] == 1 and result["batch_size"] == [128]
    assert result["csv_epochs"] == [0, 1, 2, 3]
    assert result["csv_batch_size"] == [32, 32, 128, 128]
    assert result["steps"] == [16 + 16 + 4 + 4]
    lr, _ = kcaps.policies.warm_adabatch(512, epochs=4, warm_epochs=2, warm_batch_size=32,
                                         batch_size=128)
    assert result["lr"] == pytest.approx([float(lr(36))], rel=1e-5)  # the schedule at step 36
    assert not result["backup_left"]  # the finished run deleted its backup
