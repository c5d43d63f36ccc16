"""What the data layer accepts, declared once and checked without pandas, Keras or TensorFlow.

:mod:`kdskin.data.datasets` (``FORMATS``), :mod:`kdskin.data.split` (``PROTOCOLS``, split
fractions), :mod:`kdskin.data.pipeline` (``BALANCE_MODES``, augmentation strengths, class-weight
power) and :func:`kdskin.config.load_config` all use these, so a rule lives in one place. Bad
values are :class:`~kdskin.errors.ConfigError` naming the configuration key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdskin.errors import ConfigError

#: Dataset layouts (``data.format``, ``--format``).
FORMATS: tuple[str, ...] = ("ham10000", "isic2018")
#: Split protocols (``data.protocol``, ``--protocol``): the honest default and the LEAKY paper's.
PROTOCOLS: tuple[str, ...] = ("lesion_grouped", "paper")
#: Class balance on the training split (``data.balance``).
#: ``logit_adjusted``: the logit-adjusted (Menon et al. 2021) cross-entropy, ``tau`` 1 = balanced
#: softmax (Ren et al. 2020): training logits shifted by ``tau * log(prior)``.
BALANCE_MODES: tuple[str, ...] = ("none", "class_weight", "oversample", "logit_adjusted")
#: ``data.pipeline``: decoded arrays in memory, or files decoded batch by batch in ``tf.data``.
PIPELINES: tuple[str, ...] = ("memory", "stream")
#: Augmentation strengths that must lie in [0, 1) (``augment.*``).
UNIT_AUGMENTATIONS: tuple[str, ...] = ("brightness", "contrast", "hue", "saturation")
#: Smallest image size a dataset is generated or decoded at.
MIN_IMAGE_SIZE = 16
MAX_CLASS_WEIGHT_POWER = 2.0
MAX_LOGIT_ADJUST_TAU = 4.0


def check_split_fractions(fractions: Sequence[float], key: str = "data.split") -> list[float]:
    """Three non-negative fractions summing to 1 (train, val, test); returns them as floats."""
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or any(not f >= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"{key} must be three non-negative fractions summing to 1, got "
                          f"{list(fractions)}")
    return values


def check_unit_interval(key: str, value: float) -> float:
    """A strength in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key} must be in [0, 1), got {value}")
    return value


def check_class_weight_power(power: float) -> float:
    """``data.class_weight_power`` in [0, 2] (1 balanced, 0.5 tempered, 0 unweighted)."""
    if not 0.0 <= power <= MAX_CLASS_WEIGHT_POWER:
        raise ConfigError(f"data.class_weight_power must be in [0, {MAX_CLASS_WEIGHT_POWER:g}], "
                          f"got {power}")
    return power


def check_logit_adjust_tau(tau: float) -> float:
    """``data.logit_adjust_tau`` in [0, 4] (1: balanced softmax, 0: plain cross-entropy)."""
    if not 0.0 <= tau <= MAX_LOGIT_ADJUST_TAU:
        raise ConfigError(f"data.logit_adjust_tau must be in [0, {MAX_LOGIT_ADJUST_TAU:g}], "
                          f"got {tau}")
    return tau


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_shift_augment(cfg: Any) -> Any:
    """``augment.shift`` (:class:`kdskin.config.ShiftAugmentConfig`): probability in [0, 1],
    colour_gain, whiten, border, zoom_out and aspect in [0, 0.5], blur in [0, 3] pixels,
    jpeg_quality in [1, 100] (100: no JPEG)."""
    if not 0.0 <= cfg.probability <= 1.0:
        raise ConfigError(f"augment.shift.probability must be in [0, 1], got {cfg.probability}")
    for key in ("colour_gain", "whiten", "border", "zoom_out", "aspect"):
        value = getattr(cfg, key)
        if not 0.0 <= value <= 0.5:
            raise ConfigError(f"augment.shift.{key} must be in [0, 0.5] (0: off), got {value}")
    if not 0.0 <= cfg.blur <= 3.0:
        raise ConfigError(f"augment.shift.blur must be in [0, 3] pixels (0: off), got {cfg.blur}")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise ConfigError(f"augment.shift.jpeg_quality must be in [1, 100] (100: off), got "
                          f"{cfg.jpeg_quality}")
    return cfg
