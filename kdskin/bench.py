"""Timing: training ms/step, Keras and LiteRT inference, and the benchmark of a whole run.

Every timing runs ``warmup`` untimed calls, then ``steps`` timed ones, and reports the
**median** with the 5th and 95th percentiles (``ms_per_step``, ``ms_per_step_p5``,
``ms_per_step_p95``), beside ``batch``, ``warmup``, ``steps`` and ``threads``: a table never
shows a time without saying how it was taken, and a p95 far above the median shows timings
that split into groups (e.g. two threads on a busy shared machine), which a median hides.
Inference is reported as ms/step at batch ``batch`` (``ms_per_step``) and ms/image at batch 1
(``ms_per_image``). LiteRT runs with its default XNNPACK delegate, at 1 thread and at all cores
(``os.cpu_count()``); int8 is not always faster than float on x86 (tflite-support#214), so all
files are measured side by side.

Each Keras model's predict and train functions are built once (one trace per model), so the
bench does not retrace; library output is kept off unless ``verbose``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import NUM_CLASSES
from kdskin.errors import KdskinError, ModelError
from kdskin.rundir import BASELINE_CNN, TEACHER, RunDir, final_student_name, student_name

#: Percentiles reported beside the median of every timing.
PERCENTILES: tuple[int, int] = (5, 95)


def run_models() -> tuple[str, ...]:
    """The models a run directory may hold (``models/NAME.keras``), in table order."""
    from kdskin.distill.stages import STAGES

    return (TEACHER, BASELINE_CNN, *(student_name(stage) for stage in STAGES))


# --------------------------------------------------------------------------- timing


def time_calls(fn: Callable[[], Any], warmup: int, steps: int) -> np.ndarray:
    """Wall times of ``fn()`` in ms: ``steps`` (at least 1) timed calls after ``warmup``."""
    for _ in range(max(0, warmup)):
        fn()
    times = np.empty(max(1, steps))
    for i in range(len(times)):
        start = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - start) * 1000.0
    return times


def summarise(times_ms: np.ndarray, key: str) -> dict[str, float]:
    """``{key: median, key_p5: 5th percentile, key_p95: 95th percentile}`` of ``times_ms``."""
    low, high = np.percentile(times_ms, PERCENTILES)
    return {key: float(np.median(times_ms)), f"{key}_p{PERCENTILES[0]}": float(low),
            f"{key}_p{PERCENTILES[1]}": float(high)}


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
    """Time real gradient steps (``train_on_batch``, one fixed batch) at ``batch``.

    ``model_or_distiller``: a compiled model (e.g. a ``KdskinDistiller`` from
    ``make_stage_model``) is used as compiled; an uncompiled kdskin classifier is compiled here
    with cross-entropy on every output (``kdskin.train.compile_classifier``: logits weight 1,
    exits 0.3). ``images`` (N, S, S, 3) 0..255, ``labels`` (N,) int. Warm-up (at least 1 call)
    includes tracing the train function, which is traced once. Returns ``{"ms_per_step",
    "ms_per_step_p5", "ms_per_step_p95", "batch", "warmup", "steps", "threads"}``.
    """
    from kdskin.models.contract import output_names

    model = model_or_distiller
    if not getattr(model, "compiled", False):
        from kdskin.train import compile_classifier

        compile_classifier(model, learning_rate)
    x = _batch_of(images, batch).astype(np.float32)
    y = _batch_of(np.asarray(labels).astype(np.int32).reshape(-1), batch)
    y_arg: Any = y
    if not hasattr(model, "student"):  # a plain multi-output model wants one target per output
        names = output_names(model)
        if len(names) > 1:
            y_arg = {name: y for name in names}
    warmup, steps = max(1, warmup), max(1, steps)  # the first call traces the train function
    times = time_calls(lambda: model.train_on_batch(x, y_arg), warmup, steps)
    return {**summarise(times, "ms_per_step"), "batch": int(batch), "warmup": warmup,
            "steps": steps, "threads": _tf_threads()}


# --------------------------------------------------------------------------- inference


def predict_function(model: Any) -> Callable[[np.ndarray], Any]:
    """``model(x, training=False)`` as a ``tf.function`` traced once for any batch size."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *tuple(model.inputs[0].shape[1:])), tf.float32)

    @tf.function(input_signature=[spec])
    def predict(x: Any) -> Any:
        return model(x, training=False)

    def run(x: np.ndarray) -> Any:
        return tf.nest.map_structure(lambda t: t.numpy(), predict(tf.constant(x)))

    run.tf_function = predict  # type: ignore[attr-defined]
    return run


def bench_keras_inference(model: Any, images: np.ndarray, batch: int = 32, warmup: int = 3,
                          steps: int = 10) -> dict[str, Any]:
    """Keras inference of the deployable model (softmax head, no unused exits).

    One ``tf.function`` per model (:func:`predict_function`), outputs copied to NumPy. Returns
    ``{"ms_per_step" (batch ``batch``), "ms_per_image" (batch 1), each with _p5/_p95, "batch",
    "warmup", "steps", "threads"}``.
    """
    from kdskin.models.contract import deployable

    try:
        runner = deployable(model)
    except ModelError:
        runner = model
    predict = predict_function(runner)
    x = _batch_of(images, batch).astype(np.float32)
    x1 = x[:1]
    warmup, steps = max(1, warmup), max(1, steps)
    per_step = time_calls(lambda: predict(x), warmup, steps)
    per_image = time_calls(lambda: predict(x1), warmup, steps)
    return {**summarise(per_step, "ms_per_step"), **summarise(per_image, "ms_per_image"),
            "batch": int(batch), "warmup": warmup, "steps": steps, "threads": _tf_threads()}


def bench_tflite(path: str | Path, images: np.ndarray, threads: Sequence[int | None] | None = None,
                 batch: int = 32, warmup: int = 3, steps: int = 10,
                 on_timing: Callable[[], None] | None = None) -> dict[str, Any]:
    """LiteRT timings of one ``.tflite`` file (default XNNPACK delegate).

    ``threads``: thread counts to try (default ``(1, os.cpu_count())``). ``images`` (N, S, S, 3)
    0..255 (random uint8 images are fine). Returns ``{"file", "size_bytes", "input_dtype",
    "runtime", "timings": [{"threads", "ms_per_step" (batch ``batch``), "ms_per_image" (batch 1),
    each with _p5/_p95, "batch", "warmup", "steps"}, ...]}``. ``on_timing`` is called after
    each thread count (progress).
    """
    from kdskin.export.litert import TFLiteClassifier

    path = Path(path)
    all_cores = os.cpu_count() or 1
    counts = list(dict.fromkeys(threads if threads is not None else (1, all_cores)))
    warmup, steps = max(0, warmup), max(1, steps)
    timings = []
    clf = None
    for n in counts:
        clf = TFLiteClassifier(path, num_threads=n)
        x = np.ascontiguousarray(clf.prepare(_batch_of(images, batch)))
        x1 = np.ascontiguousarray(x[:1])

        def run_batch(clf: Any = clf, x: np.ndarray = x) -> None:
            clf.invoke(x)

        def run_one(clf: Any = clf, x1: np.ndarray = x1) -> None:
            clf.invoke(x1)

        per_step = time_calls(run_batch, warmup, steps)
        per_image = time_calls(run_one, warmup, steps)
        timings.append({"threads": n if n is not None else "default",
                        **summarise(per_step, "ms_per_step"),
                        **summarise(per_image, "ms_per_image"),
                        "batch": int(batch), "warmup": warmup, "steps": steps})
        if on_timing is not None:
            on_timing()
    assert clf is not None
    return {"file": path.name, "size_bytes": path.stat().st_size,
            "input_dtype": clf.input_dtype.name, "runtime": clf.runtime, "timings": timings}


# --------------------------------------------------------------------------- LiteRT's own tool

#: LiteRT's benchmark tools, tried in this order: the C++ ``benchmark_model`` binary (on PATH)
#: and the Python ``ai_edge_litert.tools.benchmark_litert_model`` shipped in the ai-edge-litert
#: wheel (CompiledModel API).
BENCHMARK_BINARY = "benchmark_model"
BENCHMARK_MODULE = "ai_edge_litert.tools.benchmark_litert_model"


def _parse_benchmark_model(text: str) -> dict[str, float]:
    """ms figures from ``benchmark_model``'s "Inference timings in us: ... Inference (avg): N"
    and "Timings (microseconds): count=... min=... max=... avg=..." lines."""
    import re

    out: dict[str, float] = {}
    for line in text.splitlines():
        if "Timings (microseconds)" in line or "count=" in line and "avg=" in line:
            fields = dict(re.findall(r"(\w+)=([0-9.e+]+)", line))
            for key in ("avg", "min", "max", "std"):
                if key in fields:
                    out[f"{key}_ms"] = float(fields[key]) / 1000.0
            if "count" in fields:
                out["num_runs"] = float(fields["count"])
    return out


def litert_tool_latency(path: str | Path, threads: int = 1, warmup: int = 5, steps: int = 50,
                        timeout: float = 300.0) -> dict[str, Any]:
    """Batch-1 latency of ``path`` measured by LiteRT's own benchmark tool (a separate process).

    Returns ``{"tool", "threads", "warmup", "steps", "median_ms"/"avg_ms", "p5_ms", "p95_ms",
    ...}`` (what the tool reports), or ``{"skipped": reason}`` when no tool is installed or it
    fails: the cross-check is never silent.
    """
    import json
    import shutil
    import subprocess
    import tempfile

    binary = shutil.which(BENCHMARK_BINARY)
    settings = {"threads": int(threads), "warmup": int(warmup), "steps": int(steps)}
    try:
        if binary:
            proc = subprocess.run(
                [binary, f"--graph={path}", f"--num_threads={threads}",
                 f"--warmup_runs={warmup}", f"--num_runs={steps}", "--use_xnnpack=true"],
                capture_output=True, text=True, timeout=timeout, check=False)
            parsed = _parse_benchmark_model(proc.stdout + proc.stderr)
            if proc.returncode or not parsed:
                return {"skipped": f"{binary} exited {proc.returncode} without timings"}
            return {"tool": binary, **settings, **parsed}
        with tempfile.TemporaryDirectory(prefix="kdskin_bench_") as tmp:
            out = Path(tmp) / "result.json"
            proc = subprocess.run(
                [sys.executable, "-m", BENCHMARK_MODULE, f"--model={path}",
                 f"--num_threads={threads}", f"--warmup_runs={warmup}", f"--num_runs={steps}",
                 f"--result_json={out}"],
                capture_output=True, text=True, timeout=timeout, check=False)
            if proc.returncode or not out.is_file():
                last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
                return {"skipped": f"no {BENCHMARK_BINARY} on PATH and {BENCHMARK_MODULE} "
                                   f"failed (exit {proc.returncode}): {last[0][:200]}"}
            latency = json.loads(out.read_text()).get("latency", {})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"skipped": f"LiteRT benchmark tool: {exc.__class__.__name__}: {exc}"}
    return {"tool": BENCHMARK_MODULE, **settings, **latency}


#: The LiteRT Python tool rounds its figures to 0.01 ms: a median below that reads 0.
TOOL_RESOLUTION_MS = 0.01


def cross_check(ours: Mapping[str, Any], tool: Mapping[str, Any]) -> dict[str, Any]:
    """kdskin's batch-1 median beside the tool's (median, else average): their ratio.

    A tool figure below its resolution (:data:`TOOL_RESOLUTION_MS`: a tiny model on a fast
    machine reads 0.00 ms) gives no ratio and says why in ``ratio_note``.
    """
    theirs = tool.get("median_ms", tool.get("avg_ms"))
    mine = ours.get("ms_per_image")
    if "skipped" in tool or theirs is None or mine is None:
        return {**tool, "kdskin_ms_per_image": mine}
    if theirs < TOOL_RESOLUTION_MS:
        return {**tool, "kdskin_ms_per_image": mine, "ratio_kdskin_to_tool": None,
                "ratio_note": f"the tool's figure {theirs} ms is below its resolution "
                              f"({TOOL_RESOLUTION_MS} ms): no ratio"}
    return {**tool, "kdskin_ms_per_image": mine, "ratio_kdskin_to_tool": float(mine / theirs)}


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


def _number(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}" if abs(value) >= 100 else "0"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping) and "median" in value:  # a timing: median (p5-p95)
        low, high = value.get("p5"), value.get("p95")
        spread = f" ({_cell(low)}-{_cell(high)})" if low is not None and high is not None else ""
        return _cell(value["median"]) + spread
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return "-" if value != value else _number(value)  # NaN
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts); columns = ``columns`` or the keys in first-seen order.

    Missing values print as ``-``; floats with 2 decimals (3 significant digits below 1); a
    timing cell ``{"median", "p5", "p95"}`` (see :func:`timing_cell`) as ``median (p5-p95)``.
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


def timing_cell(timing: Mapping[str, Any], key: str) -> dict[str, float] | None:
    """``{"median", "p5", "p95"}`` of ``timing[key]`` (a table cell), None if not timed."""
    if timing.get(key) is None:
        return None
    low, high = PERCENTILES
    return {"median": timing[key], "p5": timing.get(f"{key}_p{low}"),
            "p95": timing.get(f"{key}_p{high}")}


# --------------------------------------------------------------------------- a whole run


def _settings(run: RunDir, cfg: Any) -> tuple[Any, Any, str]:
    """(BenchConfig, full Config, where it came from) for ``cfg`` or the run's own config."""
    from kdskin.config import BenchConfig, Config, load_config

    if cfg is None:
        if run.config.is_file():
            full = load_config(run.config)
            return full.bench, full, str(run.config)
        return BenchConfig(), Config(), "defaults (no config.yaml in the run)"
    if hasattr(cfg, "bench"):
        return cfg.bench, cfg, "given config"
    return cfg, Config(), "given bench settings"


def _recorded_steps(run: RunDir, names: list[str]) -> dict[str, Any]:
    """The training step times the run recorded during fit (``metrics.json`` ``train_step``)
    for ``names``, as bench entries (``ms_per_step``, no percentiles); a model without one is
    ``{"skipped": ...}``."""
    recorded = run.load_metrics().models if run.metrics.is_file() else {}
    out: dict[str, Any] = {}
    for name in names:
        step = recorded[name].train_step if name in recorded else {}
        if step.get("ms_per_step") is None:
            out[name] = {"skipped": "no step time recorded during fit in metrics.json; run "
                                    "kdskin bench --run with bench.training_steps=true"}
            continue
        out[name] = {"what": "recorded during fit (median, input pipeline included; "
                             "bench.training_steps=false)",
                     "ms_per_step": float(step["ms_per_step"]), "batch": step.get("batch"),
                     "steps": step.get("steps")}
    return out


def _distillation_step(teacher: Any, student: Any, cfg: Any, stage: str) -> Any:
    """A compiled ``KdskinDistiller`` for ``stage`` (the bench's hook into kdskin.distill).

    The teacher loaded from the run directory is marked trained: this only times steps.
    """
    from kdskin.distill.distiller import make_stage_model
    from kdskin.models.contract import mark_trained

    if teacher is not None:
        mark_trained(teacher)
    return make_stage_model(stage, teacher, student, cfg)


def _bench_training_steps(run: RunDir, trained: Sequence[str], loaded: dict[str, int],
                          full_cfg: Any, images_for: Callable[[int], np.ndarray],
                          labels: np.ndarray, timing: tuple[int, int, int], bar: Any
                          ) -> dict[str, Any]:
    """Time an isolated training step of each model in ``trained`` (``loaded``: their input
    sizes; ``timing``: batch, warm-up and timed steps): the teacher's cross-entropy step, the
    student alone's, and the KD step of a distilled student (its frozen teacher's forward
    included). Each model is reloaded from disk first (a step changes its weights)."""
    from kdskin.models.contract import input_size, load_keras

    out: dict[str, Any] = {}
    for name in trained:
        size = loaded[name]
        fresh = load_keras(run.model(name))
        if name.startswith("student_"):
            stage = name.removeprefix("student_")
            if stage != "baseline" and TEACHER not in loaded:
                out[name] = {"skipped": "needs models/teacher.keras for a KD step"}
                bar.update(1)
                continue
            teacher = None if stage == "baseline" else load_keras(run.model(TEACHER))
            step_model = _distillation_step(teacher, fresh, full_cfg, stage)
            if teacher is not None:  # batches come at the teacher's size (it may be larger)
                size = max(size, input_size(teacher))
            what = (f"student alone, cross-entropy (stage {stage})" if stage == "baseline"
                    else f"KD step, stage {stage}: frozen teacher forward + student step")
        else:
            step_model = fresh
            what = "teacher, cross-entropy on logits and every exit"
        out[name] = {"what": what, **bench_training_step(
            step_model, images_for(size), labels, *timing)}
        del fresh, step_model
        bar.update(1)
    return out


def bench_run(run_dir: str | Path, cfg: Any = None, seed: int = 0, verbose: bool = False,
              show_progress: bool = True) -> dict[str, Any]:
    """Benchmark the models of a run directory; returns a JSON-ready dict (not written here).

    Reads ``RUN_DIR/models/{teacher,baseline_cnn,student_*}.keras`` and every
    ``RUN_DIR/tflite/**/*.tflite``. Times Keras inference for each model, an isolated training
    step of the teacher (cross-entropy on every exit), the student alone (stage baseline) and
    the KD step of the run's final student (:func:`kdskin.rundir.final_student_name`; its
    stage's ``KdskinDistiller``, the frozen teacher's forward pass included), and LiteRT
    inference of each ``.tflite`` at 1 thread and all cores. Inputs are random uint8 images of
    the model's size (timing only). Size reductions of each ``.tflite`` are given against the
    float final student (params x 4 bytes), the fp32 ``.tflite`` and the teacher (params x 4).

    ``cfg``: a ``Config`` (its ``bench`` and ``distill`` sections are used), a ``BenchConfig``,
    or None for the run's own ``RUN_DIR/config.yaml`` (defaults if it has none). ``verbose``:
    let library output through; ``show_progress``: a bar on stderr (terminals only). Returns
    ``{"machine", "settings", "models", "training", "tflite", "sizes", "rows"}``; ``rows``
    feeds :func:`format_table`.
    """
    from kdskin.console import progress_bar
    from kdskin.export.litert import TFLiteClassifier
    from kdskin.export.quiet import quiet
    from kdskin.models.contract import count_params, load_keras

    run = RunDir(Path(run_dir))
    if not run.models.is_dir() and not run.tflite.is_dir():
        raise KdskinError(f"{run.root}: not a run directory (no models/ or tflite/); pass the "
                          f"folder a 'kdskin run' wrote")
    bench_cfg, full_cfg, source = _settings(run, cfg)
    warmup, steps, batch = int(bench_cfg.warmup), int(bench_cfg.steps), int(bench_cfg.batch_size)
    rng = np.random.default_rng(seed)
    names = [n for n in run_models() if run.model(n).is_file()]
    final = final_student_name(full_cfg.distill.stages)
    kd_student = final if final in names and final != student_name("baseline") else None
    trained = [n for n in (TEACHER, student_name("baseline"), kd_student) if n in names]
    files = sorted(run.tflite.rglob("*.tflite")) if run.tflite.is_dir() else []
    thread_counts = list(dict.fromkeys((1, os.cpu_count() or 1)))
    result: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {"warmup": warmup, "steps": steps, "batch": batch, "config": source,
                     "statistic": f"median, p{PERCENTILES[0]} and p{PERCENTILES[1]} of the "
                                  f"timed steps",
                     "inputs": "random uint8 images of the model's input size",
                     "tflite_threads": thread_counts, "tflite_delegate": "XNNPACK "
                     "(LiteRT default)", "keras_threads": "TensorFlow default (all cores)",
                     "final_student": final},
        "models": {}, "training": {}, "tflite": {}, "sizes": {},
    }

    def images_for(size: int, n: int = batch) -> np.ndarray:
        return rng.integers(0, 256, (max(n, 1), size, size, 3), dtype=np.uint8)

    labels = rng.integers(0, NUM_CLASSES, max(batch, 1))
    total = len(names) + len(trained) + len(files) * len(thread_counts)
    bar = progress_bar(total, desc="bench", unit="timing") if show_progress else _NoBar()
    with quiet(verbose), bar:
        loaded: dict[str, int] = {}  # input size of each model timed (one in memory at a time)
        for name in names:
            model = load_keras(run.model(name))
            size = loaded[name] = int(model.inputs[0].shape[1])
            params = count_params(model)
            result["models"][name] = {
                "params": params, "float_size_bytes": params * 4,
                "file_size_bytes": run.model(name).stat().st_size, "input_size": size,
                "inference": bench_keras_inference(model, images_for(size), batch, warmup,
                                                   steps)}
            del model
            bar.update(1)

        # Isolated training steps (train_on_batch on one fixed batch, no input pipeline): the
        # teacher (CE on every exit), the student alone (stage baseline) and the KD step of the
        # final student (its stage's distiller, frozen teacher forward included). Weights
        # change, so each model is reloaded from disk first. Every model's step time *during*
        # training is in metrics.json (train_step); without bench.training_steps those are used.
        if not getattr(bench_cfg, "training_steps", True):
            result["training"] = _recorded_steps(run, trained)
            bar.update(len(trained))
            trained = []
        result["training"].update(_bench_training_steps(
            run, trained, loaded, full_cfg, images_for, labels, (batch, warmup, steps), bar))

        for path in files:
            size = TFLiteClassifier(path).input_size
            key = str(path.relative_to(run.tflite))
            result["tflite"][key] = bench_tflite(path, images_for(size), thread_counts, batch,
                                                 warmup, steps, on_timing=lambda: bar.update(1))
            if getattr(bench_cfg, "litert_tool", True):
                one = result["tflite"][key]["timings"][0]
                result["tflite"][key]["litert_tool"] = cross_check(
                    one, litert_tool_latency(path, int(thread_counts[0]), warmup, steps))

    result["sizes"] = _sizes(result, run, final if final in loaded else None)
    result["rows"] = _rows(result)
    return result


class _NoBar(contextlib.nullcontext):
    """A progress bar that shows nothing."""

    def update(self, n: int = 1) -> None:
        pass


def _sizes(result: Mapping[str, Any], run: RunDir, student: str | None) -> dict[str, Any]:
    """Size and size reductions of every ``.tflite`` file against the float student, the fp32
    file beside it and the teacher."""
    student_bytes = result["models"][student]["float_size_bytes"] if student else None
    teacher_bytes = result["models"].get(TEACHER, {}).get("float_size_bytes")
    sizes: dict[str, Any] = {}
    for key, entry in result["tflite"].items():
        fp32 = run.tflite / Path(key).parent / "model_fp32.tflite"
        fp32_bytes = fp32.stat().st_size if fp32.is_file() else None
        size = entry["size_bytes"]
        sizes[key] = {
            "size_bytes": size,
            "vs_float_student": _reduction(size, student_bytes),
            "vs_fp32_tflite": _reduction(size, fp32_bytes),
            "vs_teacher": _reduction(size, teacher_bytes),
        }
    sizes["reference"] = {"float_student": student, "float_student_bytes": student_bytes,
                          "teacher_bytes": teacher_bytes}
    return sizes


def _reduction(size: int, reference: int | None) -> float | None:
    """Fractional size reduction ``1 - size / reference`` (None without a reference)."""
    return None if not reference else float(1.0 - size / reference)


def _rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One table row per Keras model and per (.tflite file, thread count); timing cells are
    ``{"median", "p5", "p95"}`` in ms."""
    rows = []
    for name, entry in result["models"].items():
        inf = entry["inference"]
        train = result["training"].get(name, {})
        rows.append({"model": name, "format": "keras fp32", "size_MB": entry["float_size_bytes"]
                     / 1e6, "reduction_vs_student": None, "threads": inf["threads"],
                     "steps": inf["steps"],
                     "train_ms_step": timing_cell(train, "ms_per_step"),
                     f"infer_ms_step_b{inf['batch']}": timing_cell(inf, "ms_per_step"),
                     "infer_ms_image_b1": timing_cell(inf, "ms_per_image")})
    for key, entry in result["tflite"].items():
        for timing in entry["timings"]:
            rows.append({"model": key, "format": f"tflite {entry['input_dtype']} in",
                         "size_MB": entry["size_bytes"] / 1e6,
                         "reduction_vs_student": result["sizes"][key]["vs_float_student"],
                         "threads": timing["threads"], "steps": timing["steps"],
                         f"infer_ms_step_b{timing['batch']}": timing_cell(timing, "ms_per_step"),
                         "infer_ms_image_b1": timing_cell(timing, "ms_per_image")})
    return rows
