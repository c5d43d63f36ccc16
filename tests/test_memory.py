"""Peak resident memory per stage (kdskin.memory) and a bound on what evaluating a
split may add to it."""

from __future__ import annotations

import numpy as np
import pytest

from kdskin import memory
from kdskin.memory import (
    METHOD_PROCESS,
    METHOD_RESET,
    measure,
    predict_in_chunks,
    status_kib,
)

STATUS = """Name:\tpython
VmPeak:\t 2000000 kB
VmHWM:\t  123456 kB
VmRSS:\t  100000 kB
Threads:\t8
"""


def test_status_kib_reads_the_fields():
    assert status_kib(STATUS, "VmHWM") == 123456
    assert status_kib(STATUS, "VmRSS") == 100000
    assert status_kib(STATUS, "VmSwap") is None
    assert status_kib("VmHWM:\t 2 mB\n", "VmHWM") == 2048
    assert status_kib("VmHWM: n/a\n", "VmHWM") is None


def test_a_block_records_its_own_peak_and_an_outer_block_includes_the_inner():
    big = 96 * 2 ** 20
    with measure() as outer:
        with measure() as inner:
            block = np.ones(big, np.uint8)  # touched pages: resident
            del block
        with measure() as after:
            small = np.ones(2 ** 20, np.uint8)
            del small
    assert inner.kib is not None and outer.kib is not None
    assert outer.kib >= inner.kib
    assert inner.method in (METHOD_RESET, METHOD_PROCESS)
    if inner.method == METHOD_RESET:
        # the freed array is not charged to the next block; its own peak is
        assert inner.kib - after.kib > 0.8 * big / 1024
    assert inner.mib == round(inner.kib / 1024, 1)


def test_measure_falls_back_without_a_reset(monkeypatch):
    monkeypatch.setattr(memory, "reset_peak", lambda: False)
    with measure() as peak:
        pass
    assert peak.method == METHOD_PROCESS and peak.kib is not None


class FakeModel:
    """``predict`` of a fixed linear map; records the number of images of each call."""

    def __init__(self, out: str = "array"):
        self.calls: list[int] = []
        self.out = out

    def predict(self, x, batch_size, verbose=0):
        assert x.dtype == np.float32
        self.calls.append(len(x))
        y = x.reshape(len(x), -1)[:, :7] * 2.0
        return {"logits": y, "probs": y + 1} if self.out == "dict" else (
            [y, y + 1] if self.out == "list" else y)


@pytest.mark.parametrize("out", ["array", "dict", "list"])
def test_predict_in_chunks_gives_the_whole_array_result(out):
    images = np.random.default_rng(0).integers(0, 256, (100, 4, 4, 3), dtype=np.uint8)
    whole, chunked = FakeModel(out), FakeModel(out)
    want = whole.predict(images.astype(np.float32), batch_size=8)
    got = predict_in_chunks(chunked, images, batch_size=8, chunk_batches=3)
    assert chunked.calls == [24, 24, 24, 24, 4]  # whole batches in every chunk but the last
    if out == "dict":
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    else:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    small = FakeModel(out)
    predict_in_chunks(small, images[:10], batch_size=8)
    assert small.calls == [10]


#: What evaluating a split may add to the process's peak, as a multiple of the split's decoded
#: (uint8) size, once the model's predict function is traced. Whole-array ``model.predict``
#: holds a float32 copy and TensorFlow's copy of it: 8x. Chunked: 2.3x measured on a 2-core CI
#: machine (Keras' own buffers on top of one chunk), so 4x catches the whole-array path.
EVAL_PEAK_MULTIPLE = 4.0


@pytest.mark.slow
def test_evaluating_a_split_adds_at_most_a_multiple_of_its_size():
    """A stage's evaluation of a generated split (kdskin's CNN, 4,000 images): its peak above
    the resident size before it stays under EVAL_PEAK_MULTIPLE x the images' bytes."""
    import keras

    from kdskin.evaluate import KerasClassifier, evaluate_arrays
    from kdskin.models import build_baseline_cnn

    keras.utils.set_random_seed(0)
    clf = KerasClassifier(build_baseline_cnn(48))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4000, 48, 48, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, len(images))
    clf.predict(images[:64])  # trace once: not the split's cost
    memory.release()
    before = memory.current_kib()
    with measure() as peak:
        _, probs = evaluate_arrays(clf, images, labels)
    if peak.method != METHOD_RESET or before is None:
        pytest.skip("no per-block peak on this system (needs /proc/self/clear_refs)")
    assert probs.shape == (len(images), 7)
    added = (peak.kib - before) * 1024
    assert added <= EVAL_PEAK_MULTIPLE * images.nbytes, (
        f"evaluating {images.nbytes / 2 ** 20:.0f} MiB of images added "
        f"{added / 2 ** 20:.0f} MiB to the peak (bound {EVAL_PEAK_MULTIPLE}x)")


def test_the_run_names_its_peak_stage():
    from kdskin.rundir import RunMetrics

    metrics = RunMetrics()
    assert metrics.peak_stage() is None
    metrics.stage_peak_rss_mib = {"data": 900.0, "student_multi_fusion": 13029.2, "trust": 5.0}
    assert metrics.peak_stage() == "student_multi_fusion"


#: The out-of-scope statistics of a split chunk by chunk: one chunk's float64 temporaries
#: (about 30 copies of 256 images) on top of the uint8 images, not 30 copies of the split.
FEATURES_PEAK_MULTIPLE = 4.0


def test_image_statistics_of_a_split_are_the_same_in_chunks_and_bounded():
    """The trust stage's image statistics of a whole split (4,000 images at 48 px): the same
    values as one call on the whole array, and a peak above the resident size before under
    FEATURES_PEAK_MULTIPLE x the images' bytes (the whole-array call needs about 30x)."""
    from kdskin.trust.image_stats import FEATURE_CHUNK, features_in_chunks, image_features

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4000, 48, 48, 3), dtype=np.uint8)
    whole = image_features(images[:FEATURE_CHUNK * 2 + 17])
    np.testing.assert_array_equal(features_in_chunks(images[:FEATURE_CHUNK * 2 + 17]), whole)
    memory.release()
    before = memory.current_kib()
    with measure() as peak:
        features = features_in_chunks(images)
    assert features.shape == (len(images), 13) and np.isfinite(features).all()
    if peak.method != METHOD_RESET or before is None:
        pytest.skip("no per-block peak on this system (needs /proc/self/clear_refs)")
    added = (peak.kib - before) * 1024
    assert added <= FEATURES_PEAK_MULTIPLE * images.nbytes, (
        f"the statistics of {images.nbytes / 2 ** 20:.0f} MiB of images added "
        f"{added / 2 ** 20:.0f} MiB to the peak (bound {FEATURES_PEAK_MULTIPLE}x)")
