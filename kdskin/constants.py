"""The one place for the class list, the input contract and file-name conventions.

Input contract of every deployed model (``.keras`` or ``.tflite``): an RGB image resized to the
model's input size (square, ``image_size`` x ``image_size``) with pixel values 0..255 (uint8 for
the int8 model, float32 otherwise). Preprocessing is inside the model. Training models output
logits; deployed models end in a softmax and return ``NUM_CLASSES`` probabilities in ``CLASSES``
order.
"""

from __future__ import annotations

#: HAM10000 diagnosis codes, in the order used by every model output, CSV and report.
CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
NUM_CLASSES: int = len(CLASSES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: Long names for reports.
CLASS_DESCRIPTIONS: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}

#: HAM10000 class frequencies (10,015 images), used by the generator to mimic the imbalance.
HAM10000_COUNTS: dict[str, int] = {
    "akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142,
}

#: ISIC 2018 Task 3 ground-truth column names, mapped to kdskin class names.
ISIC2018_COLUMNS: dict[str, str] = {
    "MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df",
    "VASC": "vasc",
}

HAM10000_METADATA_NAMES: tuple[str, ...] = (
    "HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata.tsv",
    "HAM10000_metadata",
)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Split names and the split CSV's columns.
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_COLUMNS: tuple[str, ...] = ("image_id", "lesion_id", "dx", "split")

#: Name of the input layer and of the probability output of deployed models.
INPUT_NAME = "image"
PROBS_NAME = "probs"
#: Key of the teacher's own view in a distillation training batch ``({INPUT_NAME: student's
#: image, TEACHER_INPUT_NAME: teacher's image}, labels)`` (``distill.teacher_view: unshifted``).
TEACHER_INPUT_NAME = "teacher_image"
#: Prefix of the teacher's stored targets in a distillation training batch: ``{INPUT_NAME:
#: image, "target_logits": (B, 7), "target_conv_exit_1": ...}`` (:mod:`kdskin.data.replay`).
TARGET_PREFIX = "target_"
LABELS_FILE = "labels.txt"


def target_key(output: str) -> str:
    """The batch key of the stored target for the teacher output ``output``."""
    return f"{TARGET_PREFIX}{output}"

#: The melanoma class, reported on its own (sensitivity) in every evaluation.
MELANOMA = "mel"
#: How the melanoma log-odds offset of the top-1 class is fitted on validation
#: (``trust.melanoma_offset``; :mod:`kdskin.trust.operating_point`): ``none`` (plain argmax) or
#: ``balanced`` (the offset that maximises validation balanced accuracy).
MELANOMA_OFFSET_MODES: tuple[str, ...] = ("none", "balanced")
