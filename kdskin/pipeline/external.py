"""External evaluation: every model and every ``.tflite`` of a run, scored on a labelled set
from outside the training data (e.g. ISIC 2018 Task 3 test), whole, never tuned on;
every Keras model and the int8 file also under the acquisition-shift suite
(:mod:`kdskin.shift_suite`, ``external["shifts"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import Config
from kdskin.console import log
from kdskin.decision import DecisionRules
from kdskin.errors import DataError
from kdskin.rundir import RunDir, RunMetrics


def detect_format(root: str | Path) -> str:
    """``ham10000`` when a HAM10000 metadata file is there, ``isic2018`` for an ISIC 2018
    ground-truth CSV; one-line :class:`DataError` otherwise."""
    from kdskin.constants import HAM10000_METADATA_NAMES

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: external data folder not found; pass --external DIR")
    if any((root / name).is_file() for name in HAM10000_METADATA_NAMES):
        return "ham10000"
    if any("groundtruth" in p.name.lower() for p in root.glob("*.csv")):
        return "isic2018"
    raise DataError(f"{root}: neither a HAM10000 metadata file nor an ISIC 2018 ground-truth "
                    f"CSV found; pass --set data.external_format=ham10000|isic2018")


def load_external(cfg: Config, run: RunDir, image_size: int | None = None
                  ) -> tuple[Any, str, list[str]]:
    """``(SplitArrays of every image, format, unreadable files)`` of ``cfg.data.external``,
    decoded at ``image_size`` (default ``data.image_size``)."""
    return load_labelled(str(cfg.data.external), cfg.data.external_format,
                         image_size or cfg.data.image_size, run.cache)


def load_labelled(root: str, fmt: str | None, image_size: int, cache_dir: Path | None
                  ) -> tuple[Any, str, list[str]]:
    """``(SplitArrays of every image, format, unreadable files)`` of the labelled folder
    ``root`` (``fmt`` None: detected), decoded at ``image_size`` (cached in ``cache_dir``)."""
    from kdskin.data.datasets import read_dataset
    from kdskin.data.pipeline import decode_split

    fmt = fmt or detect_format(root)
    dataset = read_dataset(root, fmt, strict=False)
    table = dataset.table[["image_id", "lesion_id", "dx"]].copy()
    table["split"] = "test"
    arrays, errors = decode_split(dataset, table, image_size, cache_dir=cache_dir,
                                  progress=True)
    if len(arrays["test"]) == 0:
        raise DataError(f"{root}: no readable image in the labelled set")
    return arrays["test"], fmt, errors


def external_stage(cfg: Config, run: RunDir, state: RunMetrics, final: str | None,
                   rules: DecisionRules | None) -> dict[str, Any]:
    """Score every Keras model of the run (updating ``state.models[...].external``) and every
    ``.tflite`` file on the external set; returns ``state.external``. The acquisition-shift
    suite of every Keras model and of ``model_int8.tflite`` goes to ``["shifts"][name]`` (the
    metrics on what each returns, as the clean figures; ``flagged``: the final student's
    out-of-scope check, which reads the images only)."""
    from kdskin.decision import score_with_rules
    from kdskin.evaluate import KerasClassifier, evaluate_arrays
    from kdskin.export.litert import TFLiteClassifier
    from kdskin.models.contract import input_size, load_keras
    from kdskin.pipeline.trust import intervals
    from kdskin.shift_suite import shift_suite, worst

    part, fmt, errors = load_external(cfg, run)
    counts = np.bincount(part.labels, minlength=7)
    log(f"external set {cfg.data.external} ({fmt}): {len(part)} images, " + " ".join(
        f"{c}={n}" for c, n in zip(("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"), counts,
                                   strict=True)))
    result: dict[str, Any] = {"data": str(cfg.data.external), "format": fmt,
                              "n_images": len(part), "unreadable_images": errors, "tflite": {},
                              "trust": {}, "shifts": {}}

    def suite(name: str, clf: Any, images: Any = part) -> None:
        result["shifts"][name] = shift_suite(clf, images.images, images.labels, rules=rules)
        shift, drop = worst(result["shifts"][name])
        log(f"external {name} under the shift suite: worst balanced-accuracy drop {drop:+.4f} "
            f"({shift})")

    parts = {cfg.data.image_size: part}  # the set decoded at each model's input size

    def images_for(model: Any) -> Any:
        size = input_size(model)
        if size not in parts:
            parts[size] = load_external(cfg, run, size)[0]
        return parts[size]

    for name, entry in state.models.items():
        model = load_keras(run.model(name))
        clf, part_m = KerasClassifier(model), images_for(model)
        metrics, probs = evaluate_arrays(clf, part_m.images, part_m.labels)
        entry.external = metrics
        entry.intervals["external"] = intervals(cfg, part_m.labels, probs)
        log(f"external {name}: accuracy {metrics['accuracy']:.4f}, balanced "
            f"{metrics['balanced_accuracy']:.4f}, AUC {metrics['macro_auc']:.4f}, melanoma "
            f"recall {metrics['melanoma_recall']:.4f}, melanoma AUC {metrics['melanoma_auc']:.4f}")
        if name == final and rules is not None:
            result["trust"][name] = score_with_rules(rules, part_m.labels, probs)
        suite(name, clf, part_m)
    for path in sorted(run.tflite.glob("model_*.tflite")):
        kind = path.stem.removeprefix("model_")
        clf = TFLiteClassifier(path)
        metrics, probs = evaluate_arrays(clf, part.images, part.labels)
        result["tflite"][kind] = {**metrics, "intervals": intervals(cfg, part.labels, probs)}
        if rules is not None:
            # exported files apply T in their softmax (folded rules undo it for "before")
            result["trust"][path.name] = score_with_rules(rules.folded(), part.labels, probs)
        log(f"external {path.name}: accuracy {metrics['accuracy']:.4f}, balanced "
            f"{metrics['balanced_accuracy']:.4f}, AUC {metrics['macro_auc']:.4f}, melanoma "
            f"recall {metrics['melanoma_recall']:.4f}, melanoma AUC {metrics['melanoma_auc']:.4f}")
        if kind == "int8":
            suite(path.name, clf)
    return result
