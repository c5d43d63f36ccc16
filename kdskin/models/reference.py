"""References a user would pick instead of kdskin's student, trained like any kdskin model.

:func:`build_reference_effnet`: EfficientNet-Lite (B0 by default: the backbone MediaPipe Model
Maker offers) from ImageNet weights, fine-tuned alone: global average pooling, dropout, a dense
logits layer on the Lite branch kdskin's student uses.

:func:`build_reference_cnn`, the strong plain reference: a VGG-style CNN.

Four stages of two 3x3 convolutions + BatchNorm + ReLU (32-64-128-256 filters), 2x2
max-pooling after each stage, global average pooling, dropout 0.3, a dense logits layer:
about 1.18 M parameters. It is what a careful practitioner would train first; every results
table shows it beside the distilled student, trained on the same data with the same budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from kdskin.constants import NUM_CLASSES
from kdskin.models.efficientnet_lite import efficientnet_lite
from kdskin.models.imagenet import load_imagenet_lite
from kdskin.models.inputs import image_input
from kdskin.models.layers import set_bn_momentum
from kdskin.models.specs import (
    REFERENCE_FILTERS,
    ColourSpec,
    validate_reference,
    validate_reference_effnet,
)


def conv_stage(filters: int, index: int) -> layers.Layer:
    """Two 3x3 conv + BN + ReLU, then 2x2 max-pool; layers ``stage_{index}_*``."""
    def apply(x):
        for j in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"stage_{index}_conv_{j}")(x)
            # momentum 0.9, as the student: Keras' 0.99 lags far behind the weights in short
            # from-scratch runs (the model then predicts one class at evaluation time)
            x = layers.BatchNormalization(momentum=0.9, name=f"stage_{index}_bn_{j}")(x)
            x = layers.ReLU(name=f"stage_{index}_relu_{j}")(x)
        return layers.MaxPooling2D(2, name=f"stage_{index}_pool")(x)
    return apply


def build_reference_cnn(image_size: int, filters: Sequence[int] = REFERENCE_FILTERS,
                        dropout: float = 0.3, num_classes: int = NUM_CLASSES,
                        name: str = "reference_cnn",
                        colour_constancy: ColourSpec = None,
                        border_fill: bool = False) -> keras.Model:
    """The VGG-style reference CNN.

    ``image`` ``(batch, S, S, 3)`` 0..255 -> ``{"logits": (batch, num_classes)}``.
    ``colour_constancy``: Minkowski norm p of a colour-constancy layer right after the input,
    or ``"standardise"`` (:func:`kdskin.models.inputs.image_input`; None: none);
    ``border_fill``: a border-fill layer before it (black borders filled with the image's mean
    colour).
    """
    validate_reference(image_size, filters, dropout)
    image, pixels = image_input(image_size, colour_constancy, border_fill)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(pixels)
    for i, f in enumerate(filters, start=1):
        x = conv_stage(int(f), i)(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(image, {"logits": logits}, name=name)


def build_reference_effnet(image_size: int, variant: str = "B0", weights: str = "imagenet",
                           dropout: float = 0.2, bn_momentum: float = 0.9,
                           num_classes: int = NUM_CLASSES,
                           name: str = "reference_effnet",
                           colour_constancy: ColourSpec = None,
                           border_fill: bool = False) -> keras.Model:
    """EfficientNet-Lite ``variant`` alone (``weights`` ``imagenet`` or ``none``).

    ``image`` ``(batch, S, S, 3)`` 0..255 -> ``{"logits": (batch, num_classes)}``; layers keep
    EfficientNet's names (``stem_conv`` ... ``top_activation``), then ``pool``, ``dropout``,
    ``logits``. Raises :class:`~kdskin.errors.ConfigError` before building anything when it
    cannot be built (the weights package missing included).
    ``colour_constancy``: Minkowski norm p of a colour-constancy layer right after the input,
    or ``"standardise"`` (:func:`kdskin.models.inputs.image_input`; None: none);
    ``border_fill``: a border-fill layer before it (black borders filled with the image's mean
    colour).
    """
    validate_reference_effnet(image_size, variant, weights, dropout)
    image, pixels = image_input(image_size, colour_constancy, border_fill)
    x = efficientnet_lite(pixels, variant)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(image, {"logits": logits}, name=name)
    set_bn_momentum(model, bn_momentum)
    if weights == "imagenet":  # weights loaded last
        load_imagenet_lite(model, variant)
    return model
