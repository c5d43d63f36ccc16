"""Classification metrics, pure NumPy/scikit-learn: one function, JSON-ready output.

The ISIC challenge metric is balanced multiclass accuracy; it is reported beside plain accuracy,
per-class recall and melanoma sensitivity so a model that ignores rare classes cannot hide.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from kdskin.constants import CLASS_INDEX, CLASSES, MELANOMA, NUM_CLASSES
from kdskin.errors import DataError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits (float64, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(int).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise DataError(f"probabilities must have shape (N, {NUM_CLASSES}), got {probs.shape}")
    if len(y_true) != len(probs):
        raise DataError(f"{len(y_true)} labels but {len(probs)} predictions")
    if len(y_true) == 0:
        raise DataError("no samples to evaluate")
    if y_true.min() < 0 or y_true.max() >= NUM_CLASSES:
        raise DataError(f"labels must be in 0..{NUM_CLASSES - 1}")
    return y_true, probs


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Balanced multiclass accuracy (mean recall over the classes present), the ISIC metric."""
    y_true, probs = _check(y_true, probs)
    return float(balanced_accuracy_score(y_true, probs.argmax(axis=1)))


def class_aucs(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of each class ``(7,)`` (NaN for a class absent from ``y_true`` or
    the only one present)."""
    y_true, probs = _check(y_true, probs)
    aucs = np.full(NUM_CLASSES, np.nan)
    for k in range(NUM_CLASSES):
        positives = y_true == k
        if positives.any() and (~positives).any():
            aucs[k] = roc_auc_score(positives, probs[:, k])
    return aucs


def _mean_auc(aucs: np.ndarray) -> float:
    """The mean of :func:`class_aucs` over the classes that have one (NaN if none)."""
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def macro_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over the classes present in ``y_true`` (NaN if fewer than 2)."""
    return _mean_auc(class_aucs(y_true, probs))


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Every metric kdskin reports, for labels ``(N,)`` and class probabilities ``(N, 7)``.

    Returns accuracy, balanced_accuracy, macro/weighted F1, macro precision/recall, macro
    one-vs-rest AUC, melanoma_recall, melanoma_auc, per_class {name: {precision, recall, f1,
    auc, support}} and the confusion matrix (rows true, columns predicted, CLASSES order).
    """
    y_true, probs = _check(y_true, probs)
    y_pred = probs.argmax(axis=1)
    aucs = class_aucs(y_true, probs)
    labels = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    present = support > 0
    mel = CLASS_INDEX[MELANOMA]
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=np.flatnonzero(present),
                                   average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted",
                                      zero_division=0)),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_auc": _mean_auc(aucs),
        "melanoma_recall": float(recall[mel]) if support[mel] else float("nan"),
        "melanoma_auc": float(aucs[mel]),
        "per_class": {
            name: {"precision": float(precision[k]), "recall": float(recall[k]),
                   "f1": float(f1[k]), "auc": float(aucs[k]), "support": int(support[k])}
            for k, name in enumerate(CLASSES)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def roc_curves(y_true: np.ndarray, probs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve ``(fpr, tpr)`` per class present in ``y_true``."""
    y_true, probs = _check(y_true, probs)
    curves = {}
    for k, name in enumerate(CLASSES):
        positives = y_true == k
        if positives.any() and (~positives).any():
            fpr, tpr, _ = roc_curve(positives, probs[:, k])
            curves[name] = (fpr, tpr)
    return curves


def majority_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy on ``y_test`` of always predicting the most frequent class of ``y_train``."""
    majority = np.bincount(np.asarray(y_train, int), minlength=NUM_CLASSES).argmax()
    return float(np.mean(np.asarray(y_test) == majority))
