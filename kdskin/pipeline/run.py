"""``kdskin run``: the whole pipeline into one run directory.

Order: data (generate if needed) -> split -> decode -> paper baseline CNN -> strong reference
CNN -> teacher (trained, evaluated, checked better than the majority class on the validation
split) -> every student stage -> trust (calibration, operating point, out-of-scope check of the
final student) -> export + check -> external evaluation -> benchmark -> explanations ->
metrics.json, report.md, MODEL_CARD.md. Each finished
model is saved and recorded in ``metrics.json`` at once, so ``--resume`` skips it; an interrupted
``fit`` resumes from its ``BackupAndRestore`` state, and the results recorded after training
are kept (only what is missing is made). Each stage's wall and CPU seconds and its peak
resident memory are recorded (``stage_seconds``, ``stage_cpu_seconds``,
``stage_peak_rss_mib``). When the run completes its training state (``backup/``) is deleted;
``--resume`` of a completed run says so and stops.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import Config
from kdskin.console import log
from kdskin.distill.stages import teacher_trains_shifted
from kdskin.errors import KdskinError
from kdskin.pipeline.data import RunData, prepare_data, teacher_data
from kdskin.pipeline.stages import (
    evaluate_model,
    fit_teacher_offsets,
    record,
    train_classifier,
    train_student_stage,
)
from kdskin.rundir import (
    BASELINE_CNN,
    REFERENCE_CNN,
    REFERENCE_EFFNET,
    TEACHER,
    ModelRecord,
    RunDir,
    RunMetrics,
    final_student_name,
    reused_teacher_settings,
    split_digest,
    student_name,
)


@contextmanager
def timed(state: RunMetrics, stage: str) -> Iterator[None]:
    """Record the wall and CPU seconds of the ``with`` block as ``state.stage_seconds[stage]``
    and ``state.stage_cpu_seconds[stage]``, and its peak resident memory in MiB as
    ``state.stage_peak_rss_mib[stage]`` (:func:`kdskin.memory.measure`; the method in
    ``state.peak_rss_method``), when it finishes; an interrupted stage records nothing. The
    heap the stage freed is then given back (:func:`kdskin.memory.release`), so the next
    stage's peak is its own."""
    from kdskin.memory import measure, release

    start, cpu = time.perf_counter(), time.process_time()
    with measure() as peak:
        yield
    state.stage_seconds[stage] = round(time.perf_counter() - start, 1)
    state.stage_cpu_seconds[stage] = round(time.process_time() - cpu, 1)
    release()
    if peak.mib is not None:
        state.stage_peak_rss_mib[stage] = peak.mib
        state.peak_rss_method = peak.method


def _load_existing(run: RunDir, name: str, metrics: RunMetrics) -> Any | None:
    from kdskin.models.contract import load_keras, mark_trained
    from kdskin.train import check_workers_agree

    path = run.model(name)
    done = name in metrics.models and path.is_file()
    check_workers_agree(f"whether {name} is already trained", int(done))
    if done:
        log(f"{name}: already trained in this run, reusing {path}")
        return mark_trained(load_keras(path))
    return None


def _run_dir(cfg: Config, out: str | None, resume: bool) -> tuple[RunDir, Any]:
    """The directory this process writes, and its worker role (None unless multi_worker).

    The chief (and any single process) writes the run directory ``out``; another worker of a
    multi-worker run writes its own scratch copy outside it (:func:`kdskin.cluster.
    worker_scratch`, kept for ``--resume``, removed when the run finishes), and nothing else.
    """
    root = Path(out or f"runs/{cfg.name}")
    role = None
    if cfg.train.distribution == "multi_worker":
        from kdskin.cluster import read_tf_config, worker_scratch

        role = read_tf_config()  # a bad TF_CONFIG fails here, before anything starts
        if not role.is_chief:
            scratch = RunDir(worker_scratch(root, role))
            if scratch.root.exists() and not resume:
                shutil.rmtree(scratch.root)  # an earlier job's, not resumed
            return scratch, role
    return RunDir(root), role


def _reuse_teacher(cfg: Config, run: RunDir, teacher_file: Path) -> Any:
    from kdskin.models.contract import load_keras, mark_trained

    target = run.model(TEACHER)
    if teacher_file.resolve() != target.resolve():
        shutil.copyfile(teacher_file, target)
    teacher = load_keras(target)
    size = cfg.teacher_image_size()
    if tuple(teacher.inputs[0].shape[1:3]) != (size,) * 2:
        raise KdskinError(f"{teacher_file}: the teacher takes {teacher.inputs[0].shape[1]}px "
                          f"images but this config's teacher takes {size}px (teacher.image_size, "
                          f"else data.image_size); pass a teacher trained at that size or --set "
                          f"teacher.image_size=N")
    return mark_trained(teacher)


def plain_models(cfg: Config) -> list[tuple[str, Any, int, float, str]]:
    """The models a run trains with plain cross-entropy before its teacher, as a table:
    ``(name, builder, epochs, learning rate, label)`` of each enabled one, in training order
    (the paper's CNN, the VGG-style reference, EfficientNet-Lite alone)."""
    from kdskin.models import build_baseline_cnn
    from kdskin.models.reference import build_reference_cnn, build_reference_effnet

    size, colour, fill = cfg.data.image_size, cfg.data.colour_spec(), cfg.data.border_fill
    st, base, ref, eff = cfg.student, cfg.baseline, cfg.reference, cfg.reference_effnet
    table = [
        (base.enabled, BASELINE_CNN,
         lambda: build_baseline_cnn(size, colour_constancy=colour, border_fill=fill),
         base.epochs, base.learning_rate, "paper baseline CNN, cross-entropy"),
        (ref.enabled, REFERENCE_CNN,
         lambda: build_reference_cnn(size, ref.filters, ref.dropout, colour_constancy=colour,
                                     border_fill=fill),
         ref.epochs or st.epochs, ref.learning_rate or st.learning_rate,
         "strong plain reference: VGG-style CNN, cross-entropy"),
        (eff.enabled, REFERENCE_EFFNET,
         lambda: build_reference_effnet(size, eff.variant, eff.weights, eff.dropout,
                                        st.bn_momentum, colour_constancy=colour,
                                        border_fill=fill),
         eff.epochs or st.epochs, eff.learning_rate or st.learning_rate,
         f"pretrained reference: EfficientNet-Lite{eff.variant[1:]} ({eff.weights} start) "
         f"alone, cross-entropy"),
    ]
    return [row[1:] for row in table if row[0]]


def use_teacher_dir(cfg: Config, run: RunDir, data: RunData, tdir: Any) -> dict[str, Any]:
    """Check the teacher directory ``tdir`` against the run (split, views, size, exits; one-line
    error otherwise), set ``cfg.teacher.image_size`` to its size and put its stored targets
    into ``data`` (``train_targets``; the students replay its views). Returns the settings
    recorded as the run's ``teacher_settings``."""
    from kdskin.data.views import view_settings
    from kdskin.distill.stages import EXIT_MAP_STAGES, resolve_exit_map
    from kdskin.errors import ConfigError
    from kdskin.models.specs import STUDENT_OUTPUTS
    from kdskin.teacherdir import check_compatible, load_store

    info = tdir.require_complete()
    d = cfg.distill
    if d.teacher_offset != "none":
        raise KdskinError(f"{tdir.root}: stored targets take no prior offset; set "
                          f"distill.teacher_offset=none")
    if cfg.augment.enabled and cfg.augment.shift.enabled and d.teacher_view != "unshifted":
        raise KdskinError(f"{tdir.root}: the stored targets are for each view before the shift "
                          f"augmentation; set distill.teacher_view=unshifted")
    exits: list[str] = []
    if any(s in EXIT_MAP_STAGES for s in d.stages):
        try:
            exits = list(resolve_exit_map(d.exit_map, info.outputs(), STUDENT_OUTPUTS).values())
        except ConfigError as exc:
            raise KdskinError(f"{tdir.root}: {exc}") from None
    check_compatible(tdir, info, split_digest(run.split), cfg.augment.views,
                     cfg.augment.view_seed, view_settings(cfg.augment), cfg.teacher.image_size,
                     exits)
    cfg.teacher.image_size = info.image_size
    outputs = sorted({"logits", *exits})
    views, data.train_targets = load_store(tdir, info, data.train_ids, outputs,
                                           d.temperature)
    if data.train_views is None or not np.allclose(views, data.train_views, atol=1e-6):
        raise KdskinError(f"{tdir.root}: its stored views differ from the views this run draws; "
                          f"make the teacher with this kdskin and augment settings")
    log(f"teacher directory {tdir.root}: stored targets ({', '.join(outputs)}) of "
        f"{len(info.members)} member(s) for {views.shape[1]} views of each training image; "
        f"no teacher runs while the students train")
    return {"teacher_dir": str(tdir.root), "members": list(info.members), "folds": info.folds,
            "tta": info.tta, "views": info.views, "image_size": info.image_size}


def _teacher_source(teacher: str | None) -> tuple[Path | None, Any]:
    """``--teacher`` as ``(teacher .keras file, teacher directory or None)``: a directory made by
    ``kdskin teach`` (its ensemble file) or a ``teacher.keras``; one-line error for neither."""
    teacher_file = Path(teacher) if teacher else None
    if teacher_file is not None and teacher_file.is_dir():
        from kdskin.teacherdir import TeacherDir

        tdir = TeacherDir(teacher_file)
        tdir.require_complete()
        return tdir.ensemble, tdir
    if teacher_file is not None and not teacher_file.is_file():
        raise KdskinError(f"{teacher_file}: teacher file not found; pass a teacher directory "
                          f"(kdskin teach) or a teacher.keras written by kdskin run "
                          f"(RUN_DIR/models/teacher.keras)")
    return teacher_file, None


def _record_facts(state: RunMetrics, cfg: Config, run: RunDir, data: RunData) -> float:
    """Put what the run is (config, data, split, sizes, machine, ImageNet starts) into
    ``state``; returns the majority class's test accuracy, the floor every model is read
    against."""
    from kdskin.bench import machine_info
    from kdskin.metrics import majority_accuracy
    from kdskin.models.weights_source import describe

    majority = majority_accuracy(data.train_labels, data.test.labels)
    state.config, state.data, state.protocol = cfg.name, data.source, data.protocol
    state.image_size = cfg.data.image_size
    state.sizes = {"train": len(data.train_labels), "val": len(data.val),
                   "test": len(data.test)}
    state.split_digest = split_digest(run.split)
    state.rows_without_image, state.unreadable_images = data.rows_without_image, data.unreadable
    state.majority_class_accuracy, state.seed = majority, cfg.train.seed
    state.config_values, state.machine = cfg.to_dict(), machine_info()
    state.pretrained = {section: describe(variant).to_dict()
                        for section, variant in cfg.imagenet_starts().items()}
    return majority


@dataclass
class _Training:
    """The training part of one run: each model trained (or found trained), evaluated and
    recorded in ``metrics.json`` at once, in its own :func:`timed` stage."""

    cfg: Config
    run: RunDir
    state: RunMetrics
    data: RunData
    elapsed: Callable[[], float]  # the run's seconds so far, earlier sessions included
    majority: float
    test_probs: dict[str, Any] = field(default_factory=dict)

    def finish(self, entry: ModelRecord, model: Any, on: RunData | None = None) -> None:
        """Evaluate ``model`` on ``on`` (the splits at its input size; default the run's) and
        record it in ``metrics.json`` at once (its time: the ``timed`` block around it)."""
        from kdskin.evaluate import write_plots
        from kdskin.pipeline.trust import intervals

        on = on or self.data
        entry.test, entry.val, probs, _ = evaluate_model(model, on)
        self.test_probs[entry.name] = probs
        entry.intervals["test"] = intervals(self.cfg, on.test.labels, probs)
        write_plots(entry.test, on.test.labels, probs, self.run.plots, entry.name)
        self.state.models[entry.name] = entry
        self.state.elapsed_seconds = self.elapsed()
        t = entry.test
        log(f"{entry.name}: test accuracy {t['accuracy']:.4f}, balanced "
            f"{t['balanced_accuracy']:.4f}, macro F1 {t['macro_f1']:.4f}, AUC "
            f"{t['macro_auc']:.4f} (majority class {self.majority:.4f})")
        self.run.save_metrics(self.state)

    def plain_models(self) -> None:
        """The models trained with plain cross-entropy before the teacher (:func:`plain_models`)."""
        for name, build, epochs, lr, label in plain_models(self.cfg):
            if _load_existing(self.run, name, self.state) is not None:
                continue
            with timed(self.state, name):
                model, hist, secs = train_classifier(self.cfg, self.data, self.run, name, build,
                                                     epochs, lr)
                self.finish(record(self.run, name, model, hist, secs, label), model)
                del model, hist  # not held while the next model trains (hist.model is the model)
            self.run.save_metrics(self.state)

    def teacher(self, teacher_file: Path | None, tdir: Any, distils: bool
                ) -> tuple[Any, RunData]:
        """The teacher (found trained in the run, reused from ``teacher_file``, or trained here)
        and the splits at its input size; ``(None, the run's splits)`` when the run needs none."""
        from kdskin.models import build_teacher

        cfg, run, state, data = self.cfg, self.run, self.state, self.data
        needs_teacher = cfg.teacher.enabled or distils
        teacher_model = _load_existing(run, TEACHER, state) if cfg.teacher.enabled else None
        if teacher_model is not None or not (teacher_file is not None or cfg.teacher.enabled):
            return teacher_model, teacher_data(cfg, run, data) if needs_teacher else data
        with timed(state, TEACHER):
            tdata = teacher_data(cfg, run, data)
            if teacher_file is not None:
                teacher_model = _reuse_teacher(cfg, run, teacher_file)
                state.teacher_from = str(tdir.root if tdir is not None else teacher_file)
                if tdir is None:
                    state.teacher_settings = reused_teacher_settings(teacher_file)
                log(f"teacher: reusing {state.teacher_from} (not retrained)")
                entry = record(run, TEACHER, teacher_model, None, 0.0,
                               f"teacher reused from {state.teacher_from}")
            else:
                teacher_model, hist, secs = train_classifier(
                    cfg, tdata, run, TEACHER,
                    lambda: build_teacher(cfg.teacher, cfg.teacher_image_size(),
                                          colour_constancy=cfg.data.colour_spec(),
                                          border_fill=cfg.data.border_fill),
                    cfg.teacher.epochs, cfg.teacher.learning_rate,
                    exit_weight=cfg.teacher.exit_loss_weight,
                    shift=teacher_trains_shifted(cfg.distill.teacher_view))
                entry = record(run, TEACHER, teacher_model, hist, secs,
                               f"hybrid ViT + {cfg.teacher.conv_branch} teacher, cross-entropy")
            self.finish(entry, teacher_model, tdata)
        run.save_metrics(state)
        return teacher_model, tdata

    def students(self, teacher_model: Any, tdata: RunData, distils: bool) -> None:
        """The teacher gate and offsets (when a stage distils), then every student stage."""
        cfg, run, state = self.cfg, self.run, self.state
        teacher_fit = None
        if distils:
            from kdskin.distill.distiller import check_teacher_trained

            # The gate is a decision: it reads the validation split; the test split is only
            # reported.
            check_teacher_trained(teacher_model, (tdata.val.images, tdata.val.labels))
            teacher_fit = fit_teacher_offsets(cfg, teacher_model, tdata, self.data.train_labels)
            state.teacher_offset = teacher_fit or {}
        for stage in cfg.distill.stages:
            name = student_name(stage)
            if _load_existing(run, name, state) is not None:
                continue
            with timed(state, name):
                student, hist, secs, fusion = train_student_stage(
                    cfg, self.data, run, stage, teacher_model, teacher_data=tdata,
                    teacher_offsets=teacher_fit["offsets"] if teacher_fit else None)
                self.finish(record(run, name, student, hist, secs, f"student, stage {stage}",
                                   stage=stage, fusion=fusion), student)
                del student, hist  # nor its distiller (hist.model), while the next stage trains
            run.save_metrics(state)


def run_pipeline(cfg: Config, data_dir: str | None = None, out: str | None = None,
                 resume: bool = False, teacher: str | None = None) -> Path:
    """Run everything; returns the run directory.

    ``teacher``: a teacher directory (``kdskin teach``) or the path of a trained teacher
    ``.keras`` to reuse instead of training one (it is copied into the run, evaluated on this
    run's split and must beat the majority class).
    """
    t_start = time.time()
    run, role = _run_dir(cfg, out, resume)
    if run.is_started() and not resume:
        raise KdskinError(f"{run.root}: run directory exists and is not empty; pass --resume to "
                          f"continue it or --out NEW_DIR for a new run")
    teacher_file, tdir = _teacher_source(teacher)
    state = run.load_metrics() if (resume and run.metrics.is_file()) else RunMetrics()
    if resume and run.is_complete(state):
        run.remove_training_state()
        log(f"{run.root}: the run is complete (finished in {state.wall_seconds / 60:.1f} min); "
            f"nothing to resume. For a new run pass --out NEW_DIR; to redo a step of this one: "
            f"kdskin export --run / kdskin bench --run --update")
        return run.root
    from kdskin.train import start_distribution

    # Before any other TensorFlow work (MultiWorkerMirroredStrategy must come first).
    start_distribution(cfg.train.distribution, cfg.train.worker_timeout)
    if role is not None:
        log(f"{role.describe()}: writing "
            + (f"the run directory {run.root}" if role.is_chief else
               f"only its scratch copy {run.root} (the chief writes the run directory)"))
    run.models.mkdir(parents=True, exist_ok=True)
    before = state.elapsed_seconds  # finished work of earlier sessions
    if before:
        state.resumed += 1
    if tdir is not None and not run.split.is_file():
        shutil.copyfile(tdir.split, run.split)  # the teacher directory's split is the run's
    with timed(state, "data"):
        data = prepare_data(cfg, run, data_dir)
    distils = any(s != "baseline" for s in cfg.distill.stages)
    if (tdir is None and teacher_file is None and distils and cfg.augment.views > 0
            and cfg.teacher.enabled):
        from kdskin.pipeline.teach import make_teacher
        from kdskin.teacherdir import TeacherDir

        with timed(state, "teach"):
            tdir = TeacherDir(make_teacher(cfg, run.root / "teacher", split_file=run.split))
        teacher_file = tdir.ensemble
    if tdir is not None:
        state.teacher_settings = use_teacher_dir(cfg, run, data, tdir) if distils else {}
    cfg.save(run.config)
    training = _Training(cfg, run, state, data, lambda: round(before + time.time() - t_start, 1),
                         _record_facts(state, cfg, run, data))
    training.plain_models()
    teacher_model, tdata = training.teacher(teacher_file, tdir, distils)
    training.students(teacher_model, tdata, distils)

    if role is not None and not role.is_chief:
        shutil.rmtree(run.root, ignore_errors=True)
        log(f"{role.describe()}: training done; the chief writes the rest of the run")
        return Path(out or f"runs/{cfg.name}")
    final = final_student_name(cfg.distill.stages)
    after_training(cfg, data, run, state, final, training.test_probs, redo=not resume)
    _close_run(cfg, data, run, state, final, resume, training.elapsed)
    return run.root


def _close_run(cfg: Config, data: RunData, run: RunDir, state: RunMetrics, final: str | None,
               resume: bool, elapsed: Callable[[], float]) -> None:
    """Benchmark, explanations, report and model cards; then the run's last lines."""
    if cfg.bench.enabled and not (resume and state.bench and run.bench_json.is_file()):
        with timed(state, "bench"):
            state.bench = bench_stage(cfg, run)
        run.save_metrics(state)
    if cfg.explain.enabled and final and not (resume and state.explanations):
        with timed(state, "explain"):
            state.explanations = explain_stage(cfg, data, run, final)
        run.save_metrics(state)
    from kdskin.pipeline.card import write_model_cards
    from kdskin.report import write_run_report

    state.wall_seconds = state.elapsed_seconds = elapsed()  # the report quotes it
    run.save_metrics(state)
    with timed(state, "report"):
        write_run_report(run)
        write_model_cards(run, state, cfg)
    run.save_metrics(state)
    run.remove_training_state()
    log(f"done in {state.wall_seconds / 60:.1f} min ({_stage_summary(state)}); "
        f"report: {run.report}")
    from kdskin.export.fidelity import int8_check_failed, int8_check_line

    if int8_check_failed(state.export):  # the last line, where a pipeline's log ends
        log(f"WARNING: the int8 file does not decide like its Keras model "
            f"({int8_check_line(state.export)}); it is in {run.tflite} all the same (set "
            f"export.require_int8_within_tolerance to make this an error)")


def _stage_summary(state: RunMetrics) -> str:
    """``data 12 s, teacher 80 s, ...``: the recorded stage times, for the last log line."""
    peaks, top = state.stage_peak_rss_mib, state.peak_stage()
    return ", ".join(f"{name} {secs:.0f} s" for name, secs in state.stage_seconds.items()) + (
        f"; CPU {sum(state.stage_cpu_seconds.values()) / 60:.1f} min") + (
        f"; peak memory {peaks[top]:,.0f} MiB in {top}" if top else "")


# --------------------------------------------------------------------------- after training


def after_training(cfg: Config, data: RunData, run: RunDir, state: RunMetrics,
                   final: str | None, test_probs: dict[str, Any] | None = None,
                   refit_trust: bool = False, export_extra: dict[str, Any] | None = None,
                   redo: bool = True) -> Any:
    """Trust (decision rules of the final student; kept when the run has them unless
    ``refit_trust``) -> export with the rules folded in -> external evaluation; each result
    saved in ``metrics.json`` at once, with its time in ``stage_seconds``. ``redo=False``
    (``kdskin run --resume``) keeps an export and an external evaluation the run already has.
    Returns the :class:`~kdskin.decision.DecisionRules`."""
    from kdskin.models.contract import load_keras

    test_probs = dict(test_probs or {})
    rules = None
    if cfg.trust.enabled and final:
        from kdskin.decision import DecisionRules
        from kdskin.pipeline.trust import trust_stage

        if refit_trust or not state.trust:
            for name in (final, student_name("baseline")):
                if name in state.models and name not in test_probs:
                    test_probs[name] = evaluate_model(load_keras(run.model(name)), data)[2]
            with timed(state, "trust"):
                state.trust = trust_stage(cfg, data, run, final,
                                          load_keras(run.model(final)), test_probs)
            run.save_metrics(state)
        rules = DecisionRules.from_dict(state.trust["rules"])
    from kdskin.export.check import EXPORT_JSON

    exported = bool(state.export) and (run.tflite / EXPORT_JSON).is_file()
    if cfg.export.enabled and final and (redo or not exported):
        with timed(state, "export"):
            state.export = export_stage(cfg, data, run, final, extra=export_extra, rules=rules)
        run.save_metrics(state)
    if cfg.data.external and (redo or not state.external):
        from kdskin.pipeline.external import external_stage

        with timed(state, "external"):
            state.external = external_stage(cfg, run, state, final, rules)
        run.save_metrics(state)
    return rules


# --------------------------------------------------------------------------- export/bench/explain


def export_stage(cfg: Config, data: RunData, run: RunDir, name: str,
                 extra: dict[str, Any] | None = None, rules: Any = None,
                 out_dir: Path | None = None, model: Any = None) -> dict[str, Any]:
    """Export the run's model ``name`` (or ``model``, e.g. that model fine-tuned, recorded as
    ``name``) to ``RUN/tflite`` (or ``out_dir``) and check it on the test split.

    ``rules`` (:class:`~kdskin.decision.DecisionRules`): the temperature and class offsets are
    folded into the exported softmax and the rules are written beside the files (``decision.json``).
    """
    from kdskin.export.check import export_and_check
    from kdskin.models.contract import load_keras, to_deployable

    model = load_keras(run.model(name)) if model is None else model
    extra = {**(extra or {}), "source_model": name}
    if rules is not None:
        model = to_deployable(model, temperature=rules.temperature,
                              class_offsets=rules.class_offsets)
        extra["decision"] = rules.folded().to_dict()
    folded = "" if rules is None else f", temperature {rules.temperature:.3f}" + (
        "" if rules.class_offsets is None else " and the melanoma offset") + " folded in"
    out = run.tflite if out_dir is None else Path(out_dir)
    log(f"exporting {name} to {out} (fp32, dynamic-range, int8){folded}")
    synthetic = cfg.data.dir is not None and Path(cfg.data.dir).resolve() == run.data.resolve()
    fields = ({"license": "trained on kdskin's built-in generated data (no licence "
                          "restriction from the data); kdskin's own licence applies"}
              if synthetic else None)
    result = export_and_check(model, out, data.train.images, data.train.labels,
                              data.test.images, data.test.labels, cfg.export, extra=extra,
                              resize_images=cfg.export.resize_check_images or cfg.data.external,
                              metadata_fields=fields)
    if rules is not None:
        from kdskin.decision import DECISION_FILE

        rules.folded().save(out / DECISION_FILE)
    if cfg.export.require_int8_within_tolerance:
        from kdskin.export.check import reject_int8

        reject_int8(out, result)
    return result


def bench_stage(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Benchmark the run (ms/step); writes ``RUN/bench.json``."""
    from kdskin.bench import bench_run
    from kdskin.io import write_json

    log("benchmarking (ms/step)")
    result = bench_run(run.root, cfg)
    write_json(run.bench_json, result)
    return result


def explain_stage(cfg: Config, data: RunData, run: RunDir, name: str) -> dict[str, Any]:
    """Grad-CAM / Score-CAM / LIME of the run's model ``name`` on one test image per class."""
    from kdskin.data.select import pick_images_per_class
    from kdskin.explain.render import explain_images
    from kdskin.models.contract import load_keras

    idx = pick_images_per_class(data.test.labels, per_class=1, seed=cfg.explain.seed)
    idx = idx[: cfg.explain.n_images]
    model = load_keras(run.model(name))
    log(f"explaining {name} on {len(idx)} test images: {', '.join(cfg.explain.methods)}")
    names = [data.test.image_ids[i] for i in idx]
    return explain_images(model, data.test.images[idx], names, cfg.explain.methods,
                          run.explanations, cfg.explain, labels=data.test.labels[idx])
