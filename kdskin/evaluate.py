"""Scoring models: one :class:`Classifier` interface over ``.keras`` and ``.tflite`` files,
their metrics and plots. The commands that print them live in :mod:`kdskin.commands.evaluate`.

Importing this module (and scoring a ``.tflite`` file) does not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kdskin.constants import NUM_CLASSES
from kdskin.errors import ModelError
from kdskin.metrics import classification_metrics, roc_curves, softmax


class Classifier(Protocol):
    """Anything that maps images ``(N, S, S, 3)`` 0..255 to probabilities ``(N, 7)``."""

    input_size: int

    def predict(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class KerasClassifier:
    """A kdskin Keras model (dict of logits with ``logits``, or a deployable ``probs`` model)."""

    model: Any
    batch_size: int = 64

    def __post_init__(self) -> None:
        from kdskin.models.contract import check_classifier, output_names

        self.input_size, head = check_classifier(self.model)
        self._is_logits = head == "logits"
        self._key = head
        self._names = output_names(self.model)

    def outputs(self, images: np.ndarray) -> Any:
        from kdskin.memory import predict_in_chunks

        return predict_in_chunks(self.model, images, self.batch_size)

    def predict(self, images: np.ndarray) -> np.ndarray:
        out = self.outputs(images)
        if isinstance(out, dict):
            out = out[self._key]
        elif isinstance(out, list | tuple):
            out = out[self._names.index(self._key)]
        out = np.asarray(out, dtype=np.float64)
        if out.ndim != 2 or out.shape[1] != NUM_CLASSES:
            raise ModelError(f"model {self.model.name!r} returns shape {out.shape}; expected "
                             f"(N, {NUM_CLASSES})")
        return softmax(out) if self._is_logits else out


def load_classifier(path: str | Path) -> Classifier:
    """A :class:`Classifier` for a ``.keras`` or ``.tflite`` file."""
    path = Path(path)
    if path.suffix == ".tflite":
        from kdskin.export.litert import TFLiteClassifier

        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        return TFLiteClassifier(path)
    if path.suffix in (".keras", ".h5"):
        from kdskin.models.contract import load_keras

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
