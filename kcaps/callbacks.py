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
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
