"""The model card of a run: ``RUN/MODEL_CARD.md`` and a copy beside the exported files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kdskin.config import Config
from kdskin.constants import CLASSES, MELANOMA
from kdskin.rundir import RunDir, RunMetrics, final_student_name


def card_info(run: RunDir, state: RunMetrics, cfg: Config) -> dict[str, Any]:
    """The :class:`~kdskin.trust.model_card.ModelCardInfo` of the run's final student."""
    from kdskin.trust.model_card import describe_files, package_versions

    final = final_student_name(cfg.distill.stages)
    record = state.models.get(final) if final else None
    synthetic = cfg.data.dir is not None and Path(cfg.data.dir).resolve() == \
        run.data.resolve()
    info: dict[str, Any] = {
        "run_name": run.root.name, "model_name": final or "n/a",
        "description": (f"{record.kind}; int8 .tflite for phones and edge boards"
                        if record else "no final student in this run"),
        "created": time.strftime("%Y-%m-%d"), "image_size": cfg.data.image_size,
        "data": {"source": "synth" if synthetic else cfg.data.format, "path": state.data,
                 "n_images": sum(state.sizes.values())},
        "protocol": {"name": cfg.data.protocol, "split_sizes": dict(state.sizes),
                     "split_fractions": list(cfg.data.split), "seed": cfg.data.seed},
        "bootstrap": state.trust.get("bootstrap", {}),
        "comparisons": state.trust.get("comparisons", {}),
        "versions": package_versions(),
        "pretrained": dict(state.pretrained),
    }
    results: dict[str, Any] = {}
    if record is not None and record.intervals.get("test"):
        results["test"] = {"n": state.sizes.get("test"), "external": False,
                           "description": "lesion-grouped test split (Keras model)",
                           "intervals": record.intervals["test"],
                           "per_class": record.test.get("per_class", {})}
    ext_int8 = state.external.get("tflite", {}).get("int8")
    if ext_int8:
        results["external"] = {"n": state.external.get("n_images"), "external": True,
                               "description": f"{state.external.get('data')} (int8 .tflite)",
                               "intervals": ext_int8.get("intervals", {}),
                               "per_class": ext_int8.get("per_class", {})}
    info["results"] = results
    trust = state.trust
    if trust:
        rules = trust["rules"]
        reports = {"validation": trust["val"]["calibration"], "test": trust["test"]["calibration"]}
        referral = {"validation": trust["val"]["referral"], "test": trust["test"]["referral"]}
        for name, scored in state.external.get("trust", {}).items():
            if name == "model_int8.tflite":
                reports["external (int8)"] = scored["calibration"]
                referral["external (int8)"] = scored["referral"]
        offsets = rules.get("class_offsets")
        info["calibration"] = {"temperature": rules["temperature"], "fitted_on": "validation",
                               "reports": reports, "melanoma_offset": None if offsets is None
                               else offsets[CLASSES.index(MELANOMA)]}
        info["operating_point"] = {"classes": rules["malignant_classes"],
                                   "target_sensitivity": rules["target_sensitivity"],
                                   "threshold": rules["referral_threshold"],
                                   "fitted_on": "validation", "results": referral}
        oos = trust["out_of_scope"]
        info["out_of_scope"] = {
            "score": oos["score"], "threshold": oos["threshold"], "pass_rate": oos["pass_rate"],
            "fitted_on": "validation",
            "description": f"{oos['n_generated']} generated images: " + ", ".join(oos["kinds"]),
            "metrics": oos["metrics"]}
    from kdskin.export.fidelity import int8_check_failed, int8_check_line

    line = int8_check_line(state.export) if state.export else None
    if line:
        info["int8_check"] = {"line": line, "failed": int8_check_failed(state.export)}
    files = sorted(run.tflite.glob("*.tflite")) if run.tflite.is_dir() else []
    info["files"] = describe_files(files, root=run.root)
    return info


def write_model_cards(run: RunDir, state: RunMetrics, cfg: Config) -> list[Path]:
    """Write ``RUN/MODEL_CARD.md`` and, when the run exported files, a copy in ``RUN/tflite``."""
    from kdskin.trust.model_card import write_model_card

    info = card_info(run, state, cfg)
    written = [write_model_card(info, run.root / "MODEL_CARD.md")]
    if run.tflite.is_dir():
        written.append(write_model_card(info, run.tflite / "MODEL_CARD.md"))
    return written
