"""Colour constancy inside the model: the layer's numbers, the builders, the config, the saved
file, and the int8 export (the ops stay float32 at the input, the effect survives)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from kdskin.config import load_config
from kdskin.constants import NUM_CLASSES
from kdskin.errors import ConfigError, ModelError
from kdskin.models.layers import (
    COLOUR_CONSTANCY_NAME,
    HAM_BLACK_RGB,
    HAM_MEAN_RGB,
    HAM_SPAN_RGB,
    HAM_STD_RGB,
    AutoLevels,
    ColourConstancy,
    ColourStandardise,
)
from kdskin.models.specs import colour_constancy_spec

SIZE = 32
CAST = np.array([1.25, 1.0, 0.75], np.float32)


def _images(n: int = 4, low: float = 40.0, high: float = 150.0, seed: int = 0) -> np.ndarray:
    """(n, SIZE, SIZE, 3) float32 with per-channel structure (not grey), no value near 255."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(low, high, (n, SIZE, SIZE, 3))
    base[..., 0] *= np.linspace(0.7, 1.0, SIZE)[None, :, None]  # channels differ in shape
    return base.astype(np.float32)


def _run(layer: keras.layers.Layer, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(layer(x)))


# --------------------------------------------------------------------------- the layer


def test_grey_world_gives_equal_channel_means():
    x = _images() * CAST
    out = _run(ColourConstancy(1.0), x)
    means = out.mean(axis=(1, 2))  # (n, 3)
    assert out.max() < 255.0  # no clipping in this test
    # equal up to the layer's epsilon (1e-3 of 255 added to each norm): mean_c (1 - eps / n_c)
    np.testing.assert_allclose(means, means[:, :1].repeat(3, axis=1), rtol=5e-3)
    assert np.ptp(x.mean(axis=(1, 2)), axis=1).min() > 10  # the input's were not equal


def test_shades_of_grey_removes_a_colour_cast():
    """A cast by per-channel gains is divided out; what remains is one global factor
    rms(gains * n) / rms(n) (published Shades of Grey normalises the chromaticity)."""
    x = _images()
    cast = x * CAST
    layer = ColourConstancy(6.0)
    a, b = _run(layer, x), _run(layer, cast)
    assert np.abs(cast - x).mean() > 10.0
    k = b.sum() / a.sum()  # the one factor left: rms(gains * n) / rms(n), about 1.02 here
    assert 0.98 < k < 1.05
    np.testing.assert_allclose(b, k * a, atol=0.6)
    chroma = lambda y: y.mean(axis=(1, 2)) / y.mean(axis=(1, 2, 3))[:, None]  # noqa: E731
    np.testing.assert_allclose(chroma(a), chroma(b), atol=2e-3)


def test_power_one_and_six_differ_and_output_is_clipped():
    x = _images()
    x[:, :4, :4, 2] = 250.0  # a bright corner: the 6-norm weighs it more than the mean does
    grey, sog = _run(ColourConstancy(1.0), x), _run(ColourConstancy(6.0), x)
    assert np.abs(grey - sog).mean() > 1.0
    bright = np.full((1, SIZE, SIZE, 3), 250.0, np.float32)
    bright[..., 2] = 20.0  # a strong blue deficit: the gain pushes blue past 255 nowhere, but
    out = _run(ColourConstancy(6.0), bright)  # red/green get scaled down, blue up
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert out.dtype == np.float32 and out.shape == bright.shape


def test_black_image_stays_black_and_finite():
    out = _run(ColourConstancy(6.0), np.zeros((2, SIZE, SIZE, 3), np.float32))
    assert np.isfinite(out).all() and out.max() == 0.0


def test_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="power must be at least 1"):
        ColourConstancy(0.5)
    with pytest.raises(ValueError, match="epsilon must be positive"):
        ColourConstancy(6.0, epsilon=0.0)


def _whiter(x: np.ndarray, amount: float = 0.3) -> np.ndarray:
    """Over-exposure as the shift suite's ``whiter``: ``255 - (1 - amount) (255 - x)``."""
    return 255.0 - (1.0 - amount) * (255.0 - x)


def test_standardise_gives_the_reference_mean_and_contrast():
    x = _images() * CAST
    out = _run(ColourStandardise(), x)
    assert out.min() > 0.0 and out.max() < 255.0  # no clipping in this test
    np.testing.assert_allclose(out.mean(axis=(1, 2)), np.tile(HAM_MEAN_RGB, (4, 1)), atol=1e-3)
    np.testing.assert_allclose(out.std(axis=(1, 2)), np.tile(HAM_STD_RGB, (4, 1)), rtol=1e-4)
    custom = _run(ColourStandardise((100.0, 110.0, 120.0), (10.0, 20.0, 30.0)), x)
    np.testing.assert_allclose(custom.mean(axis=(1, 2))[0], [100.0, 110.0, 120.0], atol=1e-3)
    np.testing.assert_allclose(custom.std(axis=(1, 2))[0], [10.0, 20.0, 30.0], rtol=1e-4)


@pytest.mark.parametrize("layer", [ColourStandardise(), AutoLevels()], ids=lambda x: x.name)
def test_affine_layers_remove_casts_and_over_exposure_which_shades_of_grey_keeps(layer):
    """Any per-channel affine change goes: a cast (gains), over-exposure (towards white), both.
    Shades of Grey removes the cast but not over-exposure (the lesion's contrast is lower)."""
    x = _images()
    changed = {"cast": x * CAST, "whiter": _whiter(x), "both": _whiter(x * CAST)}
    clean = _run(layer, x)
    for name, y in changed.items():
        assert np.abs(y - x).mean() > 10.0, name
        np.testing.assert_allclose(_run(layer, y), clean, atol=1e-2, err_msg=name)
    sog = ColourConstancy(6.0)
    assert np.abs(_run(sog, changed["whiter"]) - _run(sog, x)).mean() > 10.0


def test_standardise_of_a_flat_image_is_finite_and_clipped():
    flat = np.full((2, SIZE, SIZE, 3), 90.0, np.float32)  # std 0: below min_std
    out = _run(ColourStandardise(), flat)
    np.testing.assert_allclose(out, np.broadcast_to(HAM_MEAN_RGB, out.shape), atol=1e-3)
    spike = np.zeros((1, SIZE, SIZE, 3), np.float32)
    spike[0, 0, 0] = 255.0  # one white pixel: far beyond 3 standard deviations
    out = _run(ColourStandardise(), spike)
    assert np.isfinite(out).all() and out.max() == 255.0 and out.min() >= 0.0


def test_auto_levels_sets_the_black_point_and_span_and_keeps_contrast():
    """Each channel's minimum goes to the reference black and the 6-norm above it to the
    reference span; a lower-contrast lesion on the same skin stays lower in contrast (which
    standardisation undoes)."""
    x = _images(2, 60, 160, seed=2)
    black, span = (20.0, 30.0, 40.0), (80.0, 90.0, 100.0)
    out = _run(AutoLevels(black=black, span=span), x)
    assert out.max() < 255.0  # no clipping in this test
    np.testing.assert_allclose(out.min(axis=(1, 2)), np.tile(black, (2, 1)), atol=1e-3)
    above = (out - np.asarray(black, np.float32)) / 255.0
    norm = 255.0 * np.mean(above ** 6, axis=(1, 2)) ** (1 / 6)
    np.testing.assert_allclose(norm, np.tile(span, (2, 1)), rtol=1e-4)
    default = AutoLevels()
    assert (default.black, default.span) == (HAM_BLACK_RGB, HAM_SPAN_RGB)
    skin = np.full((2, SIZE, SIZE, 3), 200.0, np.float32)
    skin[0, 8:24, 8:24] = 60.0  # a dark lesion
    skin[1, 8:24, 8:24] = 140.0  # a faint one
    skin[:, 0, 0] = 20.0  # the same black point in both
    contrast = lambda y: (y[:, 0, SIZE - 1] - y[:, 16, 16]).mean(axis=-1)  # noqa: E731
    levels, std = _run(AutoLevels(), skin), _run(ColourStandardise(), skin)
    assert contrast(levels)[0] > 1.5 * contrast(levels)[1]
    assert contrast(std)[1] > 0.8 * contrast(std)[0]


def test_auto_levels_rejects_bad_arguments():
    with pytest.raises(ValueError, match="power must be at least 1"):
        AutoLevels(0.5)
    with pytest.raises(ValueError, match="black must be 3 values in 0..255"):
        AutoLevels(black=(300.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="min_span must be positive"):
        AutoLevels(min_span=-1.0)


def test_standardise_rejects_bad_arguments():
    with pytest.raises(ValueError, match="target_mean must be 3 values in 0..255"):
        ColourStandardise((1.0, 2.0))
    with pytest.raises(ValueError, match="target_std 3 positive values"):
        ColourStandardise(target_std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="min_std must be positive"):
        ColourStandardise(min_std=0.0)


# --------------------------------------------------------------------------- config and builders


def test_config_colour_constancy_values():
    assert load_config().data.colour_constancy == "none"
    assert load_config().data.colour_spec() is None
    assert load_config(overrides=["data.colour_constancy=grey_world"]).data.colour_spec() == 1.0
    cfg = load_config(overrides=["data.colour_constancy=shades_of_grey",
                                 "data.colour_constancy_p=4"])
    assert cfg.data.colour_spec() == 4.0
    assert colour_constancy_spec("shades_of_grey") == 6.0
    for method in ("standardise", "auto_levels"):
        assert load_config(overrides=[f"data.colour_constancy={method}"]).data.colour_spec() \
            == method
    with pytest.raises(ConfigError, match="data.colour_constancy' must be one of"):
        load_config(overrides=["data.colour_constancy=retinex"])
    with pytest.raises(ConfigError, match=r"data.colour_constancy_p must be a number in \[1, 16\]"):
        load_config(overrides=["data.colour_constancy=shades_of_grey",
                               "data.colour_constancy_p=0.5"])
    with pytest.raises(ConfigError, match="export.int8_head=int8"):
        load_config(overrides=["data.colour_constancy=grey_world", "export.int8_head=int8"])


def _builders():
    from kdskin.models import build_baseline_cnn, build_student, build_teacher
    from kdskin.models.reference import build_reference_cnn, build_reference_effnet
    from tests.test_models import TINY_STUDENT, TINY_TEACHER

    return {
        "baseline_cnn": lambda cc: build_baseline_cnn(SIZE, colour_constancy=cc),
        "reference_cnn": lambda cc: build_reference_cnn(SIZE, (8, 16), colour_constancy=cc),
        "reference_effnet": lambda cc: build_reference_effnet(SIZE, "B0", "none",
                                                              colour_constancy=cc),
        "teacher": lambda cc: build_teacher(TINY_TEACHER, SIZE, colour_constancy=cc),
        "student": lambda cc: build_student(TINY_STUDENT, SIZE, colour_constancy=cc),
    }


@pytest.mark.parametrize("name", ["baseline_cnn", "reference_cnn", "reference_effnet",
                                  "teacher", pytest.param("student", marks=pytest.mark.slow)])
def test_every_builder_puts_the_layer_right_after_the_input(name):
    from kdskin.models.inputs import colour_constancy_of

    build = _builders()[name]
    model = build(6.0)
    layer = model.get_layer(COLOUR_CONSTANCY_NAME)
    assert isinstance(layer, ColourConstancy) and layer.power == 6.0
    assert layer.input is model.inputs[0]  # fed by the image input itself
    def reads_image(other: keras.layers.Layer) -> bool:
        try:
            inputs = keras.tree.flatten(other.input)
        except (AttributeError, ValueError):  # an input layer, or a layer used twice
            return False
        return any(t is model.inputs[0] for t in inputs)

    assert [lyr.name for lyr in model.layers if lyr is not layer and reads_image(lyr)] == []
    assert colour_constancy_of(model) == 6.0
    assert colour_constancy_of(build(None)) is None
    for spec, kind in (("standardise", ColourStandardise), ("auto_levels", AutoLevels)):
        other = build(spec)
        layer = other.get_layer(COLOUR_CONSTANCY_NAME)
        assert isinstance(layer, kind) and layer.input is other.inputs[0]
        assert colour_constancy_of(other) == spec


def test_saved_and_reloaded_model_is_equal(tmp_path):
    from kdskin.models import build_baseline_cnn
    from kdskin.models.contract import load_keras

    keras.utils.set_random_seed(0)
    model = build_baseline_cnn(SIZE, colour_constancy=6.0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_keras(path)
    x = _images(3) * CAST
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["logits"],
                               model.predict(x, verbose=0)["logits"], rtol=1e-5, atol=1e-5)
    layer = loaded.get_layer(COLOUR_CONSTANCY_NAME)
    assert isinstance(layer, ColourConstancy) and layer.power == 6.0


@pytest.mark.parametrize("spec", ["standardise", "auto_levels"])
def test_saved_and_reloaded_affine_layer_is_equal(tmp_path, spec):
    from kdskin.models.contract import load_keras
    from kdskin.models.inputs import image_input

    image, pixels = image_input(SIZE, spec)
    pooled = keras.layers.GlobalMaxPooling2D()(pixels)  # each channel's brightest value
    model = keras.Model(image, {"logits": keras.layers.Dense(NUM_CLASSES, name="logits")(pooled)})
    path = tmp_path / "s.keras"
    model.save(path)
    loaded = load_keras(path)
    saved, layer = model.get_layer(COLOUR_CONSTANCY_NAME), loaded.get_layer(COLOUR_CONSTANCY_NAME)
    assert type(layer) is type(saved) and layer.get_config() == saved.get_config()
    x = _whiter(_images(3) * CAST)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["logits"],
                               model.predict(x, verbose=0)["logits"], atol=1e-4)


# --------------------------------------------------------------------------- int8 export

#: Grey levels of the stand-in's three classes (0, 3, 6): brightness, which colour constancy
#: keeps (up to a few percent), while it removes the random colour casts of the images.
CLASSES_USED = np.array([0, 3, 6])
LEVELS = {0: 50.0, 3: 130.0, 6: 210.0}


def brightness_data(n_per_class: int = 40, seed: int = 0, cast: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(N, SIZE, SIZE, 3) uint8 near-grey images whose class (0, 3 or 6) is their brightness;
    with ``cast``, each image gets random per-channel gains in [0.8, 1.2]."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(CLASSES_USED, n_per_class)
    level = np.array([LEVELS[c] for c in labels])
    x = level[:, None, None, None] + rng.normal(0, 8, (len(labels), SIZE, SIZE, 3))
    if cast:
        x = x * rng.uniform(0.8, 1.2, (len(labels), 1, 1, 3))
    order = rng.permutation(len(labels))
    return np.clip(x, 0, 255).astype(np.uint8)[order], labels[order]


def cc_classifier() -> keras.Model:
    """A stand-in kdskin classifier with Shades of Grey after the input (like the builders)."""
    from kdskin.models.inputs import image_input

    image, pixels = image_input(SIZE, 6.0)
    x = keras.layers.Rescaling(1.0 / 255.0)(pixels)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(image, {"logits": logits}, name="tiny_cc")


@pytest.fixture(scope="module")
def exported_cc(tmp_path_factory: pytest.TempPathFactory):
    from kdskin.export.convert import export_tflite

    keras.utils.set_random_seed(0)
    model = cc_classifier()
    images, labels = brightness_data()
    model.compile(keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(images.astype(np.float32), labels, epochs=25, batch_size=16, verbose=0)
    info: dict = {}
    files = export_tflite(model, tmp_path_factory.mktemp("cc"), images[:64],
                          kinds=("fp32", "int8"), info=info)
    return model, files, info


@pytest.mark.slow
def test_int8_keeps_colour_constancy_in_float_and_agrees_with_keras(exported_cc):
    from kdskin.export.check import keras_probs
    from kdskin.export.graph import float_ops
    from kdskin.export.litert import TFLiteClassifier

    model, files, info = exported_cc
    front = info["int8_float_front"]
    assert front and all(COLOUR_CONSTANCY_NAME in name for name in front)
    assert "POW" in float_ops(files["int8"])  # the 6-norm runs in float32
    assert info["centred_convs"]  # the first conv is still centred behind the layer
    clf = TFLiteClassifier(files["int8"])
    assert clf.input_dtype == np.uint8
    images, labels = brightness_data(n_per_class=10, seed=7)  # held out
    ref = keras_probs(model, images)
    assert np.mean(ref.argmax(1) == labels) >= 0.9  # the stand-in learnt its task
    got = clf.predict(images)
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.95
    np.testing.assert_allclose(TFLiteClassifier(files["fp32"]).predict(images), ref, atol=1e-4)


def channel_balance_model(colour_constancy: float | str | None,
                          class_3: float = 0.0) -> keras.Model:
    """logits = 20 x the mean of R, G, B (0..1) for classes 0..2, ``class_3`` for class 3 and 0
    for the rest: the probabilities of classes 0..2 are equal exactly when the channel means
    are; with ``class_3`` > 0, class 3 wins over dark images and loses over bright ones."""
    from kdskin.models.inputs import image_input

    image, pixels = image_input(SIZE, colour_constancy)
    x = keras.layers.Rescaling(1.0 / 255.0)(pixels)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(NUM_CLASSES, name="logits")
    logits = dense(x)
    kernel = np.zeros((3, NUM_CLASSES), np.float32)
    kernel[[0, 1, 2], [0, 1, 2]] = 20.0
    bias = np.zeros(NUM_CLASSES, np.float32)
    bias[3] = class_3
    dense.set_weights([kernel, bias])
    return keras.Model(image, {"logits": logits}, name="balance")


@pytest.mark.slow
def test_the_int8_file_applies_grey_world(tmp_path):
    """Grey world inside the int8 file: a strongly cast image comes out with equal channel
    means, so classes 0..2 get equal probabilities; the same model without the layer (checked
    in Keras) gives them far apart, so the test fails if the layer is not in the file."""
    from kdskin.export.check import keras_probs
    from kdskin.export.convert import export_tflite
    from kdskin.export.litert import TFLiteClassifier

    images = np.clip(_images(6, 60, 160, seed=3) * CAST, 0, 255).astype(np.uint8)
    plain = keras_probs(channel_balance_model(None), images)[:, :3]
    assert (plain.max(1) - plain.min(1)).min() > 0.1
    model = channel_balance_model(1.0)
    files = export_tflite(model, tmp_path, images, kinds=("int8",), centre_input=False)
    probs = TFLiteClassifier(files["int8"]).predict(images)[:, :3]
    assert (probs.max(1) - probs.min(1)).max() < 0.02
    np.testing.assert_allclose(probs, keras_probs(model, images)[:, :3], atol=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["standardise", "auto_levels"])
def test_the_int8_file_applies_the_affine_layer(tmp_path, spec):
    """Standardisation or auto levels inside the int8 file: an image, its colour-cast and its
    over-exposed copies get the same probabilities, where the same model without the layer
    tells them apart."""
    from kdskin.export.check import keras_probs
    from kdskin.export.convert import export_tflite
    from kdskin.export.litert import TFLiteClassifier

    x = _images(4, 10, 60, seed=5)  # dark: over-exposure moves the plain logits far
    variants = [np.clip(np.round(v), 0, 255).astype(np.uint8)
                for v in (x, x * np.array([1.6, 1.0, 0.6], np.float32), _whiter(x))]
    plain = [keras_probs(channel_balance_model(None, 5.0), v)[:, :4] for v in variants]
    assert min(np.abs(plain[0] - p).max() for p in plain[1:]) > 0.1
    model = channel_balance_model(spec, 5.0)
    files = export_tflite(model, tmp_path, np.concatenate(variants), kinds=("int8",),
                          centre_input=False)
    clf = TFLiteClassifier(files["int8"])
    got = [clf.predict(v)[:, :4] for v in variants]
    for g in got[1:]:
        np.testing.assert_allclose(g, got[0], atol=0.02)
    np.testing.assert_allclose(got[0], keras_probs(model, variants[0])[:, :4], atol=0.02)


@pytest.mark.slow
def test_all_integer_int8_refuses_colour_constancy(exported_cc, tmp_path):
    from kdskin.export.convert import export_tflite

    model, _, _ = exported_cc
    images, _ = brightness_data(n_per_class=2)
    with pytest.raises(ModelError, match=r"input layers \(colour_constancy\).*int8_head='float'"):
        export_tflite(model, tmp_path, images, kinds=("int8",), int8_head="int8")


def test_image_input_refuses_an_unknown_colour_layer_name():
    from kdskin.models.inputs import image_input

    with pytest.raises(ValueError, match=r"one of \['auto_levels', 'standardise'\], got 'retinex'"):
        image_input(SIZE, "retinex")


def test_builders_default_to_no_layer():
    from kdskin.models import build_baseline_cnn

    model = build_baseline_cnn(SIZE)
    assert not any(isinstance(lyr, ColourConstancy) for lyr in model.layers)
    assert dataclasses.fields(load_config().data)  # the config still loads with the new keys
