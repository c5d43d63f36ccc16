"""The image input every kdskin model builder starts from, with its optional input front.

One place makes the input: ``image`` ``(batch, S, S, 3)`` float32 0..255 (the input contract,
:mod:`kdskin.constants`), then, when asked, a :class:`~kdskin.models.layers.BorderFill` layer
named ``border_fill`` (a black border filled with the image's mean colour) and a
:class:`~kdskin.models.layers.ColourConstancy` layer named ``colour_constancy`` (in that order:
the illuminant is estimated without the black border). Both are part of the model: they run in
training and at inference and travel in every exported ``.tflite``. The builders feed the
returned ``pixels`` (still 0..255) to their branches.
"""

from __future__ import annotations

from typing import Any

import keras

from kdskin.constants import INPUT_NAME
from kdskin.models.layers import (
    BORDER_FILL_NAME,
    COLOUR_CONSTANCY_NAME,
    COLOUR_LAYERS,
    AutoLevels,
    BorderFill,
    ColourConstancy,
    ColourStandardise,
)
from kdskin.models.specs import AUTO_LEVELS, STANDARDISE, ColourSpec

#: The colour layers a builder names by a string (``colour_constancy=``); a number is the
#: Minkowski norm of :class:`ColourConstancy`.
NAMED_COLOUR_LAYERS: dict[str, type[keras.layers.Layer]] = {
    STANDARDISE: ColourStandardise, AUTO_LEVELS: AutoLevels}


def image_input(image_size: int, colour_constancy: ColourSpec = None,
                border_fill: bool = False) -> tuple[Any, Any]:
    """``(image, pixels)``: the model's input tensor and what the branches see.

    ``colour_constancy``: the Minkowski norm p of the colour-constancy layer (1 grey world, 6
    Shades of Grey), ``"standardise"`` or ``"auto_levels"`` (the layers of those names), or None for
    none (:func:`kdskin.models.specs.colour_constancy_spec` resolves the config); ``border_fill``: a
    border-fill layer first. With neither, ``pixels`` is ``image`` itself.
    """
    image = keras.Input((image_size, image_size, 3), name=INPUT_NAME, dtype="float32")
    pixels = image
    if border_fill:
        pixels = BorderFill(name=BORDER_FILL_NAME)(pixels)
    if isinstance(colour_constancy, str):
        if colour_constancy not in NAMED_COLOUR_LAYERS:
            raise ValueError(f"colour_constancy must be a Minkowski norm, None or one of "
                             f"{sorted(NAMED_COLOUR_LAYERS)}, got {colour_constancy!r}")
        pixels = NAMED_COLOUR_LAYERS[colour_constancy](name=COLOUR_CONSTANCY_NAME)(pixels)
    elif colour_constancy is not None:
        pixels = ColourConstancy(colour_constancy, name=COLOUR_CONSTANCY_NAME)(pixels)
    return image, pixels


def colour_constancy_of(model: keras.Model) -> ColourSpec:
    """``model``'s colour layer as a builder takes it: its Minkowski norm, ``"standardise"``,
    ``"auto_levels"``, or None if it has none."""
    for layer in model.layers:
        if isinstance(layer, ColourConstancy):
            return layer.power
        for name, kind in NAMED_COLOUR_LAYERS.items():
            if isinstance(layer, kind):
                return name
    return None


def float_front_of(model: keras.Model) -> list[str]:
    """Names of ``model``'s input-front layers (border fill, colour constancy): per-image
    statistics that an int8 file computes in float32 before its first quantize op."""
    return [layer.name for layer in model.layers
            if isinstance(layer, (BorderFill, *COLOUR_LAYERS))]
