"""The melanoma operating point of the top-1 class: a log-odds offset on melanoma, fitted on
the validation split.

A model trained on class-balanced batches still names melanoma less often than the other
classes it is confused with (nevus, keratosis). Adding an offset ``b`` to melanoma's
log-probability before the argmax (``softmax(log p + b e_mel)``) moves the top-1 decision towards
melanoma without retraining; the ranking of images by P(mel) (its AUC) is unchanged. The offset
is fitted on the validation split in one of two ways:

* ``balanced``: the offset in ``OFFSET_GRID`` that maximises validation balanced accuracy (ties:
  the smallest ``|b|``), the metric runs are chosen on; one free parameter, so it does not
  over-fit the validation split the way an offset per class does;
* ``min_recall``: in addition, the smallest offset at least that large whose validation melanoma
  recall reaches the target (a clinical floor; it costs other classes' recall).

Exports fold the offset into the file after the temperature (``decision.json`` records it), so
every consumer of the file gets the same top-1 class. Shapes: ``labels`` ``(N,)`` class indices in
``CLASSES`` order, ``probs`` ``(N, 7)``.

The prior offset (:func:`fit_prior_offset`) is the same idea for every class at once: the
offsets ``-tau * log(training prior)`` with one ``tau`` fitted on validation (post-hoc logit
adjustment). kdskin uses it for the teacher's distillation targets (``distill.teacher_offset``),
where the bias is towards the frequent classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import softmax

from kdskin.constants import CLASS_INDEX, MELANOMA, MELANOMA_OFFSET_MODES, NUM_CLASSES
from kdskin.errors import ConfigError
from kdskin.metrics import balanced_accuracy
from kdskin.trust.calibration import check_labels_probs, probs_to_logits

OFFSET_MODES = MELANOMA_OFFSET_MODES
#: Offsets (log-odds) searched on the validation split.
OFFSET_GRID: np.ndarray = np.round(np.arange(-1.0, 3.0001, 0.05), 2)
_MEL = CLASS_INDEX[MELANOMA]


def offsets_vector(mel_offset: float) -> tuple[float, ...]:
    """The per-class offsets ``(7,)`` for a melanoma offset (zero elsewhere)."""
    out = [0.0] * NUM_CLASSES
    out[_MEL] = float(mel_offset)
    return tuple(out)


def check_offsets(offsets: Any, source: str = "class_offsets") -> tuple[float, ...]:
    """``offsets`` as a tuple of 7 finite floats; ConfigError naming ``source`` otherwise."""
    try:
        out = tuple(float(v) for v in offsets)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected {NUM_CLASSES} numbers, got {offsets!r}") from None
    if len(out) != NUM_CLASSES or not all(np.isfinite(out)):
        raise ConfigError(f"{source}: expected {NUM_CLASSES} finite numbers (one per class), "
                          f"got {list(out)}")
    return out


def apply_offsets(probs: Any, offsets: Any) -> np.ndarray:
    """``softmax(log p + offsets)`` ``(N, 7)`` float64 (``probs`` ``(N, 7)``, offsets ``(7,)``)."""
    return softmax(probs_to_logits(probs) + np.asarray(check_offsets(offsets)), axis=1)


def remove_offsets(probs: Any, offsets: Any) -> np.ndarray:
    """The inverse of :func:`apply_offsets` ``(N, 7)``."""
    return apply_offsets(probs, [-v for v in check_offsets(offsets)])


def _scores(labels: np.ndarray, logp: np.ndarray, offset: Any) -> tuple[float, float]:
    """(balanced accuracy, melanoma recall) of ``argmax(logp + b)``; ``offset``: the melanoma
    offset (a float) or every class's ``(7,)``."""
    b = np.asarray(offset, dtype=np.float64)
    scores = logp + (b if b.ndim else np.asarray(offsets_vector(float(b))))  # argmax only
    mel = labels == _MEL
    recall = float(np.mean(scores[mel].argmax(axis=1) == _MEL)) if mel.any() else np.nan
    return balanced_accuracy(labels, scores), recall


def fit_melanoma_offset(labels: Any, probs: Any, mode: str = "balanced",
                        min_recall: float | None = None) -> float:
    """The melanoma log-odds offset for validation ``labels`` ``(N,)`` and (calibrated)
    ``probs`` ``(N, 7)`` (module docstring). ``mode`` ``none`` gives 0 unless ``min_recall``
    asks for more. A ``min_recall`` no offset of the grid reaches gives the grid's largest."""
    if mode not in OFFSET_MODES:
        raise ConfigError(f"melanoma offset mode {mode!r}: choose one of "
                          f"{', '.join(OFFSET_MODES)}")
    if min_recall is not None and not 0.0 < min_recall <= 1.0:
        raise ConfigError(f"min_melanoma_recall must be in (0, 1], got {min_recall}")
    y, p = check_labels_probs(labels, probs)
    if min_recall is not None and not (y == _MEL).any():
        raise ConfigError("min_melanoma_recall needs melanoma images in the validation split")
    logp = probs_to_logits(p)
    offset = 0.0
    if mode == "balanced":
        scored = [(_scores(y, logp, b)[0], -abs(b), b) for b in OFFSET_GRID]
        offset = float(max(scored)[2])
    if min_recall is not None:
        reaching = [b for b in OFFSET_GRID if b >= offset
                    and _scores(y, logp, b)[1] >= min_recall - 1e-12]
        offset = float(reaching[0]) if reaching else float(OFFSET_GRID[-1])
    return offset


def top1_effect(labels: Any, probs: Any, offsets: Any) -> dict[str, float]:
    """Balanced accuracy and melanoma recall of the top-1 class without and with ``offsets``
    (``probs`` ``(N, 7)`` before them)."""
    y, p = check_labels_probs(labels, probs)
    logp = probs_to_logits(p)
    b = np.asarray(check_offsets(offsets))
    (ba0, r0), (ba1, r1) = _scores(y, logp, 0.0), _scores(y, logp, b)
    return {"melanoma_offset": float(b[_MEL]), "balanced_accuracy_before": ba0,
            "balanced_accuracy_after": ba1, "melanoma_recall_before": r0,
            "melanoma_recall_after": r1}


#: Strengths ``tau`` of the prior offset searched on the validation split (0: none).
PRIOR_TAU_GRID: np.ndarray = np.round(np.arange(0.0, 2.0001, 0.05), 2)


def prior_offsets(log_prior: Any, tau: float) -> tuple[float, ...]:
    """``-tau * log_prior`` ``(7,)``, centred (the softmax ignores a common shift): post-hoc
    logit adjustment (Menon et al., ICLR 2021). ``log_prior`` ``(7,)``: the log class
    frequencies of the training split (:func:`kdskin.data.pipeline.logit_adjustment` with
    ``tau`` 1). ``tau = 1`` turns a model that predicts with the training prior into one that
    predicts as if every class were equally likely."""
    lp = np.asarray(log_prior, dtype=np.float64).reshape(-1)
    if lp.shape != (NUM_CLASSES,) or not np.all(np.isfinite(lp)) or np.any(lp > 0):
        raise ConfigError(f"prior_offsets: log_prior must be {NUM_CLASSES} finite log "
                          f"frequencies (<= 0), got {lp.tolist()}")
    b = -float(tau) * lp
    return tuple(float(v) for v in b - b.mean())


def fit_prior_offset(labels: Any, logits: Any, log_prior: Any) -> dict[str, Any]:
    """The prior offset (:func:`prior_offsets`) whose ``tau`` in :data:`PRIOR_TAU_GRID`
    maximises the balanced accuracy of ``argmax(logits + offsets)`` on validation ``labels``
    ``(N,)`` and ``logits`` ``(N, 7)`` (ties: the smallest ``tau``); one free parameter.

    Returns ``{"tau", "offsets" (7,), "balanced_accuracy_before", "balanced_accuracy_after"}``.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != NUM_CLASSES or not np.all(np.isfinite(z)):
        raise ConfigError(f"fit_prior_offset: logits must be finite (N, {NUM_CLASSES}), got "
                          f"shape {z.shape}")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if y.shape[0] != z.shape[0]:
        raise ConfigError(f"fit_prior_offset: {y.shape[0]} labels for {z.shape[0]} rows of logits")
    scored = [(_scores(y, z, np.asarray(prior_offsets(log_prior, t)))[0], -t, t)
              for t in PRIOR_TAU_GRID]
    best, _, tau = max(scored)
    return {"tau": float(tau), "offsets": list(prior_offsets(log_prior, float(tau))),
            "balanced_accuracy_before": scored[0][0],  # PRIOR_TAU_GRID[0] is 0: no offset
            "balanced_accuracy_after": float(best)}
