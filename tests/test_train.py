"""Training helpers: strategy, class-weighted compile, callbacks, resume, trained flag, mirrored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdskin.config import Config  # noqa: E402
from kdskin.distill import make_stage_model  # noqa: E402
from kdskin.errors import ConfigError, KdskinError  # noqa: E402
from kdskin.models.contract import is_trained, mark_trained  # noqa: E402
from kdskin.train import (  # noqa: E402
    accuracy_key,
    compile_classifier,
    drop_unfinished_epochs,
    fit_model,
    global_batch_size,
    labels_for,
    make_callbacks,
    strategy_scope,
    tensorboard_available,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_distill import batch, np_softmax, tiny_student, tiny_teacher  # noqa: E402

TESTS_DIR = Path(__file__).parent


def test_strategy_and_global_batch():
    cfg = Config()
    strategy = strategy_scope("none")
    assert strategy is tf.distribute.get_strategy()
    assert global_batch_size(cfg, strategy) == cfg.train.batch_size
    with pytest.raises(ConfigError, match="train.distribution"):
        strategy_scope("tpu")


@pytest.mark.slow
def test_compile_classifier_class_weights_change_the_loss():
    x, y = batch(14)
    teacher = tiny_teacher()
    targets = labels_for(teacher, y)
    assert set(targets) == set(teacher.output)
    compile_classifier(teacher, 1e-3, exit_weight=0.3)
    plain = teacher.evaluate(x, targets, verbose=0, return_dict=True)
    weights = {0: 4.0, 3: 0.25}
    compile_classifier(teacher, 1e-3, class_weight=weights, exit_weight=0.3)
    weighted = teacher.evaluate(x, targets, verbose=0, return_dict=True)
    # Hand-computed: sum over outputs of weight_o * mean(w[y] * ce_o).
    outs = teacher.predict(x, verbose=0)
    w = np.ones(7)
    w[0], w[3] = 4.0, 0.25
    expected = sum((1.0 if name == "logits" else 0.3)
                   * np.mean(w[y] * -np.log(np_softmax(o)[np.arange(len(y)), y]))
                   for name, o in outs.items())
    assert weighted["loss"] == pytest.approx(expected, rel=1e-4)
    assert abs(weighted["loss"] - plain["loss"]) > 1e-3
    assert accuracy_key(teacher) == "logits_accuracy" and "logits_accuracy" in weighted


@pytest.mark.slow
def test_trained_flag_fit_and_reload(tmp_path):
    x, y = batch(16)
    inp = keras.Input((16, 16, 3), name="image")
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inp))
    model = keras.Model(inp, {"logits": keras.layers.Dense(7, name="logits")(h)})
    assert not is_trained(model)
    compile_classifier(model, 1e-2, class_weight={1: 2.0})
    assert not is_trained(model)
    history = fit_model(model, x, None, epochs=1, y=y, verbose=0, batch_size=8)
    assert "accuracy" in history.history and accuracy_key(model) == "accuracy"
    assert is_trained(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert not hasattr(loaded, "_kdskin_trained") and is_trained(loaded)  # optimizer steps saved
    assert not is_trained(mark_trained(loaded, False))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["distiller", "compiled"])
def test_fit_model_traces_the_train_step_once(kind):
    """fit_model creates the optimizer's and the metrics' variables before fit: a first step that
    creates them makes tf.function trace the train step twice (about 15 s of the student's first
    epoch on 2 cores). The step's Python body runs once per trace."""
    x, y = batch(24)
    if kind == "distiller":
        model = make_stage_model("single", mark_trained(tiny_teacher()), tiny_student(1), Config())
    else:
        model = tiny_teacher()
        compile_classifier(model, 1e-3, exit_weight=0.3)
    traces = []
    original = model.train_step

    def counted(data):
        traces.append(1)
        return original(data)

    model.train_step = counted
    ds = tf.data.Dataset.from_tensor_slices((x, labels_for(model, y) if kind == "compiled"
                                             else y)).batch(8)
    fit_model(model, ds, None, epochs=2, verbose=0)
    assert len(traces) == 1
    assert model.optimizer.iterations.numpy() == 6


def _distiller(seed: int = 1):
    d = make_stage_model("single", mark_trained(tiny_teacher()), tiny_student(seed), Config())
    d.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    return d


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")


class _Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.at_begin = None
        self.at_end = {}

    def on_train_begin(self, logs=None):
        self.at_begin = [w.copy() for w in self.model.student.get_weights()]
        self.steps_at_begin = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        self.at_end[epoch] = [w.copy() for w in self.model.student.get_weights()]


@pytest.mark.slow
def test_callbacks_backup_and_restore_resume(tmp_path):
    cfg = Config()
    cfg.train.monitor, cfg.train.lr_schedule = "val_accuracy", "plateau"
    x, y = batch(16)
    first = _Snapshots()
    callbacks = make_callbacks(tmp_path, "single", cfg, extra=[first, _Interrupt()])
    kinds = [type(c).__name__ for c in callbacks]
    board = ["TensorBoard"] if tensorboard_available() else []
    # the training state is saved after the epoch's log row (a kill in between reruns the
    # epoch instead of losing its row), and restored before ``extra`` callbacks begin
    assert kinds == ["StepTimer", "EarlyStopping", "ReduceLROnPlateau", "CSVLogger", *board,
                     "StateBackup", "_Snapshots", "_Interrupt"]
    assert isinstance(callbacks[-3], keras.callbacks.BackupAndRestore)
    with pytest.raises(KeyboardInterrupt):
        _distiller().fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), verbose=0,
                         callbacks=callbacks)
    meta = json.loads((tmp_path / "backup" / "single" / "training_metadata.json").read_text())
    assert meta["epoch"] == 1
    # the state is one .npz of plain arrays (no pickle): the distiller's variables (teacher and
    # student) and the optimizer's
    state = tmp_path / "backup" / "single" / "latest.state.npz"
    with np.load(state, allow_pickle=False) as saved:
        assert len(saved.files) == len(first.model.variables) + len(
            first.model.optimizer.variables)
    assert not list((tmp_path / "backup").rglob("*.tmp*"))

    # "Rerun": a fresh process would rebuild the models (different initial student weights).
    second = _Snapshots()
    resumed = _distiller(seed=7)
    history = resumed.fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), verbose=0,
                          callbacks=make_callbacks(tmp_path, "single", cfg, extra=[second]))
    assert history.epoch == [1, 2]  # continued from epoch 2 (index 1)
    for restored, saved in zip(second.at_begin, first.at_end[0], strict=True):
        np.testing.assert_allclose(restored, saved)
    assert second.steps_at_begin == 2  # the optimizer's state too (2 steps of 8 in epoch 0)
    assert not (tmp_path / "backup" / "single").exists()  # removed after a completed fit
    rows = (tmp_path / "logs" / "single.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch") and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    assert "loss_kd" in rows[0] and "val_accuracy" in rows[0]
    if tensorboard_available():
        assert any((tmp_path / "logs" / "single").rglob("events.out.tfevents*"))
    # no best-epoch copy of the model is written during a fit (read by nothing)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_a_backup_of_another_model_is_refused_in_one_line(tmp_path):
    """A backup folder left by a fit of another configuration (other variables) is refused
    with a one-line error naming it and what to do, before any weight is overwritten."""
    cfg = Config()
    cfg.train.lr_schedule = "plateau"
    x, y = batch(16)
    with pytest.raises(KeyboardInterrupt):
        _distiller().fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), verbose=0,
                         callbacks=make_callbacks(tmp_path, "single", cfg, monitor="val_loss",
                                                  extra=[_Interrupt()]))
    other = make_stage_model("single", mark_trained(tiny_teacher()),
                             tiny_student(3, fusion="average"), Config())
    other.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    before = [w.copy() for w in other.student.get_weights()]
    with pytest.raises(KdskinError) as info:
        other.fit(x, y, batch_size=8, epochs=3, verbose=0,
                  callbacks=make_callbacks(tmp_path, "single", cfg, monitor="loss"))
    message = str(info.value)
    assert "\n" not in message and "latest.state.npz" in message and "delete" in message
    assert "does not fit this model" in message
    for kept, old in zip(other.student.get_weights(), before, strict=True):
        np.testing.assert_array_equal(kept, old)


@pytest.mark.slow
def test_a_backup_written_by_keras_own_callback_is_resumed_with_its_weights(tmp_path):
    """A fit interrupted under an older kdskin (Keras' own BackupAndRestore, .weights.h5)
    resumes from that file: never its epoch with fresh weights."""
    x, y = batch(16)
    first = _Snapshots()
    backup = tmp_path / "backup" / "single"
    with pytest.raises(KeyboardInterrupt):
        _distiller().fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(backup_dir=str(backup)), first, _Interrupt()])
    assert (backup / "latest.weights.h5").is_file()
    cfg = Config()
    cfg.train.lr_schedule = "plateau"
    second = _Snapshots()
    callbacks = make_callbacks(tmp_path, "single", cfg, monitor="loss", extra=[second])
    history = _distiller(seed=7).fit(x, y, batch_size=8, epochs=3, verbose=0,
                                     callbacks=callbacks)
    assert history.epoch == [1, 2] and second.steps_at_begin == 2
    for restored, saved in zip(second.at_begin, first.at_end[0], strict=True):
        np.testing.assert_allclose(restored, saved)


def test_without_its_private_hooks_the_backup_is_keras_own(monkeypatch, tmp_path):
    from kdskin import compat

    monkeypatch.setattr(compat, "_check_backup", lambda: "BackupAndRestore changed")
    callback = compat.state_backup(str(tmp_path / "b"))
    assert type(callback) is keras.callbacks.BackupAndRestore


def test_a_resumed_fit_drops_the_log_rows_of_epochs_it_reruns(tmp_path):
    """A job killed after an epoch's CSV row but before its backup reruns that epoch: the row
    is dropped when the callbacks are made, so the log has each epoch once."""
    cfg = Config()
    cfg.train.lr_schedule = "plateau"
    log = tmp_path / "logs" / "single.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,loss\n0,2.0\n1,1.5\n2,1.2\n")
    backup = tmp_path / "backup" / "single"
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 2, "batch": 0}))
    make_callbacks(tmp_path, "single", cfg, monitor="val_loss")
    assert log.read_text() == "epoch,loss\n0,2.0\n1,1.5\n"
    drop_unfinished_epochs(log, 5)  # nothing to drop: the file is left as it is
    assert log.read_text() == "epoch,loss\n0,2.0\n1,1.5\n"
    drop_unfinished_epochs(tmp_path / "missing.csv", 0)  # no log yet: nothing to do


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras, numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_distill import batch, tiny_student, tiny_teacher
    from kdskin.distill import KdskinDistiller
    from kdskin.train import strategy_scope

    x, y = batch(16)
    EXITS = {"cnn_exit": "conv_exit_last", "effnet_exit": "vit_exit_last"}

    def make(teacher_w=None, student_w=None):
        teacher, student = tiny_teacher(), tiny_student()
        if teacher_w is not None:
            teacher.set_weights(teacher_w)
            student.set_weights(student_w)
        d = KdskinDistiller(teacher, student, "multi_fusion", exit_map=EXITS, class_weight={0: 2.0})
        d.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
        return d

    ref = make()
    init = (ref.teacher.get_weights(), ref.student.get_weights())
    h_ref = ref.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)

    strategy = strategy_scope("mirrored")
    with strategy.scope():
        dist = make(*init)
    h1 = dist.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    step_diff = max(float(np.max(np.abs(a - b)))
                    for a, b in zip(ref.student.get_weights(), dist.student.get_weights()))
    moved = max(float(np.max(np.abs(a - b)))
                for a, b in zip(init[1], dist.student.get_weights()))
    h = dist.fit(x, y, batch_size=16, epochs=8, shuffle=False, verbose=0)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync, "step_diff": step_diff, "moved": moved,
        "ref_first": {k: v[0] for k, v in h_ref.history.items()},
        "dist_first": {k: v[0] for k, v in h1.history.items()},
        "losses": h.history["loss"], "total": h.history["total"],
    }))
""")


@pytest.mark.slow
def test_mirrored_two_replicas_matches_single_device_and_learns():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(TESTS_DIR)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Same global batch, same initial weights: one mirrored SGD step == one single-device step
    # (the loss is divided by the replica count, as Keras' own losses are).
    assert result["moved"] > 1e-3
    assert result["step_diff"] < 1e-4 * max(1.0, result["moved"]), result
    for key in ("loss", "loss_ce", "loss_kd", "loss_exits", "total"):
        assert result["dist_first"][key] == pytest.approx(result["ref_first"][key], rel=1e-4)
    losses = result["losses"]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 1e-3, losses


@pytest.mark.slow
def test_cosine_schedule_and_validation_metrics_drive_the_callbacks(tmp_path):
    from kdskin.train import StepTimer, ValidationMetrics, cosine_schedule

    schedule = cosine_schedule(1e-3, 4)
    assert [round(schedule(e), 8) for e in range(5)] == [
        0.001, round(0.5e-3 * (1 + np.cos(np.pi / 4)), 8), 0.0005,
        round(0.5e-3 * (1 + np.cos(3 * np.pi / 4)), 8), 0.0]
    cfg = Config()
    cfg.train.monitor, cfg.train.lr_schedule = "val_macro_auc", "cosine"
    with pytest.raises(ConfigError, match="validation"):
        make_callbacks(tmp_path, "single", cfg, epochs=3, learning_rate=1e-3)
    with pytest.raises(ConfigError, match="epochs"):
        make_callbacks(tmp_path, "single", cfg, validation=batch(4))
    x, y = batch(16)
    callbacks = make_callbacks(tmp_path, "single", cfg, validation=(x, y), epochs=3,
                               learning_rate=1e-3)
    kinds = [type(c).__name__ for c in callbacks]
    assert kinds[:3] == ["StepTimer", "ValidationMetrics", "EarlyStopping"]
    assert "LearningRateScheduler" in kinds and "ReduceLROnPlateau" not in kinds
    history = _distiller().fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), verbose=0,
                               callbacks=callbacks)
    cfg.train.early_stopping_patience = 0  # no early stopping: the whole schedule
    kinds = [type(c).__name__ for c in make_callbacks(tmp_path, "none", cfg, validation=(x, y),
                                                      epochs=3, learning_rate=1e-3)]
    assert "EarlyStopping" not in kinds and "LearningRateScheduler" in kinds
    np.testing.assert_allclose(history.history["learning_rate"],
                               [cosine_schedule(1e-3, 3, cfg.train.min_learning_rate)(e)
                                for e in range(3)], rtol=1e-5)
    for key in ValidationMetrics.KEYS:
        assert len(history.history[key]) == 3
        assert all(0.0 <= v <= 1.0 for v in history.history[key])
    assert not (tmp_path / "checkpoints").exists()  # no best-epoch copy is written
    timer = next(c for c in callbacks if isinstance(c, StepTimer))
    summary = timer.summary(8)
    assert summary["ms_per_step"] > 0 and summary["steps"] == 2  # 2 epochs x (2 steps - 1)
