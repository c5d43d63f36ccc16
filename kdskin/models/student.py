"""The fused student: a small CNN branch and an EfficientNet branch, merged by 'layer fusion'.

Input ``"image"``: ``(batch, S, S, 3)`` float32, 0..255. Outputs (a dict of LOGITS, each
``(batch, num_classes)``): ``cnn_exit``, ``effnet_exit`` and ``logits``.

- fusion ``"concat"`` (the paper's head): ``logits`` = MLP on the concatenated
  global-average-pooled final feature maps of both branches (Dense ``head_units`` ReLU,
  dropout, Dense).
- fusion ``"residual"``: the same MLP on the concatenated features (last layer
  ``fusion_logits``, initialised to zero) *added to* the average of the two exits' logits
  (``fusion_exits_average``). Both paths are functions of the concatenated features (an exit is
  a linear map of its branch's pooled features), so the branches' features, not their
  probabilities, are merged; the fused head starts as the two-exit ensemble and learns what
  the branches add jointly. Measured on HAM10000 (cpu config): the plain ``concat`` head
  trained for 10 epochs ended *below* the unfused student; see docs/RESULTS.md.
- fusion ``"none"``: ``logits`` = the average of the two exits' logits (no fusion head).

Stable layer names: ``cnn_features`` (CNN branch's last feature map, ``(S/2^n, S/2^n, f_n)``),
``effnet_features`` (EfficientNet's last feature map, ``(ceil(S/32), ceil(S/32), C)``, or
``S/16`` with ``student.effnet_stem_stride: 1``),
``cnn_block_{i}_*``, ``cnn_exit``, ``effnet_exit``, ``fusion_*``, ``logits``.

The EfficientNet layers are built INTO this model's graph (``input_tensor=``), not nested as one
Model layer, so Grad-CAM can target any of them. Keras' EfficientNet rescales and normalises
0..255 pixels itself, so it is fed the raw input; the Lite variant has its own rescaling too.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import layers

from kdskin.constants import NUM_CLASSES
from kdskin.errors import ModelError
from kdskin.models.efficientnet_lite import LITE_COEFFICIENTS, efficientnet_lite
from kdskin.models.imagenet import load_imagenet_lite
from kdskin.models.inputs import image_input
from kdskin.models.layers import set_bn_momentum
from kdskin.models.specs import (
    EFFICIENTNETS,
    FUSIONS,
    ColourSpec,
    StudentConfig,
    keras_imagenet_file,
    student_weights,
    validate_student,
)

#: Keras application per ``student.efficientnet`` (the names are declared in
#: :data:`kdskin.models.specs.EFFICIENTNETS`).
KERAS_EFFICIENTNETS = {
    "B0": keras.applications.EfficientNetB0,
    "B1": keras.applications.EfficientNetB1,
    "B2": keras.applications.EfficientNetB2,
    "B3": keras.applications.EfficientNetB3,
    "B4": keras.applications.EfficientNetB4,
}
__all__ = ["EFFICIENTNETS", "FUSIONS", "KERAS_EFFICIENTNETS", "LITE_COEFFICIENTS", "build_student",
           "resolve_weights", "validate_student"]


def resolve_weights(cfg: StudentConfig) -> str | None:
    """``"none"`` -> None, ``"imagenet"`` -> ``"imagenet"``, else an existing file's path."""
    return student_weights(cfg)


def cnn_block(filters: int, l2: float, index: int, convs: int = 1) -> Any:
    """``convs`` x (Conv 3x3 (L2) + BN + ReLU), then MaxPool 2:
    ``(b, h, w, c) -> (b, h/2, w/2, filters)``. The first convolution is ``cnn_block_{i}_conv``,
    the next ones ``cnn_block_{i}_conv{k}`` (k = 2, 3)."""
    name = f"cnn_block_{index}"

    def apply(x: Any) -> Any:
        for k in range(1, convs + 1):
            suffix = "" if k == 1 else str(k)
            x = layers.Conv2D(filters, 3, padding="same",
                              kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
                              name=f"{name}_conv{suffix}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{suffix}")(x)
            x = layers.ReLU(name=f"{name}_relu{suffix}")(x)
        return layers.MaxPooling2D(2, name=f"{name}_pool")(x)

    return apply


def cnn_branch(image: Any, cfg: StudentConfig) -> Any:
    """0..255 ``(b, S, S, 3)`` -> ``cnn_features`` ``(b, S/2^n, S/2^n, cnn_filters[-1])``."""
    x = layers.Rescaling(1.0 / 255.0, name="cnn_rescale")(image)
    for i, filters in enumerate(cfg.cnn_filters, start=1):
        x = cnn_block(filters, cfg.l2, i, cfg.cnn_convs)(x)
    return layers.Identity(name="cnn_features")(x)


def effnet_branch(image: Any, cfg: StudentConfig, image_size: int, weights: str | None) -> Any:
    """0..255 ``(b, S, S, 3)`` -> EfficientNet's last feature map (in this graph, not nested).

    ImageNet weights of Keras' EfficientNet are loaded here by Keras; the Lite variant's
    (:mod:`kdskin.models.imagenet`, offline) and a weights *file* are loaded by the caller at
    the end.
    """
    if cfg.efficientnet_variant == "lite":
        return efficientnet_lite(image, cfg.efficientnet, cfg.effnet_stem_stride)
    try:
        base = KERAS_EFFICIENTNETS[cfg.efficientnet](
            include_top=False, weights="imagenet" if weights == "imagenet" else None,
            input_tensor=image, input_shape=(image_size, image_size, 3))
    except Exception as exc:  # a corrupt cached file: one line, not a traceback
        if weights != "imagenet":
            raise
        raise ModelError(f"could not load ImageNet weights for EfficientNet{cfg.efficientnet} "
                         f"({type(exc).__name__}); replace {keras_imagenet_file(cfg.efficientnet)}"
                         f" or set student.weights=none") from None
    return base.output


def load_effnet_weights(image: Any, features: Any, path: str, label: str) -> None:
    """Load a weights file into the EfficientNet layers between ``image`` and ``features``."""
    branch = keras.Model(image, features, name="effnet_branch")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            branch.load_weights(path)
    except Exception as exc:  # Keras warns per object, then raises: keep only our one line
        first = (str(exc).splitlines() or [""])[0][:160]
        raise ModelError(f"{path}: cannot load it into the {label} branch "
                         f"({type(exc).__name__}: {first}); "
                         f"pass weights saved from the same architecture") from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)


def build_student(cfg: StudentConfig, image_size: int, num_classes: int = NUM_CLASSES,
                  fusion: str | None = None, name: str = "student",
                  colour_constancy: ColourSpec = None,
                  border_fill: bool = False) -> keras.Model:
    """Build the fused CNN + EfficientNet student (see the module docstring).

    ``image`` ``(batch, S, S, 3)`` 0..255 -> dict of logits ``(batch, num_classes)``.
    ``fusion`` None uses ``cfg.fusion``. Raises :class:`ConfigError` for a bad configuration
    (:func:`kdskin.models.specs.validate_student`, a missing weights file included) before
    building anything, and :class:`ModelError` for an incompatible weights file.
    ``colour_constancy``: Minkowski norm p of a colour-constancy layer right after the input,
    or ``"standardise"`` (:func:`kdskin.models.inputs.image_input`; None: none);
    ``border_fill``: a border-fill layer before it (black borders filled with the image's mean
    colour).
    """
    fusion = cfg.fusion if fusion is None else fusion
    validate_student(cfg, image_size, num_classes, fusion)
    weights = resolve_weights(cfg)
    label = f"EfficientNet{'-Lite' if cfg.efficientnet_variant == 'lite' else ''}" \
            f"{cfg.efficientnet}"

    image, pixels = image_input(image_size, colour_constancy, border_fill)

    cnn_features = cnn_branch(pixels, cfg)
    cnn_pooled = layers.GlobalAveragePooling2D(name="cnn_pool")(cnn_features)
    cnn_exit = layers.Dense(num_classes, name="cnn_exit")(cnn_pooled)

    raw_effnet = effnet_branch(pixels, cfg, image_size, weights)
    effnet_features = layers.Identity(name="effnet_features")(raw_effnet)
    effnet_pooled = layers.GlobalAveragePooling2D(name="effnet_pool")(effnet_features)
    effnet_exit = layers.Dense(num_classes, name="effnet_exit")(effnet_pooled)

    if fusion in ("concat", "residual"):
        x = layers.Concatenate(name="fusion_concat")([cnn_pooled, effnet_pooled])
        x = layers.Dense(cfg.head_units, activation="relu", name="fusion_dense")(x)
        x = layers.Dropout(cfg.head_dropout, name="fusion_dropout")(x)
        if fusion == "concat":
            logits = layers.Dense(num_classes, name="logits")(x)
        else:
            fused = layers.Dense(num_classes, kernel_initializer="zeros",
                                 name="fusion_logits")(x)
            ensemble = layers.Average(name="fusion_exits_average")([cnn_exit, effnet_exit])
            logits = layers.Add(name="logits")([ensemble, fused])
    else:
        logits = layers.Average(name="logits")([cnn_exit, effnet_exit])

    model = keras.Model(image, {"cnn_exit": cnn_exit, "effnet_exit": effnet_exit,
                                "logits": logits}, name=name)
    set_bn_momentum(model, cfg.bn_momentum)
    if weights == "imagenet" and cfg.efficientnet_variant == "lite":  # weights loaded last
        load_imagenet_lite(model, cfg.efficientnet)
    elif weights not in (None, "imagenet"):
        load_effnet_weights(image, raw_effnet, weights, label)
    return model
