"""Explanations: Grad-CAM, Score-CAM and LIME maps, their faithfulness, figures, TensorBoard.

- :class:`GradCAM`, :class:`ScoreCAM` (Keras models), :class:`LimeExplainer` (any
  ``images -> probs`` function, e.g. a ``.tflite``): ``explainer(images, class_index=None)``
  -> maps ``(N, S, S)`` float32 in [0, 1].
- :func:`explain_images`: one call that writes overlays, grids, ``maps.npz``, faithfulness and
  ``explanations.json`` for a model or model file.
- :func:`evaluate_faithfulness`: deletion / insertion curves against a random baseline.
- :class:`ScoreCamCallback`: Score-CAM overlays as TensorBoard image summaries while training.
- :data:`METHODS` and :func:`check_methods` (:mod:`kdskin.explain.methods`, no TensorFlow).

The names are loaded on first use (PEP 562), so ``import kdskin.explain.methods`` (what
:mod:`kdskin.config` does) does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "GradCAM": "kdskin.explain.cams",
    "ScoreCAM": "kdskin.explain.cams",
    "default_layer": "kdskin.explain.cams",
    "predict_probs_fn": "kdskin.explain.cams",
    "ScoreCamCallback": "kdskin.explain.callback",
    "pick_images_per_class": "kdskin.data.select",
    "evaluate_faithfulness": "kdskin.explain.faithfulness",
    "faithfulness_table": "kdskin.explain.faithfulness",
    "plot_faithfulness": "kdskin.explain.faithfulness",
    "LimeExplainer": "kdskin.explain.lime_explainer",
    "explain_images": "kdskin.explain.render",
    "overlay": "kdskin.explain.render",
    "METHODS": "kdskin.explain.methods",
    "check_methods": "kdskin.explain.methods",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kdskin.explain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
