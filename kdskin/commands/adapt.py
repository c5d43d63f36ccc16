"""``kdskin adapt``: a finished run's final student with the operating point refitted on a
clinic's own labelled images, exported as new files.

Under some acquisition shifts the model's ranking survives but its probabilities move
(over-exposure lowers every image's melanoma probability), so the melanoma offset and the
referral threshold fitted on HAM10000's validation split no longer give the melanoma recall and
sensitivity they did (docs/FINDINGS.md). A clinic can refit them on images taken with its
own devices: the temperature, the melanoma offset (the run's ``trust.melanoma_offset`` and
``trust.min_melanoma_recall``, or ``--set``) and the referral threshold are fitted on the
labelled folder and folded into fp32 / dynamic-range / int8 files written to ``--out`` (the
int8 calibration and the int8 check use the run's own training and test splits, as the run's
export does). The model's weights and the out-of-scope check are the run's. The run is not
changed. ``OUT/adapt.json`` records the set, the rules before and after, and what they do on the
set they were fitted on (in-sample: hold out part of the clinic's images to measure them).

With ``--fine-tune`` the student itself is fine-tuned on part of the clinic's images (with
HAM10000 training images rehearsed in every epoch) and the operating point refitted on that
part (:mod:`kdskin.pipeline.finetune`); every figure in ``adapt.json`` and the printed summary
is measured on the held-out rest, beside the run's model on the same images and the run's own
HAM10000 test split (forgetting). The fine-tuned student is written as ``student_adapted.keras``
beside its files and ``MODEL_CARD.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import CLASSES, MELANOMA
from kdskin.errors import KdskinError
from kdskin.rundir import RunDir

#: The record written beside the adapted files.
ADAPT_JSON = "adapt.json"


def _summary(rules: Any, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """What ``rules`` do on ``labels`` (N,) and the model's own ``probs`` (N, 7): top-1
    balanced accuracy and melanoma recall, the referral rule's sensitivity, melanoma
    sensitivity and referral rate."""
    from kdskin.metrics import classification_metrics
    from kdskin.trust.referral import referral_metrics

    calibrated = rules.calibrate(probs)
    top1 = classification_metrics(labels, calibrated)
    ref = referral_metrics(labels, calibrated, rules.referral_threshold, rules.malignant_classes)
    return {"balanced_accuracy": float(top1["balanced_accuracy"]),
            "melanoma_recall": float(top1["melanoma_recall"]),
            **{k: float(ref[k]) for k in ("sensitivity", "melanoma_sensitivity",
                                          "referral_rate")}}


def adapt_command(run_dir: str, data: str, out: str, overrides: Sequence[str] = (),
                  fine_tune: bool = False) -> dict[str, Any]:
    """Refit the operating point of ``run_dir``'s final student on the labelled folder
    ``data`` (HAM10000 or ISIC 2018 layout) and export it into ``out`` (new or empty); with
    ``fine_tune`` the student is first fine-tuned on part of ``data`` and measured on the rest.
    Returns what ``out/adapt.json`` holds."""
    from kdskin.config import load_config
    from kdskin.console import log
    from kdskin.decision import DecisionRules
    from kdskin.evaluate import KerasClassifier
    from kdskin.io import atomic_write_dir, write_json
    from kdskin.models.contract import input_size, load_keras
    from kdskin.pipeline.data import data_of_run
    from kdskin.pipeline.external import load_labelled
    from kdskin.pipeline.run import export_stage
    from kdskin.pipeline.trust import adapt_rules

    run = RunDir(Path(run_dir)).require_finished()
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise KdskinError(f"{target}: exists and is not an empty folder; pass a new --out DIR")
    if not Path(data).is_dir():
        raise KdskinError(f"{data}: labelled image folder not found; pass --data DIR (HAM10000 "
                          f"or ISIC 2018 layout)")
    state = run.load_metrics()
    cfg = load_config(run.config, overrides)
    final = run.require_final_student(cfg.distill.stages)
    if not state.trust or "rules" not in state.trust:
        raise KdskinError(f"{run.root}: the run has no decision rules (trust.enabled was false); "
                          f"re-export it with kdskin export --run {run.root} "
                          f"--set trust.enabled=true first")
    if fine_tune:
        return _fine_tune(cfg, run, state, final, data, target, list(overrides))
    model = load_keras(run.model(final))
    labelled, fmt, unreadable = load_labelled(data, None, input_size(model), None)
    labels = np.asarray(labelled.labels).astype(int)
    malignant = [CLASSES.index(c) for c in cfg.trust.malignant_classes]
    if not np.isin(labels, malignant).any():
        raise KdskinError(f"{data}: no image of a malignant class "
                          f"({', '.join(cfg.trust.malignant_classes)}); the referral threshold "
                          f"needs some: add labelled malignant images")
    if cfg.trust.min_melanoma_recall is not None and not (labels == CLASSES.index(MELANOMA)).any():
        raise KdskinError(f"{data}: no melanoma image, and trust.min_melanoma_recall is "
                          f"{cfg.trust.min_melanoma_recall}: add labelled melanomas or pass "
                          f"--set trust.min_melanoma_recall=null")
    probs = KerasClassifier(model).predict(labelled.images)
    before = DecisionRules.from_dict(state.trust["rules"])
    after = adapt_rules(cfg, before, labels, probs,
                        fitted_on=f"{len(labels)} labelled images of {data} (kdskin adapt)")
    offset = "" if after.class_offsets is None else \
        f", melanoma offset {max(after.class_offsets, key=abs):+.2f}"
    log(f"adapt: {len(labels)} images of {data}: temperature {after.temperature:.3f}{offset}, "
        f"refer at malignant probability >= {after.referral_threshold:.3f}")
    record = {
        "run": str(run.root), "model": final, "data": str(data), "format": fmt,
        "n_images": int(len(labels)), "unreadable_images": len(unreadable),
        "class_counts": {c: int(np.sum(labels == i)) for i, c in enumerate(CLASSES)},
        "overrides": list(overrides),
        "rules_before": before.to_dict(), "rules_after": after.to_dict(),
        "in_sample": {"run_rules": _summary(before, labels, probs),
                      "adapted_rules": _summary(after, labels, probs),
                      "note": "on the images the rules were fitted on: optimistic; hold out "
                              "part of the clinic's images to measure them"},
    }
    rd = data_of_run(run, cfg)

    def write(folder: Path) -> None:
        record["export"] = export_stage(cfg, rd, run, final, rules=after, out_dir=folder,
                                        extra={"adapted_on": {k: record[k] for k in (
                                            "data", "format", "n_images", "class_counts")}})
        write_json(folder / ADAPT_JSON, record)

    atomic_write_dir(target, write)
    run_s, new_s = (record["in_sample"][k] for k in ("run_rules", "adapted_rules"))
    print(f"wrote {target}: model_int8.tflite and the other files with the refitted operating "
          f"point, decision.json, {ADAPT_JSON}")
    print(f"on the {len(labels)} images it was fitted on (in-sample): balanced accuracy "
          f"{run_s['balanced_accuracy']:.3f} -> {new_s['balanced_accuracy']:.3f}, melanoma "
          f"recall {run_s['melanoma_recall']:.2f} -> {new_s['melanoma_recall']:.2f}, referral "
          f"melanoma sensitivity {run_s['melanoma_sensitivity']:.2f} -> "
          f"{new_s['melanoma_sensitivity']:.2f}")
    return record


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _card(record: dict[str, Any]) -> str:
    """MODEL_CARD.md of the fine-tuned files: what was done and the held-out figures."""
    from kdskin.markdown import table

    split, done, held = record["split"], record["fine_tune"], record["held_out"]
    oos = record["out_of_scope"]
    ham = record["ham10000_test"]
    keys = ("balanced_accuracy", "macro_auc", "melanoma_auc", "melanoma_recall",
            "referral_sensitivity", "referral_specificity", "referral_referral_rate")
    rows = [[label, *(f"{held[k].get(m, float('nan')):.3f}" for m in keys)]
            for k, label in (("run", "the run's model and rules"),
                             ("run_refitted_rules", "the run's model, rules refitted"),
                             ("fine_tuned", "fine-tuned, rules refitted (these files)"))]
    interval = held["fine_tuned_referral_interval"]
    return "\n".join([
        "# Model card: a student fine-tuned on a clinic's images", "",
        "Research software, not a medical device.", "",
        f"- from: `{record['model']}` of the run `{record['run']}`",
        f"- clinic data: `{split['data']}` ({split['format']} layout): {split['n_fit']} images "
        f"fine-tuned on, {split['n_held_out']} held out (split by {split['grouped_by']}, "
        f"seed {split['seed']})",
        f"- fine-tune: {done['epochs']} epochs, Adam {done['learning_rate']:g}, "
        f"{done['loss']}, {done['images_per_epoch']['ham10000_rehearsal']} HAM10000 training "
        f"images rehearsed per epoch, augmentation {done['augment']}; {done['seconds']:.0f} s",
        f"- operating point (temperature, melanoma offset, referral threshold) fitted on "
        f"{record['operating_point_from']}",
        "", "On the held-out images (never trained on, rules not fitted on them):", "",
        table(["model", *keys], rows), "",
        "Referral rule of these files on the held-out images, 95% bootstrap intervals: "
        + ", ".join(f"{k} {lo:.3f}-{hi:.3f}" for k, (lo, hi) in interval.items()), "",
        "Out-of-scope check (refitted on the clinic's fine-tuning images with the run's "
        "training images): flagged share of the held-out images "
        f"{_share(oos['held_out_flagged']['run'])} -> "
        f"{_share(oos['held_out_flagged']['fine_tuned'])}, of {oos['n_foreign']} generated "
        f"images that are not dermoscopy {_share(oos['foreign_flagged']['run'])} -> "
        f"{_share(oos['foreign_flagged']['fine_tuned'])}", "",
        f"HAM10000 test split (forgetting; argmax): balanced accuracy "
        f"{ham['run']['balanced_accuracy']:.3f} -> {ham['fine_tuned']['balanced_accuracy']:.3f} "
        f"(drop {ham['balanced_accuracy_drop']:+.3f}, bound {ham['max_drop']:.2f}: "
        + ("within" if ham["within_max_drop"] else "EXCEEDED") + ")", ""])


def _fine_tune(cfg: Any, run: RunDir, state: Any, final: str, data: str, target: Path,
               overrides: list[str]) -> dict[str, Any]:
    """``kdskin adapt --fine-tune``: fine-tune, refit, export into ``target`` atomically."""
    from kdskin.console import log
    from kdskin.decision import DecisionRules
    from kdskin.io import atomic_write_dir, atomic_write_text, write_json
    from kdskin.models.contract import load_keras
    from kdskin.pipeline.data import data_of_run
    from kdskin.pipeline.finetune import adapt_fine_tuned
    from kdskin.pipeline.run import export_stage

    ham = data_of_run(run, cfg)
    model, rules, record = adapt_fine_tuned(
        cfg, lambda: load_keras(run.model(final)), DecisionRules.from_dict(state.trust["rules"]),
        data, ham)
    record = {"run": str(run.root), "model": final, "data": str(data), "fine_tuned": True,
              "overrides": overrides, "settings": dict(vars(cfg.adapt)),
              "rules_before": state.trust["rules"], "rules_after": rules.to_dict(), **record}

    def write(folder: Path) -> None:
        record["export"] = export_stage(
            cfg, ham, run, final, rules=rules, out_dir=folder, model=model,
            extra={"adapted_on": {"data": str(data), "fine_tuned": True,
                                  **{k: record["split"][k] for k in ("format", "n_fit",
                                                                     "n_held_out")}}})
        model.save(folder / "student_adapted.keras")
        write_json(folder / ADAPT_JSON, record)
        atomic_write_text(folder / "MODEL_CARD.md", _card(record))

    atomic_write_dir(target, write)
    held, ham_t = record["held_out"], record["ham10000_test"]
    run_s, new_s = held["run"], held["fine_tuned"]
    print(f"wrote {target}: model_int8.tflite and the other files of the fine-tuned student, "
          f"student_adapted.keras, decision.json, {ADAPT_JSON}, MODEL_CARD.md")
    print(f"on {record['split']['n_held_out']} held-out images of {data}: balanced accuracy "
          f"{run_s['balanced_accuracy']:.3f} -> {new_s['balanced_accuracy']:.3f}, macro AUC "
          f"{run_s['macro_auc']:.3f} -> {new_s['macro_auc']:.3f}, melanoma AUC "
          f"{run_s['melanoma_auc']:.3f} -> {new_s['melanoma_auc']:.3f}, referral sensitivity "
          f"{run_s['referral_sensitivity']:.2f} -> {new_s['referral_sensitivity']:.2f} at "
          f"specificity {run_s['referral_specificity']:.2f} -> "
          f"{new_s['referral_specificity']:.2f}")
    oos = record["out_of_scope"]
    print(f"out-of-scope check refitted: flags {_share(oos['held_out_flagged']['run'])} -> "
          f"{_share(oos['held_out_flagged']['fine_tuned'])} of the held-out images, "
          f"{_share(oos['foreign_flagged']['run'])} -> "
          f"{_share(oos['foreign_flagged']['fine_tuned'])} of generated non-dermoscopy images")
    print(f"HAM10000 test split (forgetting): balanced accuracy "
          f"{ham_t['run']['balanced_accuracy']:.3f} -> "
          f"{ham_t['fine_tuned']['balanced_accuracy']:.3f}")
    if not ham_t["within_max_drop"]:
        log(f"WARNING: the fine-tuned student lost {ham_t['balanced_accuracy_drop']:.3f} "
            f"balanced accuracy on the HAM10000 test split (more than adapt.max_ham_drop "
            f"{cfg.adapt.max_ham_drop}); raise adapt.rehearsal or lower adapt.epochs")
    return record
