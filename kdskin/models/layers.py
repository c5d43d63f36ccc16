"""Small serialisable custom layers used by the kdskin models.

Every layer is registered under the package ``"kdskin"``, so ``keras.models.load_model`` finds it
without ``custom_objects`` once ``kdskin.models`` has been imported.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import initializers, ops


@keras.saving.register_keras_serializable(package="kdskin")
class LayerScale(keras.layers.Layer):
    """Multiply the last axis by a learned per-channel scale (CaiT / ConvNeXt layer scale).

    ``(..., C) -> (..., C)``; the scale starts at ``init_values`` (a small number such as 1e-6, so
    a residual block starts close to the identity).
    """

    def __init__(self, init_values: float, projection_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_values = float(init_values)
        self.projection_dim = int(projection_dim)

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] != self.projection_dim:
            raise ValueError(f"{self.name}: expected {self.projection_dim} channels, "
                             f"got input shape {input_shape}")
        self.gamma = self.add_weight(
            name="gamma", shape=(self.projection_dim,),
            initializer=initializers.Constant(self.init_values), trainable=True)

    def call(self, x: Any) -> Any:
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"init_values": self.init_values, "projection_dim": self.projection_dim})
        return config


@keras.saving.register_keras_serializable(package="kdskin")
class PositionEmbedding(keras.layers.Layer):
    """Add a learned position embedding to a sequence of patch tokens.

    ``(batch, num_patches, dim) -> (batch, num_patches, dim)``. The table has shape
    ``(num_patches, dim)`` and is created from the input shape, so the layer has no arguments
    besides its initializer. There is no CLS token: kdskin pools the tokens instead, which keeps
    the token sequence reshapeable into a spatial grid for CAMs.
    """

    def __init__(self, initializer: Any = "truncated_normal", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if initializer == "truncated_normal":
            initializer = initializers.TruncatedNormal(stddev=0.02)
        self.initializer = initializers.get(initializer)

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"{self.name}: expected (batch, num_patches, dim) with known "
                             f"num_patches and dim, got {input_shape}")
        self.embedding = self.add_weight(
            name="embedding", shape=(int(input_shape[1]), int(input_shape[2])),
            initializer=self.initializer, trainable=True)

    def call(self, x: Any) -> Any:
        return x + ops.expand_dims(ops.cast(self.embedding, x.dtype), 0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"initializer": initializers.serialize(self.initializer)})
        return config


#: Name of the colour-constancy layer in every kdskin model that has one; the int8 export
#: keeps the ops under this name in float32 (:mod:`kdskin.export.convert`).
COLOUR_CONSTANCY_NAME = "colour_constancy"


@keras.saving.register_keras_serializable(package="kdskin")
class ColourConstancy(keras.layers.Layer):
    """Shades of Grey colour constancy of each image (Finlayson & Trezzi 2004), no weights.

    ``(batch, H, W, 3)`` 0..255 -> ``(batch, H, W, 3)`` 0..255. Per image and channel c, the
    illuminant estimate is the Minkowski ``power``-mean of the pixels,
    ``n_c = mean_xy((x_c / 255) ** p) ** (1 / p)``, and each channel is scaled by
    ``rms(n) / (n_c + epsilon)`` (``rms`` over the 3 channels: the published
    ``x / (sqrt(3) * n / ||n||)``), then clipped to 0..255. ``power`` 1 is grey world (every
    channel's mean becomes the same); 6 is the Shades of Grey of the ISIC 2018/2019 winners. A
    global colour cast (per-channel gains) is removed exactly, up to clipping.
    """

    def __init__(self, power: float = 6.0, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not power >= 1.0:
            raise ValueError(f"{self.name}: power must be at least 1, got {power}")
        _check_positive(self.name, "epsilon", epsilon)
        self.power = float(power)
        self.epsilon = float(epsilon)

    def call(self, x: Any) -> Any:
        v = x * (1.0 / 255.0)
        if self.power == 1.0:
            norm = ops.mean(v, axis=(1, 2), keepdims=True)
        else:
            norm = ops.power(ops.mean(ops.power(v, self.power), axis=(1, 2), keepdims=True),
                             1.0 / self.power)
        norm = norm + self.epsilon  # (b, 1, 1, 3)
        target = ops.sqrt(ops.mean(ops.square(norm), axis=-1, keepdims=True))  # (b, 1, 1, 1)
        return ops.clip(x * (target / norm), 0.0, 255.0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"power": self.power, "epsilon": self.epsilon})
        return config


def _check_positive(layer: str, key: str, value: float) -> None:
    if not value > 0.0:
        raise ValueError(f"{layer}: {key} must be positive, got {value}")


def _rgb_reference(layer: str, keys: tuple[str, str], offset: Any, scale: Any
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(offset, scale)`` as float triples, R, G, B: ``offset`` in 0..255, ``scale`` positive;
    a ValueError naming the layer and both ``keys`` otherwise."""
    off, sc = tuple(float(v) for v in offset), tuple(float(v) for v in scale)
    if len(off) != 3 or len(sc) != 3 or not all(0.0 <= v <= 255.0 for v in off) \
            or not all(v > 0.0 for v in sc):
        raise ValueError(f"{layer}: {keys[0]} must be 3 values in 0..255 and {keys[1]} 3 "
                         f"positive values, got {offset}, {scale}")
    return off, sc


def _to_reference(x: Any, shifted: Any, spread: Any, floor: float,
                  offset: tuple[float, ...], scale: tuple[float, ...]) -> Any:
    """``offset + shifted * scale / max(spread, floor)`` clipped to 0..255: an image's pixels
    ``shifted`` ``(b, H, W, 3)`` by its own per-channel statistic and divided by its ``spread``
    ``(b, 1, 1, 3)``, mapped onto a reference ``offset`` and ``scale`` (R, G, B)."""
    ratio = ops.convert_to_tensor(scale, x.dtype) / ops.maximum(spread, floor)
    return ops.clip(ops.convert_to_tensor(offset, x.dtype) + shifted * ratio, 0.0, 255.0)


#: Mean and standard deviation (R, G, B; 0..255) that :class:`ColourStandardise` gives every
#: image: HAM10000's per-channel mean colour and mean per-image standard deviation (all 10,015
#: images resized to 64 x 64; ``experiments/2026-12/colour_reference.py``).
HAM_MEAN_RGB: tuple[float, float, float] = (194.7, 139.3, 145.5)
HAM_STD_RGB: tuple[float, float, float] = (22.2, 29.3, 32.8)


@keras.saving.register_keras_serializable(package="kdskin")
class ColourStandardise(keras.layers.Layer):
    """Per-image, per-channel standardisation to a reference colour and contrast, no weights.

    ``(batch, H, W, 3)`` 0..255 -> ``(batch, H, W, 3)`` 0..255. Per image and channel c, with the
    pixels' mean ``m_c`` and standard deviation ``s_c``:
    ``y_c = target_mean_c + target_std_c * (x_c - m_c) / max(s_c, min_std)``, clipped to 0..255.
    Any per-channel affine change of the pixels ``a_c x + b_c`` (``a_c > 0``) is removed exactly
    (up to clipping, rounding and ``min_std``): a colour cast (gains) as with Shades of Grey,
    and also over-exposure (``255 - w (255 - x)``: the skin paler *and* the lesion's contrast
    lower), which a gain-only estimate leaves in. The price: each image's overall brightness
    and contrast are set to the reference, so they cannot inform the decision.
    """

    def __init__(self, target_mean: Any = HAM_MEAN_RGB, target_std: Any = HAM_STD_RGB,
                 min_std: float = 4.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_mean, self.target_std = _rgb_reference(
            self.name, ("target_mean", "target_std"), target_mean, target_std)
        _check_positive(self.name, "min_std", min_std)
        self.min_std = float(min_std)

    def call(self, x: Any) -> Any:
        mean = ops.mean(x, axis=(1, 2), keepdims=True)  # (b, 1, 1, 3)
        centred = x - mean
        std = ops.sqrt(ops.mean(ops.square(centred), axis=(1, 2), keepdims=True))
        return _to_reference(x, centred, std, self.min_std, self.target_mean, self.target_std)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"target_mean": list(self.target_mean),
                       "target_std": list(self.target_std), "min_std": self.min_std})
        return config


#: HAM10000's mean per-channel black point (the image's minimum) and mean Shades of Grey norm
#: (p = 6) above it, R, G, B 0..255: what :class:`AutoLevels` gives every image (all 10,015
#: images at 64 x 64; ``experiments/2026-12/colour_reference.py``).
HAM_BLACK_RGB: tuple[float, float, float] = (99.6, 36.8, 37.3)
HAM_SPAN_RGB: tuple[float, float, float] = (103.2, 114.9, 122.8)


@keras.saving.register_keras_serializable(package="kdskin")
class AutoLevels(keras.layers.Layer):
    """Per-image, per-channel levels: black point to the reference, Shades of Grey white point
    to the reference span, no weights.

    ``(batch, H, W, 3)`` 0..255 -> ``(batch, H, W, 3)`` 0..255. Per image and channel c, with the
    black point ``b_c = min_xy x_c`` and the Minkowski ``power``-norm of what lies above it,
    ``n_c = mean_xy((x_c - b_c) ** p) ** (1 / p)`` (the bright skin's level, as Shades of Grey):
    ``y_c = black_c + span_c * (x_c - b_c) / max(n_c, min_span)``, clipped to 0..255. Like
    :class:`ColourStandardise` it removes any per-channel affine change exactly (a cast, and
    over-exposure ``255 - w (255 - x)``), but it keeps each image's contrast relative to its
    skin (a faint lesion stays faint), where standardisation sets every image's spread alike.
    The black point is one pixel's value: a black border sets it to 0.
    """

    def __init__(self, power: float = 6.0, black: Any = HAM_BLACK_RGB, span: Any = HAM_SPAN_RGB,
                 min_span: float = 8.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not power >= 1.0:
            raise ValueError(f"{self.name}: power must be at least 1, got {power}")
        self.black, self.span = _rgb_reference(self.name, ("black", "span"), black, span)
        _check_positive(self.name, "min_span", min_span)
        self.power = float(power)
        self.min_span = float(min_span)

    def call(self, x: Any) -> Any:
        above = x - ops.min(x, axis=(1, 2), keepdims=True)  # (b, H, W, 3), >= 0
        v = above * (1.0 / 255.0)
        norm = 255.0 * ops.power(ops.mean(ops.power(v, self.power), axis=(1, 2), keepdims=True),
                                 1.0 / self.power)  # (b, 1, 1, 3)
        return _to_reference(x, above, norm, self.min_span, self.black, self.span)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"power": self.power, "black": list(self.black), "span": list(self.span),
                       "min_span": self.min_span})
        return config


#: The colour layers a model's input front may hold (one of them, named COLOUR_CONSTANCY_NAME).
COLOUR_LAYERS: tuple[type[keras.layers.Layer], ...] = (ColourConstancy, ColourStandardise,
                                                        AutoLevels)


BORDER_FILL_NAME = "border_fill"


@keras.saving.register_keras_serializable(package="kdskin")
class BorderFill(keras.layers.Layer):
    """Fill a black border (a round dermatoscope field, a frame) with the image's mean colour.

    ``(batch, H, W, 3)`` 0..255 -> ``(batch, H, W, 3)`` 0..255, no weights. A pixel is border
    when it is dark (every channel below ``threshold``) and a straight row or column of dark
    pixels joins it to an edge of the image: outside a centred circle or inside a frame every
    dark pixel is so joined, while a dark lesion inside the field is not (unless it reaches the
    edge itself). The mask is then grown by ``grow`` pixels (a ``2 grow + 1`` max-pool) to take
    the anti-aliased rim of a resized border. Border pixels get the mean colour of the other
    pixels of their image (black if the whole image is border). Row/column reachability is a
    cumulative sum of the non-dark pixels from each edge (TFLite ``CUMSUM``, ``REVERSE_V2``).
    """

    def __init__(self, threshold: float = 24.0, grow: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < threshold <= 128.0:
            raise ValueError(f"{self.name}: threshold must be in (0, 128], got {threshold}")
        if int(grow) != grow or grow < 0:
            raise ValueError(f"{self.name}: grow must be a whole number >= 0, got {grow}")
        self.threshold = float(threshold)
        self.grow = int(grow)

    def mask(self, x: Any) -> Any:
        """``(batch, H, W, 1)`` float32: 1 on the border, 0 elsewhere."""
        light = ops.cast(ops.max(x, axis=-1, keepdims=True) >= self.threshold, x.dtype)
        border = None
        for axis in (1, 2):
            from_start = ops.cumsum(light, axis=axis)
            from_end = ops.flip(ops.cumsum(ops.flip(light, axis=axis), axis=axis), axis=axis)
            for seen in (from_start, from_end):  # no light pixel between it and the edge
                reach = ops.cast(seen < 0.5, x.dtype)
                border = reach if border is None else ops.maximum(border, reach)
        if self.grow:
            size = 2 * self.grow + 1
            border = ops.max_pool(border, pool_size=size, strides=1, padding="same")
        return border

    def call(self, x: Any) -> Any:
        border = self.mask(x)
        keep = 1.0 - border
        count = ops.maximum(ops.sum(keep, axis=(1, 2), keepdims=True), 1.0)  # (b, 1, 1, 1)
        fill = ops.sum(x * keep, axis=(1, 2), keepdims=True) / count  # (b, 1, 1, 3)
        return x * keep + fill * border

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"threshold": self.threshold, "grow": self.grow})
        return config


CUSTOM_LAYERS: dict[str, type[keras.layers.Layer]] = {
    "AutoLevels": AutoLevels,
    "BorderFill": BorderFill,
    "ColourConstancy": ColourConstancy,
    "ColourStandardise": ColourStandardise,
    "LayerScale": LayerScale,
    "PositionEmbedding": PositionEmbedding,
}


@keras.saving.register_keras_serializable(package="kdskin")
class ProbabilityMean(keras.layers.Layer):
    """The logits of the weighted mean of several models' probabilities: an ensemble's output.

    ``[(batch, C)] * M`` logits -> ``(batch, C)`` ``log(sum_m w_m softmax(z_m))`` (weights
    ``weights``, default equal, summing to 1): a softmax of it is the ensemble's mean
    probability, so the ensemble is a classifier like any kdskin model.
    """

    def __init__(self, weights: list[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_weights = None if weights is None else [float(w) for w in weights]

    def call(self, logits: list[Any]) -> Any:
        count = len(logits)
        w = self.model_weights or [1.0 / count] * count
        if len(w) != count:
            raise ValueError(f"{self.name}: {len(w)} weights for {count} models")
        stacked = ops.stack([ops.log_softmax(ops.cast(z, "float32"), axis=-1) for z in logits])
        log_w = ops.reshape(ops.log(ops.convert_to_tensor(w, "float32")), (count, 1, 1))
        return ops.logsumexp(stacked + log_w, axis=0)

    def compute_output_shape(self, input_shape: list) -> tuple:
        return tuple(input_shape[0])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"weights": self.model_weights})
        return config


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; return how many.

    It is part of each layer's config, so a saved model reloads with the same value.
    """
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count
