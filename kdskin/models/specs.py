"""What the model builders accept, declared once and checked without Keras.

The model sections of the configuration (:class:`TeacherConfig`, :class:`StudentConfig`), the
allowed values of their choice fields, and the rules a configuration must satisfy for a model to
be buildable (:func:`validate_baseline`, :func:`validate_teacher`, :func:`validate_student`).
The builders (:mod:`kdskin.models.teacher`, :mod:`kdskin.models.student`,
:mod:`kdskin.models.baseline`) call these functions on their arguments, and
:func:`kdskin.config.load_config` calls the same functions before any training, so a rule lives
in one place. This module imports neither Keras nor TensorFlow.

Errors are :class:`~kdskin.errors.ConfigError` with one line that names the configuration key
(``data.image_size``, ``teacher.patch_size``, ``student.fusion`` ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdskin.errors import ConfigError

#: EfficientNet sizes of the student's second branch (Keras' B0..B4, or Lite0..Lite4).
EFFICIENTNETS: tuple[str, ...] = ("B0", "B1", "B2", "B3", "B4")
#: ``standard``: keras.applications.EfficientNet; ``lite``: EfficientNet-Lite (int8-friendly).
EFFICIENTNET_VARIANTS: tuple[str, ...] = ("standard", "lite")
#: Student heads: the paper's MLP on concatenated features, that MLP added to the exits'
#: average, or no fusion head (the exits' average).
FUSIONS: tuple[str, ...] = ("concat", "residual", "none")
#: Fusion heads that count as "fused" (layer fusion).
FUSED_HEADS: tuple[str, ...] = ("concat", "residual")
#: The teacher's convolutional branch.
CONV_BRANCHES: tuple[str, ...] = ("convnext", "convmixer")
#: Student output names (dict of logits), in build order.
STUDENT_OUTPUTS: tuple[str, ...] = ("cnn_exit", "effnet_exit", "logits")
#: Weights values of ``student.weights`` besides a file path.
NAMED_WEIGHTS: tuple[str, ...] = ("none", "imagenet")

#: Smallest input each model can be built for (pixels, square).
STUDENT_MIN_IMAGE_SIZE = 32  # keras.applications.EfficientNet's minimum input size
TEACHER_MIN_IMAGE_SIZE = 8
BASELINE_MIN_IMAGE_SIZE = 10  # two valid 3x3 convolutions and two 2x2 pools


def choice_field(default: str, choices: tuple[str, ...]) -> Any:
    """A dataclass field whose allowed values :func:`kdskin.config.load_config` checks
    (``metadata["choices"]``); every choice field of the configuration is made with it."""
    return field(default=default, metadata={"choices": choices})


@dataclass
class TeacherConfig:
    """Hybrid ViT + ConvNeXt/ConvMixer teacher. paper.yaml holds the paper's sizes."""

    #: train (or reuse with --teacher) a teacher; false only for runs whose stages need none
    #: (``baseline`` alone), e.g. the teacher-free part of an ablation
    enabled: bool = True
    patch_size: int = 4
    projection_dim: int = 64
    num_heads: int = 4
    vit_depth: int = 2
    mlp_units: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    conv_branch: str = choice_field("convnext", CONV_BRANCHES)
    conv_filters: int = 64
    conv_depth: int = 2
    conv_kernel: int = 7
    layer_scale_init: float = 1e-6  # ConvNeXt LayerScale start value
    bn_momentum: float = 0.9  # BatchNorm moving-average momentum (ConvMixer branch)
    head_units: int = 256
    head_dropout: float = 0.5
    epochs: int = 8
    learning_rate: float = 1e-3
    exit_loss_weight: float = 0.3  # teacher training: CE weight of each exit head (logits: 1)


@dataclass
class StudentConfig:
    """Small CNN branch + EfficientNet branch, fused into one head ('layer fusion')."""

    cnn_filters: list[int] = field(default_factory=lambda: [32, 64])
    #: 3x3 convolutions (+ BN + ReLU) per CNN block before its pooling: 1 as published, 2 for a
    #: VGG-style branch like the strong plain reference
    cnn_convs: int = 1
    l2: float = 0.01
    efficientnet: str = choice_field("B0", EFFICIENTNETS)
    efficientnet_variant: str = choice_field("lite", EFFICIENTNET_VARIANTS)
    #: stride of the EfficientNet stem convolution: 2 as published (a 2x2 last map at 64 px);
    #: 1 keeps twice the resolution in every stage (4x4 at 64 px) for about twice the compute.
    #: Lite variant only (Keras' EfficientNet has a fixed stem).
    effnet_stem_stride: int = 2
    weights: str = "none"  # none | imagenet | path to a weights file
    #: layer fusion head: concat (the paper's MLP on the concatenated branch features),
    #: residual (that MLP added to the average of the exits) or none (exits averaged)
    fusion: str = choice_field("residual", FUSIONS)
    #: BatchNorm moving-average momentum of every BN layer (Keras' EfficientNet uses 0.99,
    #: whose statistics lag far behind the weights in short from-scratch runs: the student then
    #: predicts one class at evaluation time while training accuracy rises).
    bn_momentum: float = 0.9
    head_units: int = 256
    head_dropout: float = 0.5
    epochs: int = 6
    learning_rate: float = 1e-3


# --------------------------------------------------------------------------- shared rules


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices``; :class:`ConfigError` naming ``key`` otherwise."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def check_image_size(image_size: Any, minimum: int, what: str) -> None:
    """``data.image_size`` must be an integer of at least ``minimum`` for ``what``."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < minimum:
        raise ConfigError(f"data.image_size must be an integer of at least {minimum} for "
                          f"{what}, got {image_size!r}")


def check_num_classes(num_classes: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer of at least 2, got {num_classes!r}")


def check_fraction(key: str, value: float) -> None:
    """A dropout-like value: in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key} must be in [0, 1), got {value}")


def check_at_least(key: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {value}")


# --------------------------------------------------------------------------- per model


def validate_baseline(image_size: int, num_classes: int) -> None:
    """Rules of :func:`kdskin.models.baseline.build_baseline_cnn`."""
    check_image_size(image_size, BASELINE_MIN_IMAGE_SIZE, "the baseline CNN")
    check_num_classes(num_classes)


def validate_teacher(cfg: TeacherConfig, image_size: int, num_classes: int) -> None:
    """Raise :class:`ConfigError` (one line, naming the key) for a teacher that cannot be built."""
    check_image_size(image_size, TEACHER_MIN_IMAGE_SIZE, "the teacher")
    check_num_classes(num_classes)
    if cfg.patch_size < 1 or image_size % cfg.patch_size:
        raise ConfigError(f"teacher.patch_size must be a positive divisor of data.image_size "
                          f"({image_size}), got {cfg.patch_size}")
    for key in ("projection_dim", "num_heads", "vit_depth", "conv_filters", "conv_depth",
                "conv_kernel", "head_units"):
        check_at_least(f"teacher.{key}", getattr(cfg, key))
    if cfg.projection_dim % cfg.num_heads:
        raise ConfigError(f"teacher.num_heads must divide teacher.projection_dim "
                          f"({cfg.projection_dim}), got {cfg.num_heads}")
    if not cfg.mlp_units or any(u < 1 for u in cfg.mlp_units):
        raise ConfigError(f"teacher.mlp_units must be a non-empty list of positive sizes, got "
                          f"{cfg.mlp_units}")
    if cfg.mlp_units[-1] != cfg.projection_dim:
        raise ConfigError(f"teacher.mlp_units must end with teacher.projection_dim "
                          f"({cfg.projection_dim}) so the residual adds up, got {cfg.mlp_units}; "
                          f"e.g. [{2 * cfg.projection_dim}, {cfg.projection_dim}]")
    check_fraction("teacher.dropout", cfg.dropout)
    check_fraction("teacher.head_dropout", cfg.head_dropout)
    check_fraction("teacher.bn_momentum", cfg.bn_momentum)
    if cfg.layer_scale_init <= 0:
        raise ConfigError(f"teacher.layer_scale_init must be positive, got "
                          f"{cfg.layer_scale_init}")
    check_choice("teacher.conv_branch", cfg.conv_branch, CONV_BRANCHES)


def teacher_output_names(cfg: TeacherConfig) -> list[str]:
    """The teacher's outputs, in build order: ``vit_exit_1..N``, ``conv_exit_1..M``, ``logits``."""
    return ([f"vit_exit_{i}" for i in range(1, cfg.vit_depth + 1)]
            + [f"conv_exit_{j}" for j in range(1, cfg.conv_depth + 1)] + ["logits"])


def student_weights(cfg: StudentConfig) -> str | None:
    """``student.weights`` resolved: None, ``"imagenet"`` or an existing file's path.

    Raises :class:`ConfigError` naming ``student.weights`` for ImageNet weights on the Lite
    variant (Keras has none) or a file that does not exist.
    """
    if cfg.weights == "none":
        return None
    if cfg.weights == "imagenet":
        if cfg.efficientnet_variant == "lite":
            raise ConfigError("student.weights: Keras has no ImageNet weights for "
                              "student.efficientnet_variant 'lite'; use 'none' or a weights "
                              "file path")
        return "imagenet"
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"student.weights: {cfg.weights}: EfficientNet weights file not found; "
                          f"set it to 'none', 'imagenet' or an existing file")
    return str(path)


def validate_student(cfg: StudentConfig, image_size: int, num_classes: int,
                     fusion: str | None = None) -> None:
    """Raise :class:`ConfigError` (one line, naming the key) for a student that cannot be built.

    ``fusion`` None checks ``cfg.fusion``. ``student.weights`` is checked too (a file must exist).
    """
    check_image_size(image_size, STUDENT_MIN_IMAGE_SIZE, "the student's EfficientNet branch")
    check_num_classes(num_classes)
    check_choice("student.fusion", cfg.fusion if fusion is None else fusion, FUSIONS)
    check_choice("student.efficientnet", cfg.efficientnet, EFFICIENTNETS)
    check_choice("student.efficientnet_variant", cfg.efficientnet_variant, EFFICIENTNET_VARIANTS)
    if cfg.effnet_stem_stride not in (1, 2) or isinstance(cfg.effnet_stem_stride, bool):
        raise ConfigError(f"student.effnet_stem_stride must be 1 or 2, got "
                          f"{cfg.effnet_stem_stride!r}")
    if cfg.effnet_stem_stride != 2 and cfg.efficientnet_variant != "lite":
        raise ConfigError(f"student.effnet_stem_stride={cfg.effnet_stem_stride} needs "
                          f"student.efficientnet_variant=lite (Keras' EfficientNet has a fixed "
                          f"stem); set it to 2 or use the lite variant")
    if not cfg.cnn_filters or any(f < 1 for f in cfg.cnn_filters):
        raise ConfigError(f"student.cnn_filters must be a non-empty list of positive sizes, "
                          f"got {cfg.cnn_filters}")
    if isinstance(cfg.cnn_convs, bool) or cfg.cnn_convs not in (1, 2, 3):
        raise ConfigError(f"student.cnn_convs must be 1, 2 or 3 convolutions per CNN block, "
                          f"got {cfg.cnn_convs!r}")
    if image_size // 2 ** len(cfg.cnn_filters) < 1:
        raise ConfigError(f"student.cnn_filters: {len(cfg.cnn_filters)} pooled blocks shrink a "
                          f"{image_size}px image (data.image_size) below 1px; use fewer blocks")
    if cfg.l2 < 0:
        raise ConfigError(f"student.l2 must be non-negative, got {cfg.l2}")
    check_at_least("student.head_units", cfg.head_units)
    check_fraction("student.head_dropout", cfg.head_dropout)
    check_fraction("student.bn_momentum", cfg.bn_momentum)
    student_weights(cfg)


#: Filters per stage of the default reference CNN.
REFERENCE_FILTERS: tuple[int, ...] = (32, 64, 128, 256)


def validate_reference(image_size: int, filters: Sequence[int], dropout: float) -> None:
    """One-line :class:`ConfigError` naming the ``reference.*`` key for an unbuildable CNN."""
    if not filters or any(int(f) < 1 for f in filters):
        raise ConfigError(f"reference.filters must be a non-empty list of positive integers, "
                          f"got {list(filters)}")
    if image_size < 2 ** len(filters):
        raise ConfigError(f"data.image_size {image_size} is too small for {len(filters)} "
                          f"pooling stages of the reference CNN (needs at least "
                          f"{2 ** len(filters)}); use fewer reference.filters")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"reference.dropout must be in [0, 1), got {dropout}")
