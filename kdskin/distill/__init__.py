"""Knowledge distillation: soft-target losses and the multi-stage distiller."""

from kdskin.distill.distiller import (
    STAGE_FUSION,
    STAGE_TERMS,
    KdskinDistiller,
    check_teacher_trained,
    make_stage_model,
    student_fusion,
)
from kdskin.distill.losses import (
    ClassWeightedCrossEntropy,
    ExitDistillation,
    cross_entropy,
    logit_distillation,
    resolve_exit_map,
    softened_kl,
)

__all__ = [
    "STAGE_FUSION", "STAGE_TERMS", "ClassWeightedCrossEntropy", "ExitDistillation",
    "KdskinDistiller", "check_teacher_trained", "cross_entropy", "logit_distillation",
    "make_stage_model", "resolve_exit_map", "softened_kl", "student_fusion",
]
