"""Score-CAM overlays of a fixed image set as TensorBoard image summaries during training.

The callback owns its writer (``tf.summary.create_file_writer(log_dir)``, e.g.
``RUN_DIR/logs/scorecam/student``) and writes with step = epoch; it never touches the
TensorBoard callback's private writers. Each summary holds one picture per image (the image and
its overlay side by side) for the image's TRUE class, so the slider shows how the evidence for
the right class moves over epochs. A distiller is explained through its ``.student``.

TensorFlow's ``tf.summary.image`` lives in the ``tensorboard`` package; where that is not
installed the same summary (PNG strings under the "images" plugin, as TensorBoard writes it) is
written with ``tf.summary.write``, so the event files read the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kdskin.constants import CLASSES
from kdskin.data.select import pick_images_per_class
from kdskin.errors import DataError
from kdskin.explain.cams import LayerSpec, ScoreCAM, as_image_batch, explainable_model
from kdskin.explain.render import overlay

__all__ = ["ScoreCamCallback", "pick_images_per_class", "write_image_summary"]


def _tensorboard_available() -> bool:
    try:
        import tensorboard.summary.v2  # noqa: F401
    except ImportError:
        return False
    return True


def write_image_summary(tag: str, images: np.ndarray, step: int, description: str = "") -> None:
    """Write ``images`` (n, H, W, 3) uint8 as one image summary in the default writer."""
    images = np.asarray(images, np.uint8)
    if _tensorboard_available():
        tf.summary.image(tag, images, step=step, max_outputs=len(images),
                         description=description or None)
        return
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(display_name=tag, summary_description=description)
    metadata.plugin_data.plugin_name = "images"  # ImagePluginData(version=0) serialises to b""
    encoded = [tf.io.encode_png(img) for img in images]
    dims = [tf.as_string(images.shape[2]), tf.as_string(images.shape[1])]  # width, height
    tf.summary.write(tag, tf.stack(dims + encoded), step=step, metadata=metadata)


class ScoreCamCallback(keras.callbacks.Callback):
    """Every ``every`` epochs, Score-CAM the fixed ``images`` on the model being trained.

    ``images`` (N, S, S, 3) uint8, ``labels`` (N,) their classes (the maps explain them);
    ``layer`` None uses the model's default CAM layers; ``max_n`` channels per layer (Faster
    Score-CAM) keeps it cheap: ``N * max_n`` forward passes per layer per call. The summary
    ``tag`` holds N pictures (image | overlay); the description lists true and predicted
    classes.
    """

    def __init__(self, images: Any, labels: Sequence[int] | np.ndarray, log_dir: str | Path,
                 every: int = 1, layer: LayerSpec = None, max_n: int = 8, tag: str = "scorecam",
                 alpha: float = 0.4, colormap: str = "jet"):
        super().__init__()
        batch, _ = as_image_batch(images, None, "ScoreCamCallback images")
        self.images = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        self.labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(self.labels) != len(self.images):
            raise DataError(f"ScoreCamCallback: got {len(self.labels)} labels for "
                            f"{len(self.images)} images")
        if every < 1:
            raise DataError(f"ScoreCamCallback: every must be at least 1, got {every}")
        self.log_dir = Path(log_dir)
        self.every = int(every)
        self.layer = layer
        self.max_n = max_n
        self.tag = tag
        self.alpha = alpha
        self.colormap = colormap
        self._writer: Any = None
        self._explainer: ScoreCAM | None = None
        self._explained: keras.Model | None = None

    def _scorecam(self) -> ScoreCAM:
        model = explainable_model(self.model)
        if self._explainer is None or self._explained is not model:
            self._explainer = ScoreCAM(model, layer=self.layer, max_n=self.max_n)
            self._explained = model
        return self._explainer

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        self.write(epoch)

    def write(self, step: int) -> None:
        """Compute the overlays now and write them at ``step``."""
        self.on_train_begin()
        explainer = self._scorecam()
        maps = explainer(self.images, class_index=self.labels)
        probs = explainer.last_probs
        pictures = np.stack([np.concatenate([img, overlay(img, heat, self.alpha,
                                                          self.colormap)], axis=1)
                             for img, heat in zip(self.images, maps, strict=True)])
        names = list(CLASSES) if probs.shape[1] == len(CLASSES) else None

        def label(i: int) -> str:
            return names[i] if names else str(i)

        description = "; ".join(
            f"{i}: true {label(t)}, predicted {label(p)} ({probs[i, p]:.2f})"
            for i, (t, p) in enumerate(zip(self.labels, probs.argmax(axis=1), strict=True)))
        with self._writer.as_default():
            write_image_summary(self.tag, pictures, step=int(step),
                                description=f"Score-CAM for the true class. {description}")
        self._writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.flush()
