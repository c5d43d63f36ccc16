import json

import numpy as np
import pytest

from kdskin.constants import CLASSES, NUM_CLASSES
from kdskin.errors import DataError, ModelError
from kdskin.metrics import classification_metrics, macro_auc, majority_accuracy


def _onehot_probs(pred, n=NUM_CLASSES, conf=0.9):
    p = np.full((len(pred), n), (1 - conf) / (n - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_metrics_against_hand_computed_values():
    y = np.array([0, 0, 0, 4, 4, 5, 5, 5, 5, 5])
    pred = np.array([0, 0, 4, 4, 5, 5, 5, 5, 5, 0])
    m = classification_metrics(y, _onehot_probs(pred))
    assert m["accuracy"] == pytest.approx(7 / 10)
    # recalls: class0 2/3, mel 1/2, nv 4/5 -> balanced = mean over present classes
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    assert m["melanoma_recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["akiec"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["nv"]["support"] == 5
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == 10 and cm[0, 4] == 1 and cm[5, 0] == 1
    # macro F1 over present classes: f1(akiec)=2/3, f1(mel)=1/2, f1(nv)=0.8
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0.8) / 3)
    json.dumps(m)  # JSON-ready


def test_auc_perfect_and_random():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(NUM_CLASSES), 20)
    assert macro_auc(y, np.eye(NUM_CLASSES)[y]) == pytest.approx(1.0)
    assert 0.35 < macro_auc(y, rng.random((len(y), NUM_CLASSES))) < 0.65


def test_per_class_and_melanoma_auc_by_hand(tmp_path):
    from kdskin.io import write_json

    y = np.array([4, 4, 5, 5])
    probs = np.full((4, NUM_CLASSES), 0.01)
    probs[:, 4] = [0.9, 0.4, 0.5, 0.1]  # mel: 3 of the 4 (melanoma, other) pairs ordered right
    probs[:, 5] = [0.05, 0.5, 0.4, 0.8]  # nv: 3 of 4 as well
    probs /= probs.sum(axis=1, keepdims=True)
    m = classification_metrics(y, probs)
    assert m["melanoma_auc"] == pytest.approx(0.75)
    assert m["per_class"]["mel"]["auc"] == pytest.approx(0.75)
    assert m["per_class"]["nv"]["auc"] == pytest.approx(0.75)
    assert np.isnan(m["per_class"]["df"]["auc"])  # absent: no AUC
    assert m["macro_auc"] == pytest.approx(0.75)  # over the classes present only
    saved = json.loads(write_json(tmp_path / "m.json", m).read_text())
    assert saved["per_class"]["df"]["auc"] is None and saved["melanoma_auc"] == 0.75


def test_metrics_reject_bad_shapes():
    with pytest.raises(DataError, match="shape"):
        classification_metrics(np.zeros(3), np.zeros((3, 5)))
    with pytest.raises(DataError, match="labels but"):
        classification_metrics(np.zeros(3), np.zeros((4, 7)))


def test_majority_accuracy():
    assert majority_accuracy(np.array([5, 5, 1]), np.array([5, 1, 5, 5])) == 0.75


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    from kdskin.models import build_baseline_cnn

    model = build_baseline_cnn(32)
    path = tmp_path_factory.mktemp("m") / "baseline.keras"
    model.save(path)
    return path, model


def test_keras_classifier_gives_probabilities(tiny_model_file):
    from kdskin.evaluate import load_classifier

    path, model = tiny_model_file
    clf = load_classifier(path)
    assert clf.input_size == 32
    x = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype(np.uint8)
    probs = clf.predict(x)
    assert probs.shape == (5, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    logits = model.predict(x.astype("float32"), verbose=0)["logits"]
    np.testing.assert_array_equal(probs.argmax(1), logits.argmax(1))


def test_load_classifier_errors(tmp_path):
    from kdskin.evaluate import load_classifier

    with pytest.raises(ModelError, match="not found"):
        load_classifier(tmp_path / "none.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match="cannot load"):
        load_classifier(bad)
    with pytest.raises(ModelError, match="unknown model type"):
        load_classifier(tmp_path / "m.onnx")


def test_evaluate_and_predict_commands(tiny_model_file, ham_dir, tmp_path, capsys):
    from kdskin.cli import main

    path, _ = tiny_model_file
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(path), "--data", str(ham_dir), "--split", "all",
                 "--json", str(out), "--plots", str(tmp_path / "plots")]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 42 and 0 <= result["accuracy"] <= 1
    assert set(result["per_class"]) == set(CLASSES)
    assert (tmp_path / "plots" / "baseline_confusion.png").is_file()
    assert (tmp_path / "plots" / "baseline_roc.png").is_file()
    img = next(ham_dir.rglob("*.jpg"))
    capsys.readouterr()
    assert main(["predict", "--model", str(path), "--top", "2", str(img)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert line.startswith(str(img)) and line.count(",") == 1


def test_evaluate_against_gives_paired_differences(tiny_model_file, ham_dir, tmp_path, capsys):
    from kdskin.cli import main
    from kdskin.models import build_baseline_cnn

    path, _ = tiny_model_file
    other = tmp_path / "other_40.keras"  # another input size: decoded again at 40 px
    build_baseline_cnn(40).save(other)
    out, alone = tmp_path / "eval.json", tmp_path / "other.json"
    assert main(["evaluate", "--model", str(path), "--data", str(ham_dir), "--split", "all",
                 "--json", str(out), "--against", str(other), str(path)]) == 0
    assert main(["evaluate", "--model", str(other), "--data", str(ham_dir), "--split", "all",
                 "--json", str(alone)]) == 0
    result, other_result = json.loads(out.read_text()), json.loads(alone.read_text())
    versus_other, versus_itself = result["comparisons"]
    assert versus_other["against"] == str(other) and versus_other["input_size"] == 40
    for key in ("balanced_accuracy", "macro_auc", "melanoma_recall"):
        d = versus_other["difference"][key]
        assert d["a"] == pytest.approx(result[key]) and d["b"] == pytest.approx(other_result[key])
        assert d["value"] == pytest.approx(d["a"] - d["b"])
        assert d["low"] <= d["value"] <= d["high"]
        same = versus_itself["difference"][key]
        assert same["value"] == 0 and same["low"] == 0 and same["high"] == 0
    printed = capsys.readouterr().out
    assert f"minus {other}" in printed and "includes 0" in printed


def test_evaluate_against_a_missing_model_is_a_one_line_error(tiny_model_file, ham_dir,
                                                               tmp_path, capsys):
    from kdskin.cli import main

    path, _ = tiny_model_file
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(path), "--data", str(ham_dir), "--json", str(out),
                 "--against", str(tmp_path / "none.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none.tflite: model file not found" in err and len(err.splitlines()) == 1
    assert not out.exists()
