"""Distillation losses and the multi-stage distiller, on tiny stand-in models of the contract."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kdskin.config import Config  # noqa: E402
from kdskin.distill import (  # noqa: E402
    ClassWeightedCrossEntropy,
    ExitDistillation,
    KdskinDistiller,
    check_teacher_trained,
    cross_entropy,
    make_stage_model,
    resolve_exit_map,
    softened_kl,
)
from kdskin.errors import ConfigError, ModelError  # noqa: E402
from kdskin.models.contract import mark_trained  # noqa: E402

S = 16  # image size of the stand-in models
TEACHER_NAMES = ["vit_exit_1", "vit_exit_2", "conv_exit_1", "conv_exit_2", "conv_exit_3",
                 "logits"]


# --------------------------------------------------------------------------- stand-in models


@keras.saving.register_keras_serializable(package="kdskin_tests")
class CallCounter(keras.layers.Layer):
    """Identity that counts how many times it ran (a non-trainable variable)."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     dtype="float32", name="count")

    def call(self, x):
        self.count.assign_add(1.0)
        return x


def tiny_teacher(seed: int = 0, counter: bool = False, size: int = S) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    if counter:
        h = CallCounter(name="counter")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    p = keras.layers.GlobalAveragePooling2D()(h)
    outs = {name: keras.layers.Dense(7, name=name)(p) for name in TEACHER_NAMES}
    return keras.Model(inp, outs, name="teacher")


def tiny_student(seed: int = 1, l2: float = 0.0, fusion: str = "concat") -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((S, S, 3), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    reg = keras.regularizers.L2(l2) if l2 else None
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer=reg)(h)
    p = keras.layers.GlobalAveragePooling2D()(h)
    q = keras.layers.GlobalMaxPooling2D()(h)
    a = keras.layers.Dense(7, name="cnn_exit")(p)
    b = keras.layers.Dense(7, name="effnet_exit")(q)
    if fusion == "concat":
        logits = keras.layers.Dense(7, name="logits")(
            keras.layers.Concatenate(name="fusion_concat")([p, q]))
    else:
        logits = keras.layers.Average(name="logits")([a, b])
    return keras.Model(inp, {"cnn_exit": a, "effnet_exit": b, "logits": logits}, name="student")


def batch(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    return (rng.randint(0, 256, (n, S, S, 3)).astype("float32"),
            rng.randint(0, 7, n).astype("int32"))


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# --------------------------------------------------------------------------- pure losses


@pytest.mark.parametrize("temperature", [1.0, 4.0, 10.0])
def test_softened_kl_matches_numpy_with_t_squared(temperature):
    rng = np.random.RandomState(3)
    s, t = rng.randn(5, 7).astype("float32") * 3, rng.randn(5, 7).astype("float32") * 3
    p_t, p_s = np_softmax(t / temperature), np_softmax(s / temperature)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)  # KL(teacher || student), no scaling
    got = keras.ops.convert_to_numpy(softened_kl(s, t, temperature))
    assert got.shape == (5,)
    np.testing.assert_allclose(got, kl * temperature**2, rtol=1e-4, atol=1e-6)
    assert np.all(got >= 0)


def test_softened_kl_zero_when_student_equals_teacher():
    t = np.random.RandomState(4).randn(6, 7).astype("float32") * 5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(softened_kl(t, t, 10.0)), 0, atol=1e-6)
    # Softmax is shift-invariant: a constant per row changes nothing.
    shifted = softened_kl(t + 3.0, t, 10.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(shifted), 0, atol=1e-5)
    assert float(keras.ops.max(softened_kl(-t, t, 10.0))) > 0.01


def test_cross_entropy_matches_numpy_and_class_weights_change_it():
    rng = np.random.RandomState(5)
    logits, y = rng.randn(8, 7).astype("float32"), np.array([0, 1, 2, 3, 4, 5, 6, 0])
    ce = -np.log(np_softmax(logits)[np.arange(8), y])
    got = keras.ops.convert_to_numpy(cross_entropy(y, logits))
    np.testing.assert_allclose(got, ce, rtol=1e-5)
    weights = {0: 3.0, 4: 0.5}
    w = np.array([3.0, 1, 1, 1, 0.5, 1, 1])[y]
    weighted = keras.ops.convert_to_numpy(cross_entropy(y, logits, weights))
    np.testing.assert_allclose(weighted, ce * w, rtol=1e-5)
    assert not np.allclose(weighted.mean(), ce.mean())
    one_hot = np.eye(7, dtype="float32")[y]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cross_entropy(one_hot, logits, weights)),
                               ce * w, rtol=1e-5)
    loss = ClassWeightedCrossEntropy(weights)
    np.testing.assert_allclose(float(loss(y, logits)), (ce * w).mean(), rtol=1e-5)
    again = ClassWeightedCrossEntropy.from_config(loss.get_config())
    np.testing.assert_allclose(float(again(y, logits)), (ce * w).mean(), rtol=1e-5)
    with pytest.raises(ConfigError, match="class_weight"):
        cross_entropy(y, logits, {9: 1.0})


def test_logit_adjusted_cross_entropy_is_ce_of_shifted_logits_and_reloads():
    rng = np.random.RandomState(6)
    logits, y = rng.randn(8, 7).astype("float32"), np.array([0, 1, 2, 3, 4, 5, 6, 5])
    prior = np.array([0.1, 0.05, 0.1, 0.01, 0.1, 0.6, 0.04], "float32")
    adjust = np.log(prior)
    expected = -np.log(np_softmax(logits + adjust)[np.arange(8), y])
    got = keras.ops.convert_to_numpy(cross_entropy(y, logits, logit_adjustment=adjust))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The frequent class (5) is cheaper to miss, the rare one (3) dearer, than with plain CE.
    plain = -np.log(np_softmax(logits)[np.arange(8), y])
    assert got[3] > plain[3] and got[5] < plain[5]
    # A constant offset is a no-op (softmax is shift-invariant).
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(cross_entropy(y, logits, logit_adjustment=np.full(7, 2.0))),
        plain, rtol=1e-5)
    loss = ClassWeightedCrossEntropy(logit_adjustment=adjust)
    again = ClassWeightedCrossEntropy.from_config(loss.get_config())
    np.testing.assert_allclose(float(again(y, logits)), expected.mean(), rtol=1e-5)
    with pytest.raises(ConfigError, match="logit_adjustment must be 7 finite values"):
        cross_entropy(y, logits, logit_adjustment=[0.0, np.inf, 0, 0, 0, 0, 0])
    with pytest.raises(ConfigError, match="logit_adjustment must be 7 finite values"):
        cross_entropy(y, logits, logit_adjustment=[0.0, 1.0])


def test_exit_map_resolution_last_and_errors():
    names = TEACHER_NAMES + ["conv_exit_10"]
    resolved = resolve_exit_map({"cnn_exit": "conv_exit_last", "effnet_exit": "vit_exit_last"},
                                names, ["cnn_exit", "effnet_exit", "logits"])
    assert resolved == {"cnn_exit": "conv_exit_10", "effnet_exit": "vit_exit_2"}
    assert resolve_exit_map({"cnn_exit": "vit_exit_1"}, names, ["cnn_exit"]) == {
        "cnn_exit": "vit_exit_1"}
    with pytest.raises(ConfigError, match=r"distill.exit_map.*'conv_exit_7'.*conv_exit_1"):
        resolve_exit_map({"cnn_exit": "conv_exit_7"}, names, ["cnn_exit"])
    with pytest.raises(ConfigError, match=r"'mlp_exit_last'"):
        resolve_exit_map({"cnn_exit": "mlp_exit_last"}, names, ["cnn_exit"])
    with pytest.raises(ConfigError, match=r"student has no output 'cnn'"):
        resolve_exit_map({"cnn": "conv_exit_last"}, names, ["cnn_exit"])


def test_exit_distillation_averages_pairs_and_is_zero_on_match():
    rng = np.random.RandomState(6)
    teacher = {n: rng.randn(4, 7).astype("float32") for n in TEACHER_NAMES}
    loss = ExitDistillation({"cnn_exit": "conv_exit_last", "effnet_exit": "vit_exit_last"}, 10.0)
    matched = {"cnn_exit": teacher["conv_exit_3"], "effnet_exit": teacher["vit_exit_2"],
               "logits": teacher["logits"]}
    assert abs(float(loss.compute_loss(teacher, matched))) < 1e-6
    student = {n: rng.randn(4, 7).astype("float32") for n in ("cnn_exit", "effnet_exit", "logits")}
    expected = np.mean([
        keras.ops.convert_to_numpy(softened_kl(student["cnn_exit"], teacher["conv_exit_3"], 10)),
        keras.ops.convert_to_numpy(softened_kl(student["effnet_exit"], teacher["vit_exit_2"], 10)),
    ], axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss.per_sample(teacher, student)),
                               expected, rtol=1e-5)
    np.testing.assert_allclose(float(loss.compute_loss(teacher, student)), expected.mean(),
                               rtol=1e-5)


# --------------------------------------------------------------------------- distiller


def test_distiller_loss_is_zero_kd_when_student_equals_teacher():
    # A "student" that is the teacher's own graph (same outputs): both KD terms are zero.
    teacher = tiny_teacher()
    outs = teacher.output
    twin = keras.Model(teacher.input, {"cnn_exit": outs["conv_exit_3"],
                                       "effnet_exit": outs["vit_exit_2"],
                                       "logits": outs["logits"]}, name="twin")
    d = KdskinDistiller(teacher, twin, "multi", exit_map={"cnn_exit": "conv_exit_last",
                                                          "effnet_exit": "vit_exit_last"})
    x, y = batch()
    d.compute_loss(x, y, training=True)
    assert abs(float(d.term_trackers["loss_kd"].result())) < 1e-6
    assert abs(float(d.term_trackers["loss_exits"].result())) < 1e-6
    assert float(d.term_trackers["loss_ce"].result()) > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["baseline", "single", "multi", "multi_fusion"])
def test_each_stage_reduces_its_loss_and_reports_terms(stage):
    x, y = batch()
    teacher = mark_trained(tiny_teacher())
    student = tiny_student(l2=0.01, fusion="none" if stage == "multi" else "concat")
    d = make_stage_model(stage, teacher, student, Config())
    d.compile(optimizer=keras.optimizers.Adam(0.03), jit_compile=False)  # XLA: slow to trace
    if stage == "baseline":
        assert d.teacher is None

    def total() -> float:
        return float(d.compute_loss(x, y, training=True))

    before = total()
    history = d.fit(x, y, batch_size=16, epochs=4, validation_data=(x, y), verbose=0)
    after = total()
    assert np.isfinite(after) and after < before - 1e-3, (before, after)
    terms = {"baseline": ["loss_ce"], "single": ["loss_kd", "loss_ce"]}.get(
        stage, ["loss_exits", "loss_kd", "loss_ce"])
    for key in [*terms, "total", "loss_reg", "loss", "accuracy", "val_loss", "val_loss_ce",
                "val_accuracy"]:
        assert key in history.history, (key, sorted(history.history))
    for absent in {"loss_exits", "loss_kd"} - set(terms):
        assert absent not in history.history
    assert "val_loss_kd" not in history.history  # teacher is not run in validation
    # Teacher frozen: its weights did not move.
    if stage != "baseline":
        assert not d.teacher.trainable
        assert all(not w.trainable for w in d.teacher.weights)
        assert len(d.trainable_weights) == len(d.student.trainable_weights)


@pytest.mark.slow
def test_loss_metric_is_what_is_optimised():
    """The distiller's own "loss" tracker: total + regularisation in training, CE +
    regularisation in validation (what Keras' private loss tracker reported before)."""
    x, y = batch(24)
    d = make_stage_model("multi_fusion", mark_trained(tiny_teacher()), tiny_student(l2=0.01),
                         Config())
    history = d.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0).history
    for epoch in range(2):
        np.testing.assert_allclose(history["loss"][epoch],
                                   history["total"][epoch] + history["loss_reg"][epoch],
                                   rtol=1e-5)
        np.testing.assert_allclose(history["val_loss"][epoch],
                                   history["val_loss_ce"][epoch] + history["val_loss_reg"][epoch],
                                   rtol=1e-5)
    assert history["loss"][1] != history["loss"][0]  # reset between epochs, not accumulated
    d.compute_loss(x, y, training=True)
    assert "loss" in [m.name for m in d.metrics]


@pytest.mark.slow
def test_fit_announces_the_stage_unless_silent(capsys):
    x, y = batch(8)
    d = make_stage_model("single", mark_trained(tiny_teacher()), tiny_student(), Config())
    d.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert "stage single" not in capsys.readouterr().out
    again = make_stage_model("single", mark_trained(tiny_teacher()), tiny_student(), Config())
    again.fit(x, y, batch_size=8, epochs=1, verbose=2)
    assert "stage single: loss = 0.3 x logit KD" in capsys.readouterr().out


@pytest.mark.slow
def test_teacher_runs_in_training_only():
    x, y = batch()
    teacher = mark_trained(tiny_teacher(counter=True))
    counter = teacher.get_layer("counter").count
    d = make_stage_model("multi_fusion", teacher, tiny_student(), Config())
    d.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after_fit = float(counter.numpy())
    assert after_fit >= 2  # two training batches
    d.evaluate(x, y, batch_size=8, verbose=0)
    d.predict(x, batch_size=8, verbose=0)
    out = d(x[:2], training=False)
    assert set(out) == {"cnn_exit", "effnet_exit", "logits"}
    assert float(counter.numpy()) == after_fit


@pytest.mark.slow
def test_a_larger_teacher_sees_its_own_images_and_the_student_them_resized():
    """A teacher larger than the student: training batches come at the teacher's size (2S);
    the teacher runs on them as they are and the student on them resized to S (anti-aliased);
    validation batches come at S and reach the student unchanged."""
    rng = np.random.RandomState(3)
    big = rng.randint(0, 256, (16, 2 * S, 2 * S, 3)).astype("float32")
    small, y = batch()
    teacher = mark_trained(tiny_teacher(counter=True, size=2 * S))
    student = tiny_student()
    d = make_stage_model("multi_fusion", teacher, student, Config())
    view = np.asarray(d.student_view(big))
    assert view.shape == (16, S, S, 3)
    # anti-aliased: a 2x2 checkerboard of 0 and 255 averages out to mid-grey, not aliased
    board = np.indices((2 * S, 2 * S)).sum(0) % 2 * 255.0
    grey = np.asarray(d.student_view(np.repeat(board[None, ..., None], 3, -1)))
    assert np.abs(grey[:, 2:-2, 2:-2] - 127.5).max() < 1.0
    np.testing.assert_allclose(np.asarray(d(big)["logits"]),
                               np.asarray(student(view)["logits"]), rtol=1e-5, atol=1e-5)
    assert d.student_view(small) is small  # the student's size: untouched
    hist = d.fit(big, y, batch_size=8, epochs=2, validation_data=(small, y), verbose=0)
    assert float(teacher.get_layer("counter").count.numpy()) >= 4
    assert all(np.isfinite(hist.history[k]).all() for k in ("loss_kd", "loss_exits", "val_loss"))
    with pytest.raises(ModelError, match="at least as large as the student"):
        make_stage_model("single", mark_trained(tiny_teacher(size=S // 2)), tiny_student(),
                         Config())


@pytest.mark.slow
def test_the_teacher_can_see_its_own_view_of_the_batch():
    """distill.teacher_view: unshifted -- with ``{"image": A, "teacher_image": B}`` the student
    runs on A and the teacher on B: the KD terms are those of teacher(B) against student(A)."""
    from kdskin.distill.losses import logit_distillation

    a, y = batch(seed=0)
    b, _ = batch(seed=1)
    teacher = mark_trained(tiny_teacher())
    student = tiny_student()
    d = make_stage_model("single", teacher, student, Config())
    views = {"image": a, "teacher_image": b}
    np.testing.assert_allclose(np.asarray(d(views)["logits"]),
                               np.asarray(student(a)["logits"]), rtol=1e-6, atol=1e-6)
    kd = logit_distillation(d.temperature)

    def expected_kd(teacher_images: np.ndarray) -> float:
        per = kd.per_sample(teacher(teacher_images), student(a))
        return float(np.mean(np.asarray(per)))

    d.compute_loss(views, y, training=True)
    got = float(d.term_trackers["loss_kd"].result())
    np.testing.assert_allclose(got, expected_kd(b), rtol=1e-5)
    assert abs(got - expected_kd(a)) > 1e-4  # the student's images would give another loss
    hist = d.fit(views, y, batch_size=8, epochs=1, validation_data=(a, y), verbose=0)
    assert np.isfinite(hist.history["loss_kd"]).all()


def test_teacher_view_is_a_checked_choice():
    from kdskin.config import load_config

    assert load_config().distill.teacher_view == "augmented"
    assert load_config(overrides=["distill.teacher_view=unshifted"]).distill.teacher_view \
        == "unshifted"
    with pytest.raises(ConfigError, match="distill.teacher_view"):
        load_config(overrides=["distill.teacher_view=clean"])


def test_class_weight_changes_distiller_loss_and_fit_class_weight_is_refused():
    x, y = batch()
    teacher = mark_trained(tiny_teacher())
    student = tiny_student()
    plain = KdskinDistiller(teacher, student, "single")
    weighted = KdskinDistiller(teacher, student, "single", class_weight={int(y[0]): 5.0})
    a = float(plain.compute_loss(x, y, training=True))
    b = float(weighted.compute_loss(x, y, training=True))
    assert b > a + 1e-3
    # Validation uses the plain CE (Keras applies class_weight to training only).
    np.testing.assert_allclose(float(weighted.compute_loss(x, y, training=False)),
                               float(plain.compute_loss(x, y, training=False)), rtol=1e-6)
    weighted.compile(optimizer="adam")
    with pytest.raises(ModelError, match="class_weight"):
        weighted.fit(x, y, class_weight={0: 2.0}, verbose=0)


def test_logit_adjustment_changes_the_training_ce_only():
    x, y = batch()
    teacher = mark_trained(tiny_teacher())
    student = tiny_student()
    plain = KdskinDistiller(teacher, student, "single")
    adjust = np.zeros(7, "float32")
    adjust[int(y[0])] = -3.0  # the first sample's class is made rare: its CE grows
    adjusted = KdskinDistiller(teacher, student, "single", logit_adjustment=adjust)
    plain.compute_loss(x, y, training=True)
    adjusted.compute_loss(x, y, training=True)
    a = float(plain.term_trackers["loss_ce"].result())
    b = float(adjusted.term_trackers["loss_ce"].result())
    assert b > a + 1e-3
    # The KD term compares raw logits: unchanged.
    np.testing.assert_allclose(float(adjusted.term_trackers["loss_kd"].result()),
                               float(plain.term_trackers["loss_kd"].result()), rtol=1e-6)
    np.testing.assert_allclose(float(adjusted.compute_loss(x, y, training=False)),
                               float(plain.compute_loss(x, y, training=False)), rtol=1e-6)
    assert "logit-adjusted" in adjusted.describe()


def test_teacher_offsets_move_the_kd_targets_only():
    """The teacher's outputs plus ``teacher_offsets`` are the KD targets (logit and exit terms);
    a common shift changes nothing (softmax), a per-class one changes both KD terms, not CE."""
    x, y = batch()
    teacher = mark_trained(tiny_teacher())
    student = tiny_student()
    exit_map = {"cnn_exit": "conv_exit_1", "effnet_exit": "vit_exit_1"}

    def terms(offsets):
        d = KdskinDistiller(teacher, student, "multi_fusion", exit_map=exit_map,
                            teacher_offsets=offsets)
        d.compute_loss(x, y, training=True)
        return {k: float(d.term_trackers[k].result()) for k in ("loss_kd", "loss_exits",
                                                                  "loss_ce")}, d

    plain, _ = terms(None)
    common, _ = terms(np.full(7, 2.5, "float32"))
    shifted, d = terms(np.array([3.0, 0, 0, 0, 0, -3.0, 0], "float32"))
    for k in plain:
        np.testing.assert_allclose(common[k], plain[k], rtol=1e-5)
    assert abs(shifted["loss_kd"] - plain["loss_kd"]) > 1e-3
    assert abs(shifted["loss_exits"] - plain["loss_exits"]) > 1e-3
    np.testing.assert_allclose(shifted["loss_ce"], plain["loss_ce"], rtol=1e-6)
    # The KD term equals softened_kl against the shifted teacher logits, by hand.
    t = keras.ops.convert_to_numpy(teacher(x)["logits"]) + np.array([3.0, 0, 0, 0, 0, -3.0, 0])
    s = keras.ops.convert_to_numpy(student(x)["logits"])
    pt, ps = np_softmax(t / 10.0), np_softmax(s / 10.0)
    expected = float(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)) * 100.0)
    np.testing.assert_allclose(shifted["loss_kd"], expected, rtol=1e-4)
    assert "prior offsets +3.00" in d.describe()
    with pytest.raises(ConfigError, match="teacher_offsets must be 7 finite values"):
        KdskinDistiller(teacher, student, "single", teacher_offsets=[1.0, 2.0])


def test_distiller_construction_errors():
    teacher, student = mark_trained(tiny_teacher()), tiny_student()
    with pytest.raises(ConfigError, match="exit_map.*'conv_exit_9'"):
        KdskinDistiller(teacher, student, "multi_fusion", exit_map={"cnn_exit": "conv_exit_9"})
    with pytest.raises(ConfigError, match="stage"):
        KdskinDistiller(teacher, student, "double")
    with pytest.raises(ModelError, match="teacher"):
        KdskinDistiller(None, student, "single")
    with pytest.raises(ModelError, match="loss"):
        KdskinDistiller(teacher, student, "single").compile(optimizer="adam", loss="mse")
    with pytest.raises(ModelError, match="fusion='none'"):
        KdskinDistiller(teacher, student, "multi", exit_map={"cnn_exit": "conv_exit_1"})
    with pytest.raises(ModelError, match="fusion='concat' or 'residual'"):
        KdskinDistiller(teacher, tiny_student(fusion="none"), "multi_fusion",
                        exit_map={"cnn_exit": "conv_exit_1"})


def test_untrained_teacher_is_refused():
    x, y = batch(32)
    fresh = tiny_teacher()
    with pytest.raises(ModelError, match="no trained weights"):
        make_stage_model("single", fresh, tiny_student(), Config())
    with pytest.raises(ModelError, match="no trained weights"):
        check_teacher_trained(fresh, (x, y))
    # Marked trained, but it always predicts class 0: no better than one class, whatever the
    # class mix (its balanced accuracy is 1 / classes present).
    teacher = mark_trained(tiny_teacher())
    bias = np.zeros(7, "float32")
    bias[0] = 100.0
    kernel, _ = teacher.get_layer("logits").get_weights()
    teacher.get_layer("logits").set_weights([kernel * 0, bias])
    labels = np.full(32, 5, "int32")
    labels[:28] = 0  # 88% class 0: plain accuracy 0.875 would have passed a majority check
    with pytest.raises(ModelError, match=r"balanced accuracy 0\.500 \(accuracy 0\.875\) is "
                                         r"not better than always predicting one class"):
        check_teacher_trained(teacher, (x, labels))
    # A teacher that tells dark from bright images passes on a dataset, whatever its accuracy.
    image = keras.Input((S, S, 3), name="image")
    mean = keras.layers.GlobalAveragePooling2D()(image)
    logits = keras.layers.Dense(7, name="logits")(mean)
    sorter = mark_trained(keras.Model(image, {"logits": logits}))
    weights = np.zeros((3, 7), "float32")
    weights[:, 5] = 1.0
    bias = np.zeros(7, "float32")
    bias[0] = 3 * 127.0
    sorter.get_layer("logits").set_weights([weights, bias])
    bright = np.full((16, S, S, 3), 250.0, "float32")
    dark = np.full((16, S, S, 3), 5.0, "float32")
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.concatenate([bright, dark]),
                                             np.r_[np.full(16, 5), np.zeros(16)].astype(
                                                 "int32"))).batch(8)
    assert check_teacher_trained(sorter, ds) == pytest.approx(1.0)


def test_the_gate_scores_arrays_in_batches_like_the_whole_split():
    """Arrays of uint8 images over several gate batches (the last one partial): the balanced
    accuracy of the predictions of the whole array at once."""
    from kdskin.distill.distiller import GATE_BATCH
    from kdskin.metrics import balanced_accuracy

    image = keras.Input((S, S, 3), name="image")
    logits = keras.layers.Dense(7, name="logits")(keras.layers.GlobalAveragePooling2D()(image))
    sorter = mark_trained(keras.Model(image, {"logits": logits}))  # bright: 5, dark: 0
    weights = np.zeros((3, 7), "float32")
    weights[:, 5] = 1.0
    bias = np.zeros(7, "float32")
    bias[0] = 3 * 127.0
    sorter.get_layer("logits").set_weights([weights, bias])
    rng = np.random.default_rng(3)
    n = 2 * GATE_BATCH + 13
    x = (rng.integers(0, 256, (n, 1, 1, 1)) * np.ones((1, S, S, 3))).astype(np.uint8)
    pred = np.asarray(sorter(x.astype("float32"))["logits"]).argmax(-1)
    assert set(pred) == {0, 5}
    y = pred.copy()
    y[: n // 4] = 5 - y[: n // 4]  # a quarter wrong
    expected = balanced_accuracy(y, np.eye(7)[pred])
    assert 0.5 < expected < 1.0
    assert check_teacher_trained(sorter, (x, y)) == pytest.approx(expected)


@pytest.mark.slow
def test_student_is_saved_not_the_distiller(tmp_path):
    x, y = batch()
    d = make_stage_model("single", mark_trained(tiny_teacher()), tiny_student(), Config())
    d.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "student.keras"
    d.student.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["logits"],
                               d.predict(x, verbose=0)["logits"], rtol=1e-5, atol=1e-5)
    with pytest.raises(NotImplementedError, match="distiller.student"):
        d.get_config()


# --------------------------------------------------------------------------- DIST and DKD


def _logits(seed: int, n: int = 16, c: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, (n, c)).astype("float32")


def test_dist_is_zero_for_equal_predictions_and_positive_otherwise():
    from kdskin.distill.losses import dist_kd

    t = _logits(0)
    same = np.asarray(dist_kd(t, t, temperature=2.0))
    np.testing.assert_allclose(same, 0.0, atol=1e-5)
    other = np.asarray(dist_kd(_logits(1), t, temperature=2.0))
    assert other.shape == (16,) and (other > 0).all()
    # the intra-class term is one number per batch: gamma moves every sample alike
    only_intra = np.asarray(dist_kd(_logits(1), t, 2.0, beta=0.0, gamma=1.0))
    np.testing.assert_allclose(only_intra, only_intra[0], rtol=1e-6)
    inter = np.asarray(dist_kd(_logits(1), t, 2.0, beta=1.0, gamma=0.0))
    np.testing.assert_allclose(other, inter + only_intra, rtol=1e-5)


def test_dkd_decomposes_the_kl():
    """KL(p_t || p_s) = TCKD + (1 - p_t[target]) NCKD (Zhao et al. 2022, eq. 7)."""
    from kdskin.distill.losses import dkd, softened_kl

    s, t = _logits(2), _logits(3)
    labels = np.random.default_rng(4).integers(0, 7, 16)
    temp = 4.0
    kl = np.asarray(softened_kl(s, t, temp))
    tckd = np.asarray(dkd(s, t, labels, temp, alpha=1.0, beta=0.0))
    nckd = np.asarray(dkd(s, t, labels, temp, alpha=0.0, beta=1.0))
    p_t = np.exp(t / temp) / np.exp(t / temp).sum(-1, keepdims=True)
    pt_gt = p_t[np.arange(16), labels]
    np.testing.assert_allclose(kl, tckd + (1 - pt_gt) * nckd, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dkd(t, t, labels, temp)), 0.0, atol=1e-4)


def test_exit_distillation_takes_the_loss_kind():
    from kdskin.distill.losses import ExitDistillation, dist_kd

    loss = ExitDistillation({"logits": "logits"}, 2.0, kind="dist", params={"gamma": 0.0})
    s, t = _logits(5), _logits(6)
    got = np.asarray(loss.per_sample({"logits": t}, {"logits": s}))
    np.testing.assert_allclose(got, np.asarray(dist_kd(s, t, 2.0, gamma=0.0)), rtol=1e-6)
    assert "DIST" in repr(loss)
    with pytest.raises(ConfigError, match="distill.kd_loss must be one of"):
        ExitDistillation({"logits": "logits"}, 2.0, kind="mse")
    dkd_loss = ExitDistillation({"logits": "logits"}, 2.0, kind="dkd")
    with pytest.raises(ConfigError, match="needs the labels"):
        dkd_loss.per_sample({"logits": t}, {"logits": s})


def test_kd_params_checked_at_load():
    from kdskin.config import load_config

    cfg = load_config(None, ["distill.kd_loss=dkd", "distill.kd_params={beta: 4}"])
    assert cfg.distill.kd_params == {"beta": 4.0}
    with pytest.raises(ConfigError, match="distill.kd_params.gamma: distill.kd_loss dkd takes "
                                          "alpha, beta"):
        load_config(None, ["distill.kd_loss=dkd", "distill.kd_params={gamma: 4}"])
    with pytest.raises(ConfigError, match="'distill.kd_loss' must be one of kl, dist, dkd"):
        load_config(None, ["distill.kd_loss=mse"])
