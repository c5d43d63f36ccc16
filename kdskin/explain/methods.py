"""The explanation methods kdskin knows, declared once and checked without Keras.

:mod:`kdskin.explain.render` (``explain_images``), the ``kdskin explain`` command and
:func:`kdskin.config.load_config` (``explain.methods``) all use :func:`check_methods`.
"""

from __future__ import annotations

from collections.abc import Iterable

from kdskin.errors import ConfigError, ModelError

#: Every method, in the order figures show them.
METHODS: tuple[str, ...] = ("gradcam", "scorecam", "lime")
#: Methods that need the model's layers and gradients (a ``.keras`` model, not a ``.tflite``).
CAM_METHODS: tuple[str, ...] = ("gradcam", "scorecam")
#: Methods that work on any ``images -> probabilities`` function (a ``.tflite`` included).
MODEL_AGNOSTIC_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m not in CAM_METHODS)
#: Display names.
TITLES: dict[str, str] = {"gradcam": "Grad-CAM", "scorecam": "Score-CAM", "lime": "LIME"}


def check_methods(methods: Iterable[str], key: str = "explain.methods") -> list[str]:
    """The methods without repeats, in order; :class:`ConfigError` naming ``key`` for an empty
    list or an unknown name."""
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ConfigError(f"{key}: no methods given; choose from {', '.join(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"{key} has unknown method(s) {', '.join(map(repr, unknown))}; methods "
                          f"are {', '.join(METHODS)}")
    return methods


def check_methods_for(methods: Iterable[str], model_format: str, label: str,
                      key: str = "explain.methods") -> list[str]:
    """:func:`check_methods`, and :class:`ModelError` for CAM methods on a ``.tflite`` model."""
    methods = check_methods(methods, key)
    cams = [m for m in methods if m in CAM_METHODS]
    if model_format == "tflite" and cams:
        raise ModelError(f"{label}: {' and '.join(TITLES[m] for m in cams)} need the model's "
                         f"layers and gradients, which a .tflite file does not expose; explain "
                         f"the .keras model instead, or use methods=['lime'] on the .tflite")
    return methods


def methods_for_format(model_format: str) -> list[str]:
    """``all`` resolved for a model format: every method for Keras, LIME only for a .tflite."""
    return list(MODEL_AGNOSTIC_METHODS if model_format == "tflite" else METHODS)
