"""Running ``.tflite`` classifiers with LiteRT, and checking them against the Keras model.

:class:`TFLiteClassifier` wraps ``ai_edge_litert.interpreter.Interpreter`` (or
``tflite_runtime.interpreter.Interpreter`` where ai-edge-litert has no wheel). It addresses the
input and output by their signature names ("image", "probs"), never by index (output order can
change after conversion, tensorflow#33303), and reads the input/output scale and zero point from
the interpreter instead of assuming them (tensorflow#53069).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import INPUT_NAME, NUM_CLASSES, PROBS_NAME
from kdskin.errors import DataError, KdskinError, ModelError

INSTALL_HINT = ("pip install ai-edge-litert (or, on boards without an ai-edge-litert wheel, "
                "pip install tflite-runtime 'numpy<2')")


def _interpreter_class() -> tuple[type, str]:
    """The LiteRT Interpreter class and the package it came from."""
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


def _quant(details: Mapping[str, Any]) -> tuple[float, int]:
    params = details.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64).reshape(-1)
    zeros = np.asarray(params.get("zero_points", []), dtype=np.int64).reshape(-1)
    if scales.size:
        return float(scales[0]), int(zeros[0]) if zeros.size else 0
    scale, zero = details.get("quantization", (0.0, 0))
    return float(scale), int(zero)


class TFLiteClassifier:
    """A kdskin ``.tflite`` classifier: RGB 0..255 images in, 7 probabilities out.

    ``num_threads``: CPU threads for the interpreter (None: the runtime's default). The
    XNNPACK delegate is applied by default (float and int8 kernels).
    """

    def __init__(self, path: str | Path, num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: .tflite file not found; export one with "
                             f"kdskin.export.export_tflite")
        interpreter_cls, self.runtime = _interpreter_class()
        try:
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
        self.input_quantization = _quant(self._in)
        self.output_quantization = _quant(self._out)
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

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        """Pixels 0..255 -> the input tensor's dtype, quantized with its scale / zero point."""
        if self.input_dtype == np.float32:
            return images.astype(np.float32, copy=False)
        scale, zero = self.input_quantization
        if images.dtype == self.input_dtype and scale == 1.0 and zero == 0:
            return images
        if scale == 0.0:
            scale, zero = 1.0, 0
        info = np.iinfo(self.input_dtype)
        q = np.round(images.astype(np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _set_batch(self, n: int) -> None:
        if n != self._batch:
            self._interp.resize_tensor_input(self._in["index"],
                                             [n, self.input_size, self.input_size, 3])
            self._interp.allocate_tensors()
            self._batch = n

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """Run one prepared batch (already in the input dtype); return the raw output."""
        self._set_batch(len(batch))
        self._interp.set_tensor(self._in["index"], batch)
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
        prepared = self._prepare(images)
        scale, zero = self.output_quantization
        for start in range(0, len(images), max(1, batch_size)):
            raw = self.invoke(np.ascontiguousarray(prepared[start:start + batch_size]))
            raw = raw.reshape(len(raw), -1)
            if self.output_dtype != np.float32:
                raw = (raw.astype(np.float32) - zero) * (scale if scale else 1.0)
            out[start:start + len(raw)] = raw
        return out


# --------------------------------------------------------------------------- evaluation

#: Scalar metrics copied from kdskin.metrics.classification_metrics into export.json.
SCALAR_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1",
                                   "macro_auc", "melanoma_recall")


def keras_probs(model: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities (N, 7) of a kdskin Keras model (training or deployable)."""
    from kdskin.export.convert import deployable

    deploy = deployable(model)
    out = deploy.predict(np.asarray(images, dtype=np.float32), batch_size=batch_size, verbose=0)
    if isinstance(out, dict):
        out = out[PROBS_NAME]
    return np.asarray(out, dtype=np.float32)


def top1_ties(probs: np.ndarray) -> int:
    """How many rows of ``probs`` (N, 7) have their two largest values exactly equal.

    argmax breaks such ties towards the lower class index, so a quantized output with many
    ties is biased towards akiec/bcc/bkl; a float32 output from a float head has almost none.
    """
    top2 = np.sort(np.asarray(probs), axis=1)[:, -2:]
    return int(np.sum(top2[:, 0] == top2[:, 1]))


def _metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from kdskin.metrics import classification_metrics

    full = classification_metrics(labels, probs)
    return {k: full[k] for k in SCALAR_METRICS if k in full}


def evaluate_tflite_files(files: Mapping[str, str | Path], keras_model: Any, images: np.ndarray,
                          labels: np.ndarray, num_threads: int | None = None) -> dict[str, Any]:
    """Evaluate each ``.tflite`` file and the Keras model on the same (test) split.

    ``files``: {kind: path} (non-.tflite entries such as "labels" are ignored); ``images``
    (N, S, S, 3) 0..255; ``labels`` (N,) int. Returns ``{"keras": metrics + params,
    "tflite": {kind: metrics + agreement (top-1 with Keras), max_abs_prob_diff, size_bytes,
    input/output dtype and quantization}, "int8_drop": {accuracy, macro_f1}}`` (drops are
    Keras minus int8, as fractions; present when an "int8" file is evaluated).
    """
    images = np.asarray(images)
    labels = np.asarray(labels).astype(int).reshape(-1)
    reference = keras_probs(keras_model, images)
    ref_top = reference.argmax(axis=1)
    n_params = int(keras_model.count_params())
    result: dict[str, Any] = {
        "n_images": int(len(images)),
        "keras": {**_metrics(labels, reference), "params": n_params,
                  "float_size_bytes": n_params * 4},
        "tflite": {},
    }
    for kind, path in files.items():
        path = Path(path)
        if path.suffix != ".tflite":
            continue
        clf = TFLiteClassifier(path, num_threads=num_threads)
        start = time.perf_counter()
        probs = clf.predict(images)
        seconds = time.perf_counter() - start
        result["tflite"][kind] = {
            **_metrics(labels, probs),
            "agreement": float(np.mean(probs.argmax(axis=1) == ref_top)),
            "top1_ties": top1_ties(probs),
            "max_abs_prob_diff": float(np.abs(probs - reference).max()),
            "size_bytes": path.stat().st_size,
            "input": clf.input_info(),
            "output": clf.output_info(),
            "eval_seconds": round(seconds, 3),
        }
    if "int8" in result["tflite"]:
        int8, ref = result["tflite"]["int8"], result["keras"]
        result["int8_drop"] = {k: float(ref[k] - int8[k]) for k in ("accuracy", "macro_f1")}
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as JSON (NaN -> null) atomically: temp file in the same folder, replace."""
    from kdskin.export.convert import _atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, (json.dumps(_json_safe(dict(data)), indent=2) + "\n").encode())
    return path


def export_and_check(model: Any, out_dir: str | Path, train_images: np.ndarray,
                     train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                     cfg: Any, seed: int = 0, extra: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Export fp32 / dynamic / int8 files, evaluate them on the test split, write export.json.

    ``cfg``: ``Config.export`` (representative_samples, per_channel, max_int8_drop,
    int8_output, int8_head, centre_input). The int8 model is calibrated on a class-stratified
    sample of the TRAINING split only. ``int8_within_tolerance`` is True when int8 loses at most
    ``cfg.max_int8_drop`` (a fraction) of accuracy and of macro F1 against Keras.
    ``extra`` entries are added to the result (e.g. what a re-export replaced).
    Returns the dict written to ``out_dir/export.json``.
    """
    import tensorflow as tf

    from kdskin.constants import CLASSES
    from kdskin.export.convert import (
        FILE_NAMES,
        export_tflite,
        float_ops,
        op_versions,
        representative_indices,
    )

    out_dir = Path(out_dir)
    train_images = np.asarray(train_images)
    train_labels = np.asarray(train_labels).astype(int).reshape(-1)
    if len(train_images) != len(train_labels):
        raise DataError(f"{len(train_images)} training images but {len(train_labels)} labels")
    picked = representative_indices(train_labels, cfg.representative_samples, seed=seed)
    representative = train_images[picked]
    rep_counts = np.bincount(train_labels[picked], minlength=NUM_CLASSES)
    info: dict[str, Any] = {}
    head = getattr(cfg, "int8_head", "float")
    start = time.perf_counter()
    files = export_tflite(model, out_dir, representative, per_channel=cfg.per_channel,
                          int8_output=getattr(cfg, "int8_output", "float32"), info=info,
                          centre_input=getattr(cfg, "centre_input", True), int8_head=head)
    convert_seconds = time.perf_counter() - start
    evaluation = evaluate_tflite_files(files, model, test_images, test_labels)
    tolerance = float(cfg.max_int8_drop)
    drop = evaluation.get("int8_drop", {})
    result = {
        "model": getattr(model, "name", "model"),
        "files": {kind: {"file": FILE_NAMES[kind], "size_bytes": path.stat().st_size,
                         "op_versions": op_versions(path)}
                  for kind, path in files.items() if kind in FILE_NAMES},
        "labels": files["labels"].name,
        "conversion": {**info, "seconds": round(convert_seconds, 2),
                       "tensorflow": tf.__version__, "per_channel": bool(cfg.per_channel)},
        "int8": {
            "input": evaluation["tflite"]["int8"]["input"],
            "output": evaluation["tflite"]["int8"]["output"],
            "head": head,
            "float_ops": float_ops(files["int8"]),
            "representative": {"n": int(len(representative)), "split": "train", "seed": seed,
                               "per_class": dict(zip(CLASSES, rep_counts.tolist(), strict=True))},
        },
        "evaluation": evaluation,
        "max_int8_drop": tolerance,
        "int8_within_tolerance": bool(drop) and all(v <= tolerance + 1e-12
                                                    for v in drop.values()),
        **(extra or {}),
    }
    write_json(out_dir / "export.json", result)
    return result
