"""Anti-aliased downscaling inside an exported model: robustness to the resizing apps do.

kdskin trains on images resized by Pillow's anti-aliased bilinear filter
(:func:`kdskin.data.images.to_rgb_array`): every output pixel is a triangle-weighted average over
a support that grows with the reduction factor. Apps resize with their own filter: MediaPipe
Tasks' ImageClassifier and OpenCV ``INTER_LINEAR`` sample 4 neighbours whatever the reduction
(no anti-aliasing), Android's ``Bitmap.createScaledBitmap`` likewise, ``INTER_NEAREST`` one
pixel. From a 600x450 dermoscopy image down to 64x64 those alias fine texture into the image and
move the prediction (top-1 agreement with Pillow's resizing measured at 0.85-0.87 under
MediaPipe's).

The remedy here: an *app file* whose input is ``factor`` times larger (``factor * S``) and whose
first layer, :class:`PillowDownscale`, is Pillow's own bilinear reduction from ``factor * S`` to
``S``, exactly (coefficients taken from Pillow, edges renormalised as Pillow does). An app's
non-anti-aliased resize from the camera image to ``factor * S`` aliases far less (a reduction of
~2-3x instead of ~9x), and the model then does the anti-aliased part itself. The weights are
those of the ``S`` model: nothing is retrained. In TFLite the layer is PAD + DEPTHWISE_CONV_2D
(stride ``factor``) + MUL per axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kdskin.constants import INPUT_NAME, PROBS_NAME
from kdskin.errors import ModelError


def pillow_matrix(src: int, dst: int) -> np.ndarray:
    """Pillow's bilinear resize from ``src`` to ``dst`` samples as a (dst, src) float64 matrix.

    Column j is Pillow's output for a one-hot input at j (mode "F": float coefficients, the
    same ones its 8-bit path rounds to fixed point).
    """
    from PIL import Image

    eye = np.eye(src, dtype=np.float32)
    cols = [np.asarray(Image.fromarray(row[None, :], mode="F").resize(
        (dst, 1), Image.Resampling.BILINEAR), dtype=np.float64)[0] for row in eye]
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class Kernel1D:
    """One axis of the reduction: ``out[i] = norm[i] * sum_t taps[t] * x[factor*i - pad + t]``
    with zeros outside ``x`` (``pad_after`` zeros are needed at the end)."""

    factor: int
    taps: tuple[float, ...]
    pad: int
    pad_after: int
    norm: tuple[float, ...]


def pillow_kernel(factor: int, size: int) -> Kernel1D:
    """The exact :class:`Kernel1D` of Pillow's bilinear reduction from ``factor*size`` to
    ``size``; :class:`ModelError` if Pillow's matrix is not such a strided convolution."""
    if factor < 1 or size < 2:
        raise ModelError(f"downscale factor must be >= 1 and size >= 2, got {factor}, {size}")
    src = factor * size
    matrix = pillow_matrix(src, size)
    mid = size // 2
    nonzero = np.flatnonzero(matrix[mid] > 1e-12)
    first, last = int(nonzero[0]), int(nonzero[-1])
    taps = matrix[mid, first:last + 1]
    pad = factor * mid - first
    pad_after = max(0, factor * (size - 1) - pad + len(taps) - src)
    rebuilt = np.zeros_like(matrix)
    norm = np.empty(size)
    for i in range(size):
        start = factor * i - pad
        row = np.zeros(src + pad + pad_after)
        row[start + pad:start + pad + len(taps)] = taps
        row = row[pad:pad + src]
        norm[i] = 1.0 / row.sum()
        rebuilt[i] = row * norm[i]
    if not np.allclose(rebuilt, matrix, atol=1e-6):
        raise ModelError(f"Pillow's bilinear {src}->{size} reduction is not a strided "
                         f"convolution here; pick another export.app_input_factor")
    return Kernel1D(factor, tuple(float(t) for t in taps), pad, pad_after,
                    tuple(float(n) for n in norm))


@keras.saving.register_keras_serializable(package="kdskin")
class PillowDownscale(keras.layers.Layer):
    """``(b, f*S, f*S, 3)`` 0..255 -> ``(b, S, S, 3)``: Pillow's anti-aliased bilinear reduction.

    Separable: a vertical then a horizontal strided convolution with the triangle taps of
    :func:`pillow_kernel` on each channel alone (a diagonal 3x3 channel matrix: TensorFlow's CPU
    depthwise convolution refuses unequal strides on some machines), each followed by the
    per-row (per-column) edge renormalisation.
    """

    def __init__(self, factor: int, size: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.factor, self.size = int(factor), int(size)
        k = pillow_kernel(self.factor, self.size)
        self._k = k
        taps = np.asarray(k.taps, np.float32)
        eye = np.eye(3, dtype=np.float32)[None, None]
        self._vertical = taps[:, None, None, None] * eye  # (n, 1, 3, 3)
        self._horizontal = taps[None, :, None, None] * eye  # (1, n, 3, 3)
        self._norm_rows = np.asarray(k.norm, np.float32)[:, None, None]
        self._norm_cols = np.asarray(k.norm, np.float32)[None, :, None]

    def call(self, x: Any) -> Any:
        ops, k = keras.ops, self._k
        x = ops.pad(x, [[0, 0], [k.pad, k.pad_after], [0, 0], [0, 0]])
        x = ops.conv(x, self._vertical, strides=(k.factor, 1), padding="valid")
        x = x * self._norm_rows
        x = ops.pad(x, [[0, 0], [0, 0], [k.pad, k.pad_after], [0, 0]])
        x = ops.conv(x, self._horizontal, strides=(1, k.factor), padding="valid")
        return x * self._norm_cols

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "size": self.size}


def with_downscale(model: keras.Model, factor: int) -> keras.Model:
    """A deployable model (one ``"image"`` input of size S, ``{"probs"}`` output) behind a
    :class:`PillowDownscale` from ``factor * S``: input ``(b, factor*S, factor*S, 3)`` 0..255,
    output ``{"probs": (b, 7)}``. The layers and weights of ``model`` are shared."""
    size = int(model.inputs[0].shape[1])
    image = keras.Input((factor * size, factor * size, 3), name=INPUT_NAME)
    small = PillowDownscale(factor, size, name="pillow_downscale")(image)
    out = model(small)
    probs = out[PROBS_NAME] if isinstance(out, dict) else out
    probs = keras.layers.Identity(name=PROBS_NAME)(probs)
    return keras.Model(image, {PROBS_NAME: probs}, name=f"{model.name}_x{factor}")


def pillow_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Pillow bilinear resize of (N, H, W, 3) uint8 images to (N, size, size, 3) uint8."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(np.asarray(im, np.uint8)).resize(
        (size, size), Image.Resampling.BILINEAR)) for im in images])
