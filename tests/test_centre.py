"""The exact input-centring rewrite of "Rescaling -> first Conv2D" used before TFLite export."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kdskin.config import load_config
from kdskin.export.centre import CENTRE, centrable_convs, centre_first_convs
from kdskin.models import build_student
from kdskin.models.contract import deployable


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random 0..255 images with the extreme values 0 and 255 present on the borders."""
    x = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)
    x[:, 0, :, :] = 0.0
    x[:, -1, :, :] = 255.0
    return x


def _model(size: int, scale: float = 1 / 255, offset: float = 0.0, **conv: object
           ) -> keras.Model:
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(scale, offset=offset, name="rescale")(image)
    x = keras.layers.Conv2D(8, 3, name="first", **conv)(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(7, name="logits")(x)
    return keras.Model(image, {"logits": logits})


@pytest.mark.parametrize(("size", "conv", "scale", "offset"), [
    (16, {"padding": "same"}, 1 / 255, 0.0),
    (17, {"padding": "same", "strides": 2}, 1 / 255, 0.0),  # odd size: asymmetric TF padding
    (16, {"padding": "same", "strides": 2, "use_bias": False}, 1 / 128, -127 / 128),
    (16, {"padding": "valid", "activation": "relu"}, 1 / 255, 0.0),
])
def test_rewrite_computes_the_same_function(size, conv, scale, offset):
    keras.utils.set_random_seed(0)
    model = _model(size, scale, offset, **conv)
    # Non-trivial BN statistics, so the folded bias matters.
    bn = model.get_layer("bn")
    bn.set_weights([np.full(8, 1.5), np.full(8, 0.2), np.linspace(-1, 1, 8), np.full(8, 2.0)])
    new, names = centre_first_convs(model)
    assert names == ["first"]
    x = _pixels(4, size)
    ref = model.predict(x, verbose=0)["logits"]
    got = new.predict(x, verbose=0)["logits"]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    # The rewritten conv sees x - 128: its input layer is the centring, not the rescaling.
    centred = new.get_layer("first_centred")
    assert np.allclose(keras.ops.convert_to_numpy(centred.kernel),
                       scale * keras.ops.convert_to_numpy(model.get_layer("first").kernel))
    assert new.get_layer("first_centre").offset == -CENTRE
    assert new.get_layer("bn") is bn  # everything else is shared, not copied


@pytest.mark.parametrize("case", ["bn_between", "per_channel_scale", "dilated", "no_rescale"])
def test_other_patterns_are_left_alone(case):
    image = keras.Input((16, 16, 3), name="image")
    if case == "per_channel_scale":
        x = keras.layers.Rescaling([1 / 255, 1 / 200, 1 / 100])(image)
    elif case == "no_rescale":
        x = image
    else:
        x = keras.layers.Rescaling(1 / 255)(image)
    if case == "bn_between":
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(4, 3, dilation_rate=2 if case == "dilated" else 1)(x)
    logits = keras.layers.Dense(7, name="logits")(keras.layers.Flatten()(x))
    model = keras.Model(image, {"logits": logits})
    assert centrable_convs(model) == {}
    same, names = centre_first_convs(model)
    assert same is model and names == []


@pytest.mark.slow
def test_student_rewrite_is_exact_and_shrinks_weight_error():
    """Both branches' first convolutions are rewritten; outputs equal; and int8 rounding of the
    rewritten CNN conv's weights perturbs its output less on skin-coloured images."""
    cfg = load_config("tests/configs/tiny.yaml")
    keras.utils.set_random_seed(1)
    student = build_student(cfg.student, cfg.data.image_size, fusion="residual")
    deploy = deployable(student)
    new, names = centre_first_convs(deploy)
    assert sorted(names) == ["cnn_block_1_conv", "stem_conv"]
    size = cfg.data.image_size
    rng = np.random.default_rng(2)
    skin = np.clip(np.array([183, 143, 125]) + rng.normal(0, 20, (8, size, size, 3)), 0, 255)
    skin = skin.astype(np.float32)
    np.testing.assert_allclose(new.predict(skin, verbose=0)["probs"],
                               deploy.predict(skin, verbose=0)["probs"], atol=1e-5)

    def weight_rounding_error(conv: keras.layers.Conv2D, inputs: np.ndarray) -> float:
        kernel = keras.ops.convert_to_numpy(conv.kernel)
        step = np.abs(kernel).max(axis=(0, 1, 2), keepdims=True) / 127  # per-channel int8
        rounded = np.round(kernel / step) * step
        diff = keras.ops.conv(inputs, rounded - kernel, padding="valid")
        return float(np.sqrt(np.mean(keras.ops.convert_to_numpy(diff) ** 2)))

    before = weight_rounding_error(student.get_layer("cnn_block_1_conv"), skin / 255.0)
    after = weight_rounding_error(new.get_layer("cnn_block_1_conv_centred"), skin - CENTRE)
    assert after < 0.6 * before
