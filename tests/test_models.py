"""kdskin.models: output names and shapes, reload equality, deploy wrapper, validation."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdskin.config import StudentConfig, TeacherConfig  # noqa: E402
from kdskin.constants import NUM_CLASSES  # noqa: E402
from kdskin.errors import ConfigError, ModelError  # noqa: E402
from kdskin.models import (  # noqa: E402
    build_baseline_cnn,
    build_student,
    build_teacher,
    count_params,
    output_names,
    to_deployable,
)
from kdskin.models.layers import LayerScale, PositionEmbedding  # noqa: E402

TINY_TEACHER = TeacherConfig(patch_size=4, projection_dim=16, num_heads=2, vit_depth=2,
                             mlp_units=[32, 16], conv_filters=8, conv_depth=3, conv_kernel=3,
                             head_units=16)
TINY_STUDENT = StudentConfig(cnn_filters=[4, 8], head_units=8, efficientnet_variant="standard")


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def shape_of(model: keras.Model, layer: str) -> tuple:
    return tuple(model.get_layer(layer).output.shape)


def run(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Inference without ``predict``'s per-model tracing (seconds for EfficientNet)."""
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}


def assert_reload_equal(model: keras.Model, path, x: np.ndarray) -> keras.Model:
    model.save(path)
    loaded = keras.models.load_model(path)
    before, after = run(model, x), run(loaded, x)
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], atol=1e-6)
    return loaded


@pytest.fixture(scope="module")
def student_concat() -> keras.Model:
    return build_student(TINY_STUDENT, 32, fusion="concat")


# --------------------------------------------------------------------------- teacher


@pytest.mark.parametrize("branch", ["convnext", "convmixer"])
@pytest.mark.parametrize("size", [32, 48])
def test_teacher_outputs(branch: str, size: int) -> None:
    cfg = dataclasses.replace(TINY_TEACHER, conv_branch=branch)
    model = build_teacher(cfg, size)
    expected = ["vit_exit_1", "vit_exit_2", "conv_exit_1", "conv_exit_2", "conv_exit_3", "logits"]
    assert output_names(model) == expected
    assert sorted(model.output_names) == sorted(expected)  # Keras sorts dict outputs by key
    assert sum(n.startswith("vit_exit_") for n in expected) == cfg.vit_depth
    assert sum(n.startswith("conv_exit_") for n in expected) == cfg.conv_depth
    assert [tuple(t.shape) for t in model.inputs] == [(None, size, size, 3)]
    assert model.inputs[0].name == "image"
    grid = size // cfg.patch_size
    assert shape_of(model, "vit_token_grid") == (None, grid, grid, cfg.projection_dim)
    assert shape_of(model, "conv_features") == (None, grid, grid, cfg.conv_filters)
    out = model.predict(images(2, size), verbose=0)
    assert list(out) == expected
    for value in out.values():
        assert value.shape == (2, NUM_CLASSES) and np.all(np.isfinite(value))
    # logits, not probabilities: rows do not sum to one
    assert not np.allclose(out["logits"].sum(axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize("branch", ["convnext", "convmixer"])
def test_teacher_save_reload(branch: str, tmp_path) -> None:
    model = build_teacher(dataclasses.replace(TINY_TEACHER, conv_branch=branch), 32)
    loaded = assert_reload_equal(model, tmp_path / "teacher.keras", images(3, 32))
    assert loaded.get_layer("vit_token_grid").output.shape == (None, 8, 8, 16)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # exits without a loss
def test_teacher_fits_with_loss_dict_keyed_by_output_name() -> None:
    model = build_teacher(dataclasses.replace(TINY_TEACHER, conv_depth=1), 32)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss={"logits": ce, "vit_exit_2": ce},
                  loss_weights={"logits": 1.0, "vit_exit_2": 0.5}, run_eagerly=True)
    y = np.arange(4) % NUM_CLASSES
    history = model.fit(images(4, 32), {"logits": y, "vit_exit_2": y}, epochs=1, batch_size=4,
                        verbose=0)
    assert {"loss", "logits_loss", "vit_exit_2_loss"} <= set(history.history)


def test_teacher_token_grid_drives_logits() -> None:
    model = build_teacher(TINY_TEACHER, 32)
    probe = keras.Model(model.input, [model.get_layer("vit_token_grid").output,
                                       model.output["logits"], model.output["vit_exit_2"]])
    x = tf.constant(images(1, 32))
    with tf.GradientTape(persistent=True) as tape:
        grid, logits, exit_2 = probe(x)
        score, exit_score = logits[:, 4], exit_2[:, 4]
    for target in (score, exit_score):
        grads = tape.gradient(target, grid)
        assert grads is not None and grads.shape == grid.shape
        assert float(tf.reduce_max(tf.abs(grads))) > 0


@pytest.mark.parametrize("change, key", [
    ({"patch_size": 5}, "teacher.patch_size"),
    ({"num_heads": 3}, "teacher.num_heads"),
    ({"mlp_units": [32, 8]}, "teacher.mlp_units"),
    ({"conv_branch": "resnet"}, "teacher.conv_branch"),
    ({"dropout": 1.0}, "teacher.dropout"),
])
def test_teacher_invalid_config(change: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_teacher(dataclasses.replace(TINY_TEACHER, **change), 32)


# --------------------------------------------------------------------------- student


@pytest.mark.parametrize("variant", ["standard", "lite"])
@pytest.mark.parametrize("fusion", ["concat", "residual", "none"])
@pytest.mark.parametrize("size", [32, 64])
def test_student_outputs(variant: str, fusion: str, size: int) -> None:
    cfg = dataclasses.replace(TINY_STUDENT, efficientnet_variant=variant)
    model = build_student(cfg, size, fusion=fusion)
    assert output_names(model) == ["cnn_exit", "effnet_exit", "logits"]
    assert model.inputs[0].name == "image"
    assert [tuple(t.shape) for t in model.outputs] == [(None, NUM_CLASSES)] * 3
    cells = size // 2 ** len(cfg.cnn_filters)
    assert shape_of(model, "cnn_features") == (None, cells, cells, cfg.cnn_filters[-1])
    assert shape_of(model, "effnet_features") == (None, size // 32, size // 32, 1280)
    # built into the outer graph: EfficientNet's layers are this model's layers, no nested Model
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    for name in ("stem_conv", "block2a_dwconv", "top_conv"):
        model.get_layer(name)
    has_head = any(layer.name == "fusion_dense" for layer in model.layers)
    assert has_head == (fusion != "none")
    logits_layer = {"concat": keras.layers.Dense, "residual": keras.layers.Add,
                    "none": keras.layers.Average}[fusion]
    assert isinstance(model.get_layer("logits"), logits_layer)
    se = [layer.name for layer in model.layers if "_se_" in layer.name]
    assert bool(se) == (variant == "standard")  # Lite has no squeeze-excite


def test_student_lite_is_relu6_and_fusion_defaults_to_config() -> None:
    cfg = dataclasses.replace(TINY_STUDENT, efficientnet_variant="lite", fusion="none")
    model = build_student(cfg, 32)  # fusion=None -> cfg.fusion
    assert isinstance(model.get_layer("logits"), keras.layers.Average)
    acts = [layer for layer in model.layers if layer.name.endswith("activation")]
    assert acts and all(isinstance(a, keras.layers.ReLU) and a.max_value == 6.0 for a in acts)
    x = images(2, 32)
    pre = keras.Model(model.input, model.get_layer("stem_conv").input)(x)
    np.testing.assert_allclose(pre, (x - 127.0) / 128.0, atol=1e-5)


@pytest.mark.slow
def test_student_stem_stride_one_doubles_effnet_resolution(tmp_path) -> None:
    cfg = dataclasses.replace(TINY_STUDENT, efficientnet_variant="lite", effnet_stem_stride=1)
    model = build_student(cfg, 64)
    assert shape_of(model, "stem_conv") == (None, 64, 64, 32)
    assert shape_of(model, "effnet_features") == (None, 4, 4, 1280)  # 64 / 16, not 64 / 32
    published = build_student(dataclasses.replace(cfg, effnet_stem_stride=2), 64)
    assert shape_of(published, "effnet_features") == (None, 2, 2, 1280)
    assert model.count_params() == published.count_params()  # same weights, finer maps
    loaded = assert_reload_equal(model, tmp_path / "stride1.keras", images(2, 64))
    assert shape_of(loaded, "effnet_features") == (None, 4, 4, 1280)


@pytest.mark.slow
def test_student_vgg_style_cnn_branch(tmp_path) -> None:
    cfg = dataclasses.replace(TINY_STUDENT, efficientnet_variant="lite", cnn_filters=[8, 16],
                              cnn_convs=2)
    model = build_student(cfg, 32)
    one = build_student(dataclasses.replace(cfg, cnn_convs=1), 32)
    assert shape_of(model, "cnn_features") == shape_of(one, "cnn_features") == (None, 8, 8, 16)
    assert shape_of(model, "cnn_block_2_conv2") == (None, 16, 16, 16)  # before the pooling
    with pytest.raises(ValueError):
        one.get_layer("cnn_block_1_conv2")
    # the second convolution of each block: 8*8*9+8 and 16*16*9+16 weights, + 2 BN of 4 each
    assert model.count_params() - one.count_params() == (8 * 8 * 9 + 8 + 4 * 8) + (
        16 * 16 * 9 + 16 + 4 * 16)
    assert_reload_equal(model, tmp_path / "vgg_branch.keras", images(2, 32))


def test_student_effnet_gets_raw_pixels_and_rescales_once(student_concat) -> None:
    x = images(2, 32)
    # EfficientNet's own Rescaling(1/255) + (identity, unadapted) Normalization; then padding
    pre = keras.Model(student_concat.input, student_concat.get_layer("stem_conv_pad").input)(x)
    np.testing.assert_allclose(pre, x / 255.0, atol=1e-6)
    cnn = keras.Model(student_concat.input, student_concat.get_layer("cnn_block_1_conv").input)
    np.testing.assert_allclose(cnn(x), x / 255.0, atol=1e-6)


@pytest.mark.slow
def test_student_fusion_none_averages_exits(tmp_path) -> None:
    cfg = dataclasses.replace(TINY_STUDENT, efficientnet_variant="lite")
    model = build_student(cfg, 32, fusion="none")
    out = run(assert_reload_equal(model, tmp_path / "student_none.keras", images(3, 32)),
              images(3, 32))
    np.testing.assert_allclose(out["logits"], (out["cnn_exit"] + out["effnet_exit"]) / 2,
                               atol=1e-6)


@pytest.mark.slow
def test_student_save_reload(student_concat, tmp_path) -> None:
    loaded = assert_reload_equal(student_concat, tmp_path / "student.keras", images(3, 32))
    assert output_names(loaded) == ["cnn_exit", "effnet_exit", "logits"]
    loaded.get_layer("effnet_features")


def test_student_gradcam_reaches_effnet_features(student_concat) -> None:
    target = student_concat.get_layer("effnet_features").output
    probe = keras.Model(student_concat.input, [target, student_concat.output["logits"]])
    x = tf.constant(images(2, 32))
    with tf.GradientTape() as tape:
        feats, logits = probe(x)
        score = logits[:, 4]
    grads = tape.gradient(score, feats)
    assert grads is not None and grads.shape == feats.shape
    assert float(tf.reduce_max(tf.abs(grads))) > 0


@pytest.mark.slow
def test_student_loads_weights_file(student_concat, tmp_path) -> None:
    branch = keras.Model(student_concat.input,
                         student_concat.get_layer("effnet_features").output)
    path = tmp_path / "effnet.weights.h5"
    branch.save_weights(path)
    cfg = dataclasses.replace(TINY_STUDENT, weights=str(path))
    other = build_student(cfg, 32, fusion="concat")
    x = images(2, 32)
    other_branch = keras.Model(other.input, other.get_layer("effnet_features").output)
    np.testing.assert_allclose(other_branch(x), branch(x), atol=1e-5)
    with pytest.raises(ModelError, match="effnet.weights.h5"):  # wrong architecture (lite)
        build_student(dataclasses.replace(cfg, efficientnet_variant="lite"), 32)


@pytest.mark.parametrize("change, size, error, match", [
    ({"weights": "/nonexistent/effnet.h5"}, 32, ConfigError, "student.weights: /nonexistent"),
    ({"weights": "imagenet", "efficientnet_variant": "lite", "efficientnet": "B4"}, 32,
     ConfigError, "student.weights: imagenet weights exist for EfficientNet-Lite B0, B1, B2"),
    ({}, 16, ConfigError, "at least 32"),
    ({"cnn_filters": []}, 32, ConfigError, "student.cnn_filters"),
    ({"efficientnet": "B7"}, 32, ConfigError, "student.efficientnet"),
    ({"fusion": "sum"}, 32, ConfigError, "student.fusion"),
    ({"cnn_convs": 0}, 32, ConfigError, "student.cnn_convs must be 1, 2 or 3"),
    ({"effnet_stem_stride": 4}, 32, ConfigError, "student.effnet_stem_stride must be 1 or 2"),
    ({"effnet_stem_stride": 1, "efficientnet_variant": "standard"}, 32, ConfigError,
     "needs student.efficientnet_variant=lite"),
])
def test_student_invalid_config(change: dict, size: int, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        build_student(dataclasses.replace(TINY_STUDENT, **change), size)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- baseline, deploy


def test_baseline_shape_and_reload(tmp_path) -> None:
    model = build_baseline_cnn(32)
    assert output_names(model) == ["logits"]
    assert tuple(model.output["logits"].shape) == (None, NUM_CLASSES)
    # paper sizes: conv16 -> 15x15, conv32 -> 6x6x32 flattened into Dense128
    assert model.get_layer("dense").kernel.shape == (6 * 6 * 32, 128)
    assert_reload_equal(model, tmp_path / "baseline.keras", images(2, 32))


def test_to_deployable_outputs_probabilities(student_concat) -> None:
    deployed = to_deployable(student_concat)
    assert deployed.output_names == ["probs"] and output_names(deployed) == ["probs"]
    assert deployed.inputs[0].name == "image"
    x = images(4, 32)
    probs = run(deployed, x)["probs"]
    assert probs.shape == (4, NUM_CLASSES) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    logits = run(student_concat, x)["logits"]
    np.testing.assert_allclose(probs, tf.nn.softmax(logits).numpy(), atol=1e-5)
    assert count_params(deployed) < count_params(student_concat)  # exits not feeding logits


def test_to_deployable_baseline_predict_and_reload(tmp_path) -> None:
    deployed = to_deployable(build_baseline_cnn(32), name="baseline_deploy")
    x = images(3, 32)
    probs = deployed.predict(x, verbose=0)
    assert list(probs) == ["probs"] and deployed.name == "baseline_deploy"
    np.testing.assert_allclose(probs["probs"].sum(axis=1), 1.0, atol=1e-5)
    assert_reload_equal(deployed, tmp_path / "deployed.keras", x)


def test_to_deployable_renames_foreign_input() -> None:
    inp = keras.Input((8, 8, 3), name="pixels")
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(keras.layers.Flatten()(inp))
    deployed = to_deployable(keras.Model(inp, logits))
    assert deployed.inputs[0].name == "image" and deployed.output_names == ["probs"]
    np.testing.assert_allclose(run(deployed, images(1, 8))["probs"].sum(), 1.0, atol=1e-5)


def _dense_model(input_shape: tuple, out_name: str, units: int) -> keras.Model:
    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten()(inp) if len(input_shape) > 1 else inp
    return keras.Model(inp, {out_name: keras.layers.Dense(units, name=out_name)(x)})


@pytest.mark.parametrize("model, match", [
    (lambda: _dense_model((8, 8, 3), "scores", NUM_CLASSES), "'logits' output"),
    (lambda: _dense_model((8, 8, 3), "logits", 3), r"shape \(None, 7\)"),
    (lambda: _dense_model((12,), "logits", NUM_CLASSES), "rank 4"),
    (lambda: keras.Sequential([keras.layers.Dense(7)]), "not a functional Keras model"),
])
def test_to_deployable_rejects_bad_models(model, match: str) -> None:
    with pytest.raises(ModelError, match=match) as info:
        to_deployable(model())
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- layers


def test_custom_layers_round_trip_config() -> None:
    scale = LayerScale(1e-3, 4, name="ls")
    clone = LayerScale.from_config(scale.get_config())
    assert (clone.init_values, clone.projection_dim, clone.name) == (1e-3, 4, "ls")
    x = np.ones((2, 3, 4), "float32")
    np.testing.assert_allclose(clone(x), x * 1e-3, rtol=1e-6)
    pos = PositionEmbedding(name="pe")
    y = pos(x)
    np.testing.assert_allclose(y - x, np.broadcast_to(pos.embedding.numpy(), (2, 3, 4)),
                               atol=1e-7)
    assert PositionEmbedding.from_config(pos.get_config()).name == "pe"
    assert keras.saving.get_registered_name(LayerScale) == "kdskin>LayerScale"
    assert keras.saving.get_registered_name(PositionEmbedding) == "kdskin>PositionEmbedding"


@pytest.mark.slow
def test_residual_fusion_starts_as_the_exit_ensemble_and_learns_from_features(tmp_path) -> None:
    """The residual head = average of the exits + an MLP on the concatenated features whose last
    layer starts at zero: at init it equals the unfused student; once that layer is non-zero the
    fused features change the logits."""
    from kdskin.distill import student_fusion

    cfg = dataclasses.replace(TINY_STUDENT, efficientnet_variant="lite", fusion="residual")
    model = build_student(cfg, 32)
    assert student_fusion(model) == "residual"
    x = images(3, 32)
    out = run(model, x)
    np.testing.assert_allclose(out["logits"], (out["cnn_exit"] + out["effnet_exit"]) / 2,
                               atol=1e-5)
    head = model.get_layer("fusion_logits")
    kernel, bias = head.get_weights()
    head.set_weights([np.random.default_rng(0).normal(0, 1, kernel.shape).astype("float32"),
                      bias])
    out = run(assert_reload_equal(model, tmp_path / "residual.keras", x), x)
    assert not np.allclose(out["logits"], (out["cnn_exit"] + out["effnet_exit"]) / 2, atol=1e-3)
    assert student_fusion(build_student(dataclasses.replace(cfg, fusion="concat"), 32)) == \
        "concat"


# --------------------------------------------------------------------------- specs


def test_specs_name_what_the_builders_build() -> None:
    """The keras-free specs (what config validation reads) match the built models."""
    from kdskin.models.efficientnet_lite import LITE_COEFFICIENTS
    from kdskin.models.specs import EFFICIENTNETS, STUDENT_OUTPUTS, teacher_output_names
    from kdskin.models.student import KERAS_EFFICIENTNETS

    assert tuple(KERAS_EFFICIENTNETS) == EFFICIENTNETS == tuple(LITE_COEFFICIENTS)
    teacher = build_teacher(TINY_TEACHER, 32)
    assert output_names(teacher) == teacher_output_names(TINY_TEACHER)
    assert output_names(teacher)[-1] == "logits" and "conv_exit_3" in output_names(teacher)
    assert tuple(output_names(build_student(TINY_STUDENT, 32, fusion="none"))) == STUDENT_OUTPUTS


@pytest.mark.parametrize("size, build", [
    (8, lambda size: build_baseline_cnn(size)),
    (4, lambda size: build_teacher(TINY_TEACHER, size)),
    (16, lambda size: build_student(TINY_STUDENT, size)),
])
def test_builders_name_the_image_size_key(size: int, build) -> None:
    with pytest.raises(ConfigError, match=r"^data\.image_size must be an integer of at least"):
        build(size)


def test_lite_builder_rejects_an_unknown_size_as_a_config_error() -> None:
    from kdskin.models.efficientnet_lite import efficientnet_lite

    with pytest.raises(ConfigError, match="student.efficientnet must be one of B0"):
        efficientnet_lite(keras.Input((32, 32, 3)), "B7")
