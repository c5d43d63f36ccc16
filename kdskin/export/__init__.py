"""Deployment: .tflite conversion (fp32, dynamic-range, int8), LiteRT inference and timing.

- :mod:`kdskin.export.convert` -- ``export_tflite``, ``representative_sample``
- :mod:`kdskin.export.centre` -- the exact input-centring rewrite of the first convolutions
- :mod:`kdskin.export.litert` -- ``TFLiteClassifier``, ``evaluate_tflite_files``,
  ``export_and_check`` (writes ``export.json``)
- :mod:`kdskin.export.bench` -- ms/step timings and ``bench_run`` for a run directory

Submodules import TensorFlow lazily; import them directly.
"""
