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
"""

from __future__ import annotations

import shutil
import tempfile
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


def adapt_command(run_dir: str, data: str, out: str,
                  overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Refit the operating point of ``run_dir``'s final student on the labelled folder
    ``data`` (HAM10000 or ISIC 2018 layout) and export it into ``out`` (new or empty).
    Returns what ``out/adapt.json`` holds."""
    from kdskin.config import load_config
    from kdskin.console import log
    from kdskin.decision import DecisionRules
    from kdskin.evaluate import KerasClassifier
    from kdskin.io import write_json
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
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        record["export"] = export_stage(cfg, rd, run, final, rules=after, out_dir=scratch,
                                        extra={"adapted_on": {k: record[k] for k in (
                                            "data", "format", "n_images", "class_counts")}})
        write_json(scratch / ADAPT_JSON, record)
        if target.exists():
            target.rmdir()
        scratch.rename(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    run_s, new_s = (record["in_sample"][k] for k in ("run_rules", "adapted_rules"))
    print(f"wrote {target}: model_int8.tflite and the other files with the refitted operating "
          f"point, decision.json, {ADAPT_JSON}")
    print(f"on the {len(labels)} images it was fitted on (in-sample): balanced accuracy "
          f"{run_s['balanced_accuracy']:.3f} -> {new_s['balanced_accuracy']:.3f}, melanoma "
          f"recall {run_s['melanoma_recall']:.2f} -> {new_s['melanoma_recall']:.2f}, referral "
          f"melanoma sensitivity {run_s['melanoma_sensitivity']:.2f} -> "
          f"{new_s['melanoma_sensitivity']:.2f}")
    return record
