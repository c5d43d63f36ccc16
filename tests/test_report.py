"""Results tables and documents from metrics.json files (no training here)."""

from __future__ import annotations

import json
import statistics

import pytest

from kdskin.cli import main
from kdskin.report import model_rows, recipe_table, results_document, results_table
from kdskin.rundir import RunMetrics

METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "melanoma_recall")


def _typed(runs: list[dict]) -> list[RunMetrics]:
    return [RunMetrics.from_dict(m) for m in runs]


def _metrics(seed: int, acc: float, protocol: str = "lesion_grouped", bench: bool = True) -> dict:
    def model(value: float, train_ms: float | None) -> dict:
        return {"params": 1000, "size_bytes": 4000,
                "train_step": {"ms_per_step": train_ms} if train_ms else None,
                "test": {k: value for k in METRIC_KEYS},
                "external": {k: value - 0.1 for k in METRIC_KEYS}}

    out = {
        "config": "cpu", "protocol": protocol, "data": "../ham", "image_size": 64,
        "sizes": {"train": 10, "val": 2, "test": 3}, "seed": seed, "wall_seconds": 600.0,
        "majority_class_accuracy": 0.7,
        "models": {"baseline_cnn": model(0.5, 10.0), "reference_cnn": model(0.6, 20.0),
                   "student_baseline": model(acc - 0.1, 50.0),
                   "student_multi_fusion": model(acc, 60.0)},
        "external": {"data": "../isic", "n_images": 300,
                     "tflite": {"int8": {k: acc - 0.11 for k in METRIC_KEYS}}},
        "export": {"evaluation": {"keras": {"accuracy": acc, "macro_f1": acc},
                                  "tflite": {"int8": {**{k: acc - 0.01 for k in METRIC_KEYS},
                                                      "size_bytes": 1000, "agreement": 0.97}}}},
    }
    if bench:
        out["bench"] = {"machine": {"cpu": "Test CPU", "cores": 2},
                        "models": {"student_multi_fusion": {"inference": {"ms_per_step": 7.5}}},
                        "tflite": {"model_int8.tflite": {"timings": [{"ms_per_step": 9.0},
                                                                     {"ms_per_step": 3.0}]}}}
    return out


def test_model_rows_flattens_one_run():
    rows = model_rows(RunMetrics.from_dict(_metrics(42, 0.8)))
    assert set(rows) == {"baseline_cnn", "reference_cnn", "student_baseline",
                         "student_multi_fusion", "int8"}
    assert rows["int8"]["external_accuracy"] == pytest.approx(0.69)
    assert rows["student_multi_fusion"]["train_ms"] == 60.0
    assert rows["student_multi_fusion"]["infer_ms"] == 7.5
    assert rows["int8"]["accuracy"] == pytest.approx(0.79)
    assert rows["int8"]["infer_ms"] == 3.0  # all threads: the last timing
    assert rows["int8"]["size_bytes"] == 1000


def test_results_table_reports_mean_and_std_over_seeds():
    runs = [_metrics(s, a) for s, a in ((42, 0.80), (1, 0.82), (2, 0.84))]
    table = results_table(_typed(runs))
    fused = next(line for line in table.splitlines() if line.startswith("| Multi-stage KD + "
                                                                           "layer fusion |"))
    std = statistics.stdev([0.80, 0.82, 0.84])
    assert f"0.8200 ± {std:.4f}" in fused and fused.rstrip(" |").endswith("0.9588")
    assert "| 3 |" in fused
    single = next(line for line in table.splitlines() if line.startswith("| Baseline CNN"))
    assert "0.5000 ± 0.0000" in single
    assert "Single-stage KD" not in table  # no run has it: no row


def test_the_int8_row_names_the_model_it_was_exported_from():
    """A run without a teacher ships its student alone: the int8 row says so, not "layer
    fusion"; runs before export.json recorded its source read it from the trust stage."""
    alone = _metrics(42, 0.8)
    del alone["models"]["student_multi_fusion"]
    alone["export"]["source_model"] = "student_baseline"
    int8_line = [line for line in results_table(_typed([alone])).splitlines()
                 if "int8 .tflite" in line]
    assert len(int8_line) == 1
    assert int8_line[0].startswith("| Student alone (fused, CE only), int8 .tflite |")
    older = _metrics(1, 0.8)
    older["trust"] = {"model": "student_baseline"}
    assert "| Student alone (fused, CE only), int8 .tflite |" in results_table(_typed([older]))
    fused = results_table(_typed([_metrics(2, 0.8)]))
    assert "| Multi-stage KD + layer fusion, int8 .tflite |" in fused
    mixed = results_table(_typed([alone, _metrics(2, 0.8)]))
    assert "| Exported student, int8 .tflite |" in mixed


def test_reused_teacher_counts_once_and_sizes_are_float_weights():
    runs = [_metrics(s, 0.8) for s in (42, 1, 2)]
    for i, metrics in enumerate(runs):  # the seed runs reuse the first run's teacher
        metrics["models"]["teacher"] = {"params": 500, "size_bytes": 9000,  # + optimizer state
                                        "test": {k: 0.7 for k in METRIC_KEYS}}
        if i:
            metrics["teacher_from"] = "runs/cpu/models/teacher.keras"
    table = results_table(_typed(runs))
    teacher = next(line for line in table.splitlines() if line.startswith("| Teacher"))
    assert teacher.split("|")[-3].strip() == "1"  # runs column: trained once
    from kdskin.report import headline

    runs[0]["models"]["teacher"]["external"] = {k: 0.6 for k in METRIC_KEYS}
    runs[1]["models"]["teacher"]["external"] = {k: 0.6 for k in METRIC_KEYS}
    lines = headline(_typed(runs))
    head = next(line for line in lines if line.startswith("| metric |")).split(" | ")
    column = head.index("teacher")
    auc = next(line for line in lines if line.startswith("| macro AUC | test |")).split(" | ")
    assert auc[column] == "0.7000"  # once, not "0.7000 ± 0.0000" over the reusing runs
    assert "| 500 | 0.00 MB |" in teacher  # params, params x 4 bytes (not the 9000-byte file)
    assert model_rows(_typed(runs)[0])["teacher"]["size_bytes"] == 2000  # params x 4, not the file
    # a group where every run reused a teacher still shows it, once per teacher (the same file
    # reused from two paths is one teacher; another teacher's scores are another)
    runs[2]["teacher_from"] = "runs/cpu_link/models/teacher.keras"
    only_reused = results_table(_typed(runs[1:]))
    assert next(line for line in only_reused.splitlines()
                if line.startswith("| Teacher")).split("|")[-3].strip() == "1"
    runs[2]["models"]["teacher"]["test"] = {k: 0.65 for k in METRIC_KEYS}
    two_teachers = results_table(_typed(runs[1:]))
    assert next(line for line in two_teachers.splitlines()
                if line.startswith("| Teacher")).split("|")[-3].strip() == "2"


def _recipe_rows(table: str) -> list[list[str]]:
    """The recipe table's rows as cells, each settings label replaced by its legend entry."""
    legend = dict(line[4:].split("**: ", 1) for line in table.splitlines()
                  if line.startswith("- **"))
    rows = [line.split(" | ") for line in table.splitlines()[2:] if line.startswith("| ")]
    return [[r[0], legend[r[1]], *r[2:]] for r in rows]


def test_recipe_table_lists_every_trained_model_with_its_settings_and_sets():
    shipped, other = _metrics(42, 0.8), _metrics(1, 0.7)
    shipped["config_values"] = {"student": {"l2": 0.01, "epochs": 18}, "train": {"seed": 42}}
    other["config_values"] = {"student": {"l2": 0.0005, "epochs": 18, "new_key": 2},
                              "train": {"seed": 1}}  # new_key: a setting the first run predates
    for metrics, teacher_from in ((shipped, None), (other, "runs/cpu/models/teacher.keras")):
        metrics["teacher_from"] = teacher_from
        metrics["models"]["teacher"] = {"params": 5, "test": {}, "epochs": 15,
                                        "train_seconds": 600.0,
                                        "val": {"balanced_accuracy": 0.61, "macro_auc": 0.92}}
        metrics["models"]["student_multi_fusion"]["val"] = {"balanced_accuracy": 0.55,
                                                            "macro_auc": 0.9}
    table = recipe_table([("cpu", RunMetrics.from_dict(shipped)),
                          ("x1", RunMetrics.from_dict(other))])
    rows = _recipe_rows(table)
    assert "| cpu | S1 | 42 |" in table and "- **S2**: student.l2=0.0005" in table
    assert [(r[0], r[3]) for r in rows if "Teacher" in r[3]] == [("| cpu", "Teacher (ViT + "
                                                                  "conv hybrid)")]
    teacher = next(r for r in rows if "Teacher" in r[3])
    assert teacher[4:6] == ["0.6100", "0.9200"] and teacher[-2:] == ["15", "10.0 |"]
    fused = [r for r in rows if r[3] == "Multi-stage KD + layer fusion"]
    # the seed has its own column, not a setting
    assert [r[1] for r in fused] == ["as the first run", "student.l2=0.0005"]
    assert fused[1][2] == "1" and fused[1][6] == "0.7000" and fused[1][8] == "0.6000"
    assert fused[0][4] == "0.5500" and fused[0][-1] == "– |"  # no train time recorded


def test_results_document_groups_protocols_and_keeps_json(tmp_path):
    paths = []
    for name, metrics in (("cpu", _metrics(42, 0.8)), ("cpu_seed1", _metrics(1, 0.84, bench=False)),
                          ("leaky", _metrics(42, 0.95, protocol="paper"))):
        run = tmp_path / name
        (run / "plots").mkdir(parents=True)
        if name == "cpu":
            metrics["explanations"] = {"methods": ["lime"],
                                       "entries": [{"image": "ISIC_0000001", "file": "x.png"}]}
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "plots" / "student_multi_fusion_confusion.png").write_bytes(b"png")
        (run / "plots" / "student_multi_fusion_roc.png").write_bytes(b"png")
        paths.append(run)
    out = tmp_path / "docs" / "RESULTS.md"
    results_document(paths, out, tmp_path / "docs" / "results", command="kdskin report ...")
    text = out.read_text()
    assert text.count("## cpu:") == 2 and "LEAKY" in text
    assert "training seeds 42, 1" in text and "Test CPU, 2 cores" in text
    assert "0.8200 ± " in text  # the two lesion-grouped runs averaged
    assert "## Headline" in text and "LEAKY protocol" in text
    assert "## Recipe study" in text
    assert ("| leaky | S1 | 42 | Multi-stage KD + layer fusion | n/a | n/a | "
            "0.9500 |") in text and "- **S1**: as the first run" in text
    assert "Majority-class accuracy of the test split: leaky 0.7000, honest 0.7000" in text
    # no targets given: figures only, no verdicts and no thresholds of the library's own
    assert "Targets" not in text and "met**" not in text and "at least" not in text
    # the int8 file's external 0.71 (mean of 0.69, 0.73) minus the reference's 0.50
    assert ("- the int8 file minus the strong plain reference, external means: balanced "
            "accuracy +0.2100, AUC +0.2100") in text
    assert "| balanced acc. | external | 0.7100 ± 0.0283 |" in text
    # Keras student external 0.70 / 0.74 vs reference 0.50 / 0.50 (two seeds each)
    assert ("- over training seeds, the Keras distilled student (2 runs) minus the strong plain "
            "reference (2 runs), external means: balanced accuracy +0.2200 (std of one seed: "
            "student 0.0283, reference 0.0000); AUC +0.2200") in text
    assert "| Multi-stage KD + layer fusion | +0.1300" in text  # leaky 0.95 - honest 0.82
    assert (tmp_path / "docs" / "results" / "cpu_seed1.json").is_file()
    kept = json.loads((tmp_path / "docs" / "results" / "cpu.json").read_text())
    assert kept["explanations"] == {"methods": ["lime"]}  # per-image entries are not kept
    assert (tmp_path / "docs" / "results" / "cpu" / "student_multi_fusion_confusion.png").is_file()
    assert not (tmp_path / "docs" / "results" / "cpu" / "student_multi_fusion_roc.png").exists()
    assert "results/cpu/student_multi_fusion_confusion.png" in text
    # regenerate from the saved JSON alone: same tables
    again = tmp_path / "again.md"
    results_document(sorted((tmp_path / "docs" / "results").glob("*.json")), again)
    for line in text.splitlines():
        if line.startswith("| Multi-stage KD + layer fusion |"):
            assert line in again.read_text()


def test_report_targets_file_gives_verdicts(tmp_path):
    for seed, acc in ((42, 0.8), (1, 0.84)):
        (tmp_path / f"r{seed}").mkdir()
        (tmp_path / f"r{seed}" / "metrics.json").write_text(json.dumps(_metrics(seed, acc)))
    runs = [str(tmp_path / "r42"), str(tmp_path / "r1")]
    targets = tmp_path / "targets.yaml"
    # flat and nested keys; the int8 file's external means are 0.71, test 0.81
    targets.write_text("external.balanced_accuracy: 0.65\nexternal:\n  macro_auc: 0.92\n"
                       "test.melanoma_recall: 0.81\n")
    out = tmp_path / "RESULTS.md"
    assert main(["report", *runs, "--out", str(out), "--targets", str(targets)]) == 0
    text = out.read_text()
    assert f"Targets (int8 file, from `{targets}`):" in text
    assert "- external balanced acc. at least 0.65: 0.7100 (+0.0600): **met**" in text
    assert "- external macro AUC at least 0.92: 0.7100 (-0.2100): **NOT met**" in text
    assert "- test melanoma recall at least 0.81: 0.8100 (+0.0000): **met**" in text
    assert text.count("met**") == 3 and f"--targets {targets}" in text
    # JSON reads the same; a target no run has a figure for is n/a, not met
    as_json = tmp_path / "targets.json"
    as_json.write_text(json.dumps({"external.balanced_accuracy": 0.75}))
    no_external = _metrics(42, 0.8)
    del no_external["external"]
    (tmp_path / "r0").mkdir()
    (tmp_path / "r0" / "metrics.json").write_text(json.dumps(no_external))
    results_document([tmp_path / "r0"], out, targets=as_json)
    assert "- external balanced acc. at least 0.75: n/a: **n/a**" in out.read_text()


@pytest.mark.parametrize("content,message", [
    (None, "cannot read the targets file"),
    ("external.balanced_accuracy: [0.65", "not YAML or JSON"),
    ("- 0.65\n", "not a mapping of targets"),
    ("external.accuracy_top5: 0.9\n", "unknown target 'external.accuracy_top5'"),
    ("val.macro_auc: 0.9\n", "unknown target 'val.macro_auc'"),
    ("external.macro_auc: high\n", "target external.macro_auc is 'high', not a number"),
    ("external.macro_auc: true\n", "not a number"),
])
def test_report_bad_targets_file_is_one_line_error(tmp_path, capsys, content, message):
    run = tmp_path / "cpu"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_metrics(42, 0.8)))
    targets = tmp_path / "targets.yaml"
    if content is not None:
        targets.write_text(content)
    out = tmp_path / "RESULTS.md"
    assert main(["report", str(run), "--out", str(out), "--targets", str(targets)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(targets) in err and message in err
    assert "--targets" in err or "SET.METRIC: MINIMUM" in err  # says what to do
    assert not out.exists()  # checked before anything is written


def test_report_command_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.md")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", str(bad), "--out", str(tmp_path / "r.md")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_report_adds_faithfulness_of_an_explain_folder(tmp_path, capsys):
    run = tmp_path / "cpu"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_metrics(42, 0.8)))
    explain = tmp_path / "explain_cpu"
    explain.mkdir()
    methods = {name: {"deletion_auc": d, "deletion_auc_std": 0.1, "insertion_auc": i,
                      "insertion_auc_std": 0.2, "verdict": v}
               for name, d, i, v in (("gradcam", 0.25, 0.61, "better than random"),
                                     ("random", 0.48, 0.49, "reference"))}
    (explain / "faithfulness.json").write_text(json.dumps(
        {"steps": 20, "baseline": "blur", "margin": 0.02, "n_images": 49, "methods": methods}))
    (explain / "explanations.json").write_text(json.dumps({"model": "runs/cpu/models/s.keras"}))
    (explain / "faithfulness.png").write_bytes(b"png")
    out, results = tmp_path / "docs" / "RESULTS.md", tmp_path / "docs" / "results"
    assert main(["report", str(run), "--out", str(out), "--results-dir", str(results),
                 "--explain", str(explain)]) == 0
    text = out.read_text()
    assert "## Explanations: faithfulness (explain_cpu)" in text
    assert "| gradcam | 0.250 +/- 0.100 | 0.610 +/- 0.200 | better than random |" in text
    assert "`runs/cpu/models/s.keras`" in text and "--explain " in text
    kept = results / "explain" / "explain_cpu.json"
    assert kept.is_file() and (results / "explain" / "explain_cpu_faithfulness.png").is_file()
    # regenerated from the kept JSON: the same table
    again = tmp_path / "again.md"
    assert main(["report", str(results / "cpu.json"), "--out", str(again),
                 "--explain", str(kept)]) == 0
    assert "| gradcam | 0.250 +/- 0.100 | 0.610 +/- 0.200 | better than random |" in \
        again.read_text()
    assert main(["report", str(run), "--out", str(again), "--explain",
                 str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err


def test_export_table_shows_ties_head_and_previous_export():
    from kdskin.report import export_table

    export = _metrics(42, 0.8)["export"]
    export["evaluation"]["tflite"]["int8"]["top1_ties"] = 3
    export["int8"] = {"head": "float", "float_ops": ["ADD", "MUL", "ADD", "SOFTMAX"]}
    export["conversion"] = {"centred_convs": ["cnn_block_1_conv", "stem_conv"]}
    export["previous"] = {"int8": {"accuracy": 0.7296, "macro_f1": 0.5119, "agreement": 0.9654}}
    export["reexported_at"] = "2026-11-25T23:50:00+0000"
    text = export_table(export)
    row = next(line for line in text.splitlines() if line.startswith("| model_int8"))
    assert row.split(" | ")[-2] == "3"  # the ties column
    assert "float32 head (ADD, MUL, ADD, SOFTMAX)" in text
    assert "centred (x - 128): cnn_block_1_conv, stem_conv" in text
    assert "accuracy 0.7296, macro F1 0.5119, top-1 agreement 0.9654" in text
    export["int8"] = {"head": "int8", "float_ops": []}
    del export["previous"]
    assert "all-integer" in export_table(export) and "Re-exported" not in export_table(export)


def test_runs_group_by_data_folder_name_and_split_sizes_not_the_typed_path():
    from kdskin.report import experiment_key

    relative, absolute, other = _metrics(42, 0.8), _metrics(43, 0.8), _metrics(44, 0.8)
    relative["data"], absolute["data"] = "../shared/data/ham10000", "/work/shared/data/ham10000/"
    other["data"] = "/work/shared/data/ham10000"
    other["sizes"] = {"train": 11, "val": 2, "test": 2}  # another split of it: another experiment
    keys = [experiment_key(m) for m in _typed([relative, absolute, other])]
    assert keys[0] == keys[1] and keys[2] != keys[0]
    elsewhere = _metrics(45, 0.8)
    elsewhere["data"] = "/data/isic2019"
    assert experiment_key(_typed([elsewhere])[0]) != keys[0]


def test_runs_on_one_split_group_and_runs_on_another_split_of_one_folder_do_not():
    from kdskin.report import experiment_key

    here, there, resplit = _metrics(42, 0.8), _metrics(43, 0.8), _metrics(44, 0.8)
    here["data"], there["data"] = "../shared/data/ham10000", "/mnt/copy/of/it"
    resplit["data"] = here["data"]  # same folder and split sizes, other images per split
    here["split_digest"] = there["split_digest"] = "e87549be94b36396"
    resplit["split_digest"] = "0123456789abcdef"
    keys = [experiment_key(m) for m in _typed([here, there, resplit])]
    assert keys[0] == keys[1] and keys[2] != keys[0]


def test_a_setting_a_run_predates_takes_the_default_when_grouping():
    from kdskin.config import Config
    from kdskin.report import experiment_key

    old, new, changed = _metrics(42, 0.8), _metrics(43, 0.8), _metrics(44, 0.8)
    values = Config().to_dict()
    new["config_values"] = values
    old["config_values"] = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    del old["config_values"]["data"]["logit_adjust_tau"]  # made before the setting existed
    changed["config_values"] = {**values, "data": {**values["data"], "logit_adjust_tau": 0.5}}
    keys = [experiment_key(m) for m in _typed([old, new, changed])]
    assert keys[0] == keys[1] and keys[2] != keys[0]


def test_the_builtin_datasets_size_does_not_part_repeats():
    """data.synth is part of the data (the split digest holds it): a cpu.yaml run made before
    the quickstart's dataset shrank is still a repeat of one made after."""
    from kdskin.config import Config
    from kdskin.report import experiment_key

    values = Config().to_dict()
    before, after, other = _metrics(42, 0.8), _metrics(43, 0.8), _metrics(44, 0.8)
    after["config_values"] = values
    before["config_values"] = {**values, "data": {**values["data"], "synth": {
        **values["data"]["synth"], "n_images": 900}}}
    other["config_values"] = {**values, "data": {**values["data"], "image_size": 64}}
    keys = [experiment_key(m) for m in _typed([before, after, other])]
    assert keys[0] == keys[1] and keys[2] != keys[0]


def test_settings_that_do_nothing_do_not_part_repeats():
    """teacher.conv_filters sizes a ConvNeXt branch but no EfficientNet-Lite one: two
    EfficientNet-Lite teachers differing only there are one experiment, two ConvNeXt ones are
    two; a ViT setting is inert only without the ViT branch."""
    from kdskin.config import Config
    from kdskin.report import experiment_key, experiment_settings

    def run(seed: int, **teacher) -> dict:
        m, values = _metrics(seed, 0.8), Config().to_dict()
        m["config_values"] = {**values, "teacher": {**values["teacher"], **teacher}}
        return m

    lite = {"conv_branch": "efficientnet_lite", "conv_weights": "none"}
    keys = [experiment_key(m) for m in _typed([
        run(42, **lite, conv_filters=96), run(43, **lite, conv_filters=64),
        run(44, conv_filters=96), run(45, conv_filters=64),
        run(46, **lite, num_heads=2), run(47, **lite, vit_depth=0, num_heads=2),
        run(48, **lite, vit_depth=0, num_heads=8)])]
    assert keys[0] == keys[1] and keys[2] != keys[3]
    assert keys[4] != keys[0] and keys[5] == keys[6]
    settings = experiment_settings(_typed([run(42, **lite)])[0])
    assert "teacher.conv_kernel" not in settings and "teacher.conv_variant" in settings
    assert "teacher.conv_variant" not in experiment_settings(_typed([run(43)])[0])


def test_a_student_of_another_teacher_is_another_experiment():
    from kdskin.config import Config
    from kdskin.report import experiment_key

    values = Config().to_dict()
    trained, seed, longer, loose = (_metrics(s, 0.8) for s in (42, 43, 42, 42))
    for m in (trained, seed, longer, loose):
        m["config_values"] = values  # one config file, as typed: the teacher section says 20
    seed["teacher_from"] = longer["teacher_from"] = "runs/x/models/teacher.keras"
    seed["teacher_settings"] = dict(values["teacher"])  # the first run's own teacher
    longer["teacher_settings"] = {**values["teacher"], "epochs": 40}
    loose["teacher_from"] = "teacher.keras"
    loose["teacher_settings"] = {"source": "teacher.keras"}
    keys = [experiment_key(m) for m in _typed([trained, seed, longer, loose])]
    assert keys[0] == keys[1] and len({keys[0], keys[2], keys[3]}) == 3
    table = recipe_table([(f"r{i}", m) for i, m in
                          enumerate(_typed([trained, seed, longer, loose]))])
    settings = [r[1] for r in _recipe_rows(table) if "Multi-stage KD + layer fusion" in r[3]]
    assert settings[:2] == ["as the first run"] * 2
    assert settings[2] == "teacher.epochs=40" and settings[3].startswith("teacher.source=")


def test_run_report_says_how_a_reused_teacher_was_trained(tmp_path):
    from kdskin.report import run_report

    metrics = _metrics(43, 0.8)
    metrics["config_values"] = {"teacher": {"epochs": 20, "vit_depth": 2}}
    metrics["teacher_from"] = "runs/long/models/teacher.keras"
    lines = {}
    for case, recorded in (("longer", {"epochs": 40, "vit_depth": 2}),
                           ("same", {"epochs": 20, "vit_depth": 2}),
                           ("loose", {"source": "t.keras"}), ("old", {})):
        metrics["teacher_settings"] = recorded
        (tmp_path / "metrics.json").write_text(json.dumps(metrics))
        lines[case] = next(line for line in run_report(tmp_path).splitlines()
                           if line.startswith("- teacher reused from"))
    assert lines["longer"].endswith("(not retrained); trained with teacher.epochs=40 (this "
                                    "run's config: teacher.epochs=20)")
    assert lines["same"].endswith("; trained with this run's teacher settings")
    assert lines["loose"].endswith("its training settings are unknown (a file from outside a run)")
    assert lines["old"].endswith("(not retrained)")


def test_run_report_gives_the_teacher_offset_when_fitted(tmp_path):
    from kdskin.report import run_report

    metrics = _metrics(42, 0.8)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert "teacher's targets" not in run_report(tmp_path)
    metrics["teacher_offset"] = {"tau": 1.05, "offsets": [0.0] * 7,
                                 "balanced_accuracy_before": 0.6229,
                                 "balanced_accuracy_after": 0.6834}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    line = next(line for line in run_report(tmp_path).splitlines()
                if line.startswith("- teacher's targets"))
    assert "tau 1.05" in line and "0.6229 -> 0.6834" in line


def _with_shifts(metrics: dict) -> dict:
    def suite(clean: float, blur: float, flagged: float) -> dict:
        rows = {"clean": {"balanced_accuracy": clean, "macro_auc": 0.9,
                          "melanoma_recall": 0.7, "flagged": 0.05},
                "blur": {"balanced_accuracy": blur, "macro_auc": 0.85,
                         "melanoma_recall": 0.5, "flagged": flagged}}
        for row in rows.values():
            row["drop"] = {k: rows["clean"][k] - row[k]
                           for k in ("balanced_accuracy", "macro_auc", "melanoma_recall")}
        return {"n_images": 300, "shifts": rows}

    metrics["external"]["shifts"] = {"student_multi_fusion": suite(0.6, 0.45, 0.3),
                                     "model_int8.tflite": suite(0.58, 0.5, 0.3)}
    return metrics


def test_shift_table_in_the_run_report_and_the_results_document(tmp_path):
    from kdskin.report import run_report, shift_table

    metrics = RunMetrics.from_dict(_with_shifts(_metrics(42, 0.8)))
    table = shift_table(metrics).splitlines()
    assert table[0] == ("| shift | Multi-stage KD + layer fusion | model_int8.tflite | "
                        "out-of-scope share |")
    assert table[2] == "| `clean` | 0.600 / 0.900 / 0.70 | 0.580 / 0.900 / 0.70 | 0.05 |"
    # the change from clean comes from the stored drop: 0.45 - 0.60, 0.50 - 0.58
    assert table[3] == ("| `blur` | 0.450 (-0.150) / 0.850 / 0.50 | 0.500 (-0.080) / 0.850 / "
                        "0.50 | 0.30 |")
    assert shift_table(RunMetrics.from_dict(_metrics(42, 0.8))) == ""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_with_shifts(_metrics(42, 0.8))))
    assert "## External set under acquisition shifts" in run_report(run)
    out = tmp_path / "RESULTS.md"
    results_document([run / "metrics.json"], out)
    assert "Acquisition-shift suite of" in out.read_text()
    assert "| `blur` | 0.450 (-0.150) / 0.850 / 0.50 |" in out.read_text()


def test_shift_table_shows_melanoma_auc_when_recorded():
    from kdskin.report import shift_table

    metrics = _with_shifts(_metrics(42, 0.8))
    for suite in metrics["external"]["shifts"].values():
        suite["shifts"]["clean"]["melanoma_auc"] = 0.83
        suite["shifts"]["blur"]["melanoma_auc"] = None  # NaN on disk: no melanoma image
    table = shift_table(RunMetrics.from_dict(metrics)).splitlines()
    assert table[2] == ("| `clean` | 0.600 / 0.900 / 0.70 / 0.830 | 0.580 / 0.900 / 0.70 / "
                        "0.830 | 0.05 |")
    assert table[3].startswith("| `blur` | 0.450 (-0.150) / 0.850 / 0.50 / n/a |")


def test_external_table_has_melanoma_auc_when_recorded():
    from kdskin.report import external_table

    metrics = _metrics(42, 0.8)
    assert "mel. AUC" not in external_table(RunMetrics.from_dict(metrics))  # older runs
    metrics["external"]["tflite"]["int8"]["melanoma_auc"] = 0.8123
    lines = external_table(RunMetrics.from_dict(metrics)).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    col = head.index("external mel. AUC")
    int8 = next(line for line in lines if line.startswith("| model_int8.tflite"))
    cells = [c.strip() for c in int8.strip("|").split("|")]
    assert cells[col] == "0.8123"
    other = [c.strip() for c in lines[2].strip("|").split("|")]  # a Keras model without it
    assert len(other) == len(head) and other[col] not in ("0.8123", "")


def test_memory_section_tabulates_stage_peaks_outside_the_experiments(tmp_path, capsys):
    """kdskin report --memory: one column per run in pipeline order, the run's peak and its
    stage; the run is kept under results/memory/ and is not counted as a seed of its recipe."""
    quick = {**_metrics(42, 0.8), "stage_peak_rss_mib": {
        "data": 700.0, "baseline_cnn": 900.0, "teacher": 1300.0, "export": 1500.5},
        "peak_rss_method": "VmHWM, reset per stage"}
    cpu = {**_metrics(42, 0.9), "stage_peak_rss_mib": {
        "data": 1400.0, "teacher": 4600.0, "trust": 4500.0, "export": 5600.0},
        "sizes": {"train": 7000, "val": 1500, "test": 1515}}
    runs = []
    for name, metrics in (("memq", quick), ("memcpu", cpu)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
        runs.append(str(tmp_path / name))
    seed = tmp_path / "cpu"
    seed.mkdir()
    (seed / "metrics.json").write_text(json.dumps(_metrics(42, 0.8)))
    out, results = tmp_path / "RESULTS.md", tmp_path / "results"
    assert main(["report", str(seed), "--out", str(out), "--results-dir", str(results),
                 "--memory", runs[0], "--memory", runs[1]]) == 0
    text = out.read_text()
    assert "training seeds 42)" in text  # the memory runs are not seeds of the experiment
    section = text[text.index("## Peak memory by stage"):]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[0] == "| stage | memq | memcpu |"
    assert [line.split(" | ")[0] for line in lines[1:6]] == [
        "| data", "| baseline_cnn", "| teacher", "| trust", "| export"]
    assert "| baseline_cnn | 900 | - |" in section and "| export | 1,500 | 5,600 |" in section
    assert "| **run peak** | **1,500** | **5,600** |" in section
    assert "| at stage | export | export |" in section
    assert "| images | 15 | 10,015 |" in section
    assert "Method: VmHWM, reset per stage." in section
    assert "--memory" in text.splitlines()[2]  # the command that made it
    assert (results / "memory" / "memcpu.json").is_file()
    assert not (results / "memcpu.json").exists()
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_memory.py"
    printed = subprocess.run([sys.executable, str(tool), *runs], capture_output=True,
                             text=True, check=True).stdout
    assert "| **run peak** | **1,500** | **5,600** |" in printed  # the same table
    assert printed.rstrip().endswith("method: VmHWM, reset per stage")
    no_peaks = tmp_path / "old"
    no_peaks.mkdir()
    (no_peaks / "metrics.json").write_text(json.dumps(_metrics(1, 0.8)))
    capsys.readouterr()
    assert main(["report", str(seed), "--out", str(tmp_path / "r2.md"),
                 "--memory", str(no_peaks)]) == 2
    err = capsys.readouterr().err
    assert "old: no per-stage peak memory recorded" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r2.md").exists()
