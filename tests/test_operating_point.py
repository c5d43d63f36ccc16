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
