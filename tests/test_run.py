"""End to end: `kdskin run` on a tiny generated dataset with the tiny config."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kdskin.cli import main

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
pytestmark = pytest.mark.slow


GATE: list[int] = []  # sizes of the data the teacher gate saw


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import kdskin.distill.distiller as distiller

    out = tmp_path_factory.mktemp("run") / "tiny"
    real_gate = distiller.check_teacher_trained

    def gate(teacher, data, majority=None):
        GATE.append(len(data[1]))
        return real_gate(teacher, data, majority)

    old_umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(distiller, "check_teacher_trained", gate)
            assert main(["run", "--config", str(TINY), "--out", str(out)]) == 0
    finally:
        os.umask(old_umask)
    return out


def test_written_files_follow_the_umask(run_dir):
    for rel in ["metrics.json", "report.md", "config.yaml", "split.csv", "tflite/labels.txt",
                "tflite/model_int8.tflite", "tflite/export.json", "models/teacher.keras",
                "plots/teacher_history.png", "bench.json"]:
        mode = stat.S_IMODE((run_dir / rel).stat().st_mode)
        assert mode == 0o644, (rel, oct(mode))


def test_teacher_gate_reads_the_validation_split(run_dir):
    sizes = json.loads((run_dir / "metrics.json").read_text())["sizes"]
    assert GATE == [sizes["val"]]


def test_evaluate_tflite_does_not_import_tensorflow(run_dir, tmp_path):
    code = ("import sys\nfrom kdskin.cli import main\n"
            f"rc = main(['evaluate', '--model', {str(run_dir / 'tflite' / 'model_int8.tflite')!r},"
            f" '--data', {str(run_dir / 'data')!r}, '--json', {str(tmp_path / 'e.json')!r}])\n"
            "assert rc == 0, rc\nassert 'tensorflow' not in sys.modules\n"
            "assert 'keras' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "e.json").read_text())
    sizes = json.loads((run_dir / "metrics.json").read_text())["sizes"]
    assert result["split"] == "test" and result["n_images"] == sizes["test"]


def test_run_directory_layout(run_dir):
    for rel in ["config.yaml", "split.csv", "metrics.json", "report.md", "bench.json",
                "data/HAM10000_metadata.csv",
                "tflite/model_fp32.tflite", "tflite/model_dynamic.tflite",
                "tflite/model_int8.tflite", "tflite/labels.txt", "tflite/export.json",
                "plots/teacher_history.png", "plots/student_multi_fusion_confusion.png"]:
        assert (run_dir / rel).is_file(), rel
    for name in ["teacher", "baseline_cnn", "student_baseline", "student_single",
                 "student_multi", "student_multi_fusion"]:
        assert (run_dir / "models" / f"{name}.keras").is_file(), name
    assert not list(run_dir.rglob("*.tmp*")), "temporary files left behind"


def test_metrics_json_has_every_model_and_metric(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["protocol"] == "lesion_grouped"
    assert metrics["machine"]["cores"] >= 1 and metrics["machine"]["cpu"]  # even without bench
    for name, entry in metrics["models"].items():
        assert entry["params"] > 0 and entry["size_bytes"] > 0, name
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc",
                    "melanoma_recall", "confusion_matrix", "per_class"):
            assert key in entry["test"], (name, key)


def test_export_json_records_int8_head_and_centring(run_dir):
    export = json.loads((run_dir / "tflite" / "export.json").read_text())
    temperature = json.loads((run_dir / "metrics.json").read_text())["trust"]["rules"][
        "temperature"]
    assert export["decision"]["temperature"] == temperature and temperature != 1.0
    # The fused student's head: exits average (ADD, MUL), + fusion logits (ADD), the folded
    # calibration temperature (MUL), softmax.
    assert sorted(export["int8"]["float_ops"]) == ["ADD", "ADD", "MUL", "MUL", "SOFTMAX"]
    assert export["int8"]["head"] == "float"
    assert sorted(export["conversion"]["centred_convs"]) == ["cnn_block_1_conv", "stem_conv"]
    assert export["evaluation"]["tflite"]["int8"]["top1_ties"] <= 1


def test_report_names_protocol_and_has_table(run_dir):
    report = (run_dir / "report.md").read_text()
    assert "lesion-grouped" in report
    assert "Multi-stage KD + layer fusion" in report and "int8" in report


def test_loss_terms_logged_per_stage(run_dir):
    header = (run_dir / "logs" / "student_multi_fusion.csv").read_text().splitlines()[0]
    for term in ("loss_ce", "loss_kd", "loss_exits"):
        assert term in header, term


def test_existing_run_dir_is_refused(run_dir, capsys):
    assert main(["run", "--config", str(TINY), "--out", str(run_dir)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_reuses_finished_models_and_adds_up_wall_time(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = json.loads((copy / "metrics.json").read_text())
    assert main(["run", "--config", str(TINY), "--out", str(copy), "--resume",
                 "--set", "export.enabled=false", "--set", "bench.enabled=false",
                 "--set", "explain.enabled=false"]) == 0
    after = json.loads((copy / "metrics.json").read_text())
    assert set(after["models"]) == set(before["models"])
    for name, entry in before["models"].items():  # nothing retrained: same files, same scores
        assert after["models"][name]["test"] == entry["test"], name
        assert after["models"][name]["train_seconds"] == entry["train_seconds"], name
    assert after["resumed"] == 1
    assert after["wall_seconds"] >= before["wall_seconds"] > 0


def test_reexport_updates_the_run_only(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = json.loads((copy / "metrics.json").read_text())
    assert main(["export", "--run", str(copy), "--set", "export.int8_head=int8"]) == 0
    out = capsys.readouterr().out
    assert "int8 vs Keras on" in out and "top-1 agreement" in out
    after = json.loads((copy / "metrics.json").read_text())
    assert after["models"] == before["models"] and after["wall_seconds"] == before["wall_seconds"]
    export = after["export"]
    assert export["int8"]["head"] == "int8" and export["int8"]["float_ops"] == []
    assert export["previous"]["int8"] == {
        k: before["export"]["evaluation"]["tflite"]["int8"][k]
        for k in ("accuracy", "macro_f1", "macro_auc", "agreement")}
    assert json.loads((copy / "tflite" / "export.json").read_text()) == export
    assert not list(copy.rglob("*.tmp*"))


def test_bench_update_records_in_the_run(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "bench.json").unlink()
    assert main(["bench", "--run", str(copy), "--update", "--set", "bench.steps=3",
                 "--set", "bench.warmup=1"]) == 0
    bench = json.loads((copy / "bench.json").read_text())
    # the run's config.yaml sets the batch size (tiny.yaml: 8), --set the rest
    assert bench["settings"]["batch"] == 8 and bench["settings"]["steps"] == 3
    assert json.loads((copy / "metrics.json").read_text())["bench"] == bench
    assert any(row["model"] == "model_int8.tflite" for row in bench["rows"])


@pytest.mark.parametrize("argv", [["export"], ["export", "--run", "."],
                                  ["export", "--run", "x", "--model", "m.keras"]])
def test_export_argument_errors(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
