"""Keras callbacks of kcaps.

>>> import kcaps
>>> timer = kcaps.callbacks.EpochTimer()   # adds `epoch_seconds` to the logs and the History
"""
import time

import tensorflow as tf

_register = tf.keras.utils.register_keras_serializable(package="kcaps")


class EpochTimer(tf.keras.callbacks.Callback):
    """Writes each epoch's wall-clock seconds into the logs as `epoch_seconds`.

    The training time of FasTrCaps is measured this way: seconds per epoch, summed up to the
    epoch of interest. Time spent in validation is included, as in `model.fit`'s own epoch.
    Also writes `epoch_cpu_seconds`, the CPU seconds of this process (all its threads): unlike
    wall-clock time it hardly grows when other processes compete for the cores, so runs on a
    shared machine stay comparable.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
            logs["epoch_cpu_seconds"] = time.process_time() - self._cpu_start
