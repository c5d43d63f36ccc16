"""Typed configuration: defaults in one place, loaded from YAML with ``--set`` overrides.

The dataclass defaults below *are* the quickstart configuration (small, offline, generated data);
``configs/quickstart.yaml`` spells them out and a test keeps the two equal. ``configs/cpu.yaml``
and ``configs/paper.yaml`` override what differs.

Every key is checked: an unknown key or a value of the wrong type raises :class:`ConfigError`
naming the key and the file (or the ``--set`` override) it came from.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdskin.constants import CLASSES, MELANOMA_OFFSET_MODES, NUM_CLASSES
from kdskin.data.specs import (
    BALANCE_MODES,
    FORMATS,
    MIN_IMAGE_SIZE,
    PIPELINES,
    PROTOCOLS,
    UNIT_AUGMENTATIONS,
    check_class_weight_power,
    check_logit_adjust_tau,
    check_shift_augment,
    check_split_fractions,
    check_unit_interval,
)
from kdskin.distill.stages import (
    KD_LOSSES,
    STAGES,
    TEACHER_OFFSETS,
    TEACHER_VIEWS,
    check_kd_params,
    validate_distill,
)
from kdskin.errors import ConfigError
from kdskin.explain.methods import check_methods
from kdskin.export.specs import INT8_HEADS, INT8_OUTPUTS, KINDS, QUANTIZERS, int8_io_problem
from kdskin.models.specs import (
    COLOUR_CONSTANCY,
    CONV_WEIGHTS,
    EFFICIENTNETS,
    SHADES_OF_GREY_P,
    ColourSpec,
    StudentConfig,
    TeacherConfig,
    bounded_field,
    choice_field,
    colour_constancy_spec,
    teacher_output_names,
    validate_baseline,
    validate_reference,
    validate_reference_effnet,
    validate_student,
    validate_teacher,
)

__all__ = ["STAGES", "AugmentConfig", "BaselineConfig", "BenchConfig", "Config", "DataConfig",
           "DistillConfig", "ExplainConfig", "ExportConfig", "ReferenceEffnetConfig",
           "ShiftAugmentConfig", "StudentConfig", "SynthConfig", "TeachConfig",
           "TeacherConfig", "TrainConfig", "load_config"]

# Allowed values of options whose code lives in modules that import TensorFlow (kdskin.train,
# kdskin.export): declared here, the lightest module those import, and read by them.
#: ``train.lr_schedule``: ReduceLROnPlateau (the paper) or per-epoch cosine decay.
LR_SCHEDULES: tuple[str, ...] = ("plateau", "cosine")
#: ``train.monitor``: Keras' own logs or the metrics kdskin adds to the validation logs.
MONITORS: tuple[str, ...] = ("val_balanced_accuracy", "val_macro_auc", "val_accuracy",
                             "val_loss")
#: ``train.distribution``: tf.distribute strategy.
DISTRIBUTIONS: tuple[str, ...] = ("none", "mirrored", "multi_worker")


@dataclass
class SynthConfig:
    """The built-in generated dataset (``kdskin data synth``)."""

    n_images: int = bounded_field(600, 1)
    max_images_per_lesion: int = 4
    image_size: int = 96  # size of the written files; the loader resizes to data.image_size
    seed: int = 0


@dataclass
class DataConfig:
    format: str = choice_field("ham10000", FORMATS)
    dir: str | None = None  # None: generate the built-in dataset into the run directory
    image_size: int = 48  # quickstart; the paper (paper.yaml) and cpu.yaml use 64
    protocol: str = choice_field("lesion_grouped", PROTOCOLS)
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 42
    strict: bool = False
    balance: str = choice_field("class_weight", BALANCE_MODES)
    #: class_weight: weights (n / (k * count_c)) ** power; 1 balanced, 0.5 tempered (sqrt)
    class_weight_power: float = 0.5
    #: logit_adjusted: training logits + tau * log(class prior of the training split)
    logit_adjust_tau: float = 1.0
    paper_per_class: int = 600  # 'paper' protocol: augment every class to this count, then split
    synth: SynthConfig = field(default_factory=SynthConfig)
    #: An external labelled set (e.g. ISIC 2018 Task 3 test) on which every model and every
    #: .tflite of the run is scored whole at the end; never trained or tuned on.
    external: str | None = None
    #: Its layout; None: detected (HAM10000 metadata file or ISIC 2018 ground-truth CSV).
    external_format: str | None = None
    #: Colour constancy as a layer at every model's input (in training, at inference and in
    #: every exported file): none, grey_world (Minkowski p = 1) or shades_of_grey (p =
    #: colour_constancy_p; 6 as the ISIC 2018/2019 winners): each channel of each image is
    #: scaled so its p-norm equals the image's mean norm (kdskin.models.layers.ColourConstancy);
    #: or standardise: each channel of each image to HAM10000's mean and contrast, which also
    #: removes over-exposure (kdskin.models.layers.ColourStandardise); or auto_levels: each
    #: channel's black point and Shades of Grey white point to HAM10000's, which removes
    #: over-exposure too but keeps the lesion's contrast to the skin (...layers.AutoLevels).
    colour_constancy: str = choice_field("none", COLOUR_CONSTANCY)
    colour_constancy_p: float = SHADES_OF_GREY_P
    #: Fill a black border (a dermatoscope's round field, a rectangular frame) with the image's
    #: mean colour, as a layer at every model's input before colour constancy: dark pixels joined
    #: to the image's edge by a row or column of dark pixels (kdskin.models.layers.BorderFill).
    border_fill: bool = False
    #: How the TRAINING split reaches ``fit``: ``memory`` (every image decoded once into an
    #: array) or ``stream`` (decoded and resized from the files in ``tf.data`` batch by batch,
    #: memory flat in the number of images); validation and test stay decoded arrays.
    pipeline: str = choice_field("memory", PIPELINES)
    #: ``stream``: decoded images held by the shuffle buffer (the file list itself is shuffled
    #: whole every epoch; this buffer only mixes images read from ``stream_cache``).
    shuffle_buffer: int = bounded_field(1024, 1)
    #: ``stream``: keep the decoded training images in an on-disk cache (``RUN/cache/stream_*``)
    #: after the first epoch, so later epochs read them instead of decoding the files again.
    stream_cache: bool = False

    def colour_spec(self) -> ColourSpec:
        """What the model builders get (``colour_constancy=``): None for none, a Minkowski norm
        p, or a layer's name, ``"standardise"`` or ``"auto_levels"``
        (:func:`kdskin.models.specs.colour_constancy_spec`)."""
        return colour_constancy_spec(self.colour_constancy, self.colour_constancy_p)


@dataclass
class ShiftAugmentConfig:
    """Acquisition-shift augmentation (:mod:`kdskin.data.shift_augment`): what another clinic's
    dermatoscope changes, drawn per training image after the Keras layers, seeded by
    ``train.seed``. Each transform is applied with ``probability``; a strength of 0 turns it
    off."""

    enabled: bool = False
    probability: float = 0.5
    colour_gain: float = 0.15  # per-channel gains in [1 - g, 1 + g] (white balance)
    #: over-exposure: a blend towards white, x + w (255 - x), w in [0, whiten] (paler skin,
    #: less contrast: what a per-channel gain or the colour-constancy layer cannot undo)
    whiten: float = 0.3
    #: black borders: a centred circle of diameter in [1 - border, 1 + 2 border] of the side,
    #: or (half of the time) a rectangular frame border/4 to border of the side wide
    border: float = 0.12
    zoom_out: float = 0.4  # content shrunk to a scale in [1 - z, 1], the frame reflected
    aspect: float = 0.15  # content width scaled by a factor in [1 / (1 + a), 1 + a]
    blur: float = 1.0  # largest Gaussian blur sigma, pixels at the input size
    jpeg_quality: int = 30  # lowest JPEG quality; drawn in [jpeg_quality, 95]; 100: off


@dataclass
class AugmentConfig:
    """Keras 3 augmentation layers, applied to the training split only."""

    enabled: bool = True
    flip: bool = True
    rotation: float = 0.1  # fraction of a full turn (keras.layers.RandomRotation factor)
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    hue: float = 0.03
    saturation: float = 0.2
    shift: ShiftAugmentConfig = field(default_factory=ShiftAugmentConfig)
    #: 0: the Keras layers above, drawn afresh for every batch. K > 0: the same augmentation
    #: as K views per training image, drawn once (seeded by view_seed) and replayed over the
    #: epochs by every model of the run (kdskin.data.views, kdskin.data.replay); a teacher
    #: directory stores its targets for these views (stored targets, no teacher in the loop)
    views: int = bounded_field(0, 0, note="0: no stored views")
    view_seed: int = 0


@dataclass
class BaselineConfig:
    """The paper's plain baseline CNN (Conv16-pool-Conv32-pool-Dense128), trained with CE."""

    enabled: bool = True
    epochs: int = bounded_field(8, 1)
    learning_rate: float = 1e-3


@dataclass
class ReferenceConfig:
    """The strong plain reference: a VGG-style CNN (:mod:`kdskin.models.reference`), trained
    through the same pipeline (augmentation, class balance, schedule) as the students."""

    enabled: bool = True
    filters: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    dropout: float = 0.3
    #: None: student.epochs (the same budget as the final student)
    epochs: int | None = bounded_field(None, 0, low_open=True, nullable=True)
    #: None: student.learning_rate
    learning_rate: float | None = bounded_field(None, 0, low_open=True, nullable=True)


@dataclass
class ReferenceEffnetConfig:
    """The pretrained reference: EfficientNet-Lite from ImageNet fine-tuned alone
    (:func:`kdskin.models.reference.build_reference_effnet`), at the student's input, with the
    student's data pipeline and budget. Off by default (its ImageNet weights need the
    ``pretrained`` extra); configs/cpu_ablation.yaml turns it on."""

    enabled: bool = False
    variant: str = choice_field("B0", EFFICIENTNETS)
    weights: str = choice_field("imagenet", CONV_WEIGHTS)
    dropout: float = 0.2
    #: None: student.epochs
    epochs: int | None = bounded_field(None, 0, low_open=True, nullable=True)
    #: None: student.learning_rate
    learning_rate: float | None = bounded_field(None, 0, low_open=True, nullable=True)


@dataclass
class TrustConfig:
    """Calibration, uncertainty, the referral operating point and the out-of-scope check of the
    final student (:mod:`kdskin.trust`), all fitted on the validation split."""

    enabled: bool = True
    calibrate: bool = True  # temperature scaling (NLL on validation), folded into exports
    malignant_classes: list[str] = field(default_factory=lambda: ["mel", "bcc", "akiec"])
    #: of the referral rule on the validation split
    target_sensitivity: float = bounded_field(0.90, 0, 1, low_open=True, high_open=True)
    #: in-distribution validation images that pass the check
    ood_pass_rate: float = bounded_field(0.95, 0, 1, low_open=True, high_open=True)
    #: generated out-of-scope images the check is measured on
    ood_images: int = bounded_field(140, 9, note="one image of each generated kind")
    #: the top-1 class's melanoma log-odds offset, fitted on validation and folded into exports
    #: (kdskin.trust.operating_point): ``none`` (plain argmax) or ``balanced`` (the offset that
    #: maximises validation balanced accuracy)
    melanoma_offset: str = choice_field("none", MELANOMA_OFFSET_MODES)
    #: raise the offset until validation melanoma recall reaches this (None: no floor)
    min_melanoma_recall: float | None = bounded_field(None, 0, 1, low_open=True, nullable=True)
    bootstrap_resamples: int = bounded_field(1000, 10)
    bootstrap_seed: int = 0


#: What augments the clinic's images while a student is fine-tuned on them: flips only, or the
#: run's own augmentation (its Keras layers and acquisition shifts, without stored views).
ADAPT_AUGMENTS: tuple[str, ...] = ("flips", "run")


@dataclass
class AdaptConfig:
    """``kdskin adapt --fine-tune``: the run's final student fine-tuned on a clinic's labelled
    images (:mod:`kdskin.pipeline.finetune`). The clinic's lesions (its images, when it has no
    lesion ids) are split once: the student is fine-tuned and its operating point refitted on
    one part, and every figure is measured on the held-out rest."""

    #: share of the clinic's lesions held out for the figures (the model never sees them)
    holdout: float = bounded_field(0.4, 0, 1, low_open=True, high_open=True)
    #: fewer labelled images than this are refused: the held-out part of 50 (20 images) gives
    #: figures whose 95% intervals are already about +-0.2 wide
    min_images: int = bounded_field(50, 14, note="at least two images of each class")
    epochs: int = bounded_field(4, 1)
    learning_rate: float = bounded_field(1e-4, 0, low_open=True)
    batch_size: int = bounded_field(32, 1)
    #: rehearsal: HAM10000 training images mixed into each epoch per clinic image (drawn afresh
    #: each epoch), so the student keeps what it knew; 0: the clinic's images alone
    rehearsal: float = bounded_field(3.0, 0)
    augment: str = choice_field("flips", ADAPT_AUGMENTS)
    #: K > 1: the operating point is fitted on out-of-fold probabilities of the fit part (K
    #: lesion-grouped folds, each predicted by a student fine-tuned on the other K - 1, then the
    #: shipped student fine-tuned on all of it: K + 1 fine-tunes), not on the probabilities of
    #: the images the shipped student was trained on, which are too confident; 1: in-sample
    folds: int = bounded_field(2, 1)
    #: the largest drop of the HAM10000 test split's balanced accuracy the adapted model may show
    #: before the command warns on its last line (forgetting)
    max_ham_drop: float = bounded_field(0.02, 0, 1)
    seed: int = 0


@dataclass
class TrainConfig:
    batch_size: int = bounded_field(32, 1)
    #: Learning-rate schedule: ``plateau`` (ReduceLROnPlateau, as the paper) or ``cosine``
    #: (per-epoch cosine decay from the stage's learning rate to ~0 over its epochs; better
    #: final weights when the epoch budget is short and fixed).
    lr_schedule: str = choice_field("cosine", LR_SCHEDULES)
    #: What early stopping (and the best epoch it keeps) and the LR plateau watch. Keras' own
    #: ``val_accuracy``/``val_loss``, or balanced accuracy / macro AUC computed on the
    #: validation split each epoch (the ISIC metric: accuracy rewards ignoring rare classes).
    monitor: str = choice_field("val_macro_auc", MONITORS)
    #: epochs without a better ``monitor`` before a stage stops (its best epoch restored);
    #: 0: never stop early (the stage runs its schedule to the end and keeps the last epoch)
    early_stopping_patience: int = bounded_field(10, 0, note="0: no early stopping")
    reduce_lr_patience: int = 4
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-6
    #: ``none``, ``mirrored`` (the local GPUs or CPU devices) or ``multi_worker`` (one process
    #: per machine, each with its own ``TF_CONFIG``; ``train.batch_size`` is per replica).
    distribution: str = choice_field("none", DISTRIBUTIONS)
    #: ``multi_worker``: seconds every worker waits for all the others to come up before it
    #: fails with a clear error (checked before TensorFlow starts its server).
    worker_timeout: int = bounded_field(300, 1)
    seed: int = 42
    verbose: int = 2  # Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch


@dataclass
class DistillConfig:
    """Multi-stage knowledge distillation. Loss = alpha*exits + beta*logit KD + gamma*CE."""

    stages: list[str] = field(
        default_factory=lambda: ["baseline", "single", "multi", "multi_fusion"])
    alpha: float = 0.3  # intermediate-exit distillation
    beta: float = 0.3  # logit distillation
    gamma: float = 0.4  # cross-entropy on labels
    temperature: float = 10.0
    #: student exit -> teacher exit ("last" resolves to the branch's deepest exit)
    exit_map: dict[str, str] = field(
        default_factory=lambda: {"cnn_exit": "conv_exit_last", "effnet_exit": "vit_exit_last"})
    #: the image the teacher's targets are computed on: the student's ("augmented") or the same
    #: image before augment.shift ("unshifted"; kdskin.distill.stages.TEACHER_VIEWS; a teacher
    #: the run trains then trains without augment.shift)
    teacher_view: str = choice_field("augmented", TEACHER_VIEWS)
    #: the teacher's targets: its logits ("none") or its logits with a prior offset fitted on
    #: validation ("balanced"; kdskin.distill.stages.TEACHER_OFFSETS)
    teacher_offset: str = choice_field("none", TEACHER_OFFSETS)
    #: the soft-target loss of the KD terms: kl, dist or dkd (kdskin.distill.stages.KD_LOSSES)
    kd_loss: str = choice_field("kl", KD_LOSSES)
    #: that loss's own weights: dist {beta, gamma} (default 1, 1), dkd {alpha, beta} (1, 8)
    kd_params: dict[str, float] = field(default_factory=dict)


#: ``teach.tta``: the stored targets of a view as they are, or averaged (probabilities) with
#: those of its mirror image.
TTA_MODES: tuple[str, ...] = ("none", "flip")


@dataclass
class TeachConfig:
    """The teacher directory (``kdskin teach``; ``kdskin run`` makes one inline in ``RUN/teacher``
    when ``augment.views`` > 0 and no ``--teacher`` is given): members, folds, targets."""

    #: the ensemble: each entry the ``teacher`` keys that differ for one member (and an
    #: optional ``name``); empty: one member, the ``teacher`` section itself. The ensemble's
    #: prediction is the mean of its members' probabilities.
    members: list[dict[str, Any]] = field(default_factory=list)
    #: 1: each member trained on the whole training split. F > 1: F models per member, each on
    #: F - 1 of F lesion-grouped folds; a training image's stored targets come from the model
    #: that did not train on it (out of fold), validation and test from all F
    folds: int = bounded_field(1, 1)
    tta: str = choice_field("none", TTA_MODES)
    #: ``{member name: .keras}``: members already trained by a kdskin run on the same split,
    #: used as they are (with teach.folds 1); the other members are trained here
    adopt: dict[str, str] = field(default_factory=dict)


@dataclass
class ExportConfig:
    enabled: bool = True
    representative_samples: int = bounded_field(64, 1)
    per_channel: bool = True
    max_int8_drop: float = 0.01  # accuracy / macro-F1 points (fraction) int8 may lose
    #: true: an int8 file that loses more than max_int8_drop is an error; the file is moved to
    #: tflite/rejected/ and the run stops (false: it ships, and every report says NO)
    require_int8_within_tolerance: bool = False
    int8_output: str = choice_field("float32", INT8_OUTPUTS)  # int8 model's output tensor type
    # "float": the 7-value head after the last dense layers (exit average, fusion add, softmax)
    # runs in float32 in the int8 file; "int8": every op integer (needed for uint8 output)
    int8_head: str = choice_field("float", INT8_HEADS)
    centre_input: bool = True  # exact rewrite: first conv sees x - 128 (smaller int8 error)
    #: how model_int8.tflite is made: the TFLite converter (default, more accurate) or Google's
    #: AI Edge Quantizer on the float file (public API, input range anchored to 0..255)
    quantizer: str = choice_field("converter", QUANTIZERS)
    compare_quantizers: bool = True  # also make the other int8 file, compare in export.json
    metadata: bool = True  # TFLite metadata (labels, normalization, licence, decision rules)
    #: app files (tflite/app/): input app_input_factor x larger, Pillow's anti-aliased
    #: downscale inside, for apps that resize themselves (MediaPipe, Android); 0: none
    app_input_factor: int = bounded_field(4, 0, 16, note="0: no app files")
    app_kinds: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    #: a folder of real images (HAM10000/ISIC 2018 layout gives accuracy too) on which the
    #: resize-agreement table of export.json is measured; None: not measured
    resize_check_images: str | None = None
    #: at most this many of its images (None: all)
    resize_check_limit: int | None = bounded_field(None, 1, nullable=True)


@dataclass
class BenchConfig:
    enabled: bool = True
    warmup: int = 2
    steps: int = 10  # a first look; cpu.yaml times 30 steps, enough for a stable median and p5/p95
    batch_size: int = 32
    #: cross-check each .tflite's batch-1 latency (1 thread) with LiteRT's benchmark tool
    #: (benchmark_model on PATH, else ai_edge_litert.tools.benchmark_litert_model)
    litert_tool: bool = True
    #: time isolated training steps (train_on_batch; each model's train function traced again,
    #: about 25 s a model on 2 cores) of the teacher, the student alone and the final KD step.
    #: false (a first look): the training column gives the step times the run recorded during
    #: fit (metrics.json train_step, input pipeline included), marked "recorded during fit"
    training_steps: bool = False


@dataclass
class ExplainConfig:
    enabled: bool = True
    methods: list[str] = field(default_factory=lambda: ["gradcam", "scorecam", "lime"])
    n_images: int = 7  # images explained at the end of a run (one per class where possible)
    lime_samples: int = 300
    lime_segments: int = 50
    scorecam_max_n: int = 16
    seed: int = 0
    tensorboard: bool = True  # Score-CAM overlays as TensorBoard image summaries during training
    tensorboard_every: int = 2  # epochs
    tensorboard_images: int = 7
    cam_layers: list[str] = field(default_factory=list)  # empty: the model's default layers
    overlay_alpha: float = 0.4
    colormap: str = "jet"  # a matplotlib colormap name
    faithfulness: bool = True  # deletion / insertion curves of every method vs random
    faithfulness_steps: int = 20
    #: ``kdskin explain --evaluate`` without images: test images used (stratified by class)
    evaluate_images: int = 49
    #: at most this many images in the grid and comparison figures (all get their own overlay)
    grid_images: int = 14


@dataclass
class Config:
    name: str = "quickstart"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    reference_effnet: ReferenceEffnetConfig = field(default_factory=ReferenceEffnetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teach: TeachConfig = field(default_factory=TeachConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def teacher_image_size(self) -> int:
        """The teacher's input size: ``teacher.image_size``, or ``data.image_size`` if unset."""
        return int(self.teacher.image_size or self.data.image_size)

    def teacher_members(self) -> list[tuple[str, TeacherConfig]]:
        """``[(name, teacher section of the member)]`` of ``teach.members`` (one member, the
        ``teacher`` section, when empty); each member's keys checked as the section's."""
        if not self.teach.members:
            return [("teacher", self.teacher)]
        out = []
        base = dataclasses.asdict(self.teacher)
        for i, entry in enumerate(self.teach.members, start=1):
            if not isinstance(entry, dict):
                raise ConfigError(f"teach.members[{i - 1}] must be a mapping of teacher keys, "
                                  f"got {entry!r}")
            values = dict(entry)
            name = str(values.pop("name", f"member{i}"))
            if not name.isidentifier():
                raise ConfigError(f"teach.members[{i - 1}].name must be a plain name (letters, "
                                  f"digits, _), got {name!r}")
            out.append((name, _build(TeacherConfig, {**base, **values},
                                     f"teach.members[{i - 1}]", "config")))
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"teach.members: names must differ, got {names}")
        return out

    def member_image_size(self, member: TeacherConfig) -> int:
        """A member's input size (its ``image_size``, else ``data.image_size``)."""
        return int(member.image_size or self.data.image_size)

    def imagenet_starts(self) -> dict[str, str]:
        """``{config section: EfficientNet-Lite variant}`` of every model this config starts
        from kdskin's offline ImageNet weights (:mod:`kdskin.models.imagenet`)."""
        out: dict[str, str] = {}
        s, t, r = self.student, self.teacher, self.reference_effnet
        if s.weights == "imagenet" and s.efficientnet_variant == "lite" and self.distill.stages:
            out["student"] = s.efficientnet
        if (self.teacher.enabled and t.conv_branch == "efficientnet_lite"
                and t.conv_weights == "imagenet"):
            out["teacher"] = t.conv_variant
        if r.enabled and r.weights == "imagenet":
            out["reference_effnet"] = r.variant
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from kdskin.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' must be a list of {_type_name(item_tp)}, "
                              f"got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return {_coerce(k, k_tp, f"{key}.{k}", source): _coerce(v, v_tp, f"{key}.{k}", source)
                for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{source}: '{key}' must be {_type_name(tp)}, "
                          f"got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{full}' (known keys here: "
                              f"{', '.join(sorted(fields))})")
        kwargs[key] = _coerce(value, hints[key], full, source)
        choices = fields[key].metadata.get("choices")
        if choices and kwargs[key] not in choices:
            raise ConfigError(f"{source}: '{full}' must be one of {', '.join(choices)}, "
                              f"got {kwargs[key]!r}")
        bounds = fields[key].metadata.get("bounds")
        if bounds is not None and not bounds.allows(kwargs[key]):
            raise ConfigError(f"{source}: '{full}' must be {bounds.describe()}, "
                              f"got {kwargs[key]!r}")
    return cls(**kwargs)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in (
                "exit_map", "kd_params"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key.path=value, e.g. --set train.batch_size=16")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text}: the key is empty; expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text}: value is not valid YAML ({exc.__class__.__name__})"
                          ) from None
    return key.split("."), value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def _check_rules(cfg: Config) -> None:
    """Every rule across sections, raising :class:`ConfigError` ``"key why"``; the model and
    distillation rules are the builders' own (:mod:`kdskin.models.specs`,
    :mod:`kdskin.distill.stages`), so a config that loads builds."""
    size = cfg.data.image_size
    check_split_fractions(cfg.data.split)
    if size < MIN_IMAGE_SIZE:
        raise ConfigError(f"data.image_size must be at least {MIN_IMAGE_SIZE}, got {size}")
    check_class_weight_power(cfg.data.class_weight_power)
    check_logit_adjust_tau(cfg.data.logit_adjust_tau)
    cfg.data.colour_spec()
    front = {key: off for key, off, on in (
        ("data.colour_constancy", "none", cfg.data.colour_constancy != "none"),
        ("data.border_fill", "false", cfg.data.border_fill)) if on}
    if front and cfg.export.enabled and cfg.export.int8_head == "int8":
        raise ConfigError(f"{' and '.join(front)} run(s) in float32 at the int8 file's input, "
                          f"which export.int8_head=int8 (every op integer) cannot hold; set "
                          f"export.int8_head=float or "
                          f"{' and '.join(f'{k}={v}' for k, v in front.items())}")
    for key in UNIT_AUGMENTATIONS:
        check_unit_interval(f"augment.{key}", getattr(cfg.augment, key))
    check_shift_augment(cfg.augment.shift)

    if not cfg.teacher.enabled and any(s != "baseline" for s in cfg.distill.stages):
        raise ConfigError(f"teacher.enabled is false but distill.stages {cfg.distill.stages} "
                          f"need a teacher; enable it or keep only the 'baseline' stage")
    validate_baseline(size, NUM_CLASSES)
    teacher_size = cfg.teacher_image_size()
    if teacher_size < size:
        raise ConfigError(f"teacher.image_size ({teacher_size}) must be at least data.image_size "
                          f"({size}): the student's images are the teacher's, resized down")
    if teacher_size != size and cfg.data.pipeline == "stream":
        raise ConfigError(f"teacher.image_size ({teacher_size}) differs from data.image_size "
                          f"({size}), which data.pipeline=stream does not support; use "
                          f"data.pipeline=memory or teacher.image_size=null")
    validate_teacher(cfg.teacher, teacher_size, NUM_CLASSES)
    for _, member in cfg.teacher_members():
        member_size = cfg.member_image_size(member)
        if member_size < size:
            raise ConfigError(f"teach.members: a member's image_size ({member_size}) must be at "
                              f"least data.image_size ({size})")
        validate_teacher(member, member_size, NUM_CLASSES)
    unknown = sorted(set(cfg.teach.adopt) - {n for n, _ in cfg.teacher_members()})
    if unknown:
        raise ConfigError(f"teach.adopt names {unknown}, which are not members (teach.members "
                          f"names, or 'teacher' without members)")
    if cfg.distill.stages:
        validate_student(cfg.student, size, NUM_CLASSES)
    d = cfg.distill
    validate_distill(d.stages, d.alpha, d.beta, d.gamma, d.temperature, d.exit_map,
                     cfg.student.fusion, teacher_output_names(cfg.teacher))
    check_kd_params(d.kd_loss, d.kd_params)

    problem = int8_io_problem(cfg.export.int8_head, cfg.export.int8_output, "export.")
    if problem:
        raise ConfigError(problem)
    e = cfg.export
    if not e.app_kinds or any(k not in KINDS for k in e.app_kinds):
        raise ConfigError(f"export.app_kinds must be a non-empty list of {', '.join(KINDS)}, "
                          f"got {e.app_kinds}")
    check_methods(cfg.explain.methods)
    if cfg.data.external_format is not None and cfg.data.external_format not in FORMATS:
        raise ConfigError(f"data.external_format must be one of {', '.join(FORMATS)} (or "
                          f"null to detect it), got {cfg.data.external_format!r}")
    if cfg.reference.enabled:
        validate_reference(size, cfg.reference.filters, cfg.reference.dropout)
    if cfg.reference_effnet.enabled:
        r = cfg.reference_effnet
        validate_reference_effnet(size, r.variant, r.weights, r.dropout)
    unknown = [c for c in cfg.trust.malignant_classes if c not in CLASSES]
    if unknown or not cfg.trust.malignant_classes:
        raise ConfigError(f"trust.malignant_classes must be a non-empty list of "
                          f"{', '.join(CLASSES)}, got {cfg.trust.malignant_classes}")


def _validate(cfg: Config, source: str) -> Config:
    """:func:`_check_rules`, with ``source`` (the file or ``--set``) in front of the message."""
    try:
        _check_rules(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


#: The key by which a config file names the file it builds on (relative to its own folder).
EXTENDS = "extends"


def _file_values(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The settings of the YAML file ``path`` over those of the file it ``extends`` (if any,
    recursively; sections merge key by key, lists and scalars replace). ``chain``: the files
    that extend this one, to refuse a loop."""
    if not path.is_file():
        hint = (f"fix '{EXTENDS}:' in {chain[-1]} (a path relative to its folder)" if chain
                else "pass an existing YAML file, e.g. configs/quickstart.yaml")
        raise ConfigError(f"{path}: config file not found; {hint}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    parent = loaded.pop(EXTENDS, None)
    if parent is None:
        return loaded
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: '{EXTENDS}:' must be the path of one YAML file, e.g. "
                          f"'{EXTENDS}: cpu.yaml'")
    base = (path.parent / parent).resolve()
    if base in chain or base == path.resolve():
        raise ConfigError(f"{path}: '{EXTENDS}: {parent}' makes a loop of configs; remove it "
                          f"from one of them")
    inherited = _file_values(base, (*chain, path.resolve()))
    inherited.pop("name", None)  # a config's name is its own (or its file's stem)
    return _merge(inherited, loaded)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
                ) -> Config:
    """Load ``path`` (YAML) over the defaults, then apply ``key.path=value`` overrides."""
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        values = _file_values(path, ())
        if "name" not in values:
            values = {**values, "name": path.stem}
    cfg = _build(Config, values, "", source)
    for text in overrides:
        keys, value = _parse_override(text)
        merged = _merge(dataclasses.asdict(cfg), _nest(keys, value))
        cfg = _build(Config, merged, "", f"--set {text}")
    if overrides:
        source += " with " + ", ".join(f"--set {text}" for text in overrides)
    return _validate(cfg, source)
