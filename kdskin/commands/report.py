"""``kdskin report``: the results document over run directories or saved metrics.json files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def report_command(runs: list[str], out: str = "docs/RESULTS.md",
                   results_dir: str | None = None, explain: Sequence[str] = (),
                   targets: str | None = None, memory: Sequence[str] = ()) -> Path:
    """Write the results document (:func:`kdskin.report.results_document`); print its path.
    ``targets``: a YAML or JSON file of thresholds (:func:`kdskin.report.load_targets`) whose
    verdicts the headline gives; without it the document states figures only. ``memory``:
    runs whose per-stage peak memory is tabulated (not part of the experiments)."""
    from kdskin.report import results_document

    command = "kdskin report " + " ".join(runs) + f" --out {out}" + (
        f" --results-dir {results_dir}" if results_dir else "") + "".join(
        f" --explain {e}" for e in explain) + (f" --targets {targets}" if targets else "")
    command += "".join(f" --memory {m}" for m in memory)
    path = results_document(runs, out, results_dir, command=command, explain=explain,
                            targets=targets, memory=memory)
    print(f"wrote {path}")
    return path
