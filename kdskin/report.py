"""Reports: ``report.md`` for one run, and ``kdskin report`` (docs/RESULTS.md) over several runs.

Everything here reads the small JSON files a run writes (``metrics.json``, which embeds the
export check and the benchmark); nothing is retrained or re-measured, so a results document can be
regenerated from saved ``metrics.json`` copies alone (``docs/results/*.json``).

Runs are grouped by experiment -- (config name, protocol, data, input size) -- and within a group
every number is the mean over the runs (seeds) that have it, with the sample standard deviation
beside it when there are several. Timings and sizes come from the group's first run that has
them (they do not depend on the seed).
"""

from __future__ import annotations

import functools
import math
import shutil
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdskin.constants import CLASSES, MELANOMA
from kdskin.data.split import protocol_label
from kdskin.errors import KdskinError
from kdskin.export.fidelity import int8_check_failed, int8_check_line
from kdskin.io import atomic_write_text, read_json
from kdskin.models.specs import unused_teacher_keys
from kdskin.rundir import (
    BASELINE_CNN,
    REFERENCE_CNN,
    REFERENCE_EFFNET,
    TEACHER,
    UNKNOWN_TEACHER,
    RunDir,
    RunMetrics,
    load_metrics,
    student_name,
)

INT8 = "int8"
#: Rows of the results table, in the paper's order, with the paper's reported accuracy (leaky
#: protocol; Pavel et al. 2025, table of results).
ROWS: tuple[tuple[str, str, float | None], ...] = (
    (BASELINE_CNN, "Baseline CNN (paper's plain CNN)", 0.7382),
    (REFERENCE_CNN, "Strong plain reference (VGG-style CNN)", None),
    (REFERENCE_EFFNET, "Pretrained reference (EfficientNet-Lite alone)", None),
    (TEACHER, "Teacher (ViT + conv hybrid)", None),
    (student_name("baseline"), "Student alone (fused, CE only)", None),
    (student_name("single"), "Single-stage KD", 0.9006),
    (student_name("multi"), "Multi-stage KD", 0.9222),
    (student_name("multi_fusion"), "Multi-stage KD + layer fusion", 0.9588),
    (INT8, "Multi-stage KD + layer fusion, int8 .tflite", None),
)
LABELS = {key: label for key, label, _ in ROWS}


def exported_model(metrics: RunMetrics) -> str:
    """The model behind a run's ``.tflite`` files: export.json's ``source_model``, else the
    trust stage's model (the same final student; runs before ``source_model`` was recorded),
    else the multi-fusion student."""
    return ((metrics.export or {}).get("source_model") or (metrics.trust or {}).get("model")
            or student_name("multi_fusion"))


def int8_label(runs: Sequence[RunMetrics]) -> str:
    """Label of the int8 file's row: the exported model's label (e.g. "Student alone (fused,
    CE only), int8 .tflite" for a run without a teacher), generic when the runs differ."""
    sources = {exported_model(m) for m in runs}
    if len(sources) == 1:
        source = sources.pop()
        return f"{LABELS.get(source, source)}, int8 .tflite"
    return "Exported student, int8 .tflite"
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "melanoma_recall")
METRIC_HEADS = ("accuracy", "balanced acc.", "macro F1", "macro AUC", "melanoma recall")


# --------------------------------------------------------------------------- formatting


def _f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _mb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} MB"


def _finite(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _mean_std(values: Sequence[float], digits: int = 4) -> str:
    """``0.8123`` for one value, ``0.8123 ± 0.0051`` (sample std) for several, n/a for none."""
    values = _finite(values)
    if not values:
        return "n/a"
    if len(values) == 1:
        return _f(values[0], digits)
    return f"{_f(statistics.mean(values), digits)} ± {_f(statistics.stdev(values), digits)}"


# --------------------------------------------------------------------------- one run, flattened


def _int8_infer_ms(bench: Mapping[str, Any]) -> float | None:
    """ms/step at batch 32 of the int8 file at all threads (the last timing)."""
    timings = bench.get("tflite", {}).get("model_int8.tflite", {}).get("timings", [])
    return timings[-1].get("ms_per_step") if timings else None


def model_rows(metrics: RunMetrics) -> dict[str, dict[str, Any]]:
    """``{row key: {metric: value, params, size_bytes, train_ms, infer_ms}}`` for one run.

    Keras models come from ``metrics["models"]`` (test split), the int8 row from the export
    check (``metrics["export"]["evaluation"]["tflite"]["int8"]``, same test split), timings
    from ``metrics["bench"]``.
    """
    bench = metrics.bench
    rows: dict[str, dict[str, Any]] = {}
    for key, entry in metrics.models.items():
        b_model = bench.get("models", {}).get(key, {})
        b_train = bench.get("training", {}).get(key, {})
        rows[key] = {
            **{m: entry.test.get(m) for m in METRICS},
            **{f"external_{m}": entry.external.get(m) for m in METRICS},
            "params": entry.params or None,
            # float32 weights, comparable across models (a .keras file also holds the
            # optimizer state of models compiled on their own, e.g. the teacher)
            "size_bytes": 4 * entry.params if entry.params else entry.size_bytes,
            # Measured during training (what Keras' progress bar shows, as in the paper);
            # the benchmark's isolated step only where the run has none (a reused teacher).
            "train_ms": entry.train_step.get("ms_per_step") or b_train.get("ms_per_step"),
            "infer_ms": b_model.get("inference", {}).get("ms_per_step"),
        }
    int8 = metrics.int8_result()
    if int8:
        external_int8 = metrics.external.get("tflite", {}).get(INT8, {})
        rows[INT8] = {**{m: int8.get(m) for m in METRICS},
                      **{f"external_{m}": external_int8.get(m) for m in METRICS}, "params": None,
                      "size_bytes": int8.get("size_bytes"), "train_ms": None,
                      "infer_ms": _int8_infer_ms(bench), "agreement": int8.get("agreement")}
    return rows


# --------------------------------------------------------------------------- tables


TABLE_NOTE = (
    "Size: float32 weights (params x 4) for the Keras models, the file for the int8 .tflite. "
    "Train ms/step: median wall time per step during training at batch 32, after the first "
    "epoch, input pipeline included (the KD stages include the frozen teacher's forward pass), "
    "i.e. what Keras' progress bar shows. Infer ms/step: Keras at batch 32 for the Keras models, "
    "LiteRT (XNNPACK, all threads) for the int8 file. Paper accuracies come from the published "
    "augment-then-split protocol and are not comparable with a lesion-grouped split.")


def _experiment_rows(runs: Sequence[RunMetrics]) -> list[dict[str, dict[str, Any]]]:
    """``model_rows`` of each run; a teacher reused from another run (``--teacher``) is counted
    once, in the run that trained it; where no run of the group trained one, each reused teacher
    once, in the first run that scored it (one teacher file: the same split and the same test
    scores, whatever path it was reused from)."""
    flat = [model_rows(m) for m in runs]
    trained = any(TEACHER in r and not m.teacher_from for r, m in zip(flat, runs, strict=True))
    seen: set[tuple] = set()
    for rows, metrics in zip(flat, runs, strict=True):
        if not metrics.teacher_from or TEACHER not in rows:
            continue
        identity = (metrics.split_digest, tuple(rows[TEACHER].get(m) for m in METRICS))
        if trained or identity in seen:
            rows.pop(TEACHER)
        seen.add(identity)
    return flat


def results_table(runs: Sequence[RunMetrics], paper_column: bool = True) -> str:
    """The paper-style results table (test split) over one or more runs of one experiment.

    Metrics are ``mean ± std`` over the runs that have the row; ``runs`` says how many.
    """
    flat = _experiment_rows(runs)
    head = ["model", *METRIC_HEADS, "params", "size", "train ms/step (b32)",
            "infer ms/step (b32)", "runs"]
    if paper_column:
        head.append("paper acc. (leaky)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, paper in ROWS:
        present = [r[key] for r in flat if key in r]
        if not present:
            continue
        if key == INT8:
            label = int8_label(runs)
        first = {k: next((p[k] for p in present if p.get(k) is not None), None)
                 for k in ("params", "size_bytes", "train_ms", "infer_ms")}
        cells = [label, *(_mean_std([p.get(m) for p in present]) for m in METRICS),
                 f"{first['params']:,}" if first["params"] else "–", _mb(first["size_bytes"]),
                 _f(first["train_ms"], 1) if first["train_ms"] else "–",
                 _f(first["infer_ms"], 1) if first["infer_ms"] else "n/a", str(len(present))]
        if paper_column:
            cells.append(_f(paper) if paper else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def export_table(export: Mapping[str, Any]) -> str:
    """Keras model vs each ``.tflite`` on the test split (LiteRT), with sizes."""
    evaluation = export.get("evaluation", {})
    keras_row = evaluation.get("keras", {})
    files = evaluation.get("tflite", {})
    if not files:
        return ""
    lines = ["| model | accuracy | balanced acc. | macro F1 | macro AUC | top-1 agreement with "
             "Keras | top-2 ties | size |", "|---|---|---|---|---|---|---|---|"]
    if keras_row:
        lines.append(f"| Keras (float32) | {_f(keras_row.get('accuracy'))} | "
                     f"{_f(keras_row.get('balanced_accuracy'))} | {_f(keras_row.get('macro_f1'))}"
                     f" | {_f(keras_row.get('macro_auc'))} | – | – | "
                     f"{_mb(keras_row.get('float_size_bytes'))} (params x 4) |")
    for kind, row in files.items():
        ties = row.get("top1_ties")
        lines.append(f"| model_{kind}.tflite | {_f(row.get('accuracy'))} | "
                     f"{_f(row.get('balanced_accuracy'))} | {_f(row.get('macro_f1'))} | "
                     f"{_f(row.get('macro_auc'))} | {_f(row.get('agreement'))} | "
                     f"{'n/a' if ties is None else ties} | {_mb(row.get('size_bytes'))} |")
    return "\n".join(lines + _export_notes(export))


def _export_notes(export: Mapping[str, Any]) -> list[str]:
    """How the int8 file was made (head, centring) and what a re-export replaced."""
    int8 = export.get("int8", {})
    conversion = export.get("conversion", {})
    notes = []
    if "head" in int8:
        head = ("float32 head (" + ", ".join(int8.get("float_ops") or []) + ")"
                if int8["head"] == "float" else "all-integer")
        centred = ", ".join(conversion.get("centred_convs") or []) or "none"
        notes.append(f"int8 file: {head}; first convolutions centred (x - 128): {centred}.")
    previous = export.get("previous", {}).get("int8")
    if previous:
        notes.append(f"Re-exported with `kdskin export --run` ({export.get('reexported_at', '?')}"
                     f"); the earlier int8 file: accuracy {_f(previous.get('accuracy'))}, macro "
                     f"F1 {_f(previous.get('macro_f1'))}, top-1 agreement "
                     f"{_f(previous.get('agreement'))}.")
    return ["", *notes] if notes else []


def _machine(metrics: RunMetrics) -> str:
    machine = metrics.machine_info
    if not machine:
        return "n/a"
    return f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"


# --------------------------------------------------------------------------- one run


def external_table(metrics: RunMetrics) -> str:
    """Every model (and ``.tflite`` file) of the run on the external set, beside the test split,
    with per-class recall on the external set ("" when the run has no external evaluation)."""
    ext = metrics.external
    if not ext:
        return ""

    rows = [(LABELS.get(k, k), m.test, m.external) for k, m in metrics.models.items()
            if m.external]
    int8_test = metrics.int8_result()
    rows += [(f"model_{kind}.tflite", int8_test if kind == INT8 else {}, values)
             for kind, values in ext.get("tflite", {}).items()]
    # melanoma AUC: recorded since 2026-12-05 (older runs' metrics lack it)
    mel_auc = any("melanoma_auc" in values for _, _, values in rows)
    head = ["model", "test bal. acc.", "external acc.", "external bal. acc.", "external AUC",
            "external mel. recall", *(["external mel. AUC"] if mel_auc else []),
            *(f"recall {c}" for c in CLASSES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, test, values in rows:
        recall = values.get("per_class", {})
        lines.append("| " + " | ".join([
            label, _f(test.get("balanced_accuracy")), _f(values.get("accuracy")),
            _f(values.get("balanced_accuracy")), _f(values.get("macro_auc")),
            _f(values.get("melanoma_recall")),
            *([_f(values.get("melanoma_auc"))] if mel_auc else []),
            *(_f(recall.get(c, {}).get("recall"), 3) for c in CLASSES)]) + " |")
    return "\n".join(lines)


def shift_table(metrics: RunMetrics) -> str:
    """The acquisition-shift suite on the external set (``external["shifts"]``): one row per
    shift, one column per model with "balanced accuracy (change from clean) / macro AUC /
    melanoma recall" (and "/ melanoma AUC" when the run recorded it), and the share the
    out-of-scope check flags ("" when the run has none)."""
    suites = metrics.external.get("shifts", {}) if metrics.external else {}
    if not suites:
        return ""
    names = list(suites)
    mel_auc = any("melanoma_auc" in row for suite in suites.values()
                  for row in suite["shifts"].values())
    head = ["shift", *(LABELS.get(name, name) for name in names), "out-of-scope share"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shift in suites[names[0]]["shifts"]:
        cells = [f"`{shift}`"]
        flagged = None
        for name in names:
            row = suites[name]["shifts"].get(shift, {})
            drop = row.get("drop", {}).get("balanced_accuracy")
            change = "" if shift == "clean" or drop is None else f" ({-drop:+.3f})"
            cells.append(f"{_f(row.get('balanced_accuracy'), 3)}{change} / "
                         f"{_f(row.get('macro_auc'), 3)} / {_f(row.get('melanoma_recall'), 2)}"
                         + (f" / {_f(row.get('melanoma_auc'), 3)}" if mel_auc else ""))
            flagged = row.get("flagged") if flagged is None else flagged
        cells.append(_f(flagged, 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SHIFT_NOTE = ("Each shift is applied, deterministically, to every external image at the model's "
              "input size (`kdskin/data/shifts.py`; docs/SHIFT_SUITE.md). Each cell: "
              "balanced accuracy (change from the clean row) / macro AUC / melanoma recall "
              "(/ melanoma AUC, one-vs-rest, in runs that recorded it). "
              "Out-of-scope share: images the final student's out-of-scope check flags (it "
              "reads the image only, so one column serves every model).")


def intervals_table(metrics: RunMetrics) -> str:
    """Stratified bootstrap 95% intervals of every model (and the int8 file on the external
    set) of one run: ``value [low, high]`` per headline metric ("" when none were computed)."""
    rows = [(LABELS.get(name, name), set_name, iv) for name, record in metrics.models.items()
            for set_name, iv in record.intervals.items()]
    int8_ext = metrics.external.get("tflite", {}).get(INT8, {}).get("intervals")
    if int8_ext:
        rows.append((int8_label([metrics]), "external", int8_ext))
    if not rows:
        return ""
    lines = ["| model | set | " + " | ".join(METRIC_HEADS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for label, set_name, iv in rows:
        lines.append(f"| {label} | {set_name} | " + " | ".join(
            (_f(iv[m]["value"]) + _interval_text(iv[m])) if m in iv else "n/a"
            for m in METRICS) + " |")
    return "\n".join(lines)


def trust_section(metrics: RunMetrics) -> list[str]:
    """Markdown lines: calibration before/after, the referral operating point, the out-of-scope
    check and the paired KD-gain interval of the run's final model ([] without a trust stage)."""
    trust = metrics.trust
    if not trust:
        return []
    rules = trust["rules"]
    lines = [f"Final model `{trust['model']}`; every rule fitted on the validation split. "
             f"Temperature {rules['temperature']:.3f} (folded into the exported softmax).", "",
             "| set | ECE before | ECE after | Brier before | Brier after | NLL before | "
             "NLL after | referral sensitivity | specificity | referral rate | melanoma "
             "sensitivity |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    scored = [("validation", trust["val"]), ("test", trust["test"])]
    scored += [(f"external ({name})", v) for name, v in metrics.external.get("trust", {}).items()]
    for name, values in scored:
        cal, ref = values["calibration"], values.get("referral", {})
        b, a = cal["before"], cal["after"]
        lines.append(f"| {name} | {_f(b['ece'])} | {_f(a['ece'])} | {_f(b['brier'])} | "
                     f"{_f(a['brier'])} | {_f(b['nll'])} | {_f(a['nll'])} | "
                     f"{_f(ref.get('sensitivity'))} | {_f(ref.get('specificity'))} | "
                     f"{_f(ref.get('referral_rate'))} | {_f(ref.get('melanoma_sensitivity'))} |")
    offsets = rules.get("class_offsets")
    if offsets is not None:
        mel = offsets[CLASSES.index(MELANOMA)]
        lines += ["", f"Top-1 class: melanoma log-odds offset {mel:+.2f}, fitted on the "
                  f"validation split and folded into the exported files (after the "
                  f"temperature); balanced accuracy / melanoma recall of the top-1 class "
                  f"without and with it:", ""]
        for name, values in scored:
            op = values.get("operating_point")
            if op:
                lines.append(f"- {name}: {_f(op['balanced_accuracy_before'])} / "
                             f"{_f(op['melanoma_recall_before'], 2)} -> "
                             f"{_f(op['balanced_accuracy_after'])} / "
                             f"{_f(op['melanoma_recall_after'], 2)}")
    classes = "+".join(rules["malignant_classes"])
    lines += ["", f"Referral: refer when P({classes}) >= {rules['referral_threshold']:.4f}, the "
              f"threshold that reaches sensitivity {rules['target_sensitivity']:.2f} on the "
              "validation split."]
    oos = trust.get("out_of_scope")
    if oos:
        m = oos["metrics"]
        what = ("the image's statistics (colour, saturation, texture, sharpness, exposure, "
                "centring) are further from the training images' than"
                if oos["score"] == "image_stats"
                else f"its {oos['score']} score is below")
        lines.append(f"Out of scope: warn when {what} the threshold {oos['threshold']:.4f} "
                     f"that {oos['pass_rate']:.0%} of validation images pass. On "
                     f"{oos['n_generated']} generated images the model was not made for "
                     f"({', '.join(oos['kinds'])}): AUROC {_f(m['auroc'])}, false-pass rate "
                     f"{_f(m['false_pass_rate'])}; test images passing {_f(m['in_pass_rate'])}.")
        by_kind = m.get("false_pass_rate_by_kind") or {}
        if by_kind:
            lines.append("False-pass rate by kind: " + ", ".join(
                f"{k} {_f(v, 2)}" for k, v in sorted(by_kind.items())) + ".")
        for score, cm in oos.get("compared", {}).items():
            lines.append(f"For comparison, the model's own {score} as the score (threshold "
                         f"passing {oos['pass_rate']:.0%} of validation): AUROC "
                         f"{_f(cm['auroc'])}, false-pass rate {_f(cm['false_pass_rate'])}.")
    for name, diff in trust.get("comparisons", {}).items():
        cells = [f"{METRIC_HEADS[i]} {_f(diff[m]['value'])}{_interval_text(diff[m])}"
                 for i, m in enumerate(METRICS) if m in diff]
        lines.append(f"Paired bootstrap difference on the test split, {name}: "
                     + "; ".join(cells) + ".")
    return lines


def _teacher_origin(metrics: RunMetrics) -> str:
    """How a reused teacher was trained, where that differs from this run's config."""
    recorded = metrics.teacher_settings
    if not recorded:
        return ""
    if UNKNOWN_TEACHER in recorded:
        return "; its training settings are unknown (a file from outside a run)"
    own = settings_of({"teacher": metrics.config_values.get("teacher") or {}})
    theirs = settings_of({"teacher": recorded})
    diff = _differences(theirs, own)
    return (f"; trained with {diff} (this run's config: {_differences(own, theirs)})" if diff
            else "; trained with this run's teacher settings")


def _peak_memory(metrics: RunMetrics) -> str:
    """``; peak resident memory 1,234 MiB (stage export; per stage: data 650, ...)`` for the
    timing line ("" for a run made before it was recorded)."""
    peaks, top = metrics.stage_peak_rss_mib, metrics.peak_stage()
    if top is None:
        return ""
    return (f"; peak resident memory {peaks[top]:,.0f} MiB (stage {top}; per stage: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in peaks.items())
            + f"; {metrics.peak_rss_method or 'method not recorded'})")


def run_report(run_dir: str | Path | RunDir) -> str:
    """The ``report.md`` text of one run directory."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    metrics = run.load_metrics()
    sizes = metrics.sizes
    wall = metrics.wall_seconds
    parts = [
        f"# kdskin run: {metrics.config}",
        "",
        f"- data: {metrics.data}",
        f"- protocol: **{protocol_label(metrics.protocol)}**",
        f"- input: {metrics.image_size}x{metrics.image_size} RGB; split sizes: "
        f"train {sizes.get('train')}, val {sizes.get('val')}, test {sizes.get('test')}; "
        f"training seed {metrics.seed if metrics.seed is not None else 'n/a'}",
        "- majority-class accuracy on the test split: "
        f"{_f(metrics.majority_class_accuracy)}",
        f"- wall time: {_f(wall / 60 if wall else None, 1)} min on {_machine(metrics)}"
        + (f" (resumed {metrics.resumed}x: finished work of every session, time lost to the "
           "interruption not counted)" if metrics.resumed else "")
        + _peak_memory(metrics),
    ]
    if metrics.teacher_from:
        parts.append(f"- teacher reused from {metrics.teacher_from} (not retrained)"
                     + _teacher_origin(metrics))
    if metrics.teacher_offset:
        fit = metrics.teacher_offset
        parts.append(f"- teacher's targets: its logits plus the prior offset -tau * log(training "
                     f"prior), tau {fit['tau']:.2f} fitted on validation (the teacher's balanced "
                     f"accuracy there {_f(fit['balanced_accuracy_before'])} -> "
                     f"{_f(fit['balanced_accuracy_after'])}; distill.teacher_offset)")
    parts += [
        "",
        "## Results (test split)",
        "",
        results_table([metrics]),
        "",
        TABLE_NOTE,
    ]
    if metrics.external:
        parts += ["", f"## External set ({metrics.external.get('data')}, "
                  f"{metrics.external.get('n_images')} images)", "", external_table(metrics)]
        if shift_table(metrics):
            parts += ["", "## External set under acquisition shifts", "", SHIFT_NOTE, "",
                      shift_table(metrics)]
    if intervals_table(metrics):
        parts += ["", "## 95% intervals (stratified bootstrap, 1,000 resamples)", "",
                  intervals_table(metrics)]
    if metrics.trust:
        parts += ["", "## Calibration, operating point, out-of-scope check", "",
                  *trust_section(metrics), "", "Model card: `MODEL_CARD.md`."]
    if metrics.export:
        table = export_table(metrics.export)
        if table:
            parts += ["", "## Export check (test split, LiteRT)", "", table]
        line = int8_check_line(metrics.export)
        if line:
            parts += ["", ("**The int8 file does not decide like its Keras model**: "
                           if int8_check_failed(metrics.export) else "int8 check: ") + line + "."]
        for note in metrics.export.get("notes", []):
            parts.append(f"- {note}")
    if metrics.bench.get("rows"):
        from kdskin.bench import format_table

        parts += ["", "## Benchmark", "", format_table(metrics.bench["rows"])]
    grids = metrics.explanations.get("grids", {})
    if grids:
        parts += ["", "## Explanations", ""]
        parts += [f"- {method}: `{path}`" for method, path in grids.items()]
    parts += ["", "## Plots", "", "Training curves, confusion matrices and ROC curves: `plots/`. "
              "TensorBoard: `tensorboard --logdir logs`.", ""]
    return "\n".join(parts)


def write_run_report(run_dir: str | Path | RunDir) -> Path:
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    return atomic_write_text(run.report, run_report(run))


# --------------------------------------------------------------------------- several runs


def _load_runs(paths: Iterable[str | Path]) -> list[tuple[str, Path | None, RunMetrics]]:
    """``(name, run_dir or None, metrics)`` for each run directory or saved metrics JSON."""
    runs = []
    for run in paths:
        path = Path(run)
        if path.is_dir():
            metrics = RunDir(path).load_metrics()
            runs.append((path.name, path, metrics))
        else:
            runs.append((path.stem, None, load_metrics(path)))
    if not runs:
        raise KdskinError("no runs given; pass run directories or metrics.json files")
    return runs


#: Settings that do not define an experiment: runs differing only in these are its repeats.
#: ``data.synth`` (the built-in dataset's size and seed) is part of the data, which the key
#: holds already (the split's digest, or the data's name and split sizes), and means nothing
#: for runs on real data: a cpu.yaml run must not part from its repeats when the quickstart's
#: dataset size changes.
NOT_EXPERIMENT = ("name", "data.dir", "data.strict", "data.synth", "data.external",
                  "data.external_format", "data.stream_cache", "train.worker_timeout",
                  "train.seed", "train.verbose", "distill.stages", "baseline", "reference",
                  "reference_effnet", "teacher.enabled",
                  "bench", "explain", "export", "trust", "adapt")


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "exit_map":
            out.update(_flat(value, f"{full}."))
        else:
            out[full] = value
    return out


def settings_of(config_values: Mapping[str, Any]) -> dict[str, Any]:
    """The config values (``Config.to_dict()``) that define an experiment, flattened
    ``section.key``: everything but :data:`NOT_EXPERIMENT`."""
    return {k: v for k, v in _flat(config_values).items()
            if not any(k == n or k.startswith(f"{n}.") for n in NOT_EXPERIMENT)}


@functools.cache
def _default_settings() -> dict[str, Any]:
    """Today's defaults as :func:`settings_of` (computed once; callers merge, never mutate)."""
    from kdskin.config import Config

    return settings_of(Config().to_dict())


#: The setting that stands for a reused teacher whose training settings are unknown.
TEACHER_SOURCE = f"teacher.{UNKNOWN_TEACHER}"


def experiment_settings(metrics: RunMetrics) -> dict[str, Any]:
    """The run's config values that define its experiment (flattened ``section.key``). A setting
    the run predates (added to kdskin after it was made) takes today's default, which keeps the
    behaviour from before the setting existed, so such a run still groups with its repeats.

    A run that reused a teacher (``--teacher``) has the ``teacher.*`` settings that trained that
    teacher where the run recorded them, not its own config's: a student of a longer-trained
    teacher is another experiment, not a seed of the run whose config it shares. A teacher of
    unknown origin (a file outside a run) shows as :data:`TEACHER_SOURCE` ``=PATH``. Settings
    that have no effect on the run's teacher are left out (:func:`drop_unused`)."""
    if not metrics.config_values:
        return {}
    settings = {**_default_settings(), **settings_of(metrics.config_values)}
    recorded = metrics.teacher_settings if metrics.teacher_from else None
    if recorded:
        settings = {k: v for k, v in settings.items() if not k.startswith("teacher.")}
        if UNKNOWN_TEACHER not in recorded:
            settings |= {k: v for k, v in _default_settings().items() if k.startswith("teacher.")}
        settings |= settings_of({"teacher": recorded})
    return drop_unused(settings)


def drop_unused(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` (flattened) without the ``teacher.*`` keys that have no effect on its teacher
    (:func:`kdskin.models.specs.unused_teacher_keys`): runs that differ only in those are
    repeats of one experiment."""
    branch, depth = settings.get("teacher.conv_branch"), settings.get("teacher.vit_depth")
    if branch is None:
        return dict(settings)
    unused = {f"teacher.{k}" for k in unused_teacher_keys(branch, 1 if depth is None else depth)}
    return {k: v for k, v in settings.items() if k not in unused}


def data_name(metrics: RunMetrics) -> str:
    """The run's data folder by name (``../shared/data/ham10000`` and
    ``/work/shared/data/ham10000`` are one dataset: a path as typed is not an identity)."""
    name = Path(str(metrics.data).rstrip("/\\")).name
    return name or str(metrics.data)


def experiment_key(metrics: RunMetrics) -> tuple:
    """Runs with the same key are seeds of one experiment: same config name, protocol, data
    (the split's digest: which image is in which split; for a saved metrics file that lacks
    it, the data folder's name and the split sizes), input size and experiment-defining
    settings (everything but the seed, the stages run and the export/bench/explain settings)."""
    import json

    settings = json.dumps(experiment_settings(metrics), sort_keys=True, default=str)
    sizes = tuple(sorted((metrics.sizes or {}).items()))
    data = (metrics.split_digest,) if metrics.split_digest else (data_name(metrics), sizes)
    return (metrics.config, metrics.protocol, data, metrics.image_size, settings)


def _differences(group: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """``key=value`` settings where ``group`` differs from ``reference`` (both flattened); a key
    only one of them has (a setting added after the other run was made) is left out, but for a
    teacher of unknown origin (``teacher.source``), which is always shown."""
    diff = [f"{k}={group[k]}" for k in sorted(group)
            if (k in reference and group[k] != reference[k])
            or (k == TEACHER_SOURCE and k not in reference)]
    return ", ".join(diff)


def _copy_plots(run_dir: Path, dest: Path) -> list[str]:
    """Copy a run's training-curve and confusion-matrix PNGs to ``dest``; return their names."""
    copied = []
    plots = run_dir / "plots"
    if not plots.is_dir():
        return copied
    dest.mkdir(parents=True, exist_ok=True)
    for png in sorted(plots.glob("*.png")):
        if png.stem.endswith(("_history", "_confusion")):
            shutil.copyfile(png, dest / png.name)
            copied.append(png.name)
    return copied


# --------------------------------------------------------------------------- headline

#: The references the shipped file is compared with in the headline, with their labels.
REFERENCES: tuple[tuple[str, str], ...] = (
    (REFERENCE_CNN, "the strong plain reference"),
    (REFERENCE_EFFNET, "the pretrained reference (EfficientNet-Lite alone)"),
)
#: The sets a target can name (``SET.METRIC``), with their prefix in :func:`model_rows`.
TARGET_SETS: dict[str, str] = {"test": "", "external": "external_"}


def load_targets(path: str | Path) -> dict[str, float]:
    """The user's thresholds for the int8 file, from a YAML or JSON mapping of
    ``SET.METRIC: MINIMUM`` (SET one of :data:`TARGET_SETS`, METRIC one of :data:`METRICS`), e.g.
    ``external.balanced_accuracy: 0.65``; a nested mapping (``external: {macro_auc: 0.92}``)
    reads the same. Keys keep the file's order. A file that cannot be read, is not such a
    mapping, names an unknown target or gives a value that is not a number raises a one-line
    :class:`KdskinError` naming the file."""
    import yaml

    path = Path(path)
    hint = (f"write one SET.METRIC: MINIMUM per line, SET one of {', '.join(TARGET_SETS)}, METRIC "
            f"one of {', '.join(METRICS)} (e.g. external.balanced_accuracy: 0.65)")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise KdskinError(f"{path}: cannot read the targets file ({e.__class__.__name__}); pass "
                          f"an existing YAML or JSON file to --targets") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "parse error"
        raise KdskinError(f"{path}: not YAML or JSON ({problem}); {hint}") from None
    if not isinstance(loaded, Mapping) or not loaded:
        raise KdskinError(f"{path}: not a mapping of targets; {hint}")
    targets: dict[str, float] = {}
    for key, value in _flat(loaded).items():
        set_name, _, metric = key.partition(".")
        if set_name not in TARGET_SETS or metric not in METRICS:
            raise KdskinError(f"{path}: unknown target {key!r}; {hint}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise KdskinError(f"{path}: target {key} is {value!r}, not a number; {hint}")
        targets[key] = float(value)
    return targets


def target_lines(rows: Sequence[Mapping[str, Mapping[str, Any]]], targets: Mapping[str, float],
                 source: str | Path | None = None) -> list[str]:
    """Markdown lines: each of ``targets`` (:func:`load_targets`) beside the int8 file's mean
    over ``rows`` (:func:`_experiment_rows`), with the verdict ("met", "NOT met", or "n/a" where
    no run has the figure). No targets, no lines: the library holds no thresholds of its own."""
    if not targets:
        return []
    names = dict(zip(METRICS, METRIC_HEADS, strict=True))
    lines = ["", "Targets (int8 file" + (f", from `{source}`" if source else "") + "):", ""]
    for key, minimum in targets.items():
        set_name, _, metric = key.partition(".")
        value = _mean(_values(rows, INT8, TARGET_SETS[set_name] + metric))
        mark = "n/a" if value is None else ("met" if value >= minimum else "NOT met")
        figure = _f(value) + ("" if value is None else f" ({value - minimum:+.4f})")
        lines.append(f"- {set_name} {names[metric]} at least {minimum:g}: {figure}: **{mark}**")
    return lines
#: Headline columns: (row key, label), the shipped file first.
HEADLINE_COLUMNS: tuple[tuple[str, str], ...] = (
    (INT8, "int8 distilled student"),
    (student_name("multi_fusion"), "Keras distilled student"),
    (REFERENCE_CNN, "strong plain reference"),
    (REFERENCE_EFFNET, "pretrained reference"),
    (TEACHER, "teacher"),
    (student_name("baseline"), "student alone"),
    (BASELINE_CNN, "paper's CNN"),
)


def _values(rows: Sequence[Mapping[str, Mapping[str, Any]]], row: str, metric: str
            ) -> list[float]:
    """``metric`` of ``row`` in each run's ``model_rows`` that has it (None and NaN left out)."""
    return [float(v) for v in _finite([r.get(row, {}).get(metric) for r in rows])]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.mean(values) if values else None


def _majority(runs: Sequence[RunMetrics]) -> str:
    return _f(_mean([m.majority_class_accuracy for m in runs
                     if m.majority_class_accuracy is not None]))


def _interval_text(iv: Mapping[str, Any] | None) -> str:
    if not iv or iv.get("low") is None:
        return ""
    return f" [{_f(iv['low'], 3)}, {_f(iv['high'], 3)}]"


def _external_intervals(runs: Sequence[RunMetrics]) -> dict[str, dict[str, Any]]:
    """Bootstrap intervals on the external set of the int8 file and of the Keras models, from
    the first run that has them (a single run's uncertainty; seeds are not pooled)."""
    out: dict[str, dict[str, Any]] = {}
    for metrics in runs:
        int8 = metrics.external.get("tflite", {}).get(INT8, {})
        if int8.get("intervals") and INT8 not in out:
            out[INT8] = int8["intervals"]
        for name, record in metrics.models.items():
            if record.intervals.get("external") and name not in out:
                out[name] = record.intervals["external"]
    return out


def _seed_comparison(rows: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Markdown lines: the Keras distilled student vs the strong plain reference on the external
    set over training seeds (means, and one seed's std), when either has several runs."""
    student = student_name("multi_fusion")
    pairs = {m: (_values(rows, student, f"external_{m}"), _values(rows, REFERENCE_CNN,
                                                                  f"external_{m}"))
             for m in ("balanced_accuracy", "macro_auc")}
    lengths = [len(values) for pair in pairs.values() for values in pair]
    if min(lengths) == 0 or max(lengths) < 2:  # a model missing, or one run of each
        return []
    n_student, n_ref = len(pairs["macro_auc"][0]), len(pairs["macro_auc"][1])

    def spread(values: Sequence[float]) -> str:
        return _f(statistics.stdev(values)) if len(values) > 1 else "n/a"

    def runs(n: int) -> str:
        return f"{n} run" + ("s" if n != 1 else "")

    parts = [f"{name} {statistics.mean(a) - statistics.mean(b):+.4f} (std of one seed: student "
             f"{spread(a)}, reference {spread(b)})"
             for name, (a, b) in zip(("balanced accuracy", "AUC"), pairs.values(), strict=True)]
    return [f"- over training seeds, the Keras distilled student ({runs(n_student)}) minus the "
            f"strong plain reference ({runs(n_ref)}), external means: " + "; ".join(parts)]


def headline(honest: Sequence[RunMetrics], leaky: Sequence[RunMetrics] = (),
             targets: Mapping[str, float] | None = None,
             targets_source: str | Path | None = None) -> list[str]:
    """Markdown lines: the shipped int8 student beside the strong plain reference, the teacher,
    the student alone and the paper's CNN, on the lesion-grouped test split and on the external
    set; its differences from the references; the leaky protocol's inflation. Verdicts only for
    the user's ``targets`` (:func:`load_targets`; ``targets_source`` names their file)."""
    lines = ["## Headline", ""]
    honest_rows = _experiment_rows(honest)  # a reused teacher counted once
    leaky_rows = _experiment_rows(leaky)
    columns = [(k, label) for k, label in HEADLINE_COLUMNS if any(k in r for r in honest_rows)]
    if not any(k == INT8 for k, _ in columns):
        return lines + ["No int8 model in the lesion-grouped runs: nothing to compare.", ""]
    has_external = any(_values(honest_rows, INT8, f"external_{m}") for m in METRICS)
    names = dict(zip(METRICS, METRIC_HEADS, strict=True))
    sets = [("test", "")] + ([("external", "external_")] if has_external else [])
    lines += ["Mean ± std over the runs that have the model (training seeds); test = the "
              "lesion-grouped test split, external = the external set (never trained or tuned "
              "on). Brackets: stratified bootstrap 95% interval of the int8 file on the external "
              "set (one run).", "",
              "| metric | set | " + " | ".join(label for _, label in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    intervals = _external_intervals(honest)
    for m in METRICS:
        for set_name, prefix in sets:
            cells = []
            for key, _ in columns:
                cell = _mean_std(_values(honest_rows, key, prefix + m))
                if set_name == "external" and key == INT8:
                    cell += _interval_text(intervals.get(INT8, {}).get(m))
                cells.append(cell)
            lines.append(f"| {names[m]} | {set_name} | " + " | ".join(cells) + " |")

    lines += target_lines(honest_rows, targets or {}, targets_source)
    if has_external:
        bacc = _mean(_values(honest_rows, INT8, "external_balanced_accuracy"))
        auc = _mean(_values(honest_rows, INT8, "external_macro_auc"))
        differences = []
        for ref, label in REFERENCES:
            ref_bacc = _mean(_values(honest_rows, ref, "external_balanced_accuracy"))
            ref_auc = _mean(_values(honest_rows, ref, "external_macro_auc"))
            if None not in (bacc, auc, ref_bacc, ref_auc):
                differences.append(f"- the int8 file minus {label}, external means: balanced "
                                   f"accuracy {bacc - ref_bacc:+.4f}, AUC {auc - ref_auc:+.4f}")
        differences += _seed_comparison(honest_rows)
        lines += ([""] if differences else []) + differences
    lines.append("")
    if leaky:
        lines += ["", "Inflation of the paper's LEAKY protocol (augment to balance, then split at "
                  "random) over the lesion-grouped split, same configuration (leaky - honest, "
                  f"means). Majority-class accuracy of the test split: leaky {_majority(leaky)}, "
                  f"honest {_majority(honest)}; where they differ, plain accuracy is not "
                  "comparable across the two protocols (balanced accuracy, macro F1 and AUC "
                  "are):", "",
                  "| model | " + " | ".join(METRIC_HEADS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        for row, label, _ in ROWS:
            cells = []
            for m in METRICS:
                h, lk = _mean(_values(honest_rows, row, m)), _mean(_values(leaky_rows, row, m))
                cells.append("n/a" if h is None or lk is None else f"{lk - h:+.4f}")
            if any(c != "n/a" for c in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _load_explanations(path: str | Path) -> tuple[str, dict[str, Any], Path | None]:
    """(name, faithfulness result with the explained model, plot or None) of a ``kdskin explain
    --evaluate`` folder, or of an ``explain/NAME.json`` kept by an earlier report."""
    path = Path(path)
    if path.is_dir():
        file = path / "faithfulness.json"
        if not file.is_file():
            raise KdskinError(f"{path}: no faithfulness.json; run kdskin explain --evaluate "
                              f"--out {path} first")
        result = dict(read_json(file))
        info = path / "explanations.json"
        if info.is_file():
            result["model"] = read_json(info).get("model")
        plot = path / "faithfulness.png"
        return path.name, result, plot if plot.is_file() else None
    if not path.is_file():
        raise KdskinError(f"{path}: not found; pass a kdskin explain --evaluate folder")
    return path.stem, dict(read_json(path)), None


def explanations_section(paths: Sequence[str | Path], out: Path, results: Path | None
                         ) -> list[str]:
    """Markdown lines: the deletion/insertion table of each explain folder; with ``results``
    its JSON (numbers only, no images) and curve plot are kept there."""
    from kdskin.explain.faithfulness import faithfulness_table

    parts: list[str] = []
    for path in paths:
        name, result, plot = _load_explanations(path)
        parts += [f"## Explanations: faithfulness ({name})", "",
                  f"Model: `{result.get('model', 'n/a')}`. Deletion: the class probability as the "
                  "most relevant pixels are blurred away first (lower is better); insertion: as "
                  "they are restored first (higher is better); against a random map.", "",
                  faithfulness_table(result)]
        if results is not None:
            from kdskin.io import write_json

            keep = results / "explain"
            keep.mkdir(parents=True, exist_ok=True)
            write_json(keep / f"{name}.json", result)
            if plot is not None:
                shutil.copyfile(plot, keep / f"{name}_faithfulness.png")
            kept = keep / f"{name}_faithfulness.png"
            if kept.is_file():
                rel = kept.relative_to(out.parent) if kept.is_relative_to(out.parent) else kept
                parts += [f"Curves: [{kept.name}]({rel})", ""]
    return parts


RECIPE_NOTE = (
    "Every model trained in every run above, one row each (a teacher reused with `--teacher` "
    "is listed once, in the run that trained it). Settings: a label, listed under the table "
    "with how the run differs from the first run (the shipped configuration). Choose on the "
    "validation split (val); the external set shows whether a choice generalizes, it is not "
    "searched over. Small differences are within one seed's noise: the 95% interval of one "
    "model's external balanced accuracy is about +-0.09 wide (300 images), of its validation "
    "balanced accuracy about +-0.07.")


def recipe_table(runs: Sequence[tuple[str, RunMetrics]]) -> str:
    """One row per (run, trained model): its settings' label, seed, and balanced accuracy and
    macro AUC on validation, test and the external set, with training epochs and minutes; then
    each label's settings (how the runs differ from the first run) in a list under the table."""
    reference = experiment_settings(runs[0][1]) if runs else {}
    head = ["run", "settings", "seed", "model", "val bal. acc.", "val AUC", "test bal. acc.",
            "test AUC", "external bal. acc.", "external AUC", "external mel. recall",
            "epochs", "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    labels: dict[str, str] = {}  # settings -> label, in order of first appearance
    for name, metrics in runs:
        differs = (_differences(experiment_settings(metrics), reference)
                   or "as the first run")
        label = labels.setdefault(differs, f"S{len(labels) + 1}")
        for key, model_label, _ in ROWS:
            record = metrics.models.get(key)
            if record is None or (key == TEACHER and metrics.teacher_from):
                continue
            cells = [name, label, str(metrics.seed), model_label,
                     _f(record.val.get("balanced_accuracy")), _f(record.val.get("macro_auc")),
                     _f(record.test.get("balanced_accuracy")), _f(record.test.get("macro_auc")),
                     _f(record.external.get("balanced_accuracy")),
                     _f(record.external.get("macro_auc")),
                     _f(record.external.get("melanoma_recall")),
                     str(record.epochs) if record.epochs is not None else "–",
                     f"{record.train_seconds / 60:.1f}" if record.train_seconds else "–"]
            lines.append("| " + " | ".join(cells) + " |")
    legend = [f"- **{label}**: {differs}" for differs, label in labels.items()]
    return "\n".join([*lines, "", "Settings of each label:", "", *legend])


def shareable(metrics: RunMetrics) -> dict[str, Any]:
    """``metrics`` without per-image entries (the explained images' ids and files), so what is
    kept beside the document holds numbers only, nothing of the dataset."""
    out = metrics.to_dict()
    out["explanations"] = {k: v for k, v in out["explanations"].items() if k != "entries"}
    return out


#: Settings in which a leaky-protocol run may differ from its lesion-grouped twin.
PROTOCOL_SETTINGS = ("data.protocol", "data.paper_per_class")


def _twins(leaky: RunMetrics, honest: RunMetrics) -> bool:
    """Same config, data, size and settings but for the split protocol."""
    def settings(m: RunMetrics) -> dict[str, Any]:
        return {k: v for k, v in experiment_settings(m).items() if k not in PROTOCOL_SETTINGS}

    return (leaky.config, data_name(leaky), leaky.image_size) == (
        honest.config, data_name(honest), honest.image_size) and settings(leaky) == settings(honest)


#: A line of every results document: the figures it does not generate.
SCALING_NOTE = ("Training on several workers (step time and images/s of 1 vs 2 workers, the "
                "prediction for N machines) and the streaming input path's memory within "
                "training are measured by their own commands, in [SCALING.md](SCALING.md) (not "
                "generated by `kdskin report`); each stage's peak memory in a whole run is "
                "tabulated here when runs are given with `--memory`.")


#: What the memory table's figures are.
MEMORY_NOTE = ("Each stage's own peak resident memory in MiB (`stage_peak_rss_mib` of the run's "
               "`metrics.json`: the kernel's high-water mark, reset at the stage's start; a "
               "stage's peak includes what earlier stages left resident); `-`: the run has no "
               "such stage. The wall time is the run's own and depends on what ran beside it; "
               "the memory does not.")


def memory_table(runs: Sequence[tuple[str, RunMetrics]]) -> str:
    """The per-stage peaks (MiB) of ``(name, metrics)`` runs, one column each, then the run's
    peak, the stage that reached it, its images and wall time; '-' where a stage is absent."""
    from kdskin.markdown import table

    stages: list[str] = []  # pipeline order: each run's new stages after their predecessor
    for _, m in runs:
        at = 0
        for stage in m.stage_peak_rss_mib:
            if stage in stages:
                at = stages.index(stage) + 1
            else:
                stages.insert(at, stage)
                at += 1
    rows = [[stage, *(f"{m.stage_peak_rss_mib[stage]:,.0f}" if stage in m.stage_peak_rss_mib
                      else "-" for _, m in runs)] for stage in stages]
    tops = [m.peak_stage() for _, m in runs]
    rows += [["**run peak**", *(f"**{m.stage_peak_rss_mib[t]:,.0f}**" if t else "-"
                                for (_, m), t in zip(runs, tops, strict=True))],
             ["at stage", *(t or "-" for t in tops)],
             ["images", *(f"{sum(m.sizes.values()):,}" for _, m in runs)],
             ["wall min", *(f"{m.wall_seconds / 60:.1f}" if m.wall_seconds else "-"
                            for _, m in runs)]]
    return table(["stage", *(name for name, _ in runs)], rows,
                 align=["l", *("r" for _ in runs)])


def _keep_metrics(runs: Sequence[tuple[str, Path | None, RunMetrics]], folder: Path) -> None:
    """Keep each run directory's metrics (:func:`shareable`) as ``folder/NAME.json``, from
    which a document can be regenerated without the run (saved JSON given as runs stay as
    they are)."""
    from kdskin.io import write_json

    folder.mkdir(parents=True, exist_ok=True)
    for name, run_dir, metrics in runs:
        if run_dir is not None:
            write_json(folder / f"{name}.json", shareable(metrics))


def memory_section(paths: Sequence[str | Path], results: Path | None) -> list[str]:
    """The "Peak memory by stage" section of the runs at ``paths`` (directories or saved
    metrics JSON); with ``results`` each is kept as ``results/memory/NAME.json``."""
    if not paths:
        return []
    runs = _load_runs(paths)
    missing = [name for name, _, m in runs if not m.stage_peak_rss_mib]
    if missing:
        raise KdskinError(f"{', '.join(missing)}: no per-stage peak memory recorded "
                          f"(stage_peak_rss_mib); pass runs made by this kdskin")
    if results is not None:
        _keep_metrics(runs, results / "memory")
    methods = sorted({m.peak_rss_method for _, _, m in runs if m.peak_rss_method})
    return ["## Peak memory by stage", "",
            MEMORY_NOTE + (f" Method: {', '.join(methods)}." if methods else ""), "",
            "Machines: " + "; ".join(f"`{name}` {_machine(m)}" for name, _, m in runs), "",
            memory_table([(name, m) for name, _, m in runs]), ""]


def _experiment_section(key: tuple, members: Sequence[tuple[str, Path | None, RunMetrics]],
                        reference: Mapping[str, Any], out: Path, results: Path | None
                        ) -> list[str]:
    """One experiment's section of :func:`results_document`: what it is (its settings against
    the first experiment's ``reference``), its runs' table, the first run's export check, each
    run's external, shift, interval and trust tables, and the first run's plots (copied into
    ``results`` when given)."""
    config, protocol, _data, size, _ = key
    parts: list[str] = []
    first_name, first_dir, first = members[0]
    data = first.data
    seeds = [m[2].seed for m in members]
    walls = [m[2].wall_seconds for m in members if m[2].wall_seconds]
    leaky = protocol == "paper"
    differs = _differences(experiment_settings(first), reference)
    parts += [
        f"## {config}: {protocol_label(protocol)}" + (" -- LEAKY" if leaky else "")
        + f", `{first_name}`" + (f" and {len(members) - 1} more" if len(members) > 1 else ""),
        "",
        f"- settings: {differs or 'those of the first experiment'}"
        + (" (against the first experiment)" if differs else ""),
        f"- data: {data}; input {size}x{size} RGB; split sizes: "
        + ", ".join(f"{k} {v}" for k, v in first.sizes.items())
        + (f" (split digest {first.split_digest})" if first.split_digest else ""),
        f"- protocol: **{protocol_label(protocol)}**",
        f"- runs: {', '.join(m[0] for m in members)} (training seeds "
        f"{', '.join(str(s) for s in seeds)})",
        f"- machine: {_machine(first)}; wall time per run: "
        + (", ".join(f"{w / 60:.1f} min" for w in walls) if walls else "n/a"),
        f"- majority-class accuracy on the test split: "
        f"{_f(first.majority_class_accuracy)}",
        "",
        results_table([m[2] for m in members]),
        "",
    ]
    if first.export and export_table(first.export):
        parts += [f"Export check of `{first_name}` (test split, LiteRT):", "",
                  export_table(first.export), ""]
    for name, _run_dir, member in members:
        if member.external:
            parts += [f"External set of `{name}` ({member.external.get('data')}, "
                      f"{member.external.get('n_images')} images):", "",
                      external_table(member), ""]
            if shift_table(member):
                parts += [f"Acquisition-shift suite of `{name}` on the external set. "
                          + SHIFT_NOTE, "", shift_table(member), ""]
        if intervals_table(member):
            parts += [f"95% intervals of `{name}` (stratified bootstrap):", "",
                      intervals_table(member), ""]
        if member.trust:
            parts += [f"Calibration, operating point and out-of-scope check of `{name}`:",
                      "", *trust_section(member), ""]
    if results is not None:
        plot_dir = results / first_name
        names = _copy_plots(first_dir, plot_dir) if first_dir is not None else []
        if not names and plot_dir.is_dir():
            names = sorted(p.name for p in plot_dir.glob("*.png"))
        if names:
            rel = plot_dir.relative_to(out.parent) if plot_dir.is_relative_to(out.parent) \
                else plot_dir
            parts += [f"Plots of `{first_name}`: "
                      + ", ".join(f"[{n.removesuffix('.png')}]({rel}/{n})" for n in names),
                      ""]
    return parts


def results_document(paths: Sequence[str | Path], out: str | Path = "docs/RESULTS.md",
                     results_dir: str | Path | None = None, command: str | None = None,
                     explain: Sequence[str | Path] = (),
                     targets: str | Path | None = None,
                     memory: Sequence[str | Path] = ()) -> Path:
    """Write the results document for ``paths`` (run directories or metrics JSON files).

    The headline states figures; with ``targets`` (a file for :func:`load_targets`) it also
    gives the int8 file's verdict on each of them.

    With ``results_dir``, each run's ``metrics.json`` is copied there as ``NAME.json`` and the
    first run's plots of each experiment under ``results_dir/NAME/``, so the document can be
    regenerated later from ``results_dir/*.json`` alone (plots already there are linked).
    ``memory``: runs (directories or saved JSON) whose per-stage peak memory is tabulated
    (:func:`memory_section`), outside the experiments (a run made to measure memory is not
    another seed of its recipe).
    """
    thresholds = load_targets(targets) if targets is not None else {}
    runs = _load_runs(paths)
    out = Path(out)
    results = Path(results_dir) if results_dir else None
    if results is not None:
        _keep_metrics(runs, results)
    groups: dict[tuple, list[tuple[str, Path | None, dict[str, Any]]]] = {}
    for run in runs:
        groups.setdefault(experiment_key(run[2]), []).append(run)
    reference = experiment_settings(runs[0][2])
    parts = ["# kdskin results", ""]
    if command:
        parts += [f"Generated by `{command}` from the runs' `metrics.json` files; nothing here "
                  f"is typed by hand.", ""]
    parts += [SCALING_NOTE, ""]
    keys = list(groups)
    honest_key = next((k for k in keys if k[1] != "paper"), None)
    if honest_key is not None:
        honest = [m[2] for m in groups[honest_key]]
        leaky_key = next((k for k in keys if k[1] == "paper" and _twins(groups[k][0][2],
                                                                        honest[0])), None)
        leaky = [m[2] for m in groups[leaky_key]] if leaky_key else []
        parts += [f"The headline compares the experiment `{honest_key[0]}` (first lesion-grouped "
                  f"group below)" + (" with its leaky-protocol twin." if leaky else "."), ""]
        parts += headline(honest, leaky, thresholds, targets)
    if len(runs) > 1:
        parts += ["## Recipe study: every run, validation and external", "", RECIPE_NOTE, "",
                  recipe_table([(name, metrics) for name, _dir, metrics in runs]), ""]
    parts += [TABLE_NOTE, ""]
    for key, members in groups.items():
        parts += _experiment_section(key, members, reference, out, results)
    parts += explanations_section(explain, out, results)
    parts += memory_section(memory, results)
    return atomic_write_text(out, "\n".join(parts))
