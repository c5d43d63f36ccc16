"""Int8-friendly input centring: an exact rewrite of "Rescaling -> first Conv2D" before export.

A classifier's first convolution sees the pixels after a ``Rescaling`` (``v = s * x + o``, x in
0..255). For the CNN branch that is ``x / 255``, all positive with a large mean (skin images
average ~150), so the int8 weight rounding error of that convolution is multiplied by the
*uncentred* input: ``sum(dW * v)`` grows with ``|v|`` rather than with the image's contrast.
On the cpu-config student this first convolution alone was the most sensitive op of the int8
file (keeping just it in float raised top-1 agreement with Keras from 0.965 to 0.979).

The rewrite feeds the convolution ``u = x - 128`` instead (an integer: exactly representable in
int8 with scale 1) and folds the rescaling into its weights and bias::

    conv(W, s*x + o) + b  ==  conv(s*W, u) + b + (128*s + o) * sum(W)

Zero padding in ``v`` is padding with ``p = -128 - o/s`` in ``u`` (-128 for ``x/255``, i.e. a
black pixel), so "same" padding becomes an explicit constant pad and the convolution runs
"valid": the rewritten model computes the same function (to float rounding), and the weight
error now scales with ``|x - 128|``. It only applies where the pattern is exactly
"model input -> scalar Rescaling -> Conv2D (stride s, no dilation, one group, channels last)",
where a border-fill and a colour layer (:class:`~kdskin.models.layers.BorderFill`,
:class:`~kdskin.models.layers.ColourConstancy` or ``ColourStandardise``, 0..255 in and out)
may sit between the input and the rescaling; anything else is left as it is.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import keras
import numpy as np

from kdskin.compat import functional_nodes
from kdskin.models.layers import COLOUR_LAYERS, BorderFill

#: The integer the centred input is shifted by (uint8 pixels -> int8 values, exactly).
CENTRE: int = 128


@keras.saving.register_keras_serializable(package="kdskin")
class ConstantPad2D(keras.layers.Layer):
    """Pad the spatial axes of ``(b, h, w, c)`` with a constant: ``(b, h+t+d, w+l+r, c)``."""

    def __init__(self, padding: tuple[tuple[int, int], tuple[int, int]], value: float,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(p) for p in pair) for pair in padding)
        self.value = float(value)

    def call(self, x: Any) -> Any:
        (top, bottom), (left, right) = self.padding
        return keras.ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]],
                             constant_values=self.value)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        (top, bottom), (left, right) = self.padding
        b, h, w, c = input_shape
        return (b, None if h is None else h + top + bottom,
                None if w is None else w + left + right, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding, "value": self.value}


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) of one axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _scalar(value: Any) -> float | None:
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.size == 1 else None


def centrable_convs(model: keras.Model) -> dict[str, tuple[float, float]]:
    """``{conv layer name: (scale, offset)}`` for the convolutions the rewrite applies to.

    Those are ``Conv2D`` layers (channels last, no dilation, one group, "same" or "valid",
    static spatial input size, used once in the model) whose input is a scalar ``Rescaling``
    of the model's input (or of its border-fill or colour-constancy layer's 0..255 output). Raises
    :class:`kdskin.compat.CompatError` when the model's layer graph cannot be read (a private
    Keras API, :func:`kdskin.compat.functional_nodes`): the caller records why centring was
    skipped instead of skipping it silently.
    """
    nodes = functional_nodes(model)
    producer = {id(t): node for node in nodes for t in node.output_tensors}
    uses = Counter(id(node.operation) for node in nodes)
    inputs = {id(t) for t in model.inputs}
    for node in nodes:  # pixels 0..255 after the input front count as the input (in order)
        if (isinstance(node.operation, (BorderFill, *COLOUR_LAYERS))
                and len(node.input_tensors) == 1
                and id(node.input_tensors[0]) in inputs):
            inputs.update(id(t) for t in node.output_tensors)
    found: dict[str, tuple[float, float]] = {}
    for node in nodes:
        layer = node.operation
        if type(layer) is not keras.layers.Conv2D or uses[id(layer)] != 1:
            continue
        if (layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1)
                or getattr(layer, "groups", 1) != 1 or layer.padding not in ("same", "valid")
                or len(node.input_tensors) != 1):
            continue
        source = producer.get(id(node.input_tensors[0]))
        if source is None or not isinstance(source.operation, keras.layers.Rescaling):
            continue
        if len(source.input_tensors) != 1 or id(source.input_tensors[0]) not in inputs:
            continue
        rescale = source.operation
        shape = tuple(node.input_tensors[0].shape)
        scale, offset = _scalar(rescale.scale), _scalar(rescale.offset)
        if scale is None or offset is None or scale == 0.0 or None in shape[1:3]:
            continue
        found[layer.name] = (scale, offset)
    return found


def _centred_conv(layer: keras.layers.Conv2D, image: Any, scale: float, offset: float) -> Any:
    """Apply the rewritten ``layer`` to the 0..255 ``image``; same result as the original."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)  # (kh, kw, cin, cout)
    bias = (keras.ops.convert_to_numpy(layer.bias).astype(np.float64) if layer.use_bias
            else np.zeros(kernel.shape[-1]))
    kh, kw = kernel.shape[:2]
    sh, sw = layer.strides
    x = keras.layers.Rescaling(1.0, offset=-float(CENTRE), name=f"{layer.name}_centre")(image)
    if layer.padding == "same":
        h, w = int(image.shape[1]), int(image.shape[2])
        pads = (_same_padding(h, kh, sh), _same_padding(w, kw, sw))
        if any(pads[0] + pads[1]):
            x = ConstantPad2D(pads, value=-CENTRE - offset / scale, name=f"{layer.name}_pad")(x)
    conv = keras.layers.Conv2D(layer.filters, (kh, kw), strides=(sh, sw), padding="valid",
                               activation=layer.activation, use_bias=True,
                               dtype=layer.dtype_policy, name=f"{layer.name}_centred")
    out = conv(x)
    conv.set_weights([(scale * kernel).astype(np.float32),
                      (bias + (CENTRE * scale + offset) * kernel.sum(axis=(0, 1, 2)))
                      .astype(np.float32)])
    return out


def centre_first_convs(model: keras.Model) -> tuple[keras.Model, list[str]]:
    """The model with :func:`centrable_convs` rewritten (see the module docstring).

    Returns ``(model, names of the rewritten convolutions)``; the model itself when there is
    nothing to rewrite. Other layers are shared with ``model`` (same weights). The result
    computes the same outputs as ``model`` up to float rounding. Raises
    :class:`kdskin.compat.CompatError` when the layer graph cannot be read.
    """
    targets = centrable_convs(model)
    if not targets:
        return model, []
    images: dict[int, Any] = {}

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(layer, keras.layers.Rescaling) and args:
            out = layer(*args, **kwargs)
            images[id(out)] = args[0]
            return out
        if layer.name in targets and args and id(args[0]) in images:
            return _centred_conv(layer, images[id(args[0])], *targets[layer.name])
        return layer(*args, **kwargs)

    inputs = keras.tree.map_structure(
        lambda t: keras.Input(tuple(t.shape[1:]), name=t.name, dtype=t.dtype), model.input)
    rewritten = keras.models.clone_model(model, input_tensors=inputs,
                                         clone_function=lambda layer: layer, call_function=call)
    present = {layer.name for layer in rewritten.layers}
    return rewritten, [name for name in targets if f"{name}_centred" in present]
