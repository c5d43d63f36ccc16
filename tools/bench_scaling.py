"""Scaling benchmarks: 1 vs 2 workers, and the input pipelines' peak memory; docs/SCALING.md.

    python tools/bench_scaling.py workers --out docs/scaling/workers.json
    python tools/bench_scaling.py memory --data ../shared/data/ham10000_full \\
        --out docs/scaling/memory.json
    python tools/bench_scaling.py doc          # docs/SCALING.md from the two JSON files

``workers`` runs ``kdskin run`` (the teacher and the ``single`` KD stage of a small config on
the built-in generated data) with ``train.distribution=multi_worker`` as 1 worker and as 2
worker processes on 127.0.0.1 with the same per-worker batch, and reads each stage's measured
step time (``metrics.json``, the median wall time per step after the first epoch, input
pipeline included). ``memory`` runs one epoch of the training feed of ``data.pipeline``
``memory`` and ``stream`` in a fresh process each and records its peak resident memory.
Both record the machine's load average beside the figures: on a shared machine they are
upper bounds of the step time and say little about another machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdskin.cluster import local_tf_configs  # noqa: E402
from kdskin.io import atomic_write_text, read_json, write_json  # noqa: E402
from kdskin.scaling import predict, scaling_limit  # noqa: E402

DOC = ROOT / "docs" / "SCALING.md"
WORKERS_JSON = ROOT / "docs" / "scaling" / "workers.json"
MEMORY_JSON = ROOT / "docs" / "scaling" / "memory.json"
#: The benchmark job: the config's models on its generated data, the teacher and the
#: ``single`` KD stage, nothing after training (epochs and images: command-line options; the
#: step time is the median after the first epoch).
JOB = ["--set", "distill.stages=[single]", "--set", "baseline.enabled=false",
       "--set", "reference.enabled=false", "--set", "export.enabled=false",
       "--set", "bench.enabled=false", "--set", "explain.enabled=false",
       "--set", "trust.enabled=false", "--set", "train.verbose=0",
       "--set", "train.early_stopping_patience=0"]
STAGES = {"teacher": "teacher", "student_single": "KD stage single"}
BANDWIDTHS = (1.0, 10.0, 100.0)  # Gbit/s
PREDICT_N = (1, 2, 4, 8, 16, 64, 256)


def _machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _env(tf_config: str | None) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(ROOT)}
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = tf_config
    return env


def run_job(n: int, args: argparse.Namespace, out: Path) -> dict[str, object]:
    """``kdskin run`` of :data:`JOB` on ``n`` local worker processes; the chief's metrics."""
    batch, timeout = args.batch, args.timeout
    cmd = [sys.executable, "-m", "kdskin", "run", "--config", str(args.config),
           "--out", str(out), "--set", "train.distribution=multi_worker",
           "--set", f"train.batch_size={batch}", *JOB,
           "--set", f"teacher.epochs={args.epochs}", "--set", f"student.epochs={args.epochs}",
           "--set", f"data.synth.n_images={args.images}"]
    t0 = time.time()
    procs = [subprocess.Popen(cmd, env=_env(conf), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for conf in local_tf_configs(n)]
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise SystemExit(f"bench_scaling: a worker failed: {err.strip()[-500:]}")
    metrics = read_json(out / "metrics.json")
    stages = {}
    for name in STAGES:
        m = metrics["models"][name]
        step = m["train_step"]
        stages[name] = {"ms_per_step": step["ms_per_step"], "global_batch": step["batch"],
                        "steps": step["steps"], "params": m["params"],
                        "images_per_s": round(step["batch"] / step["ms_per_step"] * 1000, 1)}
    return {"workers": n, "batch_per_worker": batch, "wall_s": round(time.time() - t0, 1),
            "stages": stages}


def cmd_workers(args: argparse.Namespace) -> None:
    before = _machine()
    runs = []
    with tempfile.TemporaryDirectory(prefix="kdskin-bench-") as tmp:
        for n in (1, 2):
            print(f"{n} worker(s)...", file=sys.stderr)
            runs.append(run_job(n, args, Path(tmp) / f"w{n}"))
    write_json(args.out, {"command": " ".join(sys.argv), "job": JOB, "machine": before,
                          "machine_after": _machine(), "runs": runs})
    print(f"wrote {args.out}")


def memory_one(pipeline: str, data: str, size: int, repeat: int, limit: int | None
               ) -> dict[str, object]:
    """One epoch of the training feed in THIS process; peak RSS (MB) before and after."""
    import numpy as np

    from kdskin.data.datasets import read_dataset

    table = read_dataset(data, "ham10000").table
    if limit:
        table = table.iloc[:limit]
    paths = [str(p) for p in table["path"]] * repeat
    labels = np.tile(table["label"].to_numpy(np.int64), repeat)
    import tensorflow as tf  # noqa: F401 - the baseline includes TensorFlow

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.time()
    if pipeline == "memory":
        from kdskin.data.images import load_images
        from kdskin.data.pipeline import make_tf_dataset

        images, kept, _ = load_images(paths, size)
        ds = make_tf_dataset(images, labels[kept], 64, training=True)
    else:
        from kdskin.data.stream import SplitFiles, stream_dataset

        ds = stream_dataset(SplitFiles(paths, labels, [str(i) for i in range(len(paths))]),
                            size, 64, training=True, shuffle_buffer=1024)
    n = sum(int(y.shape[0]) for _, y in ds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"pipeline": pipeline, "image_size": size, "images": n, "repeat": repeat,
            "peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(base, 1),
            "data_mb": round(peak - base, 1), "epoch_s": round(time.time() - t0, 1),
            "array_mb": round(n * size * size * 3 / 1e6, 1)}


def cmd_memory(args: argparse.Namespace) -> None:
    cases = [(p, s, 1) for s in args.sizes for p in ("stream", "memory")]
    cases += [("stream", args.sizes[0], r) for r in args.repeats if r > 1]
    results = []
    before = _machine()
    for pipeline, size, repeat in cases:
        print(f"{pipeline} {size}px x{repeat}...", file=sys.stderr)
        cmd = [sys.executable, __file__, "memory-one", pipeline, args.data, str(size),
               str(repeat)] + (["--limit", str(args.limit)] if args.limit else [])
        proc = subprocess.run(cmd, env=_env(None), capture_output=True, text=True,
                              timeout=args.timeout, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"bench_scaling: {pipeline} {size}: {proc.stderr.strip()[-500:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        write_json(args.out, {"command": " ".join(sys.argv), "data": args.data,  # so far
                              "machine": before, "machine_after": _machine(),
                              "results": results})
    print(f"wrote {args.out}")


# --------------------------------------------------------------------------- the document


def _workers_section(w: dict) -> list[str]:
    one, two = w["runs"]
    lines = ["## Workers: 1 vs 2", "",
             f"`{w['command']}`; measured {w['machine']['when']} on this {w['machine']['cpus']}"
             f"-core machine, **shared with another training** (load average "
             f"{w['machine']['load_average']} before, {w['machine_after']['load_average']} "
             f"after): both workers run on the same 2 cores, so the 2-worker figures measure "
             f"the overhead of the collectives and of sharing the cores, not what a second "
             f"machine brings. Step time: median wall time per step after the first epoch, "
             f"input pipeline included (`metrics.json` `train_step`); per-worker batch "
             f"{one['batch_per_worker']} (global batch {one['batch_per_worker']} and "
             f"{2 * one['batch_per_worker']}).", "",
             "| stage | workers | global batch | ms/step | images/s | parameters |",
             "|---|---|---|---|---|---|"]
    for name, label in STAGES.items():
        for run in (one, two):
            s = run["stages"][name]
            lines.append(f"| {label} | {run['workers']} | {s['global_batch']} | "
                         f"{s['ms_per_step']:.1f} | {s['images_per_s']:.1f} | {s['params']:,} |")
    lines += ["", "## Prediction for N machines", "",
              "From one worker's measured step (compute) and the all-reduced gradients "
              "(`kdskin/scaling.py`: a ring all-reduce sends 2(N-1)/N x 4 bytes x parameters "
              "per worker and step, in 2(N-1) messages of 0.1 ms latency; no overlap with "
              "computation). The KD stage all-reduces the student's weights only (the teacher "
              "is frozen). Parameters include BatchNorm statistics (an upper bound of the "
              "trainable weights).", "",
              "| stage | link | " + " | ".join(f"N={n}" for n in PREDICT_N)
              + " | efficiency >= 0.5 up to |",
              "|---|---|" + "---|" * len(PREDICT_N) + "---|"]
    for name, label in STAGES.items():
        s = one["stages"][name]
        for bw in BANDWIDTHS:
            cells = []
            for n in PREDICT_N:
                p = predict(s["ms_per_step"], one["batch_per_worker"], s["params"], n, bw)
                cells.append(f"{p.images_per_s:,.0f} img/s ({p.mb_per_step:.1f} MB, "
                             f"{p.efficiency:.2f})")
            limit = scaling_limit(s["ms_per_step"], one["batch_per_worker"], s["params"], bw)
            lines.append(f"| {label} | {bw:g} Gbit/s | " + " | ".join(cells) + f" | {limit:,} |")
    lines += ["", "Cells: predicted images/s of the cluster (MB sent per worker and step, "
              "efficiency = compute / step). What the model leaves out, and where it stops "
              "first on small models like these: Keras shards an in-memory `tf.data` pipeline "
              "by data, so every worker decodes and augments the whole global batch and keeps "
              "its share; that input cost grows with N and caps the speed-up before the "
              "network does.", ""]
    return lines


def _memory_section(m: dict) -> list[str]:
    lines = ["## Input pipelines: peak memory", "",
             f"`{m['command']}`; measured {m['machine']['when']} on a machine **shared with "
             f"another training** (load average {m['machine']['load_average']}; the epoch times "
             f"are upper bounds). One epoch of the training feed (batch 64, shuffle) in a fresh "
             f"process each; peak resident memory of the process, and above its baseline "
             f"(Python, TensorFlow and the file table: "
             f"{min(r['baseline_rss_mb'] for r in m['results']):.0f} MB).", "",
             "| pipeline | px | images | peak RSS (MB) | above baseline (MB) | "
             "decoded array (MB) | epoch (s) |", "|---|---|---|---|---|---|---|"]
    for r in m["results"]:
        images = f"{r['images']:,}" + (f" (file list x{r['repeat']})" if r["repeat"] > 1 else "")
        lines.append(f"| {r['pipeline']} | {r['image_size']} | {images} | {r['peak_rss_mb']:,.0f}"
                     f" | {r['data_mb']:,.0f} | {r['array_mb']:,.0f} | {r['epoch_s']:.0f} |")
    lines += ["", "The in-memory path holds every decoded image (and `tf.data`'s copy of the "
              "array); the streaming path holds the file list, the shuffle buffer and a few "
              "batches, whatever the number of images (the data grown 4x by repeating the "
              "file list). Validation and test splits stay decoded in memory on both paths "
              "(30% of the images at the default split).", ""]
    return lines


def cmd_doc(args: argparse.Namespace) -> None:
    parts = ["# kdskin: training on several workers, and data beyond memory", "",
             "Written by `python tools/bench_scaling.py doc` from "
             "`docs/scaling/workers.json` and `docs/scaling/memory.json` (each made by the "
             "command quoted in its section); not generated by `kdskin report`. How to launch "
             "a multi-worker run: README, \"Training on several machines\".", ""]
    if WORKERS_JSON.is_file():
        parts += _workers_section(read_json(WORKERS_JSON))
    if MEMORY_JSON.is_file():
        parts += _memory_section(read_json(MEMORY_JSON))
    atomic_write_text(DOC, "\n".join(parts))
    print(f"wrote {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("workers", help="step time and images/s of 1 vs 2 local workers")
    w.add_argument("--out", type=Path, default=WORKERS_JSON)
    w.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    w.add_argument("--batch", type=int, default=16, help="per-worker batch")
    w.add_argument("--epochs", type=int, default=3, help="epochs of each stage (at least 2)")
    w.add_argument("--images", type=int, default=600, help="generated images")
    w.add_argument("--timeout", type=int, default=3600)
    w.set_defaults(func=cmd_workers)
    m = sub.add_parser("memory", help="peak memory of the memory and stream pipelines")
    m.add_argument("--data", required=True)
    m.add_argument("--out", type=Path, default=MEMORY_JSON)
    m.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    m.add_argument("--repeats", type=int, nargs="+", default=[4],
                   help="stream also over the file list repeated this many times")
    m.add_argument("--limit", type=int, default=None, help="first N images only")
    m.add_argument("--timeout", type=int, default=7200)
    m.set_defaults(func=cmd_memory)
    one = sub.add_parser("memory-one")
    one.add_argument("pipeline", choices=("memory", "stream"))
    one.add_argument("data")
    one.add_argument("size", type=int)
    one.add_argument("repeat", type=int)
    one.add_argument("--limit", type=int, default=None)
    one.set_defaults(func=lambda a: print(json.dumps(
        memory_one(a.pipeline, a.data, a.size, a.repeat, a.limit))))
    d = sub.add_parser("doc", help="write docs/SCALING.md from the JSON files")
    d.set_defaults(func=cmd_doc)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
