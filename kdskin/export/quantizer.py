"""The alternative int8 path: Google's AI Edge Quantizer (``ai-edge-quantizer``, no TensorFlow).

kdskin's default int8 file comes from the TFLite converter (:mod:`kdskin.export.convert`), which
relies on private converter APIs for its float head (see :mod:`kdskin.compat`). AI Edge
Quantizer quantizes the *float* ``.tflite`` file through a public recipe API instead:
``static_wi8_ai8`` (int8 weights, int8 activations, min/max calibration). Chosen with
``export.quantizer: ai_edge_quantizer``; the converter stays the default while it is more
accurate (``export.json`` compares both under ``quantizers``).

Its input range comes from the calibration data like every activation's: with the default
recipe and ordinary images the observed maximum pixel was 228, so brighter pixels *clipped*
(input scale 0.8946). Its min/max calibration *averages* each batch's range, so anchoring one
image (the converter path's way) is not enough: :func:`anchored` gives every calibration image
one pixel 0 and one pixel 255, and the input tensor's range is then set to exactly 0..255
(scale 1.0: no pixel value clips; checked after quantization with :func:`input_range`).
The AEQ file's input is **int8** (zero point -128): feed ``pixel - 128``; the runtimes read the
scale and zero point from the tensor (:func:`kdskin.export.litert.quantize`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from kdskin.constants import INPUT_NAME
from kdskin.errors import KdskinError, ModelError
from kdskin.export.specs import QUANTIZERS

INSTALL_HINT = "pip install 'kdskin[deploy]' (ai-edge-quantizer)"


class QuantizerUnavailable(KdskinError):
    """ai-edge-quantizer is not installed."""


def _aeq() -> tuple[Any, Any]:
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as exc:
        raise QuantizerUnavailable(f"ai-edge-quantizer does not import "
                                   f"({exc.__class__.__name__}: {exc}): {INSTALL_HINT}") from None
    return quantizer, recipe


def anchored(images: np.ndarray) -> np.ndarray:
    """float32 copy of ``images`` (N, S, S, 3) 0..255 in which every image has a 0 and a 255
    pixel in every channel (two corner pixels), so each calibration batch spans 0..255."""
    data = np.asarray(images, dtype=np.float32).copy()
    if len(data) == 0:
        raise ModelError("AI Edge Quantizer needs representative images to calibrate with")
    data[:, 0, 0, :] = 0.0
    data[:, 0, -1, :] = 255.0
    return data


def _signature(fp32: bytes) -> tuple[str, str, str]:
    """(signature key, input name, input tensor name) of a float .tflite file."""
    from kdskin.export.litert import interpreter_class

    interpreter_cls, _ = interpreter_class()
    interp = interpreter_cls(model_content=bytes(fp32))
    signatures = interp.get_signature_list()
    if not signatures:
        raise ModelError("the float .tflite file has no signature; re-export it")
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    inputs = interp.get_signature_runner(key).get_input_details()
    name = INPUT_NAME if INPUT_NAME in inputs else next(iter(inputs))
    return key, name, str(inputs[name]["name"])


def quantize_with_aeq(fp32: bytes, representative: np.ndarray, anchor: bool = True) -> bytes:
    """An int8 (``static_wi8_ai8``) flatbuffer of the float file ``fp32`` by AI Edge Quantizer.

    ``representative``: (N, S, S, 3) 0..255 TRAINING images for calibration; ``anchor``: make
    the input range exactly 0..255 (:func:`anchored`; False reproduces the default behaviour,
    which clips bright pixels). Raises :class:`QuantizerUnavailable` without the package and
    :class:`ModelError` when it fails.
    """
    quantizer, recipe = _aeq()
    key, name, tensor = _signature(fp32)
    data = anchored(representative) if anchor else np.asarray(representative, np.float32)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for image in data:
            yield {name: image[None]}

    try:
        qt = quantizer.Quantizer(bytearray(fp32), recipe.static_wi8_ai8())
        calibration = qt.calibrate({key: list(batches())}, num_threads=1)
        if anchor and tensor in calibration:
            qsv = calibration[tensor]
            calibration[tensor] = {**qsv, "min": np.zeros_like(qsv["min"]),
                                   "max": np.full_like(qsv["max"], 255.0)}
        result = qt.quantize(calibration, enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelError(f"AI Edge Quantizer failed: {exc.__class__.__name__}: "
                         f"{' '.join(str(exc).split())[:200]}") from None
    if result.quantized_model is None:
        raise ModelError("AI Edge Quantizer returned no model")
    return bytes(result.quantized_model)


def input_range(source: Any) -> tuple[float, float]:
    """The pixel range (lowest, highest) a quantized input tensor can represent.

    ``(q_min - zero) * scale, (q_max - zero) * scale`` for an integer input; (-inf, inf) for a
    float one. A kdskin file must cover 0..255 or pixels clip.
    """
    from kdskin.export.litert import TFLiteClassifier

    clf = source if isinstance(source, TFLiteClassifier) else TFLiteClassifier(source)
    if clf.input_dtype == np.float32:
        return float("-inf"), float("inf")
    scale, zero = clf.input_quantization
    info = np.iinfo(clf.input_dtype)
    scale = scale or 1.0
    return float((info.min - zero) * scale), float((info.max - zero) * scale)


__all__ = ["QUANTIZERS", "QuantizerUnavailable", "anchored", "input_range", "quantize_with_aeq"]
