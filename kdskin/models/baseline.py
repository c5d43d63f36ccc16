"""The paper's plain baseline CNN (the first row of its results table)."""

from __future__ import annotations

import keras
from keras import layers

from kdskin.constants import NUM_CLASSES
from kdskin.models.inputs import image_input
from kdskin.models.specs import ColourSpec, validate_baseline


def build_baseline_cnn(image_size: int, num_classes: int = NUM_CLASSES,
                       name: str = "baseline_cnn",
                       colour_constancy: ColourSpec = None,
                       border_fill: bool = False) -> keras.Model:
    """Conv16-pool-Conv32-pool-Flatten-Dense128-Dropout0.5-Dense, as in the paper.

    ``image`` ``(batch, S, S, 3)`` 0..255 -> ``{"logits": (batch, num_classes)}``.
    Convolutions are 3x3 'valid' with ReLU, pools are 2x2.
    ``colour_constancy``: Minkowski norm p of a colour-constancy layer right after the input,
    or ``"standardise"`` (:func:`kdskin.models.inputs.image_input`; None: none);
    ``border_fill``: a border-fill layer before it (black borders filled with the image's mean
    colour).
    """
    validate_baseline(image_size, num_classes)
    image, pixels = image_input(image_size, colour_constancy, border_fill)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(pixels)
    x = layers.Conv2D(16, 3, activation="relu", name="block_1_conv")(x)
    x = layers.MaxPooling2D(2, name="block_1_pool")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="block_2_conv")(x)
    x = layers.MaxPooling2D(2, name="block_2_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(image, {"logits": logits}, name=name)
