"""The decision rules that travel with a deployed model: calibration, referral, out-of-scope.

A run fits them on its validation split (:mod:`kdskin.pipeline.trust`); the exported files carry
them in ``decision.json`` beside ``labels.txt`` (and in the TFLite metadata), with the
temperature already folded into their softmax. ``kdskin predict``, ``kdskin evaluate``,
``kdskin serve`` and ``tflite/classify.py`` apply them the same way:

* probabilities are calibrated: ``softmax(log p / T)`` unless the file already did it;
* the top-1 class's melanoma operating point: ``softmax(log p / T + b)`` with a log-odds offset
  ``b`` on melanoma fitted on validation (:mod:`kdskin.trust.operating_point`; ``class_offsets``,
  None: plain argmax), folded into exported files with the temperature;
* **refer** when P(mel) + P(bcc) + P(akiec) (the set is configurable) reaches the threshold
  fitted for the target sensitivity;
* **out of scope** when the image's statistics (colour, saturation, texture, sharpness,
  exposure, centring; :mod:`kdskin.trust.image_stats`) are further from the training images'
  than the threshold that 95% of in-distribution validation images pass: the image is probably
  not a dermoscopic image of the kind the model was trained on. The classes are still reported.
  (The maximum calibrated probability is the fallback score of older files.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import CLASSES
from kdskin.errors import ConfigError, ModelError
from kdskin.io import read_json, write_json
from kdskin.trust.calibration import apply_temperature_to_probs
from kdskin.trust.image_stats import IMAGE_STATS, features_in_chunks, image_score
from kdskin.trust.ood import is_out_of_scope, ood_score
from kdskin.trust.operating_point import (
    apply_offsets,
    check_offsets,
    remove_offsets,
    top1_effect,
)
from kdskin.trust.referral import MALIGNANT_CLASSES, malignant_score

#: File name of the rules beside an exported model (next to ``labels.txt``).
DECISION_FILE = "decision.json"
#: The out-of-scope score fitted by runs (needs the image, not the model).
OOD_SCORE = IMAGE_STATS
NOT_A_DEVICE = ("Research and education only: not a medical device, not for diagnosis.")


@dataclass(frozen=True)
class DecisionRules:
    """Calibration temperature, referral and out-of-scope thresholds of one model.

    ``temperature_folded``: the model's probabilities are already calibrated (exported files).
    Thresholds are None when the run did not fit them (the rule is then not applied).
    """

    temperature: float = 1.0
    temperature_folded: bool = False
    malignant_classes: tuple[str, ...] = MALIGNANT_CLASSES
    referral_threshold: float | None = None
    target_sensitivity: float | None = None
    ood_score: str = OOD_SCORE
    ood_threshold: float | None = None
    ood_pass_rate: float | None = None
    #: parameters of the image-statistics score (``{"mean", "precision"}``)
    ood_params: dict[str, Any] | None = None
    classes: tuple[str, ...] = field(default=CLASSES)
    #: log-odds offsets ``(7,)`` added after the temperature (the melanoma operating point)
    class_offsets: tuple[float, ...] | None = None
    #: the labelled images the temperature, offsets and referral threshold were fitted on
    fitted_on: str = "validation"

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``(N, 7)`` with the class offsets (unchanged when already
        folded, or T = 1 without offsets)."""
        p = np.asarray(probs, dtype=np.float64)
        if self.temperature_folded:
            return p
        if self.temperature != 1.0:
            p = apply_temperature_to_probs(p, self.temperature)
        return p if self.class_offsets is None else apply_offsets(p, self.class_offsets)

    def uncalibrated(self, probs: np.ndarray) -> np.ndarray:
        """The model's probabilities before temperature scaling and offsets (undo folded
        ones)."""
        p = np.asarray(probs, dtype=np.float64)
        if not self.temperature_folded:
            return p
        if self.class_offsets is not None:
            p = remove_offsets(p, self.class_offsets)
        return p if self.temperature == 1.0 else apply_temperature_to_probs(
            p, 1.0 / self.temperature)

    def in_scope_scores(self, calibrated: np.ndarray, images: np.ndarray | None = None
                        ) -> np.ndarray | None:
        """``(N,)`` out-of-scope scores (higher = more in scope), or None when the rule needs
        the images and none were given."""
        if self.ood_score == IMAGE_STATS:
            if images is None or self.ood_params is None:
                return None
            return image_score(features_in_chunks(images), self.ood_params)
        return ood_score(np.asarray(calibrated, dtype=np.float64), self.ood_score)

    def decide(self, calibrated: np.ndarray, images: np.ndarray | None = None
               ) -> list[dict[str, Any]]:
        """Per image: ``malignant_probability``, ``refer`` (None without a threshold),
        ``in_scope_score`` and ``out_of_scope`` (None without a threshold, or without the
        ``images`` ``(N, S, S, 3)`` uint8 at the model's input size the rule needs)."""
        p = np.asarray(calibrated, dtype=np.float64)
        mal = malignant_score(p, self.malignant_classes)
        score = self.in_scope_scores(p, images)
        if score is None:
            score = np.full(len(p), np.nan)
        oos = (is_out_of_scope(score, self.ood_threshold)
               if self.ood_threshold is not None and not np.isnan(score).any()
               else [None] * len(p))
        out = []
        for i in range(len(p)):
            refer = (None if self.referral_threshold is None
                     else bool(mal[i] >= self.referral_threshold))
            out.append({"malignant_probability": float(mal[i]), "refer": refer,
                        "in_scope_score": None if np.isnan(score[i]) else float(score[i]),
                        "out_of_scope": None if oos[i] is None else bool(oos[i])})
        return out

    def folded(self) -> DecisionRules:
        """The same rules for a file whose softmax already applies the temperature."""
        return DecisionRules(**{**asdict(self), "temperature_folded": True})

    def unfolded(self) -> DecisionRules:
        """The same rules for the model's own (uncalibrated) probabilities."""
        return DecisionRules(**{**asdict(self), "temperature_folded": False})

    def before_after(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(uncalibrated, calibrated)`` probabilities from what the model returned."""
        raw = self.uncalibrated(probs)
        return raw, self.unfolded().calibrate(raw)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["malignant_classes"] = list(self.malignant_classes)
        out["classes"] = list(self.classes)
        out["class_offsets"] = None if self.class_offsets is None else list(self.class_offsets)
        out["notice"] = NOT_A_DEVICE
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = DECISION_FILE) -> DecisionRules:
        try:
            rules = cls(temperature=float(data.get("temperature", 1.0)),
                        temperature_folded=bool(data.get("temperature_folded", False)),
                        malignant_classes=tuple(data.get("malignant_classes",
                                                         MALIGNANT_CLASSES)),
                        referral_threshold=data.get("referral_threshold"),
                        target_sensitivity=data.get("target_sensitivity"),
                        ood_score=str(data.get("ood_score", OOD_SCORE)),
                        ood_threshold=data.get("ood_threshold"),
                        ood_pass_rate=data.get("ood_pass_rate"),
                        ood_params=data.get("ood_params"),
                        classes=tuple(data.get("classes", CLASSES)),
                        class_offsets=(None if data.get("class_offsets") is None else
                                       check_offsets(data["class_offsets"], source)),
                        fitted_on=str(data.get("fitted_on", "validation")))
        except (TypeError, ValueError, AttributeError, ConfigError):
            raise ModelError(f"{source}: not a kdskin decision file; re-export the model with "
                             f"kdskin export") from None
        if rules.classes != CLASSES or not rules.temperature > 0:
            raise ModelError(f"{source}: classes {list(rules.classes)} or temperature "
                             f"{rules.temperature} do not match this kdskin; re-export the model")
        return rules

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())


def load_rules(path: str | Path) -> DecisionRules:
    """Read a ``decision.json``; one-line :class:`ModelError` if it is not one."""
    path = Path(path)
    try:
        data = read_json(path)
    except (OSError, ValueError):
        raise ModelError(f"{path}: cannot read the decision rules; re-export the model with "
                         f"kdskin export") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a kdskin decision file")
    return DecisionRules.from_dict(data, str(path))


def calibrated_probs(rules: DecisionRules | None, probs: np.ndarray) -> np.ndarray:
    """A model's output ``probs`` ``(N, 7)`` after its rules' calibration (float64; as they are
    without rules)."""
    if rules is None:
        return np.asarray(probs, dtype=np.float64)
    return rules.before_after(probs)[1]


def rules_for_model(model_path: str | Path) -> DecisionRules | None:
    """The rules of a model file: ``decision.json`` beside it (exported files), else the trust
    results of the run whose ``models/`` holds it when they were fitted for this model; None
    when neither exists."""
    model_path = Path(model_path)
    beside = model_path.parent / DECISION_FILE
    if beside.is_file():
        return load_rules(beside)
    from kdskin.rundir import RunDir

    run = RunDir.of_model(model_path)
    if run is None or not run.metrics.is_file():
        return None
    trust = run.load_metrics().trust
    rules = trust.get("rules")
    if not rules or trust.get("model") != model_path.stem:
        return None
    return DecisionRules.from_dict(rules, str(run.metrics))


def describe_prediction(probs: np.ndarray, rules: DecisionRules | None, top: int = 3,
                        image: np.ndarray | None = None) -> dict[str, Any]:
    """What ``predict --json`` (and ``kdskin serve``) return for one image's probabilities
    ``(7,)``: calibrated probabilities, the top classes, the referral decision and the
    out-of-scope warning (None where the model has no decision rules). ``image``: the
    ``(S, S, 3)`` uint8 model input, which the out-of-scope check reads."""
    p = np.asarray(probs, dtype=np.float64)[None]
    if rules is not None:
        p = rules.calibrate(p)
    order = np.argsort(-p[0])[:top]
    entry: dict[str, Any] = {
        "top": [{"class": CLASSES[k], "probability": float(p[0, k])} for k in order],
        "probabilities": {c: float(p[0, i]) for i, c in enumerate(CLASSES)},
        "calibrated": rules is not None and rules.temperature != 1.0,
        "refer": None, "malignant_probability": None, "referral_threshold": None,
        "out_of_scope": None, "in_scope_score": None}
    if rules is not None:
        decision = rules.decide(p, None if image is None else np.asarray(image)[None])[0]
        entry.update(decision)
        entry["referral_threshold"] = rules.referral_threshold
    return entry


def score_with_rules(rules: DecisionRules, labels: np.ndarray, probs: np.ndarray
                     ) -> dict[str, Any]:
    """Calibration before/after and the operating point on one labelled set.

    ``probs`` ``(N, 7)``: what the model returns (a file with the temperature folded in, or a
    Keras model's own probabilities; :meth:`DecisionRules.before_after` tells them apart).
    Returns ``{"calibration": calibration_report, "referral": referral_metrics or {}}``, and
    ``"operating_point"`` (:func:`~kdskin.trust.operating_point.top1_effect`) with offsets.
    """
    from kdskin.trust.calibration import calibration_report
    from kdskin.trust.referral import referral_metrics

    raw, calibrated = rules.before_after(probs)
    report = calibration_report(labels, raw, calibrated, temperature=rules.temperature)
    referral = (referral_metrics(labels, calibrated, rules.referral_threshold,
                                 rules.malignant_classes)
                if rules.referral_threshold is not None else {})
    out = {"calibration": report, "referral": referral}
    if rules.class_offsets is not None:  # the top-1 class without and with the offsets
        scaled = DecisionRules(temperature=rules.temperature).calibrate(raw)
        out["operating_point"] = top1_effect(labels, scaled, rules.class_offsets)
    return out
