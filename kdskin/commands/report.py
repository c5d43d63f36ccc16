"""``kdskin report``: the results document over run directories or saved metrics.json files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def report_command(runs: list[str], out: str = "docs/RESULTS.md",
                   results_dir: str | None = None, explain: Sequence[str] = ()) -> Path:
    """Write the results document (:func:`kdskin.report.results_document`); print its path."""
    from kdskin.report import results_document

    command = "kdskin report " + " ".join(runs) + f" --out {out}" + (
        f" --results-dir {results_dir}" if results_dir else "") + "".join(
        f" --explain {e}" for e in explain)
    path = results_document(runs, out, results_dir, command=command, explain=explain)
    print(f"wrote {path}")
    return path
