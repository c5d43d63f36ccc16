"""Bootstrap confidence intervals for the headline metrics, and paired differences of two models.

A resample is a vector of counts ``(N,)`` (how often each image is drawn). ``stratified=True``
draws, within each true class, as many images as that class has, so every resample keeps the
test split's class counts (a class with 9 images never vanishes). The built-in metrics are
computed for all resamples at once from the count matrix ``(B, N)`` (confusion matrices by one
matrix product, AUC by weighted Mann-Whitney sums), so 1,000 resamples of 1,000 images take about
a second. Intervals are percentile intervals: ``alpha / 2`` and ``1 - alpha / 2`` quantiles of
the resampled values (resamples where a metric is undefined are left out). Point values are those
of :func:`kdskin.metrics.classification_metrics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kdskin.constants import CLASS_INDEX, MELANOMA, NUM_CLASSES
from kdskin.errors import DataError
from kdskin.metrics import classification_metrics
from kdskin.trust.calibration import check_labels, check_labels_probs

MetricFn = Callable[[np.ndarray, np.ndarray], float]
#: Metrics with a vectorised bootstrap, named as in ``classification_metrics``.
METRICS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "melanoma_recall")
N_RESAMPLES = 1000
#: Resamples are scored in chunks of about this many (resample, image) cells, to bound memory.
CHUNK_ELEMENTS = 2_000_000
ALPHA = 0.05


def _check(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p = check_labels_probs(labels, probs)
    if p.shape[1] != NUM_CLASSES:
        raise DataError(f"probabilities must have shape (N, {NUM_CLASSES}), got {p.shape}")
    return y, p


def _check_options(n_resamples: int, alpha: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise DataError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < alpha < 1:
        raise DataError(f"alpha must be in (0, 1), got {alpha!r}")


def bootstrap_counts(labels: Any, n_resamples: int = N_RESAMPLES, seed: int = 0,
                     stratified: bool = True) -> np.ndarray:
    """Resample counts ``(B, N)`` int: row ``b`` says how often image ``i`` is in resample ``b``.

    Each row sums to ``N``; stratified rows also keep the count of every true class.
    """
    y = check_labels(labels)
    rng = np.random.default_rng(seed)
    n = len(y)
    counts = np.zeros((int(n_resamples), n), dtype=np.int64)
    groups = [np.flatnonzero(y == k) for k in np.unique(y)] if stratified else [np.arange(n)]
    for members in groups:
        m = len(members)
        counts[:, members] = rng.multinomial(m, np.full(m, 1.0 / m), size=int(n_resamples))
    return counts


def _confusion(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted confusion matrices ``(B, K, K)`` (rows true) for weights ``w`` ``(B, N)``."""
    k = NUM_CLASSES
    cell = np.zeros((len(y), k * k))
    cell[np.arange(len(y)), y * k + pred] = 1.0
    return (w @ cell).reshape(-1, k, k)


def _weighted_auc(scores: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC ``(B,)`` of ``scores`` ``(N,)`` for weights ``w`` ``(B, N)`` (ties count 1/2)."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ws = w[:, order]
    pos = np.add.reduceat(ws * positive[order], starts, axis=1)
    neg = np.add.reduceat(ws * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _vector_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray,
                    names: Sequence[str]) -> dict[str, np.ndarray]:
    """Built-in metrics ``{name: (B,)}`` for resample weights ``w`` ``(B, N)``."""
    w = w.astype(np.float64)
    cm = _confusion(y, p.argmax(axis=1), w)
    support = cm.sum(axis=2)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    present = support > 0
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, tp / support, np.nan)
        if "accuracy" in names:
            out["accuracy"] = tp.sum(axis=1) / support.sum(axis=1)
        if "balanced_accuracy" in names:
            out["balanced_accuracy"] = np.nanmean(recall, axis=1)
        if "macro_f1" in names:
            denom = 2 * tp + (cm.sum(axis=1) - tp) + (support - tp)
            f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
            out["macro_f1"] = np.nanmean(np.where(present, f1, np.nan), axis=1)
        if "melanoma_recall" in names:
            out["melanoma_recall"] = recall[:, CLASS_INDEX[MELANOMA]]
        if "macro_auc" in names:
            aucs = np.stack([_weighted_auc(p[:, k], y == k, w) for k in range(NUM_CLASSES)],
                            axis=1)
            defined = ~np.isnan(aucs).all(axis=1)
            out["macro_auc"] = np.full(len(w), np.nan)
            out["macro_auc"][defined] = np.nanmean(aucs[defined], axis=1)
    return {name: out[name] for name in names}


def _resolve(metrics: Sequence[str] | Mapping[str, MetricFn]
             ) -> tuple[list[str], dict[str, MetricFn]]:
    """Split ``metrics`` into built-in names and custom callables."""
    if isinstance(metrics, str):
        metrics = [metrics]
    if isinstance(metrics, Mapping):
        return [], dict(metrics)
    names = list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise DataError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)} "
                        "or pass {name: fn(labels, probs) -> float}")
    if not names:
        raise DataError("no metrics asked for")
    return names, {}


def _resample_values(y: np.ndarray, p: np.ndarray, counts: np.ndarray, names: list[str],
                     custom: dict[str, MetricFn]) -> dict[str, np.ndarray]:
    """Every asked metric on every resample: ``{name: (B,)}`` (in chunks of resamples)."""
    values: dict[str, np.ndarray] = {}
    if names:
        step = max(1, CHUNK_ELEMENTS // max(len(y), 1))
        chunks = [_vector_metrics(y, p, counts[i:i + step], names)
                  for i in range(0, len(counts), step)]
        values = {name: np.concatenate([c[name] for c in chunks]) for name in names}
    if custom:
        idx = [np.repeat(np.arange(len(y)), row) for row in counts]
        for name, fn in custom.items():
            values[name] = np.array([fn(y[i], p[i]) for i in idx], dtype=np.float64)
    return values


def _point_values(y: np.ndarray, p: np.ndarray, names: list[str],
                  custom: dict[str, MetricFn]) -> dict[str, float]:
    point: dict[str, float] = {}
    if names:
        with warnings.catch_warnings():  # a class predicted but absent from this set
            warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
            full = classification_metrics(y, p)
        point.update({name: float(full[name]) for name in names})
    point.update({name: float(fn(y, p)) for name, fn in custom.items()})
    return point


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(labels: Any, probs: Any,
                 metrics: Sequence[str] | Mapping[str, MetricFn] = METRICS,
                 n_resamples: int = N_RESAMPLES, seed: int = 0, alpha: float = ALPHA,
                 stratified: bool = True) -> dict[str, dict[str, float]]:
    """Percentile bootstrap intervals: ``{metric: {"value", "low", "high"}}``.

    ``labels`` ``(N,)``, ``probs`` ``(N, 7)``. ``metrics``: names from :data:`METRICS`
    (vectorised) or a mapping ``{name: fn(labels (n,), probs (n, 7)) -> float}`` (called once
    per resample). ``value`` is the metric on all images; ``low``/``high`` bound the
    ``1 - alpha`` interval (NaN where the metric is undefined, e.g. no melanoma).
    """
    y, p = _check(labels, probs)
    _check_options(n_resamples, alpha)
    names, custom = _resolve(metrics)
    counts = bootstrap_counts(y, n_resamples, seed, stratified)
    values = _resample_values(y, p, counts, names, custom)
    point = _point_values(y, p, names, custom)
    out = {}
    for name, v in point.items():
        low, high = _interval(values[name], alpha) if np.isfinite(v) else (v, v)
        out[name] = {"value": v, "low": low, "high": high}
    return out


def paired_bootstrap_diff(labels: Any, probs_a: Any, probs_b: Any,
                          metrics: Sequence[str] | Mapping[str, MetricFn] = METRICS,
                          n_resamples: int = N_RESAMPLES, seed: int = 0, alpha: float = ALPHA,
                          stratified: bool = True) -> dict[str, dict[str, float]]:
    """Paired bootstrap of ``metric(a) - metric(b)`` on the same images.

    ``labels`` ``(N,)``; ``probs_a``, ``probs_b`` ``(N, 7)`` from two models on the same images
    in the same order. Each resample draws one set of images and scores both models on it.
    Returns ``{metric: {"value", "low", "high", "a", "b"}}`` where ``value = a - b`` and
    ``low``/``high`` bound the ``1 - alpha`` interval of the difference (an interval that
    excludes 0 says the difference is not resampling noise).
    """
    y, pa = _check(labels, probs_a)
    _, pb = _check(y, probs_b)
    _check_options(n_resamples, alpha)
    names, custom = _resolve(metrics)
    counts = bootstrap_counts(y, n_resamples, seed, stratified)
    va = _resample_values(y, pa, counts, names, custom)
    vb = _resample_values(y, pb, counts, names, custom)
    a = _point_values(y, pa, names, custom)
    b = _point_values(y, pb, names, custom)
    out = {}
    for name in a:
        diff = a[name] - b[name]
        low, high = _interval(va[name] - vb[name], alpha) if np.isfinite(diff) else (diff, diff)
        out[name] = {"value": diff, "low": low, "high": high, "a": a[name], "b": b[name]}
    return out
