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

from kdskin.errors import ConfigError


def _choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


@dataclass
class SynthConfig:
    """The built-in generated dataset (``kdskin data synth``)."""

    n_images: int = 900
    max_images_per_lesion: int = 4
    image_size: int = 96  # size of the written files; the loader resizes to data.image_size
    seed: int = 0


@dataclass
class DataConfig:
    format: str = _choice("ham10000", "ham10000", "isic2018")
    dir: str | None = None  # None: generate the built-in dataset into the run directory
    image_size: int = 48  # quickstart; the paper (paper.yaml) and cpu.yaml use 64
    protocol: str = _choice("lesion_grouped", "lesion_grouped", "paper")
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 42
    strict: bool = False
    balance: str = _choice("class_weight", "none", "class_weight", "oversample")
    #: class_weight: weights (n / (k * count_c)) ** power; 1 balanced, 0.5 tempered (sqrt)
    class_weight_power: float = 0.5
    paper_per_class: int = 600  # 'paper' protocol: augment every class to this count, then split
    synth: SynthConfig = field(default_factory=SynthConfig)


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


@dataclass
class TeacherConfig:
    """Hybrid ViT + ConvNeXt/ConvMixer teacher. paper.yaml holds the paper's sizes."""

    patch_size: int = 4
    projection_dim: int = 64
    num_heads: int = 4
    vit_depth: int = 2
    mlp_units: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    conv_branch: str = _choice("convnext", "convnext", "convmixer")
    conv_filters: int = 64
    conv_depth: int = 2
    conv_kernel: int = 7
    layer_scale_init: float = 1e-6  # ConvNeXt LayerScale start value
    bn_momentum: float = 0.9  # BatchNorm moving-average momentum (ConvMixer branch)
    head_units: int = 256
    head_dropout: float = 0.5
    epochs: int = 10
    learning_rate: float = 1e-3
    exit_loss_weight: float = 0.3  # teacher training: CE weight of each exit head (logits: 1)


@dataclass
class StudentConfig:
    """Small CNN branch + EfficientNet branch, fused into one head ('layer fusion')."""

    cnn_filters: list[int] = field(default_factory=lambda: [32, 64])
    l2: float = 0.01
    efficientnet: str = _choice("B0", "B0", "B1", "B2", "B3", "B4")
    efficientnet_variant: str = _choice("lite", "standard", "lite")
    weights: str = "none"  # none | imagenet | path to a weights file
    #: layer fusion head: concat (the paper's MLP on the concatenated branch features),
    #: residual (that MLP added to the average of the exits) or none (exits averaged)
    fusion: str = _choice("residual", "concat", "residual", "none")
    #: BatchNorm moving-average momentum of every BN layer (Keras' EfficientNet uses 0.99,
    #: whose statistics lag far behind the weights in short from-scratch runs: the student then
    #: predicts one class at evaluation time while training accuracy rises).
    bn_momentum: float = 0.9
    head_units: int = 256
    head_dropout: float = 0.5
    epochs: int = 10
    learning_rate: float = 1e-3


@dataclass
class BaselineConfig:
    """The paper's plain baseline CNN (Conv16-pool-Conv32-pool-Dense128), trained with CE."""

    epochs: int = 10
    learning_rate: float = 1e-3


@dataclass
class TrainConfig:
    batch_size: int = 32
    #: Learning-rate schedule: ``plateau`` (ReduceLROnPlateau, as the paper) or ``cosine``
    #: (per-epoch cosine decay from the stage's learning rate to ~0 over its epochs; better
    #: final weights when the epoch budget is short and fixed).
    lr_schedule: str = _choice("cosine", "plateau", "cosine")
    #: What early stopping, the LR plateau and the best checkpoint watch. Keras' own
    #: ``val_accuracy``/``val_loss``, or balanced accuracy / macro AUC computed on the
    #: validation split each epoch (the ISIC metric: accuracy rewards ignoring rare classes).
    monitor: str = _choice("val_macro_auc", "val_balanced_accuracy", "val_macro_auc",
                           "val_accuracy", "val_loss")
    early_stopping_patience: int = 10
    reduce_lr_patience: int = 4
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-6
    distribution: str = _choice("none", "none", "mirrored", "multi_worker")
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


@dataclass
class ExportConfig:
    enabled: bool = True
    representative_samples: int = 200
    per_channel: bool = True
    max_int8_drop: float = 0.01  # accuracy / macro-F1 points (fraction) int8 may lose
    int8_output: str = _choice("float32", "float32", "uint8")  # int8 model's output tensor type
    # "float": the 7-value head after the last dense layers (exit average, fusion add, softmax)
    # runs in float32 in the int8 file; "int8": every op integer (needed for uint8 output)
    int8_head: str = _choice("float", "float", "int8")
    centre_input: bool = True  # exact rewrite: first conv sees x - 128 (smaller int8 error)


@dataclass
class BenchConfig:
    enabled: bool = True
    warmup: int = 2
    steps: int = 5
    batch_size: int = 32


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
    tensorboard_every: int = 1  # epochs
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
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


STAGES: tuple[str, ...] = ("baseline", "single", "multi", "multi_fusion")


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
    return cls(**kwargs)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "exit_map":
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


def _validate(cfg: Config, source: str) -> Config:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: '{key}' {why}")

    if len(cfg.data.split) != 3 or any(f < 0 for f in cfg.data.split) or not (
            abs(sum(cfg.data.split) - 1.0) < 1e-6):
        raise bad("data.split", f"must be three non-negative fractions summing to 1, "
                                f"got {cfg.data.split}")
    if cfg.data.image_size < 16:
        raise bad("data.image_size", f"must be at least 16, got {cfg.data.image_size}")
    if cfg.data.image_size % cfg.teacher.patch_size:
        raise bad("teacher.patch_size", f"must divide data.image_size "
                                        f"({cfg.data.image_size}), got {cfg.teacher.patch_size}")
    if cfg.teacher.projection_dim % cfg.teacher.num_heads:
        raise bad("teacher.num_heads", f"must divide teacher.projection_dim "
                                       f"({cfg.teacher.projection_dim})")
    for stage in cfg.distill.stages:
        if stage not in STAGES:
            raise bad("distill.stages", f"has unknown stage {stage!r}; stages are "
                                        f"{', '.join(STAGES)}")
    for key in ("alpha", "beta", "gamma", "temperature"):
        if getattr(cfg.distill, key) < 0:
            raise bad(f"distill.{key}", "must be non-negative")
    if cfg.distill.temperature <= 0:
        raise bad("distill.temperature", "must be positive")
    unit = {"student.bn_momentum": cfg.student.bn_momentum,
            "teacher.bn_momentum": cfg.teacher.bn_momentum,
            "augment.saturation": cfg.augment.saturation, "augment.hue": cfg.augment.hue,
            "augment.brightness": cfg.augment.brightness, "augment.contrast": cfg.augment.contrast}
    for key, value in unit.items():
        if not 0.0 <= value < 1.0:
            raise bad(key, f"must be in [0, 1), got {value}")
    if not 0.0 <= cfg.data.class_weight_power <= 2.0:
        raise bad("data.class_weight_power", f"must be in [0, 2], got "
                                             f"{cfg.data.class_weight_power}")
    if cfg.teacher.layer_scale_init <= 0:
        raise bad("teacher.layer_scale_init", f"must be positive, got "
                                              f"{cfg.teacher.layer_scale_init}")
    positive = {
        "train.batch_size": cfg.train.batch_size, "teacher.epochs": cfg.teacher.epochs,
        "student.epochs": cfg.student.epochs, "baseline.epochs": cfg.baseline.epochs,
        "synth.n_images": cfg.data.synth.n_images,
        "export.representative_samples": cfg.export.representative_samples,
    }
    for key, value in positive.items():
        if value < 1:
            raise bad(key, f"must be at least 1, got {value}")
    if cfg.export.int8_head == "float" and cfg.export.int8_output == "uint8":
        raise bad("export.int8_head", "is 'float', which gives float32 probabilities; with "
                                      "export.int8_output=uint8 set export.int8_head=int8")
    known_methods = {"gradcam", "scorecam", "lime"}
    for method in cfg.explain.methods:
        if method not in known_methods:
            raise bad("explain.methods", f"has unknown method {method!r}; methods are "
                                         f"{', '.join(sorted(known_methods))}")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
                ) -> Config:
    """Load ``path`` (YAML) over the defaults, then apply ``key.path=value`` overrides."""
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found; pass an existing YAML file, "
                              f"e.g. configs/quickstart.yaml")
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
        values = loaded
        if "name" not in values:
            values = {**values, "name": path.stem}
    cfg = _build(Config, values, "", source)
    for text in overrides:
        keys, value = _parse_override(text)
        merged = _merge(dataclasses.asdict(cfg), _nest(keys, value))
        cfg = _build(Config, merged, "", f"--set {text}")
    return _validate(cfg, source)
