"""kdskin models: hybrid teacher, fused student, baseline CNN and the model contract.

- :mod:`kdskin.models.contract` -- what a kdskin classifier is: output names, the classifier
  check, the ``.keras`` loader, the trained flag, the deployable ``probs`` model
- :mod:`kdskin.models.teacher`, :mod:`kdskin.models.student`, :mod:`kdskin.models.baseline` --
  the builders; :mod:`kdskin.models.layers` -- custom layers (registered on import)

The names below are loaded on first use, so keras-free submodules (the specs that
:mod:`kdskin.config` validates with) import without Keras. Loading a builder registers the
custom layers; :func:`kdskin.models.contract.load_keras` registers them too.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "build_baseline_cnn": "kdskin.models.baseline",
    "build_student": "kdskin.models.student",
    "build_teacher": "kdskin.models.teacher",
    "build_reference_cnn": "kdskin.models.reference",
    "build_reference_effnet": "kdskin.models.reference",
    **{name: "kdskin.models.contract" for name in (
        "check_classifier", "count_params", "deployable", "is_trained", "load_keras",
        "mark_trained", "named_outputs", "output_names", "to_deployable")},
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kdskin.models' has no attribute {name!r}")
    importlib.import_module("kdskin.models.layers")  # registers the custom layers
    return getattr(importlib.import_module(_EXPORTS[name]), name)
