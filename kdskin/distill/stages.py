"""The distillation stages and their rules, declared once and checked without Keras.

Stages (``distill.stages``) and the loss terms each one trains with::

    baseline      1     x CE(labels, student logits)                    (student alone, no teacher)
    single        beta  x KD(logits) + gamma x CE
    multi         alpha x KD(exits) + beta x KD(logits) + gamma x CE    (student fusion "none")
    multi_fusion  alpha x KD(exits) + beta x KD(logits) + gamma x CE    (fused student)

The distiller (:mod:`kdskin.distill.distiller`), the pipeline and
:func:`kdskin.config.load_config` all read these tables and call these checks, so a bad
``distill`` section fails when the configuration is loaded, before any training. This module
imports neither Keras nor TensorFlow. Errors are :class:`~kdskin.errors.ConfigError` naming the
key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from kdskin.errors import ConfigError
from kdskin.models.specs import FUSED_HEADS, FUSIONS, STUDENT_OUTPUTS, check_choice

__all__ = ["FUSED_HEADS", "KD_LOSSES", "STAGES", "STAGE_FUSION", "STAGE_TERMS", "TEACHER_OFFSETS",
           "TEACHER_VIEWS",
           "check_kd_params", "check_loss_weights",
           "check_stages", "check_temperature", "resolve_exit_map", "stage_student_fusion",
           "validate_distill"]

#: Every stage, in the order a run trains them.
STAGES: tuple[str, ...] = ("baseline", "single", "multi", "multi_fusion")

#: Loss terms active in each stage (metric names in the history).
STAGE_TERMS: dict[str, tuple[str, ...]] = {
    "baseline": ("loss_ce",),
    "single": ("loss_kd", "loss_ce"),
    "multi": ("loss_exits", "loss_kd", "loss_ce"),
    "multi_fusion": ("loss_exits", "loss_kd", "loss_ce"),
}

#: Student fusion each multi stage is defined with (``"fused"``: one of :data:`FUSED_HEADS`);
#: the distiller checks the student it is given against it.
STAGE_FUSION: dict[str, str] = {"multi": "none", "multi_fusion": "fused"}

#: Stages whose student is built with the configured ``student.fusion`` (the others use
#: ``"none"``): the student-alone ablation and the final fused student share an architecture.
CONFIGURED_FUSION_STAGES: tuple[str, ...] = ("baseline", "multi_fusion")

#: What the teacher sees in a training step (``distill.teacher_view``): ``"augmented"``, the
#: student's training image, every augmentation included; ``"unshifted"``, the same image
#: before the acquisition-shift augmentation (``augment.shift``: colour gains, borders, zoom-out,
#: blur, JPEG), so a teacher trained on clean images gives its targets for the image it knows
#: while the student learns to give them for the shifted one. The Keras augmentation layers
#: (flips, rotation, ...) are shared. The two are the same when ``augment.shift`` is off.
TEACHER_VIEWS: tuple[str, ...] = ("augmented", "unshifted")

#: The soft-target loss of the KD terms (``distill.kd_loss``): ``"kl"``, temperature-scaled KL
#: (Hinton et al.); ``"dist"``, DIST (Huang et al. 2022: Pearson correlation of the softened
#: predictions within each sample and within each class of the batch); ``"dkd"``, decoupled KD
#: (Zhao et al. 2022: the target-class and non-target parts of the KL weighted apart).
KD_LOSSES: tuple[str, ...] = ("kl", "dist", "dkd")

#: The teacher's targets (``distill.teacher_offset``): ``"none"``, its logits as they are;
#: ``"balanced"``, its logits plus the prior offset ``-tau * log(training prior)`` with ``tau``
#: fitted on the validation split for the teacher's balanced accuracy
#: (:func:`kdskin.trust.operating_point.fit_prior_offset`). A teacher trained on class-balanced
#: batches still favours nevus on images it has not seen (it learns the few rare-class images by
#: heart), and the student would learn that bias from its soft targets.
TEACHER_OFFSETS: tuple[str, ...] = ("none", "balanced")


def teacher_trains_shifted(teacher_view: str) -> bool:
    """Whether the teacher a run trains gets ``augment.shift`` too: not with ``"unshifted"``,
    where it only ever judges images before the shift (a small teacher trained with the shift
    augmentation lost 0.21 external balanced accuracy; docs/FINDINGS.md, Other clinics)."""
    return teacher_view != "unshifted"


#: Stages that distil from the teacher through the exit map.
EXIT_MAP_STAGES: tuple[str, ...] = ("multi", "multi_fusion")


def check_stages(stages: Iterable[str]) -> list[str]:
    """Every name must be in :data:`STAGES`; returns the list."""
    stages = list(stages)
    for stage in stages:
        check_choice("distill.stages", stage, STAGES)
    return stages


def stage_student_fusion(stage: str, fusion: str) -> str:
    """The fusion head the student of ``stage`` is built with, given ``student.fusion``."""
    check_choice("distill.stages", stage, STAGES)
    check_choice("student.fusion", fusion, FUSIONS)
    return fusion if stage in CONFIGURED_FUSION_STAGES else "none"


def check_loss_weights(alpha: float, beta: float, gamma: float) -> None:
    """``distill.alpha``, ``beta`` and ``gamma`` must be non-negative."""
    for key, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not value >= 0:
            raise ConfigError(f"distill.{key} must be non-negative, got {value}")


def check_temperature(temperature: float) -> None:
    """``distill.temperature`` must be positive."""
    if not temperature > 0:
        raise ConfigError(f"distill.temperature must be positive, got {temperature}")


_LAST = re.compile(r"^(?P<branch>.+_exit)_last$")
_NUMBERED = re.compile(r"^(?P<branch>.+_exit)_(?P<index>\d+)$")


def resolve_exit_map(exit_map: Mapping[str, str], teacher_names: Sequence[str],
                     student_names: Sequence[str]) -> dict[str, str]:
    """Resolve ``{student output: teacher output}`` against the models' output names.

    ``"<branch>_exit_last"`` (e.g. ``"conv_exit_last"``) resolves to the deepest numbered exit of
    that branch among ``teacher_names`` (``"conv_exit_3"`` if the teacher has 3 conv blocks).
    Raises :class:`ConfigError` naming ``distill.exit_map`` and the available names when a name
    does not exist.
    """
    if not exit_map:
        raise ConfigError("distill.exit_map is empty; map at least one student exit to a teacher "
                          "exit, e.g. {cnn_exit: conv_exit_last}")
    teacher_names, student_names = list(teacher_names), list(student_names)
    resolved: dict[str, str] = {}
    for student_name, teacher_name in exit_map.items():
        if student_name not in student_names:
            raise ConfigError(f"distill.exit_map: the student has no output {student_name!r}; "
                              f"student outputs are {', '.join(sorted(student_names))}")
        match = _LAST.match(teacher_name)
        if teacher_name in teacher_names:  # as named (a store keeps the names it was asked for)
            pass
        elif match:
            branch = match.group("branch")
            numbered = [(int(m.group("index")), name) for name in teacher_names
                        if (m := _NUMBERED.match(name)) and m.group("branch") == branch]
            if not numbered:
                raise ConfigError(f"distill.exit_map: {teacher_name!r} names no branch of the "
                                  f"teacher (no outputs {branch}_1, {branch}_2, ...); teacher "
                                  f"outputs are {', '.join(sorted(teacher_names))}")
            teacher_name = max(numbered)[1]
        elif teacher_name not in teacher_names:
            raise ConfigError(f"distill.exit_map: the teacher has no output {teacher_name!r}; "
                              f"teacher outputs are {', '.join(sorted(teacher_names))} "
                              f"(or use <branch>_exit_last)")
        resolved[student_name] = teacher_name
    return resolved


#: The weights each soft-target loss takes in ``distill.kd_params`` (and their defaults).
KD_PARAMS: dict[str, dict[str, float]] = {"kl": {}, "dist": {"beta": 1.0, "gamma": 1.0},
                                          "dkd": {"alpha": 1.0, "beta": 8.0}}


def check_kd_params(kind: str, params: Mapping[str, float]) -> None:
    """``distill.kd_params`` must name only weights of ``distill.kd_loss`` (non-negative)."""
    check_choice("distill.kd_loss", kind, KD_LOSSES)
    allowed = KD_PARAMS[kind]
    for key, value in params.items():
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            raise ConfigError(f"distill.kd_params.{key}: distill.kd_loss {kind} takes {names}")
        if not value >= 0:
            raise ConfigError(f"distill.kd_params.{key} must be non-negative, got {value}")


def validate_distill(stages: Sequence[str], alpha: float, beta: float, gamma: float,
                     temperature: float, exit_map: Mapping[str, str], fusion: str,
                     teacher_names: Sequence[str],
                     student_names: Sequence[str] = STUDENT_OUTPUTS) -> None:
    """Every rule of the ``distill`` section, against the models the run will build.

    ``fusion``: ``student.fusion``; ``teacher_names``: the teacher's output names
    (:func:`kdskin.models.specs.teacher_output_names`).
    """
    stages = check_stages(stages)
    check_loss_weights(alpha, beta, gamma)
    check_temperature(temperature)
    check_choice("student.fusion", fusion, FUSIONS)
    if "multi_fusion" in stages and fusion not in FUSED_HEADS:
        raise ConfigError(f"student.fusion is {fusion!r}, but distill.stages has multi_fusion, "
                          f"which needs a fused head ({' or '.join(FUSED_HEADS)}); set "
                          f"student.fusion or drop the stage")
    if any(stage in EXIT_MAP_STAGES for stage in stages):
        resolve_exit_map(exit_map, teacher_names, student_names)
