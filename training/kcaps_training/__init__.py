"""The kcaps application: datasets, training recipes and the `kcaps` command line.

`training` uses `kcaps` (the library) and `kcaps_tflite` (deployment); the library never imports
this package.
"""
import kcaps  # noqa: F401  (sets up Keras 2 before anything imports TensorFlow)
