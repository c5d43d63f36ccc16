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


CUSTOM_LAYERS: dict[str, type[keras.layers.Layer]] = {
    "LayerScale": LayerScale,
    "PositionEmbedding": PositionEmbedding,
}
