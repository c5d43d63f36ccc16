"""A run's final student fine-tuned on a clinic's labelled images (``kdskin adapt --fine-tune``).

A new operating point cannot fix a ranking that does not separate the classes at a clinic whose
images differ from HAM10000's; training on the clinic's own labelled images can. The clinic's
lesions (its images, when its metadata has no lesion ids) are split once, stratified by class
(:func:`kdskin.data.split.lesion_grouped_split`): the student is fine-tuned and its operating
point refitted on one part, and every figure is measured on the held-out rest, which the model
never sees. Forgetting is bounded by rehearsal (HAM10000 training images mixed into every
epoch) and measured on the run's own test split. Settings: :class:`kdskin.config.AdaptConfig`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import AdaptConfig, AugmentConfig, Config
from kdskin.constants import CLASSES
from kdskin.data.pipeline import SplitArrays
from kdskin.errors import KdskinError

#: Each class needs an image to fine-tune on and one held out.
MIN_PER_CLASS = 2


def clinic_parts(root: str | Path, image_size: int, cfg: AdaptConfig
                 ) -> tuple[SplitArrays, SplitArrays, dict[str, Any]]:
    """``(fit part, held-out part, what the split was)`` of the labelled folder ``root``
    (HAM10000 or ISIC 2018 layout) decoded at ``image_size``; one-line :class:`KdskinError`
    for too few images or a class with too few (nothing is decoded then)."""
    from kdskin.data.datasets import read_dataset
    from kdskin.data.pipeline import decode_split
    from kdskin.data.split import lesion_grouped_split
    from kdskin.pipeline.external import detect_format

    fmt = detect_format(str(root))
    dataset = read_dataset(str(root), fmt, strict=False)
    table = dataset.table
    counts = table["dx"].value_counts()
    if len(table) < cfg.min_images:
        raise KdskinError(f"{root}: {len(table)} labelled images; adapt --fine-tune needs at "
                          f"least {cfg.min_images} (adapt.min_images): with fewer, the held-out "
                          f"part's figures have 95% intervals wider than about +-0.2")
    few = [c for c in CLASSES if counts.get(c, 0) < MIN_PER_CLASS]
    if few:
        raise KdskinError(f"{root}: " + ", ".join(f"{c} {counts.get(c, 0)}" for c in few)
                          + f" image(s); every class needs at least {MIN_PER_CLASS} (one to "
                          f"fine-tune on, one held out): add labelled images of "
                          f"{', '.join(few)}")
    grouped = "lesion" if (table["lesion_id"] != table["image_id"]).any() else "image"
    split = lesion_grouped_split(table, (1.0 - cfg.holdout, 0.0, cfg.holdout), cfg.seed)
    arrays, unreadable = decode_split(dataset, split, image_size, progress=True)
    fit, held = arrays["train"], arrays["test"]
    lesion = dict(zip(table["image_id"], table["lesion_id"], strict=True))
    fit_lesions = [lesion[i] for i in fit.image_ids]
    info = {"data": str(root), "format": fmt, "grouped_by": grouped, "holdout": cfg.holdout,
            "seed": cfg.seed, "n_fit": len(fit), "n_held_out": len(held),
            "unreadable_images": len(unreadable), "held_out_images": list(held.image_ids),
            "fit_lesions": fit_lesions,
            "class_counts": {part: {c: int(np.sum(a.labels == i)) for i, c in enumerate(CLASSES)}
                             for part, a in (("fit", fit), ("held_out", held))}}
    return fit, held, info


def _augment(cfg: Config) -> AugmentConfig:
    """The fine-tune's augmentation: flips only, or the run's own without stored views."""
    import dataclasses

    if cfg.adapt.augment == "run":
        return dataclasses.replace(cfg.augment, views=0)
    return AugmentConfig(enabled=True, flip=True, rotation=0.0, zoom=0.0, brightness=0.0,
                         contrast=0.0, hue=0.0, saturation=0.0)


def fine_tune(model: Any, fit: SplitArrays, rehearsal: SplitArrays, cfg: Config
              ) -> dict[str, Any]:
    """Fine-tune the kdskin student ``model`` in place on ``fit`` (the clinic's images) with
    ``cfg.adapt.rehearsal`` HAM10000 training images of ``rehearsal`` per clinic image drawn
    afresh each epoch: class-weighted cross-entropy on the fused ``logits`` (the exits carry no
    loss), Adam at ``adapt.learning_rate``, ``adapt.epochs`` epochs. Returns what was done."""
    import keras

    from kdskin.data.pipeline import class_weights, make_tf_dataset
    from kdskin.models.contract import output_names
    from kdskin.train import compile_classifier

    a = cfg.adapt
    keras.utils.set_random_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    n_rehearse = int(round(a.rehearsal * len(fit))) if len(rehearsal) else 0

    def epoch_set() -> tuple[np.ndarray, np.ndarray]:
        idx = rng.choice(len(rehearsal), n_rehearse, replace=n_rehearse > len(rehearsal)) \
            if n_rehearse else np.zeros(0, int)
        return (np.concatenate([fit.images, rehearsal.images[idx]]),
                np.concatenate([fit.labels, rehearsal.labels[idx]]).astype(int))

    sets = [epoch_set() for _ in range(a.epochs)]
    weights = class_weights(np.concatenate([labels for _, labels in sets]))
    compile_classifier(model, a.learning_rate, class_weight=weights, exit_weight=0.0)
    augment, names = _augment(cfg), output_names(model)
    start, losses = time.perf_counter(), []
    for epoch, (images, labels) in enumerate(sets):
        ds = make_tf_dataset(images, labels, a.batch_size, training=True, augment=augment,
                             seed=a.seed + epoch, targets=names if len(names) > 1 else None,
                             cache=False)
        history = model.fit(ds, epochs=1, verbose=0)
        losses.append(float(history.history["loss"][-1]))
    return {"epochs": a.epochs, "learning_rate": a.learning_rate, "batch_size": a.batch_size,
            "images_per_epoch": {"clinic": len(fit), "ham10000_rehearsal": n_rehearse},
            "augment": a.augment, "loss": "class-weighted cross-entropy on the fused logits",
            "loss_per_epoch": [round(x, 4) for x in losses],
            "seconds": round(time.perf_counter() - start, 1)}


def scores(labels: np.ndarray, probs: np.ndarray, rules: Any = None) -> dict[str, float]:
    """What a model's ``probs`` (N, 7) do on ``labels`` (N,): balanced accuracy, macro and
    melanoma AUC, melanoma recall; with ``rules`` (:class:`~kdskin.decision.DecisionRules`)
    the top-1 figures after its temperature and offsets, and its referral rule's sensitivity,
    specificity and referral rate."""
    from kdskin.metrics import classification_metrics
    from kdskin.trust.referral import referral_metrics

    ranked = classification_metrics(labels, probs)
    out = {"macro_auc": float(ranked["macro_auc"]),
           "melanoma_auc": float(ranked["melanoma_auc"])}
    decided = ranked if rules is None else classification_metrics(labels, rules.calibrate(probs))
    out |= {"balanced_accuracy": float(decided["balanced_accuracy"]),
            "melanoma_recall": float(decided["melanoma_recall"])}
    if rules is not None:
        ref = referral_metrics(labels, rules.calibrate(probs), rules.referral_threshold,
                               rules.malignant_classes)
        out |= {f"referral_{k}": float(ref[k]) for k in ("sensitivity", "specificity",
                                                          "referral_rate")}
    return out


def _referral_interval(cfg: Config, labels: np.ndarray, probs: np.ndarray, rules: Any
                       ) -> dict[str, list[float]]:
    """95% bootstrap intervals (:func:`kdskin.trust.uncertainty.bootstrap_ci`, stratified,
    ``trust.bootstrap_*``) of the referral rule's sensitivity and specificity on ``labels``
    (N,) and ``probs`` (N, 7)."""
    from kdskin.trust.referral import referral_metrics
    from kdskin.trust.uncertainty import bootstrap_ci

    def rate(key: str) -> Callable[[np.ndarray, np.ndarray], float]:
        return lambda y, p: referral_metrics(y, p, rules.referral_threshold,
                                             rules.malignant_classes)[key]

    ci = bootstrap_ci(labels, rules.calibrate(probs),
                      {k: rate(k) for k in ("sensitivity", "specificity")},
                      n_resamples=cfg.trust.bootstrap_resamples, seed=cfg.trust.bootstrap_seed)
    return {k: [round(v["low"], 4), round(v["high"], 4)] for k, v in ci.items()}


def refit_out_of_scope(cfg: Config, rules: Any, clinic: np.ndarray, ham_train: np.ndarray,
                       ham_val: np.ndarray) -> Any:
    """``rules`` with the out-of-scope check refitted to learn the clinic: the image-statistics
    Gaussian of the clinic's fit-part images ``clinic`` together with the run's training images
    ``ham_train`` (the run's as the fallback), its threshold passing ``trust.ood_pass_rate`` of
    the clinic's images and of the run's validation images ``ham_val`` (all ``(N, S, S, 3)``
    uint8). A rule that reads the probabilities only is kept as it is."""
    import dataclasses

    from kdskin.decision import IMAGE_STATS
    from kdskin.trust.image_stats import features_in_chunks, fit_image_gaussian, image_score
    from kdskin.trust.ood import fit_ood_threshold

    if rules.ood_score != IMAGE_STATS:
        return rules
    clinic_features = features_in_chunks(clinic)
    params = fit_image_gaussian(np.concatenate([clinic_features,
                                                features_in_chunks(ham_train)]))
    passing = np.concatenate([image_score(clinic_features, params),
                              image_score(features_in_chunks(ham_val), params)])
    threshold = fit_ood_threshold(passing, cfg.trust.ood_pass_rate)
    return dataclasses.replace(rules, ood_params=params, ood_threshold=threshold)


def flagged(rules: Any, images: np.ndarray, probs: np.ndarray) -> float | None:
    """Share of ``images`` (their model ``probs``) the out-of-scope check flags (None without
    a check)."""
    from kdskin.trust.ood import is_out_of_scope

    if rules.ood_threshold is None:
        return None
    scores = rules.in_scope_scores(rules.calibrate(probs), images)
    return None if scores is None else float(np.mean(is_out_of_scope(scores,
                                                                      rules.ood_threshold)))


def _out_of_fold(cfg: Config, load: Callable[[], Any], fit: SplitArrays, lesions: list[str],
                 rehearsal: SplitArrays) -> np.ndarray:
    """``(N, 7)`` probabilities of each fit-part image from a student fine-tuned on the other
    ``adapt.folds - 1`` lesion-grouped folds (each a fresh copy of the run's student)."""
    from kdskin.data.split import lesion_folds
    from kdskin.evaluate import KerasClassifier

    fold = lesion_folds(fit.image_ids, fit.labels, lesions, cfg.adapt.folds, cfg.adapt.seed)
    out = np.zeros((len(fit), len(CLASSES)))
    for k in range(cfg.adapt.folds):
        train, held = fold != k, fold == k
        model = load()
        fine_tune(model, SplitArrays(fit.images[train], fit.labels[train],
                                     [i for i, t in zip(fit.image_ids, train, strict=True) if t]),
                  rehearsal, cfg)
        out[held] = KerasClassifier(model).predict(fit.images[held])
        del model
    return out


def adapt_fine_tuned(cfg: Config, load: Callable[[], Any], rules: Any, root: str | Path,
                     ham: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune the run's final student (``load()``: a fresh copy of it) on the fit part of the
    clinic folder ``root`` and refit ``rules`` (the run's :class:`~kdskin.decision.
    DecisionRules`) on it (on out-of-fold probabilities with ``adapt.folds`` > 1); ``ham``: the
    run's :class:`~kdskin.pipeline.data.RunData` (training split: rehearsal; test split:
    forgetting). Returns ``(the fine-tuned student, the refitted rules, the record)``: the split,
    what the fine-tune did, and the figures on the held-out part (the run's model with its rules
    and with rules refitted on the fit part, against the fine-tuned one) and on the HAM10000 test
    split (argmax of each model: forgetting)."""
    from kdskin.console import log
    from kdskin.data.out_of_scope import SYNTHETIC_KINDS, generate_out_of_scope
    from kdskin.evaluate import KerasClassifier
    from kdskin.models.contract import input_size
    from kdskin.pipeline.trust import adapt_rules

    model = load()
    fit, held, split = clinic_parts(root, input_size(model), cfg.adapt)
    lesions = split.pop("fit_lesions")
    log(f"adapt: {split['n_fit']} images of {root} to fine-tune on, {split['n_held_out']} held "
        f"out (split by {split['grouped_by']})")

    def predict(images: np.ndarray) -> np.ndarray:
        return KerasClassifier(model).predict(images)

    fitted_on = f"{len(fit)} labelled images of {root} (kdskin adapt --fine-tune)"
    before = {"fit": predict(fit.images), "held": predict(held.images),
              "ham": predict(ham.test.images)}
    foreign, _ = generate_out_of_scope(cfg.trust.ood_images, input_size(model),
                                       seed=cfg.adapt.seed, kinds=SYNTHETIC_KINDS)
    foreign_before = predict(foreign)
    refitted = adapt_rules(cfg, rules, fit.labels, before["fit"], fitted_on=fitted_on)
    done = fine_tune(model, fit, ham.train, cfg)
    log(f"adapt: fine-tuned {done['epochs']} epochs in {done['seconds']:.0f} s")
    after = {"held": predict(held.images), "ham": predict(ham.test.images)}
    if cfg.adapt.folds > 1:
        for_rules = _out_of_fold(cfg, load, fit, lesions, ham.train)
        fitted_on += f", out-of-fold probabilities of {cfg.adapt.folds} folds"
        log(f"adapt: operating point fitted on out-of-fold probabilities ({cfg.adapt.folds} "
            f"more fine-tunes)")
    else:
        for_rules = predict(fit.images)  # in-sample: the images it was fine-tuned on
    new_rules = refit_out_of_scope(cfg, adapt_rules(cfg, rules, fit.labels, for_rules,
                                                    fitted_on=fitted_on),
                                   fit.images, ham.train.images, ham.val.images)
    ham_before, ham_after = (scores(ham.test.labels, p["ham"]) for p in (before, after))
    drop = ham_before["balanced_accuracy"] - ham_after["balanced_accuracy"]
    record = {
        "split": split, "fine_tune": done,
        "held_out": {"run": scores(held.labels, before["held"], rules),
                     "run_refitted_rules": scores(held.labels, before["held"], refitted),
                     "fine_tuned": scores(held.labels, after["held"], new_rules),
                     "fine_tuned_referral_interval": _referral_interval(
                         cfg, held.labels, after["held"], new_rules)},
        "ham10000_test": {"run": ham_before, "fine_tuned": ham_after,
                          "balanced_accuracy_drop": round(float(drop), 4),
                          "max_drop": cfg.adapt.max_ham_drop,
                          "within_max_drop": bool(drop <= cfg.adapt.max_ham_drop + 1e-12),
                          "note": "argmax of each model, no decision rules"},
        "out_of_scope": {
            "held_out_flagged": {"run": flagged(rules, held.images, before["held"]),
                                 "fine_tuned": flagged(new_rules, held.images, after["held"])},
            "foreign_flagged": {"run": flagged(rules, foreign, foreign_before),
                                "fine_tuned": flagged(new_rules, foreign, predict(foreign))},
            "n_foreign": len(foreign), "foreign_kinds": list(SYNTHETIC_KINDS),
            "note": "the check refitted on the clinic's fit-part images with the run's "
                    "training images; flagged shares on the held-out part and on generated "
                    "images that are not dermoscopy"},
        "rules_refitted_without_fine_tune": refitted.to_dict(),
        "operating_point_from": ("in-sample probabilities of the fit part" if cfg.adapt.folds == 1
                                 else f"out-of-fold probabilities, {cfg.adapt.folds} "
                                      f"lesion-grouped folds of the fit part"),
    }
    return model, new_rules, record
