"""The model contract: what makes a Keras model a kdskin classifier, in one place.

A kdskin classifier has one image input ``(batch, S, S, 3)`` (pixels 0..255, preprocessing
inside the model) and an output named ``"logits"`` (training models, dict of logits with exits)
or ``"probs"`` (deployable models), of shape ``(batch, 7)`` in ``CLASSES`` order.

* :func:`output_names`, :func:`named_outputs` -- outputs by name (dict keys in build order).
* :func:`check_classifier` -- the one "is this a kdskin classifier" check.
* :func:`load_keras` -- the one ``.keras`` loader (custom layers registered, one-line errors).
* :func:`mark_trained` / :func:`is_trained` -- the trained flag the distiller's gate reads.
* :func:`deployable` -- the single-output ``probs`` model that is converted and served.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kdskin.constants import INPUT_NAME, NUM_CLASSES, PROBS_NAME
from kdskin.errors import ModelError

TRAINED_ATTR = "_kdskin_trained"
LOGITS_NAME = "logits"


def _label(model: Any) -> str:
    return str(getattr(model, "name", type(model).__name__))


def named_outputs(model: Any) -> dict[str, Any]:
    """``{name: symbolic output}`` of a functional model.

    Dict outputs keep their keys in build order (``model.output_names`` sorts them); a single
    tensor or a list is named by its output layers' names (``output_i`` if those are missing).
    """
    try:
        out = model.output
    except (AttributeError, ValueError) as exc:
        raise ModelError(f"model '{_label(model)}': not a functional Keras model with defined "
                         f"outputs ({exc.__class__.__name__}); build it with kdskin.models"
                         ) from None
    if isinstance(out, dict):
        return dict(out)
    outs = list(out) if isinstance(out, list | tuple) else [out]
    names = list(getattr(model, "output_names", []) or [])
    if len(names) != len(outs):
        names = [f"output_{i}" for i in range(len(outs))]
    return dict(zip(names, outs, strict=True))


def output_names(model: Any) -> list[str]:
    """Names of the model's outputs, in the order of :func:`named_outputs`."""
    return list(named_outputs(model))


def input_size(model: keras.Model) -> int:
    """The side ``S`` of a model's ``(B, S, S, 3)`` image input."""
    return int(model.inputs[0].shape[1])


def check_classifier(model: Any) -> tuple[int, str]:
    """Check that ``model`` is a kdskin classifier; return ``(image_size, head)``.

    ``head`` is ``"probs"`` or ``"logits"`` (``"probs"`` wins when both exist). Raises
    :class:`ModelError` (one line) for anything else.
    """
    name = _label(model)
    if not isinstance(model, keras.Model):
        raise ModelError(f"model '{name}': expected a keras.Model, got {type(model).__name__}; "
                         f"pass a kdskin classifier")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ModelError(f"model '{name}': expected exactly one input (an RGB image), got "
                         f"{0 if not inputs else len(inputs)}; pass a kdskin classifier")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelError(f"model '{name}': input must be (batch, S, S, 3), got rank "
                         f"{len(shape)} shape {shape}; pass a kdskin image classifier")
    if shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ModelError(f"model '{name}': input must be a fixed square RGB image "
                         f"(batch, S, S, 3), got {shape}")
    outputs = named_outputs(model)
    for head in (PROBS_NAME, LOGITS_NAME):
        if head in outputs:
            out_shape = tuple(outputs[head].shape)
            if len(out_shape) != 2 or out_shape[-1] != NUM_CLASSES:
                raise ModelError(f"model '{name}': output '{head}' must be (batch, "
                                 f"{NUM_CLASSES}), got {out_shape}; pass a kdskin classifier")
            return int(shape[1]), head
    if len(outputs) == 1:
        only = next(iter(outputs.values()))
        if tuple(only.shape)[-1:] == (NUM_CLASSES,):
            raise ModelError(f"model '{name}': its one output is not named 'logits' or "
                             f"'{PROBS_NAME}' (got '{next(iter(outputs))}'); kdskin cannot tell "
                             f"logits from probabilities, rebuild it with kdskin.models")
    raise ModelError(f"model '{name}': no 'logits' or '{PROBS_NAME}' output (outputs: "
                     f"{', '.join(outputs) or 'none'}); pass a kdskin classifier")


def load_keras(path: str | Path) -> keras.Model:
    """Load a ``.keras`` file with kdskin's custom layers registered; one-line error if not."""
    import kdskin.models.layers  # noqa: F401  (registers the custom layers)

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found; pass an existing .keras file")
    if path.suffix not in (".keras", ".h5"):
        raise ModelError(f"{path}: not a Keras model file; pass a .keras file written by kdskin")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelError(f"{path}: cannot load as a Keras model ({exc.__class__.__name__}); "
                         f"pass a .keras file written by kdskin") from None


def mark_trained(model: keras.Model, trained: bool = True) -> keras.Model:
    """Record that ``model`` holds trained weights (after ``fit`` or loading a trained file)."""
    setattr(model, TRAINED_ATTR, bool(trained))
    return model


def is_trained(model: keras.Model) -> bool:
    """True if :func:`mark_trained` was called, or the model's optimizer has taken steps.

    The second test covers a ``.keras`` file saved after ``fit`` and loaded with its optimizer
    state. A freshly built model has neither. ``mark_trained(model, False)`` wins.
    """
    flag = getattr(model, TRAINED_ATTR, None)
    if flag is not None:
        return bool(flag)
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    try:
        return iterations is not None and int(keras.ops.convert_to_numpy(iterations)) > 0
    except (TypeError, ValueError):
        return False


def count_params(model: keras.Model) -> int:
    """Total number of weights (trainable and not) of ``model``."""
    return int(sum(np.prod(w.shape) for w in model.weights))


def deployable(model: keras.Model) -> keras.Model:
    """The model with a single output ``"probs"`` = softmax(logits), ready to convert or serve.

    A model whose only output is already ``"probs"`` is returned as is.
    """
    _, head = check_classifier(model)
    if head == PROBS_NAME and len(named_outputs(model)) == 1:
        return model
    wrapped = to_deployable(model)
    check_classifier(wrapped)
    return wrapped


def to_deployable(model: keras.Model, name: str | None = None, temperature: float = 1.0,
                  class_offsets: Sequence[float] | None = None) -> keras.Model:
    """Single input ``"image"`` (0..255 float32) -> ``{"probs": softmax(logits / T + b)}``.

    ``temperature`` T: the calibration fitted on the validation split (1: none); it becomes a
    ``temperature`` scaling layer before the softmax, so the deployed probabilities are the
    calibrated ones. ``class_offsets`` b ``(7,)``: log-odds added after it (the melanoma
    operating point, :mod:`kdskin.trust.operating_point`), a ``class_offsets`` layer; None:
    none.

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
    if not temperature > 0:
        raise ModelError(f"{label}: temperature must be positive, got {temperature}")
    if temperature != 1.0:
        logits = keras.layers.Rescaling(1.0 / float(temperature), name="temperature")(logits)
    if class_offsets is not None:
        offsets = [float(v) for v in class_offsets]
        if len(offsets) != NUM_CLASSES or not all(math.isfinite(v) for v in offsets):
            raise ModelError(f"{label}: class_offsets must be {NUM_CLASSES} finite numbers, "
                             f"got {offsets}")
        logits = keras.layers.Rescaling(1.0, offset=offsets, name="class_offsets")(logits)
    probs = keras.layers.Softmax(name=PROBS_NAME)(logits)
    return keras.Model(image, {PROBS_NAME: probs}, name=name or f"{model.name}_deploy")
