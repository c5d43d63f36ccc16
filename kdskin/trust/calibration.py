"""Temperature scaling and calibration measures: ECE, Brier score, NLL and reliability data.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar ``T`` fitted on the
validation split by minimising the negative log-likelihood; it changes confidences, never the
predicted class. Deployed kdskin models output probabilities, so every function that applies a
temperature also has a probability version that uses ``log p`` as the logits (softmax is
invariant to the constant that separates the two).

Shapes: ``labels`` ``(N,)`` integer class indices, ``logits`` / ``probs`` ``(N, K)`` (``K`` is
``NUM_CLASSES`` for kdskin models; any ``K >= 2`` is accepted here).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.calibration import calibration_curve

from kdskin.errors import DataError
from kdskin.io import atomic_write

#: Range searched for the temperature.
T_BOUNDS: tuple[float, float] = (0.05, 20.0)
#: Number of equal-width confidence bins of the ECE and the reliability diagram.
N_BINS = 15
#: Probabilities are clipped to at least this before a log is taken (int8 outputs can be 0).
EPS = 1e-12
#: Probability rows must sum to 1 within this (a dequantised uint8 output is off by a few 1/256).
SUM_TOLERANCE = 0.05


def check_labels(labels: Any, n: int | None = None, n_classes: int | None = None) -> np.ndarray:
    """``labels`` as an int array ``(N,)``; DataError if empty, not integer or out of range."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must have shape (N,), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError("labels must be integer class indices")
    arr = arr.astype(np.int64)
    if arr.size == 0:
        raise DataError("no samples: labels are empty")
    if n is not None and arr.size != n:
        raise DataError(f"{arr.size} labels but {n} predictions")
    if n_classes is not None and (arr.min() < 0 or arr.max() >= n_classes):
        raise DataError(f"labels must be in 0..{n_classes - 1}, got {arr.min()}..{arr.max()}")
    return arr


def check_logits(logits: Any) -> np.ndarray:
    """``logits`` as float64 ``(N, K)`` with ``K >= 2``; DataError if not finite."""
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise DataError(f"logits must have shape (N, K) with K >= 2, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError("logits contain NaN or infinite values")
    return arr


def check_probs(probs: Any) -> np.ndarray:
    """``probs`` as float64 ``(N, K)``: finite, >= 0, rows summing to 1 (within 0.05)."""
    arr = check_logits(probs)
    if arr.size and (arr.min() < 0 or np.any(np.abs(arr.sum(axis=1) - 1) > SUM_TOLERANCE)):
        raise DataError("probabilities must be >= 0 with rows summing to 1; "
                        "pass softmax outputs (use apply_temperature for logits)")
    return arr


def check_labels_probs(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``labels`` ``(N,)`` and ``probs`` ``(N, K)`` of matching length."""
    p = check_probs(probs)
    return check_labels(labels, n=len(p), n_classes=p.shape[1]), p


def probs_to_logits(probs: Any) -> np.ndarray:
    """``log(max(p, EPS))`` ``(N, K)``: logits whose softmax is ``probs`` (renormalised)."""
    return np.log(np.clip(check_probs(probs), EPS, None))


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise DataError(f"temperature must be a positive number, got {temperature!r}")
    return t


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)`` ``(N, K)`` from logits ``(N, K)``."""
    return softmax(check_logits(logits) / _check_temperature(temperature), axis=1)


def apply_temperature_to_probs(probs: Any, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``(N, K)`` from a deployed model's probabilities ``(N, K)``.

    Equal to ``softmax(log(p) / T)``, i.e. ``p ** (1/T)`` renormalised per row.
    """
    return apply_temperature(probs_to_logits(probs), temperature)


def _nll_of_logits(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: Any, labels: Any,
                    bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The temperature ``T`` in ``bounds`` minimising the NLL of ``softmax(logits / T)``.

    ``logits`` ``(N, K)`` and ``labels`` ``(N,)`` from the validation split (never the test
    split). Bounded scalar minimisation over ``log T``; ``T > 1`` softens over-confident models.
    """
    z = check_logits(logits)
    y = check_labels(labels, n=len(z), n_classes=z.shape[1])
    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0 < lo < hi:
        raise DataError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    result = minimize_scalar(lambda log_t: _nll_of_logits(z, y, math.exp(log_t)),
                             bounds=(math.log(lo), math.log(hi)), method="bounded",
                             options={"xatol": 1e-5})
    return math.exp(float(result.x))


def fit_temperature_from_probs(probs: Any, labels: Any,
                               bounds: tuple[float, float] = T_BOUNDS) -> float:
    """:func:`fit_temperature` for a model that outputs probabilities ``(N, K)``."""
    return fit_temperature(probs_to_logits(probs), labels, bounds)


def nll(labels: Any, probs: Any) -> float:
    """Mean negative log-likelihood of the true class (natural log; probabilities clipped)."""
    y, p = check_labels_probs(labels, probs)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], EPS, None)).mean())


def brier_score(labels: Any, probs: Any) -> float:
    """Multiclass Brier score: mean over samples of ``sum_k (p_k - onehot_k)^2`` (0..2)."""
    y, p = check_labels_probs(labels, probs)
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def _check_bins(n_bins: int) -> int:
    if int(n_bins) != n_bins or n_bins < 1:
        raise DataError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def reliability_bins(labels: Any, probs: Any, n_bins: int = N_BINS) -> dict[str, list]:
    """Top-label reliability data over ``n_bins`` equal-width bins ``(lo, hi]`` of confidence.

    Returns lists of length ``n_bins``: ``bin_lower``, ``bin_upper``, ``count``, ``confidence``
    (mean top probability) and ``accuracy`` (fraction whose top class is right); the last two
    are NaN for empty bins (``null`` in JSON).
    """
    y, p = check_labels_probs(labels, probs)
    n_bins = _check_bins(n_bins)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"bin_lower": edges[:-1].tolist(), "bin_upper": edges[1:].tolist(),
            "count": count.tolist(), "confidence": mean_conf.tolist(), "accuracy": acc.tolist()}


def expected_calibration_error(labels: Any, probs: Any, n_bins: int = N_BINS) -> float:
    """Top-label ECE: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over equal-width bins."""
    bins = reliability_bins(labels, probs, n_bins)
    count = np.asarray(bins["count"], dtype=np.float64)
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    return float(np.nansum(count * gap) / count.sum())


def class_reliability(labels: Any, probs: Any, n_bins: int = 10) -> dict[int, dict[str, list]]:
    """One-vs-rest reliability per class present in ``labels`` (sklearn ``calibration_curve``).

    Returns ``{k: {"mean_predicted": [...], "fraction_positive": [...]}}`` over non-empty bins.
    """
    y, p = check_labels_probs(labels, probs)
    out = {}
    for k in np.unique(y):
        frac, mean = calibration_curve(y == k, p[:, k], n_bins=_check_bins(n_bins),
                                       strategy="uniform")
        out[int(k)] = {"mean_predicted": mean.tolist(), "fraction_positive": frac.tolist()}
    return out


def calibration_summary(labels: Any, probs: Any, n_bins: int = N_BINS) -> dict[str, Any]:
    """``{ece, brier, nll, accuracy, mean_confidence, reliability}`` of one set of probs."""
    y, p = check_labels_probs(labels, probs)
    return {
        "ece": expected_calibration_error(y, p, n_bins),
        "brier": brier_score(y, p),
        "nll": nll(y, p),
        "accuracy": float(np.mean(p.argmax(axis=1) == y)),
        "mean_confidence": float(p.max(axis=1).mean()),
        "reliability": reliability_bins(y, p, n_bins),
    }


def calibration_report(labels: Any, probs_before: Any, probs_after: Any,
                       n_bins: int = N_BINS, temperature: float | None = None) -> dict[str, Any]:
    """Calibration before and after temperature scaling, JSON-ready.

    ``labels`` ``(N,)``, ``probs_before`` / ``probs_after`` ``(N, K)``. Returns
    ``{"n", "n_bins", "temperature", "before": summary, "after": summary}`` where each summary
    is :func:`calibration_summary` (``ece``, ``brier``, ``nll``, ``accuracy``,
    ``mean_confidence``, ``reliability`` bins).
    """
    y, before = check_labels_probs(labels, probs_before)
    _, after = check_labels_probs(y, probs_after)
    if before.shape != after.shape:
        raise DataError(f"probs_before {before.shape} and probs_after {after.shape} differ")
    return {
        "n": int(len(y)),
        "n_bins": _check_bins(n_bins),
        "temperature": None if temperature is None else _check_temperature(temperature),
        "before": calibration_summary(y, before, n_bins),
        "after": calibration_summary(y, after, n_bins),
    }


def plot_reliability(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Reliability diagram PNG of a :func:`calibration_report`: before and after side by side.

    Bars: accuracy per confidence bin; dashed diagonal: perfect calibration; the ECE of each
    panel is in its title. Written atomically through ``kdskin.io.atomic_write``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(name, report.get(name)) for name in ("before", "after")]
    panels = [(name, s) for name, s in panels if s]
    if not panels:
        raise DataError("calibration report has neither 'before' nor 'after'; "
                        "pass the output of calibration_report")
    fig = Figure(figsize=(4.2 * len(panels), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    temperature = report.get("temperature")
    for ax, (name, summary) in zip(axes, panels, strict=True):
        bins = summary["reliability"]
        lo = np.asarray(bins["bin_lower"], dtype=float)
        width = np.asarray(bins["bin_upper"], dtype=float) - lo
        acc = np.asarray([np.nan if v is None else v for v in bins["accuracy"]], dtype=float)
        conf = np.asarray([np.nan if v is None else v for v in bins["confidence"]], dtype=float)
        filled = np.asarray(bins["count"]) > 0
        ax.bar(lo[filled], acc[filled], width=width[filled], align="edge", color="tab:blue",
               edgecolor="black", linewidth=0.5, label="accuracy")
        ax.bar(lo[filled], conf[filled] - acc[filled], bottom=acc[filled], width=width[filled],
               align="edge", color="tab:red", alpha=0.3, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        label = name if name == "before" or temperature is None else f"after (T={temperature:.2f})"
        ax.set_title(f"{label}: ECE {summary['ece']:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
