"""Grad-CAM and (Faster) Score-CAM for kdskin Keras models.

Both are callable objects: ``GradCAM(model)(images, class_index=None) -> (N, S, S)`` maps in
[0, 1]. They explain the ``"logits"`` output of a training model (dict of logits), or the
``"probs"`` output of a deployable model, picked BY NAME (a multi-output model never has its
outputs guessed by position, tf-keras-vis#50).

Implementation note: tf-keras-vis 0.8.7 works on single-output Keras 3 models, but it needs one
score function per output of our multi-exit models, prints progress bars, and its Score-CAM
applies a softmax to whatever the model outputs (wrong for a ``"probs"`` output). So kdskin builds
its own single-graph sub-model ``image -> [feature map(s), target output]`` from layers of the
OUTER graph (the student's EfficientNet is built into that graph, so there is no "Graph
disconnected", tf-keras-vis#36/#63) and computes the maps in a few lines; a test checks the
Grad-CAM against tf-keras-vis' on a single-output model.

Default target layers (:func:`default_layer`): a fused model is explained through the last
feature map of EACH branch, and the per-layer maps are averaged. The student's EfficientNet map
is ``ceil(S/32)`` wide (2x2 at 64 px, 1x1 at 32 px), too coarse alone, so its map is averaged
with the CNN branch's ``S/4`` map; the teacher averages ``vit_token_grid`` (patch tokens without
CLS, as a grid) and ``conv_features``. Any other model: its last convolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kdskin.compat import producing_layer
from kdskin.constants import PROBS_NAME
from kdskin.errors import DataError, KdskinError, ModelError
from kdskin.models.contract import input_size, named_outputs

LayerSpec = str | Sequence[str] | None
ClassIndex = int | Sequence[int] | np.ndarray | None

STUDENT_LAYERS: tuple[str, ...] = ("cnn_features", "effnet_features")
TEACHER_LAYERS: tuple[str, ...] = ("vit_token_grid", "conv_features")
_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
_EPS = 1e-8
_CHUNK = 64  # images per forward pass


# --------------------------------------------------------------------------- model helpers


def explainable_model(model: Any) -> keras.Model:
    """The functional model to explain: a distiller's ``.student``, else ``model`` itself."""
    student = getattr(model, "student", None)
    if isinstance(student, keras.Model):
        model = student
    label = getattr(model, "name", type(model).__name__)
    try:
        inputs = model.inputs if isinstance(model, keras.Model) else None
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ModelError(f"{label}: not a functional Keras model; explain a model built with "
                         f"kdskin.models or loaded from a .keras file")
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 3:
        raise ModelError(f"{label}: expected one image input (batch, S, S, 3), got "
                         f"{[tuple(t.shape) for t in inputs]}")
    return model


def target_output(model: keras.Model, output: str | None = None) -> tuple[str, Any, bool]:
    """``(name, symbolic tensor, is_probs)`` of the output to explain.

    ``output`` None picks ``"logits"``, else ``"probs"``, else the only output. Raises
    :class:`ModelError` naming the outputs when that is ambiguous or ``output`` is unknown.
    """
    outputs = named_outputs(model)
    if output is None:
        for name in ("logits", PROBS_NAME):
            if name in outputs:
                output = name
                break
        else:
            if len(outputs) != 1:
                raise ModelError(f"{model.name}: no 'logits' or '{PROBS_NAME}' output among "
                                 f"{', '.join(outputs)}; pass output=NAME")
            output = next(iter(outputs))
    if output not in outputs:
        raise ModelError(f"{model.name}: no output named {output!r}; outputs are "
                         f"{', '.join(outputs)}")
    tensor = outputs[output]
    if len(tensor.shape) != 2:
        raise ModelError(f"{model.name}: output {output!r} has shape {tuple(tensor.shape)}; "
                         f"expected (batch, classes)")
    is_probs = output == PROBS_NAME
    if not is_probs:  # a bare single output ending in a softmax
        layer = producing_layer(tensor)
        act = getattr(layer, "activation", None)
        is_probs = isinstance(layer, keras.layers.Softmax) or getattr(act, "__name__", "") == \
            "softmax"
    return output, tensor, is_probs


def _feature_layers(model: keras.Model) -> list[str]:
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            names.append(layer.name)
    return names


def default_layer(model: Any) -> tuple[str, ...]:
    """Names of the feature map(s) Grad-CAM / Score-CAM target by default (see module doc).

    Fused student: ``("cnn_features", "effnet_features")``; teacher: ``("vit_token_grid",
    "conv_features")`` (either pair reduced to the layers present); otherwise the last
    convolution (the baseline's ``block_2_conv``), else the last rank-4 layer.
    """
    model = explainable_model(model)
    names = {layer.name for layer in model.layers}
    for group in (STUDENT_LAYERS, TEACHER_LAYERS):
        present = tuple(n for n in group if n in names)
        if present:
            return present
    convs = [layer.name for layer in model.layers if isinstance(layer, _CONV_TYPES)]
    if convs:
        return (convs[-1],)
    maps = _feature_layers(model)
    if maps:
        return (maps[-1],)
    raise ModelError(f"{model.name}: has no 4-D feature map to build a CAM from; use LIME")


def resolve_layers(model: keras.Model, layer: LayerSpec) -> tuple[str, ...]:
    """``layer`` (name, names or None) -> checked tuple of layer names of ``model``."""
    if layer is None:
        return default_layer(model)
    wanted = (layer,) if isinstance(layer, str) else tuple(layer)
    if not wanted:
        raise ModelError(f"{model.name}: layer must name at least one feature map")
    names = {lay.name for lay in model.layers}
    candidates = _feature_layers(model)
    for name in wanted:
        if name not in names:
            shown = ", ".join(candidates[-12:]) or "none"
            raise ModelError(f"{model.name}: no layer named {name!r}; feature-map layers "
                             f"(last ones): {shown}")
        shape = model.get_layer(name).output.shape
        if len(shape) != 4:
            raise ModelError(f"{model.name}: layer {name!r} has output shape {tuple(shape)}, "
                             f"not a (batch, h, w, channels) feature map; pick one of "
                             f"{', '.join(candidates[-12:])}")
    return wanted


def as_image_batch(images: Any, size: int | None, what: str = "images"
                   ) -> tuple[np.ndarray, bool]:
    """``(N, S, S, 3)`` or ``(S, S, 3)`` 0..255 -> (float32 batch, was_single)."""
    arr = np.asarray(images)
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] != arr.shape[2] or not len(arr):
        raise DataError(f"{what}: expected RGB images (N, S, S, 3) with pixel values 0..255, "
                        f"got shape {np.shape(images)}")
    if size is not None and arr.shape[1] != size:
        raise DataError(f"{what}: the model takes {size}x{size} images, got "
                        f"{arr.shape[1]}x{arr.shape[2]}; resize with kdskin.data.images")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{what}: pixel values must be numbers, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False), single


def class_indices(class_index: ClassIndex, predicted: np.ndarray, n_classes: int
                  ) -> np.ndarray:
    """None -> ``predicted``; an int -> the same class for every image; a sequence -> per image."""
    n = len(predicted)
    if class_index is None:
        return np.asarray(predicted, dtype=np.int64)
    if np.ndim(class_index) == 0:
        out = np.full(n, int(class_index), dtype=np.int64)
    else:
        out = np.asarray(class_index, dtype=np.int64).reshape(-1)
        if len(out) != n:
            raise KdskinError(f"class_index: got {len(out)} classes for {n} images; pass one "
                              f"per image, a single int, or None for the predicted class")
    if out.size and (out.min() < 0 or out.max() >= n_classes):
        raise KdskinError(f"class_index: classes must be in 0..{n_classes - 1}, got "
                          f"{sorted(set(out.tolist()))}")
    return out


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Per-map min-max scaling to [0, 1]; a constant (or non-finite) map becomes all zeros."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    flat = maps.reshape(len(maps), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    ok = span > _EPS * np.maximum(1.0, np.abs(low))
    scaled = np.where(ok, (flat - low) / np.where(ok, span, 1.0), 0.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32).reshape(maps.shape)


def _upsample(maps: tf.Tensor | np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) or (N, h, w, k) -> (N, S, S[, k]) bilinear."""
    maps = tf.convert_to_tensor(maps, dtype=tf.float32)
    squeeze = len(maps.shape) == 3
    if squeeze:
        maps = maps[..., None]
    out = tf.image.resize(maps, (size, size), method="bilinear").numpy()
    return out[..., 0] if squeeze else out


def _compiled_probs(head: keras.Model, size: int, is_probs: bool
                    ) -> Callable[[tf.Tensor], tf.Tensor]:
    """A traced-once forward ``(n, S, S, 3) float32 -> probabilities (n, C)`` of ``head``."""

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    def forward(x: tf.Tensor) -> tf.Tensor:
        out = tf.cast(head(x, training=False), tf.float32)
        return out if is_probs else tf.nn.softmax(out, axis=-1)

    return forward


def predict_probs_fn(model: Any, output: str | None = None, batch_size: int = _CHUNK
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``images (N, S, S, 3) 0..255 -> probabilities (N, C)`` for a Keras model.

    Uses the ``"logits"`` output (softmaxed) or the ``"probs"`` output, picked by name; the
    forward pass is traced once (a few seconds for the student) and reused.
    """
    model = explainable_model(model)
    _, tensor, is_probs = target_output(model, output)
    size = input_size(model)
    forward = _compiled_probs(keras.Model(model.inputs, tensor), size, is_probs)

    def predict(images: np.ndarray) -> np.ndarray:
        batch, _ = as_image_batch(images, size)
        parts = [forward(tf.constant(batch[i:i + batch_size])).numpy()
                 for i in range(0, len(batch), batch_size)]
        return np.concatenate(parts).astype(np.float32)

    return predict


# --------------------------------------------------------------------------- explainers


class _CAM:
    """Shared set-up: explained model, target output, feature layers, sub-model."""

    method = "cam"

    def __init__(self, model: Any, layer: LayerSpec = None, output: str | None = None):
        self.model = explainable_model(model)
        self.layers = resolve_layers(self.model, layer)
        self.output, tensor, self.is_probs = target_output(self.model, output)
        self.num_classes = int(tensor.shape[-1])
        self.size = input_size(self.model)
        feats = [self.model.get_layer(name).output for name in self.layers]
        self._sub = keras.Model(self.model.inputs, [*feats, tensor],
                                name=f"{self.model.name}_{self.method}")

    def _probs(self, out: tf.Tensor) -> tf.Tensor:
        return out if self.is_probs else tf.nn.softmax(out, axis=-1)

    def __call__(self, images: Any, class_index: ClassIndex = None) -> np.ndarray:
        """``images`` (N, S, S, 3) 0..255 -> maps (N, S, S) float32 in [0, 1] (2-D for one
        image). ``class_index`` None explains each image's predicted class.

        After a call, ``last_class_indices`` (N,) and ``last_probs`` (N, C) hold the explained
        classes and the model's probabilities for the unmodified images.
        """
        batch, single = as_image_batch(images, self.size)
        wanted = None if class_index is None else class_indices(
            class_index, np.zeros(len(batch), np.int64), self.num_classes)
        maps, classes, probs = [], [], []
        for start in range(0, len(batch), _CHUNK):
            chunk = batch[start:start + _CHUNK]
            part = None if wanted is None else wanted[start:start + _CHUNK]
            cams, prob, cls = self._explain_chunk(chunk, part)
            per_layer = [normalize_maps(_upsample(cam, self.size)) for cam in cams]
            maps.append(normalize_maps(np.mean(per_layer, axis=0)))
            classes.append(cls)
            probs.append(prob)
        self.last_class_indices = np.concatenate(classes)
        self.last_probs = np.concatenate(probs)
        result = np.concatenate(maps)
        return result[0] if single else result

    def _explain_chunk(self, x: np.ndarray, cls: np.ndarray | None
                       ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """-> (one (n, h, w) map per layer, probs (n, C), explained classes (n,))."""
        raise NotImplementedError


class GradCAM(_CAM):
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k mean(d score / d A_k) * A_k), upsampled.

    The score is the class logit (or log-probability for a ``"probs"`` output, which does not
    saturate as the probability does). ``layer``: a layer name, several names (maps averaged)
    or None for :func:`default_layer`. A distiller is explained through its ``.student``.
    """

    method = "gradcam"

    def _explain_chunk(self, x: np.ndarray, cls: np.ndarray | None
                       ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        with tf.GradientTape() as tape:
            out = self._sub(tf.constant(x), training=False)
            feats, head = out[:-1], tf.cast(out[-1], tf.float32)
            probs = self._probs(head)
            if cls is None:
                cls = np.argmax(probs.numpy(), axis=1)
            score = tf.gather(head, tf.constant(cls[:, None]), batch_dims=1)[:, 0]
            if self.is_probs:
                score = tf.math.log(score + 1e-7)
        grads = tape.gradient(score, feats)
        cams = []
        for name, feat, grad in zip(self.layers, feats, grads, strict=True):
            if grad is None:
                raise ModelError(f"{self.model.name}: output {self.output!r} does not depend "
                                 f"on layer {name!r}; pick a layer that feeds it")
            feat = tf.cast(feat, tf.float32)
            weights = tf.reduce_mean(tf.cast(grad, tf.float32), axis=(1, 2), keepdims=True)
            cams.append(tf.nn.relu(tf.reduce_sum(feat * weights, axis=-1)).numpy())
        return cams, probs.numpy(), cls


class ScoreCAM(_CAM):
    """Score-CAM (Wang et al.) with the Faster-Score-CAM channel selection.

    For each of the ``max_n`` channels with the largest spatial std (per image), the upsampled
    min-max-normalised activation masks the input; the masked image's softmax probability of
    the class is that channel's weight; map = ReLU(sum_k w_k A_k). ``max_n`` None or <= 0 uses
    every channel (slow on wide layers such as EfficientNet's 1280, tf-keras-vis#75). Costs
    ``N * max_n`` forward passes per layer.
    """

    method = "scorecam"

    def __init__(self, model: Any, layer: LayerSpec = None, max_n: int | None = 16,
                 output: str | None = None, batch_size: int = _CHUNK):
        super().__init__(model, layer, output)
        self.max_n = max_n
        self.batch_size = max(1, int(batch_size))
        self._forward_probs = _compiled_probs(
            keras.Model(self.model.inputs, self._sub.outputs[-1]), self.size, self.is_probs)

    def _class_probs(self, masked: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """``masked`` (M, S, S, 3), ``cls`` (M,) -> probability of ``cls`` (M,)."""
        out = []
        for i in range(0, len(masked), self.batch_size):
            probs = self._forward_probs(tf.constant(masked[i:i + self.batch_size])).numpy()
            out.append(probs[np.arange(len(probs)), cls[i:i + self.batch_size]])
        return np.concatenate(out)

    def _explain_chunk(self, x: np.ndarray, cls: np.ndarray | None
                       ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        out = self._sub(tf.constant(x), training=False)
        feats, probs = out[:-1], self._probs(tf.cast(out[-1], tf.float32)).numpy()
        if cls is None:
            cls = np.argmax(probs, axis=1)
        cams = []
        n = len(x)
        for feat in feats:
            acts = tf.cast(feat, tf.float32).numpy()  # (n, h, w, C)
            channels = acts.shape[-1]
            k = channels if not self.max_n or self.max_n <= 0 else min(self.max_n, channels)
            if k < channels:
                std = acts.reshape(n, -1, channels).std(axis=1)  # (n, C)
                top = np.argsort(-std, axis=1, kind="stable")[:, :k]
                acts = np.take_along_axis(acts, top[:, None, None, :], axis=-1)
            up = _upsample(acts, self.size)  # (n, S, S, k)
            low = up.min(axis=(1, 2), keepdims=True)
            span = up.max(axis=(1, 2), keepdims=True) - low
            masks = np.where(span > _EPS, (up - low) / np.maximum(span, _EPS), 0.0)
            masked = x[:, None] * np.transpose(masks, (0, 3, 1, 2))[..., None]  # (n,k,S,S,3)
            weights = self._class_probs(masked.reshape(n * k, *x.shape[1:]).astype(np.float32),
                                        np.repeat(cls, k)).reshape(n, k)
            cams.append(np.maximum((acts * weights[:, None, None, :]).sum(axis=-1), 0.0))
        return cams, probs, cls
