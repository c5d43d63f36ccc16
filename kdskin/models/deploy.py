"""Turn a kdskin training model into the deployable classifier and small model helpers."""

from __future__ import annotations

import keras
import numpy as np

from kdskin.constants import INPUT_NAME, NUM_CLASSES, PROBS_NAME
from kdskin.errors import ModelError


def output_names(model: keras.Model) -> list[str]:
    """Names of the model's outputs: the dict keys for dict outputs (in the order built), else
    the output layers' names. (``model.output_names`` sorts dict outputs by key.)"""
    out = model.output
    if isinstance(out, dict):
        return list(out)
    return list(model.output_names)


def named_outputs(model: keras.Model) -> dict[str, keras.KerasTensor]:
    """``{name: symbolic output tensor}`` for a functional model (dict or list outputs)."""
    out = model.output
    if isinstance(out, dict):
        return dict(out)
    tensors = out if isinstance(out, (list, tuple)) else [out]
    return dict(zip(model.output_names, tensors, strict=True))


def count_params(model: keras.Model) -> int:
    """Total number of weights (trainable and not) of ``model``."""
    return int(sum(np.prod(w.shape) for w in model.weights))


def to_deployable(model: keras.Model, name: str | None = None) -> keras.Model:
    """Single input ``"image"`` (0..255 float32) -> ``{"probs": softmax(logits)}``.

    The new model shares layers and weights with ``model`` and keeps only what ``logits``
    depends on (the exits that do not feed it are dropped). Its one output is a dict keyed
    ``"probs"``, so ``predict`` returns ``{"probs": (batch, 7)}`` and the TFLite signature's
    output is called ``probs`` (a bare tensor output would be ``output_0``).
    """
    label = getattr(model, "name", type(model).__name__)
    try:
        has_inputs = isinstance(model, keras.Model) and bool(model.inputs)
    except (AttributeError, ValueError):
        has_inputs = False
    if not has_inputs:
        raise ModelError(f"{label}: not a functional Keras model; build it with kdskin.models")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        shapes = [tuple(t.shape) for t in model.inputs]
        raise ModelError(f"{label}: expected one image input of rank 4 (batch, S, S, 3), "
                         f"got inputs {shapes}")
    outputs = named_outputs(model)
    logits = outputs.get("logits")
    if logits is None or tuple(logits.shape) != (None, NUM_CLASSES):
        got = {k: tuple(v.shape) for k, v in outputs.items()}
        raise ModelError(f"{label}: expected a 'logits' output of shape (None, {NUM_CLASSES}), "
                         f"got outputs {got}")
    image = model.inputs[0]
    if image.name != INPUT_NAME:
        # A model whose input is named otherwise: call it on an input named per the contract.
        image = keras.Input(tuple(image.shape[1:]), name=INPUT_NAME, dtype=image.dtype)
        called = model(image)
        if isinstance(called, dict):
            logits = called["logits"]
        elif isinstance(called, (list, tuple)):
            logits = called[list(outputs).index("logits")]
        else:
            logits = called
    probs = keras.layers.Softmax(name=PROBS_NAME)(logits)
    return keras.Model(image, {PROBS_NAME: probs}, name=name or f"{model.name}_deploy")
