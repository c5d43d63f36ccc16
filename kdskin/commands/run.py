"""``kdskin run``: the whole pipeline into one run directory."""

from __future__ import annotations

from pathlib import Path

from kdskin.config import Config


def run_command(cfg: Config, data_dir: str | None = None, out: str | None = None,
                resume: bool = False, teacher: str | None = None) -> Path:
    """Run the pipeline (:func:`kdskin.pipeline.run.run_pipeline`); print the run directory."""
    from kdskin.pipeline.run import run_pipeline

    run_dir = run_pipeline(cfg, data_dir=data_dir, out=out, resume=resume, teacher=teacher)
    print(f"run directory: {run_dir}")
    return run_dir
