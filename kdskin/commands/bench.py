"""``kdskin bench``: training and inference ms/step of a run, with the run's own settings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdskin.errors import KdskinError
from kdskin.rundir import RunDir


def bench_command(run_dir: str, overrides: Sequence[str] = (), json_out: str | None = None,
                  update: bool = False) -> dict[str, Any]:
    """Benchmark ``run_dir`` with its ``config.yaml`` (plus ``overrides``); print the table.

    ``update`` records the result in the run (``bench.json``, ``metrics.json``, ``report.md``).
    """
    from kdskin.bench import bench_run, format_table
    from kdskin.config import load_config
    from kdskin.io import write_json

    run = RunDir(Path(run_dir))
    if not run.models.is_dir() or not run.config.is_file():
        raise KdskinError(f"{run.root}: not a run directory (no models/ or config.yaml); pass "
                          f"--run RUN_DIR written by kdskin run")
    if update:
        run.require_finished()  # refuse an unfinished run before spending minutes on timings
    cfg = load_config(run.config, overrides)
    result = bench_run(run.root, cfg)
    print(format_table(result["rows"]))
    if update:
        from kdskin.report import write_run_report

        write_json(run.bench_json, result)
        state = run.load_metrics()
        state.bench = result
        run.save_metrics(state)
        write_run_report(run)
        print(f"updated {run.bench_json}, metrics.json and report.md")
    if json_out:
        write_json(json_out, result)
    return result
