"""The strong plain reference CNN (VGG-style): shapes, parameters, validation, stable names."""

import numpy as np
import pytest

from kdskin.errors import ConfigError


def test_reference_cnn_shapes_and_size():
    from kdskin.models.contract import check_classifier
    from kdskin.models.reference import build_reference_cnn

    model = build_reference_cnn(64)
    assert check_classifier(model) == (64, "logits")
    assert model.count_params() == 1_176_935  # 32-64-128-256, two 3x3 convs per stage
    out = model.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0)
    assert out["logits"].shape == (2, 7)
    names = {layer.name for layer in model.layers}
    assert {"stage_1_conv_1", "stage_4_conv_2", "stage_4_pool", "logits"} <= names


def test_reference_cnn_validation_names_the_key():
    from kdskin.config import load_config

    with pytest.raises(ConfigError, match="reference.filters"):
        load_config(None, ["reference.filters=[]"])
    with pytest.raises(ConfigError, match="reference.dropout"):
        load_config(None, ["reference.dropout=1.5"])
    with pytest.raises(ConfigError, match="data.image_size"):
        load_config(None, ["data.image_size=32", "reference.filters=[8,8,8,8,8,8]"])
    cfg = load_config(None, ["reference.enabled=false", "data.image_size=32",
                             "reference.filters=[8,8,8,8,8,8]"])
    assert cfg.reference.enabled is False
