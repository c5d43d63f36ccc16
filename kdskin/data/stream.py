"""Training batches streamed from the image files (``data.pipeline: stream``): memory flat in
the number of images.

The in-memory path (:func:`kdskin.data.pipeline.make_tf_dataset`) decodes every image once into
an ``(N, S, S, 3)`` array. Here ``tf.data`` reads, decodes and resizes each file when its batch
is needed, with the same decoder (:func:`kdskin.data.images.load_image`: Pillow, anti-aliased
bilinear), so the pixels are identical and only the order of the shuffle differs:

* without a cache, the file list (strings only) is shuffled whole each epoch, then decoded;
* with ``cache_file``, decoded images are written once to an on-disk ``tf.data`` cache, and
  later epochs mix them in a bounded shuffle buffer of ``shuffle_buffer`` images;
* ``oversample`` draws classes evenly from per-class file streams (same epoch length);
* unreadable files are dropped (the in-memory path reports and skips them the same way).

Augmentation and the multi-output targets are the in-memory path's own (shared code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdskin.config import AugmentConfig
from kdskin.constants import NUM_CLASSES
from kdskin.data.images import load_image
from kdskin.errors import DataError


@dataclass
class SplitFiles:
    """One split as files: ``paths`` (N,), ``labels`` (N,) int64, ``image_ids`` (N,)."""

    paths: list[str]
    labels: np.ndarray
    image_ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _decoder(image_size: int):
    """``path -> (image (S, S, 3) uint8, ok)`` as a ``tf.data`` map function."""
    import tensorflow as tf

    blank = np.zeros((image_size, image_size, 3), np.uint8)

    def load(path: bytes) -> tuple[np.ndarray, np.bool_]:
        try:
            return load_image(path.decode(), image_size), np.bool_(True)
        except DataError:
            return blank, np.bool_(False)

    def decode(path, label):
        image, ok = tf.numpy_function(load, [path], [tf.uint8, tf.bool], stateful=False)
        image.set_shape((image_size, image_size, 3))
        ok.set_shape(())
        return image, label, ok

    return decode


def _decoded(ds, image_size: int):
    """``(path, label)`` elements -> ``(image uint8, label)``, unreadable files dropped."""
    import tensorflow as tf

    return (ds.map(_decoder(image_size), num_parallel_calls=tf.data.AUTOTUNE)
            .filter(lambda image, label, ok: ok)
            .map(lambda image, label, ok: (image, label)))


def stream_dataset(files: SplitFiles, image_size: int, batch_size: int, *,
                   training: bool = False, augment: AugmentConfig | None = None,
                   oversample: bool = False, seed: int = 0, shuffle_buffer: int = 1024,
                   cache_file: str | Path | None = None, targets: Sequence[str] | None = None,
                   unshifted_view: bool = False):
    """A ``tf.data.Dataset`` of ``(images float32 (B,S,S,3) 0..255, labels int32 (B,))`` read
    from ``files``; what :func:`kdskin.data.pipeline.make_tf_dataset` gives for the decoded
    arrays (same pixels, same augmentation and balance rules), decoded batch by batch.

    ``cache_file``: prefix of an on-disk ``tf.data`` cache of the decoded images (written during
    the first epoch); ``shuffle_buffer``: images mixed after the cache. ``unshifted_view``: see
    :func:`kdskin.data.pipeline.finish_batches`.
    """
    import tensorflow as tf

    from kdskin.data.pipeline import finish_batches

    if not training and (oversample or (augment is not None and augment.enabled)):
        raise ValueError("augmentation and oversampling apply to the training split only")
    if len(files) == 0:
        raise DataError("empty split: no images to feed")
    paths = np.asarray(files.paths, dtype=str)
    labels = np.asarray(files.labels, np.int32)
    buffer = max(1, int(shuffle_buffer))

    def part(idx: np.ndarray, suffix: str, part_seed: int):
        ds = tf.data.Dataset.from_tensor_slices((paths[idx], labels[idx]))
        if cache_file is not None:
            ds = _decoded(ds, image_size).cache(f"{cache_file}{suffix}")
            return ds.shuffle(min(buffer, len(idx)), seed=part_seed,
                              reshuffle_each_iteration=True) if training else ds
        if training:  # the file list (strings) shuffled whole, then decoded
            ds = ds.shuffle(len(idx), seed=part_seed, reshuffle_each_iteration=True)
        return ds

    if oversample:
        parts = [part(idx, f"_class{c}", seed + c).repeat()
                 for c in range(NUM_CLASSES)
                 if len(idx := np.flatnonzero(labels == c))]
        ds = tf.data.Dataset.sample_from_datasets(parts, weights=[1 / len(parts)] * len(parts),
                                                  seed=seed).take(len(labels))
    else:
        ds = part(np.arange(len(labels)), "", seed)
    if cache_file is None:
        ds = _decoded(ds, image_size)
    return finish_batches(ds, batch_size, training=training, augment=augment, seed=seed,
                          targets=targets, unshifted_view=unshifted_view)
