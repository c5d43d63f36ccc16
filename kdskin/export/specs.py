"""Allowed export settings, declared once (no TensorFlow, no Keras: the config imports this).

``kdskin.config.ExportConfig`` validates ``export.int8_output`` and ``export.int8_head`` against
these tuples; :func:`kdskin.export.convert.export_tflite` uses the same ones.
"""

from __future__ import annotations

#: Conversion kinds and their file names.
KINDS: tuple[str, ...] = ("fp32", "dynamic", "int8")
FILE_NAMES: dict[str, str] = {kind: f"model_{kind}.tflite" for kind in KINDS}
#: Output tensor type of the int8 file: float32 probabilities, or uint8 (scale 1/256).
INT8_OUTPUTS: tuple[str, ...] = ("float32", "uint8")
#: "float": the 7-value head after the last dense layers runs in float32; "int8": all integer.
INT8_HEADS: tuple[str, ...] = ("float", "int8")
#: ``export.quantizer``: how the int8 file is made (the converter's private calibrate-then-quantize
#: path, or Google's AI Edge Quantizer on the float file: kdskin.export.quantizer).
QUANTIZERS: tuple[str, ...] = ("converter", "ai_edge_quantizer")
#: Sub-folder of the export folder holding the app files (larger input, anti-aliased downscale
#: inside: kdskin.export.resize).
APP_DIR = "app"
