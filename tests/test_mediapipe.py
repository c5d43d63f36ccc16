"""MediaPipe Tasks' ImageClassifier on kdskin's exported files: label names from the metadata,
top-1 agreement with tflite/classify.py, the app file (larger input, anti-aliased downscale
inside) and the resize-agreement table. Skipped where mediapipe cannot be installed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from kdskin.constants import CLASSES
from kdskin.export.convert import export_tflite, representative_sample
from kdskin.export.litert import TFLiteClassifier
from kdskin.export.metadata import ModelInfo
from kdskin.export.resize import pillow_resize
from tests.conftest import write_isic
from tests.test_export import SIZE, colour_data, trained_tiny

pytest.importorskip("mediapipe.tasks.python.vision",
                    reason="mediapipe is not installed (pip install 'kdskin[deploy]')")

from kdskin.export.resize_check import (  # noqa: E402
    METHODS,
    mediapipe_probs,
    resize_agreement,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tflite"))
import classify  # noqa: E402

FACTOR = 3
#: Every test here converts a trained model to TFLite.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    model, images, labels = trained_tiny(epochs=4)
    out = tmp_path_factory.mktemp("mp")
    info: dict = {}
    rep = representative_sample(images, labels, 40, seed=0)
    with pytest.MonkeyPatch.context() as mp:  # written as the default install writes it
        mp.setitem(sys.modules, "mediapipe", None)
        files = export_tflite(model, out, rep, kinds=("fp32", "int8"), info=info,
                              metadata=ModelInfo(name="tiny", version="1"), app_factor=FACTOR,
                              app_kinds=("int8",))
    assert info["metadata"]["written"] is True
    return files, info, out


def _mediapipe_labels(path: Path, image: np.ndarray) -> list[str]:
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                            max_results=-1)
    with vision.ImageClassifier.create_from_options(options) as clf:
        result = clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
    return [c.category_name for c in result.classifications[0].categories]


@pytest.mark.parametrize("kind", ["int8", "fp32"])
def test_mediapipe_returns_kdskin_labels(exported, kind):
    files, _, _ = exported
    images, _ = colour_data(n_per_class=1, seed=3)
    names = _mediapipe_labels(files[kind], np.ascontiguousarray(images[0]))
    assert sorted(names) == sorted(CLASSES)


def test_mediapipe_agrees_with_classify_py(exported):
    files, _, _ = exported
    images, _ = colour_data(n_per_class=4, seed=5)
    model = classify.Model(files["int8"])
    ours = np.stack([model.predict(im) for im in images])
    theirs = mediapipe_probs(files["int8"], list(images))  # already S x S: no resize
    assert np.mean(ours.argmax(1) == theirs.argmax(1)) == 1.0
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_app_file_downscales_inside(exported):
    files, info, out = exported
    app = info["app"]
    assert app["factor"] == FACTOR and app["input_size"] == FACTOR * SIZE
    path = out / app["files"]["int8"]
    clf = TFLiteClassifier(path)
    assert clf.input_size == FACTOR * SIZE and clf.input_dtype == np.uint8
    assert (out / "app" / "labels.txt").read_text().splitlines() == list(CLASSES)
    assert app["conversion"]["int8_float_front"]  # the downscale runs in float
    images, _ = colour_data(n_per_class=3, seed=7, size=FACTOR * SIZE)
    small = pillow_resize(images, SIZE)
    ref = TFLiteClassifier(files["int8"]).predict(small)
    got = clf.predict(images)
    assert np.mean(ref.argmax(1) == got.argmax(1)) == 1.0
    assert np.abs(ref - got).max() < 0.05
    names = _mediapipe_labels(path, np.ascontiguousarray(images[0]))
    assert sorted(names) == sorted(CLASSES)


def test_resize_agreement_table(exported, tmp_path):
    files, info, out = exported
    write_isic(tmp_path / "isic", n_per_class=1)
    pairs = {"model_int8.tflite": (files["int8"], files["int8"]),
             "app/model_int8.tflite": (out / info["app"]["files"]["int8"], files["int8"])}
    table = resize_agreement(pairs, tmp_path / "isic")
    assert table["n_images"] == 7 and table["labelled"] is True
    assert table["skipped"] == {}
    for label in pairs:
        entry = table["files"][label]
        assert set(entry["agreement"]) == set(METHODS)
        assert set(entry["accuracy"]) == set(METHODS)
        assert all(0.0 <= v <= 1.0 for v in entry["agreement"].values())
    assert table["files"]["model_int8.tflite"]["agreement"]["pillow_bilinear"] == 1.0
    assert "target" not in table  # figures only: the thresholds are the reader's
