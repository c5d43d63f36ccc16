"""kdskin models: hybrid teacher, fused student, baseline CNN and the deployable wrapper.

Importing this package registers the custom layers (package ``"kdskin"``) so
``keras.models.load_model`` reads kdskin ``.keras`` files without ``custom_objects``.
"""

from kdskin.models import layers as layers  # noqa: F401  (registers the custom layers)
from kdskin.models.baseline import build_baseline_cnn
from kdskin.models.deploy import count_params, named_outputs, output_names, to_deployable
from kdskin.models.student import build_student
from kdskin.models.teacher import build_teacher

__all__ = [
    "build_baseline_cnn",
    "build_student",
    "build_teacher",
    "count_params",
    "named_outputs",
    "output_names",
    "to_deployable",
]
