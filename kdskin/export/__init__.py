"""Deployment: ``.tflite`` conversion (fp32, dynamic-range, int8), checking, LiteRT inference.

- :mod:`kdskin.export.specs` -- the allowed kinds, int8 outputs and heads (no TensorFlow)
- :mod:`kdskin.export.convert` -- ``export_tflite``, ``representative_sample``
- :mod:`kdskin.export.centre` -- the exact input-centring rewrite of the first convolutions
- :mod:`kdskin.export.graph` -- a ``.tflite`` file's ops, op versions and float ops (flatbuffer)
- :mod:`kdskin.export.litert` -- ``TFLiteClassifier``: the LiteRT runtime (no TensorFlow)
- :mod:`kdskin.export.check` -- ``export_and_check`` (writes ``export.json``),
  ``evaluate_tflite_files``, ``keras_probs``, ``compare_quantizers``
- :mod:`kdskin.export.metadata` -- TFLite metadata (labels, normalization, licence, decision)
- :mod:`kdskin.export.metadata_flatbuffer` -- the metadata flatbuffer, written and read with
  the ``flatbuffers`` package (no MediaPipe)
- :mod:`kdskin.export.resize` -- ``PillowDownscale``: the app files' anti-aliased downscale
- :mod:`kdskin.export.resize_check` -- the resize-agreement table (OpenCV, MediaPipe)
- :mod:`kdskin.export.quantizer` -- the AI Edge Quantizer int8 path

Import order (downwards only): check -> convert -> centre, graph, specs, metadata,
resize, quantizer; metadata -> metadata_flatbuffer; check -> litert, resize_check.
The timing benchmark is :mod:`kdskin.bench`. Submodules import TensorFlow lazily or not at all;
import them directly.
"""
