"""``kdskin export``: convert a ``.keras`` classifier (or a finished run's final student) to
fp32, dynamic-range and int8 ``.tflite`` files, checked against the Keras model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdskin.config import Config
from kdskin.errors import KdskinError
from kdskin.rundir import RunDir


def _print_int8_check(result: dict[str, Any]) -> None:
    from kdskin.export.fidelity import int8_check_line

    line = int8_check_line(result)
    if line:
        print(line)


def export_command(cfg: Config, model: str | None, data: str | None, out: str | None,
                   split_file: str | None = None) -> dict[str, Any]:
    """Export ``model`` into ``out``; calibration and check data: ``data`` (with
    ``split_file``) or the model's run."""
    from kdskin.export.check import export_and_check
    from kdskin.models.contract import load_keras
    from kdskin.pipeline.data import data_of_model

    if not model or not out:
        raise KdskinError("kdskin export needs --model M.keras and --out DIR (or --run RUN_DIR "
                          "to re-export a finished run)")
    keras_model = load_keras(model)
    rd, cfg = data_of_model(cfg, model, data, split_file)
    result = export_and_check(keras_model, Path(out), rd.train.images, rd.train.labels,
                              rd.test.images, rd.test.labels, cfg.export)
    print(f"wrote {out}: " + ", ".join(result.get("files", {})) + ", labels.txt, export.json")
    _print_int8_check(result)
    if cfg.export.require_int8_within_tolerance:
        from kdskin.export.check import reject_int8

        reject_int8(out, result)
    return result


def _previous_int8(export: dict[str, Any]) -> dict[str, Any]:
    """The figures of a run's earlier int8 export, to keep beside a re-export ({} if none)."""
    evaluation = export.get("evaluation", {})
    int8 = evaluation.get("tflite", {}).get("int8")
    if not int8:
        return {}
    return {"previous": {
        "int8": {k: int8.get(k) for k in ("accuracy", "macro_f1", "macro_auc", "agreement")},
        "int8_drop": evaluation.get("int8_drop"),
        "tensorflow": export.get("conversion", {}).get("tensorflow"),
    }}


def reexport_run(run_dir: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Re-export a finished run's final student with the current code.

    Uses the run's config (plus ``overrides``), split and data; refits the decision rules
    (calibration, referral, out-of-scope check), rewrites ``RUN/tflite``, the ``trust``,
    ``export`` (the previous int8 figures kept under ``export.previous``) and ``external``
    entries of ``metrics.json``, ``report.md`` and the model cards; ``overrides`` are written into
    the run's ``config.yaml`` and ``metrics.json["config_values"]`` (and listed under
    ``export.reexport_overrides``). Training results and wall time are not touched.
    """
    from kdskin.config import load_config
    from kdskin.pipeline.card import write_model_cards
    from kdskin.pipeline.data import data_of_run
    from kdskin.pipeline.run import after_training
    from kdskin.report import write_run_report

    run = RunDir(Path(run_dir)).require_finished()
    state = run.load_metrics()
    cfg = load_config(run.config, overrides)
    final = run.require_final_student(cfg.distill.stages)
    if not cfg.export.enabled:
        raise KdskinError(f"{run.config}: export.enabled is false in this run's config; pass "
                          f"--set export.enabled=true to export it")
    rd = data_of_run(run, cfg)
    extra = {**_previous_int8(state.export),
             "reexported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if overrides:  # the run's config says what made its files (the report's settings too)
        extra["reexport_overrides"] = list(overrides)
        state.config_values = cfg.to_dict()
        cfg.save(run.config)
    after_training(cfg, rd, run, state, final, refit_trust=True, export_extra=extra)
    write_run_report(run)
    write_model_cards(run, state, cfg)
    print(f"wrote {run.tflite} and updated metrics.json, report.md")
    _print_int8_check(state.export)
    return state.export
