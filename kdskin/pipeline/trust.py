"""The trust stage of a run: calibration, intervals, the referral operating point and the
out-of-scope check of the final student, all fitted on the validation split.

Results go to ``metrics.json["trust"]``; ``trust["rules"]`` are the
:class:`~kdskin.decision.DecisionRules` the export writes beside the files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdskin.config import Config
from kdskin.console import log
from kdskin.decision import OOD_SCORE, DecisionRules, score_with_rules
from kdskin.pipeline.data import RunData
from kdskin.rundir import RunDir


def intervals(cfg: Config, labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Stratified bootstrap 95% intervals of the headline metrics (seeded)."""
    from kdskin.trust.uncertainty import bootstrap_ci

    return bootstrap_ci(labels, probs, n_resamples=cfg.trust.bootstrap_resamples,
                        seed=cfg.trust.bootstrap_seed)


def paired_difference(cfg: Config, labels: np.ndarray, probs_a: np.ndarray,
                      probs_b: np.ndarray) -> dict[str, Any]:
    """Paired bootstrap interval of ``a - b`` on the same images."""
    from kdskin.trust.uncertainty import paired_bootstrap_diff

    return paired_bootstrap_diff(labels, probs_a, probs_b,
                                 n_resamples=cfg.trust.bootstrap_resamples,
                                 seed=cfg.trust.bootstrap_seed)


def fit_rules(cfg: Config, val_labels: np.ndarray, val_probs: np.ndarray,
              train_images: np.ndarray, val_images: np.ndarray) -> DecisionRules:
    """Temperature (NLL on validation), the melanoma offset of the top-1 class (when
    ``trust.melanoma_offset`` or ``trust.min_melanoma_recall`` asks for one; on the calibrated
    validation probabilities), referral threshold (target sensitivity on the calibrated
    validation probabilities with the offset), and the out-of-scope check: the
    image-statistics Gaussian of the training images, its threshold passing
    ``cfg.trust.ood_pass_rate`` of validation images."""
    from kdskin.trust.image_stats import features_in_chunks, fit_image_gaussian, image_score
    from kdskin.trust.ood import fit_ood_threshold

    t = cfg.trust
    temperature, offsets, threshold = fit_operating_point(cfg, val_labels, val_probs)
    params = fit_image_gaussian(features_in_chunks(train_images))
    return DecisionRules(
        temperature=temperature, malignant_classes=tuple(t.malignant_classes),
        referral_threshold=threshold, target_sensitivity=t.target_sensitivity,
        ood_score=OOD_SCORE,
        ood_threshold=fit_ood_threshold(image_score(features_in_chunks(val_images), params),
                                        t.ood_pass_rate),
        ood_pass_rate=t.ood_pass_rate, ood_params=params, class_offsets=offsets)


def fit_operating_point(cfg: Config, labels: np.ndarray, probs: np.ndarray
                        ) -> tuple[float, tuple[float, ...] | None, float]:
    """``(temperature, class offsets (7,) or None, referral threshold)`` fitted on ``labels``
    ``(N,)`` and the model's own ``probs`` ``(N, 7)``: the temperature (NLL, when
    ``trust.calibrate``), then the melanoma offset (``trust.melanoma_offset``,
    ``trust.min_melanoma_recall``) and the referral threshold on the calibrated probabilities."""
    from kdskin.trust.calibration import apply_temperature_to_probs, fit_temperature_from_probs
    from kdskin.trust.operating_point import apply_offsets, fit_melanoma_offset, offsets_vector
    from kdskin.trust.referral import fit_referral_threshold

    t = cfg.trust
    temperature = fit_temperature_from_probs(probs, labels) if t.calibrate else 1.0
    calibrated = apply_temperature_to_probs(probs, temperature)
    offsets = None
    if t.melanoma_offset != "none" or t.min_melanoma_recall is not None:
        offsets = offsets_vector(fit_melanoma_offset(labels, calibrated, t.melanoma_offset,
                                                     t.min_melanoma_recall))
        calibrated = apply_offsets(calibrated, offsets)
    threshold = fit_referral_threshold(labels, calibrated, t.target_sensitivity,
                                       tuple(t.malignant_classes))
    return float(temperature), offsets, threshold


def adapt_rules(cfg: Config, rules: DecisionRules, labels: np.ndarray, probs: np.ndarray,
                fitted_on: str) -> DecisionRules:
    """``rules`` (a run's, not folded) with the operating point refitted on another labelled
    set (:func:`fit_operating_point`; e.g. a clinic's own images, ``probs`` ``(N, 7)`` the
    model's own): temperature, melanoma offset and referral threshold. The out-of-scope check is
    kept: it describes the training images, not the new set. ``fitted_on`` names the set."""
    import dataclasses

    temperature, offsets, threshold = fit_operating_point(cfg, labels, probs)
    return dataclasses.replace(rules, temperature=temperature, class_offsets=offsets,
                               referral_threshold=threshold,
                               malignant_classes=tuple(cfg.trust.malignant_classes),
                               target_sensitivity=cfg.trust.target_sensitivity,
                               fitted_on=fitted_on)


def trust_stage(cfg: Config, data: RunData, run: RunDir, name: str, model: Any,
                test_probs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fit and measure the decision rules of the run's final model ``name``.

    ``test_probs``: test-split probabilities of every model of the run (for the paired KD-gain
    intervals). Writes ``plots/NAME_reliability.png``.
    """
    from kdskin.data.out_of_scope import generate_out_of_scope
    from kdskin.evaluate import KerasClassifier
    from kdskin.trust.calibration import plot_reliability
    from kdskin.trust.ood import ood_metrics, ood_score

    clf = KerasClassifier(model)
    val_probs = clf.predict(data.val.images)
    test = test_probs[name]
    rules = fit_rules(cfg, data.val.labels, val_probs, data.train.images, data.val.images)
    offset = ("" if rules.class_offsets is None else
              f"; melanoma offset {max(rules.class_offsets, key=abs):+.2f} (log-odds, top-1 class)")
    log(f"trust: temperature {rules.temperature:.3f}{offset}; refer at malignant probability >= "
        f"{rules.referral_threshold:.3f} (validation sensitivity target "
        f"{rules.target_sensitivity:.2f}); out-of-scope check on image statistics, "
        f"{rules.ood_pass_rate:.0%} of validation images pass")
    result: dict[str, Any] = {"model": name, "rules": rules.to_dict(),
                              "fitted_on": "validation split",
                              "val": score_with_rules(rules, data.val.labels, val_probs),
                              "test": score_with_rules(rules, data.test.labels, test)}
    plot_reliability(result["test"]["calibration"], run.plot(name, "reliability"),
                     f"{name}: reliability on the test split")
    # Out of scope: generated inputs the model was not made for, against the test split.
    rng = np.random.default_rng(cfg.trust.bootstrap_seed)
    lesions = data.val.images[rng.choice(len(data.val), size=min(32, len(data.val)),
                                         replace=False)]
    images, kinds = generate_out_of_scope(cfg.trust.ood_images, cfg.data.image_size,
                                          seed=cfg.trust.bootstrap_seed, lesion_images=lesions)
    out_probs = rules.calibrate(clf.predict(images))
    result["out_of_scope"] = {
        "score": OOD_SCORE, "threshold": rules.ood_threshold, "pass_rate": rules.ood_pass_rate,
        "n_generated": len(images), "kinds": sorted(set(kinds)),
        "metrics": ood_metrics(rules.in_scope_scores(rules.calibrate(test), data.test.images),
                               rules.in_scope_scores(out_probs, images), rules.ood_threshold,
                               kinds_out=kinds)}
    # The model's own confidence as the score, for comparison (not used by the rules).
    from kdskin.trust.ood import fit_ood_threshold

    val_msp = ood_score(rules.calibrate(val_probs), "max_softmax")
    msp_threshold = fit_ood_threshold(val_msp, rules.ood_pass_rate or 0.95)
    result["out_of_scope"]["compared"] = {"max_softmax": ood_metrics(
        ood_score(rules.calibrate(test), "max_softmax"), ood_score(out_probs, "max_softmax"),
        msp_threshold, kinds_out=kinds)}
    m = result["out_of_scope"]["metrics"]
    log(f"trust: out-of-scope check AUROC {m['auroc']:.3f}, generated images passing "
        f"{m['false_pass_rate']:.3f}, test images passing {m['in_pass_rate']:.3f}")
    from kdskin.rundir import student_name

    alone = student_name("baseline")
    if alone in test_probs and alone != name:
        result["comparisons"] = {f"{name} - {alone}": paired_difference(
            cfg, data.test.labels, test, test_probs[alone])}
    result["bootstrap"] = {"n_resamples": cfg.trust.bootstrap_resamples,
                           "seed": cfg.trust.bootstrap_seed, "alpha": 0.05,
                           "stratified": True}
    return result
