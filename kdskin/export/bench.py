"""Timing: training ms/step, Keras and LiteRT inference, and the benchmark of a whole run.

Every timing is the **median** of ``steps`` timed calls after ``warmup`` untimed ones, and every
timing dict records ``batch``, ``warmup``, ``steps`` and ``threads`` beside the number, so a table
never shows a time without saying how it was taken. Inference is reported as ms/step at batch 32
(``ms_per_step``) and ms/image at batch 1 (``ms_per_image``). LiteRT runs with its default
XNNPACK delegate, at 1 thread and at all cores (``os.cpu_count()``); int8 is not always faster than
float on x86 (tflite-support#214), so all files are measured side by side.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import NUM_CLASSES
from kdskin.errors import KdskinError, ModelError

#: The models a run directory may hold (RUN_DIR/models/NAME.keras), in table order.
RUN_MODELS: tuple[str, ...] = ("teacher", "baseline_cnn", "student_baseline", "student_single",
                               "student_multi", "student_multi_fusion")
#: Which student the .tflite files in RUN_DIR/tflite/ were exported from (first one present).
EXPORTED_STUDENT_ORDER: tuple[str, ...] = ("student_multi_fusion", "student_multi",
                                           "student_single", "student_baseline")


def _median_ms(fn: Callable[[], Any], warmup: int, steps: int) -> float:
    """Median wall time of ``fn()`` in ms over ``steps`` calls after ``warmup`` calls."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(max(1, steps)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def _batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` images taken from ``images`` (repeated if there are fewer)."""
    images = np.asarray(images)
    if len(images) == 0:
        raise KdskinError("no images to benchmark with")
    reps = -(-batch // len(images))
    return np.concatenate([images] * reps)[:batch] if reps > 1 else images[:batch]


def _tf_threads() -> int:
    """TensorFlow's intra-op thread count (0 in TF means 'all cores')."""
    import tensorflow as tf

    return int(tf.config.threading.get_intra_op_parallelism_threads()) or (os.cpu_count() or 1)


# --------------------------------------------------------------------------- training


def bench_training_step(model_or_distiller: Any, images: np.ndarray, labels: np.ndarray,
                        batch: int = 32, warmup: int = 3, steps: int = 10,
                        learning_rate: float = 1e-3) -> dict[str, Any]:
    """Median ms per real gradient step (``train_on_batch``) at ``batch``.

    ``model_or_distiller``: a compiled model (e.g. a ``KdskinDistiller`` from
    ``make_stage_model``) is used as compiled; an uncompiled kdskin classifier is compiled here
    with cross-entropy on every output (``kdskin.train.compile_classifier``: logits weight 1,
    exits 0.3). ``images`` (N, S, S, 3) 0..255, ``labels`` (N,) int. Warm-up includes tracing.
    Returns ``{"ms_per_step", "batch", "warmup", "steps", "threads"}``.
    """
    model = model_or_distiller
    if not getattr(model, "compiled", False):
        from kdskin.train import compile_classifier

        compile_classifier(model, learning_rate)
    x = _batch_of(images, batch).astype(np.float32)
    y = _batch_of(np.asarray(labels).astype(np.int32).reshape(-1), batch)
    y_arg: Any = y
    if not hasattr(model, "student"):  # a plain multi-output model wants one target per output
        from kdskin.export.convert import output_tensors

        names = list(output_tensors(model))
        if len(names) > 1:
            y_arg = {name: y for name in names}
    warmup = max(1, warmup)  # the first call traces the train function
    ms = _median_ms(lambda: model.train_on_batch(x, y_arg), warmup, steps)
    return {"ms_per_step": ms, "batch": int(batch), "warmup": warmup, "steps": int(steps),
            "threads": _tf_threads()}


# --------------------------------------------------------------------------- inference


def bench_keras_inference(model: Any, images: np.ndarray, batch: int = 32, warmup: int = 3,
                          steps: int = 10) -> dict[str, Any]:
    """Keras inference of the deployable model (softmax head, no unused exits).

    Uses ``predict_on_batch`` (the compiled predict function). Returns ``{"ms_per_step"
    (batch ``batch``), "ms_per_image" (batch 1), "batch", "warmup", "steps", "threads"}``.
    """
    from kdskin.export.convert import deployable

    try:
        runner = deployable(model)
    except ModelError:
        runner = model
    x = _batch_of(images, batch).astype(np.float32)
    x1 = x[:1]
    warmup = max(1, warmup)
    ms_batch = _median_ms(lambda: runner.predict_on_batch(x), warmup, steps)
    ms_one = _median_ms(lambda: runner.predict_on_batch(x1), warmup, steps)
    return {"ms_per_step": ms_batch, "ms_per_image": ms_one, "batch": int(batch),
            "warmup": warmup, "steps": int(steps), "threads": _tf_threads()}


def bench_tflite(path: str | Path, images: np.ndarray, threads: Sequence[int | None] | None = None,
                 batch: int = 32, warmup: int = 3, steps: int = 10) -> dict[str, Any]:
    """LiteRT timings of one ``.tflite`` file (default XNNPACK delegate).

    ``threads``: thread counts to try (default ``(1, os.cpu_count())``). ``images`` (N, S, S, 3)
    0..255 (random uint8 images are fine). Returns ``{"file", "size_bytes", "input_dtype",
    "runtime", "timings": [{"threads", "ms_per_step" (batch ``batch``), "ms_per_image" (batch 1),
    "batch", "warmup", "steps"}, ...]}``.
    """
    from kdskin.export.litert import TFLiteClassifier

    path = Path(path)
    all_cores = os.cpu_count() or 1
    counts = list(dict.fromkeys(threads if threads is not None else (1, all_cores)))
    timings = []
    clf = None
    for n in counts:
        clf = TFLiteClassifier(path, num_threads=n)
        x = clf._prepare(_batch_of(images, batch))
        x1 = np.ascontiguousarray(x[:1])

        def run_batch(clf: Any = clf, x: np.ndarray = x) -> None:
            clf.invoke(x)

        def run_one(clf: Any = clf, x1: np.ndarray = x1) -> None:
            clf.invoke(x1)

        ms_batch = _median_ms(run_batch, warmup, steps)
        ms_one = _median_ms(run_one, warmup, steps)
        timings.append({"threads": n if n is not None else "default", "ms_per_step": ms_batch,
                        "ms_per_image": ms_one, "batch": int(batch), "warmup": int(warmup),
                        "steps": int(steps)})
    assert clf is not None
    return {"file": path.name, "size_bytes": path.stat().st_size,
            "input_dtype": clf.input_dtype.name, "runtime": clf.runtime, "timings": timings}


# --------------------------------------------------------------------------- machine, table


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, OS and library versions, for every benchmark table."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "machine": platform.machine(),
        "system": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }
    for package in ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "tflite-runtime"):
        version = _version(package)
        if version:
            info[package] = version
    return info


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value != value:  # NaN
            return "-"
        if value == 0 or abs(value) >= 100:
            return f"{value:.0f}" if abs(value) >= 100 else "0"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts); columns = ``columns`` or the keys in first-seen order.

    Missing values print as ``-``; floats with 2 decimals (3 significant digits below 1).
    """
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        return ""
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- a whole run


def _settings(cfg: Any) -> tuple[Any, Any]:
    """(BenchConfig, full Config or None) from a Config, a BenchConfig or None."""
    from kdskin.config import BenchConfig, Config

    if cfg is None:
        return BenchConfig(), Config()
    if hasattr(cfg, "bench"):
        return cfg.bench, cfg
    return cfg, Config()


def _distillation_step(teacher: Any, student: Any, cfg: Any, stage: str) -> Any:
    """A compiled ``KdskinDistiller`` for ``stage`` (the bench's hook into kdskin.distill).

    The teacher loaded from the run directory is marked trained: this only times steps.
    """
    from kdskin.distill.distiller import make_stage_model
    from kdskin.train import mark_trained

    if teacher is not None:
        mark_trained(teacher)
    return make_stage_model(stage, teacher, student, cfg)


def bench_run(run_dir: str | Path, cfg: Any = None, seed: int = 0) -> dict[str, Any]:
    """Benchmark the models of a run directory; returns a JSON-ready dict (not written here).

    Reads ``RUN_DIR/models/{teacher,baseline_cnn,student_*}.keras`` and every
    ``RUN_DIR/tflite/**/*.tflite``. Times Keras inference for each model, an isolated training
    step of the teacher (cross-entropy on every exit), the student alone (stage baseline) and
    the KD step of the exported student (its stage's ``KdskinDistiller``, the frozen teacher's
    forward pass included), and LiteRT inference of each
    ``.tflite`` at 1 thread and all cores. Inputs are random uint8 images of the model's size
    (timing only). Size reductions of each ``.tflite`` are given against the float student
    (params x 4 bytes), the fp32 ``.tflite`` and the teacher (params x 4).

    ``cfg``: a ``Config`` (its ``bench`` and ``distill`` sections are used), a ``BenchConfig``,
    or None for defaults. Returns ``{"machine", "settings", "models", "training", "tflite",
    "sizes", "rows"}``; ``rows`` feeds :func:`format_table`.
    """
    from kdskin.evaluate import load_keras

    bench_cfg, full_cfg = _settings(cfg)
    warmup, steps, batch = int(bench_cfg.warmup), int(bench_cfg.steps), int(bench_cfg.batch_size)
    run_dir = Path(run_dir)
    models_dir, tflite_dir = run_dir / "models", run_dir / "tflite"
    if not models_dir.is_dir() and not tflite_dir.is_dir():
        raise KdskinError(f"{run_dir}: not a run directory (no models/ or tflite/); pass the "
                          f"folder a 'kdskin run' wrote")
    rng = np.random.default_rng(seed)
    loaded: dict[str, Any] = {}
    for name in RUN_MODELS:
        path = models_dir / f"{name}.keras"
        if path.is_file():
            loaded[name] = load_keras(path)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {"warmup": warmup, "steps": steps, "batch": batch, "statistic": "median",
                     "inputs": "random uint8 images of the model's input size",
                     "tflite_threads": [1, os.cpu_count() or 1], "tflite_delegate": "XNNPACK "
                     "(LiteRT default)", "keras_threads": "TensorFlow default (all cores)"},
        "models": {}, "training": {}, "tflite": {}, "sizes": {},
    }

    def images_for(size: int, n: int = batch) -> np.ndarray:
        return rng.integers(0, 256, (max(n, 1), size, size, 3), dtype=np.uint8)

    labels = rng.integers(0, NUM_CLASSES, max(batch, 1))
    for name, model in loaded.items():
        size = int(model.inputs[0].shape[1])
        params = int(model.count_params())
        result["models"][name] = {"params": params, "float_size_bytes": params * 4,
                                  "file_size_bytes": (models_dir / f"{name}.keras").stat().st_size,
                                  "input_size": size,
                                  "inference": bench_keras_inference(model, images_for(size),
                                                                     batch, warmup, steps)}

    # Isolated training steps (train_on_batch on one fixed batch, no input pipeline): the
    # teacher (CE on every exit), the student alone (stage baseline) and the KD step of the
    # exported student (its stage's distiller, frozen teacher forward included). Weights
    # change, so each model is reloaded from disk first. Every model's step time *during*
    # training is in metrics.json (train_step).
    training: dict[str, Any] = {}
    kd_student = next((n for n in EXPORTED_STUDENT_ORDER if n in loaded and n !=
                       "student_baseline"), None)
    for name in [n for n in ("teacher", "student_baseline", kd_student) if n in loaded]:
        size = int(loaded[name].inputs[0].shape[1])
        fresh = load_keras(models_dir / f"{name}.keras")
        if name.startswith("student_"):
            stage = name.removeprefix("student_")
            if stage != "baseline" and "teacher" not in loaded:
                training[name] = {"skipped": "needs models/teacher.keras for a KD step"}
                continue
            teacher = None if stage == "baseline" else load_keras(models_dir / "teacher.keras")
            step_model = _distillation_step(teacher, fresh, full_cfg, stage)
            what = (f"student alone, cross-entropy (stage {stage})" if stage == "baseline"
                    else f"KD step, stage {stage}: frozen teacher forward + student step")
        else:
            step_model = fresh
            what = ("teacher, cross-entropy on logits and every exit" if name == "teacher"
                    else "cross-entropy")
        training[name] = {"what": what, **bench_training_step(
            step_model, images_for(size), labels, batch, warmup, steps)}
    result["training"] = training

    # LiteRT files.
    files = sorted(tflite_dir.rglob("*.tflite")) if tflite_dir.is_dir() else []
    for path in files:
        from kdskin.export.litert import TFLiteClassifier

        size = TFLiteClassifier(path).input_size
        key = str(path.relative_to(tflite_dir))
        result["tflite"][key] = bench_tflite(path, images_for(size), None, batch, warmup, steps)

    # Sizes.
    student_name = next((n for n in EXPORTED_STUDENT_ORDER if n in loaded), None)
    student_bytes = result["models"][student_name]["float_size_bytes"] if student_name else None
    teacher_bytes = result["models"].get("teacher", {}).get("float_size_bytes")
    for key, entry in result["tflite"].items():
        fp32 = tflite_dir / Path(key).parent / "model_fp32.tflite"
        fp32_bytes = fp32.stat().st_size if fp32.is_file() else None
        size = entry["size_bytes"]
        result["sizes"][key] = {
            "size_bytes": size,
            "vs_float_student": _reduction(size, student_bytes),
            "vs_fp32_tflite": _reduction(size, fp32_bytes),
            "vs_teacher": _reduction(size, teacher_bytes),
        }
    result["sizes"]["reference"] = {"float_student": student_name,
                                    "float_student_bytes": student_bytes,
                                    "teacher_bytes": teacher_bytes}
    result["rows"] = _rows(result)
    return result


def _reduction(size: int, reference: int | None) -> float | None:
    """Fractional size reduction ``1 - size / reference`` (None without a reference)."""
    return None if not reference else float(1.0 - size / reference)


def _rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One table row per Keras model and per (.tflite file, thread count)."""
    rows = []
    for name, entry in result["models"].items():
        inf = entry["inference"]
        train = result["training"].get(name, {})
        rows.append({"model": name, "format": "keras fp32", "size_MB": entry["float_size_bytes"]
                     / 1e6, "reduction_vs_student": None, "threads": inf["threads"],
                     "train_ms_step": train.get("ms_per_step"),
                     f"infer_ms_step_b{inf['batch']}": inf["ms_per_step"],
                     "infer_ms_image_b1": inf["ms_per_image"]})
    for key, entry in result["tflite"].items():
        for timing in entry["timings"]:
            rows.append({"model": key, "format": f"tflite {entry['input_dtype']} in",
                         "size_MB": entry["size_bytes"] / 1e6,
                         "reduction_vs_student": result["sizes"][key]["vs_float_student"],
                         "threads": timing["threads"],
                         f"infer_ms_step_b{timing['batch']}": timing["ms_per_step"],
                         "infer_ms_image_b1": timing["ms_per_image"]})
    return rows
