"""A simulated crash for resume tests: an exception at the end of a chosen epoch.

Raised after `BackupAndRestore` saved that epoch (put `StopAfter` after it in the callbacks), so a
rerun of the same training resumes at the next epoch.
"""
import tensorflow as tf


class Interrupt(Exception):
    pass


class StopAfter(tf.keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt()
