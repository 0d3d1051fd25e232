"""kcaps_tflite: deployment of kcaps models (TFLite / LiteRT, TFLite Micro, Larq Compute Engine)."""
