"""Explanations: Grad-CAM, Score-CAM and LIME maps, their faithfulness, figures, TensorBoard.

- :class:`GradCAM`, :class:`ScoreCAM` (Keras models), :class:`LimeExplainer` (any
  ``images -> probs`` function, e.g. a ``.tflite``): ``explainer(images, class_index=None)``
  -> maps ``(N, S, S)`` float32 in [0, 1].
- :func:`explain_images`: one call that writes overlays, grids, ``maps.npz``, faithfulness and
  ``explanations.json`` for a model or model file.
- :func:`evaluate_faithfulness`: deletion / insertion curves against a random baseline.
- :class:`ScoreCamCallback`: Score-CAM overlays as TensorBoard image summaries while training.
"""

from kdskin.explain.callback import ScoreCamCallback, pick_images_per_class
from kdskin.explain.cams import GradCAM, ScoreCAM, default_layer, predict_probs_fn
from kdskin.explain.faithfulness import (
    evaluate_faithfulness,
    faithfulness_table,
    plot_faithfulness,
)
from kdskin.explain.lime_explainer import LimeExplainer
from kdskin.explain.render import explain_images, overlay

__all__ = [
    "GradCAM",
    "LimeExplainer",
    "ScoreCAM",
    "ScoreCamCallback",
    "default_layer",
    "evaluate_faithfulness",
    "explain_images",
    "faithfulness_table",
    "overlay",
    "pick_images_per_class",
    "plot_faithfulness",
    "predict_probs_fn",
]
