"""Benchmark helpers: timing dicts of the right shape, the markdown table, a whole run dir."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from kdskin.bench import (
    bench_keras_inference,
    bench_run,
    bench_tflite,
    bench_training_step,
    format_table,
    machine_info,
    predict_function,
    summarise,
    timing_cell,
)
from kdskin.config import BenchConfig, Config
from kdskin.constants import NUM_CLASSES
from kdskin.export.convert import export_tflite
from tests.test_export import SIZE, colour_data, tiny_classifier

STEP = {"ms_per_step", "ms_per_step_p5", "ms_per_step_p95"}
IMAGE = {"ms_per_image", "ms_per_image_p5", "ms_per_image_p95"}
TIMING_KEYS = STEP | {"batch", "warmup", "steps", "threads"}


def _ordered(timing: dict, key: str) -> bool:
    return 0 < timing[f"{key}_p5"] <= timing[key] <= timing[f"{key}_p95"]


def _images(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
            rng.integers(0, NUM_CLASSES, n))


def _stand_in(kind: str, name: str) -> keras.Model:
    """Tiny models with the teacher's / student's output names (exit maps resolve on them)."""
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(image)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if kind == "teacher":
        heads = {h: keras.layers.Dense(NUM_CLASSES, name=h)(x)
                 for h in ("vit_exit_1", "conv_exit_1", "logits")}
    else:  # a fused student: two exits and a head on their concatenated features
        fused = keras.layers.Concatenate(name="fusion_concat")([x, x])
        heads = {h: keras.layers.Dense(NUM_CLASSES, name=h)(x)
                 for h in ("cnn_exit", "effnet_exit")}
        heads["logits"] = keras.layers.Dense(NUM_CLASSES, name="logits")(fused)
    return keras.Model(image, heads, name=name)


@pytest.mark.slow
def test_training_step_plain_model():
    images, labels = _images()
    result = bench_training_step(tiny_classifier(), images, labels, batch=4, warmup=1, steps=3)
    assert set(result) == TIMING_KEYS
    assert _ordered(result, "ms_per_step") and result["batch"] == 4 and result["steps"] == 3
    assert result["warmup"] == 1 and result["threads"] >= 1


@pytest.mark.slow
def test_training_step_takes_real_gradient_steps():
    from kdskin.distill.distiller import make_stage_model
    from kdskin.models.contract import mark_trained

    teacher, student = _stand_in("teacher", "t"), _stand_in("student", "s")
    mark_trained(teacher)
    distiller = make_stage_model("multi_fusion", teacher, student, Config())
    before = [w.numpy().copy() for w in student.trainable_weights]
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    images, labels = _images()
    result = bench_training_step(distiller, images, labels, batch=4, warmup=0, steps=2)
    assert set(result) == TIMING_KEYS and result["ms_per_step"] > 0
    assert result["warmup"] == 1  # at least one untimed call: it traces the train function
    assert int(distiller.optimizer.iterations.numpy()) == 3
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, student.trainable_weights,
                                                              strict=True))
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(teacher_before, teacher.weights,
                                                            strict=True))


def test_keras_inference_shape():
    images, _ = _images(3)
    result = bench_keras_inference(tiny_classifier(), images, batch=5, warmup=1, steps=2)
    assert set(result) == TIMING_KEYS | IMAGE
    assert result["batch"] == 5 and _ordered(result, "ms_per_step")
    assert _ordered(result, "ms_per_image")


def test_predict_function_is_traced_once():
    model = tiny_classifier()
    predict = predict_function(model)
    images, _ = _images(5)
    for n in (5, 1, 3, 5):
        out = predict(images[:n].astype(np.float32))
        assert out["logits"].shape == (n, NUM_CLASSES) and isinstance(out["logits"], np.ndarray)
    assert predict.tf_function.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(out["logits"], model.predict(images.astype(np.float32),
                                                             verbose=0)["logits"], atol=1e-5)


def test_summarise_median_and_percentiles():
    times = np.arange(1.0, 101.0)  # 1..100 ms
    stats = summarise(times, "ms")
    assert stats == {"ms": 50.5, "ms_p5": pytest.approx(5.95), "ms_p95": pytest.approx(95.05)}
    assert timing_cell({"t": 2.0, "t_p5": 1.0, "t_p95": 9.0}, "t") == {"median": 2.0, "p5": 1.0,
                                                                       "p95": 9.0}
    assert timing_cell({}, "t") is None


@pytest.mark.slow
def test_tflite_timings(tmp_path):
    files = export_tflite(tiny_classifier(), tmp_path, colour_data(2)[0], kinds=("fp32", "int8"))
    images, _ = _images(3)
    result = bench_tflite(files["int8"], images, batch=4, warmup=1, steps=2)
    assert result["file"] == "model_int8.tflite" and result["input_dtype"] == "uint8"
    assert result["size_bytes"] == files["int8"].stat().st_size
    cores = os.cpu_count()
    assert [t["threads"] for t in result["timings"]] == list(dict.fromkeys([1, cores]))
    for timing in result["timings"]:
        assert set(timing) == STEP | IMAGE | {"threads", "batch", "warmup", "steps"}
        assert _ordered(timing, "ms_per_step") and _ordered(timing, "ms_per_image")
        assert timing["batch"] == 4 and timing["warmup"] == 1 and timing["steps"] == 2
    single = bench_tflite(files["fp32"], images, threads=[2], batch=2, warmup=0, steps=1)
    assert [t["threads"] for t in single["timings"]] == [2]


def test_machine_info():
    info = machine_info()
    assert info["cores"] == os.cpu_count() and info["cpu"]
    assert "keras" in info and ("tensorflow" in info or "tensorflow-cpu" in info)


def test_format_table():
    rows = [{"model": "a|b", "ms": 12.345, "size": 0.01234},
            {"model": "c", "threads": 2, "ms": None, "extra": float("nan")}]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0] == "| model | ms | size | threads | extra |"
    assert lines[1] == "| --- | --- | --- | --- | --- |"
    assert lines[2] == "| a\\|b | 12.35 | 0.0123 | - | - |"
    assert lines[3] == "| c | - | - | 2 | - |"
    assert format_table(rows, columns=["ms"]).splitlines()[2] == "| 12.35 |"
    assert format_table([]) == ""
    timed = format_table([{"ms": {"median": 12.345, "p5": 10.0, "p95": 150.2}},
                          {"ms": {"median": 0.5, "p5": None, "p95": None}}])
    assert timed.splitlines()[2:] == ["| 12.35 (10.00-150) |", "| 0.5 |"]


@pytest.mark.slow
def test_bench_run_on_a_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    teacher = _stand_in("teacher", "teacher")
    student = _stand_in("student", "student_multi_fusion")
    for name, model in (("teacher", teacher), ("student_baseline", _stand_in("student", "sb")),
                        ("student_multi_fusion", student)):
        model.save(run / "models" / f"{name}.keras")
    files = export_tflite(student, run / "tflite", colour_data(2)[0], kinds=("fp32", "int8"))
    # No cfg: the run's own config.yaml is used (its batch size, its stages).
    Config(bench=BenchConfig(warmup=1, steps=3, batch_size=4, training_steps=True)).save(
        run / "config.yaml")
    result = bench_run(run)
    captured = capsys.readouterr()
    assert captured.out == ""  # no library noise (converter, Keras, TensorFlow) on stdout
    assert "retracing" not in captured.err
    assert result["settings"]["config"] == str(run / "config.yaml")
    assert result["settings"]["final_student"] == "student_multi_fusion"
    assert set(result["models"]) == {"teacher", "student_baseline", "student_multi_fusion"}
    assert set(result["training"]) == {"teacher", "student_baseline", "student_multi_fusion"}
    assert "KD step" in result["training"]["student_multi_fusion"]["what"]
    for entry in result["training"].values():
        assert _ordered(entry, "ms_per_step") and entry["batch"] == 4 and entry["warmup"] == 1
        assert entry["steps"] == 3
    assert set(result["tflite"]) == {"model_fp32.tflite", "model_int8.tflite"}
    sizes = result["sizes"]["model_int8.tflite"]
    student_bytes = student.count_params() * 4
    assert sizes["vs_float_student"] == pytest.approx(
        1 - files["int8"].stat().st_size / student_bytes)
    assert sizes["vs_fp32_tflite"] == pytest.approx(
        1 - files["int8"].stat().st_size / files["fp32"].stat().st_size)
    assert result["sizes"]["model_fp32.tflite"]["vs_fp32_tflite"] == 0.0
    assert result["sizes"]["reference"]["float_student"] == "student_multi_fusion"
    n_threads = len({1, os.cpu_count()})
    assert len(result["rows"]) == 3 + 2 * n_threads  # models, files x threads
    table = format_table(result["rows"])
    assert table.count("\n") == len(result["rows"]) + 1
    assert result["settings"]["warmup"] == 1 and result["machine"]["cores"] == os.cpu_count()
    row = result["rows"][0]
    assert set(row["infer_ms_step_b4"]) == {"median", "p5", "p95"} and row["steps"] == 3
    # A config passed in wins over the run's own.
    given = bench_run(run, Config(bench=BenchConfig(warmup=0, steps=1, batch_size=2)))
    assert given["settings"]["batch"] == 2 and given["settings"]["config"] == "given config"
    assert given["models"]["teacher"]["inference"]["batch"] == 2


def test_bench_run_reuses_the_step_times_recorded_during_fit(tmp_path):
    """bench.training_steps false (the quickstart): no train function is traced again; the
    training column is what metrics.json recorded during fit, and a model without a record
    says so."""
    from kdskin.rundir import ModelRecord, RunDir, RunMetrics

    run = RunDir(tmp_path / "run")
    run.models.mkdir(parents=True)
    for name, kind in (("teacher", "teacher"), ("student_baseline", "student"),
                       ("student_multi_fusion", "student")):
        _stand_in(kind, name).save(run.model(name))
    state = RunMetrics()
    state.models["teacher"] = ModelRecord("teacher", train_step={
        "ms_per_step": 123.5, "steps": 40, "batch": 4, "how": "during fit"})
    state.models["student_multi_fusion"] = ModelRecord("student_multi_fusion", train_step={
        "ms_per_step": 250.0, "steps": 40, "batch": 4, "how": "during fit"})
    run.save_metrics(state)
    cfg = Config(bench=BenchConfig(warmup=0, steps=1, batch_size=4, litert_tool=False))
    assert cfg.bench.training_steps is False  # the default
    result = bench_run(run.root, cfg, show_progress=False)
    training = result["training"]
    assert training["teacher"]["ms_per_step"] == 123.5 and training["teacher"]["steps"] == 40
    assert "recorded during fit" in training["student_multi_fusion"]["what"]
    assert training["student_multi_fusion"]["ms_per_step"] == 250.0
    assert "no step time recorded" in training["student_baseline"]["skipped"]
    rows = {row["model"]: row for row in result["rows"]}
    assert rows["teacher"]["train_ms_step"]["median"] == 123.5
    assert rows["student_baseline"]["train_ms_step"] is None


def test_bench_run_refuses_non_run_dir(tmp_path):
    from kdskin.errors import KdskinError

    with pytest.raises(KdskinError, match="not a run directory"):
        bench_run(Path(tmp_path))


@pytest.mark.slow
def test_litert_tool_cross_check(tmp_path, monkeypatch):
    from kdskin import bench

    files = export_tflite(tiny_classifier(), tmp_path, colour_data(2)[0], kinds=("int8",))
    tool = bench.litert_tool_latency(files["int8"], threads=1, warmup=1, steps=5)
    if "skipped" in tool:  # never silent: the reason names the tools tried
        assert "benchmark" in tool["skipped"]
    else:
        assert tool["threads"] == 1 and tool["num_runs"] == 5
        # a tiny model on a fast machine reads 0.00 ms (the tool's resolution): >= 0, ordered
        assert 0 <= tool["p5_ms"] <= tool["median_ms"] <= tool["p95_ms"]
        checked = bench.cross_check({"ms_per_image": 0.5}, tool)
        if tool["median_ms"] >= bench.TOOL_RESOLUTION_MS:
            assert checked["ratio_kdskin_to_tool"] == pytest.approx(0.5 / tool["median_ms"])
        else:
            assert checked["ratio_kdskin_to_tool"] is None
    monkeypatch.setattr(bench, "BENCHMARK_MODULE", "no_such_module_kdskin")
    monkeypatch.setattr("shutil.which", lambda name: None)
    missing = bench.litert_tool_latency(files["int8"], steps=2)
    assert "no_such_module_kdskin" in missing["skipped"]
    assert "ratio_kdskin_to_tool" not in bench.cross_check({"ms_per_image": 1.0}, missing)


def test_cross_check_below_the_tools_resolution():
    """A median the tool rounds to 0.00 ms gives no ratio and says why (it divided by 0)."""
    from kdskin import bench

    fast = {"tool": "t", "median_ms": 0.0, "avg_ms": 0.0}
    checked = bench.cross_check({"ms_per_image": 0.004}, fast)
    assert checked["ratio_kdskin_to_tool"] is None
    assert "resolution" in checked["ratio_note"] and checked["kdskin_ms_per_image"] == 0.004
    slow = bench.cross_check({"ms_per_image": 3.0}, {"median_ms": 1.5})
    assert slow["ratio_kdskin_to_tool"] == pytest.approx(2.0) and "ratio_note" not in slow


def test_parse_benchmark_model_output():
    from kdskin.bench import _parse_benchmark_model

    text = ("Running benchmark for at least 50 iterations\n"
            "count=50 first=2100 curr=1980 min=1900 max=2500 avg=2000.5 std=80\n")
    parsed = _parse_benchmark_model(text)
    assert parsed["avg_ms"] == pytest.approx(2.0005) and parsed["min_ms"] == 1.9
    assert parsed["num_runs"] == 50
