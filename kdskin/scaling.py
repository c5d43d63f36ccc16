"""How training scales over workers: the measured step time of 1 and 2 workers, and what a
simple model predicts for N machines (pure arithmetic, no TensorFlow).

Per step, data-parallel training (``MultiWorkerMirroredStrategy``) computes on each worker's
share of the global batch, then all-reduces the gradients of the trainable weights. A ring
all-reduce sends, and receives, ``2 (N - 1) / N x P x 4`` bytes per worker for ``P`` float32
weights, in ``2 (N - 1)`` messages. With the per-worker batch fixed (weak scaling)::

    t(N) = t_compute + 2 (N - 1) / N x 4 P / bandwidth + 2 (N - 1) x latency
    images/s (N) = N x batch / t(N)          efficiency (N) = t_compute / t(N)

Nothing overlaps communication with computation (TensorFlow's collectives start after the
backward pass of the step, so this is the pessimistic case). Training stops scaling where
the efficiency falls below one half (:func:`scaling_limit`): the bandwidth term tends to
``8 P / bandwidth`` as N grows, the latency term grows with N.
The input pipeline is not in the model: Keras shards an in-memory ``tf.data`` pipeline by data
(every worker prepares the whole global batch and keeps its share), so its cost per worker
GROWS with N; with augmentation on a small model that, not the network, can be the limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: float32 gradients
BYTES_PER_WEIGHT = 4


def allreduce_bytes(trainable_params: int, workers: int) -> float:
    """Bytes each worker sends (and receives) per step in a ring all-reduce of the gradients."""
    if workers < 2:
        return 0.0
    return 2.0 * (workers - 1) / workers * trainable_params * BYTES_PER_WEIGHT


@dataclass(frozen=True)
class Prediction:
    """Predicted step of ``workers`` machines: milliseconds (compute, communication, total),
    MB sent per worker, images/s of the cluster, efficiency (compute / total)."""

    workers: int
    compute_ms: float
    comm_ms: float
    step_ms: float
    mb_per_step: float
    images_per_s: float
    efficiency: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def predict(compute_ms: float, batch_per_worker: int, trainable_params: int, workers: int,
            bandwidth_gbit: float, latency_ms: float = 0.1) -> Prediction:
    """The :class:`Prediction` for ``workers`` machines linked at ``bandwidth_gbit`` Gbit/s,
    from one worker's measured step ``compute_ms`` at ``batch_per_worker`` images."""
    sent = allreduce_bytes(trainable_params, workers)
    comm = sent * 8 / (bandwidth_gbit * 1e9) * 1000 + 2 * (workers - 1) * latency_ms
    step = compute_ms + comm
    return Prediction(workers, round(compute_ms, 2), round(comm, 2), round(step, 2),
                      round(sent / 1e6, 3), round(workers * batch_per_worker / step * 1000, 1),
                      round(compute_ms / step, 3))


def scaling_limit(compute_ms: float, batch_per_worker: int, trainable_params: int,
                  bandwidth_gbit: float, latency_ms: float = 0.1, min_efficiency: float = 0.5,
                  max_workers: int = 100_000) -> int:
    """The largest number of machines whose predicted efficiency is still ``min_efficiency``
    (half the step computing, half communicating); ``max_workers`` if it never drops."""
    n = 1
    while n < max_workers and predict(compute_ms, batch_per_worker, trainable_params, n + 1,
                                      bandwidth_gbit, latency_ms).efficiency >= min_efficiency:
        n += 1
    return n
