"""Running ``.tflite`` classifiers with LiteRT (no TensorFlow, no Keras).

:class:`TFLiteClassifier` wraps ``ai_edge_litert.interpreter.Interpreter`` (or
``tflite_runtime.interpreter.Interpreter`` where ai-edge-litert has no wheel). It addresses the
input and output by their signature names ("image", "probs"), never by index (output order can
change after conversion, tensorflow#33303), and reads the input/output scale and zero point from
the interpreter instead of assuming them (tensorflow#53069).

The quantization helpers (:func:`quant_params`, :func:`quantize`, :func:`dequantize`) are copied
verbatim into ``tflite/classify.py`` (which runs without kdskin); ``tests/test_tflite_runtime.py``
checks that both copies stay identical. Exporting and checking files: :mod:`kdskin.export.check`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import INPUT_NAME, NUM_CLASSES, PROBS_NAME
from kdskin.errors import DataError, KdskinError, ModelError
from kdskin.export.quiet import native_stderr

INSTALL_HINT = ("pip install ai-edge-litert (or, on boards without an ai-edge-litert wheel, "
                "pip install tflite-runtime 'numpy<2')")


def interpreter_class() -> tuple[type, str]:
    """The LiteRT Interpreter class and the package it came from (ai_edge_litert first)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite_runtime"
    except ImportError:
        pass
    raise KdskinError(f"no TFLite runtime is installed: {INSTALL_HINT}")


# ---------------------------------------------------------------- copied into tflite/classify.py


def quant_params(details: Mapping[str, Any]) -> tuple[float, int]:
    """``(scale, zero_point)`` of a tensor from its interpreter details ((0.0, 0): float)."""
    params = details.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64).reshape(-1)
    zeros = np.asarray(params.get("zero_points", []), dtype=np.int64).reshape(-1)
    if scales.size:
        return float(scales[0]), int(zeros[0]) if zeros.size else 0
    scale, zero = details.get("quantization", (0.0, 0))
    return float(scale), int(zero)


def quantize(pixels: np.ndarray, dtype: Any, scale: float, zero: int) -> np.ndarray:
    """Pixels 0..255 (any shape) -> ``dtype`` values: ``round(x / scale + zero)``, clipped.

    A float32 ``dtype`` takes the pixels as they are; scale 0 means unquantized (1, 0).
    """
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return np.asarray(pixels).astype(np.float32, copy=False)
    scale, zero = (scale, zero) if scale else (1.0, 0)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(pixels).astype(np.float32) / scale + zero)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(raw: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """Raw output values -> float32: ``(q - zero) * scale`` (float32 input unchanged)."""
    raw = np.asarray(raw)
    if raw.dtype == np.float32:
        return raw
    return (raw.astype(np.float32) - zero) * np.float32(scale if scale else 1.0)


# ---------------------------------------------------------------- the classifier


class TFLiteClassifier:
    """A kdskin ``.tflite`` classifier: RGB 0..255 images in, 7 probabilities out.

    ``num_threads``: CPU threads for the interpreter (None: the runtime's default). The
    XNNPACK delegate is applied by default (float and int8 kernels).
    """

    def __init__(self, path: str | Path, num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: .tflite file not found; export one with "
                             f"kdskin.export.convert.export_tflite")
        interpreter_cls, self.runtime = interpreter_class()
        try:
            with native_stderr():  # drops LiteRT's "INFO: Created ... XNNPACK delegate" line
                self._interp = interpreter_cls(model_path=str(self.path), num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: cannot load as a TFLite model "
                             f"({' '.join(str(exc).split())[:200]}); re-export it") from None
        self.num_threads = num_threads
        self._in, self._out = self._resolve_io()
        shape = list(self._in["shape_signature"] if len(self._in.get("shape_signature", []))
                     else self._in["shape"])
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] < 1:
            raise ModelError(f"{self.path}: input must be (batch, S, S, 3), got {shape}; "
                             f"not a kdskin classifier")
        out_shape = list(self._out["shape"])
        if not out_shape or out_shape[-1] != NUM_CLASSES:
            raise ModelError(f"{self.path}: output must have {NUM_CLASSES} classes, got shape "
                             f"{out_shape}; not a kdskin classifier")
        self.input_size = int(shape[1])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.input_quantization = quant_params(self._in)
        self.output_quantization = quant_params(self._out)
        self._batch = -1

    def _resolve_io(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Input and output tensor details, found by signature name ("image", "probs")."""
        signatures = self._interp.get_signature_list()
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            runner = self._interp.get_signature_runner(key)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            del runner  # it holds the interpreter's internals; resizing refuses while it lives
        else:  # a model converted without signatures: only unambiguous single I/O is accepted
            ins = {d["name"]: d for d in self._interp.get_input_details()}
            outs = {d["name"]: d for d in self._interp.get_output_details()}
        if len(ins) != 1:
            raise ModelError(f"{self.path}: expected one input ('{INPUT_NAME}'), got "
                             f"{', '.join(ins) or 'none'}; not a kdskin classifier")
        if PROBS_NAME in outs:
            out = outs[PROBS_NAME]
        elif len(outs) == 1:
            out = next(iter(outs.values()))
        else:
            raise ModelError(f"{self.path}: no '{PROBS_NAME}' output among "
                             f"{', '.join(outs)}; export the model with to_deployable")
        return dict(next(iter(ins.values()))), dict(out)

    # ------------------------------------------------------------------ description

    def input_info(self) -> dict[str, Any]:
        scale, zero = self.input_quantization
        return {"dtype": self.input_dtype.name, "scale": scale, "zero_point": zero,
                "size": self.input_size}

    def output_info(self) -> dict[str, Any]:
        scale, zero = self.output_quantization
        return {"dtype": self.output_dtype.name, "scale": scale, "zero_point": zero,
                "classes": NUM_CLASSES}

    # ------------------------------------------------------------------ inference

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Pixels 0..255 -> the input tensor's dtype, quantized with its scale / zero point."""
        scale, zero = self.input_quantization
        if images.dtype == self.input_dtype and (self.input_dtype == np.float32
                                                 or (scale, zero) == (1.0, 0)):
            return images
        return quantize(images, self.input_dtype, scale, zero)

    def _set_batch(self, n: int) -> bool:
        """Resize for batches of ``n``; True when the interpreter was (re)allocated."""
        if n == self._batch:
            return False
        with native_stderr():
            self._interp.resize_tensor_input(self._in["index"],
                                             [n, self.input_size, self.input_size, 3])
            self._interp.allocate_tensors()
        self._batch = n
        return True

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """Run one prepared batch (already in the input dtype); return the raw output."""
        fresh = self._set_batch(len(batch))
        self._interp.set_tensor(self._in["index"], batch)
        if fresh:  # LiteRT applies the XNNPACK delegate (and logs INFO about it) on first use
            with native_stderr():
                self._interp.invoke()
        else:
            self._interp.invoke()
        return self._interp.get_tensor(self._out["index"])

    def predict(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities for ``images`` (N, S, S, 3) uint8 or float 0..255 RGB.

        Returns (N, 7) float32 in CLASSES order. A single image (S, S, 3) is accepted too.
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        size = self.input_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise DataError(f"{self.path.name}: images must be (N, {size}, {size}, 3) RGB "
                            f"0..255, got {images.shape}; resize with kdskin.data.images")
        out = np.empty((len(images), NUM_CLASSES), np.float32)
        prepared = self.prepare(images)
        scale, zero = self.output_quantization
        for start in range(0, len(images), max(1, batch_size)):
            raw = self.invoke(np.ascontiguousarray(prepared[start:start + batch_size]))
            raw = dequantize(raw.reshape(len(raw), -1), scale, zero)
            out[start:start + len(raw)] = raw
        return out


def tensor_io(path: str | Path) -> dict[str, dict[str, Any]]:
    """Signature input/output dtypes and quantization of a .tflite file.

    Returns ``{"input": {dtype, scale, zero_point, size}, "output": {dtype, scale, zero_point,
    classes}}``.
    """
    clf = TFLiteClassifier(path)
    return {"input": clf.input_info(), "output": clf.output_info()}
