"""The acquisition-shift suite: a classifier scored on a labelled set under every shift of
:data:`kdskin.data.shifts.SHIFTS` (``kdskin evaluate --shifts``, a run's external evaluation).

Per shift: balanced accuracy, macro AUC, melanoma recall, melanoma AUC (one-vs-rest: whether a
lost melanoma recall is a lost ranking or only a moved threshold), their drops from the
``clean`` row (clean minus shifted, computed here), the share of images the decision rules'
out-of-scope check flags, and what their referral rule does (sensitivity for the malignant
classes, melanoma sensitivity, referral rate; None without rules that have each). Works for any
:class:`~kdskin.evaluate.Classifier` (``.keras`` or ``.tflite``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kdskin.data.shifts import CLEAN, SHIFTS, apply_shift, check_shifts
from kdskin.decision import DecisionRules
from kdskin.metrics import classification_metrics
from kdskin.trust.referral import referral_metrics

#: The figures of each row, and the ones whose drop from clean is reported.
SUITE_METRICS: tuple[str, ...] = ("balanced_accuracy", "macro_auc", "melanoma_recall",
                                  "melanoma_auc")


def flagged_share(rules: DecisionRules | None, probs: np.ndarray, images: np.ndarray
                  ) -> float | None:
    """Share of ``images`` (N, S, S, 3) uint8 the out-of-scope rule flags; None without one."""
    if rules is None or rules.ood_threshold is None:
        return None
    flags = [d["out_of_scope"] for d in rules.decide(probs, images)]
    if any(f is None for f in flags):
        return None
    return float(np.mean(flags)) if flags else None


#: The referral rule's figures kept per shift (:func:`kdskin.trust.referral.referral_metrics`).
REFERRAL_METRICS: tuple[str, ...] = ("sensitivity", "melanoma_sensitivity", "referral_rate")


def referral_row(rules: DecisionRules | None, labels: np.ndarray, calibrated: np.ndarray
                 ) -> dict[str, float] | None:
    """The referral rule on ``calibrated`` (N, 7) probabilities: :data:`REFERRAL_METRICS`
    (NaN where a set lacks the class), or None without rules that have a threshold."""
    if rules is None or rules.referral_threshold is None:
        return None
    got = referral_metrics(labels, calibrated, rules.referral_threshold,
                           rules.malignant_classes)
    return {k: float(got[k]) for k in REFERRAL_METRICS}


def shift_suite(classifier: Any, images: np.ndarray, labels: np.ndarray,
                shifts: Sequence[str] | None = None, rules: DecisionRules | None = None,
                calibrate: bool = False) -> dict[str, Any]:
    """Score ``classifier`` on ``images`` (N, S, S, 3) uint8 0..255 with ``labels`` (N,) under
    each shift (None: the whole suite; ``clean`` always first).

    ``rules``: the model's decision rules; their out-of-scope check gives ``flagged``, and with
    ``calibrate`` the metrics are computed on the calibrated probabilities (as ``kdskin
    evaluate`` does), else on what the classifier returns; the rules' out-of-scope and
    referral checks always read the calibrated ones. Returns ``{"n_images",
    "shifts": {name: {"description", metrics..., "drop": {metric: clean - shifted},
    "flagged": share or None, "referral": {sensitivity, melanoma_sensitivity,
    referral_rate} or None}}}``.
    """
    names = check_shifts(shifts)
    labels = np.asarray(labels).astype(int)
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        shifted = apply_shift(name, images)
        probs = np.asarray(classifier.predict(shifted), dtype=np.float64)
        if rules is not None:
            raw, calibrated = rules.before_after(probs)
            probs_used = calibrated if calibrate else probs
        else:
            calibrated = probs_used = probs
        metrics = classification_metrics(labels, probs_used)
        rows[name] = {"description": SHIFTS[name][0],
                      **{k: float(metrics[k]) for k in SUITE_METRICS},
                      "flagged": flagged_share(rules, calibrated, shifted),
                      "referral": referral_row(rules, labels, calibrated)}
    clean = rows[CLEAN]
    for row in rows.values():
        row["drop"] = {k: float(clean[k] - row[k]) for k in SUITE_METRICS}
    return {"n_images": int(len(labels)), "shifts": rows}


def worst(suite: dict[str, Any], metric: str = "balanced_accuracy") -> tuple[str, float]:
    """``(shift, drop)`` of the largest drop of ``metric`` from clean in a suite result."""
    rows = {k: v for k, v in suite["shifts"].items() if k != CLEAN}
    if not rows:
        return CLEAN, 0.0
    name = max(rows, key=lambda k: rows[k]["drop"][metric])
    return name, float(rows[name]["drop"][metric])


def format_suite(suite: dict[str, Any], title: str = "") -> str:
    """The suite as a plain-text table (one row per shift; the referral columns when the
    rules had a referral threshold)."""
    lines = [title] if title else []
    referral = any(row.get("referral") for row in suite["shifts"].values())
    lines.append(f"{'shift':<16} {'bal.acc':>8} {'drop':>7} {'AUC':>7} {'drop':>7} "
                 f"{'mel.rec':>8} {'drop':>7} {'mel.AUC':>8} {'drop':>7} {'flagged':>8}"
                 + (f" {'ref.sens':>8} {'ref.mel':>8} {'ref.rate':>8}" if referral else ""))
    for name, row in suite["shifts"].items():
        d = row["drop"]
        flagged = "-" if row["flagged"] is None else f"{row['flagged']:.2f}"
        ref = row.get("referral") or {}
        refs = "".join(f" {ref[k]:>8.2f}" if k in ref else f" {'-':>8}"
                       for k in REFERRAL_METRICS) if referral else ""
        lines.append(f"{name:<16} {row['balanced_accuracy']:>8.4f} "
                     f"{d['balanced_accuracy']:>+7.4f} {row['macro_auc']:>7.4f} "
                     f"{d['macro_auc']:>+7.4f} {row['melanoma_recall']:>8.4f} "
                     f"{d['melanoma_recall']:>+7.4f} {row['melanoma_auc']:>8.4f} "
                     f"{d['melanoma_auc']:>+7.4f} {flagged:>8}{refs}")
    return "\n".join(lines)


__all__ = ["REFERRAL_METRICS", "SUITE_METRICS", "flagged_share", "format_suite", "referral_row",
           "shift_suite", "worst"]
