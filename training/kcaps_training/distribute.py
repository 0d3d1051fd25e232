"""Distribution strategies and mixed precision for the training recipe.

`make_strategy(name)` returns TensorFlow's own strategy, so training runs the way TensorFlow users
already run it:

- `default`: no distribution (the current device).
- `mirrored`: `tf.distribute.MirroredStrategy` over the visible GPUs, or - without GPUs - over
  the logical CPU devices (split the CPU with `split_cpu(n)` before TensorFlow starts its runtime).
- `multiworker`: `tf.distribute.MultiWorkerMirroredStrategy` configured by the `TF_CONFIG`
  environment variable (`{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}`).

Everything is checked before any training starts: unknown names and a `TF_CONFIG` that does not
parse or lacks this worker's entry are ValueErrors saying what is wrong.
"""
import json
import os
import tempfile

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")


def check_strategy_name(name):
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}")


def parse_tf_config(text=None):
    """Parse and check `TF_CONFIG`; return `(cluster, task)`.

    Raises ValueError when the variable is missing, is not JSON, or does not name this task
    inside the cluster.
    """
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text:
        raise ValueError("strategy 'multiworker' needs the TF_CONFIG environment variable "
                         '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}})')
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text!r}") from error
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {text!r}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG has no 'cluster' mapping of job names to addresses: {text!r}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no 'task' with 'type' and 'index': {text!r}")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(
            f"TF_CONFIG task {task} is not in its cluster {cluster}")
    return cluster, task


def split_cpu(replicas):
    """Split the CPU into `replicas` logical devices (must run before TensorFlow's runtime starts)."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"cpu replicas must be a positive integer, got {replicas!r}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError as error:
        raise ValueError(
            f"cannot split the CPU into {replicas} devices once TensorFlow has started: {error}"
        ) from error


_multi_worker = None


def make_strategy(name):
    """The `tf.distribute` strategy called `name` (see the module doc).

    `multiworker` must be created before TensorFlow runs its first op (collective ops are
    configured at program start-up); it is made once per process and reused.
    """
    global _multi_worker
    check_strategy_name(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if _multi_worker is None:
        parse_tf_config()
        _multi_worker = tf.distribute.MultiWorkerMirroredStrategy()
    return _multi_worker


def is_chief(strategy):
    """True on the worker that writes the run's outputs (worker 0, or no cluster at all)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def worker_output_dir(output_dir, strategy):
    """The chief writes into `output_dir`; other workers into a temporary directory of their own
    (Keras' multi-worker saving pattern: every worker must save, only the chief's copy is kept)."""
    if is_chief(strategy):
        return output_dir
    return tempfile.mkdtemp(prefix=f"kcaps-worker{strategy.cluster_resolver.task_id}-")


def set_precision(name):
    """Set the global Keras dtype policy; `auto` means mixed_float16 on GPU, mixed_bfloat16 on CPU.

    kcaps computes the squash, the norms, the routing logits and softmax and the losses in
    float32 whatever the policy, and its models emit capsule lengths in float32.
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
    if name == "auto":
        name = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    tf.keras.mixed_precision.set_global_policy(name)
    return name
