"""Replayed views and stored targets (kdskin.data.replay)."""

from __future__ import annotations

import numpy as np
import pytest

from kdskin.config import AugmentConfig, ShiftAugmentConfig
from kdskin.constants import INPUT_NAME, target_key
from kdskin.data.replay import epoch_plan, replay_dataset
from kdskin.data.views import apply_views, draw_views


def _data(n: int = 40, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.array([i % 7 for i in range(n)])
    labels[: n // 2] = 5  # a majority class
    return images, labels


def test_every_view_once_in_k_epochs_without_resampling():
    _, labels = _data()
    k = 4
    seen = np.zeros((len(labels), k), int)
    for e in range(k):
        order, view = epoch_plan(labels, e, k, seed=1, oversample=False)
        assert sorted(order) == list(range(len(labels)))
        seen[order, view] += 1
    assert (seen == 1).all()
    again = epoch_plan(labels, 2, k, seed=1, oversample=False)
    np.testing.assert_array_equal(again[0], epoch_plan(labels, 2, k, 1, False)[0])


def test_resampled_epochs_balance_the_classes():
    _, labels = _data(700)
    order, view = epoch_plan(labels, 0, 8, seed=0, oversample=True)
    counts = np.bincount(labels[order], minlength=7)
    assert len(order) == 700 and counts.min() > 70 and counts.max() < 130
    assert view.min() >= 0 and view.max() < 8


def test_batches_carry_the_stored_targets_of_the_view_shown():
    images, labels = _data()
    k = 3
    views = draw_views(len(labels), k, AugmentConfig(), seed=0)
    # the target of (image i, view j) encodes i and j
    code = np.arange(len(labels))[:, None] * 10 + np.arange(k)[None, :]
    stored = np.repeat(code[..., None], 7, axis=-1).astype(np.float32)
    ds, steps = replay_dataset(labels, views, 8, epochs=2, images=images,
                               targets={"logits": stored}, seed=3)
    batches = list(ds)
    assert steps == 5 and len(batches) == 10
    order0, view0 = epoch_plan(labels, 0, k, 3, False)
    x, y = batches[0]
    np.testing.assert_array_equal(y.numpy(), labels[order0[:8]])
    got = x[target_key("logits")].numpy()[:, 0]
    np.testing.assert_array_equal(got, order0[:8] * 10 + view0[:8])
    expected = apply_views(images[order0[:8]].astype(np.float32), views[order0[:8], view0[:8]])
    np.testing.assert_allclose(x[INPUT_NAME].numpy(), np.asarray(expected), atol=1e-3)
    # a fit resumed at epoch 1 gets the batches of epoch 1
    resumed, _ = replay_dataset(labels, views, 8, epochs=2, images=images,
                                targets={"logits": stored}, seed=3, start_epoch=1)
    first = next(iter(resumed))
    np.testing.assert_array_equal(first[1].numpy(), batches[5][1].numpy())


def test_files_and_arrays_give_the_same_batches(tmp_path):
    from PIL import Image

    images, labels = _data(12)
    paths = []
    for i, img in enumerate(images):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    views = draw_views(12, 2, AugmentConfig(), seed=1)
    shift = ShiftAugmentConfig(enabled=True, jpeg_quality=100)
    a, _ = replay_dataset(labels, views, 5, 1, images=images, seed=0, shift=shift)
    b, _ = replay_dataset(labels, views, 5, 1, paths=paths, image_size=16, seed=0, shift=shift)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        np.testing.assert_allclose(xa.numpy(), xb.numpy(), atol=1e-3)


def test_bad_stores_are_refused():
    from kdskin.errors import DataError

    images, labels = _data()
    views = draw_views(len(labels), 2, AugmentConfig(), seed=0)
    with pytest.raises(DataError, match="expected \\(40, 2, C\\)"):
        replay_dataset(labels, views, 8, 1, images=images,
                       targets={"logits": np.zeros((40, 3, 7), np.float32)})
    with pytest.raises(DataError, match="views must be"):
        replay_dataset(labels, views[:5], 8, 1, images=images)
