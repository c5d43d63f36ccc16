"""The int8 file's verdict against its Keras model: one line, said by the run's report, the
model card and the run's last log line (kdskin.export.fidelity)."""

from __future__ import annotations

import json

from kdskin.export.fidelity import int8_check_failed, int8_check_line
from kdskin.trust.model_card import render_model_card


def _export(within: bool, agreement: float = 0.963) -> dict:
    return {"evaluation": {"n_images": 1502,
                           "keras": {"accuracy": 0.8123, "macro_f1": 0.6012},
                           "tflite": {"int8": {"accuracy": 0.8001, "macro_f1": 0.5871,
                                               "agreement": agreement}}},
            "max_int8_drop": 0.01, "int8_within_tolerance": within}


def test_the_line_gives_the_figures_and_the_verdict():
    line = int8_check_line(_export(False))
    assert line == ("int8 vs Keras on 1502 test images: accuracy 0.8001 vs 0.8123, macro F1 "
                    "0.5871 vs 0.6012, top-1 agreement 0.9630, within 1 point(s): NO")
    assert int8_check_line(_export(True)).endswith("within 1 point(s): yes")
    assert int8_check_failed(_export(False)) and not int8_check_failed(_export(True))


def test_no_int8_checked_no_line_and_no_failure():
    for export in ({}, {"evaluation": {"keras": {"accuracy": 0.8}}},
                   {"evaluation": _export(False)["evaluation"]}):  # no verdict recorded
        assert int8_check_line(export) is None and not int8_check_failed(export)
    assert not int8_check_failed(None)


def test_the_model_card_says_a_failed_check_first_among_the_files():
    files = [{"path": "tflite/model_int8.tflite", "bytes": 10, "sha256": "ab"}]
    failed = render_model_card({"files": files, "int8_check": {
        "line": int8_check_line(_export(False)), "failed": True}})
    assert "**The int8 file does not decide like its Keras model**: int8 vs Keras" in failed
    assert failed.index("does not decide") < failed.index("| tflite/model_int8.tflite")
    passed = render_model_card({"files": files, "int8_check": {
        "line": int8_check_line(_export(True)), "failed": False}})
    assert "does not decide" not in passed and "int8 check: int8 vs Keras" in passed
    assert "int8 check" not in render_model_card({"files": files})


def test_report_md_says_a_failed_check(tmp_path):
    from kdskin.report import run_report
    from tests.test_report import _metrics

    metrics = _metrics(42, 0.8)
    metrics["export"].update(max_int8_drop=0.01, int8_within_tolerance=False)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = run_report(tmp_path)
    assert "**The int8 file does not decide like its Keras model**: int8 vs Keras" in text
    assert text.count("within 1 point(s): NO") == 1
    metrics["export"]["int8_within_tolerance"] = True
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert "int8 check: int8 vs Keras" in run_report(tmp_path)
