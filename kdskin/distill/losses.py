"""Distillation and classification losses: pure functions of logits, plus two Keras adapters.

Everything here takes LOGITS (never probabilities): kdskin models output logits and a softmax is
applied only where a formula needs probabilities (flaw 2 of the published code was feeding
softmax outputs to ``from_logits=True`` losses).

* :func:`softened_kl` -- Hinton et al. soft-target loss, ``KL(softmax(t/T) || softmax(s/T)) * T^2``
  per sample, computed with ``log_softmax`` (no probability clipping).
* :func:`cross_entropy` -- cross-entropy from logits with optional per-class weights and
  logit adjustment (``logits + tau * log(prior)``: the logit-adjusted / balanced-softmax loss),
  per sample.
* :func:`resolve_exit_map` -- student exit -> teacher exit names, ``*_last`` resolved (declared
  in :mod:`kdskin.distill.stages`, re-exported here).
* :class:`ExitDistillation` -- a ``keras.distillation.DistillationLoss`` that averages
  :func:`softened_kl` over (student exit, teacher exit) pairs. With the single pair
  ``{"logits": "logits"}`` it is the logit-distillation term (:func:`logit_distillation`).
* :class:`ClassWeightedCrossEntropy` -- a serialisable ``keras.losses.Loss`` for ``compile()``.

Why not ``keras.distillation.LogitsDistillation`` for the logit term (checked in Keras 3.15.1):
its default ``loss="kl_divergence"`` resolves to the *function* ``kl_divergence``, and the
softmax and the ``T^2`` factor are only applied when the loss is a ``KLDivergence`` *instance*,
so the default silently computes KL between raw ``logits/T`` values (about 2.90 instead of the
correct 1.04 on a 3-class example); with an instance it clips probabilities at 1e-7 instead of
using ``log_softmax``, and it returns only a batch mean, while kdskin needs per-sample values for
``sample_weight``. kdskin keeps one implementation of the soft-target math for both the logit and
the exit terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kdskin.constants import NUM_CLASSES
from kdskin.distill.stages import KD_LOSSES, check_temperature, resolve_exit_map
from kdskin.errors import ConfigError
from kdskin.models.contract import output_names

__all__ = ["ClassWeightedCrossEntropy", "ExitDistillation", "class_weight_vector",
           "cross_entropy", "dist_kd", "dkd", "logit_adjustment_vector", "logit_distillation",
           "output_names", "resolve_exit_map", "soft_target_loss", "softened_kl",
           "sparse_labels"]

Tensor = Any


# --------------------------------------------------------------------------- pure functions


def softened_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Soft-target distillation loss per sample.

    ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, shapes ``(B, C), (B, C) -> (B,)``.
    The ``T^2`` factor (Hinton et al. 2015) keeps the gradient magnitude of the soft term
    independent of ``T``, so ``alpha``/``beta``/``gamma`` mean the same at any temperature. It is
    zero when the two logits are equal (up to a constant shift per row).
    """
    check_temperature(temperature)
    t = float(temperature)
    student_logits = ops.cast(student_logits, "float32")
    teacher_logits = ops.cast(teacher_logits, "float32")
    log_p_teacher = ops.log_softmax(teacher_logits / t, axis=-1)
    log_p_student = ops.log_softmax(student_logits / t, axis=-1)
    kl = ops.sum(ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return kl * (t * t)


def _pearson(a: Tensor, b: Tensor, axis: int, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``axis``."""
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    return ops.sum(a * b, axis=axis) / (
        ops.sqrt(ops.sum(a * a, axis=axis) * ops.sum(b * b, axis=axis)) + eps)


def dist_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
            beta: float = 1.0, gamma: float = 1.0) -> Tensor:
    """DIST (Huang et al. 2022): relations, not values, of the softened predictions, per sample.

    ``T^2 * (beta * (1 - pearson over classes of each sample) + gamma * (1 - mean over classes
    of the pearson over the batch))``, shapes ``(B, C), (B, C) -> (B,)``; the second (intra-class)
    term is one number per batch, added to every sample. Zero when the student's softened
    predictions are an affine function of the teacher's, per sample and per class: a teacher of
    another kind (or an ensemble) need not be matched exactly.
    """
    check_temperature(temperature)
    t = float(temperature)
    p_s = ops.softmax(ops.cast(student_logits, "float32") / t, axis=-1)
    p_t = ops.softmax(ops.cast(teacher_logits, "float32") / t, axis=-1)
    inter = 1.0 - _pearson(p_s, p_t, axis=-1)
    intra = 1.0 - ops.mean(_pearson(p_s, p_t, axis=0))
    return (t * t) * (float(beta) * inter + float(gamma) * intra)


def dkd(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float,
        alpha: float = 1.0, beta: float = 8.0) -> Tensor:
    """Decoupled KD (Zhao et al. 2022) per sample: ``alpha * TCKD + beta * NCKD``, ``T^2``-scaled.

    TCKD: KL between the binary (target class, the rest) softened probabilities; NCKD: KL between
    the softened distributions over the non-target classes only. ``labels``: ``(B,)`` indices or
    ``(B, C)`` one-hot; shapes ``(B, C), (B, C) -> (B,)``. With ``alpha = beta = 1`` it is close to
    :func:`softened_kl` weighted by the teacher's non-target mass; a large ``beta`` keeps the
    dark knowledge of a confident teacher.
    """
    check_temperature(temperature)
    t = float(temperature)
    s = ops.cast(student_logits, "float32") / t
    z = ops.cast(teacher_logits, "float32") / t
    num_classes = int(s.shape[-1])
    gt = ops.one_hot(sparse_labels(labels, num_classes), num_classes)
    p_s, p_t = ops.softmax(s, axis=-1), ops.softmax(z, axis=-1)
    eps = 1e-7
    ps_gt = ops.clip(ops.sum(p_s * gt, axis=-1), eps, 1.0 - eps)
    pt_gt = ops.clip(ops.sum(p_t * gt, axis=-1), eps, 1.0 - eps)
    tckd = pt_gt * (ops.log(pt_gt) - ops.log(ps_gt)) + (1.0 - pt_gt) * (
        ops.log(1.0 - pt_gt) - ops.log(1.0 - ps_gt))
    mask = 1000.0 * gt  # the target class out of the non-target softmax
    log_q_t = ops.log_softmax(z - mask, axis=-1)
    log_q_s = ops.log_softmax(s - mask, axis=-1)
    nckd = ops.sum(ops.exp(log_q_t) * (log_q_t - log_q_s) * (1.0 - gt), axis=-1)
    return (t * t) * (float(alpha) * tckd + float(beta) * nckd)


def soft_target_loss(kind: str, student_logits: Tensor, teacher_logits: Tensor,
                     temperature: float, labels: Tensor = None,
                     params: Mapping[str, float] | None = None) -> Tensor:
    """The per-sample soft-target loss ``kind`` (``distill.kd_loss``: :data:`KD_LOSSES`):
    :func:`softened_kl`, :func:`dist_kd` or :func:`dkd` (which needs ``labels``); ``params``:
    the loss's own weights (``beta``/``gamma`` of DIST, ``alpha``/``beta`` of DKD)."""
    params = dict(params or {})
    if kind == "kl":
        return softened_kl(student_logits, teacher_logits, temperature)
    if kind == "dist":
        return dist_kd(student_logits, teacher_logits, temperature, **params)
    if kind == "dkd":
        if labels is None:
            raise ConfigError("distill.kd_loss dkd needs the labels of the batch")
        return dkd(student_logits, teacher_logits, labels, temperature, **params)
    raise ConfigError(f"distill.kd_loss must be one of {', '.join(KD_LOSSES)}, got {kind!r}")


def class_weight_vector(class_weight: Mapping[int, float] | Sequence[float] | None,
                        num_classes: int = NUM_CLASSES) -> np.ndarray | None:
    """``{class_index: weight}`` (missing classes weigh 1) or a sequence -> ``(num_classes,)``."""
    if class_weight is None:
        return None
    if isinstance(class_weight, Mapping):
        vec = np.ones(num_classes, dtype="float32")
        for key, value in class_weight.items():
            index = int(key)
            if not 0 <= index < num_classes:
                raise ConfigError(f"class_weight has class index {key!r}; indices must be in "
                                  f"0..{num_classes - 1}")
            vec[index] = float(value)
    else:
        vec = np.asarray(list(class_weight), dtype="float32")
        if vec.shape != (num_classes,):
            raise ConfigError(f"class_weight must have {num_classes} values, got {vec.shape[0]}")
    if np.any(vec < 0) or not np.all(np.isfinite(vec)):
        raise ConfigError(f"class_weight values must be finite and non-negative, "
                          f"got {vec.tolist()}")
    return vec


def logit_adjustment_vector(adjustment: Sequence[float] | np.ndarray | None,
                            num_classes: int = NUM_CLASSES, name: str = "logit_adjustment"
                            ) -> np.ndarray | None:
    """Per-class logit offsets (e.g. ``tau * log(prior)``) -> finite ``(num_classes,)`` float32;
    ``name``: the argument named in the error."""
    if adjustment is None:
        return None
    vec = np.asarray(adjustment, dtype="float32").reshape(-1)
    if vec.shape != (num_classes,) or not np.all(np.isfinite(vec)):
        raise ConfigError(f"{name} must be {num_classes} finite values, got "
                          f"{np.asarray(adjustment).tolist()}")
    return vec


def cross_entropy(labels: Tensor, logits: Tensor,
                  class_weight: Mapping[int, float] | Sequence[float] | np.ndarray | None = None,
                  logit_adjustment: Sequence[float] | np.ndarray | None = None) -> Tensor:
    """Cross-entropy from logits per sample, times the weight of each sample's class.

    ``labels``: ``(B,)`` or ``(B, 1)`` integer class indices, or ``(B, C)`` one-hot / soft labels
    (then the sample's weight is ``sum_c labels[c] * w[c]``); ``logits``: ``(B, C)`` -> ``(B,)``.
    The batch reduction (as Keras does with ``class_weight``) is ``mean(w * ce)``.
    ``logit_adjustment`` ``(C,)`` is added to every row of ``logits`` first: with
    ``tau * log(prior)`` it is the logit-adjusted loss (Menon et al. 2021), whose raw logits
    rank classes as if they were balanced; a constant vector changes nothing.
    """
    logits = ops.cast(logits, "float32")
    num_classes = int(logits.shape[-1])
    weights = (class_weight if isinstance(class_weight, np.ndarray) or class_weight is None
               else class_weight_vector(class_weight, num_classes))
    adjust = logit_adjustment_vector(logit_adjustment, num_classes)
    if adjust is not None:
        logits = logits + ops.convert_to_tensor(adjust, "float32")
    log_probs = ops.log_softmax(logits, axis=-1)
    if _is_dense_labels(labels, num_classes):
        dense = ops.cast(labels, "float32")
    else:
        dense = ops.one_hot(sparse_labels(labels, num_classes), num_classes)
    ce = -ops.sum(dense * log_probs, axis=-1)
    if weights is not None:
        ce = ce * ops.sum(dense * ops.convert_to_tensor(weights, "float32"), axis=-1)
    return ce


def sparse_labels(labels: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """``(B,)``/``(B, 1)`` integer labels or ``(B, C)`` one-hot -> ``(B,)`` int32 class indices."""
    if _is_dense_labels(labels, num_classes):
        return ops.cast(ops.argmax(labels, axis=-1), "int32")
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def _is_dense_labels(labels: Tensor, num_classes: int) -> bool:
    shape = ops.shape(labels)
    return len(shape) == 2 and shape[-1] == num_classes and num_classes > 1


# --------------------------------------------------------------------------- Keras adapters


class ExitDistillation(keras.distillation.DistillationLoss):
    """Soft-target distillation between named outputs: mean over pairs of :func:`softened_kl`.

    ``exit_map`` maps student output names to teacher output names (``*_exit_last`` allowed).
    Teacher and student outputs are dicts of ``(B, C)`` logits.

    Departure from ``keras.distillation`` (by design): ``DistillationLoss.validate_outputs``
    asserts that teacher and student outputs have the same structure, which a teacher with
    2 x depth exits and a 3-output student never have; here the explicit exit map replaces that
    check, and only the mapped outputs need matching ``(B, C)`` shapes.
    """

    def __init__(self, exit_map: Mapping[str, str], temperature: float = 10.0,
                 kind: str = "kl", params: Mapping[str, float] | None = None) -> None:
        check_temperature(temperature)
        if kind not in KD_LOSSES:
            raise ConfigError(f"distill.kd_loss must be one of {', '.join(KD_LOSSES)}, "
                              f"got {kind!r}")
        self.exit_map = dict(exit_map)
        self.temperature = float(temperature)
        self.kind = kind
        self.params = dict(params or {})
        self.resolved: dict[str, str] | None = None

    def resolve(self, teacher_names: Sequence[str], student_names: Sequence[str]
                ) -> dict[str, str]:
        self.resolved = resolve_exit_map(self.exit_map, teacher_names, student_names)
        return self.resolved

    def validate_model_compatibility(self, teacher: keras.Model, student: keras.Model) -> None:
        self.resolve(output_names(teacher), output_names(student))

    def validate_outputs(self, teacher_outputs: Any, student_outputs: Any) -> None:
        if not isinstance(teacher_outputs, Mapping) or not isinstance(student_outputs, Mapping):
            raise ValueError("ExitDistillation needs dict outputs (name -> logits) from both "
                             "teacher and student")
        resolved = self.resolve(list(teacher_outputs), list(student_outputs))
        for s_name, t_name in resolved.items():
            s_shape, t_shape = student_outputs[s_name].shape, teacher_outputs[t_name].shape
            if s_shape[-1] != t_shape[-1]:
                raise ValueError(f"student output {s_name!r} has {s_shape[-1]} classes but "
                                 f"teacher output {t_name!r} has {t_shape[-1]}")

    def per_sample(self, teacher_outputs: Mapping[str, Tensor],
                   student_outputs: Mapping[str, Tensor], labels: Tensor = None) -> Tensor:
        """Mean over mapped pairs of the soft-target loss (:func:`soft_target_loss` of
        ``kind``), shape ``(B,)``; ``labels`` ``(B,)``: the batch's, for ``dkd``."""
        if self.resolved is None:
            self.validate_outputs(teacher_outputs, student_outputs)
        terms = [soft_target_loss(self.kind, student_outputs[s], teacher_outputs[t],
                                  self.temperature, labels, self.params)
                 for s, t in self.resolved.items()]
        return terms[0] if len(terms) == 1 else ops.mean(ops.stack(terms, axis=0), axis=0)

    def compute_loss(self, teacher_outputs: Any, student_outputs: Any, **kwargs: Any) -> Tensor:
        """Scalar: batch mean of :meth:`per_sample`."""
        return ops.mean(self.per_sample(teacher_outputs, student_outputs))

    def get_config(self) -> dict[str, Any]:
        return {"exit_map": dict(self.exit_map), "temperature": self.temperature,
                "kind": self.kind, "params": dict(self.params)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ExitDistillation:
        return cls(**config)

    def __repr__(self) -> str:
        pairs = self.resolved or self.exit_map
        kind = "" if self.kind == "kl" else f"{self.kind.upper()}, "
        return ", ".join(f"{s}<-{t}" for s, t in pairs.items()) + (
            f" ({kind}T={self.temperature:g})")


def logit_distillation(temperature: float = 10.0, kind: str = "kl",
                       params: Mapping[str, float] | None = None) -> ExitDistillation:
    """The logit-distillation term: :class:`ExitDistillation` on ``{"logits": "logits"}``."""
    return ExitDistillation({"logits": "logits"}, temperature, kind, params)


@keras.saving.register_keras_serializable(package="kdskin")
class ClassWeightedCrossEntropy(keras.losses.Loss):
    """Sparse (or one-hot) cross-entropy from logits with per-class weights, for ``compile()``.

    Keras' ``fit(class_weight=...)`` raises for models with more than one output, so class
    balance for the multi-exit teacher lives in the loss. ``class_weight``: ``{index: weight}``
    or a list of ``num_classes`` weights, or None. Reduction: ``mean(w * ce)`` like Keras.
    ``logit_adjustment``: ``num_classes`` offsets added to the logits (logit-adjusted loss);
    a compiled loss is also the validation loss, so ``val_loss`` is the adjusted one too.
    """

    def __init__(self, class_weight: Mapping[int, float] | Sequence[float] | None = None,
                 name: str = "class_weighted_cross_entropy",
                 logit_adjustment: Sequence[float] | np.ndarray | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        vec = class_weight_vector(class_weight, len(class_weight)
                                  if isinstance(class_weight, Sequence) else NUM_CLASSES)
        self.class_weight = None if vec is None else [float(v) for v in vec]
        self._weights = vec
        adjust = logit_adjustment_vector(
            logit_adjustment, len(vec) if vec is not None else np.size(logit_adjustment))
        self.logit_adjustment = None if adjust is None else [float(v) for v in adjust]
        self._adjust = adjust

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        return cross_entropy(y_true, y_pred, self._weights, self._adjust)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"class_weight": self.class_weight,
                       "logit_adjustment": self.logit_adjustment})
        return config
