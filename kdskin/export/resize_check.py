"""How much a prediction depends on who resizes the image: the agreement table of export.json.

Every kdskin model is trained and checked on images resized by Pillow's anti-aliased bilinear
filter (:func:`kdskin.data.images.to_rgb_array`). :func:`resize_agreement` runs ``.tflite``
files on *original* images resized by other filters that real apps use and reports, per file
and per filter, the top-1 agreement with the reference (the model file of the same kind on
kdskin's own resize), the largest probability difference and, for a labelled folder (HAM10000
or ISIC 2018 layout), the accuracy:

- ``pillow_bilinear``: Pillow BILINEAR (anti-aliased), kdskin's own resize;
- ``opencv_linear``: OpenCV ``INTER_LINEAR`` (4 neighbours, no anti-aliasing);
- ``opencv_area``: OpenCV ``INTER_AREA`` (box average);
- ``nearest``: OpenCV ``INTER_NEAREST`` (Android ``createScaledBitmap(..., false)`` alike);
- ``mediapipe``: MediaPipe Tasks' ``ImageClassifier`` end to end on the original image (its own
  resizing and inference; needs the file's metadata, :mod:`kdskin.export.metadata`).

Filters whose library is missing (OpenCV, MediaPipe) are listed under ``skipped`` with the
reason. Files with a larger input (the app files of :mod:`kdskin.export.resize`) are fed the
same originals resized to *their* input size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import NUM_CLASSES
from kdskin.errors import DataError, KdskinError

#: Resize filters measured, in table order.
METHODS: tuple[str, ...] = ("pillow_bilinear", "opencv_linear", "opencv_area", "nearest",
                            "mediapipe")
DESCRIPTIONS: dict[str, str] = {
    "pillow_bilinear": "Pillow BILINEAR, anti-aliased (kdskin.data.images.to_rgb_array)",
    "opencv_linear": "OpenCV cv2.resize INTER_LINEAR (no anti-aliasing)",
    "opencv_area": "OpenCV cv2.resize INTER_AREA (box average)",
    "nearest": "OpenCV cv2.resize INTER_NEAREST",
    "mediapipe": "MediaPipe Tasks ImageClassifier on the original image (its own resizing)",
}


class ResizerUnavailable(KdskinError):
    """A resize library (OpenCV, MediaPipe) is not installed; the table says why."""


# --------------------------------------------------------------------------- images


def labelled_images(folder: str | Path, limit: int | None = None
                    ) -> tuple[list[Path], np.ndarray | None]:
    """Image paths of ``folder`` and their labels (None when it is not a labelled dataset).

    A HAM10000 or ISIC 2018 folder gives labels (:func:`kdskin.data.datasets.read_dataset`);
    any other folder is searched for image files. ``limit``: the first ``limit`` images.
    """
    from kdskin.data.datasets import read_dataset
    from kdskin.data.images import collect_images
    from kdskin.data.specs import FORMATS

    for fmt in FORMATS:
        try:
            table = read_dataset(folder, fmt, strict=False).table
        except (DataError, ValueError, OSError, KeyError):
            continue
        table = table.sort_values("image_id").iloc[:limit]
        return [Path(p) for p in table["path"]], table["label"].to_numpy().astype(int)
    paths = collect_images([folder])[:limit]
    return paths, None


def load_original(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, EXIF-rotated, not resized."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.load()
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ResizerUnavailable("OpenCV is not installed (pip install opencv-python-headless, "
                                 "or mediapipe, which brings it)") from None
    return cv2


def resizer(method: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """``f(image (H, W, 3) uint8, size) -> (size, size, 3) uint8`` for a non-MediaPipe method."""
    if method == "pillow_bilinear":
        from PIL import Image

        from kdskin.data.images import to_rgb_array

        return lambda image, size: to_rgb_array(Image.fromarray(image), size)
    flags = {"opencv_linear": "INTER_LINEAR", "opencv_area": "INTER_AREA",
             "nearest": "INTER_NEAREST"}
    if method not in flags:
        raise KdskinError(f"unknown resize method {method!r}; choose from {', '.join(METHODS)}")
    cv2 = _cv2()
    flag = getattr(cv2, flags[method])
    return lambda image, size: cv2.resize(image, (size, size), interpolation=flag)


def mediapipe_probs(path: str | Path, originals: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 7) scores of MediaPipe Tasks' ImageClassifier on each original image.

    The file must carry TFLite metadata (labels; normalization for float inputs). Raises
    :class:`ResizerUnavailable` when mediapipe does not import.
    """
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
    except ImportError as exc:
        raise ResizerUnavailable(f"mediapipe does not import ({exc.__class__.__name__}: "
                                 f"{exc}); pip install 'kdskin[deploy]'") from None
    from kdskin.export.quiet import native_stderr

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=-1)
    out = np.zeros((len(originals), NUM_CLASSES), np.float32)
    with native_stderr(), vision.ImageClassifier.create_from_options(options) as classifier:
        for i, image in enumerate(originals):
            frame = mp.Image(image_format=mp.ImageFormat.SRGB,
                             data=np.ascontiguousarray(image, dtype=np.uint8))
            for cat in classifier.classify(frame).classifications[0].categories:
                out[i, cat.index] = cat.score
    return out


# --------------------------------------------------------------------------- the table


def _accuracy(labels: np.ndarray | None, probs: np.ndarray) -> float | None:
    return None if labels is None else float(np.mean(probs.argmax(axis=1) == labels))


def resize_agreement(files: Mapping[str, tuple[str | Path, str | Path]], folder: str | Path,
                     methods: Sequence[str] = METHODS, limit: int | None = None,
                     num_threads: int | None = None) -> dict[str, Any]:
    """The agreement table (see the module docstring) of ``files`` on the images of ``folder``.

    ``files``: ``{label: (file, reference file)}``; the reference (a file of the model's own
    input size) runs on kdskin's resize. Returns ``{"images", "n_images", "labelled",
    "methods": {method: description}, "skipped": {method: reason}, "files": {label:
    {"file", "reference", "input_size", "agreement": {method: top-1 agreement},
    "max_abs_prob_diff": {...}, "accuracy": {...} (labelled folders), "reference_accuracy"}}}``.
    """
    from kdskin.export.litert import TFLiteClassifier

    paths, labels = labelled_images(folder, limit)
    if not paths:
        raise DataError(f"{folder}: no images to measure the resize agreement on")
    originals = [load_original(p) for p in paths]
    own = resizer("pillow_bilinear")
    result: dict[str, Any] = {"images": str(folder), "n_images": len(paths),
                              "labelled": labels is not None,
                              "methods": {m: DESCRIPTIONS[m] for m in methods}, "skipped": {},
                              "files": {}}
    resizers: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {}
    for method in methods:
        if method == "mediapipe":
            continue
        try:
            resizers[method] = resizer(method)
        except ResizerUnavailable as exc:
            result["skipped"][method] = str(exc)
    references: dict[str, np.ndarray] = {}
    for label, (path, ref_path) in files.items():
        ref_key = str(ref_path)
        if ref_key not in references:
            ref = TFLiteClassifier(ref_path, num_threads=num_threads)
            references[ref_key] = ref.predict(np.stack([own(im, ref.input_size)
                                                        for im in originals]))
        reference = references[ref_key]
        clf = TFLiteClassifier(path, num_threads=num_threads)
        entry: dict[str, Any] = {"file": Path(path).name, "reference": Path(ref_path).name,
                                 "input_size": clf.input_size, "agreement": {},
                                 "max_abs_prob_diff": {}, "accuracy": {},
                                 "reference_accuracy": _accuracy(labels, reference)}
        for method in methods:
            if method in result["skipped"]:
                continue
            if method == "mediapipe":
                try:
                    probs = mediapipe_probs(path, originals)
                except ResizerUnavailable as exc:
                    result["skipped"][method] = str(exc)
                    continue
                except (RuntimeError, ValueError, OSError) as exc:  # e.g. no metadata
                    entry.setdefault("skipped", {})[method] = " ".join(str(exc).split())[:300]
                    continue
            else:
                size = clf.input_size
                probs = clf.predict(np.stack([resizers[method](im, size) for im in originals]))
            entry["agreement"][method] = float(np.mean(probs.argmax(1) == reference.argmax(1)))
            entry["max_abs_prob_diff"][method] = float(np.abs(probs - reference).max())
            if labels is not None:
                entry["accuracy"][method] = _accuracy(labels, probs)
        result["files"][label] = entry
    return result


def agreement_rows(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per file: input size, then the agreement (accuracy) per method, for printing."""
    rows = []
    for label, entry in table.get("files", {}).items():
        row: dict[str, Any] = {"file": label, "input": entry["input_size"]}
        for method, value in entry["agreement"].items():
            acc = entry["accuracy"].get(method)
            row[method] = f"{value:.3f}" + (f" ({acc:.3f})" if acc is not None else "")
        rows.append(row)
    return rows
