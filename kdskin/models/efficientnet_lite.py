"""EfficientNet-Lite feature extractor, built into the caller's functional graph.

EfficientNet-Lite (tensorflow/tpu ``efficientnet_lite_builder.py``) is EfficientNet made friendly
to full-integer quantization: ReLU6 instead of swish, no squeeze-and-excite, and a fixed stem
(32 filters) and head (1280 filters), with the first and last stages' repeats not scaled by depth.
Lite0..Lite4 use the width/depth coefficients below; kdskin names them B0..B4 to match
``student.efficientnet``. Preprocessing is inside: ``(pixels - 127) / 128`` on 0..255 input.

Layer names follow ``keras.applications.EfficientNet`` (``stem_conv``, ``block2a_dwconv``,
``top_conv`` ...) so the two variants can be inspected the same way.
"""

from __future__ import annotations

import math
from typing import Any

from keras import layers

from kdskin.models.specs import EFFICIENTNETS, check_choice

#: variant (every name of :data:`kdskin.models.specs.EFFICIENTNETS`) -> (width coefficient,
#: depth coefficient, default resolution)
LITE_COEFFICIENTS: dict[str, tuple[float, float, int]] = {
    "B0": (1.0, 1.0, 224),
    "B1": (1.0, 1.1, 240),
    "B2": (1.1, 1.2, 260),
    "B3": (1.2, 1.4, 280),
    "B4": (1.4, 1.8, 300),
}

#: (kernel, repeats, filters_out, expand_ratio, strides) per stage, as in EfficientNet-B0.
LITE_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 16, 1, 1),
    (3, 2, 24, 6, 2),
    (5, 2, 40, 6, 2),
    (3, 3, 80, 6, 2),
    (5, 3, 112, 6, 1),
    (5, 4, 192, 6, 2),
    (3, 1, 320, 6, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DROP_CONNECT_RATE = 0.2
DEPTH_DIVISOR = 8
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Scale a filter count by ``width``, round to a multiple of ``divisor`` (as EfficientNet)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def _relu6(name: str) -> layers.Layer:
    return layers.ReLU(max_value=6.0, name=name)


def lite_block(filters_out: int, kernel: int, strides: int, expand_ratio: int,
               drop_rate: float, name: str) -> Any:
    """Inverted residual block without squeeze-excite: ``(b, h, w, cin) -> (b, h/s, w/s, out)``."""

    def apply(inputs: Any) -> Any:
        filters_in = int(inputs.shape[-1])
        x = inputs
        if expand_ratio != 1:
            x = layers.Conv2D(filters_in * expand_ratio, 1, padding="same", use_bias=False,
                              name=f"{name}expand_conv")(x)
            x = layers.BatchNormalization(name=f"{name}expand_bn")(x)
            x = _relu6(f"{name}expand_activation")(x)
        x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                                   name=f"{name}dwconv")(x)
        x = layers.BatchNormalization(name=f"{name}bn")(x)
        x = _relu6(f"{name}activation")(x)
        x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False,
                          name=f"{name}project_conv")(x)
        x = layers.BatchNormalization(name=f"{name}project_bn")(x)
        if strides == 1 and filters_in == filters_out:
            if drop_rate > 0:
                x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1),
                                   name=f"{name}drop")(x)
            x = layers.Add(name=f"{name}add")([x, inputs])
        return x

    return apply


def efficientnet_lite(image: Any, variant: str = "B0", stem_stride: int = 2,
                      stage_outputs: list[Any] | None = None) -> Any:
    """Build EfficientNet-Lite ``variant`` on ``image`` (0..255, ``(b, S, S, 3)``).

    Returns the last feature map ``(b, ceil(S/32), ceil(S/32), 1280)`` (layer ``top_activation``);
    ``stem_stride`` 1 (instead of the published 2) makes it ``(b, ceil(S/16), ceil(S/16), 1280)``.
    ``stage_outputs``, when given, receives the output of each of the 7 stages (for exits).
    """
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
    check_choice("student.efficientnet", variant, EFFICIENTNETS)
    width, depth, _ = LITE_COEFFICIENTS[variant]
    x = layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD,
                         name="effnet_lite_rescale")(image)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=stem_stride, padding="same", use_bias=False,
                      name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = _relu6("stem_activation")(x)

    last = len(LITE_STAGES) - 1
    repeats = [r if i in (0, last) else round_repeats(r, depth)
               for i, (_, r, _, _, _) in enumerate(LITE_STAGES)]
    total = float(sum(repeats))
    b = 0
    for i, (kernel, _, filters, expand, strides) in enumerate(LITE_STAGES):
        filters_out = round_filters(filters, width)
        for j in range(repeats[i]):
            x = lite_block(filters_out, kernel, strides if j == 0 else 1, expand,
                           DROP_CONNECT_RATE * b / total, name=f"block{i + 1}{chr(j + 97)}_")(x)
            b += 1
        if stage_outputs is not None:
            stage_outputs.append(x)

    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    return _relu6("top_activation")(x)


def block_names(variant: str = "B0") -> list[str]:
    """The name prefixes of the inverted-residual blocks of ``variant``, in build order
    (``block1a_``, ``block2a_``, ``block2b_`` ...): the order of ``_blocks.N`` in the published
    checkpoints."""
    check_choice("student.efficientnet", variant, EFFICIENTNETS)
    _, depth, _ = LITE_COEFFICIENTS[variant]
    last = len(LITE_STAGES) - 1
    names = []
    for i, (_, r, _, _, _) in enumerate(LITE_STAGES):
        repeats = r if i in (0, last) else round_repeats(r, depth)
        names += [f"block{i + 1}{chr(j + 97)}_" for j in range(repeats)]
    return names
