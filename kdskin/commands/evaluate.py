"""``kdskin evaluate`` and ``kdskin predict``: score a model file on a dataset, or label images.

Neither imports TensorFlow for a ``.tflite`` model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import Config
from kdskin.constants import CLASSES, NUM_CLASSES
from kdskin.errors import DataError, KdskinError
from kdskin.rundir import RunDir

#: ``--split`` values: one split of a split CSV, or every image of the dataset.
SPLIT_CHOICES: tuple[str, ...] = ("train", "val", "test", "all")


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """The metrics of :func:`kdskin.metrics.classification_metrics` as a text table."""
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_precision",
            "macro_recall", "macro_auc", "melanoma_recall")
    lines = [title] if title else []
    lines += [f"{k:<18} {metrics[k]:.4f}" for k in keys]
    lines.append(f"{'class':<8}{'prec':>8}{'recall':>8}{'f1':>8}{'n':>7}")
    for c in CLASSES:
        pc = metrics["per_class"][c]
        lines.append(f"{c:<8}{pc['precision']:>8.3f}{pc['recall']:>8.3f}{pc['f1']:>8.3f}"
                     f"{pc['support']:>7}")
    return "\n".join(lines)


def _same_folder(a: str | Path | None, b: str | Path | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def choose_split(model: str | Path, data: str | Path, split: str | None,
                 split_file: str | None, cfg: Config, table: Any) -> tuple[Any, str, str]:
    """``(split table, split name to score, description)`` for ``kdskin evaluate``.

    * ``--split-file``: that split (``--split`` default test);
    * the model's own run and its own data folder: the run's ``split.csv`` (default test);
    * any other data (an external set): every image, unless ``--split`` asks for a split, which
      is then made fresh with the config's protocol and seed.
    """
    from kdskin.data.split import make_split, read_split

    run = RunDir.of_model(model)
    if split == "all":
        whole = table[["image_id", "lesion_id", "dx"]].copy()
        whole["split"] = "test"
        return whole, "test", "all images"
    if split_file:
        return read_split(split_file), split or "test", str(split_file)
    if run is not None and run.split.is_file():
        from kdskin.config import load_config

        run_data = load_config(run.config).data.dir
        if _same_folder(run_data, data):
            return read_split(run.split), split or "test", str(run.split)
    if split is None:
        return choose_split(model, data, "all", None, cfg, table)
    fresh = make_split(table, cfg.data.protocol, cfg.data.split, cfg.data.seed,
                       cfg.data.paper_per_class)
    return fresh, split, f"a fresh {cfg.data.protocol} split (seed {cfg.data.seed})"


def evaluate_command(cfg: Config, model: str, data: str, fmt: str | None = None,
                     split: str | None = None, split_file: str | None = None,
                     json_out: str | None = None, plots: str | None = None,
                     strict: bool | None = None, resamples: int = 1000,
                     shifts: list[str] | None = None,
                     against: list[str] | None = None) -> dict[str, Any]:
    """``kdskin evaluate``: score ``model`` on one split of ``data`` (or all of an external
    set); print the metrics with bootstrap intervals, calibration before/after and the
    referral operating point; optional JSON and plots. Decodes only the images it scores.

    Metrics are computed on the calibrated probabilities (what ``predict`` and the exported
    files give); a model without decision rules is scored as it is. ``shifts`` (a list, empty
    for all): also the acquisition-shift suite (:mod:`kdskin.shift_suite`), under
    ``"shift_suite"``. ``against``: other model files scored on the same images (each at its
    own input size, with its own decision rules); the paired bootstrap of each difference
    (``model`` minus the other) goes under ``"comparisons"``."""
    from kdskin.data.datasets import read_dataset
    from kdskin.data.pipeline import decode_split
    from kdskin.evaluate import load_classifier, write_plots
    from kdskin.io import write_json
    from kdskin.metrics import classification_metrics

    if shifts:  # a bad shift name fails before anything is loaded
        from kdskin.data.shifts import check_shifts

        check_shifts(shifts)
    if split is not None and split not in SPLIT_CHOICES:
        raise KdskinError(f"--split {split}: choose one of {', '.join(SPLIT_CHOICES)}")
    if not Path(data).is_dir():
        raise DataError(f"{data}: dataset folder not found; pass --data DIR")
    classifier = load_classifier(model)
    others = [(other, load_classifier(other)) for other in against or ()]  # fail before decoding
    from kdskin.pipeline.external import detect_format

    dataset = read_dataset(data, fmt or detect_format(data),
                           strict=cfg.data.strict if strict is None else strict)
    table, name, source = choose_split(model, data, split, split_file, cfg, dataset.table)
    table = table[table["split"] == name]
    if len(table) == 0:
        raise DataError(f"{data}: the {name} split is empty ({source})")
    arrays, errors = decode_split(dataset, table, classifier.input_size, progress=True)
    for err in errors:
        print(f"skipped unreadable image: {err}", file=sys.stderr)
    part = arrays[name]
    if len(part) == 0:
        raise DataError(f"{data}: no readable image in the {name} split ({source})")
    probs = classifier.predict(part.images)
    trust = trust_figures(model, part.labels, probs, resamples)
    probs = trust.pop("_calibrated")
    metrics = classification_metrics(part.labels, probs)
    shown = "all" if source == "all images" else name
    result = {"model": str(model), "data": str(data), "format": dataset.format, "split": shown,
              "split_source": source, "n_images": len(part),
              "rows_without_image": len(dataset.missing), "unreadable_images": errors,
              **metrics, **trust}
    print(format_metrics(metrics, f"{model} on {data} [{shown}: {len(part)} images, {source}]"))
    print(format_trust(trust))
    if shifts is not None:
        from kdskin.decision import rules_for_model
        from kdskin.shift_suite import format_suite, shift_suite

        result["shift_suite"] = shift_suite(classifier, part.images, part.labels, shifts,
                                            rules=rules_for_model(model), calibrate=True)
        print(format_suite(result["shift_suite"], "acquisition-shift suite (drop: clean minus "
                                                  "shifted; flagged: out-of-scope share)"))
    if others:
        result["comparisons"] = compare_against(others, dataset, table, name, part, probs,
                                                resamples)
        print(format_comparisons(result["comparisons"], model))
    if json_out:
        write_json(json_out, result)
    if plots:
        write_plots(metrics, part.labels, probs, Path(plots), Path(model).stem)
    return result


def compare_against(others: list[tuple[str, Any]], dataset: Any, table: Any, name: str,
                    part: Any, probs: np.ndarray, resamples: int = 1000) -> list[dict[str, Any]]:
    """Paired bootstrap differences of one model's calibrated ``probs`` ``(N, 7)`` on ``part``
    (the ``name`` rows of ``table``) against each ``(model file, classifier)`` of ``others``,
    scored on the same images decoded at its own input size (once per size): ``[{"against",
    "input_size", "difference": {metric: {"value", "low", "high", "a", "b"}}}]`` (a: the first
    model, b: the other)."""
    from kdskin.data.pipeline import decode_split
    from kdskin.decision import calibrated_probs, rules_for_model
    from kdskin.trust.uncertainty import paired_bootstrap_diff

    images_at = {part.images.shape[1]: part.images}
    out = []
    for other, classifier in others:
        size = classifier.input_size
        if size not in images_at:
            arrays, _ = decode_split(dataset, table, size, progress=True)
            if arrays[name].image_ids != part.image_ids:
                raise DataError(f"--against {other}: its images ({size} px) are not the ones "
                                f"the first model was scored on; check the unreadable files "
                                f"reported above")
            images_at[size] = arrays[name].images
        other_probs = calibrated_probs(rules_for_model(other),
                                       classifier.predict(images_at[size]))
        diff = paired_bootstrap_diff(part.labels, probs, other_probs, n_resamples=resamples,
                                     seed=0)
        out.append({"against": str(other), "input_size": size, "difference": diff})
    return out


def format_comparisons(comparisons: list[dict[str, Any]], model: str | Path) -> str:
    """Each paired difference with its interval, and whether the interval excludes 0."""
    lines = []
    for comp in comparisons:
        lines.append(f"paired differences, {model} minus {comp['against']} (same images, "
                     f"stratified paired bootstrap, 95%):")
        for key, d in comp["difference"].items():
            verdict = ("excludes 0" if d["low"] > 0 or d["high"] < 0
                       else "includes 0: not distinguishable")
            lines.append(f"  {key:<18} {d['value']:+.4f}  [{d['low']:+.4f}, {d['high']:+.4f}]"
                         f"  ({d['a']:.4f} vs {d['b']:.4f}; {verdict})")
    return "\n".join(lines)


def trust_figures(model: str | Path, labels: np.ndarray, probs: np.ndarray,
                  resamples: int = 1000) -> dict[str, Any]:
    """Intervals, calibration before/after and the operating point of a model's ``probs`` on
    labelled images, with the model's decision rules (``decision.json`` or its run); the
    calibrated probabilities are returned under ``"_calibrated"``."""
    from kdskin.decision import calibrated_probs, rules_for_model, score_with_rules
    from kdskin.trust.calibration import calibration_report
    from kdskin.trust.uncertainty import bootstrap_ci

    rules = rules_for_model(model)
    calibrated = calibrated_probs(rules, probs)
    out: dict[str, Any] = {}
    if rules is None:
        out["calibration"] = calibration_report(labels, calibrated, calibrated, temperature=1.0)
        out["decision_rules"] = None
    else:
        out.update(score_with_rules(rules, labels, probs))
        out["decision_rules"] = rules.to_dict()
    out["intervals"] = bootstrap_ci(labels, calibrated, n_resamples=resamples, seed=0)
    out["bootstrap"] = {"n_resamples": resamples, "seed": 0, "stratified": True}
    out["_calibrated"] = calibrated
    return out


def format_trust(trust: dict[str, Any]) -> str:
    """Intervals, ECE/Brier/NLL before and after calibration, the operating point."""
    boot = trust["bootstrap"]
    lines = [f"95% intervals (stratified bootstrap, {boot['n_resamples']} resamples, seed "
             f"{boot['seed']}):"]
    for key, iv in trust["intervals"].items():
        lines.append(f"  {key:<18} {iv['value']:.4f}  [{iv['low']:.4f}, {iv['high']:.4f}]")
    cal = trust["calibration"]
    b, a = cal["before"], cal["after"]
    if trust.get("decision_rules") is None:
        lines.append(f"calibration: ECE {b['ece']:.4f}, Brier {b['brier']:.4f}, NLL "
                     f"{b['nll']:.4f} (no decision rules with this model: not recalibrated)")
    else:
        lines.append(f"calibration (temperature {cal['temperature']:.3f}, fitted on "
                     f"{trust['decision_rules']['fitted_on']}): ECE {b['ece']:.4f} -> "
                     f"{a['ece']:.4f}, Brier {b['brier']:.4f} -> {a['brier']:.4f}, NLL "
                     f"{b['nll']:.4f} -> {a['nll']:.4f}")
    ref = trust.get("referral")
    if ref:
        lines.append(f"referral (refer when P({'+'.join(ref['classes'])}) >= "
                     f"{ref['threshold']:.3f}): sensitivity {ref['sensitivity']:.4f}, "
                     f"specificity {ref['specificity']:.4f}, referral rate "
                     f"{ref['referral_rate']:.4f}, melanoma sensitivity "
                     f"{ref['melanoma_sensitivity']:.4f} ({ref['n_malignant']} malignant of "
                     f"{ref['n']})")
    return "\n".join(lines)


def format_prediction(entry: dict[str, Any]) -> str:
    """One line: the top classes, the referral decision and the out-of-scope warning."""
    line = f"{entry['image']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}"
                                             for t in entry["top"])
    if entry["refer"] is not None:
        verdict = "REFER" if entry["refer"] else "no referral"
        line += (f" | {verdict} (malignant probability {entry['malignant_probability']:.3f}, "
                 f"threshold {entry['referral_threshold']:.3f})")
    if entry["out_of_scope"]:
        line += (" | WARNING: outside what the model was trained on (not a dermoscopic lesion "
                 "image like its training data?); the classes above are unreliable")
    return line


def predict_command(model: str, images: list[str], top: int = 3,
                    as_json: bool = False) -> list[dict[str, Any]]:
    """``kdskin predict``: each image's top classes with probabilities.

    The images are checked before the model is loaded; an unreadable image is reported on
    stderr and skipped. Raises if no image could be labelled.
    """
    from kdskin.data.images import load_image
    from kdskin.evaluate import load_classifier

    if not 1 <= top <= NUM_CLASSES:
        raise KdskinError(f"--top {top}: must be between 1 and {NUM_CLASSES}")
    if not images:
        raise KdskinError("no images given; pass one or more image files")
    missing = [p for p in images if not Path(p).is_file()]
    if len(missing) == len(images):
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0]}: image not found{more}; pass existing image files")
    for path in missing:
        print(f"kdskin: {path}: image not found; skipped", file=sys.stderr)
    from kdskin.decision import NOT_A_DEVICE, describe_prediction, rules_for_model

    classifier = load_classifier(model)
    rules = rules_for_model(model)
    results, failed = [], len(missing)
    for path in (p for p in images if p not in missing):
        try:
            x = load_image(path, classifier.input_size)[None]
        except KdskinError as exc:
            print(f"kdskin: {exc}; skipped", file=sys.stderr)
            failed += 1
            continue
        entry = describe_prediction(classifier.predict(x)[0], rules, top, image=x[0])
        entry = {"image": str(path), **entry}
        results.append(entry)
        if not as_json:
            print(format_prediction(entry))
    if as_json:
        print(json.dumps(results, indent=2))
    elif results:
        print(f"({NOT_A_DEVICE})")
    if not results:
        raise DataError(f"none of the {len(images)} image(s) could be read; pass image files "
                        f"(JPEG, PNG, ...)")
    if failed:
        print(f"kdskin: {failed} of {len(images)} image(s) skipped", file=sys.stderr)
    return results
