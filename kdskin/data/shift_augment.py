"""Acquisition-shift augmentation (``augment.shift``): the shifts of the evaluation suite
(:mod:`kdskin.data.shifts`) with random strengths, as TensorFlow ops on training batches.

Per image, each transform is applied with probability ``cfg.probability``, in this order:

1. colour gains: each channel times a factor in ``[1 - colour_gain, 1 + colour_gain]``;
   then over-exposure: a blend towards white, ``x + w (255 - x)`` with ``w`` in
   ``[0, whiten]`` (the suite's ``whiter`` shift is ``w = 0.3``);
2. zoom-out and aspect: the content shrunk to a scale in ``[1 - zoom_out, 1]`` and its width
   scaled by a factor in ``[1 / (1 + aspect), 1 + aspect]``, about the centre, the frame filled
   by reflection (``keras.ops.image.affine_transform``);
3. blur: a blend towards a Gaussian blur of sigma ``blur`` pixels (weight in ``[0, 1]``);
4. black borders: half of the images so chosen get a centred circle of diameter in
   ``[1 - border, 1 + 2 border]`` of the side (black outside), the others a black rectangular
   frame ``border / 4`` to ``border`` of the side wide;
5. JPEG: ``tf.image.adjust_jpeg_quality`` at a quality in ``[jpeg_quality, 95]``.

Random numbers are stateless (``tf.random.stateless_*``) from a ``(2,)`` seed, so a seed gives
the same batch twice. Images are float32 ``(B, S, S, 3)`` 0..255 in and out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

#: JPEG quality drawn up to this (95: Pillow's and most cameras' highest useful setting).
MAX_JPEG_QUALITY = 95


def _uniform(seed: Any, k: int, shape: Any, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, k),
                                       minval=low, maxval=high)


def _chosen(seed: Any, k: int, batch: Any, probability: float) -> tf.Tensor:
    """(B, 1, 1, 1) float32: 1 where the transform ``k`` applies to the image, else 0."""
    return tf.cast(_uniform(seed, k, (batch, 1, 1, 1), 0.0, 1.0) < probability, tf.float32)


def gaussian_kernel(sigma: float, channels: int = 3) -> np.ndarray:
    """Depthwise Gaussian kernel ``(k, k, channels, 1)``, k = 2 ceil(2 sigma) + 1, sum 1."""
    radius = max(1, int(np.ceil(2.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g2 = np.outer(g, g)
    g2 /= g2.sum()
    return np.repeat(g2[:, :, None, None], channels, axis=2).astype(np.float32)


def gaussian_blur(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """``(B, H, W, 3)`` blurred with a Gaussian of ``sigma`` pixels (reflected edges)."""
    kernel = gaussian_kernel(sigma, 3)
    r = kernel.shape[0] // 2
    padded = tf.pad(images, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    return tf.nn.depthwise_conv2d(padded, kernel, strides=[1, 1, 1, 1], padding="VALID")


def border_masks(size: int, diameters: tf.Tensor, widths: tf.Tensor, circle: tf.Tensor
                 ) -> tf.Tensor:
    """(B, S, S, 1) float32 1 inside, 0 in the black border: a centred circle of diameter
    ``diameters`` (B,) x S where ``circle`` (B,) is true, else a frame ``widths`` (B,) x S."""
    coords = tf.range(size, dtype=tf.float32) - (size - 1) / 2.0
    yy, xx = tf.meshgrid(coords, coords, indexing="ij")  # (S, S)
    radius = diameters[:, None, None] * size / 2.0
    inside_circle = tf.cast(yy ** 2 + xx ** 2 <= radius ** 2, tf.float32)
    edge = tf.minimum(size / 2.0 - tf.abs(yy), size / 2.0 - tf.abs(xx))  # (S, S) px to edge
    inside_frame = tf.cast(edge[None] > widths[:, None, None] * size, tf.float32)
    mask = tf.where(circle[:, None, None], inside_circle, inside_frame)
    return mask[..., None]


def zoom_aspect_transforms(scales: tf.Tensor, widths: tf.Tensor, size: int) -> tf.Tensor:
    """(B, 8) projective transforms (output pixel -> input pixel) that shrink the content by
    ``scales`` (B,) and scale its width by ``widths`` (B,), about the centre."""
    c = (size - 1) / 2.0
    ax = 1.0 / (scales * widths)  # input x per output x
    ay = 1.0 / scales
    zeros = tf.zeros_like(scales)
    return tf.stack([ax, zeros, c - ax * c, zeros, ay, c - ay * c, zeros, zeros], axis=1)


def shift_augment(images: tf.Tensor, seed: Any, cfg: Any) -> tf.Tensor:
    """Apply ``cfg`` (:class:`kdskin.config.ShiftAugmentConfig`) to ``images`` float32
    ``(B, S, S, 3)`` 0..255 with the stateless ``seed`` ``(2,)`` int; returns the same shape,
    float32, clipped to 0..255 (see the module docstring for the transforms)."""
    import keras

    x = tf.convert_to_tensor(images, tf.float32)
    seed = tf.cast(seed, tf.int64)
    batch = tf.shape(x)[0]
    size = int(x.shape[1])
    p = float(cfg.probability)
    if cfg.colour_gain > 0:
        gains = _uniform(seed, 1, (batch, 1, 1, 3), 1.0 - cfg.colour_gain, 1.0 + cfg.colour_gain)
        on = _chosen(seed, 2, batch, p)
        x = x * (1.0 + on * (gains - 1.0))
    if cfg.whiten > 0:
        weight = _chosen(seed, 14, batch, p) * _uniform(seed, 15, (batch, 1, 1, 1), 0.0,
                                                        cfg.whiten)
        x = x + weight * (255.0 - tf.clip_by_value(x, 0.0, 255.0))
    if cfg.zoom_out > 0 or cfg.aspect > 0:
        on = _chosen(seed, 3, batch, p)[:, 0, 0, 0]
        scales = _uniform(seed, 4, (batch,), 1.0 - cfg.zoom_out, 1.0)
        log_a = float(np.log1p(cfg.aspect))
        widths = tf.exp(_uniform(seed, 5, (batch,), -log_a, log_a))
        scales = 1.0 + on * (scales - 1.0)
        widths = 1.0 + on * (widths - 1.0)
        transforms = zoom_aspect_transforms(scales, widths, size)
        x = keras.ops.image.affine_transform(x, transforms, interpolation="bilinear",
                                             fill_mode="reflect")
    if cfg.blur > 0:
        weight = _chosen(seed, 6, batch, p) * _uniform(seed, 7, (batch, 1, 1, 1), 0.0, 1.0)
        x = x + weight * (gaussian_blur(x, float(cfg.blur)) - x)
    if cfg.border > 0:
        on = _chosen(seed, 8, batch, p)
        circle = _uniform(seed, 9, (batch,), 0.0, 1.0) < 0.5
        diameters = _uniform(seed, 10, (batch,), 1.0 - cfg.border, 1.0 + 2.0 * cfg.border)
        widths = _uniform(seed, 11, (batch,), cfg.border / 4.0, cfg.border)
        mask = border_masks(size, diameters, widths, circle)
        x = x * (1.0 - on * (1.0 - mask))
    x = tf.clip_by_value(x, 0.0, 255.0)
    if cfg.jpeg_quality < 100:
        on = _chosen(seed, 12, batch, p)[:, 0, 0, 0] > 0.5
        low = min(int(cfg.jpeg_quality), MAX_JPEG_QUALITY)
        quality = tf.cast(tf.floor(_uniform(seed, 13, (batch,), float(low),
                                            MAX_JPEG_QUALITY + 1.0)), tf.int32)

        def one(args: Any) -> tf.Tensor:
            image, q, apply = args
            return tf.cond(apply,
                           lambda: tf.image.adjust_jpeg_quality(image / 255.0, q) * 255.0,
                           lambda: image)

        x = tf.map_fn(one, (x, quality, on), fn_output_signature=tf.float32)
        x = tf.ensure_shape(x, images.shape)
    return tf.clip_by_value(x, 0.0, 255.0)


__all__ = ["border_masks", "gaussian_blur", "gaussian_kernel", "shift_augment",
           "zoom_aspect_transforms"]
