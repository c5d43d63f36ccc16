"""Keras classifier -> ``.tflite`` files: float32, dynamic-range and integer int8.

Every file holds the whole deployed model: preprocessing (inside the Keras model) and the final
softmax (the model is wrapped by ``to_deployable``), so it takes RGB pixels 0..255 at the model's
input size and returns 7 probabilities in ``CLASSES`` order under the signature output ``"probs"``.
Before conversion the first convolution after the input rescaling is rewritten, exactly, to see
centred pixels (``x - 128``; :mod:`kdskin.export.centre`), which shrinks its int8 weight error.

The int8 file has int8 weights (per-channel for convolutions by default) and int8 activations
in every layer with weights, calibrated on a class-stratified sample of the *training* split.
Its input is **uint8** and takes raw 0..255 pixels: the calibration sample is anchored so the
input range is exactly 0..255, which makes the input scale 1.0 and zero point 0 (checked after
conversion and written to ``export.json``; runtimes still read them). Its output is **float32**
probabilities by default, which removes the most common deployment bug, reading uint8 scores as
probabilities (tensorflow#53069).

``int8_head="float"`` (default): the *head*, the element-wise ops between the last weighted
layers and the output on (batch, 7) tensors (averaging the exits, adding the fusion logits,
softmax), runs in float32 on the dequantized 7-value logits. An int8 logits tensor has a step of
range/255 (~0.06 for logits spanning -8..8), so images whose two best classes are closer than
that come out *tied*, and argmax then picks the lower class index: on the cpu-config student
15 of the 22 test disagreements with Keras were such ties, all broken the same way. The float
head costs a few dozen float operations per image. ``int8_head="int8"`` keeps every op in
integer (needed with ``int8_output="uint8"``, for integer-only accelerators); its uint8 output
has scale 1/256, zero point 0.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdskin import compat
from kdskin.console import progress
from kdskin.constants import CLASSES, LABELS_FILE
from kdskin.errors import DataError, KdskinError, ModelError
from kdskin.export.graph import head_nodes, nodes_named
from kdskin.export.quiet import quiet
from kdskin.export.specs import (
    APP_DIR,
    FILE_NAMES,
    INT8_HEADS,
    INT8_OUTPUTS,
    KINDS,
    QUANTIZERS,
    int8_io_problem,
)
from kdskin.io import atomic_write_bytes, atomic_write_text
from kdskin.memory import release
from kdskin.models.contract import check_classifier, deployable
from kdskin.models.inputs import float_front_of
from kdskin.models.layers import BORDER_FILL_NAME, COLOUR_CONSTANCY_NAME

#: Names of the ops at the input that the int8 file keeps in float32, before its first
#: quantize op: the in-model downscale of the app files (kdskin.export.resize: exact
#: anti-aliasing, then the same int8 body as model_int8.tflite), the border-fill layer
#: (kdskin.models.layers.BorderFill: a mask from cumulative sums and a per-image mean colour)
#: and the colour-constancy layer (kdskin.models.layers.ColourConstancy: a per-image p-norm,
#: power and division, whose int8 version would round the small powers of dark pixels to zero).
FLOAT_FRONT: tuple[str, ...] = ("pillow_downscale", BORDER_FILL_NAME, COLOUR_CONSTANCY_NAME)

# --------------------------------------------------------------------------- calibration data


def representative_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a class-stratified sample of ``n`` items of ``labels`` (N,) int, shuffled.

    Every class present gets at least one item; the rest is shared in proportion to the class
    frequencies (largest remainder, capped by the class size). All N indices if n >= N.
    """
    labels = np.asarray(labels).astype(int).reshape(-1)
    if len(labels) == 0:
        raise DataError("no training images to calibrate the int8 model with")
    if n < 1:
        raise DataError(f"representative sample size must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    if n >= len(labels):
        return rng.permutation(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):  # not enough room for one per class: take the most frequent ones
        keep = np.sort(np.argsort(-counts, kind="stable")[:n])
        classes, counts = classes[keep], counts[keep]
    quota = np.ones(len(classes), int)
    spare = n - len(classes)
    if spare:
        extra = spare * (counts - 1) / max((counts - 1).sum(), 1)
        add = np.minimum(np.floor(extra).astype(int), counts - 1)
        left = spare - int(add.sum())
        order = np.argsort(-(extra - np.floor(extra)), kind="stable")
        while left > 0:  # largest remainder first, skipping classes already used up
            progressed = False
            for k in order:
                if left > 0 and add[k] < counts[k] - 1:
                    add[k] += 1
                    left -= 1
                    progressed = True
            if not progressed:
                break
        quota += add
    picked = np.concatenate([rng.choice(np.flatnonzero(labels == c), q, replace=False)
                             for c, q in zip(classes, quota, strict=True)])
    return rng.permutation(picked)


def representative_sample(images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0
                          ) -> np.ndarray:
    """A class-stratified sample of ``n`` images (from the TRAINING split) for calibration.

    ``images`` (N, S, S, 3) uint8 or float 0..255, ``labels`` (N,) int. Returns
    (min(n, N), S, S, 3) with the dtype of ``images`` (see :func:`representative_indices`).
    """
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"representative images must be (N, S, S, 3), got {images.shape}")
    if len(labels) != len(images):
        raise DataError(f"{len(images)} representative images but {len(labels)} labels")
    return images[representative_indices(labels, n, seed)]


def _calibration_batches(representative: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's ``representative_dataset``: one float32 image per step, 0..255.

    The first image gets one pixel 0 and one pixel 255 so the calibrated input range is exactly
    0..255, i.e. input scale 1.0 / zero point 0 and raw uint8 pixels can be fed as they are.
    """
    raw = np.asarray(representative)
    data = raw.astype(np.float32)
    if np.issubdtype(raw.dtype, np.floating) and data.max(initial=0.0) <= 1.0:
        raise DataError("representative images look normalised to 0..1; pass raw 0..255 pixels "
                        "(preprocessing is inside the model)")
    data = data.copy()
    data[0, 0, 0, :] = 0.0
    data[0, 0, -1, :] = 255.0

    def gen() -> Iterator[list[np.ndarray]]:
        for image in data:
            yield [image[None]]
    return gen


# --------------------------------------------------------------------------- conversion


def _converter(model: Any, method: str, saved_model_dir: Path | None) -> Any:
    import tensorflow as tf

    if method == "from_keras_model":
        return tf.lite.TFLiteConverter.from_keras_model(model)
    assert saved_model_dir is not None
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))


def _configure(converter: Any, kind: str, representative: np.ndarray | None, per_channel: bool,
               int8_output: str, info: dict[str, Any]) -> None:
    """Set the converter up for ``kind``; private flags go through :mod:`kdskin.compat`."""
    import tensorflow as tf

    if kind == "fp32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if not per_channel:
        compat.require_converter_flag(converter, "_experimental_disable_per_channel", True,
                                      "per_channel=False (export.per_channel: false)")
    if kind == "dynamic":
        # Per-channel hybrid FULLY_CONNECTED is op version 12, which tflite-runtime 2.14 (still
        # on many boards) cannot load; per-tensor dense weights keep it loadable there.
        reason = compat.set_converter_flag(
            converter, "_experimental_disable_per_channel_quantization_for_dense_layers", True)
        if reason is not None:
            info.setdefault("compat", {})["dynamic_dense_per_tensor"] = (
                f"{reason}; the dynamic-range file keeps per-channel dense weights and may "
                f"need a newer runtime than tflite-runtime 2.14")
    if kind == "int8":
        converter.representative_dataset = _calibration_batches(representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8 if int8_output == "uint8" else tf.float32


def _int8_with_float_head(converter: Any, per_channel: bool, info: dict[str, Any]) -> bytes:
    """Calibrate with ``converter`` (configured for int8), then quantize everything but the head.

    Uses the calibrate-only mode and ``mlir_quantize`` with a node denylist, the machinery
    behind ``tf.lite.experimental.QuantizationDebugger`` (both private: :mod:`kdskin.compat`).
    If either is missing or refuses the call, falls back to the all-integer conversion and says
    why in ``info["int8_head_fallback"]``.
    """
    import tensorflow as tf

    quantize, reason = compat.mlir_quantize()
    if reason is None:
        reason = compat.set_converter_flag(converter, "_experimental_calibrate_only", True)
    if reason is None:
        assert quantize is not None
        calibrated = converter.convert()
        head = head_nodes(calibrated)
        front = [name for marker in FLOAT_FRONT  # downscale, colour constancy: float
                 for name in nodes_named(calibrated, marker)]
        try:
            flatbuffer = quantize(calibrated, disable_per_channel=not per_channel,
                                  input_data_type=tf.uint8, output_data_type=tf.float32,
                                  denylisted_nodes=head + front)
        except (AttributeError, TypeError) as exc:  # the private API changed under us
            reason = one_line(exc)
            compat.set_converter_flag(converter, "_experimental_calibrate_only", False)
        else:
            info["int8_float_head"] = head
            if front:
                info["int8_float_front"] = front
            return flatbuffer
    info["int8_head_fallback"] = reason
    return converter.convert()


def write_labels(out_dir: Path) -> Path:
    """Write ``labels.txt`` (one class a line, CLASSES order) into ``out_dir``."""
    return atomic_write_text(Path(out_dir) / LABELS_FILE, "\n".join(CLASSES) + "\n")


def _with_metadata(flatbuffer: bytes, metadata: Any, info: dict[str, Any]) -> bytes:
    """``flatbuffer`` with kdskin's TFLite metadata (:mod:`kdskin.export.metadata`); when no
    writer is available, the bytes unchanged and the reason in ``info["metadata"]``."""
    if metadata is None:
        return flatbuffer
    from kdskin.export.metadata import MetadataUnavailable, add_metadata

    try:
        out = add_metadata(flatbuffer, metadata)
    except MetadataUnavailable as exc:
        info["metadata"] = {"written": False, "reason": str(exc)}
        return flatbuffer
    info.setdefault("metadata", {"written": True, "name": metadata.name,
                                 "version": metadata.version, "decision": bool(metadata.decision)})
    return out


def _convert_all(deploy: Any, model_name: str, out_dir: Path, representative: np.ndarray | None,
                 kinds: Sequence[str], per_channel: bool, int8_output: str, method: str,
                 info: dict[str, Any], int8_head: str, quantizer: str, metadata: Any,
                 verbose: bool, show_progress: bool) -> dict[str, Path]:
    """Convert ``deploy`` to every kind in ``out_dir``; see :func:`export_tflite`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = info.setdefault("method", {})
    paths: dict[str, Path] = {}
    plain: dict[str, bytes] = {}  # flatbuffers before metadata (AI Edge Quantizer reads fp32)
    order = list(kinds)
    if quantizer == "ai_edge_quantizer" and "int8" in order:
        order = ["fp32", *[k for k in order if k != "fp32"]]
    with tempfile.TemporaryDirectory(prefix="kdskin_savedmodel_") as tmp:
        saved_model_dir: Path | None = None
        # One SavedModel serves every kind: from_keras_model writes a new one per conversion
        # (TF 2.21: ExportArchive + write_out, about 80% of a conversion's time).
        current = "saved_model" if method in ("auto", "saved_model") else "from_keras_model"
        steps = progress(order, desc="converting", unit="file") if show_progress else order
        for kind in steps:
            if kind == "int8" and quantizer == "ai_edge_quantizer":
                from kdskin.export.quantizer import quantize_with_aeq

                with quiet(verbose):
                    flatbuffer = quantize_with_aeq(plain["fp32"], representative)
                methods[kind] = "ai_edge_quantizer"
            else:
                while True:
                    try:
                        with quiet(verbose):
                            if current == "saved_model" and saved_model_dir is None:
                                saved_model_dir = Path(tmp) / "saved_model"
                                deploy.export(str(saved_model_dir), format="tf_saved_model",
                                              verbose=False)
                            converter = _converter(deploy, current, saved_model_dir)
                            _configure(converter, kind, representative, per_channel,
                                       int8_output, info)
                            if kind == "int8" and int8_head == "float":
                                flatbuffer = _int8_with_float_head(converter, per_channel, info)
                            else:
                                flatbuffer = converter.convert()
                        break
                    except KdskinError:
                        raise
                    except Exception as exc:  # converter errors are many types; keep one line
                        if method == "auto" and current == "saved_model":
                            info.setdefault("fallback_reason", one_line(exc))
                            current = "from_keras_model"
                            continue
                        raise ModelError(f"model '{model_name}': {kind} TFLite conversion "
                                         f"failed ({current}): {one_line(exc)}") from None
                methods[kind] = current
                del converter  # its loaded graph is not held while the next kind converts
                release()
            plain[kind] = flatbuffer
            if kind in kinds:
                paths[kind] = atomic_write_bytes(out_dir / FILE_NAMES[kind],
                                                 _with_metadata(flatbuffer, metadata, info))
    return {kind: paths[kind] for kind in kinds}


def upsample(images: np.ndarray, factor: int) -> np.ndarray:
    """(N, S, S, 3) -> (N, factor*S, factor*S, 3): each pixel repeated (calibration images of
    the app files, whose in-model downscale brings them back to about the originals)."""
    return np.repeat(np.repeat(np.asarray(images), factor, axis=1), factor, axis=2)


def _check_request(model: Any, representative: np.ndarray | None, kinds: Sequence[str],
                   int8_output: str, method: str, int8_head: str, quantizer: str,
                   app_factor: int, app_kinds: Sequence[str]) -> int:
    """Check :func:`export_tflite`'s arguments before any conversion (one-line
    :class:`ModelError` / :class:`DataError`); returns the model's input size."""
    unknown = [k for k in (*kinds, *(app_kinds if app_factor else ())) if k not in KINDS]
    if unknown or not kinds:
        raise ModelError(f"unknown export kinds {unknown or list(kinds)}; choose from "
                         f"{', '.join(KINDS)}")
    if int8_output not in INT8_OUTPUTS:
        raise ModelError(f"int8_output must be one of {', '.join(INT8_OUTPUTS)}, got "
                         f"{int8_output!r}")
    if int8_head not in INT8_HEADS:
        raise ModelError(f"int8_head must be one of {', '.join(INT8_HEADS)}, got {int8_head!r}")
    if quantizer not in QUANTIZERS:
        raise ModelError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}")
    problem = int8_io_problem(int8_head, int8_output)
    if problem and "int8" in kinds:
        raise ModelError(problem)
    if method not in ("auto", "from_keras_model", "saved_model"):
        raise ModelError(f"method must be auto, from_keras_model or saved_model, got {method!r}")
    if app_factor < 0:
        raise ModelError(f"app_factor must be 0 (no app files) or a positive integer, got "
                         f"{app_factor}")
    size, _ = check_classifier(model)
    wants_int8 = "int8" in kinds or bool(app_factor and "int8" in app_kinds)
    front = float_front_of(model)
    if wants_int8 and int8_head == "int8" and front:
        raise ModelError(f"model '{model.name}' has input layers ({', '.join(front)}) that run "
                         f"in float32 at the int8 file's input; int8_head='int8' (every op "
                         f"integer) cannot hold them: use int8_head='float'")
    if wants_int8:
        if representative is None or len(representative) == 0:
            raise DataError("the int8 export needs representative training images; pass "
                            "representative=representative_sample(train_images, ...)")
        rep_shape = tuple(np.shape(representative))
        if len(rep_shape) != 4 or rep_shape[1:] != (size, size, 3):
            raise DataError(f"representative images must be (N, {size}, {size}, 3), got "
                            f"{rep_shape}")
    return size


def _write_app_files(deploy: Any, name: str, out_dir: Path, representative: np.ndarray | None,
                     app_factor: int, size: int, app_kinds: Sequence[str],
                     common: dict[str, Any]) -> dict[str, Any]:
    """The app files (``app_kinds`` with a ``app_factor``-times larger input and the downscale
    inside) in ``out_dir/app``; returns what :func:`export_tflite` records as ``info["app"]``."""
    from kdskin.export.resize import with_downscale

    app_info: dict[str, Any] = {}
    app_dir = out_dir / APP_DIR
    app_rep = upsample(representative, app_factor) if representative is not None else None
    app_paths = _convert_all(with_downscale(deploy, app_factor), name, app_dir,
                             app_rep, app_kinds, info=app_info, **common)
    write_labels(app_dir)
    return {"factor": int(app_factor), "input_size": int(app_factor * size), "dir": APP_DIR,
            "downscale": "Pillow bilinear (anti-aliased), in the model",
            "files": {kind: f"{APP_DIR}/{path.name}" for kind, path in app_paths.items()},
            "conversion": app_info}


def export_tflite(model: Any, out_dir: str | Path, representative: np.ndarray | None,
                  kinds: Sequence[str] = KINDS, per_channel: bool = True,
                  int8_output: str = "float32", method: str = "auto",
                  info: dict[str, Any] | None = None, centre_input: bool = True,
                  int8_head: str = "float", verbose: bool = False,
                  show_progress: bool = False, quantizer: str = "converter",
                  metadata: Any = None, app_factor: int = 0,
                  app_kinds: Sequence[str] = ("fp32", "int8")) -> dict[str, Path]:
    """Convert a kdskin classifier to ``.tflite`` files in ``out_dir``; write ``labels.txt``.

    ``model``: a training model (outputs with "logits") or a deployable one ("probs" only);
    it is wrapped by ``to_deployable`` so every file ends in the softmax. ``representative``:
    (N, S, S, 3) uint8 or float 0..255 images from the TRAINING split (needed for "int8"; see
    :func:`representative_sample`). ``method``: "auto" (``model.export`` once, then
    ``from_saved_model`` for every kind; ``from_keras_model`` if that fails, which freezes the
    model when it cannot be saved), "from_keras_model" (a SavedModel written per file by the
    converter itself) or "saved_model". ``info``, if given, receives the method used per kind,
    the centred convolutions (``centre_input``, see :mod:`kdskin.export.centre`) and the int8
    head's float ops (``int8_head``: "float" or "int8", see the module docstring), and why a
    step that needs a private API was skipped (``centre_input_skipped``, ``int8_head_fallback``,
    ``compat``).
    ``quantizer``: "converter" (default) or "ai_edge_quantizer" (the int8 file made from the
    float one by :mod:`kdskin.export.quantizer`). ``metadata``: a
    :class:`kdskin.export.metadata.ModelInfo` written into every file as TFLite metadata (if no
    writer is installed, ``info["metadata"]`` says why and the files have none).
    ``app_factor`` > 0: also write ``app_kinds`` into ``out_dir/app`` with a ``factor``-times
    larger input and Pillow's anti-aliased downscale inside (:mod:`kdskin.export.resize`), for
    apps that resize images themselves; ``info["app"]`` lists them.
    ``verbose``: let Keras/converter output through; ``show_progress``: a bar on stderr.

    Returns ``{kind: path}`` plus ``"labels"`` (the app files are in ``info["app"]``). Files
    are written atomically; a failed conversion leaves no partial file behind. Raises
    :class:`ModelError` for a model that is not a kdskin classifier or cannot be converted,
    :class:`kdskin.compat.CompatError` when ``per_channel=False`` and the converter lost the
    flag for it.
    """
    size = _check_request(model, representative, kinds, int8_output, method, int8_head,
                          quantizer, app_factor, app_kinds)
    deploy = deployable(model)
    info = {} if info is None else info
    if centre_input:
        from kdskin.export.centre import centre_first_convs

        try:
            deploy, info["centred_convs"] = centre_first_convs(deploy)
        except compat.CompatError as exc:  # the graph walk is a private Keras API
            info["centred_convs"] = []
            info["centre_input_skipped"] = str(exc)
    out_dir = Path(out_dir)
    if quantizer != "converter":
        info["quantizer"] = quantizer
    common = dict(per_channel=per_channel, int8_output=int8_output, method=method,
                  int8_head=int8_head, quantizer=quantizer, metadata=metadata,
                  verbose=verbose, show_progress=show_progress)
    paths = _convert_all(deploy, model.name, out_dir, representative, kinds, info=info,
                         **common)
    paths["labels"] = write_labels(out_dir)
    if app_factor:
        info["app"] = _write_app_files(deploy, model.name, out_dir, representative,
                                       app_factor, size, app_kinds, common)
    return paths


def one_line(exc: BaseException) -> str:
    """``"ErrorType: message"`` on one line, at most about 300 characters."""
    text = " ".join(str(exc).split())
    text = text if len(text) < 300 else text[:297] + "..."
    return f"{exc.__class__.__name__}: {text}"


__all__ = ["APP_DIR", "FILE_NAMES", "INT8_HEADS", "INT8_OUTPUTS", "KINDS", "QUANTIZERS",
           "export_tflite", "one_line", "representative_indices", "representative_sample",
           "upsample", "write_labels"]
