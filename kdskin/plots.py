"""Plots written as PNG (matplotlib, Agg backend): confusion matrix, ROC curves, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kdskin.constants import CLASSES  # noqa: E402
from kdskin.io import atomic_write  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight",
                                                     format="png"))
    plt.close(fig)
    return out


def plot_confusion(matrix, path: str | Path, title: str = "") -> Path:
    """Confusion matrix (rows true, columns predicted), counts and row-normalised colours."""
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, label="fraction of true class")
    ax.set_title(title or "confusion matrix")
    return _save(fig, path)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = ""
             ) -> Path:
    """One-vs-rest ROC curves, one line per class (from :func:`kdskin.metrics.roc_curves`)."""
    from sklearn.metrics import auc

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "ROC (one vs rest)")
    return _save(fig, path)


def plot_history(csv_path: str | Path, path: str | Path, title: str = "") -> Path | None:
    """Training curves from a Keras CSVLogger file: losses on the left, accuracies on the right."""
    try:
        hist = pd.read_csv(csv_path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    if hist.empty:
        return None
    epoch = hist["epoch"] + 1 if "epoch" in hist else np.arange(1, len(hist) + 1)
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    for col in hist.columns:
        if col == "epoch" or col in ("lr", "learning_rate"):
            continue
        ax = ax_a if "acc" in col else ax_l
        ax.plot(epoch, hist[col], label=col, ls="--" if col.startswith("val_") else "-")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_l.legend(fontsize=7)
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("accuracy")
    if ax_a.lines:
        ax_a.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
