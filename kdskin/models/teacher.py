"""The hybrid teacher: a ViT branch and a ConvNeXt (or ConvMixer, or EfficientNet-Lite) branch
with an exit per block. ``teacher.vit_depth: 0`` leaves the ViT branch out: the conv branch
alone, with its exits and the head (a plain EfficientNet-Lite teacher).

Input ``"image"``: ``(batch, S, S, 3)`` float32, 0..255. Outputs (a dict of LOGITS, each
``(batch, num_classes)``): ``vit_exit_1..vit_exit_N``, ``conv_exit_1..conv_exit_M`` and ``logits``
(the fused head on both branches' pooled final features).

Stable layer names (what CAMs and feature distillation address):

- ``vit_token_grid``: the last ViT block's patch tokens, layer-normalised and reshaped to
  ``(S/p, S/p, D)`` (there is no CLS token). Both ``vit_exit_N`` and ``logits`` depend on it.
- ``conv_features``: the conv branch's last feature map, ``(S/p, S/p, F)``
  (``efficientnet_lite``: ``(ceil(S/32), ceil(S/32), 1280)``, ImageNet weights with
  ``teacher.conv_weights: imagenet``; its layers keep EfficientNet's names, ``stem_conv``,
  ``block2a_dwconv`` ...).
- blocks are ``vit_stage_1_block_{i}_*`` and ``conv_stage_1_block_{j}_*`` (1-based).

ViT MLP: ``cfg.mlp_units`` are the hidden sizes of each transformer block's MLP; every Dense but
the last has a GELU, and each is followed by dropout (the standard ViT MLP). The last unit count
must equal ``projection_dim`` so the residual adds up; the paper's MLP 512/256 with projection 256
satisfies this as is. A mismatch is a :class:`ConfigError`, not a silently added projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from kdskin.constants import NUM_CLASSES
from kdskin.models.efficientnet_lite import efficientnet_lite
from kdskin.models.imagenet import load_imagenet_lite
from kdskin.models.inputs import image_input
from kdskin.models.layers import LayerScale, PositionEmbedding, set_bn_momentum
from kdskin.models.specs import CONV_BRANCHES, ColourSpec, TeacherConfig, validate_teacher

__all__ = ["CONV_BRANCHES", "build_teacher", "validate_teacher"]

LN_EPSILON = 1e-6

Block = Callable[[Any], Any]


# --------------------------------------------------------------------------- ViT branch


def vit_block(dim: int, num_heads: int, mlp_units: list[int], dropout: float,
              name: str) -> Block:
    """Pre-norm transformer block: ``(batch, N, dim) -> (batch, N, dim)``."""

    def apply(tokens: Any) -> Any:
        x = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_layernorm_1")(tokens)
        x = layers.MultiHeadAttention(num_heads=num_heads, key_dim=dim // num_heads,
                                      dropout=dropout, name=f"{name}_attention")(x, x)
        x = layers.Add(name=f"{name}_add_1")([x, tokens])
        skip = x
        x = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_layernorm_2")(x)
        for k, units in enumerate(mlp_units, start=1):
            last = k == len(mlp_units)
            x = layers.Dense(units, activation=None if last else "gelu",
                             name=f"{name}_mlp_dense_{k}")(x)
            x = layers.Dropout(dropout, name=f"{name}_mlp_dropout_{k}")(x)
        return layers.Add(name=f"{name}_add_2")([x, skip])

    return apply


def vit_exit(grid_size: int, dim: int, num_classes: int, index: int, grid_name: str) -> Block:
    """Exit head ``(batch, N, dim) -> (pooled (batch, dim), logits (batch, num_classes))``.

    Tokens are layer-normalised, reshaped to a ``(grid, grid, dim)`` map (named ``grid_name``),
    average-pooled and classified by a Dense named ``vit_exit_{index}``.
    """
    name = f"vit_exit_{index}"

    def apply(tokens: Any) -> tuple[Any, Any]:
        x = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_layernorm")(tokens)
        x = layers.Reshape((grid_size, grid_size, dim), name=grid_name)(x)
        pooled = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
        return pooled, layers.Dense(num_classes, name=name)(pooled)

    return apply


def vit_branch(x: Any, cfg: TeacherConfig, image_size: int, num_classes: int
               ) -> tuple[Any, list[Any]]:
    """``(batch, S, S, 3)`` in -1..1 -> (pooled final features, [exit logits per block])."""
    grid = image_size // cfg.patch_size
    dim = cfg.projection_dim
    x = layers.Conv2D(dim, cfg.patch_size, strides=cfg.patch_size, padding="valid",
                      name="vit_patchify")(x)
    x = layers.Reshape((grid * grid, dim), name="vit_patch_tokens")(x)
    x = PositionEmbedding(name="vit_position_embedding")(x)
    exits = []
    pooled = None
    for i in range(1, cfg.vit_depth + 1):
        x = vit_block(dim, cfg.num_heads, cfg.mlp_units, cfg.dropout,
                      name=f"vit_stage_1_block_{i}")(x)
        grid_name = "vit_token_grid" if i == cfg.vit_depth else f"vit_exit_{i}_grid"
        pooled, logits = vit_exit(grid, dim, num_classes, i, grid_name)(x)
        exits.append(logits)
    return pooled, exits


# --------------------------------------------------------------------------- conv branch


def convnext_stem(filters: int, patch_size: int) -> Block:
    """Patchify stem: ``(batch, S, S, 3) -> (batch, S/p, S/p, filters)``."""

    def apply(x: Any) -> Any:
        x = layers.Conv2D(filters, patch_size, strides=patch_size, name="conv_stem")(x)
        return layers.LayerNormalization(epsilon=LN_EPSILON, name="conv_stem_layernorm")(x)

    return apply


def convnext_block(filters: int, kernel: int, name: str, layer_scale_init: float = 1e-6
                   ) -> Block:
    """ConvNeXt block (depthwise conv, LN, 4x pointwise MLP with GELU, LayerScale, residual)."""

    def apply(inputs: Any) -> Any:
        x = layers.DepthwiseConv2D(kernel, padding="same", name=f"{name}_depthwise_conv")(inputs)
        x = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_layernorm")(x)
        x = layers.Dense(4 * filters, name=f"{name}_pointwise_conv_1")(x)
        x = layers.Activation("gelu", name=f"{name}_gelu")(x)
        x = layers.Dense(filters, name=f"{name}_pointwise_conv_2")(x)
        x = LayerScale(layer_scale_init, filters, name=f"{name}_layer_scale")(x)
        return layers.Add(name=f"{name}_add")([inputs, x])

    return apply


def convmixer_stem(filters: int, patch_size: int) -> Block:
    """ConvMixer stem as in the published code: patch conv, GELU, BN."""

    def apply(x: Any) -> Any:
        x = layers.Conv2D(filters, patch_size, strides=patch_size, name="conv_stem")(x)
        x = layers.Activation("gelu", name="conv_stem_gelu")(x)
        return layers.BatchNormalization(name="conv_stem_bn")(x)

    return apply


def convmixer_block(filters: int, kernel: int, name: str) -> Block:
    """ConvMixer block: depthwise conv + GELU + BN with a residual, then pointwise + GELU + BN."""

    def apply(inputs: Any) -> Any:
        x = layers.DepthwiseConv2D(kernel, padding="same", name=f"{name}_depthwise_conv")(inputs)
        x = layers.Activation("gelu", name=f"{name}_depthwise_gelu")(x)
        x = layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
        x = layers.Conv2D(filters, 1, name=f"{name}_pointwise_conv")(x)
        x = layers.Activation("gelu", name=f"{name}_pointwise_gelu")(x)
        return layers.BatchNormalization(name=f"{name}_pointwise_bn")(x)

    return apply


def conv_exit(num_classes: int, index: int) -> Block:
    """Exit head ``(batch, h, w, F) -> (pooled (batch, F), logits (batch, num_classes))``."""
    name = f"conv_exit_{index}"

    def apply(x: Any) -> tuple[Any, Any]:
        x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
        pooled = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_layernorm")(x)
        return pooled, layers.Dense(num_classes, name=name)(pooled)

    return apply


CONV_STEMS = {"convnext": convnext_stem, "convmixer": convmixer_stem}


def conv_branch(x: Any, cfg: TeacherConfig, num_classes: int) -> tuple[Any, list[Any]]:
    """``(batch, S, S, 3)`` in -1..1 -> (pooled final features, [exit logits per block])."""
    x = CONV_STEMS[cfg.conv_branch](cfg.conv_filters, cfg.patch_size)(x)
    exits = []
    pooled = None
    for j in range(1, cfg.conv_depth + 1):
        name = f"conv_stage_1_block_{j}"
        if cfg.conv_branch == "convnext":
            x = convnext_block(cfg.conv_filters, cfg.conv_kernel, name,
                               cfg.layer_scale_init)(x)
        else:
            x = convmixer_block(cfg.conv_filters, cfg.conv_kernel, name)(x)
        if j == cfg.conv_depth:
            x = layers.Identity(name="conv_features")(x)
        pooled, logits = conv_exit(num_classes, j)(x)
        exits.append(logits)
    return pooled, exits


def lite_conv_branch(image: Any, cfg: TeacherConfig, num_classes: int
                     ) -> tuple[Any, list[Any]]:
    """EfficientNet-Lite ``cfg.conv_variant`` on 0..255 ``image`` (its own rescaling inside)
    -> (pooled final features ``(batch, 1280)``, [exit logits on the last ``conv_depth - 1``
    stages' outputs, then on the head's ``conv_features``])."""
    stages: list[Any] = []
    top = efficientnet_lite(image, cfg.conv_variant, stage_outputs=stages)
    taps = stages[len(stages) - cfg.conv_depth + 1:] + [top]
    exits, pooled = [], None
    for j, x in enumerate(taps, start=1):
        if j == len(taps):
            x = layers.Identity(name="conv_features")(x)
        pooled, logits = conv_exit(num_classes, j)(x)
        exits.append(logits)
    return pooled, exits


# --------------------------------------------------------------------------- teacher


def build_teacher(cfg: TeacherConfig, image_size: int, num_classes: int = NUM_CLASSES,
                  name: str = "teacher",
                  colour_constancy: ColourSpec = None,
                  border_fill: bool = False) -> keras.Model:
    """Build the hybrid ViT + ConvNeXt/ConvMixer teacher (see the module docstring).

    ``image`` ``(batch, S, S, 3)`` 0..255 -> dict of logits ``(batch, num_classes)``.
    Raises :class:`ConfigError` before building anything if the configuration cannot work.
    ``colour_constancy``: Minkowski norm p of a colour-constancy layer right after the input,
    or ``"standardise"`` (:func:`kdskin.models.inputs.image_input`; None: none);
    ``border_fill``: a border-fill layer before it (black borders filled with the image's mean
    colour).
    """
    validate_teacher(cfg, image_size, num_classes)
    image, pixels = image_input(image_size, colour_constancy, border_fill)
    # Centred input (-1..1), not 0..1: both branches start with a linear patch embedding
    # followed by LayerNorm, and on all-positive 0..1 pixels a dark patch embeds to nearly a
    # scaled copy of a light one, which LayerNorm then maps to the same vector -- the branch
    # loses lesion darkness and contrast. Measured on the generated data (conv branch alone,
    # 10 epochs): val accuracy 0.38 (= majority class) with 0..1, 0.50 with -1..1.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(pixels)

    vit_pooled, vit_exits = (vit_branch(x, cfg, image_size, num_classes) if cfg.vit_depth
                             else (None, []))
    if cfg.conv_branch == "efficientnet_lite":
        conv_pooled, conv_exits = lite_conv_branch(pixels, cfg, num_classes)
    else:
        conv_pooled, conv_exits = conv_branch(x, cfg, num_classes)

    fused = (layers.Concatenate(name="fusion_concat")([vit_pooled, conv_pooled])
             if vit_pooled is not None else conv_pooled)
    fused = layers.Dense(cfg.head_units, activation="relu", name="fusion_dense")(fused)
    fused = layers.Dropout(cfg.head_dropout, name="fusion_dropout")(fused)
    logits = layers.Dense(num_classes, name="logits")(fused)

    outputs = {f"vit_exit_{i}": t for i, t in enumerate(vit_exits, start=1)}
    outputs.update({f"conv_exit_{j}": t for j, t in enumerate(conv_exits, start=1)})
    outputs["logits"] = logits
    model = keras.Model(image, outputs, name=name)
    set_bn_momentum(model, cfg.bn_momentum)
    if cfg.conv_branch == "efficientnet_lite" and cfg.conv_weights == "imagenet":
        load_imagenet_lite(model, cfg.conv_variant)  # weights loaded last
    return model
