"""The model card of a run (``MODEL_CARD.md``): what the model is for, how well, and its limits.

:func:`render_model_card` turns a plain dict (schema: :class:`ModelCardInfo`, every key
optional) into markdown. Parts a run did not measure render as "not measured in this run";
nothing in the dict is required, so a card can be written from any run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

from kdskin.constants import CLASSES
from kdskin.io import atomic_write_text

NOT_MEASURED = "not measured in this run"
NOT_RECORDED = "not recorded"

#: Headline metrics in the card's table, in this order, with their labels.
HEADLINE: dict[str, str] = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy (ISIC metric)",
    "macro_f1": "macro F1",
    "macro_auc": "macro AUC (one-vs-rest)",
    "melanoma_recall": "melanoma recall",
}
SECTIONS: tuple[str, ...] = (
    "Intended use", "Training data and licence", "Evaluation protocol",
    "Metrics with 95% intervals", "Per-class recall", "Calibration", "Operating point (referral)",
    "Out-of-scope check", "Known limits", "Versions", "Files",
)
HAM10000_LICENCE = ("CC BY-NC 4.0 (Tschandl et al. 2018, Harvard Dataverse "
                    "doi:10.7910/DVN/DBW86T): non-commercial use only, with attribution; a model "
                    "trained on it inherits these terms")
SYNTH_SOURCES: tuple[str, ...] = ("synth", "generated", "builtin", "built-in")


class IntervalValue(TypedDict):
    """One bootstrap interval, as :func:`kdskin.trust.uncertainty.bootstrap_ci` returns."""

    value: float
    low: float
    high: float


class DataInfo(TypedDict, total=False):
    source: str             # "ham10000", "isic2018" or "synth" (the built-in generated data)
    path: str               # where it was read from
    n_images: int
    n_lesions: int
    class_counts: dict[str, int]
    licence: str            # overrides the default text for the source


class ProtocolInfo(TypedDict, total=False):
    name: str               # config data.protocol: "lesion_grouped" or "paper"
    split_sizes: dict[str, int]   # {"train": n, "val": n, "test": n}
    split_fractions: list[float]
    seed: int


class SplitResult(TypedDict, total=False):
    """Results on one evaluated set (the test split or an external set)."""

    n: int
    external: bool          # True for a set from another source (e.g. ISIC 2018)
    description: str        # e.g. "ISIC 2018 Task 3 validation, 193 images"
    intervals: dict[str, IntervalValue]   # bootstrap_ci output
    per_class: dict[str, dict[str, float]]  # classification_metrics()["per_class"]


class BootstrapInfo(TypedDict, total=False):
    """The settings of :func:`kdskin.trust.uncertainty.bootstrap_ci` used for the intervals."""

    n_resamples: int
    seed: int
    alpha: float
    stratified: bool


class CalibrationInfo(TypedDict, total=False):
    temperature: float
    fitted_on: str          # "val"
    reports: dict[str, dict[str, Any]]   # {set name: calibration_report(...)}
    melanoma_offset: float | None  # log-odds on melanoma after T (top-1 class); None: none


class OperatingPointInfo(TypedDict, total=False):
    classes: list[str]      # malignant classes, e.g. ["mel", "bcc", "akiec"]
    target_sensitivity: float
    threshold: float
    fitted_on: str
    results: dict[str, dict[str, Any]]   # {set name: referral_metrics(...)}


class OutOfScopeInfo(TypedDict, total=False):
    score: str              # "max_softmax", "neg_entropy" or "energy"
    threshold: float
    pass_rate: float        # target pass rate of in-distribution validation images
    fitted_on: str
    description: str        # what the generated set holds
    metrics: dict[str, Any]  # ood_metrics(...) (auroc, false_pass_rate, in_pass_rate, by kind)


class FileInfo(TypedDict, total=False):
    path: str
    sha256: str
    bytes: int


class ModelCardInfo(TypedDict, total=False):
    """Everything a model card can show; every key is optional."""

    run_name: str
    model_name: str         # e.g. "student_mkd_fusion" or the .tflite file name
    description: str        # one line on the architecture / training recipe
    created: str            # ISO date
    image_size: int         # input size in pixels (square)
    data: DataInfo
    protocol: ProtocolInfo
    results: dict[str, SplitResult]   # {"test": ..., "isic2018": ...}
    bootstrap: BootstrapInfo
    comparisons: dict[str, dict[str, dict[str, float]]]  # {"KD - baseline": paired diff}
    calibration: CalibrationInfo
    operating_point: OperatingPointInfo
    out_of_scope: OutOfScopeInfo
    versions: dict[str, str | None]   # package_versions()
    files: list[FileInfo]             # describe_files(...)
    #: the int8 file against its Keras model on the test split: {"line": one line (kdskin.export
    #: .fidelity.int8_check_line), "failed": True when it loses more than allowed}
    int8_check: dict[str, Any]
    limits: list[str]                 # extra known limits, one line each
    #: ImageNet weights the models started from, per config section ("student", "teacher",
    #: ...): WeightsSource.to_dict() (variant, package, version, file, sha256, licence, origin)
    pretrained: dict[str, dict[str, str]]


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(paths: Iterable[str | Path], root: str | Path | None = None) -> list[FileInfo]:
    """``[{path, sha256, bytes}]`` for ``paths`` (``path`` relative to ``root`` when given)."""
    out: list[FileInfo] = []
    for p in map(Path, paths):
        name = str(p.relative_to(root)) if root is not None else p.name
        out.append({"path": name, "sha256": sha256_file(p), "bytes": p.stat().st_size})
    return out


PACKAGES: dict[str, tuple[str, ...]] = {
    "kdskin": ("kdskin",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "litert": ("ai-edge-litert", "tflite-runtime"),
}


def package_versions() -> dict[str, str | None]:
    """Installed versions of kdskin, TensorFlow, Keras and LiteRT (None if absent).

    Read from the package metadata, so nothing is imported. ``litert`` is ``ai-edge-litert``,
    else ``tflite-runtime`` (named in the value).
    """
    out: dict[str, str | None] = {}
    for key, names in PACKAGES.items():
        out[key] = None
        for i, name in enumerate(names):
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
            out[key] = version if i == 0 else f"{version} ({name})"
            break
    return out


# ---------------------------------------------------------------- formatting helpers


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "n/a" if not math.isfinite(f) else f"{f:.{digits}f}"


def _pct(value: Any) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(f) else f"{100 * f:.1f}%"


def _interval(iv: Mapping[str, Any] | None) -> str:
    if not iv:
        return NOT_MEASURED
    text = _num(iv.get("value"))
    if iv.get("low") is not None and iv.get("high") is not None:
        text += f" ({_num(iv['low'])} to {_num(iv['high'])})"
    return text


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"## {title}", "", *(lines or [f"_{NOT_MEASURED}._"]), ""]


def _results(info: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return dict(info.get("results") or {})


def _set_label(name: str, result: Mapping[str, Any]) -> str:
    label = f"{name} (external)" if result.get("external") else name
    return f"{label}, n={result['n']}" if result.get("n") is not None else label


# ---------------------------------------------------------------- sections


def _intended_use(info: Mapping[str, Any]) -> list[str]:
    return [
        "For **research and education** only: studying knowledge distillation, quantization "
        "and the trustworthiness of small skin-lesion classifiers.",
        "",
        "- **Not a medical device.** Not cleared or approved by any regulator.",
        "- **Not for diagnosis**, triage or any decision about a patient. A person with a skin "
        "lesion they are worried about should see a doctor.",
        "- Input: one dermoscopic image of one lesion; output: probabilities of seven "
        f"diagnoses ({', '.join(CLASSES)}), a referral flag and an out-of-scope warning.",
    ]


def _data(info: Mapping[str, Any]) -> list[str]:
    data = info.get("data") or {}
    source = str(data.get("source") or "").lower()
    if not source:
        return [f"- Training data: {NOT_RECORDED}."]
    lines = []
    if source in SYNTH_SOURCES:
        lines.append("Training data: **built-in generated data** (kdskin.data.synth): "
                     "dermoscopy-like images drawn by the project, no patient data. The model "
                     "has never seen a real lesion; its figures say nothing about real images.")
        licence = data.get("licence") or "generated by kdskin (no third-party licence)"
    elif source == "ham10000":
        lines.append("Training data: **HAM10000** (10,015 dermoscopic images of 7 diagnoses, "
                     "Tschandl et al., Scientific Data 2018).")
        licence = data.get("licence") or HAM10000_LICENCE
    else:
        lines.append(f"Training data: {source}.")
        licence = data.get("licence") or NOT_RECORDED
    lines.append(f"Licence: {licence}.")
    if data.get("path"):
        lines.append(f"Read from: `{data['path']}`.")
    counts = [f"{data[k]} {label}" for k, label in (("n_images", "images"),
                                                    ("n_lesions", "lesions")) if data.get(k)]
    if counts:
        lines.append("Size: " + ", ".join(counts) + ".")
    class_counts = data.get("class_counts") or {}
    if class_counts:
        lines.append("Images per class: " + ", ".join(
            f"{c} {class_counts[c]}" for c in CLASSES if c in class_counts) + ".")
    lines += _pretrained(info)
    return [f"- {line}" for line in lines]


def _pretrained(info: Mapping[str, Any]) -> list[str]:
    """One line per model section that started from ImageNet weights (none: from scratch)."""
    sources = info.get("pretrained") or {}
    if not sources:
        return ["Initialisation: from scratch (no pretrained weights)."]
    return [f"Initialisation of the {section}: EfficientNet-Lite{src.get('variant', '?')[1:]} "
            f"branch from ImageNet weights, package {src.get('package', NOT_RECORDED)} "
            f"{src.get('version', '')} (`{src.get('file', '?')}`, sha256 "
            f"`{src.get('sha256', NOT_RECORDED)}`), licence {src.get('licence', NOT_RECORDED)}; "
            f"{src.get('origin', '')}." for section, src in sorted(sources.items())]


def _protocol(info: Mapping[str, Any]) -> list[str]:
    protocol = info.get("protocol") or {}
    name = protocol.get("name")
    if not name:
        return [f"- Split protocol: {NOT_RECORDED}."]
    if name == "lesion_grouped":
        lines = ["Split: **lesion-grouped** and stratified by diagnosis: all images of a "
                 "lesion are in one split, so no lesion is both trained on and tested; "
                 "augmentation and oversampling touch the training split only. Thresholds and "
                 "the temperature are fitted on the validation split; the test split is only "
                 "reported."]
    elif name == "paper":
        lines = ["Split: the **paper** protocol, which oversamples before splitting and so leaks "
                 "augmented copies of test images into training. Its figures are inflated and "
                 "are kept only to measure that inflation."]
    else:
        lines = [f"Split: {name}."]
    sizes = protocol.get("split_sizes") or {}
    if sizes:
        lines.append("Split sizes: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ".")
    if protocol.get("seed") is not None:
        lines.append(f"Split seed: {protocol['seed']}.")
    return [f"- {line}" for line in lines]


def _bootstrap_text(info: Mapping[str, Any]) -> str:
    boot = info.get("bootstrap") or {}
    level = f"{100 * (1 - float(boot.get('alpha', 0.05))):g}%"
    how = "stratified" if boot.get("stratified", True) else "plain"
    extra = [f"{boot['n_resamples']} resamples"] if boot.get("n_resamples") else []
    extra += [f"seed {boot['seed']}"] if boot.get("seed") is not None else []
    return (f"Point value on the whole set, then the {how} bootstrap {level} interval "
            "(percentile method, resampling images within each class"
            + (", " + ", ".join(extra) if extra else "") + ").")


def _comparisons(info: Mapping[str, Any]) -> list[str]:
    comparisons = info.get("comparisons") or {}
    if not comparisons:
        return []
    lines = ["", "Paired differences (same images, same resamples; an interval that excludes 0 "
             "is not resampling noise):", "", "| comparison | metric | a - b (interval) |",
             "|---|---|---|"]
    for label, diff in comparisons.items():
        for key, d in diff.items():
            lines.append(f"| {label} | {HEADLINE.get(key, key)} | {_interval(d)} |")
    return lines


def _metrics(info: Mapping[str, Any]) -> list[str]:
    results = {k: v for k, v in _results(info).items() if v.get("intervals")}
    if not results:
        return _comparisons(info)[1:]
    names = list(results)
    lines = [_bootstrap_text(info), "",
             "| metric | " + " | ".join(_set_label(n, results[n]) for n in names) + " |",
             "|---|" + "---|" * len(names)]
    keys = list(HEADLINE) + sorted({k for r in results.values() for k in r["intervals"]}
                                   - set(HEADLINE))
    for key in keys:
        cells = [_interval(results[n]["intervals"].get(key)) for n in names]
        lines.append(f"| {HEADLINE.get(key, key)} | " + " | ".join(cells) + " |")
    return lines + _comparisons(info)


def _per_class(info: Mapping[str, Any]) -> list[str]:
    results = {k: v for k, v in _results(info).items() if v.get("per_class")}
    if not results:
        return []
    names = list(results)
    lines = ["Recall (sensitivity) per diagnosis; n = images of that class in the set.", "",
             "| class | " + " | ".join(_set_label(n, results[n]) for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for c in CLASSES:
        cells = []
        for n in names:
            row = results[n]["per_class"].get(c) or {}
            support = row.get("support")
            cell = _num(row.get("recall")) if row else "n/a"
            cells.append(f"{cell} (n={support})" if support is not None else cell)
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def _calibration(info: Mapping[str, Any]) -> list[str]:
    cal = info.get("calibration") or {}
    if not cal:
        return []
    lines = []
    if cal.get("temperature") is not None:
        lines.append(f"Temperature scaling: T = {_num(cal['temperature'])}, fitted on the "
                     f"{cal.get('fitted_on', 'validation')} split by minimising the negative "
                     "log-likelihood; it is applied to every probability kdskin reports and "
                     "folded into the exported models. It does not change the predicted class.")
        if cal.get("melanoma_offset") is not None:
            lines.append(f"Melanoma operating point: a log-odds offset of "
                         f"{_num(cal['melanoma_offset'], 2)} on melanoma after the temperature, "
                         f"fitted on the {cal.get('fitted_on', 'validation')} split for the "
                         "top-1 class (trust.melanoma_offset, trust.min_melanoma_recall) and "
                         "folded into the exported models: it names melanoma more often; the "
                         "ranking of images by P(mel) is unchanged.")
    else:
        lines.append(f"Temperature: {NOT_MEASURED}.")
    reports = cal.get("reports") or {}
    if reports:
        lines += ["", "| set | ECE before | ECE after | Brier before | Brier after | "
                  "NLL before | NLL after |", "|---|---|---|---|---|---|---|"]
        for name, rep in reports.items():
            b, a = rep.get("before") or {}, rep.get("after") or {}
            lines.append(f"| {name} | " + " | ".join(
                _num(s.get(k)) for k in ("ece", "brier", "nll") for s in (b, a)) + " |")
        n_bins = next(iter(reports.values())).get("n_bins", 15)
        lines += ["", f"ECE: top-label expected calibration error over {n_bins} equal-width "
                  "bins (0 = confidence matches accuracy); Brier: multiclass, 0..2; NLL: mean "
                  "negative log-likelihood (nats)."]
    return lines


def _operating_point(info: Mapping[str, Any]) -> list[str]:
    op = info.get("operating_point") or {}
    if op.get("threshold") is None:
        return []
    classes = op.get("classes") or ["mel", "bcc", "akiec"]
    lines = [f"Refer when P({' + '.join(classes)}) >= **{_num(op['threshold'], 4)}**, the "
             f"largest threshold giving a malignant sensitivity of at least "
             f"{_num(op.get('target_sensitivity'), 2)} on the "
             f"{op.get('fitted_on', 'validation')} split."]
    results = op.get("results") or {}
    if results:
        lines += ["", "| set | sensitivity | specificity | referral rate | melanoma sensitivity "
                  "| malignant / n |", "|---|---|---|---|---|---|"]
        for name, r in results.items():
            lines.append(f"| {name} | {_num(r.get('sensitivity'))} | "
                         f"{_num(r.get('specificity'))} | {_pct(r.get('referral_rate'))} | "
                         f"{_num(r.get('melanoma_sensitivity'))} | "
                         f"{r.get('n_malignant', 'n/a')} / {r.get('n', 'n/a')} |")
        lines += ["", "The sensitivity is fitted; the specificity is what it costs. On images "
                  "unlike the validation split both can move (see Known limits)."]
    return lines


def _out_of_scope(info: Mapping[str, Any]) -> list[str]:
    oos = info.get("out_of_scope") or {}
    if oos.get("threshold") is None:
        return []
    lines = [f"Score: {oos.get('score', 'max_softmax')} (higher = more like the training "
             f"images); an image scoring below **{_num(oos['threshold'], 4)}** is reported as "
             "outside what the model was trained on (its classes are still printed). The "
             f"threshold passes {_pct(oos.get('pass_rate', 0.95))} of the "
             f"{oos.get('fitted_on', 'validation')} split's images."]
    m = oos.get("metrics") or {}
    if m:
        what = oos.get("description") or "generated inputs the model was not made for"
        lines.append("")
        lines.append(f"Measured on {m.get('n_out', 'n/a')} {what}: AUROC "
                     f"{_num(m.get('auroc'))}, false-pass rate {_pct(m.get('false_pass_rate'))}"
                     f", in-distribution pass rate {_pct(m.get('in_pass_rate'))} "
                     f"(n={m.get('n_in', 'n/a')}).")
        by_kind = m.get("false_pass_rate_by_kind") or {}
        if by_kind:
            lines += ["", "| generated kind | false-pass rate |", "|---|---|"]
            lines += [f"| {k} | {_pct(v)} |" for k, v in by_kind.items()]
    lines += ["", "A confidence-based check catches inputs the model is unsure about; it cannot "
              "catch an out-of-scope image the model is confidently wrong about."]
    return lines


def _external_drop(info: Mapping[str, Any]) -> str:
    results = _results(info)
    test = (results.get("test") or {}).get("intervals") or {}
    external = {n: r for n, r in results.items() if r.get("external")}
    if not external:
        return ("Performance on images from other clinics, devices or populations: no external "
                f"set was evaluated ({NOT_MEASURED}); expect it to be lower than on the test "
                "split.")
    parts = []
    for name, r in external.items():
        ext = (r.get("intervals") or {}).get("balanced_accuracy") or {}
        ref = test.get("balanced_accuracy") or {}
        if ext.get("value") is not None and ref.get("value") is not None:
            drop = float(ref["value"]) - float(ext["value"])
            parts.append(f"{name}: balanced accuracy {_num(ext['value'])} vs "
                         f"{_num(ref['value'])} on the test split (drop {_num(drop)})")
        else:
            parts.append(f"{name}: drop {NOT_MEASURED}")
    return "Performance drops on external data: " + "; ".join(parts) + "."


def _limits(info: Mapping[str, Any]) -> list[str]:
    size = info.get("image_size")
    size_text = f"{size} x {size} px" if size else "the run's input size (not recorded)"
    lines = [
        f"Input is downscaled to {size_text}; fine structures that dermatologists use are "
        "lost at this size.",
        "Dermoscopic images only: clinical (non-dermoscopic) photos, histology and anything "
        "else are outside what the model was made for.",
        "HAM10000 has no skin-tone labels (its images come from Austria and Australia, mostly "
        "fair-skinned patients): performance across skin types is unmeasured.",
        _external_drop(info),
        "Seven diagnoses only: a lesion of another kind is still forced into one of them.",
    ]
    source = str((info.get("data") or {}).get("source") or "").lower()
    if source in SYNTH_SOURCES:
        lines.append("Trained on generated images: none of its figures transfer to real "
                     "lesions.")
    lines += [str(x) for x in info.get("limits") or []]
    return [f"- {line}" for line in lines]


def _versions(info: Mapping[str, Any]) -> list[str]:
    versions = info.get("versions") or {}
    return [f"- {label}: {versions.get(key) or NOT_RECORDED}" for key, label in
            (("kdskin", "kdskin"), ("tensorflow", "TensorFlow"), ("keras", "Keras"),
             ("litert", "LiteRT"))]


def _files(info: Mapping[str, Any]) -> list[str]:
    files = info.get("files") or []
    check = info.get("int8_check") or {}
    lines = [("**The int8 file does not decide like its Keras model**: " if check.get("failed")
              else "int8 check: ") + f"{check['line']}.", ""] if check.get("line") else []
    if not files:
        return lines + [f"_No exported files recorded ({NOT_MEASURED})._"]
    lines += ["| file | bytes | sha256 |", "|---|---|---|"]
    for f in files:
        lines.append(f"| {f.get('path', '?')} | {f.get('bytes', 'n/a')} | "
                     f"`{f.get('sha256', NOT_RECORDED)}` |")
    return lines


_RENDERERS = (_intended_use, _data, _protocol, _metrics, _per_class, _calibration,
              _operating_point, _out_of_scope, _limits, _versions, _files)


def render_model_card(info: Mapping[str, Any] | None = None) -> str:
    """Markdown model card from ``info`` (:class:`ModelCardInfo`, every key optional)."""
    info = dict(info or {})
    title = info.get("model_name") or "kdskin model"
    head = [f"# Model card: {title}", ""]
    meta = [f"{label}: {info[key]}" for key, label in
            (("run_name", "Run"), ("created", "Created"), ("description", "Model"))
            if info.get(key)]
    if meta:
        head += [*(f"- {m}" for m in meta), ""]
    head += ["> Research and education only. Not a medical device; not for diagnosis.", ""]
    body = []
    for title_, render in zip(SECTIONS, _RENDERERS, strict=True):
        body += _section(title_, render(info))
    return "\n".join(head + body).rstrip() + "\n"


def write_model_card(info: Mapping[str, Any] | None, path: str | Path) -> Path:
    """Render :func:`render_model_card` and write it atomically to ``path``."""
    return atomic_write_text(path, render_model_card(info))
