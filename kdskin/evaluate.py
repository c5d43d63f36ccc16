"""Scoring models: one loader for ``.keras`` and ``.tflite`` classifiers, metrics, plots, and the
``kdskin evaluate`` / ``kdskin predict`` commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kdskin.constants import CLASSES, NUM_CLASSES, PROBS_NAME
from kdskin.errors import DataError, ModelError
from kdskin.metrics import classification_metrics, roc_curves


class Classifier(Protocol):
    """Anything that maps images ``(N, S, S, 3)`` 0..255 to probabilities ``(N, 7)``."""

    input_size: int

    def predict(self, images: np.ndarray) -> np.ndarray: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class KerasClassifier:
    """A kdskin Keras model (dict of logits with ``logits``, or a deployable ``probs`` model)."""

    model: Any
    batch_size: int = 64

    def __post_init__(self) -> None:
        shape = tuple(self.model.inputs[0].shape) if self.model.inputs else ()
        if len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2] or shape[1] is None:
            raise ModelError(f"model {self.model.name!r} is not a kdskin classifier: its input "
                             f"must be (None, S, S, 3), got {shape}")
        self.input_size = int(shape[1])
        names = list(getattr(self.model, "output_names", []) or [])
        if "logits" in names:
            self._key, self._is_logits = "logits", True
        elif PROBS_NAME in names or len(self.model.outputs) == 1:
            self._key, self._is_logits = None, False
        else:
            raise ModelError(f"model {self.model.name!r} has outputs {names}; a kdskin "
                             f"classifier has a 'logits' or '{PROBS_NAME}' output")

    def outputs(self, images: np.ndarray) -> Any:
        x = np.asarray(images, dtype=np.float32)
        return self.model.predict(x, batch_size=self.batch_size, verbose=0)

    def predict(self, images: np.ndarray) -> np.ndarray:
        out = self.outputs(images)
        if isinstance(out, dict):
            out = out[self._key] if self._key else next(iter(out.values()))
        elif isinstance(out, list | tuple):
            names = list(self.model.output_names)
            out = out[names.index(self._key)] if self._key else out[0]
        out = np.asarray(out, dtype=np.float64)
        if out.ndim != 2 or out.shape[1] != NUM_CLASSES:
            raise ModelError(f"model {self.model.name!r} returns shape {out.shape}; expected "
                             f"(N, {NUM_CLASSES})")
        return softmax(out) if self._is_logits else out


def load_keras(path: str | Path) -> Any:
    """Load a ``.keras`` file with kdskin's custom layers registered; one-line error if not."""
    import keras

    import kdskin.models  # noqa: F401  (registers custom layers)

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelError(f"{path}: cannot load as a Keras model ({exc.__class__.__name__}); "
                         f"pass a .keras file written by kdskin") from None


def load_classifier(path: str | Path) -> Classifier:
    """A :class:`Classifier` for a ``.keras`` or ``.tflite`` file."""
    path = Path(path)
    if path.suffix == ".tflite":
        from kdskin.export.litert import TFLiteClassifier

        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        return TFLiteClassifier(path)
    if path.suffix in (".keras", ".h5"):
        return KerasClassifier(load_keras(path))
    raise ModelError(f"{path}: unknown model type; pass a .keras or .tflite file")


def evaluate_arrays(classifier: Classifier, images: np.ndarray, labels: np.ndarray
                    ) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of ``classifier`` on ``images`` (N,S,S,3) with ``labels`` (N,); also the probs."""
    probs = np.asarray(classifier.predict(images), dtype=np.float64)
    return classification_metrics(labels, probs), probs


def write_plots(metrics: dict[str, Any], labels: np.ndarray, probs: np.ndarray, out_dir: Path,
                name: str) -> list[Path]:
    from kdskin.plots import plot_confusion, plot_roc

    out_dir = Path(out_dir)
    return [plot_confusion(metrics["confusion_matrix"], out_dir / f"{name}_confusion.png",
                           f"{name}: confusion matrix"),
            plot_roc(roc_curves(labels, probs), out_dir / f"{name}_roc.png", f"{name}: ROC")]


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_precision",
            "macro_recall", "macro_auc", "melanoma_recall")
    lines = [title] if title else []
    lines += [f"{k:<18} {metrics[k]:.4f}" for k in keys]
    lines.append(f"{'class':<8}{'prec':>8}{'recall':>8}{'f1':>8}{'n':>7}")
    for c in CLASSES:
        pc = metrics["per_class"][c]
        lines.append(f"{c:<8}{pc['precision']:>8.3f}{pc['recall']:>8.3f}{pc['f1']:>8.3f}"
                     f"{pc['support']:>7}")
    return "\n".join(lines)


def _split_for(model_path: Path, dataset, split_name: str, split_file: str | None, cfg):
    from kdskin.data.split import make_split, read_split

    if split_name == "all":
        table = dataset.table[["image_id", "lesion_id", "dx"]].copy()
        table["split"] = "test"
        return table, "all images"
    if split_file:
        return read_split(split_file), str(split_file)
    beside = model_path.resolve().parent.parent / "split.csv"
    if beside.is_file():
        return read_split(beside), str(beside)
    split = make_split(dataset.table, cfg.data.protocol, cfg.data.split, cfg.data.seed,
                       cfg.data.paper_per_class)
    return split, f"a fresh {cfg.data.protocol} split (seed {cfg.data.seed})"


def evaluate_command(cfg, model: str, data: str, fmt: str | None = None, split: str = "test",
                     split_file: str | None = None, json_out: str | None = None,
                     plots: str | None = None, strict: bool | None = None) -> dict[str, Any]:
    """``kdskin evaluate``: score ``model`` on one split of ``data``; print, JSON, plots."""
    from kdskin.data.datasets import read_dataset
    from kdskin.data.pipeline import decode_split
    from kdskin.io import write_json

    classifier = load_classifier(model)
    dataset = read_dataset(data, fmt or cfg.data.format,
                           strict=cfg.data.strict if strict is None else strict)
    table, source = _split_for(Path(model), dataset, split, split_file, cfg)
    arrays, errors = decode_split(dataset, table, classifier.input_size, progress=True)
    for err in errors:
        print(f"skipped unreadable image: {err}")
    part = arrays["test" if split == "all" else split]
    if len(part) == 0:
        raise DataError(f"{data}: the {split} split is empty ({source})")
    metrics, probs = evaluate_arrays(classifier, part.images, part.labels)
    result = {"model": str(model), "data": str(data), "format": dataset.format, "split": split,
              "split_source": source, "rows_without_image": len(dataset.missing),
              "unreadable_images": errors, **metrics}
    print(format_metrics(metrics, f"{model} on {data} [{split}: {len(part)} images, {source}]"))
    if json_out:
        write_json(json_out, result)
    if plots:
        write_plots(metrics, part.labels, probs, Path(plots), Path(model).stem)
    return result


def predict_command(model: str, images: list[str], top: int = 3) -> list[dict[str, Any]]:
    """``kdskin predict``: print each image's top classes with probabilities."""
    from kdskin.data.images import load_image

    classifier = load_classifier(model)
    top = max(1, min(top, NUM_CLASSES))
    results = []
    for path in images:
        x = load_image(path, classifier.input_size)[None]
        probs = classifier.predict(x)[0]
        order = np.argsort(-probs)[:top]
        ranked = [(CLASSES[k], float(probs[k])) for k in order]
        print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in ranked))
        results.append({"image": str(path), "top": ranked})
    return results
