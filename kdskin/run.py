"""``kdskin run``: the whole pipeline into one run directory, and the thin command wrappers
(``export``, ``bench``, ``explain``) that reuse a run's data.

Order: data (generate if needed) -> split -> decode -> paper baseline CNN -> teacher (trained,
evaluated, checked better than the majority class) -> every student stage -> export + check ->
benchmark -> explanations -> metrics.json + report.md. Each finished model is saved and recorded
in ``metrics.json`` at once, so ``--resume`` skips it; an interrupted ``fit`` resumes from its
``BackupAndRestore`` state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import Config
from kdskin.constants import CLASSES
from kdskin.data.pipeline import SplitArrays
from kdskin.errors import KdskinError
from kdskin.io import read_json, write_json

TEACHER = "teacher"
BASELINE_CNN = "baseline_cnn"
FUSED_STAGES = ("baseline", "multi_fusion")  # stages trained with the fused student


def student_name(stage: str) -> str:
    return f"student_{stage}"


def log(msg: str) -> None:
    print(f"[kdskin] {msg}", flush=True)


@dataclass
class RunData:
    """The decoded splits of a run and the class balance derived from the training split."""

    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    class_weight: dict[int, float] | None
    oversample: bool
    protocol: str
    source: str
    unreadable: list[str] = field(default_factory=list)
    rows_without_image: int = 0


# --------------------------------------------------------------------------- data


def prepare_data(cfg: Config, run_dir: Path, data_dir: str | None) -> tuple[RunData, Config]:
    """Generate (if needed), split and decode the data of a run; returns it and the resolved cfg."""
    from kdskin.data.datasets import read_dataset
    from kdskin.data.pipeline import class_weights, decode_split
    from kdskin.data.split import make_split, protocol_label, read_split, write_split

    if data_dir is None and cfg.data.dir is None:
        data_root = run_dir / "data"
        if not (data_root / "HAM10000_metadata.csv").is_file():
            from kdskin.data.synth import generate_dataset

            s = cfg.data.synth
            log(f"generating the built-in dataset ({s.n_images} images) in {data_root}")
            generate_dataset(data_root, n_images=s.n_images,
                             max_images_per_lesion=s.max_images_per_lesion,
                             image_size=s.image_size, seed=s.seed, progress=False)
        cfg.data.dir = str(data_root)
        source = f"built-in generated dataset ({cfg.data.synth.n_images} images, seed " \
                 f"{cfg.data.synth.seed})"
    else:
        cfg.data.dir = str(data_dir or cfg.data.dir)
        source = cfg.data.dir
    dataset = read_dataset(cfg.data.dir, cfg.data.format, strict=cfg.data.strict)
    if dataset.missing:
        log(f"{len(dataset.missing):,} of {dataset.rows:,} metadata rows have no image file; "
            f"skipped")
    split_path = run_dir / "split.csv"
    if split_path.is_file():
        split = read_split(split_path)
    else:
        split = make_split(dataset.table, cfg.data.protocol, cfg.data.split, cfg.data.seed,
                           cfg.data.paper_per_class)
        write_split(split, split_path)
    log(f"split: {protocol_label(cfg.data.protocol)}")
    arrays, errors = decode_split(dataset, split, cfg.data.image_size,
                                  cache_dir=run_dir / "cache", seed=cfg.data.seed, progress=True)
    for err in errors:
        log(f"skipped unreadable image: {err}")
    train, val, test = arrays["train"], arrays["val"], arrays["test"]
    for name, part in arrays.items():
        counts = np.bincount(part.labels, minlength=len(CLASSES))
        log(f"{name}: {len(part):,} images  " + " ".join(
            f"{c}={n}" for c, n in zip(CLASSES, counts, strict=True)))
        if len(part) == 0:
            raise KdskinError(f"the {name} split is empty; use more data or change data.split")
    cw = (class_weights(train.labels, cfg.data.class_weight_power)
          if cfg.data.balance == "class_weight" else None)
    data = RunData(train, val, test, cw, cfg.data.balance == "oversample", cfg.data.protocol,
                   source, errors, len(dataset.missing))
    return data, cfg


def datasets(cfg: Config, data: RunData, batch: int, targets=None):
    from kdskin.data.pipeline import make_tf_dataset

    train = make_tf_dataset(data.train.images, data.train.labels, batch, training=True,
                            augment=cfg.augment, oversample=data.oversample,
                            seed=cfg.train.seed, targets=targets)
    val = make_tf_dataset(data.val.images, data.val.labels, batch, targets=targets)
    return train, val


# --------------------------------------------------------------------------- training


def _scorecam_callback(cfg: Config, data: RunData, run_dir: Path, name: str) -> list:
    if not (cfg.explain.enabled and cfg.explain.tensorboard):
        return []
    from kdskin.explain.callback import ScoreCamCallback, pick_images_per_class

    idx = pick_images_per_class(data.val.labels, per_class=1, seed=cfg.explain.seed)
    idx = idx[: cfg.explain.tensorboard_images]
    return [ScoreCamCallback(data.val.images[idx], data.val.labels[idx],
                             run_dir / "logs" / "scorecam" / name,
                             every=cfg.explain.tensorboard_every,
                             max_n=min(cfg.explain.scorecam_max_n, 8))]


def evaluate_model(model, data: RunData) -> dict[str, Any]:
    from kdskin.evaluate import KerasClassifier, evaluate_arrays

    clf = KerasClassifier(model)
    test, test_probs = evaluate_arrays(clf, data.test.images, data.test.labels)
    val, _ = evaluate_arrays(clf, data.val.images, data.val.labels)
    return {"test": test, "val": val, "_probs": test_probs}


def _record(run_dir: Path, name: str, model, history, seconds: float, evaluation: dict,
            extra: dict | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """The metrics.json entry of a trained model, and its test probabilities (N, 7)."""
    from kdskin.models.deploy import count_params
    from kdskin.plots import plot_history

    path = run_dir / "models" / f"{name}.keras"
    probs = evaluation.pop("_probs")
    entry = {
        "name": name,
        "params": int(count_params(model)),
        "file": str(path.relative_to(run_dir)),
        "size_bytes": path.stat().st_size,
        "train_seconds": round(seconds, 1),
        "epochs": len(history.history.get("loss", [])) if history else None,
        "train_step": getattr(history, "step_time", None),
        **(extra or {}),
        **evaluation,
    }
    plot_history(run_dir / "logs" / f"{name}.csv", run_dir / "plots" / f"{name}_history.png",
                 name)
    return entry, probs


def _save(model, path: Path) -> None:
    from kdskin.io import atomic_write

    atomic_write(path, lambda tmp: model.save(tmp))


def _step_time(callbacks: list, batch_size: int) -> dict[str, Any] | None:
    from kdskin.train import StepTimer

    timer = next((c for c in callbacks if isinstance(c, StepTimer)), None)
    return timer.summary(batch_size) if timer is not None else None


def _monitor(cfg: Config, model) -> str:
    """``cfg.train.monitor`` as a key of this model's logs (Keras prefixes the accuracy of a
    multi-output model with the output name: ``val_logits_accuracy``)."""
    from kdskin.train import accuracy_key

    return f"val_{accuracy_key(model)}" if cfg.train.monitor == "val_accuracy" \
        else cfg.train.monitor


def train_classifier(cfg: Config, data: RunData, run_dir: Path, name: str, build, epochs: int,
                     lr: float, exit_weight: float = 0.3):
    """Train a plain cross-entropy model (baseline CNN, teacher); save it; return it and history."""
    import keras

    from kdskin.train import (
        compile_classifier,
        fit_model,
        global_batch_size,
        make_callbacks,
        strategy_scope,
    )

    keras.utils.set_random_seed(cfg.train.seed)
    strategy = strategy_scope(cfg.train.distribution)
    with strategy.scope():
        model = build()
        compile_classifier(model, lr, class_weight=data.class_weight, exit_weight=exit_weight)
    names = list(model.output_names)
    train_ds, val_ds = datasets(cfg, data, global_batch_size(cfg, strategy),
                                targets=names if len(names) > 1 else None)
    callbacks = make_callbacks(run_dir, name, cfg, monitor=_monitor(cfg, model),
                               extra=_scorecam_callback(cfg, data, run_dir, name),
                               validation=(data.val.images, data.val.labels), epochs=epochs,
                               learning_rate=lr)
    log(f"training {name}: {model.count_params():,} parameters, up to {epochs} epochs, "
        f"loss = class-weighted CE" + (" on every output" if len(names) > 1 else ""))
    t0 = time.time()
    history = fit_model(model, train_ds, val_ds, epochs, callbacks, verbose=cfg.train.verbose)
    seconds = time.time() - t0
    history.step_time = _step_time(callbacks, global_batch_size(cfg, strategy))
    _save(model, run_dir / "models" / f"{name}.keras")
    return model, history, seconds


def train_student_stage(cfg: Config, data: RunData, run_dir: Path, stage: str, teacher):
    """Train the student for one distillation ``stage``; save ``models/student_STAGE.keras``."""
    import keras

    from kdskin.distill.distiller import make_stage_model
    from kdskin.models import build_student
    from kdskin.train import fit_model, global_batch_size, make_callbacks, strategy_scope

    name = student_name(stage)
    fusion = cfg.student.fusion if stage in FUSED_STAGES else "none"
    keras.utils.set_random_seed(cfg.train.seed)
    strategy = strategy_scope(cfg.train.distribution)
    with strategy.scope():
        student = build_student(cfg.student, cfg.data.image_size, fusion=fusion)
        distiller = make_stage_model(stage, teacher if stage != "baseline" else None, student,
                                     cfg, class_weight=data.class_weight)
    train_ds, val_ds = datasets(cfg, data, global_batch_size(cfg, strategy))
    callbacks = make_callbacks(run_dir, name, cfg, monitor=_monitor(cfg, distiller),
                               extra=_scorecam_callback(cfg, data, run_dir, name),
                               validation=(data.val.images, data.val.labels),
                               epochs=cfg.student.epochs, learning_rate=cfg.student.learning_rate)
    log(f"training {name} (stage {stage}, fusion {fusion}): {student.count_params():,} "
        f"parameters, up to {cfg.student.epochs} epochs")
    t0 = time.time()
    history = fit_model(distiller, train_ds, val_ds, cfg.student.epochs, callbacks,
                        verbose=cfg.train.verbose)
    seconds = time.time() - t0
    history.step_time = _step_time(callbacks, global_batch_size(cfg, strategy))
    _save(student, run_dir / "models" / f"{name}.keras")
    return student, history, seconds, fusion


# --------------------------------------------------------------------------- the pipeline


def _load_existing(run_dir: Path, name: str, metrics: dict) -> Any | None:
    from kdskin.evaluate import load_keras
    from kdskin.train import mark_trained

    path = run_dir / "models" / f"{name}.keras"
    if name in metrics and path.is_file():
        log(f"{name}: already trained in this run, reusing {path}")
        return mark_trained(load_keras(path))
    return None


def run_pipeline(cfg: Config, data_dir: str | None = None, out: str | None = None,
                 resume: bool = False, teacher: str | None = None) -> Path:
    """Run everything; returns the run directory.

    ``teacher``: path of a trained teacher ``.keras`` to reuse instead of training one (it is
    copied into the run, evaluated on this run's split and must beat the majority class).
    """
    from kdskin.metrics import majority_accuracy
    from kdskin.models import build_baseline_cnn, build_teacher

    t_start = time.time()
    run_dir = Path(out or f"runs/{cfg.name}")
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise KdskinError(f"{run_dir}: run directory exists and is not empty; pass --resume to "
                          f"continue it or --out NEW_DIR for a new run")
    teacher_file = Path(teacher) if teacher else None
    if teacher_file is not None and not teacher_file.is_file():
        raise KdskinError(f"{teacher_file}: teacher file not found; pass a teacher.keras written "
                          f"by kdskin run (RUN_DIR/models/teacher.keras)")
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.json"
    state = read_json(metrics_path) if (resume and metrics_path.is_file()) else {}
    models: dict[str, Any] = state.get("models", {})
    from kdskin.export.bench import machine_info

    before = float(state.get("elapsed_seconds", 0.0))  # finished work of earlier sessions

    def elapsed() -> float:
        return round(before + time.time() - t_start, 1)

    if before:
        state["resumed"] = int(state.get("resumed", 0)) + 1
    data, cfg = prepare_data(cfg, run_dir, data_dir)
    cfg.save(run_dir / "config.yaml")
    majority = majority_accuracy(data.train.labels, data.test.labels)
    state.update({
        "config": cfg.name, "data": data.source, "protocol": data.protocol,
        "image_size": cfg.data.image_size,
        "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "rows_without_image": data.rows_without_image, "unreadable_images": data.unreadable,
        "majority_class_accuracy": majority, "models": models, "seed": cfg.train.seed,
        "config_values": cfg.to_dict(), "machine": machine_info(),
    })

    def finish(name: str, model, history, seconds: float, extra: dict | None = None) -> None:
        from kdskin.evaluate import write_plots

        entry, probs = _record(run_dir, name, model, history, seconds, evaluate_model(model, data),
                               extra)
        write_plots(entry["test"], data.test.labels, probs, run_dir / "plots", name)
        models[name] = entry
        state["elapsed_seconds"] = elapsed()
        t = entry["test"]
        log(f"{name}: test accuracy {t['accuracy']:.4f}, balanced {t['balanced_accuracy']:.4f}, "
            f"macro F1 {t['macro_f1']:.4f}, AUC {t['macro_auc']:.4f} (majority class "
            f"{majority:.4f})")
        write_json(metrics_path, state)

    if _load_existing(run_dir, BASELINE_CNN, models) is None:
        model, hist, secs = train_classifier(
            cfg, data, run_dir, BASELINE_CNN, lambda: build_baseline_cnn(cfg.data.image_size),
            cfg.baseline.epochs, cfg.baseline.learning_rate)
        finish(BASELINE_CNN, model, hist, secs, {"kind": "paper baseline CNN, cross-entropy"})

    teacher = _load_existing(run_dir, TEACHER, models)
    if teacher is None and teacher_file is not None:
        import shutil

        from kdskin.evaluate import load_keras
        from kdskin.train import mark_trained

        target = run_dir / "models" / f"{TEACHER}.keras"
        if teacher_file.resolve() != target.resolve():
            shutil.copyfile(teacher_file, target)
        teacher = load_keras(target)
        if not (tuple(teacher.inputs[0].shape[1:3]) == (cfg.data.image_size,) * 2):
            raise KdskinError(f"{teacher_file}: the teacher takes {teacher.inputs[0].shape[1]}px "
                              f"images but data.image_size is {cfg.data.image_size}")
        mark_trained(teacher)
        state["teacher_from"] = str(teacher_file)
        log(f"teacher: reusing {teacher_file} (not retrained)")
        finish(TEACHER, teacher, None, 0.0, {"kind": "teacher reused from "
                                                    f"{teacher_file}"})
    if teacher is None:
        teacher, hist, secs = train_classifier(
            cfg, data, run_dir, TEACHER,
            lambda: build_teacher(cfg.teacher, cfg.data.image_size), cfg.teacher.epochs,
            cfg.teacher.learning_rate, exit_weight=cfg.teacher.exit_loss_weight)
        finish(TEACHER, teacher, hist, secs, {"kind": f"hybrid ViT + {cfg.teacher.conv_branch} "
                                                      f"teacher, cross-entropy"})
    distill_stages = [s for s in cfg.distill.stages if s != "baseline"]
    if distill_stages:
        from kdskin.distill.distiller import check_teacher_trained

        check_teacher_trained(teacher, (data.test.images, data.test.labels), majority)

    for stage in cfg.distill.stages:
        name = student_name(stage)
        if _load_existing(run_dir, name, models) is not None:
            continue
        student, hist, secs, fusion = train_student_stage(cfg, data, run_dir, stage, teacher)
        finish(name, student, hist, secs, {"kind": f"student, stage {stage}", "stage": stage,
                                           "fusion": fusion})

    final = final_student_name(cfg)
    if cfg.export.enabled and final:
        state["export"] = export_stage(cfg, data, run_dir, final)
        write_json(metrics_path, state)
    if cfg.bench.enabled:
        state["bench"] = bench_stage(cfg, run_dir)
        write_json(metrics_path, state)
    if cfg.explain.enabled and final:
        state["explanations"] = explain_stage(cfg, data, run_dir, final)
        write_json(metrics_path, state)
    state["wall_seconds"] = state["elapsed_seconds"] = elapsed()
    write_json(metrics_path, state)
    from kdskin.report import write_run_report

    write_run_report(run_dir)
    log(f"done in {state['wall_seconds'] / 60:.1f} min; report: {run_dir / 'report.md'}")
    return run_dir


def final_student_name(cfg: Config) -> str | None:
    """The student that is exported and explained: the last configured distillation stage."""
    stages = cfg.distill.stages
    if "multi_fusion" in stages:
        return student_name("multi_fusion")
    return student_name(stages[-1]) if stages else None


# --------------------------------------------------------------------------- export/bench/explain


def export_stage(cfg: Config, data: RunData, run_dir: Path, name: str,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from kdskin.evaluate import load_keras
    from kdskin.export.convert import export_and_check

    model = load_keras(run_dir / "models" / f"{name}.keras")
    log(f"exporting {name} to {run_dir / 'tflite'} (fp32, dynamic-range, int8)")
    return export_and_check(model, run_dir / "tflite", data.train.images, data.train.labels,
                            data.test.images, data.test.labels, cfg.export, extra=extra)


def bench_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from kdskin.export.bench import bench_run, format_table

    log("benchmarking (ms/step)")
    result = bench_run(run_dir, cfg)
    write_json(run_dir / "bench.json", result)
    print(format_table(result["rows"]))
    return result


def explain_stage(cfg: Config, data: RunData, run_dir: Path, name: str) -> dict[str, Any]:
    from kdskin.evaluate import load_keras
    from kdskin.explain.callback import pick_images_per_class
    from kdskin.explain.render import explain_images

    idx = pick_images_per_class(data.test.labels, per_class=1, seed=cfg.explain.seed)
    idx = idx[: cfg.explain.n_images]
    model = load_keras(run_dir / "models" / f"{name}.keras")
    log(f"explaining {name} on {len(idx)} test images: {', '.join(cfg.explain.methods)}")
    names = [data.test.image_ids[i] for i in idx]
    return explain_images(model, data.test.images[idx], names, cfg.explain.methods,
                          run_dir / "explanations", cfg.explain, labels=data.test.labels[idx])


# --------------------------------------------------------------------------- commands


def _run_data_for(cfg: Config, model_path: Path, data: str | None, split_file: str | None
                  ) -> RunData:
    """The data a command uses: ``--data`` (with ``--split-file``) or the model's run directory."""
    from kdskin.config import load_config
    from kdskin.data.split import read_split, write_split

    run_dir = model_path.resolve().parent.parent
    if data is None and (run_dir / "config.yaml").is_file():
        cfg = load_config(run_dir / "config.yaml")
    if data is None and cfg.data.dir is None:
        raise KdskinError(f"{model_path}: no --data given and no run directory config beside "
                          f"the model; pass --data DIR")
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="kdskin-"))
    if split_file:
        write_split(read_split(split_file), tmp / "split.csv")
    elif (run_dir / "split.csv").is_file() and data is None:
        write_split(read_split(run_dir / "split.csv"), tmp / "split.csv")
    if (run_dir / "cache").is_dir() and data is None:
        (tmp / "cache").symlink_to(run_dir / "cache")
    rd, _ = prepare_data(cfg, tmp, data)
    return rd


def export_command(cfg: Config, model: str | None, data: str | None, out: str | None,
                   split_file: str | None = None) -> dict[str, Any]:
    from kdskin.evaluate import load_keras
    from kdskin.export.convert import export_and_check

    if not model or not out:
        raise KdskinError("kdskin export needs --model M.keras and --out DIR (or --run RUN_DIR "
                          "to re-export a finished run)")
    model_path = Path(model)
    keras_model = load_keras(model_path)
    rd = _run_data_for(cfg, model_path, data, split_file)
    result = export_and_check(keras_model, Path(out), rd.train.images, rd.train.labels,
                              rd.test.images, rd.test.labels, cfg.export)
    print(f"wrote {out}: model_fp32.tflite, model_dynamic.tflite, model_int8.tflite, labels.txt, "
          f"export.json")
    _print_int8_check(result)
    return result


def _print_int8_check(result: dict[str, Any]) -> None:
    ev = result["evaluation"]
    keras_m, int8 = ev["keras"], ev["tflite"]["int8"]
    print(f"int8 vs Keras on {ev['n_images']} test images: accuracy {int8['accuracy']:.4f} vs "
          f"{keras_m['accuracy']:.4f}, macro F1 {int8['macro_f1']:.4f} vs "
          f"{keras_m['macro_f1']:.4f}, top-1 agreement {int8['agreement']:.4f}, "
          f"within {result['max_int8_drop'] * 100:g} point(s): "
          f"{'yes' if result['int8_within_tolerance'] else 'NO'}")


def _run_state(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file() or not (run_dir / "config.yaml").is_file():
        raise KdskinError(f"{run_dir}: not a finished run directory (no metrics.json or "
                          f"config.yaml); pass a directory written by kdskin run")
    return metrics_path, read_json(metrics_path)


def _record_in_run(run_dir: Path, key: str, result: dict[str, Any]) -> None:
    """Store ``result`` as ``metrics.json[key]`` of a finished run and rewrite its report.md."""
    from kdskin.report import write_run_report

    metrics_path, state = _run_state(run_dir)
    state[key] = result
    write_json(metrics_path, state)
    write_run_report(run_dir)


def _previous_int8(export: dict[str, Any] | None) -> dict[str, Any]:
    """The figures of a run's earlier int8 export, to keep beside a re-export ({} if none)."""
    export = export or {}
    evaluation = export.get("evaluation") or {}
    int8 = (evaluation.get("tflite") or {}).get("int8")
    if not int8:
        return {}
    return {"previous": {
        "int8": {k: int8.get(k) for k in ("accuracy", "macro_f1", "macro_auc", "agreement")},
        "int8_drop": evaluation.get("int8_drop"),
        "tensorflow": (export.get("conversion") or {}).get("tensorflow"),
    }}


def reexport_run(run: str, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Re-export a finished run's final student with the current exporter.

    Uses the run's config (plus ``overrides``), split and data; rewrites ``RUN/tflite``, the
    ``export`` entry of ``metrics.json`` (the previous int8 figures are kept under
    ``export.previous``) and ``report.md``. Training results and wall time are not touched.
    """
    from kdskin.config import load_config

    run_dir = Path(run)
    _, state = _run_state(run_dir)
    cfg = load_config(run_dir / "config.yaml", overrides)
    final = final_student_name(cfg)
    model_path = run_dir / "models" / f"{final}.keras"
    if final is None or not model_path.is_file():
        raise KdskinError(f"{run_dir}: no final student model ({model_path.name}); finish the "
                          f"run with kdskin run --resume first")
    rd = _run_data_for(cfg, model_path, None, None)
    extra = {**_previous_int8(state.get("export")),
             "reexported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result = export_stage(cfg, rd, run_dir, final, extra=extra)
    _record_in_run(run_dir, "export", result)
    print(f"wrote {run_dir / 'tflite'} and updated metrics.json, report.md")
    _print_int8_check(result)
    return result


def bench_command(cfg: Config, run_dir: str | None, json_out: str | None = None,
                  update: bool = False) -> dict:
    from kdskin.export.bench import bench_run, format_table

    path = Path(run_dir or f"runs/{cfg.name}")
    if not (path / "models").is_dir():
        raise KdskinError(f"{path}: not a run directory (no models/); pass --run RUN_DIR")
    if update:
        _run_state(path)  # refuse an unfinished run before spending minutes on timings
        result = bench_stage(cfg, path)  # prints the table, writes RUN/bench.json
        _record_in_run(path, "bench", result)
        print(f"updated {path / 'bench.json'}, metrics.json and report.md")
    else:
        result = bench_run(path, cfg)
        print(format_table(result["rows"]))
    if json_out:
        write_json(json_out, result)
    return result


def explain_command(cfg: Config, model: str, inputs: list[str], methods: str, out: str,
                    class_name: str | None = None, evaluate: bool = False,
                    data: str | None = None, split_file: str | None = None) -> dict[str, Any]:
    from kdskin.explain.render import explain_command as run_explain

    return run_explain(cfg, model=model, inputs=inputs, methods=methods, out=out,
                       class_name=class_name, evaluate=evaluate,
                       test_data=(lambda: _run_data_for(cfg, Path(model), data, split_file).test)
                       if (evaluate and not inputs) else None)
