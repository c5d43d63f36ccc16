"""The arithmetic of stored targets (numpy, no TensorFlow): ensembles and test-time augmentation
of a teacher's outputs, as logits a soft-target loss takes.

Every loss of :mod:`kdskin.distill.losses` softens teacher logits ``z`` as ``softmax(z / T)``.
An ensemble's target at temperature ``T`` is the mean of its members' softened probabilities
(MEAL V2); :func:`ensemble_logits` writes it as the logits ``T log(mean_m softmax(z_m / T))``,
whose own softening at ``T`` gives back exactly that mean, so the losses need no change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    """``log softmax`` over the last axis (float64, stable)."""
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def mean_probability_logits(logits: Sequence[np.ndarray], weights: Sequence[float] | None = None,
                            temperature: float = 1.0) -> np.ndarray:
    """``T log(sum_m w_m softmax(z_m / T))`` over the models ``m`` (weights sum to 1; default
    equal), each ``(..., C)``; returns ``(..., C)`` float32. One model at ``T`` = 1 gives its
    logits back up to a constant per row."""
    if not logits:
        raise ValueError("mean_probability_logits needs at least one model's logits")
    t = float(temperature)
    if not t > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    w = np.full(len(logits), 1.0 / len(logits)) if weights is None else np.asarray(weights, float)
    if w.shape != (len(logits),) or not np.isclose(w.sum(), 1.0) or (w < 0).any():
        raise ValueError(f"weights must be {len(logits)} non-negative numbers summing to 1, "
                         f"got {w.tolist()}")
    stacked = np.stack([log_softmax(np.asarray(z) / t) for z in logits])  # (M, ..., C)
    top = stacked.max(axis=0)
    mixed = top + np.log(np.tensordot(w, np.exp(stacked - top), axes=1))
    return (t * mixed).astype(np.float32)


def ensemble_logits(members: Sequence[np.ndarray], temperature: float) -> np.ndarray:
    """The targets of an ensemble of ``members`` (each ``(N, K, C)`` stored logits, one member
    each) at ``temperature``: :func:`mean_probability_logits` with equal weights."""
    return mean_probability_logits(list(members), temperature=temperature)


__all__ = ["ensemble_logits", "log_softmax", "mean_probability_logits"]
