"""Training batches that replay stored views (``augment.views: K``), with the teacher's stored
targets for them when a teacher directory has them (:mod:`kdskin.teacherdir`).

Each training image has ``K`` views drawn once (:func:`kdskin.data.views.draw_views`). Epoch
``e`` feeds every image once (or, with class-balanced resampling, as many draws as the split has
images), each draw through one of its views: image ``i`` in view ``(e + offset_i) mod K`` when
every image is fed once (so ``K`` epochs see every view once), a random view per draw when
resampled. The plan is numpy, seeded by ``seed``; a fit resumed at epoch ``r`` gets the same
batches from ``r`` on. Per batch: the images (indexed in the decoded array without copying it
into TensorFlow, or decoded from their files), the view applied (:func:`~kdskin.data.views.
apply_views`), then the acquisition-shift augmentation as in :mod:`kdskin.data.pipeline`
(stateless, seeded by the batch's index).

With ``targets`` (``{teacher output: (N, K, C) logits}``), batches are ``({"image": (B, S, S,
3), "target_logits": (B, C), ...}, labels)``: the targets of the view each image is shown in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kdskin.constants import INPUT_NAME, NUM_CLASSES, target_key
from kdskin.errors import DataError


def epoch_plan(labels: np.ndarray, epoch: int, views: int, seed: int, oversample: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(image indices (N,), view indices (N,))`` fed in ``epoch``, in feeding order.

    ``oversample``: each draw picks a class uniformly among the classes present, then an image
    of it uniformly (the class-balanced resampling of the in-memory path, same epoch length).
    """
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng([int(seed), int(epoch), 0x9E])
    if oversample:
        by_class = [np.flatnonzero(labels == c) for c in range(NUM_CLASSES)]
        present = [idx for idx in by_class if len(idx)]
        classes = rng.integers(0, len(present), n)
        order = np.empty(n, np.int64)
        for c, idx in enumerate(present):
            picks = np.flatnonzero(classes == c)
            order[picks] = idx[rng.integers(0, len(idx), len(picks))]
        return order, rng.integers(0, views, n)
    offsets = np.random.default_rng([int(seed), 0x0FF]).integers(0, views, n)
    order = rng.permutation(n)
    return order, (epoch + offsets[order]) % views


def replay_dataset(labels: np.ndarray, views: np.ndarray, batch_size: int, epochs: int, *,
                   images: np.ndarray | None = None, paths: Sequence[str] | None = None,
                   image_size: int | None = None,
                   targets: Mapping[str, np.ndarray] | None = None, start_epoch: int = 0,
                   seed: int = 0, oversample: bool = False, shift: Any = None,
                   outputs: Sequence[str] | None = None) -> tuple[Any, int]:
    """``(dataset, steps_per_epoch)``: the batches of epochs ``start_epoch .. epochs - 1``.

    Args:
        labels: ``(N,)`` class indices of the training split.
        views: ``(N, K, P)`` view parameters (:mod:`kdskin.data.views`).
        images: ``(N, S, S, 3)`` uint8 decoded images, or ``paths`` (N files) with
            ``image_size`` ``S`` to decode them batch by batch.
        targets: ``{teacher output: (N, K, C)}`` stored logits, or None (no teacher).
        shift: :class:`kdskin.config.ShiftAugmentConfig` applied after the view when enabled.
        outputs: output names: labels become ``{name: labels}`` for a multi-output model.
    Pass ``steps_per_epoch`` to ``fit``: the dataset runs through every remaining epoch.
    """
    import tensorflow as tf

    from kdskin.data.images import load_image
    from kdskin.data.views import apply_views

    labels = np.asarray(labels, np.int32)
    views = np.asarray(views, np.float32)
    n = len(labels)
    if n == 0:
        raise DataError("empty split: no images to feed")
    if views.ndim != 3 or views.shape[0] != n:
        raise DataError(f"views must be (N, K, P) for the {n} training images, got {views.shape}")
    if (images is None) == (paths is None):
        raise ValueError("replay_dataset needs the decoded images or their paths, not both")
    k = views.shape[1]
    targets = {name: np.asarray(t, np.float32) for name, t in (targets or {}).items()}
    for name, t in targets.items():
        if t.shape[:2] != (n, k):
            raise DataError(f"stored targets {name!r} have shape {t.shape}; expected ({n}, {k}, "
                            f"C): one per training image and view")
    if images is not None:
        images = np.asarray(images)
        size = images.shape[1:]

        def gather(idx: np.ndarray) -> np.ndarray:
            return images[idx]
    else:
        files = list(paths)
        size = (int(image_size), int(image_size), 3)

        def gather(idx: np.ndarray) -> np.ndarray:
            return np.stack([load_image(files[i], int(image_size)) for i in idx])

    plans = [epoch_plan(labels, e, k, seed, oversample) for e in range(start_epoch, epochs)]
    order = np.concatenate([p[0] for p in plans]) if plans else np.zeros(0, np.int64)
    chosen = np.concatenate([p[1] for p in plans]) if plans else np.zeros(0, np.int64)
    steps = math.ceil(n / batch_size)
    # batches never straddle two epochs: each epoch is cut on its own
    bounds = [(e * n + s, min(e * n + s + batch_size, (e + 1) * n))
              for e in range(len(plans)) for s in range(0, n, batch_size)]
    starts = np.array([b[0] for b in bounds], np.int64)
    ends = np.array([b[1] for b in bounds], np.int64)

    def one_batch(start: Any, end: Any) -> tuple[Any, ...]:
        def load(s: np.int64, t: np.int64) -> tuple[np.ndarray, ...]:
            idx, kk = order[s:t], chosen[s:t]
            picked = [gather(idx), labels[idx], views[idx, kk]]
            picked += [targets[name][idx, kk] for name in targets]
            return tuple(picked)

        types = [tf.uint8, tf.int32, tf.float32] + [tf.float32] * len(targets)
        out = tf.numpy_function(load, [start, end], types, stateful=False)
        out[0].set_shape((None, *size))
        out[1].set_shape((None,))
        out[2].set_shape((None, views.shape[2]))
        for t in out[3:]:
            t.set_shape((None, NUM_CLASSES))
        return tuple(out)

    ds = tf.data.Dataset.from_tensor_slices((starts, ends)).map(
        one_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    names = list(targets)
    shifting = shift is not None and shift.enabled

    def finish(i: Any, batch: tuple[Any, ...]) -> tuple[Any, Any]:
        x = apply_views(tf.cast(batch[0], tf.float32), batch[2])
        if shifting:
            from kdskin.data.shift_augment import shift_augment

            x = shift_augment(x, tf.stack([tf.constant(seed, tf.int64), i]), shift)
        y = batch[1]
        if names:
            x = {INPUT_NAME: x, **{target_key(name): batch[3 + j]
                                   for j, name in enumerate(names)}}
        if outputs:
            y = {name: y for name in outputs}
        return x, y

    # the batch's index over the whole fit (a resumed fit draws the same shifts)
    ds = ds.enumerate(start=start_epoch * steps).map(
        finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps


__all__ = ["epoch_plan", "replay_dataset"]
