"""Augmented views as parameters: drawn once, replayed at any resolution.

A *view* of a training image is the augmentation of ``augment`` (flips, rotation, zoom,
brightness, contrast, hue, saturation: the ranges of the Keras layers of
:func:`kdskin.data.pipeline.build_augmenter`) written as :data:`VIEW_PARAMS` numbers. The
geometry is defined in normalised coordinates (the image's centre at 0, its edges at +-1), so a
view applied to the image at the teacher's size and to the same image at the student's size
gives the same picture at two resolutions: what stored targets need (the teacher labels view
``k`` once; the student replays view ``k`` later, :mod:`kdskin.data.replay`).

:func:`draw_views` is numpy (seeded, no TensorFlow); :func:`apply_views` is TensorFlow, for
``tf.data`` batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The numbers of one view, in this order (``(..., len(VIEW_PARAMS))`` arrays): horizontal and
#: vertical flip (0 or 1), rotation angle (radians), scale of the sampled region (> 1 zooms
#: out, reflected), brightness offset (0..255 units), contrast factor, hue offset (a fraction of
#: the hue circle), saturation factor.
VIEW_PARAMS: tuple[str, ...] = ("flip_h", "flip_v", "angle", "scale", "brightness", "contrast",
                                "hue", "saturation")
NUM_VIEW_PARAMS = len(VIEW_PARAMS)
#: The view that changes nothing.
IDENTITY_VIEW = np.array([0, 0, 0, 1, 0, 1, 0, 1], np.float32)


def view_settings(augment: Any) -> dict[str, Any]:
    """The ``augment`` settings a view depends on (what a store of views must match)."""
    return {"enabled": bool(augment.enabled), "flip": bool(augment.flip),
            **{k: float(getattr(augment, k))
               for k in ("rotation", "zoom", "brightness", "contrast", "hue", "saturation")}}


def draw_views(n: int, k: int, augment: Any, seed: int) -> np.ndarray:
    """``(n, k, P)`` float32: ``k`` views of each of ``n`` images, drawn from ``augment``
    (:class:`kdskin.config.AugmentConfig`) with ``numpy`` seeded by ``seed``. With
    ``augment.enabled`` false every view is :data:`IDENTITY_VIEW`. Every view is drawn (a
    store's views are the epochs' augmentations; test-time augmentation is :func:`flip_views`).
    """
    if n < 0 or k < 1:
        raise ValueError(f"draw_views needs n >= 0 images and k >= 1 views, got {n}, {k}")
    out = np.broadcast_to(IDENTITY_VIEW, (n, k, NUM_VIEW_PARAMS)).copy()
    if not augment.enabled:
        return out
    rng = np.random.default_rng([int(seed), 0x7615])
    shape = (n, k)
    if augment.flip:
        out[..., 0] = rng.integers(0, 2, shape)
        out[..., 1] = rng.integers(0, 2, shape)
    turn = 2.0 * np.pi * float(augment.rotation)
    out[..., 2] = rng.uniform(-turn, turn, shape)
    z = float(augment.zoom)
    out[..., 3] = rng.uniform(1.0 - z, 1.0 + z, shape)
    b = 255.0 * float(augment.brightness)
    out[..., 4] = rng.uniform(-b, b, shape)
    c = float(augment.contrast)
    out[..., 5] = rng.uniform(1.0 - c, 1.0 + c, shape)
    h = float(augment.hue)
    out[..., 6] = rng.uniform(-h, h, shape)
    s = float(augment.saturation)
    out[..., 7] = rng.uniform(1.0 - s, 1.0 + s, shape)
    return out.astype(np.float32)


def flip_views(views: np.ndarray) -> np.ndarray:
    """``views`` ``(..., P)`` whose pictures are the mirror images of those of ``views``
    (test-time augmentation of a store's targets). The flip acts on the output coordinates
    before the rotation (:func:`view_transforms`), so toggling it mirrors the picture."""
    out = np.array(views, np.float32, copy=True)
    out[..., 0] = 1.0 - out[..., 0]
    return out


def view_transforms(params: Any, height: int, width: int) -> Any:
    """``(B, 8)`` projective transforms (output pixel -> input pixel, as
    ``keras.ops.image.affine_transform`` takes them) of the views ``params`` ``(B, P)`` for an
    image of ``height`` x ``width`` pixels: flips, rotation and scale about the centre in
    normalised coordinates."""
    import tensorflow as tf

    p = tf.convert_to_tensor(params, tf.float32)
    fh = 1.0 - 2.0 * p[:, 0]
    fv = 1.0 - 2.0 * p[:, 1]
    cos, sin, s = tf.cos(p[:, 2]), tf.sin(p[:, 2]), p[:, 3]
    # normalised input = R(angle) @ diag(s fh, s fv) @ normalised output
    m00, m01 = cos * s * fh, -sin * s * fv
    m10, m11 = sin * s * fh, cos * s * fv
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    hx, hy = width / 2.0, height / 2.0
    a0, a1 = m00, m01 * (hx / hy)
    b0, b1 = m10 * (hy / hx), m11
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, cx - a0 * cx - a1 * cy, b0, b1, cy - b0 * cx - b1 * cy,
                     zeros, zeros], axis=1)


def apply_views(images: Any, params: Any) -> Any:
    """``images`` ``(B, H, W, 3)`` 0..255 (uint8 or float32) seen through ``params``
    ``(B, P)``; the same shape, float32, 0..255. Geometry first (bilinear, reflected), then
    brightness, contrast (about each image's channel means), hue and saturation, clipped to
    0..255 after each."""
    import keras
    import tensorflow as tf

    x = tf.cast(images, tf.float32)  # uint8 decoded images or float32
    p = tf.convert_to_tensor(params, tf.float32)
    height, width = int(x.shape[1]), int(x.shape[2])
    x = keras.ops.image.affine_transform(x, view_transforms(p, height, width),
                                         interpolation="bilinear", fill_mode="reflect")
    x = tf.clip_by_value(x + p[:, 4, None, None, None], 0.0, 255.0)
    mean = tf.reduce_mean(x, axis=(1, 2), keepdims=True)
    x = tf.clip_by_value((x - mean) * p[:, 5, None, None, None] + mean, 0.0, 255.0)
    hsv = tf.image.rgb_to_hsv(x / 255.0)
    hue = tf.math.floormod(hsv[..., 0] + p[:, 6, None, None], 1.0)
    sat = tf.clip_by_value(hsv[..., 1] * p[:, 7, None, None], 0.0, 1.0)
    x = tf.image.hsv_to_rgb(tf.stack([hue, sat, hsv[..., 2]], axis=-1)) * 255.0
    return tf.clip_by_value(x, 0.0, 255.0)


__all__ = ["IDENTITY_VIEW", "NUM_VIEW_PARAMS", "VIEW_PARAMS", "apply_views", "draw_views",
           "flip_views", "view_settings", "view_transforms"]
