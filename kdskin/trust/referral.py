"""A referral operating point: refer an image when its malignant probability reaches a threshold.

The malignant score of an image is the sum of its probabilities of the malignant classes
(default mel + bcc + akiec). The threshold is fitted on the validation split as the *largest*
threshold whose sensitivity (fraction of malignant images referred) is at least the target, so
specificity is as high as that sensitivity allows; it is then only applied to the test split and
external sets. Fit and apply it on the same kind of probabilities (the calibrated ones when a
temperature is used: temperature scaling changes the malignant sum).

Shapes: ``labels`` ``(N,)`` class indices in ``CLASSES`` order, ``probs`` ``(N, 7)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kdskin.constants import CLASS_INDEX, CLASSES, MELANOMA, NUM_CLASSES
from kdskin.errors import ConfigError, DataError
from kdskin.trust.calibration import check_labels, check_probs

#: Classes whose probabilities add up to the malignant score.
MALIGNANT_CLASSES: tuple[str, ...] = ("mel", "bcc", "akiec")
#: Default sensitivity the threshold is fitted for.
TARGET_SENSITIVITY = 0.90


def malignant_indices(classes: Sequence[str] = MALIGNANT_CLASSES) -> np.ndarray:
    """Class indices ``(M,)`` of ``classes``; ConfigError for an unknown or empty set."""
    if isinstance(classes, str):
        classes = [classes]
    unknown = [c for c in classes if c not in CLASS_INDEX]
    if unknown:
        raise ConfigError(f"unknown malignant class {unknown[0]!r}; use some of "
                          f"{', '.join(CLASSES)}")
    if not classes:
        raise ConfigError(f"the malignant class set is empty; use some of {', '.join(CLASSES)}")
    return np.array(sorted({CLASS_INDEX[c] for c in classes}), dtype=np.int64)


def _check_probs(probs: Any) -> np.ndarray:
    p = check_probs(probs)
    if p.shape[1] != NUM_CLASSES:
        raise DataError(f"probabilities must have shape (N, {NUM_CLASSES}), got {p.shape}")
    return p


def malignant_score(probs: Any, classes: Sequence[str] = MALIGNANT_CLASSES) -> np.ndarray:
    """Malignant probability ``(N,)``: the sum of ``probs`` ``(N, 7)`` over ``classes``."""
    return _check_probs(probs)[:, malignant_indices(classes)].sum(axis=1)


def is_malignant(labels: Any, classes: Sequence[str] = MALIGNANT_CLASSES) -> np.ndarray:
    """Boolean ``(N,)``: whether each true label is in ``classes``."""
    y = check_labels(labels, n_classes=NUM_CLASSES)
    return np.isin(y, malignant_indices(classes))


def rate_threshold(scores: Any, rate: float) -> float:
    """Largest ``t`` with ``mean(scores >= t) >= rate`` for ``scores`` ``(n,)``, ``rate`` in (0, 1].

    The ``ceil(rate * n)``-th largest score (ties at it all pass).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise DataError("no scores to fit a threshold on")
    if not np.all(np.isfinite(s)):
        raise DataError("scores contain NaN or infinite values")
    if not 0 < rate <= 1:
        raise ConfigError(f"target rate must be in (0, 1], got {rate!r}")
    k = max(1, math.ceil(rate * s.size - 1e-9))
    return float(np.sort(s)[::-1][k - 1])


def fit_referral_threshold(labels: Any, probs: Any,
                           target_sensitivity: float = TARGET_SENSITIVITY,
                           classes: Sequence[str] = MALIGNANT_CLASSES) -> float:
    """The largest threshold whose malignant sensitivity on this split is >= the target.

    ``labels`` ``(N,)``, ``probs`` ``(N, 7)`` of the validation split. Refer when
    ``malignant_score >= threshold``. DataError if the split has no malignant image.
    """
    p = _check_probs(probs)
    malignant = is_malignant(check_labels(labels, n=len(p)), classes)
    if not malignant.any():
        raise DataError(f"no image of the malignant classes ({', '.join(classes)}) in this "
                        "split; fit the referral threshold on a split that has some")
    return rate_threshold(malignant_score(p, classes)[malignant], target_sensitivity)


def refer(probs: Any, threshold: float, classes: Sequence[str] = MALIGNANT_CLASSES) -> np.ndarray:
    """Referral decisions ``(N,)`` bool: ``malignant_score(probs) >= threshold``."""
    return malignant_score(probs, classes) >= float(threshold)


def _rate(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else float("nan")


def referral_metrics(labels: Any, probs: Any, threshold: float,
                     classes: Sequence[str] = MALIGNANT_CLASSES) -> dict[str, Any]:
    """Sensitivity, specificity and referral rate at ``threshold``, JSON-ready.

    Returns ``{threshold, sensitivity, specificity, referral_rate, melanoma_sensitivity,
    n_malignant, n_benign, n_referred, n, classes}``; a rate is NaN where its group is empty.
    """
    p = _check_probs(probs)
    y = check_labels(labels, n=len(p), n_classes=NUM_CLASSES)
    malignant = is_malignant(y, classes)
    referred = refer(p, threshold, classes)
    return {
        "threshold": float(threshold),
        "sensitivity": _rate(referred[malignant]),
        "specificity": _rate(~referred[~malignant]),
        "referral_rate": _rate(referred),
        "melanoma_sensitivity": _rate(referred[y == CLASS_INDEX[MELANOMA]]),
        "n_malignant": int(malignant.sum()),
        "n_benign": int((~malignant).sum()),
        "n_referred": int(referred.sum()),
        "n": int(len(y)),
        "classes": [CLASSES[k] for k in malignant_indices(classes)],
    }
