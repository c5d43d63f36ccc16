"""The multi-stage distiller: one ``keras.Model`` per stage, trained with plain ``model.fit``.

Stages (``cfg.distill.stages``), loss per training batch::

    baseline      1     x CE(labels, student logits)                    (student alone, no teacher)
    single        beta  x KD(logits) + gamma x CE
    multi         alpha x KD(exits) + beta x KD(logits) + gamma x CE    (student fusion "none")
    multi_fusion  alpha x KD(exits) + beta x KD(logits) + gamma x CE    (fused student)

The two multi stages differ by the student (:data:`STAGE_FUSION`), which is checked.

KD is :func:`kdskin.distill.losses.softened_kl` (``T^2``-scaled KL of temperature-softened
softmaxes); KD(exits) averages it over the pairs of ``cfg.distill.exit_map``. The student's own
regularisation losses (the CNN branch's L2) are added on top.

Why ``KdskinDistiller`` is a thin ``keras.Model`` and not a subclass of
``keras.distillation.Distiller`` (Keras 3.15.1; it keeps the same public shape: ``teacher``,
``student``, ``distillation_losses``, ``distillation_loss_weights``, ``call`` = the student's):

1. ``Distiller.__init__`` requires a teacher and freezes it; the ``baseline`` stage has none.
2. ``Distiller.__init__`` asserts that teacher and student outputs have the same structure and
   shapes; the teacher has 2 x depth exits + logits, the student 2 exits + logits. kdskin maps
   exits explicitly (:class:`~kdskin.distill.losses.ExitDistillation`).
3. ``Distiller.compute_loss`` ignores ``sample_weight`` (so ``fit(class_weight=...)`` silently
   does nothing), ignores the student's regularisation losses (``student.losses``: the CNN
   branch's L2), and runs the teacher in ``evaluate`` too.
4. Its trackers lump every distillation term into one ``distillation_loss``; kdskin reports each
   term (``loss_exits``, ``loss_kd``, ``loss_ce``, ``total``).
5. ``Distiller.compile`` requires ``loss`` and rejects dict metrics for dict outputs.
Overriding all of that would leave only ``call`` inherited. The loss terms themselves are
``keras.distillation.DistillationLoss`` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kdskin.compat import print_msg
from kdskin.config import Config
from kdskin.constants import INPUT_NAME, TEACHER_INPUT_NAME, target_key
from kdskin.distill.losses import (
    ExitDistillation,
    class_weight_vector,
    cross_entropy,
    logit_adjustment_vector,
    logit_distillation,
    sparse_labels,
)
from kdskin.distill.stages import (
    FUSED_HEADS,
    STAGE_FUSION,
    STAGE_TERMS,
    STAGES,
    check_loss_weights,
)
from kdskin.errors import ConfigError, ModelError
from kdskin.models.contract import input_size, is_trained, output_names

__all__ = ["KdskinDistiller", "check_teacher_trained", "make_stage_model", "student_fusion"]

logger = logging.getLogger(__name__)


def student_fusion(student: keras.Model) -> str | None:
    """The student's fusion head: ``"residual"`` (layer ``fusion_exits_average``), ``"concat"``
    (layer ``fusion_concat`` only), ``"none"`` for a two-branch student without a fusion head,
    None if it is not a two-branch student."""
    names = output_names(student)
    if "cnn_exit" not in names or "effnet_exit" not in names:
        return None
    layer_names = {layer.name for layer in student.layers}
    if "fusion_exits_average" in layer_names:
        return "residual"
    return "concat" if "fusion_concat" in layer_names else "none"


def _num_replicas() -> int:
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


class KdskinDistiller(keras.Model):
    """Train ``student`` (a kdskin dict-of-logits model) by one distillation stage.

    Args:
        teacher: trained teacher (frozen here: ``trainable=False``), or None for ``baseline``.
        student: the model being trained; ``distiller.student`` is what gets saved.
        stage: one of ``baseline``, ``single``, ``multi``, ``multi_fusion``.
        alpha, beta, gamma: weights of the exit, logit-KD and cross-entropy terms.
        temperature: ``T`` of both KD terms (the ``T^2`` factor is inside ``softened_kl``).
        exit_map: student exit -> teacher exit (``*_exit_last`` allowed); multi stages only.
        class_weight: ``{class index: weight}`` applied to the CE term during training only
            (as Keras does). Not to the KD terms: they match the teacher's soft targets, and the
            teacher was itself trained with the same class weights, so weighting them again
            would count the imbalance twice. ``fit(class_weight=...)`` is refused.
        logit_adjustment: ``(C,)`` offsets (``tau * log(prior)``) added to the student's logits
            in the CE term during training only (the logit-adjusted loss); the KD terms compare
            raw logits, and validation and prediction use raw logits.
        teacher_offsets: ``(C,)`` offsets added to every teacher output before the KD terms
            (``distill.teacher_offset``: the teacher's prior offset fitted on validation), or
            None for its logits as they are.

    ``call`` runs the student only; the teacher runs only inside the training loss, never in
    ``evaluate``/``predict``. Inputs: ``(B, S, S, 3)`` pixels 0..255 (or ``{"image": ...}``),
    or in training ``{"image": student's (B, S, S, 3), "teacher_image": teacher's (B, S, S, 3)}``
    (the teacher's targets computed on another view of the same images, e.g. before the
    acquisition-shift augmentation); labels ``(B,)`` class indices (or one-hot ``(B, 7)``).

    History keys: ``loss`` (what is optimised: ``total`` + student regularisation), ``total``,
    the stage's terms (see :data:`STAGE_TERMS`), ``loss_reg`` when the student has
    regularisers, ``accuracy`` (on ``"logits"``). Validation reports ``val_loss`` (unweighted CE +
    regularisation), ``val_loss_ce``, ``val_accuracy`` (and ``val_loss_reg``): the KD terms need
    the teacher, which validation does not run.
    """

    def __init__(self, teacher: keras.Model | None, student: keras.Model,
                 stage: str = "multi_fusion", *, alpha: float = 0.3, beta: float = 0.3,
                 gamma: float = 0.4, temperature: float = 10.0,
                 exit_map: Mapping[str, str] | None = None,
                 class_weight: Mapping[int, float] | None = None,
                 logit_adjustment: Sequence[float] | np.ndarray | None = None,
                 teacher_offsets: Sequence[float] | np.ndarray | None = None,
                 kd_loss: str = "kl", kd_params: Mapping[str, float] | None = None,
                 stored_targets: Sequence[str] | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name or f"distiller_{stage}", **kwargs)
        if stage not in STAGE_TERMS:
            raise ConfigError(f"unknown distillation stage {stage!r}; stages are "
                              f"{', '.join(STAGES)}")
        if not isinstance(student, keras.Model):
            raise ModelError(f"the student must be a keras.Model, got {type(student).__name__}")
        student_names = output_names(student)
        if "logits" not in student_names:
            raise ModelError(f"student {student.name!r} has no 'logits' output (outputs: "
                             f"{', '.join(student_names) or 'none named'})")
        check_loss_weights(alpha, beta, gamma)
        self.stage = stage
        self.student = student
        self.teacher = None if stage == "baseline" else teacher
        #: output names of the teacher's stored targets the batches carry (``target_NAME``
        #: inputs, :func:`kdskin.data.replay.replay_dataset`); None: the teacher runs online
        self.stored_targets = (None if stage == "baseline" or stored_targets is None
                               else tuple(stored_targets))
        if self.stored_targets is not None and teacher is not None:
            raise ModelError("pass either a teacher model (online targets) or stored_targets, "
                             "not both")
        self.temperature = float(temperature)
        num_classes = int(student.output["logits"].shape[-1]) if isinstance(
            student.output, dict) else int(student.outputs[0].shape[-1])
        self.class_weight = None if class_weight is None else dict(class_weight)
        self._class_weights = class_weight_vector(class_weight, num_classes)
        self._logit_adjustment = logit_adjustment_vector(logit_adjustment, num_classes)
        self._teacher_offsets = logit_adjustment_vector(teacher_offsets, num_classes,
                                                        "teacher_offsets")

        # Loss terms: name -> (DistillationLoss or None for CE, weight).
        self.distillation_losses: list[ExitDistillation] = []
        self.distillation_loss_weights: list[float] = []
        self.ce_weight = 1.0 if stage == "baseline" else float(gamma)
        expected, built = STAGE_FUSION.get(stage), student_fusion(student)
        fused = built in FUSED_HEADS
        if expected and built and (expected == "fused") != fused:
            wanted = " or ".join(repr(f) for f in FUSED_HEADS) if expected == "fused" \
                else repr(expected)
            raise ModelError(f"stage {stage!r} expects a student built with fusion={wanted}, "
                             f"got one with fusion={built!r}; build it with build_student(..., "
                             f"fusion={wanted.split(' or ')[-1]})")
        if stage != "baseline":
            if self.stored_targets is None:
                self._check_teacher(self.teacher, student)
                self.teacher.trainable = False
                teacher_names = output_names(self.teacher)
            else:
                teacher_names = list(self.stored_targets)
            student_names = output_names(student)
            self.kd_loss = logit_distillation(temperature, kd_loss, kd_params)
            self.kd_loss.resolve(teacher_names, student_names)
            if stage in ("multi", "multi_fusion"):
                if not exit_map:
                    raise ConfigError(f"stage {stage!r} needs distill.exit_map (student exit -> "
                                      f"teacher exit), e.g. {{cnn_exit: conv_exit_last}}")
                self.exit_loss = ExitDistillation(exit_map, temperature, kd_loss, kd_params)
                self.exit_loss.resolve(teacher_names, student_names)
                self.distillation_losses.append(self.exit_loss)
                self.distillation_loss_weights.append(float(alpha))
            self.distillation_losses.append(self.kd_loss)
            self.distillation_loss_weights.append(float(beta))
        self.term_weights: dict[str, float] = dict(zip(
            STAGE_TERMS[stage], [*self.distillation_loss_weights, self.ce_weight], strict=True))

        # One Mean per reported term; created here (inside the strategy scope, if any).
        self.has_regularization = bool(student.losses)
        names = [*STAGE_TERMS[stage], "total"] + (["loss_reg"] if self.has_regularization else [])
        self.term_trackers = {n: keras.metrics.Mean(name=n) for n in names}
        # "loss": what is optimised (kdskin's own tracker, not Keras' private _loss_tracker).
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self._reported: tuple[str, ...] = ()
        self._announced = False
        self.built = student.built and (self.teacher is None or self.teacher.built)

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _check_teacher(teacher: keras.Model | None, student: keras.Model) -> None:
        if teacher is None:
            raise ModelError("this distillation stage needs a trained teacher; pass one, or use "
                             "stage 'baseline' to train the student alone")
        if not isinstance(teacher, keras.Model):
            raise ModelError(f"the teacher must be a keras.Model, got {type(teacher).__name__}")
        t_in, s_in = tuple(teacher.inputs[0].shape[1:]), tuple(student.inputs[0].shape[1:])
        if t_in[2:] != s_in[2:] or t_in[0] != t_in[1] or t_in[0] < s_in[0]:
            raise ModelError(f"teacher input {t_in} and student input {s_in}: the teacher must "
                             f"take square images at least as large as the student's, with the "
                             f"same channels (teacher.image_size >= data.image_size)")
        if "logits" not in output_names(teacher):
            raise ModelError(f"teacher {teacher.name!r} has no 'logits' output")

    def describe(self) -> str:
        """One line: the stage, its active loss terms and their weights."""
        parts = []
        for term, weight in self.term_weights.items():
            if term == "loss_exits":
                parts.append(f"{weight:g} x exit KD [{self.exit_loss!r}]")
            elif term == "loss_kd":
                kind = {"kl": "KL", "dist": "DIST", "dkd": "DKD"}[self.kd_loss.kind]
                parts.append(f"{weight:g} x logit KD ({kind}, T={self.temperature:g}, "
                             f"T^2-scaled)")
            else:
                cw = ", class-weighted" if self._class_weights is not None else ""
                if self._logit_adjustment is not None:
                    cw += ", logit-adjusted"
                parts.append(f"{weight:g} x CE on labels{cw}")
        reg = " + student regularisation" if self.has_regularization else ""
        if self.stored_targets is not None:
            teacher = "the teacher's stored targets (no teacher runs)"
        elif self.teacher is None:
            teacher = "no teacher"
        else:
            teacher = f"teacher {self.teacher.name!r} frozen, run in training steps only"
        if self.teacher is not None and self._teacher_offsets is not None:
            teacher += " (its outputs plus the prior offsets " + ", ".join(
                f"{v:+.2f}" for v in self._teacher_offsets) + ")"
        return f"stage {self.stage}: loss = {' + '.join(parts)}{reg}; {teacher}"

    # ------------------------------------------------------------------ Keras API

    def call(self, inputs: Any, training: bool | None = None) -> dict[str, Any]:
        """The student's outputs (dict of ``(B, 7)`` logits). Images larger than the student's
        input (a teacher at a larger size: training batches come at the teacher's size) are
        resized to it first, anti-aliased bilinear; validation batches come at its size."""
        return self.student(self.student_view(inputs), training=training)

    def student_view(self, inputs: Any) -> Any:
        """``inputs`` (``(B, S, S, 3)``, ``{"image": ...}`` or ``{"image": ..., "teacher_image":
        ...}``) at the student's size ``s``: ``(B, s, s, 3)`` (as given when ``S == s`` and there
        is no teacher's view)."""
        if isinstance(inputs, Mapping) and len(inputs) > 1:
            inputs = inputs[INPUT_NAME]  # the teacher's view or its stored targets beside it
        images = inputs[INPUT_NAME] if isinstance(inputs, Mapping) else inputs
        size = input_size(self.student)
        if images.shape[1] is None or int(images.shape[1]) == size:
            return inputs
        return ops.image.resize(images, (size, size), interpolation="bilinear", antialias=True)

    @staticmethod
    def teacher_view(inputs: Any) -> Any:
        """What the teacher sees of a training batch: ``inputs["teacher_image"]`` when the batch
        carries one (``distill.teacher_view: unshifted``), else ``inputs`` themselves."""
        if isinstance(inputs, Mapping) and TEACHER_INPUT_NAME in inputs:
            return inputs[TEACHER_INPUT_NAME]
        return inputs

    def compile(self, optimizer: Any = "adam", **kwargs: Any) -> None:
        """Compile with an optimizer only: the loss and metrics are set by the stage."""
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(key) is not None:
                raise ModelError(f"KdskinDistiller.compile(): do not pass {key}=; the loss terms "
                                 f"and metrics come from the stage ({self.stage})")
        super().compile(optimizer=optimizer, **kwargs)

    def fit(self, *args: Any, class_weight: Mapping[int, float] | None = None,
            **kwargs: Any) -> keras.callbacks.History:
        if class_weight is not None:
            raise ModelError("KdskinDistiller applies class weights inside its cross-entropy "
                             "term: pass class_weight= to KdskinDistiller/make_stage_model, "
                             "not to fit()")
        if not self._announced:
            message = self.describe()
            if kwargs.get("verbose", "auto") != 0:
                print_msg(message)
            logger.info(message)
            self._announced = True
        return super().fit(*args, **kwargs)

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        """Weighted sum of the stage's terms (teacher run only when ``training``)."""
        if y_pred is None:
            y_pred = self(x, training=training)
        batch = ops.shape(y_pred["logits"])[0]
        weights = None if sample_weight is None else ops.reshape(
            ops.cast(sample_weight, "float32"), (-1,))

        def reduce(per_sample: Any) -> Any:  # Keras' "sum_over_batch_size" reduction
            if weights is not None:
                per_sample = per_sample * weights
            # 0, not NaN, for an empty batch: a replica's share of a last partial batch can be
            # empty under tf.distribute, and a NaN would reach every worker's weights.
            return ops.sum(per_sample) / ops.maximum(ops.cast(batch, per_sample.dtype), 1.0)

        values = {"loss_ce": reduce(cross_entropy(
            y, y_pred["logits"], self._class_weights if training else None,
            self._logit_adjustment if training else None))}
        if training and (self.teacher is not None or self.stored_targets is not None):
            if self.stored_targets is not None:
                teacher_out = {k: x[target_key(k)] for k in self.stored_targets}
            else:
                teacher_out = self.teacher(self.teacher_view(x), training=False)
            teacher_out = {k: ops.stop_gradient(v) for k, v in teacher_out.items()}
            if self._teacher_offsets is not None:
                teacher_out = {k: v + self._teacher_offsets for k, v in teacher_out.items()}
            values["loss_kd"] = reduce(self.kd_loss.per_sample(teacher_out, y_pred, y))
            if "loss_exits" in self.term_weights:
                values["loss_exits"] = reduce(self.exit_loss.per_sample(teacher_out, y_pred,
                                                                        y))
        if training:
            values["total"] = sum(self.term_weights[k] * values[k] for k in self.term_weights)
            loss = values["total"]
        else:
            loss = values["loss_ce"]
        if self.has_regularization:
            values["loss_reg"] = ops.sum(ops.stack(
                [ops.cast(v, "float32") for v in self.student.losses]))
            loss = loss + values["loss_reg"]
        for key, value in values.items():
            self.term_trackers[key].update_state(value, sample_weight=batch)
        self.loss_tracker.update_state(loss, sample_weight=batch)
        self._reported = tuple(values)  # read by compute_metrics at trace time
        # Under tf.distribute gradients are summed over replicas, so the per-replica loss is
        # divided by the replica count -- what keras.losses.Loss.__call__ does for Keras' own
        # losses (and so for Distiller's); kdskin's terms are plain functions, so it is done here.
        # train_step multiplies it back for the "loss" metric. Tested: a 2-replica step equals
        # the single-device step on the same global batch.
        replicas = _num_replicas()
        return loss / replicas if replicas > 1 else loss

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
                        ) -> dict[str, Any]:
        logits = y_pred["logits"]
        self.accuracy_tracker.update_state(sparse_labels(y, int(logits.shape[-1])), logits,
                                           sample_weight=sample_weight)
        results = {"loss": self.loss_tracker.result()}
        results.update({k: self.term_trackers[k].result() for k in self.term_trackers
                        if k in self._reported})
        results["accuracy"] = self.accuracy_tracker.result()
        return results

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError("KdskinDistiller is a training harness and is not saved; "
                                  "save distiller.student instead")


# --------------------------------------------------------------------------- helpers


def make_stage_model(stage: str, teacher: keras.Model | None, student: keras.Model, cfg: Config,
                     class_weight: Mapping[int, float] | None = None,
                     learning_rate: float | None = None,
                     logit_adjustment: Sequence[float] | np.ndarray | None = None,
                     teacher_offsets: Sequence[float] | np.ndarray | None = None,
                     stored_targets: Sequence[str] | None = None) -> KdskinDistiller:
    """A compiled :class:`KdskinDistiller` for ``stage`` with weights from ``cfg.distill``.

    Refuses (``ModelError``) a teacher that has not been trained (see
    :func:`kdskin.models.contract.is_trained`); use :func:`check_teacher_trained` too, to check
    that it beats the majority class. Optimizer: Adam(``learning_rate`` or
    ``cfg.student.learning_rate``). Build it inside ``strategy.scope()`` when distributing.
    """
    if stage not in STAGE_TERMS:
        raise ConfigError(f"unknown distillation stage {stage!r}; stages are {', '.join(STAGES)}")
    if stage != "baseline" and teacher is not None and not is_trained(teacher):
        raise ModelError(_UNTRAINED)
    d = cfg.distill
    distiller = KdskinDistiller(teacher, student, stage, alpha=d.alpha, beta=d.beta,
                                gamma=d.gamma, temperature=d.temperature, exit_map=d.exit_map,
                                class_weight=class_weight, logit_adjustment=logit_adjustment,
                                teacher_offsets=teacher_offsets, kd_loss=d.kd_loss,
                                kd_params=d.kd_params, stored_targets=stored_targets)
    lr = cfg.student.learning_rate if learning_rate is None else learning_rate
    distiller.compile(optimizer=keras.optimizers.Adam(lr))
    return distiller


#: Images per batch of the gate's arrays (:func:`check_teacher_trained`).
GATE_BATCH = 64

_UNTRAINED = ("the teacher has no trained weights; train the teacher first (or load a trained "
              "teacher .keras file) before distilling from it")


def _iter_batches(data: Any) -> Iterable[tuple[Any, np.ndarray]]:
    if isinstance(data, tf.data.Dataset):
        for batch in data:
            x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
            yield x, np.asarray(y)
        return
    if isinstance(data, (tuple, list)) and len(data) >= 2:
        x, y = data[0], np.asarray(data[1])
        for start in range(0, len(y), GATE_BATCH):
            end = start + GATE_BATCH
            yield (x[start:end] if not isinstance(x, Mapping)
                   else {k: v[start:end] for k, v in x.items()}), y[start:end]
        return
    raise ModelError("check_teacher_trained needs a tf.data.Dataset of (image, label) batches "
                     "or an (images, labels) pair of arrays")


def check_teacher_trained(teacher: keras.Model, data: Any) -> float:
    """Refuse to distil from an untrained teacher; return its balanced accuracy on ``data``.

    ``data``: a ``tf.data.Dataset`` of ``(image, label)`` batches or ``(images, labels)`` arrays
    (labels ``(N,)`` indices or one-hot); pass the validation split (a decision, not a report).
    Raises :class:`ModelError` (one line) if the teacher was never trained
    (:func:`kdskin.models.contract.is_trained`) or if its balanced accuracy on ``"logits"`` is
    not above that of always predicting one class (``1 / classes present``). Balanced accuracy,
    not plain accuracy: a teacher trained on class-balanced batches trades plain accuracy for
    recall of the rare classes, and can sit below the majority share while being far better
    than it on every other measure.
    """
    if teacher is None or not is_trained(teacher):
        raise ModelError(_UNTRAINED)
    # Traced once, GATE_BATCH images a call: eager calls on large batches leave the process
    # gigabytes larger (docs/FINDINGS.md, "Peak memory by stage").
    forward = tf.function(lambda x: teacher(x, training=False), reduce_retracing=True)
    preds, labels_seen = [], []
    for x, y in _iter_batches(data):
        out = forward(tf.nest.map_structure(tf.convert_to_tensor, x))
        logits = out["logits"] if isinstance(out, Mapping) else out
        y = y.argmax(-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1)
        preds.append(np.asarray(ops.convert_to_numpy(ops.argmax(logits, axis=-1))))
        labels_seen.append(y.astype("int64"))
    if not labels_seen:
        raise ModelError("check_teacher_trained got no examples; pass the validation split")
    labels, pred = np.concatenate(labels_seen), np.concatenate(preds)
    present = np.unique(labels)
    balanced = float(np.mean([(pred[labels == c] == c).mean() for c in present]))
    chance = 1.0 / len(present)
    if balanced <= chance + 1e-9:
        accuracy = float((pred == labels).mean())
        raise ModelError(f"the teacher's balanced accuracy {balanced:.3f} (accuracy "
                         f"{accuracy:.3f}) is not better than always predicting one class "
                         f"({chance:.3f}); train it longer or check the data before distilling")
    return balanced
