"""Peak resident memory per stage of finished runs, side by side.

    python tools/bench_memory.py RUN_DIR [RUN_DIR ...]

Reads each run's ``metrics.json`` (``stage_peak_rss_mib``, recorded by every ``kdskin run``:
:mod:`kdskin.memory`) and prints one column per run: each stage's peak in MiB, the run's peak,
the stage that reached it and the number of images, so that runs on more data (or before and
after a change) can be compared. To measure: make the runs, e.g.

    kdskin run --out /tmp/memq                                   # the quickstart
    kdskin run --config configs/cpu.yaml --data-dir HAM10000_DIR --out /tmp/memcpu
    python tools/bench_memory.py /tmp/memq /tmp/memcpu

It reads results only; it times nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdskin.errors import KdskinError  # noqa: E402
from kdskin.rundir import RunDir  # noqa: E402


def table(runs: list[Path]) -> str:
    """The per-stage peaks of ``runs`` as a plain-text table (MiB; '-' where not recorded)."""
    metrics = [RunDir(r).load_metrics() for r in runs]
    stages: list[str] = []
    for m in metrics:
        stages += [s for s in m.stage_peak_rss_mib if s not in stages]
    names = [r.name or str(r) for r in runs]
    width = max([len(s) for s in stages] + [12])
    cols = [max(len(n), 9) for n in names]

    def row(label: str, cells: list[str]) -> str:
        padded = (f"{c:>{w}}" for c, w in zip(cells, cols, strict=True))
        return f"{label:<{width}} " + " ".join(padded)

    lines = [row("stage (MiB)", names)]
    for stage in stages:
        lines.append(row(stage, [f"{m.stage_peak_rss_mib[stage]:,.0f}"
                                 if stage in m.stage_peak_rss_mib else "-" for m in metrics]))
    peaks = [m.stage_peak_rss_mib for m in metrics]
    lines.append(row("run peak", [f"{max(p.values()):,.0f}" if p else "-" for p in peaks]))
    lines.append(row("at stage", [max(p, key=lambda k: p[k]) if p else "-" for p in peaks]))
    lines.append(row("images", [f"{sum(m.sizes.values()):,}" for m in metrics]))
    lines.append(row("wall min", [f"{m.wall_seconds / 60:.1f}" if m.wall_seconds else "-"
                                  for m in metrics]))
    methods = {m.peak_rss_method for m in metrics if m.peak_rss_method}
    lines.append(f"method: {', '.join(sorted(methods)) or 'not recorded'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (kdskin run --out)")
    args = parser.parse_args(argv)
    try:
        print(table(args.runs))
    except KdskinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
