"""LiteRT side: TFLiteClassifier, evaluate_tflite_files and the standalone tflite/classify.py
(whose copies of kdskin's resize and quantization helpers must give identical output)."""

from __future__ import annotations

import importlib.util
import inspect
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdskin.constants import CLASSES, NUM_CLASSES
from kdskin.data import images as kd_images
from kdskin.errors import DataError, ModelError
from kdskin.export import litert
from kdskin.export.check import evaluate_tflite_files, keras_probs
from kdskin.export.convert import export_tflite, representative_sample
from kdskin.export.litert import TFLiteClassifier
from tests.test_export import SIZE, colour_data, trained_tiny

ROOT = Path(__file__).resolve().parents[1]
CLASSIFY = ROOT / "tflite" / "classify.py"


def _load_classify():
    spec = importlib.util.spec_from_file_location("kdskin_tflite_classify", CLASSIFY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    model, images, labels = trained_tiny()
    out = tmp_path_factory.mktemp("tflite")
    rep = representative_sample(images, labels, 70)
    paths = export_tflite(model, out, rep)
    int_head = export_tflite(model, out / "int_head", rep, kinds=("int8",), int8_head="int8")
    uint8_out = export_tflite(model, out / "uint8_out", rep, kinds=("int8",),
                              int8_output="uint8", int8_head="int8")
    return model, {**paths, "int8_int_head": int_head["int8"],
                   "int8_uint8_out": uint8_out["int8"]}


# --------------------------------------------------------------------------- TFLiteClassifier


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fp32", "dynamic", "int8", "int8_uint8_out"])
def test_predict_shapes_and_batches(files, kind):
    _, paths = files
    clf = TFLiteClassifier(paths[kind], num_threads=1)
    assert clf.input_size == SIZE
    images, _ = colour_data(n_per_class=1, seed=4)  # 7 images
    probs = clf.predict(images, batch_size=3)  # batches 3, 3, 1: input resized each time
    assert probs.shape == (7, NUM_CLASSES) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=0.03)
    one_by_one = np.concatenate([clf.predict(im) for im in images])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-6)
    # float 0..255 pixels give the same result as uint8 for every input type
    np.testing.assert_allclose(clf.predict(images.astype(np.float32)), probs, atol=1e-6)


@pytest.mark.slow
def test_int8_input_dtype_and_quantization_read(files):
    _, paths = files
    clf = TFLiteClassifier(paths["int8"])
    assert clf.input_dtype == np.uint8 and clf.output_dtype == np.float32
    assert clf.input_info() == {"dtype": "uint8", "scale": 1.0, "zero_point": 0, "size": SIZE}
    assert TFLiteClassifier(paths["fp32"]).input_dtype == np.float32
    # quantized input with a non-trivial scale: predict quantizes with the interpreter's values
    clf.input_quantization = (2.0, 10)
    prepared = clf.prepare(np.array([[[[0, 100, 255]]]], np.uint8))
    np.testing.assert_array_equal(prepared.reshape(-1), [10, 60, 138])


@pytest.mark.slow
def test_uint8_output_dequantized(files):
    _, paths = files
    images, _ = colour_data(n_per_class=2, seed=9)
    a = TFLiteClassifier(paths["int8_int_head"]).predict(images)
    b = TFLiteClassifier(paths["int8_uint8_out"]).predict(images)
    assert TFLiteClassifier(paths["int8_uint8_out"]).output_dtype == np.uint8
    # Same calibration, same integer graph: only the output cast differs (a float32 output of
    # the int8 softmax is exactly its uint8 value / 256).
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_classifier_errors(files, tmp_path):
    _, paths = files
    with pytest.raises(ModelError, match="not found"):
        TFLiteClassifier(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelError, match="cannot load"):
        TFLiteClassifier(junk)
    with pytest.raises(DataError, match=f"\\(N, {SIZE}, {SIZE}, 3\\)"):
        TFLiteClassifier(paths["int8"]).predict(np.zeros((2, 16, 16, 3), np.uint8))


def test_runtime_modules_do_not_import_tensorflow():
    """The LiteRT runtime (and the flatbuffer reader) load without TensorFlow or Keras."""
    code = ("import sys, kdskin.export.litert, kdskin.export.graph, kdskin.compat; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_evaluate_tflite_files(files):
    model, paths = files
    images, labels = colour_data(n_per_class=5, seed=21)
    result = evaluate_tflite_files({k: paths[k] for k in ("fp32", "int8", "labels")}, model,
                                   images, labels)
    assert set(result["tflite"]) == {"fp32", "int8"}
    assert result["keras"]["accuracy"] == pytest.approx(
        np.mean(keras_probs(model, images).argmax(1) == labels))
    fp32 = result["tflite"]["fp32"]
    assert fp32["agreement"] == 1.0 and fp32["max_abs_prob_diff"] < 1e-4
    assert fp32["size_bytes"] == paths["fp32"].stat().st_size
    assert 0.0 < result["tflite"]["int8"]["max_abs_prob_diff"] < 0.2
    assert set(result["int8_drop"]) == {"accuracy", "macro_f1"}
    assert 0.0 <= result["tflite"]["int8"]["macro_auc"] <= 1.0


# --------------------------------------------------------------------------- classify.py


def _mode_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (50, 70, 1), dtype=np.uint8)], axis=2)
    out = {
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(rgba),
        "L": Image.fromarray(rgb[..., 0]),
        "LA": Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]])),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "I;16": Image.fromarray(rgb[..., 0].astype("<u2") * 200),
        "same_size": Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)),
    }
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 0
    out["P_transparent"] = palette
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", exif=exif.tobytes())
    buf.seek(0)
    out["EXIF_rotated"] = Image.open(buf)
    return out


def test_classify_resize_identical_to_kdskin():
    classify = _load_classify()
    assert classify.RESAMPLE == kd_images.RESAMPLE
    kd_body = inspect.getsource(kd_images.to_rgb_array)
    assert inspect.getsource(classify.to_rgb_array) == kd_body
    images = _mode_images()
    assert {im.mode for im in images.values()} >= {"RGB", "RGBA", "L", "LA", "CMYK", "I;16", "P"}
    for mode, image in images.items():
        ours = classify.to_rgb_array(image.copy(), SIZE)
        theirs = kd_images.to_rgb_array(image.copy(), SIZE)
        assert ours.dtype == np.uint8 and ours.shape == (SIZE, SIZE, 3), mode
        np.testing.assert_array_equal(ours, theirs, err_msg=mode)


def test_classify_resize_of_generated_images():
    """Non-square RGB, RGBA, grayscale and 16-bit images, several sizes: identical pixels."""
    classify = _load_classify()
    rng = np.random.default_rng(5)
    for h, w, mode in [(37, 91, "RGB"), (64, 23, "RGBA"), (50, 50, "L"), (19, 45, "I;16"),
                       (SIZE, SIZE, "RGBA"), (120, 80, "LA")]:
        channels = {"RGB": 3, "RGBA": 4, "LA": 2}.get(mode)
        if mode == "I;16":
            image = Image.fromarray(rng.integers(0, 65535, (h, w)).astype("<u2"))
        else:
            shape = (h, w, channels) if channels else (h, w)
            image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        assert image.mode == mode
        for size in (SIZE, 17):
            ours = classify.to_rgb_array(image.copy(), size)
            theirs = kd_images.to_rgb_array(image.copy(), size)
            assert ours.shape == (size, size, 3), mode
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{mode} {h}x{w} -> {size}")


def test_classify_quantization_identical_to_kdskin():
    classify = _load_classify()
    for name in ("quant_params", "quantize", "dequantize"):
        assert inspect.getsource(getattr(classify, name)) == inspect.getsource(
            getattr(litert, name)), name
    rng = np.random.default_rng(6)
    pixels = [rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
              rng.uniform(0, 255, (2, 5, 5, 3)).astype(np.float32),
              np.array([0, 0.5, 1.49, 1.5, 127.5, 254.6, 255], np.float64)]
    for x in pixels:
        for dtype, scale, zero in [("uint8", 1.0, 0), ("uint8", 2.0, 10), ("int8", 1.0, -128),
                                   ("int8", 0.7, 3), ("uint8", 0.0, 0), ("float32", 0.0, 0),
                                   ("int16", 0.01, 0)]:
            ours = classify.quantize(x, dtype, scale, zero)
            theirs = litert.quantize(x, dtype, scale, zero)
            assert ours.dtype == theirs.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(ours, theirs)
    for raw, scale, zero in [(rng.integers(0, 256, (4, 7)).astype(np.uint8), 1 / 256, 0),
                             (rng.integers(-128, 128, (4, 7)).astype(np.int8), 0.05, -3),
                             (rng.uniform(0, 1, (4, 7)).astype(np.float32), 0.0, 0)]:
        ours, theirs = classify.dequantize(raw, scale, zero), litert.dequantize(raw, scale, zero)
        assert ours.dtype == theirs.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)
    # The quantized value of a uint8 pixel at scale 2, zero 10 is round(x / 2) + 10, clipped.
    np.testing.assert_array_equal(litert.quantize(np.array([0, 100, 255, 600]), "uint8", 2.0,
                                                  10), [10, 60, 138, 255])
    details = {"quantization_parameters": {"scales": np.array([0.5, 0.25]),
                                           "zero_points": np.array([3, 4])},
               "quantization": (9.0, 9)}
    assert classify.quant_params(details) == litert.quant_params(details) == (0.5, 3)
    legacy = {"quantization": (0.125, 7)}
    assert classify.quant_params(legacy) == litert.quant_params(legacy) == (0.125, 7)
    assert litert.quant_params({}) == (0.0, 0)


def _blocked_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with a tensorflow and a kdskin package whose import fails."""
    blocked = tmp_path / "blocked"
    for package in ("tensorflow", "kdskin", "keras"):
        (blocked / package).mkdir(parents=True)
        (blocked / package / "__init__.py").write_text(
            f"raise ImportError('{package} must not be imported by tflite/classify.py')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(blocked)
    return env


@pytest.mark.slow
def test_classify_runs_without_tensorflow(files, tmp_path):
    _, paths = files
    images, labels = colour_data(n_per_class=1, seed=13)
    names = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = tmp_path / f"img_{i}_{CLASSES[label]}.png"
        Image.fromarray(image).resize((48, 40)).save(path)
        names.append(str(path))
    env = _blocked_env(tmp_path)
    proc = subprocess.run([sys.executable, str(CLASSIFY), "--model", str(paths["int8"]),
                           "--top", "2", *names], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(names)
    classify = _load_classify()
    clf = TFLiteClassifier(paths["int8"])
    for line, path in zip(lines, names, strict=True):
        assert line.startswith(f"{path}: ")
        ranked = [part.rsplit(" ", 1) for part in line.split(": ", 1)[1].split(", ")]
        assert len(ranked) == 2 and all(name in CLASSES for name, _ in ranked)
        with Image.open(path) as im:
            probs = clf.predict(classify.to_rgb_array(im, SIZE))[0]
        assert ranked[0][0] == CLASSES[int(probs.argmax())]
        assert float(ranked[0][1]) == pytest.approx(float(probs.max()), abs=1e-3)


@pytest.mark.slow
def test_classify_errors(files, tmp_path):
    _, paths = files
    env = _blocked_env(tmp_path)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(CLASSIFY), *args], capture_output=True,
                              text=True, env=env, timeout=120)

    missing_model = run("--model", str(tmp_path / "nope.tflite"), str(image))
    assert missing_model.returncode == 2
    assert missing_model.stderr.strip() == f"error: {tmp_path / 'nope.tflite'}: model file " \
                                           f"not found"
    missing_image = run("--model", str(paths["fp32"]), str(tmp_path / "nope.jpg"))
    assert missing_image.returncode == 2
    assert missing_image.stderr.strip().splitlines()[-1] == \
        f"error: {tmp_path / 'nope.jpg'}: image file not found"
    bad_labels = tmp_path / "labels3.txt"
    bad_labels.write_text("a\nb\nc\n")
    wrong = run("--model", str(paths["fp32"]), "--labels", str(bad_labels), str(image))
    assert wrong.returncode == 2 and "3 labels but the model has 7 outputs" in wrong.stderr


def test_classify_out_of_scope_check_identical_to_kdskin():
    """classify.py's copies of the image-statistics score: same source (but for the error
    class) and identical values; its decision matches kdskin's DecisionRules."""
    from kdskin.data.out_of_scope import generate_out_of_scope
    from kdskin.decision import DecisionRules
    from kdskin.trust import image_stats

    classify = _load_classify()
    for name in ("image_features", "image_score"):
        theirs = inspect.getsource(getattr(image_stats, name)).replace("DataError", "UsageError")
        assert inspect.getsource(getattr(classify, name)) == theirs, name
    rng = np.random.default_rng(7)
    lesions = rng.integers(60, 200, (40, SIZE, SIZE, 3), dtype=np.uint8)
    params = image_stats.fit_image_gaussian(image_stats.image_features(lesions))
    images, _ = generate_out_of_scope(9, SIZE, seed=1, lesion_images=lesions[:4])
    np.testing.assert_array_equal(classify.image_features(images),
                                  image_stats.image_features(images))
    np.testing.assert_array_equal(classify.image_score(classify.image_features(images), params),
                                  image_stats.image_score(image_stats.image_features(images),
                                                          params))
    rules = DecisionRules(referral_threshold=0.3, ood_threshold=-30.0, ood_params=params,
                          temperature_folded=True)
    probs = np.full(7, 1 / 7)
    for image in images:
        ours = classify.decide(rules.to_dict(), list(CLASSES_ORDER), probs, image)
        theirs = rules.decide(probs[None], image[None])[0]
        assert ours["refer"] == theirs["refer"] and ours["out_of_scope"] == theirs["out_of_scope"]


CLASSES_ORDER = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
