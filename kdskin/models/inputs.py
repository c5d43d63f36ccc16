"""The image input every kdskin model builder starts from, with optional colour constancy.

One place makes the input: ``image`` ``(batch, S, S, 3)`` float32 0..255 (the input contract,
:mod:`kdskin.constants`) and, when a Minkowski norm is given, a
:class:`~kdskin.models.layers.ColourConstancy` layer named ``colour_constancy`` right after it,
so the normalisation is part of the model: it runs in training and at inference and travels in
every exported ``.tflite``. The builders feed the returned ``pixels`` (still 0..255) to their
branches.
"""

from __future__ import annotations

from typing import Any

import keras

from kdskin.constants import INPUT_NAME
from kdskin.models.layers import COLOUR_CONSTANCY_NAME, ColourConstancy


def image_input(image_size: int, colour_constancy: float | None = None) -> tuple[Any, Any]:
    """``(image, pixels)``: the model's input tensor and what the branches see.

    ``colour_constancy``: the Minkowski norm p of the colour-constancy layer (1 grey world, 6
    Shades of Grey; :func:`kdskin.models.specs.colour_constancy_power` resolves the config), or
    None for none (``pixels`` is then ``image`` itself).
    """
    image = keras.Input((image_size, image_size, 3), name=INPUT_NAME, dtype="float32")
    if colour_constancy is None:
        return image, image
    return image, ColourConstancy(colour_constancy, name=COLOUR_CONSTANCY_NAME)(image)


def colour_constancy_of(model: keras.Model) -> float | None:
    """The Minkowski norm of ``model``'s colour-constancy layer, or None if it has none."""
    for layer in model.layers:
        if isinstance(layer, ColourConstancy):
            return layer.power
    return None
