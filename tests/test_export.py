"""TFLite export: fp32 / dynamic-range / full-int8 files, their contract and failure modes.

The stand-in classifier follows the kdskin model contract (input "image" (S, S, 3) float32
0..255, Rescaling inside, a dict of logits with "logits") and is trained for a few epochs on a
learnable colour rule, so int8 agreement is measured on confident predictions, not on the
near-ties of a random network. The helpers here are shared by test_tflite_runtime.py and
test_bench.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from kdskin.config import ExportConfig
from kdskin.constants import CLASSES, NUM_CLASSES
from kdskin.errors import DataError, KdskinError, ModelError
from kdskin.export.check import export_and_check, keras_probs
from kdskin.export.convert import export_tflite, representative_indices, representative_sample
from kdskin.export.graph import float_ops, head_nodes, op_versions, read_graph
from kdskin.export.litert import TFLiteClassifier
from kdskin.models.contract import check_classifier

SIZE = 32
#: A distinct colour per class; images are that colour plus noise.
PALETTE = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [220, 220, 40],
                    [220, 40, 220], [40, 220, 220], [128, 128, 128]], dtype=np.float32)


def colour_data(n_per_class: int = 40, size: int = SIZE, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 images whose class is their base colour, labels (N,)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    noise = rng.normal(0, 35, (len(labels), size, size, 3))
    images = np.clip(PALETTE[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    order = rng.permutation(len(labels))
    return images[order], labels[order]


def tiny_classifier(size: int = SIZE, name: str = "tiny") -> keras.Model:
    """A stand-in kdskin classifier: dict of logits with an extra exit, BN, >1024-weight conv."""
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(image)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    exit_ = keras.layers.Dense(NUM_CLASSES, name="aux_exit")(x)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(image, {"aux_exit": exit_, "logits": logits}, name=name)


def trained_tiny(epochs: int = 6, seed: int = 0) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(seed)
    model = tiny_classifier()
    images, labels = colour_data(seed=seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss={"aux_exit": loss, "logits": loss})
    model.fit(images.astype(np.float32), {"aux_exit": labels, "logits": labels},
              epochs=epochs, batch_size=32, verbose=0)
    return model, images, labels


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    model, images, labels = trained_tiny()
    out = tmp_path_factory.mktemp("export")
    info: dict = {}
    rep = representative_sample(images, labels, 70, seed=0)
    files = export_tflite(model, out, rep, info=info)
    return model, files, info


# --------------------------------------------------------------------------- the files


@pytest.mark.slow
def test_writes_three_models_and_labels(exported):
    _, files, info = exported
    assert set(files) == {"fp32", "dynamic", "int8", "labels"}
    for kind in ("fp32", "dynamic", "int8"):
        assert files[kind].name == f"model_{kind}.tflite" and files[kind].stat().st_size > 0
    assert files["labels"].read_text().splitlines() == list(CLASSES)
    # One model.export, then from_saved_model for each file (no fallback needed).
    assert info["method"] == {"fp32": "saved_model", "dynamic": "saved_model",
                              "int8": "saved_model"}
    assert "fallback_reason" not in info
    leftovers = [p.name for p in files["fp32"].parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.slow
def test_int8_input_output_types_and_quantization(exported):
    _, files, _ = exported
    clf = TFLiteClassifier(files["int8"])
    assert clf.input_dtype == np.uint8
    scale, zero = clf.input_quantization
    # The calibration sample is anchored at 0 and 255: raw pixels are the quantized values.
    assert scale == pytest.approx(1.0) and zero == 0
    assert 0.0 <= zero + 0 <= 255 and scale * (255 - zero) == pytest.approx(255.0)
    assert clf.output_dtype == np.float32  # default: dequantized probabilities
    # Default float head: only the softmax after the "logits" dense layer runs in float.
    assert float_ops(files["int8"]) == ["SOFTMAX"]
    assert "CONV_2D" in float_ops(files["fp32"])


def first_conv(model: keras.Model) -> str:
    return next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D))


@pytest.mark.slow
def test_export_centres_the_first_conv(exported):
    model, _, info = exported
    assert info["centred_convs"] == [first_conv(model)]  # Rescaling(1/255) -> first Conv2D
    assert len(info["int8_float_head"]) == 1 and "int8_head_fallback" not in info


@pytest.mark.slow
def test_int8_all_integer_head(exported, tmp_path):
    model, _, _ = exported
    images, labels = colour_data(n_per_class=5, seed=3)
    files = export_tflite(model, tmp_path, images, kinds=("int8",), int8_head="int8")
    assert float_ops(files["int8"]) == []  # every op between the boundary casts is int8
    assert TFLiteClassifier(files["int8"]).output_dtype == np.float32


@pytest.mark.slow
def test_float_head_needs_float_output(exported, tmp_path):
    model, _, _ = exported
    images, _ = colour_data(n_per_class=2, seed=3)
    with pytest.raises(ModelError, match="set int8_head=int8"):
        export_tflite(model, tmp_path, images, kinds=("int8",), int8_output="uint8")
    with pytest.raises(ModelError, match="int8_head must be one of"):
        export_tflite(model, tmp_path, images, kinds=("int8",), int8_head="half")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_int8_uint8_output(exported, tmp_path):
    model, _, _ = exported
    images, labels = colour_data(n_per_class=5, seed=3)
    files = export_tflite(model, tmp_path, images, kinds=("int8",), int8_output="uint8",
                          int8_head="int8")
    clf = TFLiteClassifier(files["int8"])
    assert clf.output_dtype == np.uint8
    scale, zero = clf.output_quantization
    assert scale == pytest.approx(1 / 256) and zero == 0  # int8 softmax's fixed output range
    probs = clf.predict(images)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0, atol=0.03)


@pytest.mark.slow
def test_fp32_matches_keras(exported):
    model, files, _ = exported
    x = np.random.default_rng(1).integers(0, 256, (16, SIZE, SIZE, 3)).astype(np.float32)
    ref = keras_probs(model, x)
    got = TFLiteClassifier(files["fp32"]).predict(x)
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.slow
def test_int8_top1_agreement(exported):
    """Threshold 0.95: classes are well separated, so the trained model is confident and int8
    rounding (about 1/256 of each activation range per layer) can only flip the rare near-ties;
    a broken pipeline (wrong input scale, 0..1 inputs, swapped outputs) agrees ~1/7 of the time."""
    model, files, _ = exported
    images, _ = colour_data(n_per_class=10, seed=7)  # held out from training and calibration
    ref = keras_probs(model, images).argmax(axis=1)
    got = TFLiteClassifier(files["int8"]).predict(images).argmax(axis=1)
    assert np.mean(got == ref) >= 0.95


@pytest.mark.slow
def test_dynamic_smaller_than_fp32(exported):
    _, files, _ = exported
    assert files["dynamic"].stat().st_size < files["fp32"].stat().st_size
    assert files["int8"].stat().st_size < files["fp32"].stat().st_size


@pytest.mark.slow
def test_per_channel_switch(exported, tmp_path):
    model, _, _ = exported
    images, labels = colour_data(n_per_class=3, seed=5)

    def max_scales(path: Path) -> int:
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(path)).get_tensor_details()
        return max(len(d["quantization_parameters"]["scales"]) for d in details)

    per_tensor = export_tflite(model, tmp_path / "pt", images, kinds=("int8",),
                               per_channel=False)
    assert max_scales(per_tensor["int8"]) == 1
    per_channel = export_tflite(model, tmp_path / "pc", images, kinds=("int8",))
    assert max_scales(per_channel["int8"]) == 32  # one scale per output channel of the conv


# --------------------------------------------------------------------------- refusals, atomicity


def _model(inputs, outputs):
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("case", ["width", "rank", "square", "no_logits", "two_inputs"])
def test_refuses_non_classifier(case, tmp_path):
    image = keras.Input((SIZE, SIZE, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(image)
    if case == "width":
        model = _model(image, {"logits": keras.layers.Dense(5)(pooled)})
    elif case == "rank":
        vec = keras.Input((12,), name="image")
        model = _model(vec, {"logits": keras.layers.Dense(7)(vec)})
    elif case == "square":
        rect = keras.Input((SIZE, SIZE + 8, 3), name="image")
        model = _model(rect, {"logits": keras.layers.Dense(7)(
            keras.layers.GlobalAveragePooling2D()(rect))})
    elif case == "no_logits":
        model = _model(image, {"scores": keras.layers.Dense(7)(pooled)})
    else:
        other = keras.Input((SIZE, SIZE, 3), name="other")
        merged = keras.layers.Add()([image, other])
        model = _model([image, other], {"logits": keras.layers.Dense(7)(
            keras.layers.GlobalAveragePooling2D()(merged))})
    with pytest.raises(ModelError) as err:
        export_tflite(model, tmp_path, None, kinds=("fp32",))
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_int8_needs_training_images(exported, tmp_path):
    model, _, _ = exported
    with pytest.raises(DataError, match="representative"):
        export_tflite(model, tmp_path, None)
    with pytest.raises(DataError, match="0..1"):
        export_tflite(model, tmp_path, np.full((2, SIZE, SIZE, 3), 0.5, np.float32),
                      kinds=("int8",))


class _Broken:
    def __init__(self, *args, **kwargs):
        self.optimizations = []
        self.target_spec = type("Spec", (), {"supported_ops": None})()

    def convert(self):
        raise RuntimeError("converter exploded\nwith a long TF traceback")


@pytest.mark.slow
def test_failed_conversion_leaves_no_file(exported, tmp_path, monkeypatch):
    import tensorflow as tf

    model, _, _ = exported
    previous = tmp_path / "model_fp32.tflite"
    previous.write_bytes(b"an earlier good export")
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model",
                        classmethod(lambda cls, m: _Broken()))
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model",
                        classmethod(lambda cls, p: _Broken()))
    with pytest.raises(ModelError, match="conversion failed") as err:
        export_tflite(model, tmp_path, None, kinds=("fp32",))
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_fp32.tflite"]
    assert previous.read_bytes() == b"an earlier good export"


@pytest.mark.slow
def test_interrupted_write_leaves_no_temp(exported, tmp_path, monkeypatch):
    model, _, _ = exported

    def fail(src, dst):
        raise OSError("disk full")

    import kdskin.io

    monkeypatch.setattr(kdskin.io.os, "replace", fail)
    with pytest.raises(OSError):
        export_tflite(model, tmp_path, None, kinds=("fp32",))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_one_saved_model_serves_every_file(exported, tmp_path, monkeypatch):
    """``auto`` writes the SavedModel once per model, not once per file."""
    model, _, _ = exported
    calls: list[str] = []
    original = keras.Model.export

    def counting(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "export", counting)
    x = np.random.default_rng(2).integers(0, 256, (8, SIZE, SIZE, 3)).astype(np.uint8)
    info: dict = {}
    export_tflite(model, tmp_path, x, kinds=("fp32", "dynamic", "int8"), info=info)
    assert len(calls) == 1
    assert set(info["method"].values()) == {"saved_model"}


@pytest.mark.slow
def test_falls_back_to_from_keras_model(exported, tmp_path, monkeypatch):
    import tensorflow as tf

    model, _, _ = exported
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model",
                        classmethod(lambda cls, p: _Broken()))
    info: dict = {}
    files = export_tflite(model, tmp_path, None, kinds=("fp32",), info=info)
    assert info["method"] == {"fp32": "from_keras_model"}
    assert "converter exploded" in info["fallback_reason"]
    x = np.random.default_rng(2).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(TFLiteClassifier(files["fp32"]).predict(x),
                               keras_probs(model, x), atol=1e-4)


# --------------------------------------------------------------------------- calibration sample


def test_representative_sample_is_stratified():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 60 + [3] * 30 + [4] * 6 + [5] * 3 + [6] * 1)
    images = np.arange(len(labels))[:, None, None, None] * np.ones((1, 2, 2, 3), np.int64)
    idx = representative_indices(labels, 100, seed=0)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    counts = np.bincount(labels[idx], minlength=7)
    assert (counts >= 1).all()  # every class, even the one-image class
    assert counts[0] > counts[1] > counts[2] > counts[3]  # proportional to frequency
    assert abs(counts[0] - 600 / 1000 * 100) <= 3
    sample = representative_sample(images, labels, 100, seed=0)
    np.testing.assert_array_equal(sample[:, 0, 0, 0], idx)
    np.testing.assert_array_equal(representative_indices(labels, 100, seed=0), idx)
    assert not np.array_equal(representative_indices(labels, 100, seed=1), idx)
    assert sorted(representative_indices(labels[:10], 50).tolist()) == list(range(10))
    with pytest.raises(DataError):
        representative_sample(images, labels[:5], 10)


@pytest.mark.slow
def test_check_classifier_accepts_deployable(exported):
    model, _, _ = exported
    from kdskin.models.contract import to_deployable

    assert check_classifier(model) == (SIZE, "logits")
    assert check_classifier(to_deployable(model)) == (SIZE, "probs")


# --------------------------------------------------------------------------- export_and_check


@pytest.mark.slow
def test_export_and_check_writes_json(exported, tmp_path):
    model, _, _ = exported
    train_images, train_labels = colour_data(n_per_class=8, seed=11)
    test_images, test_labels = colour_data(n_per_class=6, seed=12)
    cfg = ExportConfig(representative_samples=30, max_int8_drop=0.5)
    result = export_and_check(model, tmp_path, train_images, train_labels, test_images,
                              test_labels, cfg)
    on_disk = json.loads((tmp_path / "export.json").read_text())
    assert on_disk["int8_within_tolerance"] is result["int8_within_tolerance"] is True
    assert sum(on_disk["int8"]["representative"]["per_class"].values()) == 30
    assert on_disk["int8"]["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0,
                                        "size": SIZE}
    ev = on_disk["evaluation"]
    assert set(ev["tflite"]) == {"fp32", "dynamic", "int8"}
    for kind in ("fp32", "dynamic", "int8"):
        entry = ev["tflite"][kind]
        for key in ("accuracy", "macro_f1", "macro_auc", "agreement", "max_abs_prob_diff",
                    "size_bytes"):
            assert key in entry
    assert ev["tflite"]["fp32"]["agreement"] == 1.0
    assert ev["tflite"]["fp32"]["max_abs_prob_diff"] < 1e-4
    assert ev["tflite"]["int8"]["top1_ties"] == 0  # float head: continuous probabilities
    assert on_disk["int8"]["head"] == "float" and on_disk["int8"]["float_ops"] == ["SOFTMAX"]
    assert on_disk["conversion"]["centred_convs"] == [first_conv(model)]
    assert ev["int8_drop"]["accuracy"] == pytest.approx(
        ev["keras"]["accuracy"] - ev["tflite"]["int8"]["accuracy"])
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    strict = ExportConfig(representative_samples=30, max_int8_drop=-1.0)
    again = export_and_check(model, tmp_path / "strict", train_images, train_labels,
                             test_images, test_labels, strict)
    assert again["int8_within_tolerance"] is False
    # export.require_int8_within_tolerance: a passing file stays; a failing one is moved aside
    from kdskin.export.check import REJECTED_DIR, reject_int8

    reject_int8(tmp_path, result)
    assert (tmp_path / "model_int8.tflite").is_file()
    with pytest.raises(KdskinError) as err:
        reject_int8(tmp_path / "strict", again)
    message = str(err.value)
    assert "\n" not in message and "within -100 point(s): NO" in message
    assert message.startswith(str(tmp_path / "strict" / "model_int8.tflite"))
    assert not (tmp_path / "strict" / "model_int8.tflite").exists()
    assert (tmp_path / "strict" / REJECTED_DIR / "model_int8.tflite").is_file()
    assert (tmp_path / "strict" / "model_fp32.tflite").is_file()  # the float files stay


@pytest.mark.slow
def test_float_head_falls_back_to_integer_when_the_quantizer_api_is_missing(
        exported, tmp_path, monkeypatch):
    from tensorflow.lite.python import convert as tfl_convert

    def gone(*args, **kwargs):
        raise AttributeError("module has no attribute 'mlir_quantize'")

    monkeypatch.setattr(tfl_convert, "mlir_quantize", gone)
    model, _, _ = exported
    images, _ = colour_data(n_per_class=3, seed=3)
    info: dict = {}
    files = export_tflite(model, tmp_path, images, kinds=("int8",), info=info)
    assert "mlir_quantize" in info["int8_head_fallback"] and "int8_float_head" not in info
    assert float_ops(files["int8"]) == []  # the all-integer file, still valid
    assert TFLiteClassifier(files["int8"]).predict(images).shape == (len(images), NUM_CLASSES)


# --------------------------------------------------------------------------- the flatbuffer graph


@pytest.mark.slow
def test_graph_matches_the_interpreter(exported):
    """The flatbuffer reading (no private interpreter call) sees the interpreter's tensors."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    _, files, _ = exported
    for kind in ("fp32", "int8"):
        graph = read_graph(files[kind])
        interp = Interpreter(model_path=str(files[kind]), experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        details = interp.get_tensor_details()
        assert len(details) == len(graph.tensors)
        for d in details:
            tensor = graph.tensors[d["index"]]
            assert tensor.name == d["name"] and tensor.dtype == np.dtype(d["dtype"]).name
        assert list(graph.outputs) == [d["index"] for d in interp.get_output_details()]
    versions = op_versions(files["int8"])
    assert versions["CONV_2D"] >= 1 and "SOFTMAX" in versions
    assert op_versions(files["fp32"].read_bytes()) == op_versions(files["fp32"])
    # The head of the fp32 file: the softmax after the "logits" dense layer, nothing else.
    fp32 = read_graph(files["fp32"])
    assert fp32.ops[-1].name == "SOFTMAX"
    assert head_nodes(files["fp32"]) == [fp32.tensors[fp32.outputs[0]].name]


def test_graph_refuses_garbage(tmp_path):
    from kdskin.errors import KdskinError

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(KdskinError, match="bad.tflite: not a readable .tflite"):
        read_graph(bad)


# --------------------------------------------------------------------------- library noise


def test_quiet_swallows_python_and_native_output(capfd):
    import logging
    import warnings

    from kdskin.export.quiet import native_stderr, quiet

    with quiet():
        print("Saved artifact at /tmp/x")
        os.write(2, b"fully_quantize: 0, inference_type: 6\n")
        warnings.warn("Statistics for quantized inputs were expected", UserWarning, stacklevel=1)
        logging.getLogger("tensorflow").warning("5 out of the last 5 calls triggered retracing")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    with native_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"WARNING: something a user should see\n")
    assert capfd.readouterr().err == "WARNING: something a user should see\n"
    with quiet(verbose=True):
        print("shown")
    assert capfd.readouterr().out == "shown\n"


# --------------------------------------------------------------------------- resize, quantizer


@pytest.mark.parametrize("factor,size", [(4, 16), (3, 12), (2, 10)])
def test_pillow_downscale_matches_pillow(factor, size):
    from PIL import Image

    from kdskin.export.resize import PillowDownscale, pillow_kernel, pillow_matrix

    kernel = pillow_kernel(factor, size)
    assert abs(sum(kernel.taps) - 1.0) < 1e-6 and kernel.norm[size // 2] == pytest.approx(1.0)
    rng = np.random.default_rng(factor)
    image = rng.uniform(0, 255, (factor * size, factor * size)).astype(np.float32)
    want = np.asarray(Image.fromarray(image, mode="F").resize((size, size),
                                                              Image.Resampling.BILINEAR))
    rgb = np.repeat(image[None, :, :, None], 3, axis=-1)
    got = np.asarray(PillowDownscale(factor, size)(rgb))[0]
    np.testing.assert_allclose(got[..., 0], want, atol=1e-3)
    np.testing.assert_allclose(pillow_matrix(factor * size, size).sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_ai_edge_quantizer_path_has_no_input_clipping(exported, tmp_path):
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    from kdskin.export.quantizer import input_range, quantize_with_aeq

    model, files, _ = exported
    images, labels = colour_data(n_per_class=6, seed=21)
    dim = np.clip(images, 30, 200)  # no pixel above 200 in the calibration images
    fp32 = files["fp32"].read_bytes()
    (tmp_path / "default.tflite").write_bytes(quantize_with_aeq(fp32, dim, anchor=False))
    low, high = input_range(tmp_path / "default.tflite")
    assert high < 250  # the unanchored recipe clips bright pixels
    (tmp_path / "aeq.tflite").write_bytes(quantize_with_aeq(fp32, dim))
    clf = TFLiteClassifier(tmp_path / "aeq.tflite")
    assert clf.input_dtype == np.int8
    assert input_range(clf) == (0.0, 255.0)
    test_images, _ = colour_data(n_per_class=5, seed=22)
    ref = TFLiteClassifier(files["fp32"]).predict(test_images)
    assert np.mean(clf.predict(test_images).argmax(1) == ref.argmax(1)) >= 0.9


@pytest.mark.slow
def test_export_and_check_with_ai_edge_quantizer_app_files_and_resize_table(exported, tmp_path):
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    from tests.conftest import write_isic

    model, _, _ = exported
    write_isic(tmp_path / "isic", n_per_class=1)
    train_images, train_labels = colour_data(n_per_class=6, seed=31)
    test_images, test_labels = colour_data(n_per_class=4, seed=32)
    cfg = ExportConfig(representative_samples=30, quantizer="ai_edge_quantizer",
                       app_input_factor=2, app_kinds=["int8"],
                       resize_check_images=str(tmp_path / "isic"))
    out = tmp_path / "out"
    result = export_and_check(model, out, train_images, train_labels, test_images,
                              test_labels, cfg, extra={"decision": {"temperature": 1.0}},
                              show_progress=False)
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk["conversion"]["method"]["int8"] == "ai_edge_quantizer"
    assert on_disk["int8"]["input"]["dtype"] == "int8"
    quant = on_disk["quantizers"]
    assert quant["chosen"] == "ai_edge_quantizer"
    for name in ("converter", "ai_edge_quantizer"):
        assert {"accuracy", "agreement_fp32", "agreement_keras", "input_range",
                "clips_pixels"} <= set(quant[name])
        assert quant[name]["clips_pixels"] is False
    assert on_disk["app"]["files"]["int8"]["file"] == "app/model_int8.tflite"
    assert (out / "app" / "decision.json").is_file()
    table = result["resize_agreement"]
    assert set(table["files"]) == {"model_int8.tflite", "model_fp32.tflite",
                                   "app/model_int8.tflite"}
    for entry in table["files"].values():
        assert {"agreement", "accuracy", "max_abs_prob_diff", "input_size"} <= set(entry)
