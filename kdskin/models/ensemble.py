"""An ensemble of trained teachers as one Keras model (what a run uses as its teacher).

``image`` ``(batch, S, S, 3)`` 0..255 -> a dict of logits: ``logits`` and every output name
all models share, each the log of the weighted mean of the models' probabilities
(:class:`~kdskin.models.layers.ProbabilityMean`). A model that takes another size sees the
image resized to it (anti-aliased bilinear), inside the ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from kdskin.constants import INPUT_NAME
from kdskin.errors import ModelError
from kdskin.models.contract import input_size, is_trained, mark_trained, output_names
from kdskin.models.layers import ProbabilityMean


def build_ensemble(models: Sequence[keras.Model], weights: Sequence[float] | None = None,
                   image_size: int | None = None, name: str = "teacher") -> keras.Model:
    """``models`` (trained kdskin dict-of-logits models with distinct names) as one model whose
    input is ``image_size`` (default: the largest model input). ``weights``: one per model,
    summing to 1 (default equal). A single model with no resize is returned as it is. The
    ensemble counts as trained when every model does."""
    models = list(models)
    if not models:
        raise ModelError("build_ensemble needs at least one model")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ModelError(f"ensemble members need distinct model names, got {names}")
    size = int(image_size or max(input_size(m) for m in models))
    if len(models) == 1 and input_size(models[0]) == size:
        return models[0]
    shared = [n for n in output_names(models[0]) if all(n in output_names(m) for m in models)]
    if "logits" not in shared:
        raise ModelError("every ensemble member needs a 'logits' output")
    image = keras.Input((size, size, 3), name=INPUT_NAME, dtype="float32")
    outs = []
    for model in models:
        s = input_size(model)
        x = image if s == size else keras.layers.Resizing(
            s, s, interpolation="bilinear", antialias=True, name=f"{model.name}_resize")(image)
        outs.append(model(x))
    w = None if weights is None else [float(v) for v in weights]
    result = {out: ProbabilityMean(w, name=out)([o[out] for o in outs]) for out in shared}
    return mark_trained(keras.Model(image, result, name=name),
                        all(is_trained(m) for m in models))


__all__ = ["build_ensemble"]
