"""An out-of-scope warning: a score per image and a threshold below which the image is flagged.

Direction: every score here is **higher = more in scope** (more like the images the model was
trained on). An image *passes* when ``score >= threshold`` and is flagged out of scope when
``score < threshold``. The threshold is fitted on in-distribution validation images so that a
chosen fraction of them (default 95 %) passes; it is measured on generated inputs the model was
not made for (``kdskin.data.out_of_scope``) as AUROC and false-pass rate.

Scores:
* ``max_softmax``: the top class probability (Hendrycks & Gimpel 2017); works on a deployed
  model's probabilities, so it is the one exported files can use.
* ``neg_entropy``: minus the entropy of the probabilities (nats), also from probabilities.
* ``energy``: ``T * logsumexp(logits / T)``, minus the free energy (Liu et al. 2020); needs real
  logits: from probabilities it is constant (``log sum p = 0``).

Shapes: ``probs`` / ``logits`` ``(N, K)``, scores ``(N,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from kdskin.errors import ConfigError, DataError
from kdskin.trust.calibration import EPS, check_logits, check_probs
from kdskin.trust.referral import rate_threshold

#: Fraction of in-distribution validation images that pass the default threshold.
PASS_RATE = 0.95
#: Score names accepted by :func:`ood_score`.
SCORES: tuple[str, ...] = ("max_softmax", "neg_entropy", "energy")


def max_softmax_score(probs: Any) -> np.ndarray:
    """Maximum class probability ``(N,)`` of ``probs`` ``(N, K)`` (higher = in scope)."""
    return check_probs(probs).max(axis=1)


def neg_entropy_score(probs: Any) -> np.ndarray:
    """Minus the entropy, ``sum_k p_k log p_k`` ``(N,)``, of ``probs`` ``(N, K)`` (higher = in)."""
    p = check_probs(probs)
    return (p * np.log(np.clip(p, EPS, None))).sum(axis=1)


def energy_score(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """``T * logsumexp(logits / T)`` ``(N,)`` of ``logits`` ``(N, K)`` (higher = in scope)."""
    if not temperature > 0:
        raise DataError(f"temperature must be positive, got {temperature!r}")
    return temperature * logsumexp(check_logits(logits) / temperature, axis=1)


def ood_score(outputs: Any, score: str = "max_softmax") -> np.ndarray:
    """Score ``(N,)`` named ``score`` of model outputs ``(N, K)`` (logits for ``energy``)."""
    if score == "max_softmax":
        return max_softmax_score(outputs)
    if score == "neg_entropy":
        return neg_entropy_score(outputs)
    if score == "energy":
        return energy_score(outputs)
    raise ConfigError(f"unknown out-of-scope score {score!r}; choose from {', '.join(SCORES)}")


def fit_ood_threshold(scores_in_val: Any, pass_rate: float = PASS_RATE) -> float:
    """Largest threshold passing at least ``pass_rate`` of in-distribution ``scores`` ``(N,)``."""
    return rate_threshold(scores_in_val, pass_rate)


def _scores(scores: Any, name: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise DataError(f"{name} is empty")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{name} contains NaN or infinite values")
    return s


def is_out_of_scope(scores: Any, threshold: float) -> np.ndarray:
    """Bool ``(N,)``: ``scores < threshold`` (the image is unlike the training images)."""
    return _scores(scores, "scores") < float(threshold)


def ood_metrics(scores_in: Any, scores_out: Any, threshold: float,
                kinds_out: Sequence[str] | None = None) -> dict[str, Any]:
    """How well ``threshold`` separates in-distribution from out-of-scope images, JSON-ready.

    ``scores_in`` ``(N_in,)`` of in-distribution images (e.g. the test split), ``scores_out``
    ``(N_out,)`` of out-of-scope ones, optional ``kinds_out`` (``N_out`` names) for a per-kind
    false-pass rate. Returns ``{auroc, false_pass_rate, in_pass_rate, threshold, n_in, n_out}``
    and ``false_pass_rate_by_kind`` when kinds are given. AUROC: probability that an
    in-distribution image scores above an out-of-scope one (1 = perfect, 0.5 = chance).
    """
    s_in, s_out = _scores(scores_in, "scores_in"), _scores(scores_out, "scores_out")
    t = float(threshold)
    passed = s_out >= t
    out: dict[str, Any] = {
        "auroc": float(roc_auc_score(np.r_[np.ones(s_in.size), np.zeros(s_out.size)],
                                     np.r_[s_in, s_out])),
        "false_pass_rate": float(passed.mean()),
        "in_pass_rate": float((s_in >= t).mean()),
        "threshold": t,
        "n_in": int(s_in.size),
        "n_out": int(s_out.size),
    }
    if kinds_out is not None:
        kinds = np.asarray(list(kinds_out), dtype=object)
        if kinds.size != s_out.size:
            raise DataError(f"{kinds.size} kinds for {s_out.size} out-of-scope scores")
        out["false_pass_rate_by_kind"] = {
            str(k): float(passed[kinds == k].mean()) for k in dict.fromkeys(kinds.tolist())}
    return out
