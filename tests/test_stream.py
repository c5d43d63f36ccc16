"""data.pipeline stream: training batches decoded from the files give the in-memory path's
batches (same pixels, same labels, same epoch length; only the shuffle order differs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdskin.config import Config
from kdskin.constants import NUM_CLASSES
from kdskin.data.stream import SplitFiles, stream_dataset
from kdskin.errors import KdskinError
from kdskin.pipeline.data import datasets, prepare_data
from kdskin.rundir import RunDir
from tests.conftest import write_ham


def _config(pipeline: str, balance: str = "class_weight", cache: bool = False) -> Config:
    cfg = Config()
    cfg.data.image_size = 24
    cfg.data.pipeline, cfg.data.balance, cfg.data.stream_cache = pipeline, balance, cache
    cfg.data.shuffle_buffer = 16
    cfg.augment.enabled = False
    return cfg


def _epoch(ds) -> tuple[np.ndarray, np.ndarray, list[int]]:
    images, labels, sizes = [], [], []
    for x, y in ds:
        images.append(np.asarray(x))
        labels.append(np.asarray(y))
        sizes.append(len(y))
    return np.concatenate(images), np.concatenate(labels), sizes


@pytest.fixture(scope="module")
def ham(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ham")
    write_ham(root, per_class=12, images_per_lesion=2, size=40)
    return root


def _data(ham: Path, tmp: Path, cfg: Config):
    return prepare_data(cfg, RunDir(tmp), str(ham))


def _image_sums(x: np.ndarray) -> np.ndarray:
    return np.sort(x.reshape(len(x), -1).sum(axis=1))


def test_stream_batches_have_the_memory_batches_statistics(ham, tmp_path):
    mem = _data(ham, tmp_path / "mem", _config("memory"))
    stream = _data(ham, tmp_path / "stream", _config("stream"))
    assert stream.train_files is not None and mem.train_files is None
    np.testing.assert_array_equal(stream.train_labels, mem.train_labels)
    assert stream.class_weight == mem.class_weight
    np.testing.assert_array_equal(stream.val.images, mem.val.images)
    x_mem, y_mem, sizes_mem = _epoch(datasets(_config("memory"), mem, 8)[0])
    x_str, y_str, sizes_str = _epoch(datasets(_config("stream"), stream, 8)[0])
    assert sizes_str == sizes_mem and x_str.dtype == x_mem.dtype == np.float32
    # the same images (Pillow decoder on both paths), in another order
    np.testing.assert_array_equal(_image_sums(x_str), _image_sums(x_mem))
    np.testing.assert_array_equal(np.bincount(y_str, minlength=NUM_CLASSES),
                                  np.bincount(y_mem, minlength=NUM_CLASSES))
    np.testing.assert_allclose(x_str.mean(axis=(0, 1, 2)), x_mem.mean(axis=(0, 1, 2)),
                               rtol=1e-6)
    np.testing.assert_allclose(x_str.std(axis=(0, 1, 2)), x_mem.std(axis=(0, 1, 2)), rtol=1e-6)


def test_stream_oversampling_and_cache(ham, tmp_path):
    cfg = _config("stream", balance="oversample", cache=True)
    stream = _data(ham, tmp_path / "stream", cfg)
    mem = _data(ham, tmp_path / "mem", _config("memory", balance="oversample"))
    _, y_mem, sizes_mem = _epoch(datasets(_config("memory", balance="oversample"), mem, 8)[0])
    train = datasets(cfg, stream, 8)[0]
    first = _epoch(train)
    second = _epoch(train)  # the classes read in full so far come from the on-disk cache
    assert first[2] == sizes_mem == second[2] and len(y_mem) == len(first[1])
    # classes drawn evenly (7 classes, 8 training images each here: 112 draws over two epochs)
    counts = np.bincount(np.concatenate([first[1], second[1]]), minlength=NUM_CLASSES)
    assert counts.min() > 0 and counts.max() < 3 * counts.mean(), counts
    # every drawn image is one of the training images, decoded as the in-memory path does
    known = set(_image_sums(mem.train.images.astype(np.float32)).tolist())
    for x, _, _ in (first, second):
        assert set(_image_sums(x).tolist()) <= known
    assert any(p.name.startswith("stream_24_") for p in (tmp_path / "stream" / "cache").iterdir())


def test_unreadable_files_are_dropped(ham, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    good = sorted(str(p) for p in ham.rglob("*.jpg"))[:5]
    files = SplitFiles([*good, str(bad)], np.array([0, 1, 2, 3, 4, 5]), list("abcdef"))
    x, y, _ = _epoch(stream_dataset(files, 24, 4))
    assert len(y) == 5 and 5 not in y and x.shape[1:] == (24, 24, 3)


def test_stream_refuses_the_leaky_protocol(ham, tmp_path):
    cfg = _config("stream")
    cfg.data.protocol = "paper"
    cfg.data.paper_per_class = 20
    with pytest.raises(KdskinError, match="data.pipeline=memory"):
        _data(ham, tmp_path / "run", cfg)
