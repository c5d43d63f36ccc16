"""The one place kdskin touches private APIs of Keras and TensorFlow Lite, each checked first.

Every private name kdskin relies on is listed in :data:`PRIVATE_APIS` with a check that says
whether the installed version still has it (``tests/test_compat.py`` runs every check, so an
upgrade that removes one fails the tests). Nothing here fails silently: a missing API either

- returns a one-line *reason* that the caller records (e.g. in ``export.json``) and then takes
  the documented fallback, or
- raises :class:`CompatError` (a :class:`~kdskin.errors.KdskinError`, one line saying what is
  missing and what to do) where there is no honest fallback.

Private APIs used, and what happens without them:

- TFLite converter flags ``_experimental_disable_per_channel`` (``per_channel=False``: raises),
  ``_experimental_disable_per_channel_quantization_for_dense_layers`` (dynamic-range file:
  recorded, the file may then need a newer runtime) and ``_experimental_calibrate_only`` (int8
  float head: recorded, falls back to the all-integer file). A flag is only assigned after
  ``hasattr`` on the converter: assigning a renamed one would silently create an unused
  attribute.
- ``tensorflow.lite.python.convert.mlir_quantize`` (int8 float head: recorded, same fallback).
- Keras functional graph nodes (``Model._nodes_by_depth``, nodes' ``operation``,
  ``input_tensors``, ``output_tensors``) for the input-centring rewrite (recorded, the export
  goes on without centring).
- ``KerasTensor._keras_history`` (:func:`producing_layer`: which layer made an output, e.g. to
  tell a softmax output from logits; raises).
- TensorFlow's eager ``Context._initialized`` (:func:`tf_context_initialized`: has an op run
  before the multi-worker strategy is created; raises).
- Keras' ``Trainer._symbolic_build`` (:func:`build_before_fit`: every variable a first training
  step would create, made before ``fit`` so its train function is traced once, not twice;
  without it, recorded in the log, and the first epoch is slower).
- Keras' ``BackupAndRestore._save_model`` / ``_load_model`` / ``_training_metadata_path`` and
  ``Trainer._initial_epoch`` (:func:`state_backup`: the interrupted fit's state written as one
  ``.npz`` of the variables instead of Keras' per-layer ``.weights.h5``; without them, Keras'
  own ``BackupAndRestore``, and each epoch's save is slower).
- Keras' ``TensorFlowTrainer._maybe_symbolic_build`` / ``_symbolic_build`` and the TensorFlow
  trainer's ``reduce_per_replica`` / ``_collective_all_reduce_multi_worker``
  (:func:`fix_keras_multi_worker`: replaced under multi_worker, where Keras 3.15's fail,
  keras-team/keras#20585; raises).

Former private uses replaced by public APIs: ``keras.src.utils.io_utils.print_msg`` (now
:func:`print_msg`, on ``keras.config.is_interactive_logging_enabled``), Keras' ``_loss_tracker``
(the distiller keeps its own ``loss`` tracker) and ``Interpreter._get_ops_details`` (the graph is
read from the flatbuffer schema, :mod:`kdskin.export.graph`).

TensorFlow and Keras are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from kdskin.errors import KdskinError

#: Private TFLite converter flags kdskin sets (only through :func:`set_converter_flag`).
CONVERTER_FLAGS: tuple[str, ...] = (
    "_experimental_disable_per_channel",
    "_experimental_disable_per_channel_quantization_for_dense_layers",
    "_experimental_calibrate_only",
)
#: Keyword arguments of ``mlir_quantize`` kdskin passes.
MLIR_QUANTIZE_ARGS: tuple[str, ...] = ("disable_per_channel", "input_data_type",
                                       "output_data_type", "denylisted_nodes")
#: Attributes of a Keras graph node that :func:`functional_nodes` callers read.
NODE_ATTRIBUTES: tuple[str, ...] = ("operation", "input_tensors", "output_tensors")


class CompatError(KdskinError):
    """A private API of an installed library that kdskin needs is missing or has changed."""


def _version(package: str) -> str:
    for name in (package, f"{package}-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


# --------------------------------------------------------------------------- Keras


def print_msg(message: str) -> None:
    """Print ``message`` on stdout where Keras prints its own progress (public API only).

    Replaces ``keras.src.utils.io_utils.print_msg``: prints when Keras' interactive logging is
    on (the default), and does nothing otherwise (callers log the message too).
    """
    import keras

    enabled = getattr(getattr(keras, "config", None), "is_interactive_logging_enabled", None)
    if enabled is None or enabled():
        sys.stdout.write(message + "\n")
        sys.stdout.flush()


def functional_nodes(model: Any) -> list[Any]:
    """The nodes of ``model``'s own functional graph (not other graphs sharing its layers).

    Each node has ``operation`` (the layer), ``input_tensors`` and ``output_tensors``. Reads the
    private ``Model._nodes_by_depth``; raises :class:`CompatError` (one line) if the model has
    none (a Sequential or subclassed model, or a Keras version without it) or a node lacks one
    of :data:`NODE_ATTRIBUTES`. Callers that can go on without the graph record the message.
    """
    name = getattr(model, "name", type(model).__name__)
    by_depth = getattr(model, "_nodes_by_depth", None)
    if not isinstance(by_depth, dict):
        raise CompatError(f"model '{name}': cannot read its layer graph ({type(model).__name__} "
                          f"has no _nodes_by_depth in Keras {_version('keras')}); build it as a "
                          f"functional keras.Model, or set export.centre_input: false")
    nodes = [node for depth in sorted(by_depth) for node in by_depth[depth]]
    for node in nodes:
        missing = [a for a in NODE_ATTRIBUTES if not hasattr(node, a)]
        if missing:
            raise CompatError(f"model '{name}': Keras {_version('keras')} graph nodes have no "
                              f"{', '.join(missing)}; set export.centre_input: false")
    return nodes


def producing_layer(tensor: Any) -> Any:
    """The layer whose call produced the symbolic ``tensor`` (an output of a functional model).

    Reads the private ``KerasTensor._keras_history.operation``; raises :class:`CompatError`
    (one line) when it is missing, so a caller cannot mistake "unknown" for "not a softmax".
    """
    layer = getattr(getattr(tensor, "_keras_history", None), "operation", None)
    if layer is None:
        raise CompatError(f"cannot tell which layer produced {getattr(tensor, 'name', tensor)!s} "
                          f"(no KerasTensor._keras_history in Keras {_version('keras')}); name "
                          f"the model's output 'logits' or 'probs'")
    return layer


# --------------------------------------------------------------------------- TFLite converter


def set_converter_flag(converter: Any, flag: str, value: Any) -> str | None:
    """Set the private converter ``flag`` to ``value`` if the converter has it.

    Returns None when set, else the reason it was not (one line, for the caller to record or
    raise): the flag is checked with ``hasattr`` first, because assigning a renamed flag would
    silently create an attribute that the converter never reads.
    """
    if flag not in CONVERTER_FLAGS:
        raise ValueError(f"{flag!r} is not a converter flag kdskin knows; add it to "
                         f"CONVERTER_FLAGS with a test")
    if not hasattr(converter, flag):
        return (f"{type(converter).__name__} has no {flag} in TensorFlow "
                f"{_version('tensorflow')}")
    setattr(converter, flag, value)
    return None


def require_converter_flag(converter: Any, flag: str, value: Any, asked: str) -> None:
    """:func:`set_converter_flag`, raising :class:`CompatError` naming ``asked`` if missing."""
    reason = set_converter_flag(converter, flag, value)
    if reason is not None:
        raise CompatError(f"{asked} needs the TFLite converter flag {flag}, but {reason}; "
                          f"install TensorFlow 2.21 or drop {asked}")


def mlir_quantize() -> tuple[Callable[..., bytes] | None, str | None]:
    """``(tensorflow.lite.python.convert.mlir_quantize, None)`` or ``(None, reason)``.

    The function quantizes a calibrated model with a node denylist (what
    ``tf.lite.experimental.QuantizationDebugger`` uses). Checked: importable, callable, and
    accepting the keyword arguments in :data:`MLIR_QUANTIZE_ARGS`.
    """
    where = f"TensorFlow {_version('tensorflow')}"
    try:
        from tensorflow.lite.python import convert as tfl_convert
    except ImportError as exc:
        return None, f"tensorflow.lite.python.convert is not importable in {where} ({exc})"
    fn = getattr(tfl_convert, "mlir_quantize", None)
    if not callable(fn):
        return None, f"tensorflow.lite.python.convert has no mlir_quantize in {where}"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn, None
    missing = [a for a in MLIR_QUANTIZE_ARGS if a not in params]
    if missing and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None, f"mlir_quantize in {where} takes no {', '.join(missing)}"
    return fn, None


def tf_context_initialized() -> bool:
    """Whether TensorFlow's eager context has started in this process (an op ran, a device was
    set up): ``MultiWorkerMirroredStrategy`` must be created before that. Private:
    ``tensorflow.python.eager.context.context()._initialized``; raises :class:`CompatError`
    when it is gone."""
    from tensorflow.python.eager import context

    ctx = context.context()
    if not hasattr(ctx, "_initialized"):
        raise CompatError(f"TensorFlow {_version('tensorflow')}'s eager context has no "
                          f"_initialized flag; kdskin cannot check that the multi-worker strategy "
                          f"is created first: install TensorFlow 2.21")
    return bool(ctx._initialized)


def fix_keras_multi_worker() -> None:
    """Let Keras' ``fit``/``evaluate`` run under ``MultiWorkerMirroredStrategy`` with several
    workers; two faults of Keras 3.15's TensorFlow trainer (keras-team/keras#20585, open):

    * ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from the first batch, which
      is a ``PerReplica`` in multi-worker mode, by ``strategy.reduce("MEAN", batch)``: "Attempt
      to convert a value (PerReplica ...) to a Tensor". Replaced by a build from this worker's
      own share of the batch (the shapes are all the build needs).
    * ``reduce_per_replica(logs, strategy, "auto")`` reduces every scalar log of a step with
      ``strategy.reduce("MEAN", v, axis=0)``: "Invalid reduction dimension 0 for input with 0
      dimensions". Replaced, for ``auto`` in multi-worker mode, by the mean over the replicas
      (``axis=None``); the logs are Keras metrics, already summed over every replica.

    Applied once per process; raises :class:`CompatError` when either function changed.
    """
    import tensorflow as tf
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    cls = tf_trainer.TensorFlowTrainer
    original = getattr(cls, "_maybe_symbolic_build", None)
    if getattr(original, "_kdskin_fixed", False):
        return
    reason = _check_symbolic_build() or _check_reduce_per_replica()
    if reason is not None:
        raise CompatError(f"{reason}; kdskin cannot train under multi_worker with this Keras: "
                          f"install Keras 3.15")

    def local(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return value.values[0]
        return value

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is None or iterator is None:
            return original(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tree.map_structure(local, next(it))
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    reduce_original = tf_trainer.reduce_per_replica
    multi_worker = tf_trainer._collective_all_reduce_multi_worker

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction != "auto" or not multi_worker(strategy):
            return reduce_original(values, strategy, reduction)

        def mean(v: Any) -> Any:
            if isinstance(v, tf.distribute.DistributedValues):
                return strategy.reduce("MEAN", v, axis=None)
            return v

        return tree.map_structure(mean, values)

    maybe_symbolic_build._kdskin_fixed = True  # type: ignore[attr-defined]
    cls._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica


def build_before_fit(model: Any, element_spec: Any) -> str | None:
    """Create every variable ``model.fit`` would create in its first step (the model's, the
    compiled metrics' and loss's, the optimizer's slots) from ``element_spec`` (a training
    ``tf.data.Dataset``'s: ``(images (None, S, S, 3), labels)`` specs; shapes only, no data is
    read). Returns None, or why it could not (the caller logs it; ``fit`` then builds as before).

    Why: with no distribution strategy, Keras 3.15's TensorFlow trainer defers that build to
    the trace of the train function, and a ``tf.function`` whose first call creates variables is
    traced a second time. For the 4.2 M-parameter student that second trace costs about 15 s of
    the first epoch on 2 cores, once per model trained. Under a strategy Keras builds first
    itself (``_maybe_symbolic_build``), and nothing is done here.
    """
    if getattr(model, "_distribute_strategy", None) is not None:
        return None
    reason = _check_build_method()
    if reason is not None:
        return reason
    model._symbolic_build(data_batch=element_spec)
    return None


#: Private members of ``keras.callbacks.BackupAndRestore`` that :func:`state_backup` uses.
BACKUP_MEMBERS: tuple[str, ...] = ("_save_model", "_load_model", "_training_metadata_path",
                                   "_current_epoch", "_last_batch_seen")


def state_backup(backup_dir: str) -> Any:
    """A ``keras.callbacks.BackupAndRestore`` for ``backup_dir`` (saves after every epoch,
    restores at the start of ``fit``, deletes its folder when ``fit`` completes) whose state is
    one ``latest.state.npz``: every variable of the model and of its optimizer, in order.

    Why: Keras' own ``.weights.h5`` is written by a walk over every layer and optimizer slot in
    Python: 1.3 s an epoch for the quickstart's student distiller on 2 busy cores against 0.25 s
    for the ``.npz`` (``numpy.savez`` of the same values), once per epoch of every model.
    The file is written to a temporary name and renamed, then ``training_metadata.json`` (the
    epoch to resume from, as Keras writes it); a state that does not fit the model (another
    number of variables, or a shape that differs) is refused with a one-line error. Without
    the private members it overrides (:data:`BACKUP_MEMBERS`), Keras' own callback.
    """
    import keras

    if _check_backup() is not None:
        return keras.callbacks.BackupAndRestore(backup_dir=backup_dir)
    return _state_backup_class()(backup_dir)


@functools.cache
def _state_backup_class() -> type:
    """The :func:`state_backup` class, defined once per process."""
    import json
    import os

    import keras
    import numpy as np

    from kdskin.io import atomic_write, atomic_write_text

    class StateBackup(keras.callbacks.BackupAndRestore):
        """``BackupAndRestore`` with the training state in one ``.npz`` (see
        :func:`state_backup`)."""

        def __init__(self, backup_dir: str) -> None:
            super().__init__(backup_dir=backup_dir)
            self._state_path = os.path.join(backup_dir, "latest.state.npz")

        def _state(self) -> list[Any]:
            optimizer = self.model.optimizer
            return [*self.model.variables,
                    *(optimizer.variables if optimizer is not None else [])]

        def _save_model(self) -> None:
            values = [np.asarray(v.numpy()) for v in self._state()]

            def write(tmp: Any) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, *values)

            atomic_write(self._state_path, write)
            atomic_write_text(self._training_metadata_path, json.dumps(
                {"epoch": self._current_epoch, "batch": self._last_batch_seen}))

        def _load_model(self) -> None:
            if not os.path.exists(self._state_path):
                # nothing saved yet, or a backup written by Keras' own callback (an older
                # kdskin, or this one without the private members): Keras reads it, so its
                # epoch is never resumed with fresh weights
                super()._load_model()
                return
            optimizer = self.model.optimizer
            if optimizer is not None and not optimizer.built:
                optimizer.build(self.model.trainable_variables)
            state = self._state()
            with np.load(self._state_path, allow_pickle=False) as saved:
                values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
            bad = [f"{v.path} {tuple(v.shape)} vs saved {value.shape}"
                   for v, value in zip(state, values, strict=False)
                   if tuple(v.shape) != value.shape]
            if len(values) != len(state) or bad:
                raise KdskinError(
                    f"{self._state_path}: the saved training state does not fit this model "
                    f"({len(values)} arrays for {len(state)} variables"
                    + (f"; {bad[0]}" if bad else "") + "): it was saved by another "
                    f"configuration; delete {self.backup_dir} to train this fit afresh")
            for variable, value in zip(state, values, strict=True):
                variable.assign(value)
            if os.path.exists(self._training_metadata_path):
                with open(self._training_metadata_path) as f:
                    self.model._initial_epoch = json.load(f)["epoch"]

    return StateBackup


# --------------------------------------------------------------------------- the registry


def _converter_probe() -> Any:
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    return tf.lite.TFLiteConverter.from_keras_model(model)


def _check_flag(flag: str) -> Callable[[], str | None]:
    def check() -> str | None:
        converter = _converter_probe()
        return None if hasattr(converter, flag) else (
            f"TFLiteConverter has no {flag} in TensorFlow {_version('tensorflow')}")
    return check


def _check_context() -> str | None:
    try:
        tf_context_initialized()
    except CompatError as exc:
        return str(exc)
    return None


def _check_symbolic_build() -> str | None:
    from keras.src.backend.tensorflow import trainer as tf_trainer

    method = getattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    if method is None or not hasattr(tf_trainer.TensorFlowTrainer, "_symbolic_build"):
        return (f"Keras {_version('keras')}'s TensorFlowTrainer has no _maybe_symbolic_build / "
                f"_symbolic_build")
    if getattr(method, "_kdskin_fixed", False):
        return None
    params = list(inspect.signature(method).parameters)
    source = inspect.getsource(method)
    if params[:3] != ["self", "iterator", "data_batch"] or "for _, _, it in iterator" not in source:
        return (f"Keras {_version('keras')}'s TensorFlowTrainer._maybe_symbolic_build changed "
                f"(arguments {params})")
    return None


def _check_build_method() -> str | None:
    from keras.src.trainers.trainer import Trainer

    method = getattr(Trainer, "_symbolic_build", None)
    if method is None:
        return f"Keras {_version('keras')}'s Trainer has no _symbolic_build"
    params = list(inspect.signature(method).parameters)
    if "data_batch" not in params:
        return f"Keras {_version('keras')}'s Trainer._symbolic_build takes {params}"
    return None


def _check_reduce_per_replica() -> str | None:
    from keras.src.backend.tensorflow import trainer as tf_trainer

    fn = getattr(tf_trainer, "reduce_per_replica", None)
    if fn is None or not callable(getattr(tf_trainer, "_collective_all_reduce_multi_worker",
                                          None)):
        return (f"Keras {_version('keras')}'s TensorFlow trainer has no reduce_per_replica / "
                f"_collective_all_reduce_multi_worker")
    params = list(inspect.signature(fn).parameters)
    if params != ["values", "strategy", "reduction"]:
        return f"Keras {_version('keras')}'s reduce_per_replica takes {params}"
    return None


def _check_backup() -> str | None:
    import keras

    cls = keras.callbacks.BackupAndRestore
    probe = cls(backup_dir="unused")  # writes nothing until an epoch ends
    missing = [m for m in BACKUP_MEMBERS if not hasattr(probe, m)]
    if missing:
        return f"Keras {_version('keras')}'s BackupAndRestore has no {', '.join(missing)}"
    if "_initial_epoch" not in inspect.getsource(cls._load_model):
        return (f"Keras {_version('keras')}'s BackupAndRestore no longer resumes through "
                f"Trainer._initial_epoch")
    return None


def _check_mlir_quantize() -> str | None:
    return mlir_quantize()[1]


def _check_history() -> str | None:
    import keras

    image = keras.Input((4,))
    dense = keras.layers.Dense(2)
    model = keras.Model(image, dense(image))
    try:
        return None if producing_layer(model.outputs[0]) is dense else (
            "KerasTensor._keras_history.operation is not the producing layer")
    except CompatError as exc:
        return str(exc)


def _check_nodes() -> str | None:
    import keras

    image = keras.Input((4,))
    model = keras.Model(image, keras.layers.Dense(2)(image))
    try:
        functional_nodes(model)
    except CompatError as exc:
        return str(exc)
    return None


#: Every private API kdskin uses: name -> a check returning None (present) or the reason.
PRIVATE_APIS: dict[str, Callable[[], str | None]] = {
    **{f"TFLiteConverter.{flag}": _check_flag(flag) for flag in CONVERTER_FLAGS},
    "tensorflow.lite.python.convert.mlir_quantize": _check_mlir_quantize,
    "keras.Model._nodes_by_depth": _check_nodes,
    "KerasTensor._keras_history": _check_history,
    "tensorflow eager Context._initialized": _check_context,
    "keras Trainer._symbolic_build": _check_build_method,
    "keras BackupAndRestore._save_model/_load_model": _check_backup,
    "keras TensorFlowTrainer._maybe_symbolic_build": _check_symbolic_build,
    "keras tensorflow trainer.reduce_per_replica": _check_reduce_per_replica,
}


def check_private_apis() -> dict[str, str | None]:
    """``{private API: None if present, else why not}`` for the installed versions."""
    return {name: check() for name, check in PRIVATE_APIS.items()}
