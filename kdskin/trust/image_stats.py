"""An out-of-scope score from the image itself: distance to the training images in a small space
of image statistics (colour, saturation, texture, sharpness, exposure, centring).

Why: a classifier's own confidence (maximum softmax) is a poor guard against inputs unlike its
training data -- a uniform colour, noise or a landscape can get a confident class (measured in
kdskin's trust stage, where both scores are compared). Dermoscopic images share simple
statistics: skin-coloured, moderately saturated, a darker lesion near the centre, smooth but not
blank texture, neither blown out nor black. A Gaussian fitted to those statistics of the
training images scores each new image by minus its squared Mahalanobis distance (higher = more
in scope), so the same threshold logic as :mod:`kdskin.trust.ood` applies.

Pure NumPy; ``tflite/classify.py`` carries an identical copy of :func:`image_features` and
:func:`image_score` (a test keeps them equal), so deployed files apply the same check.

Shapes: ``images`` ``(N, S, S, 3)`` uint8 RGB at the model's input size; features ``(N, F)``.
:func:`image_features` holds about 30 float64 copies of its batch at once (2 GB for 1,000
images at 96 px); a whole split goes through :func:`features_in_chunks`, which gives the same
values (each image's statistics are its own) with the memory of one chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdskin.errors import DataError

#: Name of this score in decision rules (``DecisionRules.ood_score``).
IMAGE_STATS = "image_stats"
#: The statistics, in the order of :func:`image_features`' columns.
FEATURES: tuple[str, ...] = (
    "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "saturation_mean",
    "saturation_std", "log_gradient", "log_laplacian_var", "bright_fraction", "dark_fraction",
    "centre_minus_border",
)


def image_features(images: Any) -> np.ndarray:
    """``(N, 13)`` statistics of uint8 RGB images ``(N, S, S, 3)`` (see :data:`FEATURES`)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] < 4 or x.shape[2] < 4:
        raise DataError(f"images must be (N, S, S, 3) RGB, got shape {x.shape}")
    x = x.astype(np.float64) / 255.0
    n = x.shape[0]
    flat = x.reshape(n, -1, 3)
    mean, std = flat.mean(axis=1), flat.std(axis=1)
    hi, lo = x.max(axis=-1), x.min(axis=-1)
    sat = (hi - lo) / np.maximum(hi, 1e-6)
    gray = x @ np.array([0.299, 0.587, 0.114])
    gx, gy = np.diff(gray, axis=2), np.diff(gray, axis=1)
    gradient = 0.5 * (np.abs(gx).mean(axis=(1, 2)) + np.abs(gy).mean(axis=(1, 2)))
    lap = (4 * gray[:, 1:-1, 1:-1] - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1]
           - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:])
    h, w = gray.shape[1:]
    centre = gray[:, h // 4: h - h // 4, w // 4: w - w // 4].mean(axis=(1, 2))
    border = (gray.sum(axis=(1, 2)) - centre * (h - 2 * (h // 4)) * (w - 2 * (w // 4))) / max(
        h * w - (h - 2 * (h // 4)) * (w - 2 * (w // 4)), 1)
    return np.column_stack([
        mean, std, sat.mean(axis=(1, 2)), sat.std(axis=(1, 2)),
        np.log(gradient + 1e-4), np.log(lap.var(axis=(1, 2)) + 1e-6),
        (gray > 0.98).mean(axis=(1, 2)), (gray < 0.02).mean(axis=(1, 2)), centre - border])


#: Images per chunk of :func:`features_in_chunks`.
FEATURE_CHUNK = 256


def features_in_chunks(images: Any, chunk: int = FEATURE_CHUNK) -> np.ndarray:
    """:func:`image_features` of ``images`` ``(N, S, S, 3)``, ``chunk`` images at a time: the
    same ``(N, F)`` values, with the temporaries of one chunk instead of the whole set."""
    x = np.asarray(images)
    if x.ndim != 4 or len(x) <= chunk:
        return image_features(x)
    return np.concatenate([image_features(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def fit_image_gaussian(features: Any, shrinkage: float = 0.05) -> dict[str, list]:
    """Mean and precision (inverse covariance, shrunk towards its diagonal by ``shrinkage``) of
    training-image features ``(N, F)``; JSON-ready ``{"mean", "precision"}``."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] <= f.shape[1]:
        raise DataError(f"need more images than statistics to fit the out-of-scope check, got "
                        f"features of shape {f.shape}")
    mean = f.mean(axis=0)
    cov = np.cov(f, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov)) + 1e-9 * np.eye(len(mean))
    return {"mean": mean.tolist(), "precision": np.linalg.inv(cov).tolist()}


def image_score(features: Any, params: dict[str, Any]) -> np.ndarray:
    """Minus the squared Mahalanobis distance ``(N,)`` of ``features`` ``(N, F)`` to the fitted
    Gaussian (higher = more like the training images)."""
    f = np.asarray(features, dtype=np.float64)
    mean = np.asarray(params["mean"], dtype=np.float64)
    precision = np.asarray(params["precision"], dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != mean.size or precision.shape != (mean.size, mean.size):
        raise DataError(f"features {f.shape} do not match the fitted check ({mean.size} "
                        f"statistics); refit it")
    d = f - mean
    return -np.einsum("ni,ij,nj->n", d, precision, d)
