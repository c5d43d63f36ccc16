"""From a split to batches: decoded arrays per split (cached), augmentation and class balance on
the training split only, and ``tf.data`` pipelines that feed ``model.fit``.

Images stay uint8 0..255 until the model: every kdskin model rescales inside, so the pipeline
only casts to float32. Augmentation uses Keras 3's own layers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kdskin.config import AugmentConfig
from kdskin.constants import NUM_CLASSES, SPLITS
from kdskin.data.datasets import LabelledImages
from kdskin.data.images import load_images
from kdskin.data.specs import (
    check_class_weight_power,
    check_logit_adjust_tau,
    check_unit_interval,
)
from kdskin.errors import DataError
from kdskin.io import atomic_write


@dataclass
class SplitArrays:
    """One split in memory: ``images`` (N, S, S, 3) uint8, ``labels`` (N,) int64, ``image_ids``."""

    images: np.ndarray
    labels: np.ndarray
    image_ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------- decoding + cache


def _cache_key(paths: Sequence[str], size: int) -> str:
    h = hashlib.sha1(str(size).encode())
    for p in paths:
        h.update(p.encode())
    return h.hexdigest()[:16]


def decode_split(dataset: LabelledImages, split: pd.DataFrame, image_size: int,
                 cache_dir: str | Path | None = None, seed: int = 0, progress: bool = True
                 ) -> tuple[dict[str, SplitArrays], list[str]]:
    """Decode every image of ``split`` once at ``image_size``; returns arrays per split name and
    the list of unreadable files (reported, skipped). Decoded pixels are cached in ``cache_dir``
    (an ``.npz`` keyed by the file list and size) so reruns skip decoding.

    Rows with ``copy > 0`` (the leaky ``paper`` protocol) are augmented copies of their image.
    ``progress``: a tqdm bar on stderr while decoding (shown only when stderr is a terminal).
    """
    paths_by_id = dict(zip(dataset.table["image_id"], dataset.table["path"], strict=True))
    unknown = sorted(set(split["image_id"]) - set(paths_by_id))
    if unknown:
        raise DataError(f"split lists {len(unknown)} image(s) not in the dataset (first: "
                        f"{unknown[0]}); recreate the split for this data folder")
    unique_ids = sorted(set(split["image_id"]))
    paths = [paths_by_id[i] for i in unique_ids]
    cache = Path(cache_dir) / f"images_{image_size}_{_cache_key(paths, image_size)}.npz" \
        if cache_dir else None
    errors: list[str] = []
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as npz:
            images, kept_ids = npz["images"], [str(i) for i in npz["ids"]]
            errors = [str(e) for e in npz["errors"]]
    else:
        images, kept, errors = load_images(paths, image_size, progress=progress)
        kept_ids = [unique_ids[i] for i in kept]
        if cache is not None:
            atomic_write(cache, lambda tmp: np.savez(  # tmp ends in .npz: no suffix added
                str(tmp), images=images, ids=np.array(kept_ids),
                errors=np.array(errors, dtype=str)))
    row_of = {image_id: i for i, image_id in enumerate(kept_ids)}
    label_of = dict(zip(dataset.table["image_id"], dataset.table["label"], strict=True))
    copies = split["copy"] if "copy" in split.columns else pd.Series(0, index=split.index)
    out = {}
    for name in SPLITS:
        rows = split[(split["split"] == name) & split["image_id"].isin(row_of)]
        idx = np.array([row_of[i] for i in rows["image_id"]], dtype=int)
        arr = images[idx] if len(idx) else np.zeros((0, image_size, image_size, 3), np.uint8)
        copy = copies.loc[rows.index].to_numpy()
        if (copy > 0).any():
            arr = arr.copy()
            arr[copy > 0] = augment_copies(arr[copy > 0], seed=seed)
        out[name] = SplitArrays(arr, np.array([label_of[i] for i in rows["image_id"]], np.int64),
                                rows["image_id"].tolist())
    return out, errors


def augment_copies(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic augmented variants of ``images`` (N, S, S, 3) uint8 (leaky protocol only)."""
    augmenter = build_augmenter(AugmentConfig(), seed=seed)
    out = []
    for start in range(0, len(images), 256):
        batch = augmenter(images[start:start + 256].astype("float32"), training=True)
        out.append(np.clip(np.asarray(batch), 0, 255).round().astype(np.uint8))
    return np.concatenate(out) if out else images


# --------------------------------------------------------------------------- augmentation


def saturation_factor(strength: float) -> tuple[float, float]:
    """``keras.layers.RandomSaturation`` factor range for a +-``strength`` saturation change.

    Keras 3's ``RandomSaturation(factor)`` is NOT symmetric around "no change": ``factor=0.5`` is
    the identity, ``0`` greyscale and ``1`` full saturation, and a single float ``f`` samples from
    ``(0, f)``, so ``RandomSaturation(0.2)`` turns most images nearly grey (it multiplies the
    saturation by ``f / (1 - f)`` <= 0.25). kdskin's ``augment.saturation: s`` means "multiply the
    saturation by a factor in ``[1 - s, 1 + s]``", i.e. Keras factors ``m / (1 + m)``.
    """
    check_unit_interval("augment.saturation", strength)
    lo, hi = 1.0 - strength, 1.0 + strength
    return (lo / (1.0 + lo), hi / (1.0 + hi))


def build_augmenter(cfg: AugmentConfig, seed: int | None = None):
    """A ``keras.Sequential`` of Keras 3 augmentation layers for 0..255 float images, or None."""
    import keras

    if not cfg.enabled:
        return None
    rng = (seed or 0) * 7919
    layers = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=rng + 1))
    if cfg.rotation > 0:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect",
                                                  seed=rng + 2))
    if cfg.zoom > 0:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=rng + 3))
    if cfg.brightness > 0:
        layers.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255),
                                                    seed=rng + 4))
    if cfg.contrast > 0:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255),
                                                  seed=rng + 5))
    if cfg.hue > 0:
        layers.append(keras.layers.RandomHue(cfg.hue, value_range=(0, 255), seed=rng + 6))
    if cfg.saturation > 0:
        layers.append(keras.layers.RandomSaturation(saturation_factor(cfg.saturation),
                                                    value_range=(0, 255), seed=rng + 7))
    if not layers:
        return None
    return keras.Sequential(layers, name="augment")


# --------------------------------------------------------------------------- class balance


def class_weights(labels: np.ndarray, power: float = 1.0) -> dict[int, float]:
    """Class weights ``(n / (k * count_c)) ** power`` from the TRAINING labels (absent class: 0).

    ``power`` 1 is the usual "balanced" weighting (every class weighs the same in the loss);
    0.5 tempers it (square root), trading some minority-class recall for overall accuracy; 0
    weighs every image the same. The weights are rescaled so the average weight per training
    image is 1, keeping the loss (and so the learning rate) on the scale of plain CE.
    """
    check_class_weight_power(power)
    counts = np.bincount(np.asarray(labels, int), minlength=NUM_CLASSES)
    present = counts > 0
    n, k = counts.sum(), present.sum()
    raw = np.zeros(NUM_CLASSES)
    raw[present] = (n / (k * counts[present])) ** power
    raw *= n / float((raw * counts).sum())
    return {c: float(raw[c]) for c in range(NUM_CLASSES)}


def logit_adjustment(labels: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """``tau * log(prior_c)`` from the TRAINING labels, shape ``(NUM_CLASSES,)`` float32.

    Added to the logits inside the training cross-entropy only (the logit-adjusted loss of
    Menon et al. 2021; ``tau`` 1 is the balanced softmax of Ren et al. 2020): the model learns
    logits whose argmax is balanced over classes, and predicts with its raw logits. A class
    absent from the training labels counts as one image (a finite offset).
    """
    check_logit_adjust_tau(tau)
    counts = np.maximum(np.bincount(np.asarray(labels, int), minlength=NUM_CLASSES), 1)
    return (float(tau) * np.log(counts / counts.sum())).astype("float32")


# --------------------------------------------------------------------------- tf.data


def make_tf_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *,
                    training: bool = False, augment: AugmentConfig | None = None,
                    oversample: bool = False, seed: int = 0,
                    targets: Sequence[str] | None = None, cache: bool = True,
                    unshifted_view: bool = False):
    """A ``tf.data.Dataset`` of ``(images float32 (B,S,S,3) 0..255, labels int32 (B,))``.

    ``training`` shuffles, and applies ``augment`` (its Keras layers, then its acquisition
    shifts ``augment.shift``, :mod:`kdskin.data.shift_augment`) and ``oversample``
    (class-balanced sampling
    with replacement, same epoch length); both are refused outside training so evaluation data
    are never altered. ``targets``: output names; labels become ``{name: labels}`` for models
    with several outputs. ``unshifted_view``: see :func:`finish_batches`.
    """
    import tensorflow as tf

    if not training and (oversample or (augment is not None and augment.enabled)):
        raise ValueError("augmentation and oversampling apply to the training split only")
    images = np.asarray(images)
    labels = np.asarray(labels, np.int32)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise DataError(f"images must be (N, S, S, 3) with one label each, got {images.shape} "
                        f"and {labels.shape}")
    if len(images) == 0:
        raise DataError("empty split: no images to feed")
    if oversample:
        by_class = [np.flatnonzero(labels == c) for c in range(NUM_CLASSES)]
        present = [idx for idx in by_class if len(idx)]
        parts = [tf.data.Dataset.from_tensor_slices((images[idx], labels[idx]))
                 .shuffle(len(idx), seed=seed + c, reshuffle_each_iteration=True).repeat()
                 for c, idx in enumerate(present)]
        ds = tf.data.Dataset.sample_from_datasets(parts, weights=[1 / len(parts)] * len(parts),
                                                  seed=seed).take(len(images))
    else:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if cache:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return finish_batches(ds, batch_size, training=training, augment=augment, seed=seed,
                          targets=targets, unshifted_view=unshifted_view)


def finish_batches(ds, batch_size: int, *, training: bool = False,
                   augment: AugmentConfig | None = None, seed: int = 0,
                   targets: Sequence[str] | None = None, unshifted_view: bool = False):
    """``(image uint8 (S,S,3), label)`` elements -> batches of ``(float32 0..255, int32)``,
    augmented when ``training`` (Keras 3 layers, seeded), labels as ``{name: labels}`` for
    ``targets``, prefetched. Shared by the in-memory and the streaming path.

    ``unshifted_view`` (a distillation stage with ``distill.teacher_view: unshifted``): when the
    acquisition-shift augmentation applies, the images come as ``{"image": shifted,
    "teacher_image": the same images before the shift}`` (both ``(B, S, S, 3)``; the Keras
    layers' augmentation is shared); without the shift augmentation it changes nothing.
    """
    import tensorflow as tf

    from kdskin.constants import INPUT_NAME, TEACHER_INPUT_NAME

    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    augmenter = build_augmenter(augment, seed) if (training and augment is not None) else None
    if augmenter is not None:
        ds = ds.map(lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None and augment.enabled and augment.shift.enabled:
        from kdskin.data.shift_augment import shift_augment

        shift = augment.shift
        # stateless, seeded by (seed, batch index): the same batch index draws the same
        # strengths every epoch, on other images (the split is reshuffled each epoch)

        def shifted(i, xy):
            x, y = xy
            moved = shift_augment(x, tf.stack([tf.constant(seed, tf.int64), i]), shift)
            return ({INPUT_NAME: moved, TEACHER_INPUT_NAME: x} if unshifted_view else moved), y

        ds = ds.enumerate().map(shifted, num_parallel_calls=tf.data.AUTOTUNE)
    if targets:
        names = list(targets)
        ds = ds.map(lambda x, y: (x, {name: y for name in names}))
    return ds.prefetch(tf.data.AUTOTUNE)
