"""Scaling benchmarks: 1 vs 2 workers, and the input pipelines' peak memory; docs/SCALING.md.

    python tools/bench_scaling.py workers --out docs/scaling/workers.json
    python tools/bench_scaling.py memory --data ../shared/data/ham10000_full \\
        --out docs/scaling/memory.json
    python tools/bench_scaling.py predict --run-metrics docs/results/cpu.json \
        --out docs/scaling/predict.json      # N machines from a finished run's step times
    python tools/bench_scaling.py doc          # docs/SCALING.md from the JSON files

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
PREDICT_JSON = ROOT / "docs" / "scaling" / "predict.json"
#: The benchmark job: the config's models on its generated data, the teacher and the
#: ``single`` KD stage, nothing after training (epochs and images: command-line options; the
#: step time is the median after the first epoch).
JOB = ["--set", "distill.stages=[single]", "--set", "baseline.enabled=false",
       "--set", "reference.enabled=false", "--set", "export.enabled=false",
       "--set", "bench.enabled=false", "--set", "explain.enabled=false",
       "--set", "trust.enabled=false", "--set", "train.verbose=0",
       "--set", "train.early_stopping_patience=0"]
STAGES = {"teacher": "teacher", "kd": "KD stage"}
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
    return {**run_figures(out), "wall_s": round(time.time() - t0, 1)}


def run_figures(run: Path) -> dict[str, object]:
    """Step time and images/s of the teacher and the KD stage of a finished run directory."""
    metrics = read_json(run / "metrics.json")
    per_replica = int(metrics["config_values"]["train"]["batch_size"])
    stages = {}
    for name, m in metrics["models"].items():
        if name != "teacher" and not (name.startswith("student_") and m.get("stage") != "baseline"):
            continue
        step = m["train_step"]
        stages["teacher" if name == "teacher" else "kd"] = {
            "model": name, "ms_per_step": step["ms_per_step"], "global_batch": step["batch"],
            "steps": step["steps"], "params": m["params"],
            "images_per_s": round(step["batch"] / step["ms_per_step"] * 1000, 1)}
    replicas = stages["teacher"]["global_batch"] // per_replica
    return {"run": str(run), "workers": replicas, "batch_per_worker": per_replica,
            "distribution": metrics["config_values"]["train"]["distribution"],
            "stages": stages}


def cmd_predict(args: argparse.Namespace) -> None:
    metrics = read_json(args.run_metrics)
    stages = {}
    for name, m in metrics["models"].items():
        step = m.get("train_step") or {}
        if step.get("ms_per_step") and (name == "teacher" or m.get("stage") not in (None,
                                                                                "baseline")):
            stages[name] = {"ms_per_step": step["ms_per_step"], "batch": step["batch"],
                            "params": m["params"], "steps": step["steps"]}
    write_json(args.out, {"command": " ".join(sys.argv), "metrics": str(args.run_metrics),
                          "machine": metrics.get("machine", {}), "stages": stages})
    print(f"wrote {args.out}")


def cmd_workers(args: argparse.Namespace) -> None:
    before = _machine()
    if args.from_runs:  # runs made elsewhere (e.g. the two-worker test's), 1 worker first
        runs = [run_figures(Path(r)) for r in args.from_runs]
        write_json(args.out, {"command": " ".join(sys.argv), "job": "from runs",
                              "conditions": args.conditions, "machine": before,
                              "machine_after": before, "runs": runs})
        print(f"wrote {args.out}")
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="kdskin-bench-") as tmp:
        for n in (1, 2):
            print(f"{n} worker(s)...", file=sys.stderr)
            runs.append(run_job(n, args, Path(tmp) / f"w{n}"))
    write_json(args.out, {"command": " ".join(sys.argv), "job": JOB,
                          "conditions": args.conditions, "machine": before,
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
                              "conditions": args.conditions,
                              "machine": before, "machine_after": _machine(),
                              "results": results})
    print(f"wrote {args.out}")


# --------------------------------------------------------------------------- the document


def _workers_section(w: dict) -> list[str]:
    one, two = w["runs"]
    lines = ["## Workers: 1 vs 2", "",
             f"`{w['command']}`; measured {w['machine']['when']} on this {w['machine']['cpus']}"
             f"-core machine, {w.get('conditions', 'conditions not recorded')} (load average "
             f"{w['machine']['load_average']} before, {w['machine_after']['load_average']} "
             f"after): both workers run on the same 2 cores, so the 2-worker figures measure "
             f"the overhead of the collectives and of sharing the cores, not what a second "
             f"machine brings. Step time: median wall time per step after the first epoch, "
             f"input pipeline included (`metrics.json` `train_step`); runs: "
             f"{one['distribution']} with batch {one['batch_per_worker']} per replica, and "
             f"{two['distribution']} with {two['batch_per_worker']} per replica.", "",
             "| stage | workers | global batch | ms/step | images/s | parameters |",
             "|---|---|---|---|---|---|"]
    for name, label in STAGES.items():
        for run in (one, two):
            s = run["stages"][name]
            lines.append(f"| {label} (`{s['model']}`) | {run['workers']} | {s['global_batch']} | "
                         f"{s['ms_per_step']:.1f} | {s['images_per_s']:.1f} | {s['params']:,} |")
    gain = {name: two["stages"][name]["images_per_s"] / one["stages"][name]["images_per_s"]
            for name in STAGES}
    ratios = ", ".join(f"{label} x{gain[name]:.2f}" for name, label in STAGES.items())
    lines += ["", f"Images/s of 2 workers over 1 on this machine: {ratios}. One process does "
              "not keep both cores busy on the small teacher, so two gain there; the KD stage "
              "all-reduces the student's gradients every step through the loopback while both "
              "processes share the cores, and loses. Neither figure is a speed-up across "
              "machines: the prediction below is."]
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


def _prediction_rows(label: str, ms: float, batch: int, params: int) -> list[str]:
    rows = []
    for bw in BANDWIDTHS:
        cells = []
        for n in PREDICT_N:
            p = predict(ms, batch, params, n, bw)
            cells.append(f"{p.images_per_s:,.0f} img/s ({p.mb_per_step:.1f} MB, "
                         f"{p.efficiency:.2f})")
        limit = scaling_limit(ms, batch, params, bw)
        rows.append(f"| {label} | {bw:g} Gbit/s | " + " | ".join(cells) + f" | {limit:,} |")
    return rows


def _run_described(path: str) -> str:
    """``config `NAME` on `DATA` at S px`` of a saved metrics file (relative to the repository)."""
    from kdskin.report import data_name
    from kdskin.rundir import load_metrics

    m = load_metrics(ROOT / path)
    return f"config `{m.config}` on `{data_name(m)}` at {m.image_size} px"


def _predict_section(p: dict) -> list[str]:
    lines = ["## Prediction for N machines from a measured run", "",
             f"`{p['command']}`: the one-process step times measured during a finished run "
             f"(`{p['metrics']}`: {_run_described(p['metrics'])}, "
             f"{p['machine'].get('cpu', 'its machine')}, nothing else running; median wall time "
             f"per step after the first epoch, input pipeline included), taken as the compute "
             f"of one machine at that per-machine batch, plus the all-reduce of the model "
             f"(`kdskin/scaling.py`: a ring all-reduce sends 2(N-1)/N x 4 bytes x parameters "
             f"per worker and step, in 2(N-1) messages of 0.1 ms latency; no overlap with "
             f"computation; parameters include BatchNorm statistics, an upper bound of the "
             f"trainable weights; the KD stage all-reduces the student only, the teacher is "
             f"frozen).", "",
             "| model | ms/step (1 machine) | batch | parameters | MB sent per worker and step "
             "(N large) |", "|---|---|---|---|---|"]
    for name, s in p["stages"].items():
        lines.append(f"| `{name}` | {s['ms_per_step']:.1f} | {s['batch']} | {s['params']:,} | "
                     f"{8 * s['params'] / 1e6:.1f} |")
    lines += ["", "| model | link | " + " | ".join(f"N={n}" for n in PREDICT_N)
              + " | efficiency >= 0.5 up to N = |", "|---|---|" + "---|" * len(PREDICT_N)
              + "---|"]
    for name, s in p["stages"].items():
        lines += _prediction_rows(f"`{name}`", s["ms_per_step"], s["batch"], s["params"])
    name, big = max(p["stages"].items(), key=lambda kv: kv[1]["params"])
    two = predict(big["ms_per_step"], big["batch"], big["params"], 2, BANDWIDTHS[0])
    many = predict(big["ms_per_step"], big["batch"], big["params"], 256, BANDWIDTHS[0])
    lines += ["", "Cells: predicted images/s of the cluster (MB sent per worker and step, "
              "efficiency = compute / step). "
              f"On a {BANDWIDTHS[0]:g} Gbit/s link `{name}`'s {big['params'] / 1e6:.1f} M "
              f"parameters cost {two.comm_ms:.0f} ms a step with 2 machines and "
              f"{many.comm_ms:.0f} ms with 256 (its step computes {big['ms_per_step']:.0f} ms): "
              f"efficiency {two.efficiency:.2f} and {many.efficiency:.2f}; at 10 Gbit/s the "
              "network costs a few percent. What the model leaves "
              "out, and where it stops first: Keras shards an in-memory `tf.data` pipeline by "
              "data, so every worker decodes and augments the WHOLE global batch and keeps its "
              "share; that input cost grows with N (linearly in the global batch), and the "
              "latency term grows with N. So the model's limit (the last column) is an upper "
              "bound: with per-machine batch 32 the duplicated input work (not measured "
              "separately here) is the likelier first limit, and the global batch (32 x N) "
              "soon outgrows a data set of a few thousand training images (an epoch of "
              "HAM10000's ~7,000 is 7 steps at N = 32).", ""]
    return lines


def _memory_section(m: dict) -> list[str]:
    lines = ["## Input pipelines: peak memory", "",
             f"`{m['command']}`; measured {m['machine']['when']} on this "
             f"{m['machine']['cpus']}-core machine, "
             f"{m.get('conditions', 'conditions not recorded')} (load average "
             f"{m['machine']['load_average']}). One epoch of the training feed (batch 64, "
             f"shuffle) in a fresh process each; peak resident memory of the process, and "
             f"above its baseline (Python, TensorFlow and the file table: "
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
    present = [f"`{p.relative_to(ROOT)}`" for p in (WORKERS_JSON, PREDICT_JSON, MEMORY_JSON)
               if p.is_file()]
    parts = ["# kdskin: training on several workers, and data beyond memory", "",
             f"Written by `python tools/bench_scaling.py doc` from {', '.join(present)} (each "
             "made by the command quoted in its section); not generated by `kdskin report`. "
             "How to launch a multi-worker run: [MULTI_WORKER.md](MULTI_WORKER.md).", ""]
    missing = {WORKERS_JSON: "1 vs 2 workers: `python tools/bench_scaling.py workers`",
               MEMORY_JSON: "peak memory of the two input pipelines: `python "
                            "tools/bench_scaling.py memory --data ../shared/data/ham10000_full`"}
    todo = [text for path, text in missing.items() if not path.is_file()]
    if todo:
        parts += ["**Not measured yet** (the machine these were to run on was shared with "
                  "another training and gave these jobs too little CPU to finish): "
                  + "; ".join(todo) + ".", ""]
    if WORKERS_JSON.is_file():
        parts += _workers_section(read_json(WORKERS_JSON))
    if PREDICT_JSON.is_file():
        parts += _predict_section(read_json(PREDICT_JSON))
    if MEMORY_JSON.is_file():
        parts += _memory_section(read_json(MEMORY_JSON))
    atomic_write_text(DOC, "\n".join(parts))
    print(f"wrote {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("workers", help="step time and images/s of 1 vs 2 local workers")
    w.add_argument("--out", type=Path, default=WORKERS_JSON)
    w.add_argument("--conditions", default="conditions not recorded",
                   help="what else ran on the machine, for the document (e.g. 'nothing else "
                        "running')")
    w.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    w.add_argument("--batch", type=int, default=16, help="per-worker batch")
    w.add_argument("--epochs", type=int, default=3, help="epochs of each stage (at least 2)")
    w.add_argument("--images", type=int, default=600, help="generated images")
    w.add_argument("--timeout", type=int, default=3600)
    w.add_argument("--from-runs", nargs=2, metavar=("ONE_WORKER_RUN", "TWO_WORKER_RUN"),
                   help="read two finished run directories instead of running the job")
    w.set_defaults(func=cmd_workers)
    m = sub.add_parser("memory", help="peak memory of the memory and stream pipelines")
    m.add_argument("--data", required=True)
    m.add_argument("--conditions", default="conditions not recorded",
                   help="what else ran on the machine, for the document")
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
    pr = sub.add_parser("predict", help="N machines from a finished run's step times")
    pr.add_argument("--run-metrics", type=Path, required=True, help="a run's metrics.json")
    pr.add_argument("--out", type=Path, default=PREDICT_JSON)
    pr.set_defaults(func=cmd_predict)
    d = sub.add_parser("doc", help="write docs/SCALING.md from the JSON files")
    d.set_defaults(func=cmd_doc)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
