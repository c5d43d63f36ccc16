"""LIME saliency maps for any classifier ``uint8 images (N, S, S, 3) -> probs (N, 7)``.

Works the same for a ``.keras`` model (:func:`kdskin.explain.cams.predict_probs_fn`) and a
``.tflite`` file (``kdskin.export.litert.TFLiteClassifier(path).predict``): the model's own
preprocessing is inside it, so ``predict_fn`` takes the raw 0..255 pixels (preprocessing is
folded into ``classifier_fn``).

Reproducibility (lime#477): ``lime_image``'s ``random_seed`` only seeds the segmentation; the
perturbation sampler and the ridge regression use the explainer's ``random_state``. kdskin
builds a fresh ``LimeImageExplainer(random_state=seed)`` for every image and segments with a
deterministic SLIC, so one seed gives one map. The sampler is lime's own
(``random_state.randint(0, 2, num_samples * n_segments)``), vectorised and without its progress
bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from lime import lime_image
from skimage.segmentation import slic

from kdskin.errors import ModelError
from kdskin.explain.cams import ClassIndex, as_image_batch, class_indices

PredictFn = Callable[[np.ndarray], np.ndarray]


class _Explainer(lime_image.LimeImageExplainer):
    """lime's image explainer with a vectorised, silent ``data_labels`` (same sampling)."""

    def data_labels(self, image: np.ndarray, fudged_image: np.ndarray, segments: np.ndarray,
                    classifier_fn: PredictFn, num_samples: int, batch_size: int = 10
                    ) -> tuple[np.ndarray, np.ndarray]:
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape(
            (num_samples, n_features))
        data[0, :] = 1
        labels = []
        for start in range(0, num_samples, batch_size):
            rows = data[start:start + batch_size]
            off = (rows[:, segments] == 0)[..., None]  # (b, S, S, 1): segment switched off
            labels.append(np.asarray(classifier_fn(np.where(off, fudged_image, image))))
        return data, np.concatenate(labels)


def segment(image: np.ndarray, num_segments: int) -> np.ndarray:
    """SLIC superpixels of one image (S, S, 3) -> labels (S, S) int, 0..K-1 contiguous."""
    labels = slic(image, n_segments=num_segments, compactness=10.0, sigma=1.0, start_label=0,
                  channel_axis=-1)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


class LimeExplainer:
    """LIME (Ribeiro et al.) on SLIC superpixels; callable like the CAM explainers.

    ``predict_fn``: uint8 images (N, S, S, 3) 0..255 -> probabilities (N, C). The map is the
    class's positive superpixel weights, scaled so the largest is 1 (all zeros when no
    superpixel supports the class). ``num_samples`` perturbed images per explained image.
    ``hide``: what a switched-off superpixel shows: ``"mean"`` (default) the whole image's mean
    colour; ``"segment_mean"`` the superpixel's own mean colour (lime's default, which hides
    almost nothing of a uniform superpixel such as a flat lesion region); or a pixel value.
    ``seed`` fixes the sampling, so the same seed gives the same map.
    """

    method = "lime"

    def __init__(self, predict_fn: PredictFn, num_samples: int = 1000, num_segments: int = 50,
                 seed: int = 0, batch_size: int = 100, hide: str | float = "mean"):
        if not callable(predict_fn):
            raise ModelError(f"predict_fn must be callable (images -> probabilities), got "
                             f"{type(predict_fn).__name__}")
        if num_samples < 2 or num_segments < 2:
            raise ModelError(f"LIME needs num_samples >= 2 and num_segments >= 2, got "
                             f"{num_samples} and {num_segments}")
        self.predict_fn = predict_fn
        self.num_samples = int(num_samples)
        self.num_segments = int(num_segments)
        self.seed = int(seed)
        self.batch_size = max(1, int(batch_size))
        if not (hide in ("mean", "segment_mean") or isinstance(hide, int | float)):
            raise ModelError(f"LIME hide must be 'mean', 'segment_mean' or a pixel value, got "
                             f"{hide!r}")
        self.hide = hide

    def _predict(self, images: np.ndarray) -> np.ndarray:
        probs = np.asarray(self.predict_fn(np.asarray(images, dtype=np.uint8)), np.float64)
        if probs.ndim != 2 or len(probs) != len(images):
            raise ModelError(f"predict_fn returned shape {probs.shape} for {len(images)} "
                             f"images; it must return probabilities (N, classes)")
        return probs

    def explain_one(self, image: np.ndarray, class_index: int) -> tuple[np.ndarray, np.ndarray]:
        """One image (S, S, 3) -> (map (S, S) in [0, 1], segment labels (S, S))."""
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        segments = segment(image, self.num_segments)
        explainer = _Explainer(random_state=self.seed)
        if self.hide == "mean":
            hide_color: Any = tuple(float(v) for v in image.reshape(-1, 3).mean(axis=0))
        else:
            hide_color = None if self.hide == "segment_mean" else float(self.hide)
        exp = explainer.explain_instance(
            image, self._predict, labels=(int(class_index),), top_labels=None,
            hide_color=hide_color,
            num_samples=self.num_samples, batch_size=self.batch_size,
            segmentation_fn=lambda _: segments, random_seed=self.seed)
        weights = np.zeros(segments.max() + 1, np.float64)
        for seg, weight in exp.local_exp[int(class_index)]:
            weights[seg] = weight
        weights = np.nan_to_num(np.maximum(weights, 0.0))
        top = weights.max()
        scaled = weights / top if top > 0 else weights
        return scaled[segments].astype(np.float32), segments

    def __call__(self, images: Any, class_index: ClassIndex = None) -> np.ndarray:
        """``images`` (N, S, S, 3) 0..255 -> maps (N, S, S) float32 in [0, 1] (2-D for one
        image). ``class_index`` None explains each image's predicted class.

        After a call, ``last_class_indices`` and ``last_probs`` hold the explained classes and
        the probabilities of the unmodified images.
        """
        batch, single = as_image_batch(images, None)
        batch = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        probs = self._predict(batch)
        cls = class_indices(class_index, probs.argmax(axis=1), probs.shape[1])
        maps = np.stack([self.explain_one(img, c)[0] for img, c in zip(batch, cls, strict=True)])
        self.last_class_indices = cls
        self.last_probs = probs.astype(np.float32)
        return maps[0] if single else maps
