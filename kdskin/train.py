"""Training helpers shared by every kdskin stage: strategy, compile, callbacks, fit, trained flag.

* :func:`start_distribution` / :func:`strategy_scope` / :func:`global_batch_size` --
  ``tf.distribute`` from ``cfg.train.distribution`` (``none`` | ``mirrored`` |
  ``multi_worker``), one strategy per process, created before any other TensorFlow work;
  :func:`check_workers_agree` for decisions every worker must take alike.
* :func:`compile_classifier` -- plain cross-entropy training (baseline CNN, teacher) with class
  weights inside the loss: Keras' ``fit(class_weight=...)`` raises ``"class_weight is only
  supported for Models with a single output"`` for the multi-exit teacher (checked, Keras 3.15).
* :func:`make_callbacks` -- early stopping (which keeps the best epoch in memory), LR schedule,
  CSV and TensorBoard logs, and a ``BackupAndRestore`` so an interrupted run resumes.
Paths written (named by :class:`kdskin.rundir.RunDir`): the history CSV and TensorBoard logs and
the backup folder (deleted when ``fit`` completes). No best-epoch ``.keras`` is written during a
fit: a stage's model is saved once, after it (``models/NAME.keras``).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kdskin.cluster import WorkerRole
from kdskin.compat import build_before_fit, state_backup
from kdskin.config import DISTRIBUTIONS, Config
from kdskin.distill.losses import ClassWeightedCrossEntropy
from kdskin.errors import ConfigError
from kdskin.io import atomic_write_text, read_json
from kdskin.models.contract import mark_trained, output_names
from kdskin.rundir import RunDir

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- distribution


#: One strategy per process and distribution: MultiWorkerMirroredStrategy can be created once.
_STRATEGIES: dict[str, tf.distribute.Strategy] = {}
#: This process's place in a multi-worker cluster (set by :func:`start_distribution`).
_ROLE: list[WorkerRole] = []


def start_distribution(distribution: str, worker_timeout: int = 300) -> WorkerRole | None:
    """Create the run's strategy now, before any other TensorFlow work; call it first.

    ``multi_worker``: reads ``TF_CONFIG`` (:func:`kdskin.cluster.read_tf_config`), checks this
    worker's port, waits up to ``worker_timeout`` seconds for every other worker to come up
    (:func:`kdskin.cluster.wait_for_workers`), then creates ``MultiWorkerMirroredStrategy``
    (collectives without a timeout: the workers evaluate between stages, which can take long on
    a big split; a worker lost later is TensorFlow's coordination service's to report). Returns
    this worker's :class:`~kdskin.cluster.WorkerRole` (None for the other distributions).
    Raises :class:`~kdskin.cluster.ClusterError` (one line) when the cluster cannot start, and
    when TensorFlow already ran an op in this process (the strategy would then be ignored).
    """
    if distribution != "multi_worker":
        strategy_scope(distribution)
        return None
    if "multi_worker" in _STRATEGIES:
        return _ROLE[0]
    from kdskin.cluster import ClusterError, read_tf_config, wait_for_workers
    from kdskin.compat import fix_keras_multi_worker, tf_context_initialized

    role = read_tf_config()
    wait_for_workers(role, worker_timeout)
    if tf_context_initialized():
        raise ClusterError("train.distribution multi_worker: TensorFlow already ran an operation "
                           "in this process, so MultiWorkerMirroredStrategy cannot be created; "
                           "start the run in a fresh process (kdskin run creates it first)")
    _STRATEGIES["multi_worker"] = tf.distribute.MultiWorkerMirroredStrategy()
    fix_keras_multi_worker()  # keras-team/keras#20585
    _ROLE[:] = [role]
    logger.info("multi-worker strategy: %s", role.describe())
    return role


def strategy_scope(distribution: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``cfg.train.distribution``; use ``with s.scope():``.

    ``none`` -> the default (no-op) strategy; ``mirrored`` -> ``MirroredStrategy`` over the local
    GPUs (or the CPU devices, e.g. logical ones made with
    ``tf.config.set_logical_device_configuration``); ``multi_worker`` -> the strategy made by
    :func:`start_distribution` (called first). One strategy per process: later calls return
    the same object, so the teacher and every student stage share it. Build and compile the
    models inside ``strategy.scope()`` and batch the data with :func:`global_batch_size`.
    """
    if distribution == "none":
        return tf.distribute.get_strategy()
    if distribution == "mirrored":
        if distribution not in _STRATEGIES:
            _STRATEGIES[distribution] = tf.distribute.MirroredStrategy()
        return _STRATEGIES[distribution]
    if distribution == "multi_worker":
        if distribution not in _STRATEGIES:
            start_distribution(distribution)
        return _STRATEGIES[distribution]
    raise ConfigError(f"train.distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                      f"got {distribution!r}")


def is_distributed(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether ``strategy`` is a mirrored or multi-worker strategy (not the default one)."""
    return isinstance(strategy, tf.distribute.MirroredStrategy
                      | tf.distribute.MultiWorkerMirroredStrategy)


def check_workers_agree(what: str, value: int) -> None:
    """Raise :class:`~kdskin.cluster.ClusterError` unless every worker of a multi-worker run
    passes the same ``value`` (e.g. the epoch a resumed stage starts from); a no-op otherwise.

    Every worker must call it at the same point (it is a collective: a sum of ``[1, v, v^2]``
    over the replicas, all equal iff ``n * sum(v^2) == sum(v)^2``).
    """
    strategy = _STRATEGIES.get("multi_worker")
    if strategy is None or not _ROLE or _ROLE[0].num_workers < 2:
        return
    v = float(value)

    def replica_sum() -> tf.Tensor:  # every replica adds [1, v, v^2]
        return tf.distribute.get_replica_context().all_reduce(
            "SUM", tf.constant([1.0, v, v * v], tf.float64))

    summed = tf.function(lambda: strategy.run(replica_sum))()
    n, s1, s2 = (float(x) for x in strategy.experimental_local_results(summed)[0].numpy())
    if abs(n * s2 - s1 * s1) > 1e-6:
        from kdskin.cluster import ClusterError

        raise ClusterError(f"the workers disagree about {what} (this worker: {value}); a worker "
                           f"was stopped at another point than the chief: rerun without "
                           f"--resume into a new --out")


def mean_across_workers(values: Sequence[float]) -> list[float]:
    """``values`` averaged over the workers of a multi-worker run (a collective: every worker
    calls it at the same point); ``values`` unchanged otherwise. Used so that decisions taken
    from locally computed metrics (early stopping, the best epoch) are the same on every
    worker even where BatchNorm statistics differ between them."""
    strategy = _STRATEGIES.get("multi_worker")
    if strategy is None or not _ROLE or _ROLE[0].num_workers < 2:
        return [float(v) for v in values]
    local = [float(v) for v in values]

    def replica_mean() -> tf.Tensor:
        return tf.distribute.get_replica_context().all_reduce(
            "MEAN", tf.constant(local, tf.float64))

    summed = tf.function(lambda: strategy.run(replica_mean))()
    return [float(x) for x in strategy.experimental_local_results(summed)[0].numpy()]


def global_batch_size(cfg: Config, strategy: tf.distribute.Strategy) -> int:
    """``cfg.train.batch_size`` per replica times the number of replicas."""
    return int(cfg.train.batch_size) * int(strategy.num_replicas_in_sync)


# --------------------------------------------------------------------------- compile


def accuracy_key(model: keras.Model) -> str:
    """History key of the main accuracy: ``accuracy``, or ``logits_accuracy`` for a multi-output
    model compiled by :func:`compile_classifier` (Keras prefixes metric names with the output
    name when a model has several outputs). A distiller always reports ``accuracy``."""
    if hasattr(model, "student"):
        return "accuracy"
    return "logits_accuracy" if len(output_names(model)) > 1 else "accuracy"


def compile_classifier(model: keras.Model, lr: float,
                       class_weight: Mapping[int, float] | None = None,
                       exit_weight: float = 0.3,
                       logit_adjustment: Sequence[float] | None = None) -> keras.Model:
    """Compile a logits model for cross-entropy training on integer labels; returns ``model``.

    Every output is trained with (class-weighted, or logit-adjusted: ``logits +
    logit_adjustment``, shape ``(7,)``) cross-entropy from logits: ``"logits"`` with weight 1,
    every other output (the teacher's exit heads) with ``exit_weight``. Accuracy is tracked on
    ``"logits"`` (history key: :func:`accuracy_key`). Optimizer: Adam(``lr``).
    """
    names = output_names(model)
    loss = ClassWeightedCrossEntropy(class_weight, logit_adjustment=logit_adjustment)
    if len(names) <= 1:
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"])
        return model
    if "logits" not in names:
        raise ConfigError(f"model {model.name!r} has outputs {names} but no 'logits' output")
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss={name: loss for name in names},
        loss_weights={name: 1.0 if name == "logits" else float(exit_weight) for name in names},
        metrics={"logits": ["accuracy"]},
    )
    return model


def labels_for(model: keras.Model, y: Any) -> Any:
    """Targets for a model compiled by :func:`compile_classifier`: the same labels for every
    output (a dict ``{output: y}`` for a multi-output model). Works on arrays and inside
    ``Dataset.map``."""
    names = output_names(model)
    if len(names) <= 1 or hasattr(model, "student"):
        return y
    return {name: y for name in names}


# --------------------------------------------------------------------------- callbacks


def _run(run_dir: str | Path | RunDir) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))


class ValidationMetrics(keras.callbacks.Callback):
    """Add ``val_balanced_accuracy`` and ``val_macro_auc`` to the epoch logs.

    ``images`` ``(N, S, S, 3)`` 0..255 and ``labels`` ``(N,)`` of the validation split; the
    model's (or a distiller's student's) ``"logits"`` are scored once per epoch. Put it before
    the callbacks that read these keys (early stopping, LR plateau, CSV and TensorBoard logs).
    """

    KEYS = ("val_balanced_accuracy", "val_macro_auc")

    def __init__(self, images: Any, labels: Any, batch_size: int = 128) -> None:
        super().__init__()
        self.images = images
        self.labels = np.asarray(labels).astype(int).reshape(-1)
        self.batch_size = int(batch_size)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        from kdskin.metrics import balanced_accuracy, macro_auc, softmax

        model = getattr(self.model, "student", self.model)
        out = predict_logits(model, self.images, self.batch_size)
        p = softmax(np.asarray(out["logits"] if isinstance(out, Mapping) else out))
        if logs is not None:
            # the same values on every worker of a multi-worker run (the same decisions)
            logs["val_balanced_accuracy"], logs["val_macro_auc"] = mean_across_workers(
                [balanced_accuracy(self.labels, p), macro_auc(self.labels, p)])


def predict_logits(model: keras.Model, images: Any, batch_size: int = 128) -> Any:
    """``model``'s outputs on ``images`` (N, S, S, 3) 0..255, in order, on this process alone.

    A model built under a mirrored or multi-worker strategy is called batch by batch outside
    the strategy (its variables read locally), so no collective runs and every worker gets the
    same outputs in the same order; ``model.predict`` would shard the images over the workers.
    Otherwise ``model.predict`` (compiled once per model, reused every epoch), chunk by chunk
    (:func:`kdskin.memory.predict_in_chunks`).
    """
    if not is_distributed(getattr(model, "distribute_strategy", None)):
        from kdskin.memory import predict_in_chunks

        return predict_in_chunks(model, images, batch_size)
    x = np.asarray(images, np.float32)
    call = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    parts = [call(tf.constant(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    if isinstance(parts[0], Mapping):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    return np.concatenate([np.asarray(p) for p in parts])


class StepTimer(keras.callbacks.Callback):
    """Wall time per training step as ``fit`` runs it: the median interval between successive
    batch ends, after the first epoch (tracing) -- the ms/step Keras' progress bar shows, input
    pipeline and augmentation included. :meth:`summary` gives it for ``metrics.json``."""

    def __init__(self) -> None:
        super().__init__()
        self.times_ms: list[float] = []
        self.first_epoch: list[float] = []
        self._last: float | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        if self._last is not None and batch > 0:
            (self.times_ms if self._epoch > 0 else self.first_epoch).append(
                (now - self._last) * 1000.0)
        self._last = now

    def summary(self, batch_size: int) -> dict[str, Any]:
        """``{"ms_per_step", "steps", "batch", "how"}``; falls back to the first epoch's steps
        (minus its first, tracing step) when only one epoch ran."""
        times = self.times_ms or self.first_epoch
        return {"ms_per_step": float(statistics.median(times)) if times else None,
                "steps": len(times), "batch": int(batch_size),
                "how": "median wall time per step during fit, after the first epoch, input "
                       "pipeline included"}


def cosine_schedule(base_lr: float, epochs: int, min_lr: float = 0.0):
    """``epoch -> lr``: half a cosine from ``base_lr`` (epoch 0) towards ``min_lr`` (epoch E)."""
    def schedule(epoch: int, lr: float | None = None) -> float:
        progress = min(max(epoch, 0), epochs) / max(epochs, 1)
        return float(min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress)))
    return schedule


def make_callbacks(run_dir: str | Path | RunDir, name: str, cfg: Config, monitor: str | None = None,
                   extra: Iterable[keras.callbacks.Callback] = (),
                   validation: tuple[Any, Any] | None = None, epochs: int | None = None,
                   learning_rate: float | None = None) -> list[keras.callbacks.Callback]:
    """Callbacks for one training stage called ``name``.

    :class:`StepTimer`, ``ValidationMetrics`` (when ``validation=(images, labels)`` is given),
    ``EarlyStopping`` (restores the best weights; left out
    when ``cfg.train.early_stopping_patience`` is 0, so the last epoch is kept), the
    learning-rate schedule (``ReduceLROnPlateau``, or a cosine ``LearningRateScheduler`` from
    ``learning_rate`` over ``epochs`` when ``cfg.train.lr_schedule`` is ``cosine``),
    ``CSVLogger`` (appends when resuming) and ``TensorBoard``, a ``BackupAndRestore``
    (:func:`kdskin.compat.state_backup`: a rerun of the same ``fit`` resumes from the last
    finished epoch: weights, optimizer and epoch number; after the logs, so an epoch's log row is
    written before its state, and a resumed run's CSV log has each epoch once:
    :func:`drop_unfinished_epochs`), then ``extra``. ``monitor`` (default
    ``cfg.train.monitor``) must be a key of the validation logs; a name containing ``loss`` is
    minimised, any other maximised.
    ``TensorBoard`` is left out (with a warning) when the ``tensorboard`` package is missing.
    """
    run = _run(run_dir)
    backup = run.backup(name)
    run.logs.mkdir(parents=True, exist_ok=True)
    start = resume_epoch(run, name)
    resuming = start is not None
    if resuming:
        drop_unfinished_epochs(run.history_csv(name), start)
    t = cfg.train
    monitor = monitor or t.monitor
    if monitor in ValidationMetrics.KEYS and validation is None:
        raise ConfigError(f"train.monitor {monitor!r} needs the validation images: pass "
                          f"validation=(images, labels) to make_callbacks")
    # Explicit mode: Keras' "auto" only knows compile() metrics, not a distiller's own trackers.
    mode = "min" if "loss" in monitor else "max"
    callbacks: list[keras.callbacks.Callback] = [StepTimer()]
    if validation is not None:
        callbacks.append(ValidationMetrics(*validation))
    if t.early_stopping_patience > 0:  # 0: the whole schedule, the last epoch kept
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, patience=t.early_stopping_patience, mode=mode,
            restore_best_weights=True, verbose=1))
    if t.lr_schedule == "cosine":
        if epochs is None or learning_rate is None:
            raise ConfigError("train.lr_schedule 'cosine' needs the stage's epochs and "
                              "learning rate: pass epochs= and learning_rate= to make_callbacks")
        callbacks.append(keras.callbacks.LearningRateScheduler(
            cosine_schedule(learning_rate, epochs, t.min_learning_rate)))
    else:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=t.reduce_lr_factor, patience=t.reduce_lr_patience,
            mode=mode, min_lr=t.min_learning_rate, verbose=1))
    callbacks.append(keras.callbacks.CSVLogger(str(run.history_csv(name)), append=resuming))
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.tensorboard(name))))
    else:
        logger.warning("no TensorBoard logs for %s: the 'tensorboard' package is not installed "
                       "(pip install tensorboard); the CSV log is still written", name)
    # After the logs: an epoch's training state is saved only once its log row is written, so a
    # job killed in between reruns that epoch (its row dropped above) instead of losing the row.
    # Before ``extra``, which then see the restored weights when training begins.
    callbacks.append(state_backup(str(backup)))
    return [*callbacks, *extra]


def resume_epoch(run_dir: str | Path | RunDir, name: str) -> int | None:
    """The epoch an interrupted ``fit`` of ``name`` resumes from (its ``BackupAndRestore``
    state in ``run_dir``), or None when there is nothing to resume."""
    meta = _run(run_dir).backup(name) / "training_metadata.json"
    return int(read_json(meta).get("epoch", 0)) if meta.is_file() else None


def drop_unfinished_epochs(history_csv: Path, epoch: int) -> None:
    """Keep only the rows of ``history_csv`` (a ``CSVLogger`` file) for epochs before
    ``epoch``, where a resumed ``fit`` starts: a row written by a job killed before its
    ``BackupAndRestore`` state was saved would otherwise appear twice. Atomic; no file, no-op."""
    if not history_csv.is_file():
        return
    lines = history_csv.read_text().splitlines(keepends=True)
    if not lines:
        return
    header = lines[0].rstrip("\r\n").split(",")
    column = header.index("epoch") if "epoch" in header else 0
    kept = [line for line in lines[1:] if line.strip()
            and int(float(line.split(",")[column])) < epoch]
    if len(kept) != len(lines) - 1:
        atomic_write_text(history_csv, "".join([lines[0], *kept]))


def tensorboard_available() -> bool:
    """``tf.summary`` writes nothing without the ``tensorboard`` package (TF 2.21 raises
    ``TBNotInstalledError``), and ``tensorflow-cpu`` does not install it."""
    return importlib.util.find_spec("tensorboard") is not None


# --------------------------------------------------------------------------- fit


def fit_model(model: keras.Model, train_ds: Any, val_ds: Any, epochs: int,
              callbacks: Iterable[keras.callbacks.Callback] = (), verbose: int | str = 2,
              **fit_kwargs: Any) -> keras.callbacks.History:
    """``model.fit`` with validation, then :func:`mark_trained` on the model (and its student).

    ``train_ds``/``val_ds``: ``tf.data.Dataset`` of ``(image, label)`` batches (or anything
    ``fit`` accepts). Returns the ``History``; ``history.history`` has ``val_*`` keys.
    """
    # shuffle=False: the tf.data pipeline shuffles the training split itself (Keras would
    # otherwise warn that its own shuffle=True is ignored for a dataset).
    fit_kwargs.setdefault("shuffle", False)
    spec = getattr(train_ds, "element_spec", None)
    if spec is not None:  # variables first: the train function is then traced once, not twice
        reason = build_before_fit(model, spec)
        if reason is not None:
            logger.info("first epoch traces its train function twice: %s", reason)
    history = model.fit(train_ds, validation_data=val_ds, epochs=int(epochs),
                        callbacks=list(callbacks), verbose=verbose, **fit_kwargs)
    mark_trained(model)
    if hasattr(model, "student"):
        mark_trained(model.student)
    return history
