"""Results tables and documents from metrics.json files (no training here)."""

from __future__ import annotations

import json
import statistics

import pytest

from kdskin.cli import main
from kdskin.report import model_rows, results_document, results_table

METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "melanoma_recall")


def _metrics(seed: int, acc: float, protocol: str = "lesion_grouped", bench: bool = True) -> dict:
    def model(value: float, train_ms: float | None) -> dict:
        return {"params": 1000, "size_bytes": 4000,
                "train_step": {"ms_per_step": train_ms} if train_ms else None,
                "test": {k: value for k in METRIC_KEYS}}

    out = {
        "config": "cpu", "protocol": protocol, "data": "../ham", "image_size": 64,
        "sizes": {"train": 10, "val": 2, "test": 3}, "seed": seed, "wall_seconds": 600.0,
        "majority_class_accuracy": 0.7,
        "models": {"baseline_cnn": model(0.5, 10.0), "student_baseline": model(acc - 0.1, 50.0),
                   "student_multi_fusion": model(acc, 60.0)},
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
    rows = model_rows(_metrics(42, 0.8))
    assert set(rows) == {"baseline_cnn", "student_baseline", "student_multi_fusion", "int8"}
    assert rows["student_multi_fusion"]["train_ms"] == 60.0
    assert rows["student_multi_fusion"]["infer_ms"] == 7.5
    assert rows["int8"]["accuracy"] == pytest.approx(0.79)
    assert rows["int8"]["infer_ms"] == 3.0  # all threads: the last timing
    assert rows["int8"]["size_bytes"] == 1000


def test_results_table_reports_mean_and_std_over_seeds():
    runs = [_metrics(s, a) for s, a in ((42, 0.80), (1, 0.82), (2, 0.84))]
    table = results_table(runs)
    fused = next(line for line in table.splitlines() if line.startswith("| Multi-stage KD + "
                                                                           "layer fusion |"))
    std = statistics.stdev([0.80, 0.82, 0.84])
    assert f"0.8200 ± {std:.4f}" in fused and fused.rstrip(" |").endswith("0.9588")
    assert "| 3 |" in fused
    single = next(line for line in table.splitlines() if line.startswith("| Baseline CNN"))
    assert "0.5000 ± 0.0000" in single
    assert "Single-stage KD" not in table  # no run has it: no row


def test_results_document_groups_protocols_and_keeps_json(tmp_path):
    paths = []
    for name, metrics in (("cpu", _metrics(42, 0.8)), ("cpu_seed1", _metrics(1, 0.84, bench=False)),
                          ("leaky", _metrics(42, 0.95, protocol="paper"))):
        run = tmp_path / name
        (run / "plots").mkdir(parents=True)
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
    assert (tmp_path / "docs" / "results" / "cpu_seed1.json").is_file()
    assert (tmp_path / "docs" / "results" / "cpu" / "student_multi_fusion_confusion.png").is_file()
    assert not (tmp_path / "docs" / "results" / "cpu" / "student_multi_fusion_roc.png").exists()
    assert "results/cpu/student_multi_fusion_confusion.png" in text
    # regenerate from the saved JSON alone: same tables
    again = tmp_path / "again.md"
    results_document(sorted((tmp_path / "docs" / "results").glob("*.json")), again)
    for line in text.splitlines():
        if line.startswith("| Multi-stage KD + layer fusion |"):
            assert line in again.read_text()


def test_report_command_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.md")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", str(bad), "--out", str(tmp_path / "r.md")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()
