"""The melanoma operating point of the top-1 class (kdskin.trust.operating_point): fitted on
validation, applied by the decision rules, folded into the deployable model and the int8 file."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from kdskin.config import load_config
from kdskin.constants import CLASS_INDEX, NUM_CLASSES
from kdskin.decision import DecisionRules, score_with_rules
from kdskin.errors import ConfigError, ModelError
from kdskin.trust.calibration import apply_temperature_to_probs
from kdskin.trust.operating_point import (
    OFFSET_GRID,
    apply_offsets,
    fit_melanoma_offset,
    offsets_vector,
    remove_offsets,
    top1_effect,
)

MEL, NV = CLASS_INDEX["mel"], CLASS_INDEX["nv"]


def under_called_melanoma(n: int = 700, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and probabilities (N, 7) of a model that names melanoma too rarely: every
    melanoma's logit is pulled down by 1.2, so many melanomas come out as nevi."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    logits = rng.normal(0, 1, (n, NUM_CLASSES))
    logits[np.arange(n), labels] += 2.0
    logits[labels == MEL, NV] += 1.0  # melanomas look like nevi
    logits[:, MEL] -= 1.2
    p = np.exp(logits - logits.max(1, keepdims=True))
    return labels, p / p.sum(1, keepdims=True)


def test_balanced_offset_is_positive_and_raises_balanced_accuracy_and_recall():
    labels, probs = under_called_melanoma()
    offset = fit_melanoma_offset(labels, probs, "balanced")
    assert 0.4 <= offset <= 2.0 and offset in OFFSET_GRID
    effect = top1_effect(labels, probs, offsets_vector(offset))
    assert effect["melanoma_offset"] == offset
    assert effect["balanced_accuracy_after"] > effect["balanced_accuracy_before"] + 0.02
    assert effect["melanoma_recall_after"] > effect["melanoma_recall_before"] + 0.2
    before = balanced_accuracy_score(labels, probs.argmax(1))
    assert effect["balanced_accuracy_before"] == pytest.approx(before)
    # ... and it generalises to a fresh draw of the same model (one parameter)
    labels2, probs2 = under_called_melanoma(seed=1)
    after = balanced_accuracy_score(labels2, apply_offsets(probs2, offsets_vector(offset))
                                    .argmax(1))
    assert after > balanced_accuracy_score(labels2, probs2.argmax(1))


def test_well_placed_model_keeps_offset_near_zero_and_none_mode_is_zero():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, NUM_CLASSES, 700)
    logits = rng.normal(0, 1, (700, NUM_CLASSES))
    logits[np.arange(700), labels] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert abs(fit_melanoma_offset(labels, probs, "balanced")) <= 0.3
    assert fit_melanoma_offset(labels, probs, "none") == 0.0


def test_min_recall_floor_is_reached_on_validation():
    labels, probs = under_called_melanoma()
    balanced = fit_melanoma_offset(labels, probs, "balanced")
    floor = fit_melanoma_offset(labels, probs, "balanced", min_recall=0.95)
    assert floor > balanced
    assert top1_effect(labels, probs, offsets_vector(floor))["melanoma_recall_after"] >= 0.95
    smaller = floor - 0.05
    assert top1_effect(labels, probs, offsets_vector(smaller))["melanoma_recall_after"] < 0.95
    # from plain argmax, a floor already met needs no offset
    assert fit_melanoma_offset(labels, probs, "none", min_recall=0.01) == OFFSET_GRID[
        np.argmin(np.abs(OFFSET_GRID))]


def test_offsets_invert_and_keep_the_melanoma_ranking():
    labels, probs = under_called_melanoma(n=300)
    b = offsets_vector(0.8)
    shifted = apply_offsets(probs, b)
    np.testing.assert_allclose(shifted.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(remove_offsets(shifted, b), probs, atol=1e-9)
    assert (shifted.argmax(1) == MEL).sum() > (probs.argmax(1) == MEL).sum()
    mel = labels == MEL
    assert roc_auc_score(mel, shifted[:, MEL]) == pytest.approx(roc_auc_score(mel, probs[:, MEL]))
    odds = shifted[:, MEL] / (1 - shifted[:, MEL]) / (probs[:, MEL] / (1 - probs[:, MEL]))
    np.testing.assert_allclose(odds, np.exp(0.8), rtol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda y, p: fit_melanoma_offset(y, p, "maximal"), "melanoma offset mode"),
    (lambda y, p: fit_melanoma_offset(y, p, min_recall=1.5), "min_melanoma_recall"),
    (lambda y, p: fit_melanoma_offset(y[y != MEL], p[y != MEL], min_recall=0.7),
     "melanoma images"),
    (lambda y, p: apply_offsets(p, [0.0] * 6), "7"),
    (lambda y, p: apply_offsets(p, [0.0] * 6 + [np.nan]), "finite"),
])
def test_bad_arguments_are_one_line_config_errors(call, match):
    labels, probs = under_called_melanoma(n=100)
    with pytest.raises(ConfigError, match=match):
        call(labels, probs)


def test_rules_apply_offsets_after_the_temperature_and_fold_back():
    labels, probs = under_called_melanoma(n=200)
    b = offsets_vector(0.7)
    rules = DecisionRules(temperature=1.6, class_offsets=b)
    want = apply_offsets(apply_temperature_to_probs(probs, 1.6), b)
    np.testing.assert_allclose(rules.calibrate(probs), want, atol=1e-12)
    # an exported file returns `want`; its folded rules leave it and undo it for "before"
    folded = rules.folded()
    np.testing.assert_allclose(folded.calibrate(want), want)
    np.testing.assert_allclose(folded.uncalibrated(want), probs, atol=1e-9)
    # T = 1 with offsets still applies them
    np.testing.assert_allclose(DecisionRules(class_offsets=b).calibrate(probs),
                               apply_offsets(probs, b), atol=1e-12)
    scored = score_with_rules(folded, labels, want)
    op = scored["operating_point"]
    assert op["melanoma_offset"] == 0.7
    assert op["melanoma_recall_after"] > op["melanoma_recall_before"]
    assert "operating_point" not in score_with_rules(DecisionRules(temperature=1.6), labels,
                                                     probs)


def test_rules_save_and_reload_with_offsets(tmp_path):
    from kdskin.decision import load_rules

    rules = DecisionRules(temperature=1.2, referral_threshold=0.3,
                          class_offsets=offsets_vector(0.45))
    path = rules.save(tmp_path / "decision.json")
    assert load_rules(path) == rules
    assert load_rules(DecisionRules().save(tmp_path / "plain.json")).class_offsets is None
    bad = rules.to_dict()
    bad["class_offsets"] = [0.1, 0.2]
    (tmp_path / "bad.json").write_text(__import__("json").dumps(bad))
    with pytest.raises(ModelError, match="bad.json"):
        load_rules(tmp_path / "bad.json")


def test_config_values_and_errors():
    cfg = load_config(None, ["trust.melanoma_offset=balanced", "trust.min_melanoma_recall=0.7"])
    assert (cfg.trust.melanoma_offset, cfg.trust.min_melanoma_recall) == ("balanced", 0.7)
    assert load_config(None).trust.melanoma_offset == "none"
    with pytest.raises(ConfigError, match="trust.melanoma_offset"):
        load_config(None, ["trust.melanoma_offset=maximal"])
    with pytest.raises(ConfigError, match="trust.min_melanoma_recall"):
        load_config(None, ["trust.min_melanoma_recall=0"])


def test_fit_rules_fits_the_offset_only_when_asked():
    from kdskin.pipeline.trust import fit_rules

    labels, probs = under_called_melanoma()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3)).astype(np.uint8)
    plain = fit_rules(load_config(None), labels, probs, images, images)
    assert plain.class_offsets is None
    cfg = load_config(None, ["trust.melanoma_offset=balanced"])
    rules = fit_rules(cfg, labels, probs, images, images)
    calibrated = apply_temperature_to_probs(probs, rules.temperature)
    assert rules.class_offsets == offsets_vector(fit_melanoma_offset(labels, calibrated))
    assert rules.class_offsets[MEL] > 0
    # the referral threshold is fitted on the probabilities with the offset
    from kdskin.trust.referral import fit_referral_threshold

    assert rules.referral_threshold == fit_referral_threshold(
        labels, rules.calibrate(probs), rules.target_sensitivity, rules.malignant_classes)


@pytest.mark.slow
def test_deployable_and_int8_file_fold_the_offset(tmp_path):
    """The deployable model gives softmax(logits / T + b); saved and reloaded it is the same;
    its int8 file (float head) names the same top-1 class for almost every image."""
    import keras

    from kdskin.export.convert import export_tflite, representative_sample
    from kdskin.export.litert import TFLiteClassifier
    from kdskin.models.contract import to_deployable
    from tests.test_export import colour_data, trained_tiny

    model, images, labels = trained_tiny(epochs=3)
    b = offsets_vector(1.5)
    deploy = to_deployable(model, temperature=2.0, class_offsets=b)
    x = images[:64].astype(np.float32)
    logits = model.predict(x, verbose=0)["logits"]
    z = logits / 2.0 + np.asarray(b)
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got = deploy.predict(x, verbose=0)["probs"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    path = tmp_path / "deploy.keras"
    deploy.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0)["probs"], got,
                               atol=1e-6)
    with pytest.raises(ModelError, match="class_offsets"):
        to_deployable(model, class_offsets=[0.0] * 3)
    files = export_tflite(deploy, tmp_path / "tflite",
                          representative_sample(images, labels, 70, seed=0), kinds=("int8",))
    held_out, _ = colour_data(n_per_class=10, seed=7)
    ref = deploy.predict(held_out.astype(np.float32), verbose=0)["probs"]
    int8 = TFLiteClassifier(files["int8"]).predict(held_out)
    assert np.mean(int8.argmax(1) == ref.argmax(1)) >= 0.95
    assert np.abs(int8 - ref).max() < 0.1


def test_model_card_and_metadata_state_the_offset():
    from kdskin.export.metadata import ModelInfo
    from kdskin.trust.model_card import render_model_card

    card = render_model_card({"calibration": {"temperature": 1.4, "fitted_on": "validation",
                                              "melanoma_offset": 0.35}})
    assert "log-odds offset of 0.35 on melanoma" in card
    assert "offset" not in render_model_card({"calibration": {"temperature": 1.4}})
    rules = DecisionRules(temperature=1.4, class_offsets=offsets_vector(0.35)).folded()
    text = ModelInfo("m", "1", decision=rules.to_dict()).full_description()
    assert "offsets of the top-1 class (mel +0.35) (already folded)" in text


# --------------------------------------------------------------------------- prior offset


def prior_biased_model(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """Labels (N,) drawn with a skewed prior, logits (N, 7) of a model that adds the log prior
    to class evidence (it predicts with the training prior), and that log prior (7,)."""
    from kdskin.data.pipeline import logit_adjustment

    rng = np.random.default_rng(seed)
    prior = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
    train = rng.choice(NUM_CLASSES, 20000, p=prior)
    log_prior = logit_adjustment(train, 1.0)
    labels = rng.choice(NUM_CLASSES, n, p=prior)
    evidence = rng.normal(0, 1, (n, NUM_CLASSES))
    evidence[np.arange(n), labels] += 2.0
    return labels, evidence + log_prior, log_prior


def test_prior_offsets_are_centred_minus_tau_log_prior():
    from kdskin.trust.operating_point import prior_offsets

    log_prior = np.log(np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02]))
    b = np.array(prior_offsets(log_prior, 0.5))
    np.testing.assert_allclose(b.sum(), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diff(b), -0.5 * np.diff(log_prior), rtol=1e-12)
    assert not np.any(prior_offsets(log_prior, 0.0))
    assert not np.any(prior_offsets(np.log(np.full(7, 1 / 7)), 1.0))  # uniform: nothing
    with pytest.raises(ConfigError, match="log_prior must be 7"):
        prior_offsets(log_prior[:3], 1.0)
    with pytest.raises(ConfigError, match="log_prior"):
        prior_offsets(-log_prior, 1.0)  # frequencies above 1


def test_fit_prior_offset_undoes_a_prior_bias_and_leaves_a_balanced_model_alone():
    from kdskin.trust.operating_point import PRIOR_TAU_GRID, fit_prior_offset

    labels, logits, log_prior = prior_biased_model()
    fit = fit_prior_offset(labels, logits, log_prior)
    assert 0.7 <= fit["tau"] <= 1.3  # the Bayes correction is tau = 1
    assert fit["balanced_accuracy_after"] > fit["balanced_accuracy_before"] + 0.05
    shifted = logits + np.asarray(fit["offsets"])
    assert fit["balanced_accuracy_after"] == pytest.approx(
        balanced_accuracy_score(labels, shifted.argmax(1)))
    # It generalises: the same offsets on a fresh draw help as much.
    y2, z2, _ = prior_biased_model(seed=1)
    gain = (balanced_accuracy_score(y2, (z2 + np.asarray(fit["offsets"])).argmax(1))
            - balanced_accuracy_score(y2, z2.argmax(1)))
    assert gain > 0.05
    # A model without the bias gets (nearly) no offset; tau 0 ties resolve to 0.
    balanced = fit_prior_offset(labels, logits - log_prior, log_prior)
    assert balanced["tau"] <= 0.2
    assert fit_prior_offset(labels, np.zeros_like(logits), log_prior)["tau"] == 0.0
    assert PRIOR_TAU_GRID[0] == 0.0
    with pytest.raises(ConfigError, match=r"logits must be finite \(N, 7\)"):
        fit_prior_offset(labels, logits[:, :3], log_prior)
    with pytest.raises(ConfigError, match="labels for"):
        fit_prior_offset(labels[:10], logits, log_prior)


def test_teacher_offset_config_and_fit_teacher_offsets():
    """distill.teacher_offset: a checked choice; the pipeline fits it on the validation split
    at the teacher's size from the training labels' prior, and not at all for ``none``."""
    import keras

    from kdskin.pipeline.data import RunData
    from kdskin.pipeline.stages import fit_teacher_offsets

    with pytest.raises(ConfigError, match="teacher_offset"):
        load_config(None, ["distill.teacher_offset=fitted"])
    labels, logits, log_prior = prior_biased_model(n=600)
    inp = keras.Input((2, 2, 3), name="image")
    dense = keras.layers.Dense(7, use_bias=False, name="logits")
    teacher = keras.Model(inp, {"logits": dense(keras.layers.Flatten()(inp))})
    dense.set_weights([np.eye(12, 7, dtype="float32")])  # its logits: the first 7 "pixels"
    images = np.zeros((len(labels), 12), "float32")
    images[:, :7] = logits
    images = images.reshape(-1, 2, 2, 3)

    class Split:
        pass

    val = Split()
    val.images, val.labels = images, labels
    data = RunData.__new__(RunData)
    data.val = val
    train_labels = np.random.default_rng(2).choice(
        NUM_CLASSES, 5000, p=np.exp(log_prior) / np.exp(log_prior).sum())
    cfg = load_config(None, ["distill.teacher_offset=balanced"])
    fit = fit_teacher_offsets(cfg, teacher, data, train_labels)
    assert 0.7 <= fit["tau"] <= 1.3
    assert fit["balanced_accuracy_after"] > fit["balanced_accuracy_before"]
    assert len(fit["offsets"]) == NUM_CLASSES
    assert fit_teacher_offsets(load_config(None), teacher, data, train_labels) is None
