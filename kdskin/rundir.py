"""The run directory: its layout, the names of its models, and its typed ``metrics.json``.

One run directory holds everything one ``kdskin run`` made::

    RUN/config.yaml         the resolved config           RUN/split.csv     the split used
    RUN/metrics.json        :class:`RunMetrics`           RUN/report.md     the run's report
    RUN/models/NAME.keras   every trained model           RUN/tflite/       exported files
    RUN/logs/               CSV + TensorBoard logs        RUN/plots/        PNG plots
    RUN/explanations/       CAM / LIME overlays           RUN/bench.json    the benchmark
    RUN/cache/              decoded images                RUN/data/         the built-in dataset
    RUN/backup/             training state, only while the run is unfinished

Every other module asks :class:`RunDir` for a path and :func:`final_student_name` for the model
that ships; nothing else spells a run-folder path or guesses a model's run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdskin.errors import KdskinError
from kdskin.io import read_json, write_json

#: Model names (``models/NAME.keras``, keys of ``metrics.json["models"]``).
TEACHER = "teacher"
BASELINE_CNN = "baseline_cnn"
REFERENCE_CNN = "reference_cnn"
REFERENCE_EFFNET = "reference_effnet"
#: Version of the metrics.json layout written by this code.
METRICS_SCHEMA = 2


def student_name(stage: str) -> str:
    """``student_STAGE``: the model name of a distillation stage's student."""
    return f"student_{stage}"


def final_student_name(stages: Sequence[str]) -> str | None:
    """The student that is exported, benchmarked and explained: ``multi_fusion`` when it is
    among ``stages``, else the last stage's; None without stages."""
    if "multi_fusion" in stages:
        return student_name("multi_fusion")
    return student_name(stages[-1]) if stages else None


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (nothing is created until asked)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ files
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def split(self) -> Path:
        return self.root / "split.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def bench_json(self) -> Path:
        return self.root / "bench.json"

    # ------------------------------------------------------------------ folders
    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def tflite(self) -> Path:
        return self.root / "tflite"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def explanations(self) -> Path:
        return self.root / "explanations"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def data(self) -> Path:
        """Where the built-in generated dataset of the run is written."""
        return self.root / "data"

    # ------------------------------------------------------------------ per model
    def model(self, name: str) -> Path:
        return self.models / f"{name}.keras"

    def history_csv(self, name: str) -> Path:
        return self.logs / f"{name}.csv"

    def tensorboard(self, name: str) -> Path:
        return self.logs / name

    def scorecam_logs(self, name: str) -> Path:
        return self.logs / "scorecam" / name

    @property
    def checkpoints(self) -> Path:
        """Where kdskin before 2026-12-03 wrote each fit's best epoch so far (a second copy of a
        model, read by nothing); no longer written, and removed from a run when it completes."""
        return self.root / "checkpoints"

    @property
    def backups(self) -> Path:
        """``BackupAndRestore`` state of an interrupted fit (training state, as above)."""
        return self.root / "backup"

    def backup(self, name: str) -> Path:
        return self.backups / name

    def plot(self, name: str, kind: str) -> Path:
        """``plots/NAME_KIND.png`` (kind: history, confusion, roc, ...)."""
        return self.plots / f"{name}_{kind}.png"

    # ------------------------------------------------------------------ state
    def is_started(self) -> bool:
        return self.root.is_dir() and any(self.root.iterdir())

    def is_finished(self) -> bool:
        return self.metrics.is_file() and self.config.is_file()

    def is_complete(self, metrics: RunMetrics) -> bool:
        """Whether ``kdskin run`` went to the end in this directory: ``metrics`` (the run's)
        has its wall time and the report is written."""
        return metrics.wall_seconds is not None and self.report.is_file()

    def remove_training_state(self) -> None:
        """Delete ``backup/`` (state of the fits, of use only while the run is unfinished:
        ``--resume`` continues an interrupted fit from it) and an older kdskin's ``checkpoints/``
        (second copies of models, without the run's decision rules, easy to pick by mistake)."""
        import shutil

        for folder in (self.checkpoints, self.backups):
            shutil.rmtree(folder, ignore_errors=True)

    def require_finished(self) -> RunDir:
        if not self.is_finished():
            raise KdskinError(f"{self.root}: not a finished run directory (no metrics.json or "
                              f"config.yaml); pass a directory written by kdskin run")
        return self

    def require_final_student(self, stages: Sequence[str]) -> str:
        """The name of the final student of ``stages`` (``distill.stages``); one-line
        :class:`KdskinError` when the run has none saved."""
        final = final_student_name(stages)
        if final is None or not self.model(final).is_file():
            raise KdskinError(f"{self.root}: no final student model ({final}.keras); finish the "
                              f"run with kdskin run --resume first")
        return final

    def load_metrics(self) -> RunMetrics:
        """The run's metrics; a run made before ``split_digest`` was recorded gets it from its
        ``split.csv``."""
        metrics = load_metrics(self.metrics, config_file=self.config)
        if not metrics.split_digest:
            metrics.split_digest = split_digest(self.split)
        return metrics

    def save_metrics(self, metrics: RunMetrics) -> Path:
        return write_json(self.metrics, metrics.to_dict())

    @classmethod
    def of_model(cls, model_path: str | Path) -> RunDir | None:
        """The run whose ``models/`` folder holds ``model_path`` (a ``.keras`` file), or whose
        ``tflite/`` folder holds it (a ``.tflite`` file); None for a model outside a run."""
        path = Path(model_path).resolve()
        if path.parent.name not in ("models", "tflite"):
            return None
        run = cls(path.parent.parent)
        return run if run.config.is_file() else None


# --------------------------------------------------------------------------- metrics.json


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of the dataclass ``cls`` (None: the default)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in known and v is not None}


@dataclass
class ModelRecord:
    """One trained (or reused) model of a run: ``metrics.json["models"][name]``.

    ``test``/``val``/``external``: :func:`kdskin.metrics.classification_metrics` dicts on the
    lesion-grouped test and validation splits and on the external set (empty when not scored);
    ``intervals``: their bootstrap intervals.
    """

    name: str
    kind: str = ""
    params: int = 0
    file: str = ""
    size_bytes: int = 0
    train_seconds: float = 0.0
    epochs: int | None = None
    train_step: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    fusion: str | None = None
    #: the model's input size in pixels (a teacher may take larger images than the students)
    input_size: int | None = None
    test: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    external: dict[str, Any] = field(default_factory=dict)
    #: bootstrap 95% intervals per set: ``{"test": {metric: {value, low, high}}, ...}``
    intervals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> ModelRecord:
        return cls(**{**_known(cls, data), "name": name})


@dataclass
class RunMetrics:
    """``metrics.json`` of a run. Sections a run has not reached are empty, never None.

    ``export``: what :func:`kdskin.export.check.export_and_check` returned; ``bench``: what
    :func:`kdskin.bench.bench_run` returned; ``explanations``: the explain stage's result;
    ``external``: the external evaluation (``{"data", "format", "n_images", "tflite": {...}}``);
    ``trust``: calibration, operating point and out-of-scope check of the final model
    (:func:`kdskin.pipeline.trust.trust_stage`).
    """

    config: str = ""
    data: str = ""
    protocol: str = "lesion_grouped"
    image_size: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    #: :func:`split_digest` of the run's ``split.csv``: runs on one split share it
    split_digest: str = ""
    rows_without_image: int = 0
    unreadable_images: list[str] = field(default_factory=list)
    majority_class_accuracy: float | None = None
    seed: int | None = None
    config_values: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    models: dict[str, ModelRecord] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)
    explanations: dict[str, Any] = field(default_factory=dict)
    external: dict[str, Any] = field(default_factory=dict)
    trust: dict[str, Any] = field(default_factory=dict)
    teacher_from: str | None = None
    #: With ``teacher_from``: the ``teacher`` config section that trained the reused teacher
    #: (:func:`reused_teacher_settings`); empty in runs made before it was recorded.
    teacher_settings: dict[str, Any] = field(default_factory=dict)
    #: ``distill.teacher_offset: balanced``: the teacher's prior offset fitted on validation
    #: (``tau``, ``offsets``, its balanced accuracy before and after); empty otherwise.
    teacher_offset: dict[str, Any] = field(default_factory=dict)
    #: ImageNet weights the run's models started from, per config section (``student``,
    #: ``teacher``, ``reference_effnet``): variant, package, version, file, sha256, licence
    #: (:class:`kdskin.models.weights_source.WeightsSource`); empty for a start from scratch.
    pretrained: dict[str, Any] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    wall_seconds: float | None = None
    #: Wall seconds of each stage of the run, in the order run (``data``, every model's
    #: training and evaluation by model name, ``trust``, ``export``, ``external``, ``bench``,
    #: ``explain``, ``report``): the session that finished the stage (a fit resumed from its
    #: backup: that session's part only).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: CPU seconds of the same stages (all threads of the process): what a stage costs on a
    #: machine shared with other work, where its wall time is stretched
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: Peak resident memory (MiB) of the same stages: each stage's own high-water mark where
    #: ``peak_rss_method`` is ``"VmHWM, reset per stage"`` (Linux), else the process's peak so
    #: far at the stage's end (:mod:`kdskin.memory`); empty in runs made before it was recorded
    stage_peak_rss_mib: dict[str, float] = field(default_factory=dict)
    peak_rss_method: str | None = None
    resumed: int = 0
    schema: int = METRICS_SCHEMA

    def peak_stage(self) -> str | None:
        """The stage with the highest recorded peak memory (None before any was recorded)."""
        peaks = self.stage_peak_rss_mib
        return max(peaks, key=lambda k: peaks[k]) if peaks else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "metrics.json") -> RunMetrics:
        """Read a metrics dict (this layout or an older run's); unknown keys are ignored."""
        if not isinstance(data, Mapping) or not isinstance(data.get("models"), Mapping):
            raise KdskinError(f"{source}: no 'models' entry; pass a metrics.json written by "
                              f"kdskin run")
        values = _known(cls, data)
        values["models"] = {name: ModelRecord.from_dict(name, entry)
                            for name, entry in data["models"].items()}
        metrics = cls(**values)
        if "schema" not in data:
            metrics.schema = 1
        return metrics

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["models"] = {name: dataclasses.asdict(m) for name, m in self.models.items()}
        return out

    # ------------------------------------------------------------------ derived
    @property
    def machine_info(self) -> dict[str, Any]:
        """The machine of the benchmark, else of the training."""
        return self.bench.get("machine") or self.machine

    def int8_result(self) -> dict[str, Any]:
        """The int8 file's test-split metrics from the export check ({} if not exported)."""
        return dict(self.export.get("evaluation", {}).get("tflite", {}).get("int8", {}))


#: The key of ``teacher_settings`` for a reused teacher whose training settings are unknown.
UNKNOWN_TEACHER = "source"


def reused_teacher_settings(model_path: str | Path) -> dict[str, Any]:
    """The ``teacher`` config section that trained the teacher ``model_path`` (its run's
    ``config_values``, or the settings that run itself recorded for a teacher it reused);
    ``{UNKNOWN_TEACHER: path}`` for a file outside a run or a run that does not say."""
    run = RunDir.of_model(model_path)
    try:
        metrics = run.load_metrics() if run is not None else None
    except KdskinError:  # no or unreadable metrics.json
        metrics = None
    if metrics is None:
        recorded = None
    elif metrics.teacher_from:
        recorded = metrics.teacher_settings
    else:
        recorded = metrics.config_values.get("teacher")
    if isinstance(recorded, Mapping) and recorded:
        return dict(recorded)
    return {UNKNOWN_TEACHER: str(model_path)}


def split_digest(path: str | Path) -> str:
    """A fingerprint of a split CSV: which image is in which split (16 hex digits of SHA-256
    over the sorted ``image_id,split`` pairs; row order and other columns do not count).
    ``""`` when the file is absent or lacks those columns."""
    import csv
    import hashlib

    path = Path(path)
    if not path.is_file():
        return ""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"image_id", "split"} <= set(reader.fieldnames or ()):
            return ""
        pairs = sorted(f"{row['image_id']},{row['split']}" for row in reader)
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:16]


def load_metrics(path: str | Path, config_file: str | Path | None = None) -> RunMetrics:
    """:class:`RunMetrics` from a ``metrics.json`` (of a run or a saved copy); one-line errors.

    A run written before metrics.json recorded its config values gets them from
    ``config_file`` when that exists.
    """
    path = Path(path)
    if not path.is_file():
        raise KdskinError(f"{path}: no metrics.json; pass a run directory made by kdskin run, "
                          f"or a saved copy of its metrics.json")
    try:
        data = read_json(path)
    except ValueError:
        raise KdskinError(f"{path}: not valid JSON; pass a metrics.json written by kdskin run"
                          ) from None
    metrics = RunMetrics.from_dict(data, str(path))
    if not metrics.config_values and config_file is not None and Path(config_file).is_file():
        import yaml

        metrics.config_values = yaml.safe_load(Path(config_file).read_text()) or {}
    return metrics
