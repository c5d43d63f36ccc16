"""The border-fill layer at the model's input: which pixels it takes for border, what it fills
them with, the builders, the config, the saved file and the int8 export (float32 at the input,
the effect in the file)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kdskin.config import load_config
from kdskin.constants import NUM_CLASSES
from kdskin.data.shifts import black_frame, circle_vignette
from kdskin.errors import ConfigError, ModelError
from kdskin.models.layers import BORDER_FILL_NAME, COLOUR_CONSTANCY_NAME, BorderFill

SIZE = 32


def _skin(n: int = 3, seed: int = 0) -> np.ndarray:
    """(n, SIZE, SIZE, 3) uint8 textured skin-like images, every channel in 90..200."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(90, 200, (n, SIZE, SIZE, 3))
    return base.astype(np.uint8)


def _fill(x: np.ndarray, layer: BorderFill | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(output, mask)`` of the layer on uint8 images: (n, S, S, 3) float32, (n, S, S) bool."""
    layer = layer or BorderFill()
    xf = x.astype(np.float32)
    out = np.asarray(keras.ops.convert_to_numpy(layer(xf)))
    mask = np.asarray(keras.ops.convert_to_numpy(layer.mask(xf)))[..., 0] > 0.5
    return out, mask


def _grown(mask: np.ndarray, grow: int = 1) -> np.ndarray:
    """``mask`` (n, H, W) bool dilated by a (2 grow + 1) square."""
    padded = np.pad(mask, ((0, 0), (grow, grow), (grow, grow)))
    h, w = mask.shape[1:]
    out = np.zeros_like(mask)
    for dy in range(2 * grow + 1):
        for dx in range(2 * grow + 1):
            out |= padded[:, dy:dy + h, dx:dx + w]
    return out


def test_an_image_without_a_border_passes_unchanged():
    x = _skin()
    out, mask = _fill(x)
    assert not mask.any()
    np.testing.assert_array_equal(out, x.astype(np.float32))


@pytest.mark.parametrize("shift", [circle_vignette, black_frame])
def test_a_black_border_is_filled_with_the_mean_colour_of_the_rest(shift):
    x = _skin()
    shifted = shift(x)
    black = (shifted == 0).all(axis=-1)
    assert black.mean() > 0.1  # the shift drew a border
    out, mask = _fill(shifted)
    assert (mask >= black).all() and (mask <= _grown(black)).all()  # the border, grown by 1
    assert (mask & ~black).any()  # the anti-aliasing rim taken too
    for i in range(len(x)):
        kept = shifted[i][~mask[i]].astype(np.float64)
        np.testing.assert_allclose(out[i][mask[i]], np.tile(kept.mean(axis=0), (mask[i].sum(), 1)),
                                   rtol=1e-4)
        np.testing.assert_array_equal(out[i][~mask[i]], kept)
    assert out.min() >= 90.0  # no black left


def test_a_dark_lesion_inside_the_field_is_kept():
    x = _skin()
    x[:, 12:20, 12:20] = 4  # darker than the threshold, not joined to an edge
    out, mask = _fill(circle_vignette(x))
    assert not mask[:, 10:22, 10:22].any()
    np.testing.assert_array_equal(out[:, 12:20, 12:20], 4.0)


def test_a_dark_field_reaching_the_edge_counts_as_border():
    """Documented limit: a dark region joined to an edge by a row of dark pixels is border."""
    x = _skin(1)
    x[:, 14:18, :10] = 3  # a dark band from the left edge
    _, mask = _fill(x, BorderFill(grow=0))
    assert mask[0, 14:18, :10].all() and mask.sum() == 4 * 10


def test_a_whole_dark_image_stays_black():
    out, mask = _fill(np.full((1, SIZE, SIZE, 3), 5, np.uint8))
    assert mask.all()
    np.testing.assert_array_equal(out, 0.0)


def test_threshold_and_grow_are_checked():
    with pytest.raises(ValueError, match="threshold must be in"):
        BorderFill(threshold=0.0)
    with pytest.raises(ValueError, match="grow must be a whole number"):
        BorderFill(grow=-1)
    with pytest.raises(ValueError, match="grow must be a whole number"):
        BorderFill(grow=1.5)


def test_config_key_and_its_int8_check():
    assert load_config().data.border_fill is False
    assert load_config(overrides=["data.border_fill=true"]).data.border_fill is True
    with pytest.raises(ConfigError, match="data.border_fill.*export.int8_head=float"):
        load_config(overrides=["data.border_fill=true", "export.int8_head=int8"])


# --------------------------------------------------------------------------- builders


def _builders():
    from kdskin.models import build_baseline_cnn, build_student, build_teacher
    from kdskin.models.reference import build_reference_cnn, build_reference_effnet
    from tests.test_models import TINY_STUDENT, TINY_TEACHER

    kw = {"colour_constancy": 6.0, "border_fill": True}
    return {
        "baseline_cnn": lambda: build_baseline_cnn(SIZE, **kw),
        "reference_cnn": lambda: build_reference_cnn(SIZE, (8, 16), **kw),
        "reference_effnet": lambda: build_reference_effnet(SIZE, "B0", "none", **kw),
        "teacher": lambda: build_teacher(TINY_TEACHER, SIZE, **kw),
        "student": lambda: build_student(TINY_STUDENT, SIZE, **kw),
    }


@pytest.mark.parametrize("name", ["baseline_cnn", "reference_cnn", "reference_effnet",
                                  "teacher", "student"])
def test_every_builder_fills_the_border_before_colour_constancy(name):
    from kdskin.models.inputs import float_front_of

    model = _builders()[name]()
    fill = model.get_layer(BORDER_FILL_NAME)
    assert isinstance(fill, BorderFill)
    assert fill.input is model.inputs[0]
    assert model.get_layer(COLOUR_CONSTANCY_NAME).input is fill.output
    assert float_front_of(model) == [BORDER_FILL_NAME, COLOUR_CONSTANCY_NAME]


def test_saved_and_reloaded_model_is_equal(tmp_path):
    from kdskin.models import build_baseline_cnn
    from kdskin.models.contract import load_keras

    keras.utils.set_random_seed(0)
    model = build_baseline_cnn(SIZE, border_fill=True)
    model.save(tmp_path / "m.keras")
    loaded = load_keras(tmp_path / "m.keras")
    x = black_frame(_skin()).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["logits"],
                               model.predict(x, verbose=0)["logits"], rtol=1e-5, atol=1e-5)
    layer = loaded.get_layer(BORDER_FILL_NAME)
    assert isinstance(layer, BorderFill) and (layer.threshold, layer.grow) == (24.0, 1)


# --------------------------------------------------------------------------- int8 export


def brightness_model(border_fill: bool) -> keras.Model:
    """logits = 10 x (mean of the image's pixels, 0..1) - 5 for class 0 and 0 for the rest, after
    a centrable first conv (an identity 1x1): class 0's probability reads the mean brightness."""
    from kdskin.models.inputs import image_input

    image, pixels = image_input(SIZE, None, border_fill)
    x = keras.layers.Rescaling(1.0 / 255.0)(pixels)
    conv = keras.layers.Conv2D(3, 1, name="identity")
    x = conv(x)
    conv.set_weights([np.eye(3, dtype=np.float32)[None, None], np.zeros(3, np.float32)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(NUM_CLASSES, name="logits")
    logits = dense(x)
    kernel = np.zeros((3, NUM_CLASSES), np.float32)
    kernel[:, 0] = 10.0 / 3.0
    bias = np.zeros(NUM_CLASSES, np.float32)
    bias[0] = -5.0
    dense.set_weights([kernel, bias])
    return keras.Model(image, {"logits": logits}, name="brightness")


@pytest.mark.slow
def test_the_int8_file_fills_the_border_in_float(tmp_path):
    """Inside the int8 file, a framed or vignetted image scores like the image without its
    border; the same model without the layer (checked in Keras) scores it far lower, so the
    test fails if the layer is not in the file."""
    from kdskin.export.check import keras_probs
    from kdskin.export.convert import export_tflite
    from kdskin.export.graph import float_ops
    from kdskin.export.litert import TFLiteClassifier

    clean = np.full((4, SIZE, SIZE, 3), 150, np.uint8) + _skin(4, seed=1) // 16
    bordered = np.concatenate([black_frame(clean[:2]), circle_vignette(clean[2:])])
    plain = keras_probs(brightness_model(False), bordered)[:, 0]
    target = keras_probs(brightness_model(False), clean)[:, 0]
    assert (target - plain).min() > 0.1  # the border darkens the plain model's view

    model = brightness_model(True)
    info: dict = {}
    files = export_tflite(model, tmp_path, clean, kinds=("fp32", "int8"), info=info,
                          app_factor=0)
    assert any(BORDER_FILL_NAME in name for name in info["int8_float_front"])
    assert "CUMSUM" in float_ops(files["int8"])  # the mask is computed in float32
    assert info["centred_convs"] == ["identity"]  # the first conv is centred behind the layer
    ref = keras_probs(model, bordered)
    np.testing.assert_allclose(ref[:, 0], target, atol=0.01)
    np.testing.assert_allclose(TFLiteClassifier(files["fp32"]).predict(bordered), ref, atol=1e-4)
    np.testing.assert_allclose(TFLiteClassifier(files["int8"]).predict(bordered)[:, 0],
                               target, atol=0.02)
    with pytest.raises(ModelError, match=r"input layers \(border_fill\).*int8_head='float'"):
        export_tflite(model, tmp_path / "all_int8", clean, kinds=("int8",), int8_head="int8")
