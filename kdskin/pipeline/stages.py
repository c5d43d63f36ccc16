"""Train, save, evaluate and record one model of a run (baseline CNN, teacher, student stage).

Every function takes the run's :class:`~kdskin.rundir.RunDir`; each trained model is saved
as ``models/NAME.keras`` and described by a :class:`~kdskin.rundir.ModelRecord`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from kdskin.config import Config
from kdskin.console import log
from kdskin.pipeline.data import RunData, datasets
from kdskin.rundir import ModelRecord, RunDir, student_name


def _scorecam_callback(cfg: Config, data: RunData, run: RunDir, name: str) -> list:
    if not (cfg.explain.enabled and cfg.explain.tensorboard):
        return []
    if cfg.train.distribution == "multi_worker":  # its model calls would differ per worker
        log(f"{name}: no Score-CAM maps in TensorBoard under multi_worker (explanations are "
            f"still written at the end)")
        return []
    from kdskin.data.select import pick_images_per_class
    from kdskin.explain.callback import ScoreCamCallback

    idx = pick_images_per_class(data.val.labels, per_class=1, seed=cfg.explain.seed)
    idx = idx[: cfg.explain.tensorboard_images]
    return [ScoreCamCallback(data.val.images[idx], data.val.labels[idx],
                             run.scorecam_logs(name), every=cfg.explain.tensorboard_every,
                             max_n=min(cfg.explain.scorecam_max_n, 8))]


def evaluate_model(model: Any, data: RunData) -> tuple[dict[str, Any], dict[str, Any],
                                                      np.ndarray, np.ndarray]:
    """``(test metrics, val metrics, test probs (N, 7), val probs (N, 7))`` of a Keras model."""
    from kdskin.evaluate import KerasClassifier, evaluate_arrays

    clf = KerasClassifier(model)
    test, test_probs = evaluate_arrays(clf, data.test.images, data.test.labels)
    val, val_probs = evaluate_arrays(clf, data.val.images, data.val.labels)
    return test, val, test_probs, val_probs


def record(run: RunDir, name: str, model: Any, history: Any, seconds: float,
           kind: str, **extra: Any) -> ModelRecord:
    """The :class:`ModelRecord` of a saved model (no metrics yet); plots its history."""
    from kdskin.models.contract import count_params, input_size
    from kdskin.plots import plot_history

    path = run.model(name)
    plot_history(run.history_csv(name), run.plot(name, "history"), name)
    return ModelRecord(
        name=name, kind=kind, params=count_params(model),
        file=str(path.relative_to(run.root)), size_bytes=path.stat().st_size,
        train_seconds=round(seconds, 1),
        epochs=len(history.history.get("loss", [])) if history else None,
        train_step=getattr(history, "step_time", None) or {},
        input_size=input_size(model), **extra)


def save_model(model: Any, run: RunDir, name: str) -> None:
    from kdskin.io import atomic_write

    atomic_write(run.model(name), lambda tmp: model.save(tmp))


def _prepare_fit(cfg: Config, run: RunDir, name: str) -> None:
    """Before ``fit``: every worker of a multi-worker run must resume ``name`` from the same
    epoch (each restores its own ``BackupAndRestore`` state; the chief's is in the run)."""
    from kdskin.train import check_workers_agree, resume_epoch

    check_workers_agree(f"the epoch {name} resumes from", resume_epoch(run, name) or 0)


def _local_copy(model: Any, run: RunDir, name: str, strategy: Any) -> Any:
    """The saved model reloaded outside the strategy when training was distributed: evaluation,
    export and the next stage's teacher then run on this process alone (no collective, the
    same outputs on every worker). Else ``model`` itself."""
    from kdskin.models.contract import load_keras, mark_trained
    from kdskin.train import is_distributed

    if not is_distributed(strategy):
        return model
    return mark_trained(load_keras(run.model(name)))


def _step_time(callbacks: list, batch_size: int) -> dict[str, Any] | None:
    from kdskin.train import StepTimer

    timer = next((c for c in callbacks if isinstance(c, StepTimer)), None)
    return timer.summary(batch_size) if timer is not None else None


def _monitor(cfg: Config, model: Any) -> str:
    """``cfg.train.monitor`` as a key of this model's logs (Keras prefixes the accuracy of a
    multi-output model with the output name: ``val_logits_accuracy``)."""
    from kdskin.train import accuracy_key

    return f"val_{accuracy_key(model)}" if cfg.train.monitor == "val_accuracy" \
        else cfg.train.monitor


def train_classifier(cfg: Config, data: RunData, run: RunDir, name: str,
                     build: Callable[[], Any], epochs: int, lr: float,
                     exit_weight: float = 0.3, shift: bool = True) -> tuple[Any, Any, float]:
    """Train a plain cross-entropy model (baseline CNN, teacher); save it. ``shift=False``:
    without ``augment.shift`` (:func:`kdskin.distill.stages.teacher_trains_shifted`).

    Returns ``(model, history, seconds)``.
    """
    import keras

    from kdskin.train import (
        compile_classifier,
        fit_model,
        global_batch_size,
        make_callbacks,
        strategy_scope,
    )

    keras.utils.set_random_seed(cfg.train.seed)
    strategy = strategy_scope(cfg.train.distribution)
    with strategy.scope():
        model = build()
        compile_classifier(model, lr, class_weight=data.class_weight, exit_weight=exit_weight,
                           logit_adjustment=data.logit_adjustment)
    names = list(model.output_names)
    batch = global_batch_size(cfg, strategy)
    train_ds, val_ds, steps = datasets(cfg, data, batch,
                                       targets=names if len(names) > 1 else None, shift=shift,
                                       epochs=epochs, start_epoch=_start_epoch(run, name))
    callbacks = make_callbacks(run, name, cfg, monitor=_monitor(cfg, model),
                               extra=_scorecam_callback(cfg, data, run, name),
                               validation=(data.val.images, data.val.labels), epochs=epochs,
                               learning_rate=lr)
    balance = ("class-weighted CE" if data.class_weight else
               "logit-adjusted CE" if data.logit_adjustment is not None else "CE") + (
        " on class-balanced resampled batches" if data.oversample else "")
    log(f"training {name}: {model.count_params():,} parameters, up to {epochs} epochs, "
        f"loss = {balance}" + (" on every output" if len(names) > 1 else "")
        + ("" if shift or not cfg.augment.shift.enabled else
           ", without the shift augmentation (distill.teacher_view: unshifted)"))
    _prepare_fit(cfg, run, name)
    t0 = time.time()
    history = fit_model(model, train_ds, val_ds, epochs, callbacks, verbose=cfg.train.verbose,
                        steps_per_epoch=steps)
    seconds = time.time() - t0
    history.step_time = _step_time(callbacks, batch)
    save_model(model, run, name)
    return _local_copy(model, run, name, strategy), history, seconds


def _start_epoch(run: RunDir, name: str) -> int:
    """The epoch a fit of ``name`` starts from (its ``BackupAndRestore`` state, else 0)."""
    from kdskin.train import resume_epoch

    return resume_epoch(run, name) or 0


def fit_teacher_offsets(cfg: Config, teacher: Any, teacher_data: RunData,
                        train_labels: np.ndarray) -> dict[str, Any] | None:
    """``distill.teacher_offset``: None for ``none``; for ``balanced`` the teacher's prior offset
    ``-tau * log(training prior)`` with ``tau`` fitted on the validation split (at the teacher's
    input size) for its balanced accuracy
    (:func:`kdskin.trust.operating_point.fit_prior_offset`: ``tau``, ``offsets`` (7,), balanced
    accuracy before and after). ``train_labels`` ``(N,)``: the training split's labels."""
    if cfg.distill.teacher_offset == "none":
        return None
    from kdskin.data.pipeline import logit_adjustment
    from kdskin.evaluate import KerasClassifier
    from kdskin.trust.calibration import probs_to_logits
    from kdskin.trust.operating_point import fit_prior_offset

    probs = KerasClassifier(teacher).predict(teacher_data.val.images)
    fit = fit_prior_offset(teacher_data.val.labels, probs_to_logits(probs),
                           logit_adjustment(train_labels, 1.0))
    log(f"teacher targets: prior offset tau {fit['tau']:+.2f} fitted on validation (teacher's "
        f"balanced accuracy {fit['balanced_accuracy_before']:.4f} -> "
        f"{fit['balanced_accuracy_after']:.4f}); offsets "
        + ", ".join(f"{v:+.2f}" for v in fit["offsets"]))
    return fit


def train_student_stage(cfg: Config, data: RunData, run: RunDir, stage: str,
                        teacher: Any, teacher_data: RunData | None = None,
                        teacher_offsets: Any = None) -> tuple[Any, Any, float, str]:
    """Train the student of one distillation ``stage``; save ``models/student_STAGE.keras``.

    ``teacher_data``: the splits at the teacher's input size when it is larger than the
    student's; the KD stages then train on its (augmented) batches, which the teacher sees as
    they are and the distiller resizes for the student; validation stays at the student's size.
    ``teacher_offsets``: ``(7,)`` added to the teacher's outputs (:func:`fit_teacher_offsets`).
    With stored targets (``data.train_targets``, a teacher directory's) ``teacher`` is None and
    no teacher runs: the batches carry its targets for the views they show.
    Returns ``(student, history, seconds, fusion)``.
    """
    import keras

    from kdskin.distill.distiller import make_stage_model
    from kdskin.distill.stages import stage_student_fusion
    from kdskin.models import build_student
    from kdskin.train import fit_model, global_batch_size, make_callbacks, strategy_scope

    name = student_name(stage)
    fusion = stage_student_fusion(stage, cfg.student.fusion)
    keras.utils.set_random_seed(cfg.train.seed)
    strategy = strategy_scope(cfg.train.distribution)
    distilled = stage != "baseline"
    stored = distilled and bool(data.train_targets)
    with strategy.scope():
        student = build_student(cfg.student, cfg.data.image_size, fusion=fusion,
                                colour_constancy=cfg.data.colour_spec(),
                                border_fill=cfg.data.border_fill)
        distiller = make_stage_model(stage, teacher if distilled and not stored else None,
                                     student, cfg, class_weight=data.class_weight,
                                     logit_adjustment=data.logit_adjustment,
                                     teacher_offsets=teacher_offsets,
                                     stored_targets=list(data.train_targets) if stored else None)
    batch = global_batch_size(cfg, strategy)
    train_ds, val_ds, steps = datasets(
        cfg, data, batch, train_from=teacher_data if distilled and not stored else None,
        unshifted_view=distilled and cfg.distill.teacher_view == "unshifted",
        epochs=cfg.student.epochs, start_epoch=_start_epoch(run, name), stored=stored)
    callbacks = make_callbacks(run, name, cfg, monitor=_monitor(cfg, distiller),
                               extra=_scorecam_callback(cfg, data, run, name),
                               validation=(data.val.images, data.val.labels),
                               epochs=cfg.student.epochs, learning_rate=cfg.student.learning_rate)
    log(f"training {name} (stage {stage}, fusion {fusion}): {student.count_params():,} "
        f"parameters, up to {cfg.student.epochs} epochs")
    _prepare_fit(cfg, run, name)
    t0 = time.time()
    history = fit_model(distiller, train_ds, val_ds, cfg.student.epochs, callbacks,
                        verbose=cfg.train.verbose, steps_per_epoch=steps)
    seconds = time.time() - t0
    history.step_time = _step_time(callbacks, batch)
    save_model(student, run, name)
    return _local_copy(student, run, name, strategy), history, seconds, fusion
