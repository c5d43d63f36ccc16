"""Peak resident memory per stage of finished runs, side by side.

    python tools/bench_memory.py RUN_DIR [RUN_DIR ...]

Reads each run's ``metrics.json`` (``stage_peak_rss_mib``, recorded by every ``kdskin run``:
:mod:`kdskin.memory`) and prints one column per run: each stage's peak in MiB, the run's peak,
the stage that reached it and the number of images, so that runs on more data (or before and
after a change) can be compared. To measure (one run at a time, nothing else running):

    kdskin run --config configs/quickstart.yaml --out /tmp/memq           # the quickstart
    kdskin run --config configs/cpu.yaml --data-dir HAM10000_DIR --out /tmp/memcpu
    # growth with the data on the streaming path: the built-in data, then four times as much
    kdskin run --config configs/quickstart.yaml --set data.pipeline=stream --out /tmp/mems1
    kdskin run --config configs/quickstart.yaml --set data.pipeline=stream \
        --set data.synth.n_images=2400 --out /tmp/mems4
    python tools/bench_memory.py /tmp/memq /tmp/memcpu /tmp/mems1 /tmp/mems4

It reads results only; it times nothing. ``kdskin report --memory RUN`` puts the same table
in the results document.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdskin.errors import KdskinError  # noqa: E402
from kdskin.report import memory_table  # noqa: E402
from kdskin.rundir import RunDir  # noqa: E402


def table(runs: list[Path]) -> str:
    """The per-stage peaks of ``runs`` (MiB; '-' where not recorded), as ``kdskin report
    --memory`` writes them, and the measuring method."""
    metrics = [(r.name or str(r), RunDir(r).load_metrics()) for r in runs]
    methods = {m.peak_rss_method for _, m in metrics if m.peak_rss_method}
    return memory_table(metrics) + f"\n\nmethod: {', '.join(sorted(methods)) or 'not recorded'}"


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
