"""The cluster a multi-worker run belongs to: ``TF_CONFIG`` read and checked, this worker's role,
and where a worker that is not the chief keeps its scratch files.

Pure Python (no TensorFlow): everything here runs before the strategy is created, so a bad
``TF_CONFIG`` is one clear line, not a hang or a gRPC traceback. ``TF_CONFIG`` is the JSON that
``tf.distribute.MultiWorkerMirroredStrategy`` reads, one per process::

    {"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}

A ``"chief"`` job (one address) is accepted too; it then is the chief and the workers follow it.
The chief (``chief`` 0, or ``worker`` 0 without a chief job) writes the run directory; the other
workers write into :func:`worker_scratch` (outside the run directory) and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kdskin.errors import KdskinError

#: Jobs that train (``evaluator``/``ps`` tasks are not used by kdskin).
TRAINING_JOBS: tuple[str, ...] = ("chief", "worker")


class ClusterError(KdskinError):
    """``TF_CONFIG`` that cannot start a multi-worker run (bad JSON, a port in use, a worker
    that never came up)."""


@dataclass(frozen=True)
class WorkerRole:
    """This process in the cluster: ``task_type`` and ``task_index`` from ``TF_CONFIG``,
    ``addresses`` of every training task in TensorFlow's order (chief first), ``rank`` its
    position there (0: the chief)."""

    task_type: str
    task_index: int
    addresses: tuple[str, ...]
    rank: int

    @property
    def num_workers(self) -> int:
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def address(self) -> str:
        return self.addresses[self.rank]

    def describe(self) -> str:
        return (f"{self.task_type} {self.task_index} of {self.num_workers} workers "
                f"({'chief' if self.is_chief else 'not the chief'}, {self.address})")


def _split_address(address: object, where: str) -> tuple[str, int]:
    if not isinstance(address, str) or ":" not in address:
        raise ClusterError(f"TF_CONFIG: {where} address {address!r} is not HOST:PORT; write e.g. "
                           f"\"10.0.0.1:12345\"")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"TF_CONFIG: {where} address {address!r} is not HOST:PORT with a port "
                           f"1-65535; write e.g. \"10.0.0.1:12345\"")
    return host, int(port)


def parse_tf_config(text: str | None) -> WorkerRole:
    """The :class:`WorkerRole` described by the ``TF_CONFIG`` JSON ``text``; raises
    :class:`ClusterError` (one line: what is wrong, what to write) when it cannot start."""
    example = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not text or not text.strip():
        raise ClusterError(f"train.distribution is multi_worker but TF_CONFIG is not set; set it "
                           f"in every worker's environment, e.g. TF_CONFIG='{example}'")
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClusterError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}); "
                           f"write e.g. TF_CONFIG='{example}'") from None
    if not isinstance(conf, Mapping) or not isinstance(conf.get("cluster"), Mapping) \
            or not isinstance(conf.get("task"), Mapping):
        raise ClusterError(f"TF_CONFIG needs a \"cluster\" and a \"task\" object; write e.g. "
                           f"TF_CONFIG='{example}'")
    cluster, task = conf["cluster"], conf["task"]
    unknown = sorted(set(cluster) - set(TRAINING_JOBS))
    if unknown:
        raise ClusterError(f"TF_CONFIG: cluster job(s) {', '.join(unknown)} are not used by "
                           f"kdskin; list the training machines under \"worker\" (and at most "
                           f"one \"chief\")")
    addresses: list[str] = []
    for job in TRAINING_JOBS:
        tasks = cluster.get(job, [])
        if not isinstance(tasks, list) or not tasks and job == "worker" and "chief" not in cluster:
            raise ClusterError(f"TF_CONFIG: cluster.{job} must be a non-empty list of HOST:PORT "
                               f"addresses, got {tasks!r}")
        if job == "chief" and len(tasks) > 1:
            raise ClusterError(f"TF_CONFIG: cluster.chief lists {len(tasks)} addresses; a "
                               f"cluster has at most one chief")
        for i, address in enumerate(tasks):
            _split_address(address, f"cluster.{job}[{i}]")
        addresses += list(tasks)
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise ClusterError(f"TF_CONFIG: address {duplicates[0]} is listed twice; give every "
                           f"worker its own HOST:PORT")
    task_type, index = task.get("type"), task.get("index")
    if task_type not in TRAINING_JOBS or task_type not in cluster:
        raise ClusterError(f"TF_CONFIG: task.type {task_type!r} is not a job of the cluster "
                           f"({', '.join(j for j in TRAINING_JOBS if j in cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) \
            or not 0 <= index < len(cluster[task_type]):
        raise ClusterError(f"TF_CONFIG: task.index {index!r} is not an index of cluster."
                           f"{task_type} (0 to {len(cluster[task_type]) - 1})")
    rank = index + (len(cluster.get("chief", [])) if task_type == "worker" else 0)
    return WorkerRole(task_type, index, tuple(addresses), rank)


def read_tf_config(environ: Mapping[str, str] | None = None) -> WorkerRole:
    """:func:`parse_tf_config` of ``$TF_CONFIG``."""
    return parse_tf_config((os.environ if environ is None else environ).get("TF_CONFIG"))


def worker_scratch(run_root: str | Path, role: WorkerRole) -> Path:
    """Where a worker that is not the chief writes (its copy of models, backups and
    logs): ``$TMPDIR/kdskin-worker-RANK-HASH`` with ``HASH`` from the run directory's absolute
    path, so a rerun with ``--resume`` finds it again. Never inside the run directory."""
    digest = hashlib.sha1(str(Path(run_root).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"kdskin-worker-{role.rank}-{digest}"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on this machine now (for local clusters and tests)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def local_tf_configs(n: int, ports: list[int] | None = None) -> list[str]:
    """``TF_CONFIG`` of each of ``n`` workers on 127.0.0.1 (free ports unless given)."""
    ports = ports or free_ports(n)
    workers = [f"127.0.0.1:{p}" for p in ports]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            for i in range(n)]


def wait_for_workers(role: WorkerRole, timeout_s: float, poll_s: float = 0.5) -> None:
    """Wait until every other worker's port answers, at most ``timeout_s`` seconds.

    This worker listens on its own port meanwhile (so the others see it up; the port is
    released before TensorFlow binds it), which also checks the port is free. Raises
    :class:`ClusterError` naming the port in use, or the workers that never came up. Without
    it, ``MultiWorkerMirroredStrategy`` waits for a missing worker for ever.
    """
    _, port = _split_address(role.address, f"task {role.task_type} {role.task_index}")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
    except OSError:
        listener.close()
        raise ClusterError(f"TF_CONFIG: port {port} of {role.task_type} {role.task_index} "
                           f"({role.address}) is in use on this machine; stop what holds it "
                           f"(an earlier kdskin worker?) or give this worker another port in "
                           f"every worker's TF_CONFIG") from None
    listener.listen(64)
    pending = {rank: address for rank, address in enumerate(role.addresses) if rank != role.rank}
    deadline = time.monotonic() + float(timeout_s)
    try:
        while pending:
            for rank, address in sorted(pending.items()):
                host, peer_port = _split_address(address, f"worker {rank}")
                try:
                    socket.create_connection((host, peer_port), timeout=1.0).close()
                    del pending[rank]
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                missing = ", ".join(f"{role.addresses[r]}" for r in sorted(pending))
                raise ClusterError(f"TF_CONFIG: {len(pending)} worker(s) did not come up within "
                                   f"{timeout_s:g} s ({missing}); start kdskin run with the same "
                                   f"--out on every machine of TF_CONFIG, check the addresses and "
                                   f"firewalls, or raise train.worker_timeout")
            if pending:
                time.sleep(poll_s)
    finally:
        listener.close()
