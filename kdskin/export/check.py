"""Export and check: convert a Keras classifier, score every ``.tflite`` file against it, and
write ``export.json``.

The files are scored on the same (test) split as the Keras model, with LiteRT
(:class:`~kdskin.export.litert.TFLiteClassifier`): metrics, top-1 agreement with Keras, the
largest probability difference, top-1 ties, size and the input/output quantization read back
from the interpreter. The int8 model is calibrated on a class-stratified sample of the
*training* split only (:func:`~kdskin.export.convert.representative_indices`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.console import progress
from kdskin.constants import CLASSES, NUM_CLASSES, PROBS_NAME
from kdskin.errors import DataError, KdskinError
from kdskin.export.convert import (
    APP_DIR,
    FILE_NAMES,
    export_tflite,
    one_line,
    representative_indices,
)
from kdskin.export.graph import float_ops, op_versions
from kdskin.export.litert import TFLiteClassifier
from kdskin.export.quiet import quiet
from kdskin.io import atomic_write_bytes, write_json
from kdskin.models.contract import count_params, deployable
from kdskin.trust.model_card import sha256_file

#: Scalar metrics copied from kdskin.metrics.classification_metrics into export.json.
SCALAR_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1",
                                   "macro_auc", "melanoma_recall")
#: The file :func:`export_and_check` writes beside the ``.tflite`` files.
EXPORT_JSON = "export.json"


def keras_probs(model: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities (N, 7) of a kdskin Keras model (training or deployable)."""
    from kdskin.memory import predict_in_chunks

    out = predict_in_chunks(deployable(model), images, batch_size)
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
                          labels: np.ndarray, num_threads: int | None = None,
                          show_progress: bool = True) -> dict[str, Any]:
    """Evaluate each ``.tflite`` file and the Keras model on the same (test) split.

    ``files``: {kind: path} (non-.tflite entries such as "labels" are ignored); ``images``
    (N, S, S, 3) 0..255; ``labels`` (N,) int. Returns ``{"keras": metrics + params,
    "tflite": {kind: metrics + agreement (top-1 with Keras), max_abs_prob_diff, size_bytes,
    input/output dtype and quantization}, "int8_drop": {accuracy, macro_f1}}`` (drops are
    Keras minus int8, as fractions; present when an "int8" file is evaluated).
    ``show_progress``: a bar per file on stderr (terminals only).
    """
    images = np.asarray(images)
    labels = np.asarray(labels).astype(int).reshape(-1)
    reference = keras_probs(keras_model, images)
    ref_top = reference.argmax(axis=1)
    n_params = count_params(keras_model)
    result: dict[str, Any] = {
        "n_images": int(len(images)),
        "keras": {**_metrics(labels, reference), "params": n_params,
                  "float_size_bytes": n_params * 4},
        "tflite": {},
    }
    tflite = [(kind, Path(path)) for kind, path in files.items() if Path(path).suffix == ".tflite"]
    steps = progress(tflite, desc="checking .tflite", unit="file") if show_progress else tflite
    for kind, path in steps:
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


def _tensorflow_version() -> str | None:
    for package in ("tensorflow", "tensorflow-cpu"):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return None


def model_info(model: Any, decision: Mapping[str, Any] | None = None,
               overrides: Mapping[str, Any] | None = None) -> Any:
    """The :class:`~kdskin.export.metadata.ModelInfo` of ``model`` for the TFLite metadata:
    its name, ``kdskin <version>``, the decision rules (``decision.json`` content) if any;
    ``overrides`` replace fields (e.g. ``license`` for a model trained on other data)."""
    from kdskin import __version__
    from kdskin.export.metadata import ModelInfo

    fields = {"name": getattr(model, "name", "model"), "version": f"kdskin {__version__}",
              "decision": dict(decision) if decision else None, **dict(overrides or {})}
    return ModelInfo(**fields)


def _file_entry(path: Path) -> dict[str, Any]:
    from kdskin.export.metadata import read_metadata

    entry = {"file": path.name, "size_bytes": path.stat().st_size, "sha256": sha256_file(path),
             "op_versions": op_versions(path)}
    try:
        meta = read_metadata(path)
    except KdskinError as exc:  # no schema module to read it back with
        entry["metadata"] = {"read": False, "reason": str(exc)}
        return entry
    entry["metadata"] = (None if meta is None else
                         {"labels": meta.get("labels"), "normalization":
                          meta["input"].get("normalization"),
                          "decision": "decision" in meta, "version": meta["version"]})
    return entry


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.asarray(a).argmax(1) == np.asarray(b).argmax(1)))


def compare_quantizers(model: Any, files: Mapping[str, Path], representative: np.ndarray,
                       test_images: np.ndarray, test_labels: np.ndarray, cfg: Any,
                       verbose: bool = False) -> dict[str, Any]:
    """Both int8 paths side by side on the test split: ``{"chosen", "converter": {...},
    "ai_edge_quantizer": {...}}``, each with accuracy, macro F1, top-1 agreement with the fp32
    file and with Keras, ties, input dtype/scale and the representable pixel range; an entry
    ``{"skipped": reason}`` where a path is unavailable. The chosen file is ``files["int8"]``;
    the other one is made in a temporary folder and not kept."""
    import tempfile

    from kdskin.export.metadata import strip_metadata
    from kdskin.export.quantizer import QuantizerUnavailable, input_range, quantize_with_aeq

    chosen = cfg.quantizer
    reference = keras_probs(model, test_images)
    fp32 = TFLiteClassifier(files["fp32"]).predict(test_images) if "fp32" in files else None
    out: dict[str, Any] = {"chosen": chosen, "n_images": int(len(test_images))}

    def score(path: Path) -> dict[str, Any]:
        clf = TFLiteClassifier(path)
        probs = clf.predict(test_images)
        low, high = input_range(clf)
        return {**_metrics(test_labels, probs), "agreement_keras": _agreement(probs, reference),
                "agreement_fp32": None if fp32 is None else _agreement(probs, fp32),
                "top1_ties": top1_ties(probs), "input": clf.input_info(),
                "input_range": [low, high], "clips_pixels": bool(low > 0 or high < 255),
                "size_bytes": path.stat().st_size}

    out[chosen] = score(files["int8"])
    other = "ai_edge_quantizer" if chosen == "converter" else "converter"
    with tempfile.TemporaryDirectory(prefix="kdskin_quantizer_") as tmp:
        path = Path(tmp) / f"model_int8_{other}.tflite"
        try:
            with quiet(verbose):
                if other == "ai_edge_quantizer":
                    flat = strip_metadata(Path(files["fp32"]).read_bytes())
                    atomic_write_bytes(path, quantize_with_aeq(flat, representative))
                else:
                    made = export_tflite(model, tmp, representative, kinds=("int8",),
                                         per_channel=cfg.per_channel,
                                         int8_output=cfg.int8_output,
                                         centre_input=cfg.centre_input,
                                         int8_head=cfg.int8_head, verbose=verbose)
                    path = made["int8"]
            out[other] = score(path)
        except QuantizerUnavailable as exc:
            out[other] = {"skipped": str(exc)}
        except KdskinError as exc:
            out[other] = {"skipped": one_line(exc)}
    return out


def _resize_agreement(files: Mapping[str, Path], app_files: Mapping[str, Path],
                      folder: str | Path | None, limit: int, verbose: bool) -> dict[str, Any]:
    """The resize-agreement table of the int8 and fp32 files (and each app file against its
    plain file) on the real images in ``folder`` (:mod:`kdskin.export.resize_check`); a
    ``skipped`` entry without a folder."""
    if not folder:
        return {"skipped": "no image folder: set export.resize_check_images (or "
                           "tools/resize_agreement.py)"}
    from kdskin.export.resize_check import resize_agreement

    pairs = {FILE_NAMES[k]: (files[k], files[k]) for k in ("int8", "fp32") if k in files}
    for kind, path in app_files.items():
        if kind in files:
            pairs[f"{APP_DIR}/{FILE_NAMES[kind]}"] = (path, files[kind])
    with quiet(verbose):
        return resize_agreement(pairs, folder, limit=limit)


def export_and_check(model: Any, out_dir: str | Path, train_images: np.ndarray,
                     train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                     cfg: Any, seed: int = 0, extra: Mapping[str, Any] | None = None,
                     verbose: bool = False, show_progress: bool = True,
                     resize_images: str | Path | None = None,
                     metadata_fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Export fp32 / dynamic / int8 files, evaluate them on the test split, write export.json.

    ``cfg``: ``Config.export`` (representative_samples, per_channel, max_int8_drop,
    int8_output, int8_head, centre_input, quantizer, compare_quantizers, metadata,
    app_input_factor, app_kinds, resize_check_images, resize_check_limit). The int8 model is
    calibrated on a class-stratified sample of the TRAINING split only.
    ``int8_within_tolerance`` is True when int8 loses at most ``cfg.max_int8_drop`` (a
    fraction) of accuracy and of macro F1 against Keras. ``extra`` entries are added to the
    result (e.g. what a re-export replaced); ``extra["decision"]`` (the decision rules) also
    goes into every file's metadata and beside the app files. ``resize_images`` (else
    ``cfg.resize_check_images``): a folder of real images on which the resize-agreement table
    is measured (:mod:`kdskin.export.resize_check`). ``metadata_fields``: fields of the metadata's
    :class:`~kdskin.export.metadata.ModelInfo` to override (e.g. ``license``). ``verbose``: let
    library output through; ``show_progress``: bars on stderr (terminals only).
    Returns the dict written to ``out_dir/export.json``; steps skipped because a private API or
    an optional package is missing are recorded (``conversion``, ``quantizers``,
    ``resize_agreement``).
    """
    out_dir = Path(out_dir)
    train_images = np.asarray(train_images)
    train_labels = np.asarray(train_labels).astype(int).reshape(-1)
    if len(train_images) != len(train_labels):
        raise DataError(f"{len(train_images)} training images but {len(train_labels)} labels")
    picked = representative_indices(train_labels, cfg.representative_samples, seed=seed)
    representative = train_images[picked]
    rep_counts = np.bincount(train_labels[picked], minlength=NUM_CLASSES)
    info: dict[str, Any] = {}
    head = cfg.int8_head
    decision = (extra or {}).get("decision")
    meta = model_info(model, decision, metadata_fields) if cfg.metadata else None
    if meta is None:
        info["metadata"] = {"written": False, "reason": "export.metadata is false"}
    start = time.perf_counter()
    files = export_tflite(model, out_dir, representative, per_channel=cfg.per_channel,
                          int8_output=cfg.int8_output, info=info,
                          centre_input=cfg.centre_input, int8_head=head, verbose=verbose,
                          show_progress=show_progress, quantizer=cfg.quantizer, metadata=meta,
                          app_factor=cfg.app_input_factor, app_kinds=tuple(cfg.app_kinds))
    convert_seconds = time.perf_counter() - start
    app = info.pop("app", None)
    with quiet(verbose):
        evaluation = evaluate_tflite_files(files, model, test_images, test_labels,
                                           show_progress=show_progress)
    tolerance = float(cfg.max_int8_drop)
    drop = evaluation.get("int8_drop", {})
    result = {
        "model": getattr(model, "name", "model"),
        "files": {kind: _file_entry(path) for kind, path in files.items() if kind in FILE_NAMES},
        "labels": files["labels"].name,
        "conversion": {**info, "seconds": round(convert_seconds, 2),
                       "tensorflow": _tensorflow_version(), "per_channel": bool(cfg.per_channel),
                       "quantizer": cfg.quantizer},
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
    if app is not None:
        app_files = {kind: out_dir / rel for kind, rel in app["files"].items()}
        app["files"] = {kind: {**_file_entry(path), "file": app["files"][kind]}
                        for kind, path in app_files.items()}
        if decision:
            from kdskin.export.metadata import DECISION_FILE

            write_json(out_dir / APP_DIR / DECISION_FILE, dict(decision))
        result["app"] = app
    if cfg.compare_quantizers and "int8" in files:
        result["quantizers"] = compare_quantizers(model, files, representative, test_images,
                                                  test_labels, cfg, verbose=verbose)
    result["resize_agreement"] = _resize_agreement(
        files, app_files if app is not None else {}, resize_images or cfg.resize_check_images,
        cfg.resize_check_limit, verbose)
    write_json(out_dir / EXPORT_JSON, result)
    return result


#: Where :func:`reject_int8` moves a failing int8 file (inside the export folder).
REJECTED_DIR = "rejected"


def reject_int8(out_dir: str | Path, result: Mapping[str, Any]) -> None:
    """With ``export.require_int8_within_tolerance``: move an export's failing int8 files (the
    file and its app twin) to ``out_dir/rejected/`` so nothing ships where an app looks for
    it, and raise a one-line :class:`KdskinError` saying why. Does nothing when the check
    passed."""
    from kdskin.export.fidelity import int8_check_failed, int8_check_line

    if not int8_check_failed(result):
        return
    out_dir = Path(out_dir)
    rejected = out_dir / REJECTED_DIR
    rejected.mkdir(exist_ok=True)
    for path in (out_dir / FILE_NAMES["int8"], out_dir / APP_DIR / FILE_NAMES["int8"]):
        if path.is_file():
            path.replace(rejected / (path.name if path.parent == out_dir
                                     else f"{APP_DIR}_{path.name}"))
    raise KdskinError(f"{out_dir / FILE_NAMES['int8']}: the int8 file does not decide like its "
                      f"Keras model ({int8_check_line(result)}); with "
                      f"export.require_int8_within_tolerance it was moved to {rejected} and "
                      f"nothing ships: raise export.max_int8_drop or fix the quantization")
