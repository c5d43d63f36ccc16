"""Explanations: Grad-CAM, Score-CAM, LIME, faithfulness, figures and the TensorBoard callback.

Most tests use a hand-weighted synthetic model whose class-0 evidence is the red channel inside
the TOP-RIGHT quadrant only (its feature map is masked there), so where a faithful map must
peak is known exactly; top-right rather than top-left so a transposed or flipped map fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdskin.config import ExplainConfig, load_config
from kdskin.constants import CLASSES, NUM_CLASSES
from kdskin.errors import ConfigError, DataError, KdskinError, ModelError
from kdskin.explain import (
    GradCAM,
    LimeExplainer,
    ScoreCAM,
    ScoreCamCallback,
    default_layer,
    evaluate_faithfulness,
    explain_images,
    faithfulness_table,
    pick_images_per_class,
    plot_faithfulness,
    predict_probs_fn,
)
from kdskin.explain.cams import normalize_maps

S = 32  # image size
CELL = 4  # feature-map stride of the synthetic model
G = S // CELL  # feature grid


@keras.saving.register_keras_serializable(package="kdskin_tests")
class TopRightMask(keras.layers.Layer):
    """Zero a (b, g, g, c) feature map outside its top-right quadrant."""

    def call(self, x):
        g = x.shape[1]
        mask = np.zeros((1, g, g, 1), np.float32)
        mask[:, : g // 2, g // 2:] = 1.0
        return x * mask


def synthetic_model(probs_output: bool = False) -> keras.Model:
    """image 0..255 -> 1x1 conv (ch0 = red, ch1 = green, in 0..1) -> 4x4 average pool ->
    top-right mask ("masked_features") -> global average -> logits: class 0 = 60 * red,
    class 1 = 60 * green, the rest 0. Weights set by hand: deterministic."""
    image = keras.Input((S, S, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    x = keras.layers.Conv2D(2, 1, use_bias=False, name="features")(x)
    x = keras.layers.AveragePooling2D(CELL, name="pool")(x)
    x = TopRightMask(name="masked_features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    head = keras.layers.Dense(NUM_CLASSES, name="logits")
    logits = head(x)
    model = keras.Model(image, {"aux": keras.layers.Identity(name="aux")(logits),
                                "logits": logits}, name="synthetic")
    conv = np.zeros((1, 1, 3, 2), np.float32)
    conv[0, 0, 0, 0] = conv[0, 0, 1, 1] = 1.0
    model.get_layer("features").set_weights([conv])
    dense = np.zeros((2, NUM_CLASSES), np.float32)
    dense[0, 0] = dense[1, 1] = 60.0
    head.set_weights([dense, np.zeros(NUM_CLASSES, np.float32)])
    if probs_output:
        probs = keras.layers.Softmax(name="probs")(logits)
        model = keras.Model(image, {"probs": probs}, name="synthetic_deploy")
    return model


def synthetic_images(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images with a red 8x8 square in the top-right quadrant (the evidence) and another
    in the bottom-left (a distractor the model cannot see). Returns (images, evidence masks)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (n, S, S, 3)).astype(np.uint8)
    truth = np.zeros((n, S, S), bool)
    for i in range(n):
        r, c = rng.integers(0, S // 2 - 8, 2)
        images[i, r:r + 8, S // 2 + c:S // 2 + c + 8, 0] = 255
        truth[i, r:r + 8, S // 2 + c:S // 2 + c + 8] = True
        r2, c2 = rng.integers(0, S // 2 - 8, 2)
        images[i, S // 2 + r2:S // 2 + r2 + 8, c2:c2 + 8, 0] = 255
    return images, truth


def peak(saliency: np.ndarray) -> tuple[int, int]:
    return tuple(int(v) for v in np.unravel_index(np.argmax(saliency), saliency.shape))


@pytest.fixture(scope="module")
def synth():
    return synthetic_model()


@pytest.fixture(scope="module")
def data():
    return synthetic_images()


def test_synthetic_model_predicts_class_zero_from_the_top_right_red_square(synth, data):
    images, _ = data
    probs = predict_probs_fn(synth)(images)
    assert probs.shape == (len(images), NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == 0).all()
    wiped = images.copy()
    wiped[:, : S // 2, S // 2:, 0] = 0
    assert (predict_probs_fn(synth)(wiped)[:, 0] < probs[:, 0]).all()


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
@pytest.mark.parametrize("probs_output", [False, True])
def test_cams_peak_inside_the_evidence(method, probs_output, data):
    images, truth = data
    model = synthetic_model(probs_output)
    cls = GradCAM if method == "gradcam" else ScoreCAM
    explainer = cls(model, layer="masked_features")
    maps = explainer(images)
    assert maps.shape == (len(images), S, S) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert (explainer.last_class_indices == 0).all()
    for saliency, evidence in zip(maps, truth, strict=True):
        r, c = peak(saliency)
        assert r < S // 2 and c >= S // 2, f"{method} peaks at {(r, c)}, outside the quadrant"
        assert evidence[r, c], f"{method} peaks at {(r, c)}, not on the red square"
        # the bottom-left distractor square is invisible to the model (beyond the one-cell
        # band that bilinear upsampling blends across the quadrant border)
        assert saliency[S // 2 + CELL:, : S // 2 - CELL].max() < 1e-6


def test_single_image_gives_a_2d_map(synth, data):
    images, _ = data
    saliency = GradCAM(synth, layer="masked_features")(images[0])
    assert saliency.shape == (S, S)


def test_gradcam_matches_tf_keras_vis_on_a_single_output_model(synth, data):
    from tf_keras_vis.gradcam import Gradcam

    images, _ = data
    single = keras.Model(synth.inputs, synth.output["logits"])
    ours, _, _ = GradCAM(single, layer="masked_features")._explain_chunk(
        images.astype(np.float32), np.zeros(len(images), np.int64))
    theirs = Gradcam(single)(lambda out: out[:, 0], images.astype(np.float32),
                             penultimate_layer="masked_features",
                             seek_penultimate_conv_layer=False, expand_cam=False,
                             normalize_cam=False)
    np.testing.assert_allclose(ours[0], np.asarray(theirs), rtol=1e-4, atol=1e-6)


def test_explicit_class_index_and_constant_map(synth, data):
    images, _ = data
    explainer = GradCAM(synth, layer="masked_features")
    # class 3 has all-zero weights: its gradient is zero, the map is constant -> zeros, no NaN
    maps = explainer(images, class_index=3)
    assert np.isfinite(maps).all() and (maps == 0).all()
    assert (explainer.last_class_indices == 3).all()
    per_image = explainer(images, class_index=[0, 3, 0, 3])
    assert per_image[0].max() == 1.0 and (per_image[1] == 0).all()
    with pytest.raises(KdskinError, match="class_index"):
        explainer(images, class_index=[0, 1])
    with pytest.raises(KdskinError, match="0..6"):
        explainer(images, class_index=9)
    assert np.isfinite(normalize_maps(np.full((2, 4, 4), np.nan))).all()


def test_unknown_layer_and_wrong_image_size_are_clear_errors(synth):
    with pytest.raises(ModelError, match=r"no layer named 'nope'.*masked_features"):
        GradCAM(synth, layer="nope")
    with pytest.raises(ModelError, match="not a .*feature map"):
        ScoreCAM(synth, layer="gap")
    with pytest.raises(DataError, match="32x32"):
        GradCAM(synth, layer="masked_features")(np.zeros((1, 16, 16, 3), np.uint8))


def test_outputs_are_picked_by_name():
    image = keras.Input((S, S, 3), name="image")
    x = keras.layers.Conv2D(2, 3, name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    two = keras.Model(image, {"a": keras.layers.Dense(7, name="a")(x),
                              "b": keras.layers.Dense(7, name="b")(x)})
    with pytest.raises(ModelError, match="pass output=NAME"):
        GradCAM(two)
    maps = GradCAM(two, output="b")(np.zeros((1, S, S, 3), np.uint8) + 100)
    assert maps.shape == (1, S, S)
    assert default_layer(two) == ("conv",)


# --------------------------------------------------------------------------- real kdskin models


@pytest.fixture(scope="module")
def student():
    from kdskin.models import build_student

    return build_student(load_config().student, S)


def test_default_layers_of_the_kdskin_models(student):
    from kdskin.models import build_baseline_cnn, build_teacher, to_deployable

    assert default_layer(student) == ("cnn_features", "effnet_features")
    assert default_layer(to_deployable(student)) == ("cnn_features", "effnet_features")
    teacher = build_teacher(load_config().teacher, S)
    assert default_layer(teacher) == ("vit_token_grid", "conv_features")
    assert default_layer(build_baseline_cnn(S)) == ("block_2_conv",)

    class Holder:  # a distiller is explained through its student
        pass

    holder = Holder()
    holder.student = student
    assert default_layer(holder) == ("cnn_features", "effnet_features")
    images = np.random.default_rng(1).integers(0, 256, (2, S, S, 3)).astype(np.uint8)
    for cls in (GradCAM, ScoreCAM):
        kwargs = {"max_n": 4} if cls is ScoreCAM else {}
        maps = cls(teacher, **kwargs)(images)
        assert maps.shape == (2, S, S) and np.isfinite(maps).all()
        assert 0.0 <= maps.min() and maps.max() <= 1.0


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "lime"])
def test_every_method_on_the_student_gives_image_sized_maps_in_0_1(student, method):
    images = np.random.default_rng(2).integers(0, 256, (2, S, S, 3)).astype(np.uint8)
    if method == "gradcam":
        explainer = GradCAM(student)
    elif method == "scorecam":
        explainer = ScoreCAM(student, max_n=4)
    else:
        explainer = LimeExplainer(predict_probs_fn(student), num_samples=40, num_segments=12)
    maps = explainer(images)
    assert maps.shape == (2, S, S) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert explainer.last_class_indices.shape == (2,)


# --------------------------------------------------------------------------- LIME


def test_lime_is_reproducible_with_a_seed_and_finds_the_evidence(synth, data):
    images, truth = data
    predict = predict_probs_fn(synth)

    def run(seed):
        return LimeExplainer(predict, num_samples=200, num_segments=40, seed=seed)(images[:2])

    first, again, other = run(0), run(0), run(1)
    assert first.shape == (2, S, S) and first.min() >= 0.0 and first.max() == 1.0
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    for saliency, evidence in zip(first, truth[:2], strict=True):
        assert evidence[peak(saliency)]
        assert saliency[S // 2:, : S // 2].max() < 0.2


def test_lime_checks_the_prediction_function():
    with pytest.raises(ModelError, match="callable"):
        LimeExplainer("not a function")
    bad = LimeExplainer(lambda x: np.zeros(len(x)), num_samples=10, num_segments=4)
    with pytest.raises(ModelError, match="probabilities"):
        bad(np.zeros((1, S, S, 3), np.uint8))


# --------------------------------------------------------------------------- faithfulness


def test_perfect_saliency_beats_random_and_the_table_says_so(synth, data, tmp_path):
    images, truth = data
    maps = {"perfect": truth.astype(np.float32),
            "inverse": (~truth).astype(np.float32)}
    result = evaluate_faithfulness(predict_probs_fn(synth), images, maps, [0] * len(images),
                                   steps=10, seed=0)
    json.dumps(result)  # JSON-serialisable
    perfect, rand = result["methods"]["perfect"], result["methods"]["random"]
    assert len(perfect["deletion_curve"]) == 11 and result["fractions"][-1] == 1.0
    assert perfect["deletion_auc"] < rand["deletion_auc"] - 0.1
    # the blurred baseline keeps part of the red square's mean, which this linear model reads:
    # insertion starts high, so the gap is smaller than for deletion
    assert perfect["insertion_auc"] > rand["insertion_auc"] + 0.03
    assert perfect["verdict"] == "better than random"
    assert result["methods"]["inverse"]["verdict"] == "no better than random"
    table = faithfulness_table(result)
    assert "| perfect |" in table and "| random |" in table and "better than random" in table
    path = plot_faithfulness(result, tmp_path / "faith.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same seed gives the same numbers
    again = evaluate_faithfulness(predict_probs_fn(synth), images, maps, [0] * len(images),
                                  steps=10, seed=0)
    assert again["methods"]["random"] == result["methods"]["random"]


def test_faithfulness_rejects_mismatched_maps(synth, data):
    images, _ = data
    with pytest.raises(DataError, match="expected"):
        evaluate_faithfulness(predict_probs_fn(synth), images, {"x": np.zeros((1, S, S))})


# --------------------------------------------------------------------------- figures


def test_explain_images_writes_the_files_it_lists(synth, data, tmp_path):
    images, _ = data
    cfg = ExplainConfig(lime_samples=60, lime_segments=16, scorecam_max_n=2,
                        faithfulness_steps=5, cam_layers=["masked_features"])
    names = ["ISIC_1.jpg", "ISIC 2", "ISIC_1.png", "x/y"]
    out = tmp_path / "explain"
    result = explain_images(synth, images, names, ["gradcam", "scorecam", "lime"], out, cfg,
                            labels=[0, 0, 1, 0])
    written = json.loads((out / "explanations.json").read_text())
    assert written["methods"] == ["gradcam", "scorecam", "lime"]
    assert len(written["entries"]) == 12
    files = [e["file"] for e in written["entries"]]
    assert len(set(files)) == 12  # clashing names got distinct files
    files += list(written["grids"].values()) + [written["comparison"], written["maps"]]
    files += [written["faithfulness"][k] for k in ("json", "table", "plot")]
    for rel in files:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    entry = written["entries"][0]
    assert entry["predicted_class"] == CLASSES[0] and 0.0 < entry["prob"] <= 1.0
    assert entry["true_class"] == CLASSES[0] and entry["image"] == "ISIC_1.jpg"
    with np.load(out / "maps.npz") as saved:
        assert saved["scorecam"].shape == (4, S, S)
    assert set(result["faithfulness"]["summary"]) == {"gradcam", "scorecam", "lime", "random"}
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave nothing behind


@pytest.mark.slow
def test_explain_images_from_keras_and_tflite_files(tmp_path):
    from kdskin.models import build_baseline_cnn

    model = build_baseline_cnn(S)
    path = tmp_path / "baseline.keras"
    model.save(path)
    images = np.random.default_rng(3).integers(0, 256, (2, S, S, 3)).astype(np.uint8)
    cfg = ExplainConfig(lime_samples=30, lime_segments=8, faithfulness=False)
    result = explain_images(path, images, ["a", "b"], ["gradcam", "lime"], tmp_path / "k", cfg)
    assert result["model_format"] == "keras" and "faithfulness" not in result
    assert (tmp_path / "k" / "gradcam" / "a.png").is_file()

    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelError, match=r"Grad-CAM.*\.keras model"):
        explain_images(fake, images, ["a", "b"], ["gradcam"], tmp_path / "t", cfg)
    with pytest.raises(ModelError, match="Score-CAM"):
        explain_images(fake, images, ["a", "b"], ["lime", "scorecam"], tmp_path / "t", cfg)
    assert not (tmp_path / "t").exists()
    with pytest.raises(ModelError, match="not found"):
        explain_images(tmp_path / "missing.keras", images, ["a", "b"], ["lime"],
                       tmp_path / "t", cfg)
    with pytest.raises(ConfigError, match="methods has unknown method.*'shap'"):
        explain_images(model, images, ["a", "b"], ["shap"], tmp_path / "t", cfg)

    export = pytest.importorskip("kdskin.export.convert")
    tflite = export.export_tflite(model, tmp_path / "tfl", None, kinds=("fp32",))["fp32"]
    result = explain_images(tflite, images, ["a", "b"], ["lime"], tmp_path / "l", cfg)
    assert result["model_format"] == "tflite"
    keras_lime = np.load(tmp_path / "k" / "maps.npz")["lime"]
    tflite_lime = np.load(tmp_path / "l" / "maps.npz")["lime"]
    np.testing.assert_allclose(tflite_lime, keras_lime, atol=0.05)  # same model, same seed


# --------------------------------------------------------------------------- TensorBoard


def _events(log_dir: Path) -> list:
    from tensorflow.core.util import event_pb2

    events = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            events.append(event_pb2.Event.FromString(record.numpy()))
    return events


def test_pick_images_per_class_is_seeded_and_covers_each_class():
    labels = np.array([5, 5, 5, 0, 4, 4, 5, 2])
    picked = pick_images_per_class(labels, per_class=2, seed=0)
    assert sorted(labels[picked].tolist()) == [0, 2, 4, 4, 5, 5]
    np.testing.assert_array_equal(picked, pick_images_per_class(labels, per_class=2, seed=0))


@pytest.mark.slow
def test_scorecam_callback_writes_readable_image_summaries(synth, data, tmp_path):
    images, _ = data
    labels = np.array([0, 0, 1, 0])
    synth.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    log_dir = tmp_path / "logs" / "scorecam" / "synthetic"
    callback = ScoreCamCallback(images, labels, log_dir, every=2, layer="masked_features",
                                max_n=2, tag="scorecam")
    synth.fit(images.astype(np.float32), {"logits": labels}, epochs=4, batch_size=4, verbose=0,
              callbacks=[callback])
    summaries = [(e.step, v) for e in _events(log_dir) for v in e.summary.value]
    assert [step for step, _ in summaries] == [1, 3]  # every 2 epochs, step = epoch
    for _, value in summaries:
        assert value.tag == "scorecam"
        assert value.metadata.plugin_data.plugin_name == "images"
        width, height, *pngs = value.tensor.string_val
        assert (int(width), int(height)) == (2 * S, S)
        assert len(pngs) == len(images)
        picture = tf.io.decode_png(pngs[0]).numpy()
        assert picture.shape == (S, 2 * S, 3)
        np.testing.assert_array_equal(picture[:, :S], images[0])  # the image, then its overlay
        assert "true akiec" in value.metadata.summary_description


@pytest.mark.slow
def test_callback_explains_a_distillers_student(data, tmp_path):
    images, _ = data

    class Wrapper(keras.Model):  # stands in for kdskin's Distiller: trains, exposes .student
        def __init__(self, student):
            super().__init__()
            self.student = student

        def call(self, x):
            return self.student(x)["logits"]

    student = synthetic_model()
    wrapper = Wrapper(student)
    wrapper.compile(optimizer=keras.optimizers.SGD(0.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = ScoreCamCallback(images[:2], [0, 0], tmp_path / "d", layer="masked_features",
                                max_n=2)
    wrapper.fit(images.astype(np.float32), np.zeros(len(images)), epochs=1, verbose=0,
                callbacks=[callback])
    assert callback._explained is student
    assert len(_events(tmp_path / "d")) >= 1


# --------------------------------------------------------------------------- the command


def test_explain_command_on_files_and_folders(tmp_path, capsys):
    from PIL import Image

    from kdskin.cli import main
    from kdskin.models import build_baseline_cnn

    path = tmp_path / "baseline.keras"
    build_baseline_cnn(S).save(path)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.jpg")
    Image.fromarray(pixels).convert("RGBA").save(folder / "sub" / "b.png")  # any mode/size
    Image.fromarray(pixels[..., 0]).save(tmp_path / "gray.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = ["explain", "--model", str(path), "--method", "all", str(folder),
            str(tmp_path / "gray.png"), "--out", str(out), "--evaluate", "--set",
            "explain.lime_samples=30", "--set", "explain.lime_segments=8", "--set",
            "explain.scorecam_max_n=2", "--set", "explain.faithfulness_steps=4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "deletion AUC" in printed and "random" in printed  # the faithfulness table
    written = json.loads((out / "explanations.json").read_text())
    assert sorted({e["image"] for e in written["entries"]}) == ["a", "b", "gray"]
    assert written["methods"] == ["gradcam", "scorecam", "lime"]
    assert (out / "faithfulness.json").is_file() and (out / "grid_lime.png").is_file()

    # --class picks the explained class; without --evaluate no faithfulness is computed
    out2 = tmp_path / "out2"
    assert main(["explain", "--model", str(path), "--method", "gradcam", "--class", "mel",
                 str(folder / "a.jpg"), "--out", str(out2)]) == 0
    entry = json.loads((out2 / "explanations.json").read_text())["entries"][0]
    assert entry["explained_class"] == "mel" and not (out2 / "faithfulness.json").exists()

    assert main(["explain", "--model", str(path), "--class", "melanoma", str(folder),
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown class" in capsys.readouterr().err
    assert main(["explain", "--model", str(path), str(tmp_path / "missing"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "no such image file or folder" in capsys.readouterr().err
    assert main(["explain", "--model", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "IMAGE_OR_DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_explain_command_all_on_tflite_is_lime_only(tmp_path, capsys):
    from PIL import Image

    from kdskin.cli import main
    from kdskin.export.convert import export_tflite
    from kdskin.models import build_baseline_cnn

    tflite = export_tflite(build_baseline_cnn(S), tmp_path / "tfl", None, kinds=("fp32",))["fp32"]
    Image.fromarray(np.full((S, S, 3), 120, np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    assert main(["explain", "--model", str(tflite), str(tmp_path / "x.png"), "--out", str(out),
                 "--set", "explain.lime_samples=20", "--set", "explain.lime_segments=6"]) == 0
    assert "LIME only" in capsys.readouterr().out
    assert json.loads((out / "explanations.json").read_text())["methods"] == ["lime"]


def test_explain_command_evaluates_a_stratified_test_set(tmp_path, capsys):
    from kdskin.commands.explain import explain_command
    from kdskin.data.pipeline import SplitArrays
    from kdskin.models import build_baseline_cnn

    path = tmp_path / "baseline.keras"
    build_baseline_cnn(S).save(path)
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 4, 4, 4, 4, 6])
    test = SplitArrays(rng.integers(0, 256, (len(labels), S, S, 3), dtype=np.uint8), labels,
                       [f"img{i}" for i in range(len(labels))])
    cfg = load_config(None, ["explain.evaluate_images=4", "explain.faithfulness_steps=3"])
    result = explain_command(cfg, str(path), [], "gradcam", str(tmp_path / "out"),
                             evaluate=True, test_data=lambda: test)
    shown = [e["true_class"] for e in result["entries"]]
    assert shown == ["akiec", "bcc", "mel", "vasc"]  # one per class present, round-robin
    printed = capsys.readouterr()
    assert "explaining 4 test images" in printed.out and "deletion AUC" in printed.out
    assert "\x1b[" not in printed.err
    with pytest.raises(ConfigError, match="--method has unknown method"):
        explain_command(cfg, str(path), [], "shap", str(tmp_path / "x"), evaluate=True,
                        test_data=lambda: test)


def test_importing_the_package_and_the_method_list_loads_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, kdskin.explain as e\n"
            "from kdskin.explain.methods import METHODS, check_methods\n"
            "print(check_methods(['lime', 'gradcam', 'lime']), 'tensorflow' in sys.modules)\n"
            "print(e.pick_images_per_class([1, 0, 2], 1).tolist(), 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["['lime', 'gradcam'] False", "[1, 0, 2] False"]
