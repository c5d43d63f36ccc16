"""The run directory: paths, the final-student rule, and metrics.json read back typed."""

import json
from pathlib import Path

import pytest

from kdskin.errors import KdskinError
from kdskin.rundir import (
    METRICS_SCHEMA,
    ModelRecord,
    RunDir,
    RunMetrics,
    final_student_name,
    load_metrics,
    reused_teacher_settings,
    split_digest,
    student_name,
)

ROOT = Path(__file__).resolve().parents[1]


def test_final_student_rule():
    assert final_student_name(["baseline", "single", "multi", "multi_fusion"]) == \
        "student_multi_fusion"
    assert final_student_name(["multi_fusion", "single"]) == "student_multi_fusion"
    assert final_student_name(["baseline", "single"]) == "student_single"
    assert final_student_name([]) is None
    assert student_name("multi") == "student_multi"


def test_paths_and_run_of_a_model(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.model("teacher") == tmp_path / "r" / "models" / "teacher.keras"
    assert run.plot("teacher", "history") == tmp_path / "r" / "plots" / "teacher_history.png"
    assert run.backup("x").parent.name == "backup"
    run.models.mkdir(parents=True)
    model = run.model("teacher")
    model.write_bytes(b"x")
    assert RunDir.of_model(model) is None  # no config.yaml: not a run
    run.config.write_text("name: t\n")
    assert RunDir.of_model(model) == RunDir(run.root.resolve())
    assert RunDir.of_model(tmp_path / "elsewhere" / "m.keras") is None
    with pytest.raises(KdskinError, match="not a finished run"):
        run.require_finished()


def test_metrics_round_trip(tmp_path):
    run = RunDir(tmp_path)
    metrics = RunMetrics(config="tiny", image_size=32, sizes={"train": 3, "val": 1, "test": 1})
    metrics.models["teacher"] = ModelRecord(name="teacher", params=10, test={"accuracy": 0.5})
    metrics.export = {"evaluation": {"tflite": {"int8": {"accuracy": 0.4}}}}
    run.save_metrics(metrics)
    back = run.load_metrics()
    assert back == metrics
    assert back.int8_result() == {"accuracy": 0.4}
    assert json.loads(run.metrics.read_text())["schema"] == METRICS_SCHEMA


def test_old_metrics_files_load_with_every_section(tmp_path):
    old = ROOT / "docs" / "results" / "prev_cpu.json"  # written before metrics.json had a schema
    if not old.is_file():
        pytest.skip("docs/results/prev_cpu.json not in this checkout")
    metrics = load_metrics(old)
    assert metrics.schema == 1 and metrics.models["teacher"].test["accuracy"] > 0
    assert metrics.external == {} and metrics.models["teacher"].external == {}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(KdskinError, match="not valid JSON"):
        load_metrics(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(KdskinError, match="no 'models'"):
        load_metrics(tmp_path / "other.json")


def test_reused_teacher_settings_follow_the_run_that_trained_it(tmp_path):
    trainer = RunDir(tmp_path / "long")
    trainer.models.mkdir(parents=True)
    trainer.config.write_text("name: long\n")
    trainer.save_metrics(RunMetrics(config="long", config_values={
        "teacher": {"epochs": 40, "vit_depth": 2}, "train": {"seed": 42}}))
    teacher = trainer.model("teacher")
    assert reused_teacher_settings(teacher) == {"epochs": 40, "vit_depth": 2}
    # a run that itself reused that teacher passes on what it recorded, not its own config
    student = RunDir(tmp_path / "student")
    student.models.mkdir(parents=True)
    student.config.write_text("name: s\n")
    student.save_metrics(RunMetrics(config="s", config_values={"teacher": {"epochs": 20}},
                                    teacher_from=str(teacher),
                                    teacher_settings={"epochs": 40, "vit_depth": 2}))
    assert reused_teacher_settings(student.model("teacher")) == {"epochs": 40, "vit_depth": 2}
    # origin unknown: a file outside a run, or a reusing run that did not record it
    loose = tmp_path / "teacher.keras"
    assert reused_teacher_settings(loose) == {"source": str(loose)}
    student.save_metrics(RunMetrics(config="s", teacher_from="elsewhere/teacher.keras"))
    assert reused_teacher_settings(student.model("teacher")) == {
        "source": str(student.model("teacher"))}
    back = student.load_metrics()
    assert back.teacher_settings == {}


def test_split_digest_is_which_image_is_in_which_split(tmp_path):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one.write_text("image_id,lesion_id,dx,split\nA,L1,nv,train\nB,L2,mel,val\nC,L3,bkl,test\n")
    # row order and other columns do not count
    two.write_text("split,image_id\ntest,C\ntrain,A\nval,B\n")
    digest = split_digest(one)
    assert len(digest) == 16 and digest == split_digest(two)
    two.write_text("split,image_id\ntest,C\nval,A\ntrain,B\n")  # two images swapped
    assert split_digest(two) != digest
    two.write_text("image_id,dx\nA,nv\n")
    assert split_digest(two) == "" and split_digest(tmp_path / "absent.csv") == ""


def test_a_run_made_before_the_digest_was_recorded_gets_it_from_its_split(tmp_path):
    run = RunDir(tmp_path / "old")
    run.root.mkdir()
    run.config.write_text("name: old\n")
    run.save_metrics(RunMetrics(config="old"))
    assert run.load_metrics().split_digest == ""  # no split.csv: nothing to fingerprint
    run.split.write_text("image_id,split\nA,train\nB,test\n")
    assert run.load_metrics().split_digest == split_digest(run.split) != ""
    assert json.loads(run.metrics.read_text())["split_digest"] == ""  # the file is not touched
