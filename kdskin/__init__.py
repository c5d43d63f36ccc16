"""kdskin: multi-stage knowledge distillation with layer fusion for skin-lesion classification."""

from kdskin.constants import CLASSES, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASSES", "NUM_CLASSES", "__version__"]
