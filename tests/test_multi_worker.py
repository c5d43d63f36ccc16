"""Multi-worker training: TF_CONFIG checks (one-line errors, bounded waits) and two worker
processes on 127.0.0.1 training the teacher and a distillation stage of the tiny config.

The two-worker run is compared with a single process given the same GLOBAL batch (16: 2 workers
x 8 per replica vs 1 x 16) and seed. They are not bit-identical: BatchNormalization normalises
each replica's 8 images on its own (Keras' default, not synchronised) and the gradient sums are
added in another order, so the trajectories drift apart over the epochs. What is compared, and
the tolerances: every epoch's training loss of the teacher (10 epochs) and of the student (2)
within 10% (measured: within 1% for the teacher and 3% for the student; a loss not scaled by the
global batch takes steps twice too large, and a worker that trained on its own data alone would
drift further), and the teacher's test accuracy within 0.15 (9 of the 60 test images). Not the
student's test accuracy: after 2 short epochs the student is at chance and its argmax flips from
one whole class to another between epochs (a single process measured 0.40, the majority class,
and two workers 0.12, both balanced accuracy 0.14-0.15), so that figure says nothing about the
distribution.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdskin.cli import main
from kdskin.cluster import (
    ClusterError,
    local_tf_configs,
    parse_tf_config,
    worker_scratch,
)

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
ROOT = Path(__file__).resolve().parents[1]
#: The tiny run trimmed to the teacher and one KD stage (exits + logits + CE).
OPTIONS = ["--set", "distill.stages=[multi_fusion]", "--set", "baseline.enabled=false",
           "--set", "reference.enabled=false", "--set", "export.enabled=false",
           "--set", "bench.enabled=false", "--set", "explain.enabled=false",
           "--set", "trust.enabled=false", "--set", "augment.enabled=false"]
#: Bound on one worker process (the pair takes about a minute on 2 free cores; raise it with
#: KDSKIN_TEST_JOB_TIMEOUT on a machine shared with other work).
JOB_TIMEOUT = int(os.environ.get("KDSKIN_TEST_JOB_TIMEOUT", "900"))


def _env(tf_config: str | None = None) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(ROOT)}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    return env


def _start_workers(out: Path, extra: list[str], n: int = 2) -> list[subprocess.Popen]:
    cmd = [sys.executable, "-m", "kdskin", "run", "--config", str(TINY), "--out", str(out),
           "--set", "train.distribution=multi_worker", "--set", "train.batch_size=8",
           "--set", "train.worker_timeout=120", *OPTIONS, *extra]
    return [subprocess.Popen(cmd, env=_env(conf), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
            for conf in local_tf_configs(n)]


def _wait(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    results = []
    deadline = time.monotonic() + JOB_TIMEOUT
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a worker ran past {JOB_TIMEOUT} s")
        results.append((p.returncode, err))
    return results


def _losses(run: Path, name: str) -> list[float]:
    """Every epoch's training loss of ``name`` in ``run`` (its CSV log)."""
    with open(run / "logs" / f"{name}.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


# --------------------------------------------------------------------------- TF_CONFIG


@pytest.mark.parametrize("text, message", [
    (None, "TF_CONFIG is not set"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]', "not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}',
     "HOST:PORT"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "task.index 2"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
     "listed twice"),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     "not used by kdskin"),
])
def test_bad_tf_config_is_one_clear_line(text, message):
    with pytest.raises(ClusterError, match=message) as info:
        parse_tf_config(text)
    assert "\n" not in str(info.value)


def test_roles_chief_first():
    conf = json.dumps({"cluster": {"chief": ["c:1"], "worker": ["w:2", "w:3"]},
                       "task": {"type": "worker", "index": 1}})
    role = parse_tf_config(conf)
    assert (role.rank, role.num_workers, role.is_chief, role.address) == (2, 3, False, "w:3")
    assert parse_tf_config(local_tf_configs(2)[0]).is_chief
    assert not parse_tf_config(local_tf_configs(2)[1]).is_chief
    scratch = worker_scratch("/some/run", parse_tf_config(local_tf_configs(2)[1]))
    assert "/some/run" not in str(scratch) and scratch.name.startswith("kdskin-worker-1-")


def _run_error(tmp_path, monkeypatch, capsys, tf_config: str, *extra: str) -> tuple[int, str]:
    monkeypatch.setenv("TF_CONFIG", tf_config)
    code = main(["run", "--config", str(TINY), "--out", str(tmp_path / "run"),
                 "--set", "train.distribution=multi_worker", *extra])
    err = capsys.readouterr().err.strip()
    return code, err


def test_malformed_tf_config_fails_before_anything_runs(tmp_path, monkeypatch, capsys):
    code, err = _run_error(tmp_path, monkeypatch, capsys, '{"cluster": ')
    assert code == 2 and err.count("\n") == 0 and "TF_CONFIG is not valid JSON" in err, err
    assert not (tmp_path / "run").exists()


def test_port_in_use_is_named(tmp_path, monkeypatch, capsys):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        conf = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]},
                           "task": {"type": "worker", "index": 0}})
        code, err = _run_error(tmp_path, monkeypatch, capsys, conf)
    finally:
        holder.close()
    assert code == 2 and err.count("\n") == 0 and f"port {port}" in err and "in use" in err, err


@pytest.mark.slow
def test_a_worker_that_never_comes_up_times_out(tmp_path, monkeypatch, capsys):
    t0 = time.monotonic()
    code, err = _run_error(tmp_path, monkeypatch, capsys, local_tf_configs(2)[0],
                           "--set", "train.worker_timeout=3")
    assert code == 2 and err.count("\n") == 0, err
    assert "did not come up within 3 s" in err, err
    assert time.monotonic() - t0 < 60


# --------------------------------------------------------------------------- two workers


def _scratch(out: Path) -> Path:
    """The scratch folder of worker 1 of a local two-worker run into ``out``."""
    return worker_scratch(out, parse_tf_config(local_tf_configs(2)[1]))


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mw") / "run"
    try:
        yield out, _wait(_start_workers(out, []))
    finally:  # a failed worker leaves its scratch copy behind
        shutil.rmtree(_scratch(out), ignore_errors=True)


@pytest.fixture(scope="module")
def one_worker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    proc = subprocess.run([sys.executable, "-m", "kdskin", "run", "--config", str(TINY),
                           "--out", str(out), "--set", "train.batch_size=16", *OPTIONS],
                          env=_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_workers_train_into_one_run_directory(two_worker_run):
    out, results = two_worker_run
    for code, err in results:
        assert code == 0, err[-3000:]
    runs = [p for p in out.parent.iterdir() if p.is_dir()]
    assert runs == [out]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"teacher", "student_multi_fusion"}
    for name in ("teacher", "student_multi_fusion"):
        assert (out / "models" / f"{name}.keras").is_file()
    # the completed run keeps no training state (backup/), and never wrote checkpoints/
    assert not (out / "backup").exists() and not (out / "checkpoints").exists()
    # the other worker wrote only its scratch copy, removed when it finished
    assert not _scratch(out).exists()
    assert metrics["config_values"]["train"]["distribution"] == "multi_worker"


@pytest.mark.slow
def test_two_workers_match_one_worker_with_the_same_global_batch(two_worker_run,
                                                                 one_worker_run):
    out, results = two_worker_run
    assert all(code == 0 for code, _ in results)
    two = json.loads((out / "metrics.json").read_text())["models"]
    one = json.loads((one_worker_run / "metrics.json").read_text())["models"]
    student = "student_multi_fusion"
    for name in ("teacher", student):
        assert _losses(out, name) == pytest.approx(_losses(one_worker_run, name), rel=0.10), name
    assert abs(two["teacher"]["test"]["accuracy"] - one["teacher"]["test"]["accuracy"]) <= 0.15
    for name in ("teacher", student):
        assert two[name]["epochs"] == one[name]["epochs"]


@pytest.mark.slow
def test_a_killed_two_worker_job_resumes(tmp_path):
    out = tmp_path / "run"
    scratch = _scratch(out)
    try:
        _kill_and_resume(out, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _kill_and_resume(out: Path, scratch: Path) -> None:
    extra = ["--set", "student.epochs=4"]
    procs = _start_workers(out, extra)
    chief_meta = out / "backup" / "student_multi_fusion" / "training_metadata.json"
    other_meta = scratch / "backup" / "student_multi_fusion" / "training_metadata.json"
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (chief_meta.is_file() and other_meta.is_file()):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            pytest.fail("the job ended or ran too long before the student's first epoch: "
                        + procs[0].communicate()[1][-2000:])
        time.sleep(0.2)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    results = _wait(_start_workers(out, [*extra, "--resume"]))
    for code, err in results:
        assert code == 0, err[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] == 1
    assert set(metrics["models"]) == {"teacher", "student_multi_fusion"}
    with open(out / "logs" / "student_multi_fusion.csv") as f:  # appended when resuming
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2, 3]
    assert not scratch.exists()


MIRRORED_RUN = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
from kdskin.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_mirrored_run_on_two_logical_cpus(tmp_path, one_worker_run):
    """The whole pipeline under MirroredStrategy (2 replicas of 8 = the global batch 16)."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", MIRRORED_RUN, "run", "--config", str(TINY),
                           "--out", str(out), "--set", "train.distribution=mirrored",
                           "--set", "train.batch_size=8", *OPTIONS],
                          env=_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["teacher"]["train_step"]["batch"] == 16
    assert _losses(out, "teacher")[0] == pytest.approx(_losses(one_worker_run, "teacher")[0],
                                                       rel=0.10)
