"""Knowledge distillation: soft-target losses, the stage table and the multi-stage distiller.

- :mod:`kdskin.distill.stages` -- stage names, their loss terms and fusion (no Keras import)
- :mod:`kdskin.distill.losses` -- ``softened_kl``, ``ExitDistillation``, class-weighted CE
- :mod:`kdskin.distill.distiller` -- ``KdskinDistiller``, ``make_stage_model``,
  ``check_teacher_trained``

The names below are loaded on first use, so ``import kdskin.distill.stages`` (done by
:mod:`kdskin.config`) does not import Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "STAGE_FUSION": "kdskin.distill.stages", "STAGE_TERMS": "kdskin.distill.stages",
    "KdskinDistiller": "kdskin.distill.distiller",
    "check_teacher_trained": "kdskin.distill.distiller",
    "make_stage_model": "kdskin.distill.distiller", "student_fusion": "kdskin.distill.distiller",
    "ClassWeightedCrossEntropy": "kdskin.distill.losses",
    "ExitDistillation": "kdskin.distill.losses", "cross_entropy": "kdskin.distill.losses",
    "logit_distillation": "kdskin.distill.losses", "resolve_exit_map": "kdskin.distill.losses",
    "softened_kl": "kdskin.distill.losses",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kdskin.distill' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
