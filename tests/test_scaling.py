"""kdskin.scaling: the communication model behind docs/SCALING.md's prediction."""

import pytest

from kdskin.scaling import allreduce_bytes, predict, scaling_limit


def test_ring_allreduce_bytes():
    assert allreduce_bytes(1_000_000, 1) == 0.0
    assert allreduce_bytes(1_000_000, 2) == pytest.approx(4e6)  # 2 (N-1)/N x 4 B x P
    assert allreduce_bytes(1_000_000, 1000) == pytest.approx(8e6, rel=1e-2)


def test_prediction_and_where_it_stops():
    one = predict(100.0, 16, 1_000_000, 1, 10.0)
    assert (one.comm_ms, one.efficiency, one.images_per_s) == (0.0, 1.0, 160.0)
    two = predict(100.0, 16, 1_000_000, 2, 10.0)
    assert two.comm_ms == pytest.approx(4e6 * 8 / 10e9 * 1000 + 0.2)
    assert 1.9 * one.images_per_s < two.images_per_s < 2 * one.images_per_s
    slow, fast = scaling_limit(100.0, 16, 1_000_000, 1.0), scaling_limit(100.0, 16, 1_000_000, 10.0)
    assert 1 < slow < fast
    assert predict(100.0, 16, 1_000_000, fast, 10.0).efficiency >= 0.5
    assert predict(100.0, 16, 1_000_000, fast + 1, 10.0).efficiency < 0.5
