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


def int8_io_problem(head: str, output: str, prefix: str = "") -> str | None:
    """The one rule between the int8 file's head and its output type: a float head gives
    float32 probabilities, so a uint8 output needs ``int8_head=int8``. The message (keys with
    ``prefix``, e.g. ``"export."``), or None when the pair is allowed."""
    if head == "float" and output == "uint8":
        return (f"{prefix}int8_head 'float' gives float32 probabilities; with "
                f"{prefix}int8_output=uint8 set {prefix}int8_head=int8")
    return None
