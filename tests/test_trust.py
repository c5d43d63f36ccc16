"""kdskin.trust: calibration, bootstrap intervals, referral threshold, out-of-scope threshold."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image
from scipy.special import softmax

from kdskin.constants import CLASS_INDEX, NUM_CLASSES
from kdskin.errors import ConfigError, DataError
from kdskin.metrics import classification_metrics
from kdskin.trust import calibration as cal
from kdskin.trust import ood, referral, uncertainty


def calibrated_logits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(n, 7)`` and labels drawn from their own softmax: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, NUM_CLASSES))
    probs = softmax(logits, axis=1)
    labels = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


def model_probs(n: int, seed: int = 0, skill: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Labels with every class present and probabilities of a moderately good model."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.arange(NUM_CLASSES), rng.integers(0, NUM_CLASSES, n - NUM_CLASSES)]
    logits = rng.normal(0, 1, (n, NUM_CLASSES))
    logits[np.arange(n), labels] += skill
    return labels, softmax(logits, axis=1)


# ---------------------------------------------------------------- calibration


def test_temperature_fixes_an_over_confident_model():
    logits, labels = calibrated_logits(3000)
    over = logits * 4.0                       # the same ranking, four times too confident
    t = cal.fit_temperature(over, labels)
    assert 3.0 < t < 5.5
    before, after = cal.apply_temperature(over, 1.0), cal.apply_temperature(over, t)
    assert cal.nll(labels, after) < cal.nll(labels, before) - 0.3
    assert cal.expected_calibration_error(labels, after) < 0.04
    assert np.array_equal(before.argmax(axis=1), after.argmax(axis=1))
    assert np.allclose(after.sum(axis=1), 1.0)


def test_temperature_of_a_calibrated_model_is_near_one():
    logits, labels = calibrated_logits(4000, seed=1)
    assert 0.85 < cal.fit_temperature(logits, labels) < 1.15


def test_temperature_from_probabilities_matches_logits():
    logits, labels = calibrated_logits(1000, seed=2)
    over = logits * 3.0
    probs = cal.apply_temperature(over, 1.0)
    t_probs = cal.fit_temperature_from_probs(probs, labels)
    assert t_probs == pytest.approx(cal.fit_temperature(over, labels), rel=1e-3)
    assert np.allclose(cal.apply_temperature_to_probs(probs, t_probs),
                       cal.apply_temperature(over, t_probs), atol=1e-6)


def test_temperature_handles_zero_probabilities():
    probs = np.zeros((4, NUM_CLASSES))
    probs[np.arange(4), [0, 1, 2, 3]] = 1.0   # an int8 model can output exact 0 and 1
    out = cal.apply_temperature_to_probs(probs, 2.0)
    assert np.all(np.isfinite(out)) and np.allclose(out.sum(axis=1), 1.0)


def test_ece_small_when_calibrated_large_when_over_confident():
    logits, labels = calibrated_logits(5000, seed=3)
    good = cal.expected_calibration_error(labels, softmax(logits, axis=1))
    bad = cal.expected_calibration_error(labels, softmax(5 * logits, axis=1))
    assert good < 0.03
    assert bad > 0.15


def test_ece_brier_nll_exact_values():
    labels = np.array([0, 1])
    probs = np.zeros((2, NUM_CLASSES))
    probs[0, 0], probs[0, 1] = 0.9, 0.1       # right with confidence 0.9
    probs[1, 0], probs[1, 1] = 0.7, 0.3       # wrong with confidence 0.7
    # bins: 0.9 -> accuracy 1, gap 0.1; 0.7 -> accuracy 0, gap 0.7; mean 0.4
    assert cal.expected_calibration_error(labels, probs) == pytest.approx(0.4)
    assert cal.brier_score(labels, probs) == pytest.approx((0.01 + 0.01 + 0.49 + 0.49) / 2)
    assert cal.nll(labels, probs) == pytest.approx(-(np.log(0.9) + np.log(0.3)) / 2)


def test_calibration_report_and_plot(tmp_path):
    logits, labels = calibrated_logits(500, seed=4)
    over = 3 * logits
    t = cal.fit_temperature(over, labels)
    report = cal.calibration_report(labels, softmax(over, axis=1),
                                    cal.apply_temperature(over, t), temperature=t)
    assert report["n"] == 500 and report["n_bins"] == 15 and report["temperature"] == t
    for part in ("before", "after"):
        bins = report[part]["reliability"]
        assert len(bins["count"]) == 15 and sum(bins["count"]) == 500
        assert {"ece", "brier", "nll", "accuracy", "mean_confidence"} <= set(report[part])
    assert report["after"]["nll"] < report["before"]["nll"]
    png = cal.plot_reliability(report, tmp_path / "plots" / "reliability.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]


def test_class_reliability_uses_present_classes():
    labels, probs = model_probs(300)
    out = cal.class_reliability(labels[labels != 3], probs[labels != 3])
    assert 3 not in out and set(out) == set(range(NUM_CLASSES)) - {3}
    assert all(0 <= v <= 1 for r in out.values() for v in r["fraction_positive"])


@pytest.mark.parametrize("probs, message", [
    (np.full((3, NUM_CLASSES), 0.5), "rows summing to 1"),
    (np.ones((3,)), "shape"),
    (np.full((3, NUM_CLASSES), np.nan), "NaN"),
])
def test_bad_probabilities_are_refused(probs, message):
    with pytest.raises(DataError, match=message):
        cal.nll(np.zeros(3, int), probs)


def test_bad_labels_and_temperature_are_refused():
    probs = np.full((3, NUM_CLASSES), 1 / NUM_CLASSES)
    with pytest.raises(DataError, match="2 labels but 3"):
        cal.brier_score([0, 1], probs)
    with pytest.raises(DataError, match="0..6"):
        cal.brier_score([0, 1, 7], probs)
    with pytest.raises(DataError, match="temperature"):
        cal.apply_temperature(np.zeros((2, NUM_CLASSES)), 0.0)


# ---------------------------------------------------------------- bootstrap


def test_vectorised_metrics_equal_classification_metrics_on_repeated_images():
    labels, probs = model_probs(200, seed=5)
    probs = np.round(probs, 2)                # ties, as an int8 model has
    probs /= probs.sum(axis=1, keepdims=True)
    counts = uncertainty.bootstrap_counts(labels, n_resamples=3, seed=1)
    values = uncertainty._vector_metrics(labels, probs, counts, list(uncertainty.METRICS))
    for b, row in enumerate(counts):
        idx = np.repeat(np.arange(len(labels)), row)
        expected = classification_metrics(labels[idx], probs[idx])
        for name in uncertainty.METRICS:
            assert values[name][b] == pytest.approx(expected[name], abs=1e-12), name


def test_stratified_counts_keep_class_sizes():
    labels, _ = model_probs(100, seed=6)
    counts = uncertainty.bootstrap_counts(labels, n_resamples=50, seed=0)
    assert counts.shape == (50, 100) and np.all(counts.sum(axis=1) == 100)
    for k in range(NUM_CLASSES):
        assert np.all(counts[:, labels == k].sum(axis=1) == np.sum(labels == k))
    loose = uncertainty.bootstrap_counts(labels, n_resamples=50, seed=0, stratified=False)
    per_class = loose[:, labels == 0].sum(axis=1)
    assert per_class.min() != per_class.max()


def test_bootstrap_intervals_contain_the_value_and_narrow_with_more_data():
    small = uncertainty.bootstrap_ci(*model_probs(150, seed=7), n_resamples=400)
    large = uncertainty.bootstrap_ci(*model_probs(3000, seed=7), n_resamples=400)
    assert set(small) == set(uncertainty.METRICS)
    for name in uncertainty.METRICS:
        for result in (small, large):
            assert result[name]["low"] <= result[name]["value"] <= result[name]["high"], name
        width_small = small[name]["high"] - small[name]["low"]
        width_large = large[name]["high"] - large[name]["low"]
        assert width_large < 0.6 * width_small, name


def test_bootstrap_is_seeded_and_accepts_custom_metrics():
    labels, probs = model_probs(200, seed=8)
    a = uncertainty.bootstrap_ci(labels, probs, ["accuracy"], n_resamples=100, seed=3)
    b = uncertainty.bootstrap_ci(labels, probs, ["accuracy"], n_resamples=100, seed=3)
    assert a == b
    custom = uncertainty.bootstrap_ci(
        labels, probs, {"acc": lambda y, p: float(np.mean(p.argmax(1) == y))},
        n_resamples=100, seed=3)
    assert custom["acc"] == pytest.approx(a["accuracy"])


def test_bootstrap_undefined_metric_is_nan():
    labels, probs = model_probs(200, seed=9)
    keep = labels != CLASS_INDEX["mel"]
    out = uncertainty.bootstrap_ci(labels[keep], probs[keep], n_resamples=50)
    assert np.isnan(out["melanoma_recall"]["value"]) and np.isnan(out["melanoma_recall"]["low"])
    assert np.isfinite(out["macro_auc"]["low"])


def test_paired_difference_of_a_model_with_itself_is_zero():
    labels, probs = model_probs(300, seed=10)
    diff = uncertainty.paired_bootstrap_diff(labels, probs, probs, n_resamples=200)
    for name, d in diff.items():
        assert d["value"] == d["low"] == d["high"] == 0.0, name
        assert d["a"] == d["b"]


def test_paired_difference_sees_a_better_model():
    labels, good = model_probs(800, seed=11, skill=2.5)
    _, poor = model_probs(800, seed=11, skill=0.8)
    diff = uncertainty.paired_bootstrap_diff(labels, good, poor, ["balanced_accuracy"],
                                             n_resamples=300)["balanced_accuracy"]
    assert diff["value"] == pytest.approx(diff["a"] - diff["b"])
    assert 0 < diff["low"] <= diff["value"] <= diff["high"]


def test_bootstrap_refuses_bad_options():
    labels, probs = model_probs(50)
    with pytest.raises(DataError, match="unknown metric 'auc'"):
        uncertainty.bootstrap_ci(labels, probs, ["auc"])
    with pytest.raises(DataError, match="alpha"):
        uncertainty.bootstrap_ci(labels, probs, alpha=1.5)
    with pytest.raises(DataError, match="n_resamples"):
        uncertainty.bootstrap_ci(labels, probs, n_resamples=0)


# ---------------------------------------------------------------- referral


def test_referral_threshold_reaches_its_target_on_the_fitted_split():
    labels, probs = model_probs(700, seed=12)
    for target in (0.5, 0.8, 0.9, 0.95, 1.0):
        t = referral.fit_referral_threshold(labels, probs, target)
        m = referral.referral_metrics(labels, probs, t)
        assert m["sensitivity"] >= target
        # the largest such threshold: anything above it misses the target
        above = referral.referral_metrics(labels, probs, np.nextafter(t, np.inf))
        assert above["sensitivity"] < target


def test_referral_metrics_values():
    labels = np.array([CLASS_INDEX[c] for c in ("mel", "bcc", "nv", "nv", "akiec", "df")])
    probs = np.zeros((6, NUM_CLASSES))
    scores = [0.9, 0.2, 0.6, 0.1, 0.7, 0.3]   # malignant probability of each image
    for i, s in enumerate(scores):
        probs[i, CLASS_INDEX["mel"]] = s
        probs[i, CLASS_INDEX["nv"]] = 1 - s
    assert np.allclose(referral.malignant_score(probs), scores)
    m = referral.referral_metrics(labels, probs, 0.5)
    assert m["sensitivity"] == pytest.approx(2 / 3)          # mel, akiec referred; bcc missed
    assert m["specificity"] == pytest.approx(2 / 3)          # one nv referred
    assert m["referral_rate"] == pytest.approx(0.5)
    assert m["melanoma_sensitivity"] == 1.0
    assert (m["n_malignant"], m["n_benign"], m["n_referred"], m["n"]) == (3, 3, 3, 6)
    assert referral.refer(probs, 0.5).tolist() == [True, False, True, False, True, False]
    only_mel = referral.referral_metrics(labels, probs, 0.5, classes=("mel",))
    assert only_mel["n_malignant"] == 1 and only_mel["classes"] == ["mel"]


def test_referral_errors():
    labels, probs = model_probs(50)
    with pytest.raises(ConfigError, match="unknown malignant class 'melanoma'"):
        referral.malignant_score(probs, ("melanoma",))
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        referral.fit_referral_threshold(labels, probs, 1.2)
    benign = np.isin(labels, [CLASS_INDEX[c] for c in ("nv", "bkl", "df", "vasc")])
    with pytest.raises(DataError, match="no image of the malignant classes"):
        referral.fit_referral_threshold(labels[benign], probs[benign])


# ---------------------------------------------------------------- out of scope


def test_ood_threshold_passes_the_asked_fraction():
    rng = np.random.default_rng(13)
    scores = rng.uniform(0.3, 1.0, 1000)
    t = ood.fit_ood_threshold(scores)
    passed = ~ood.is_out_of_scope(scores, t)
    assert 0.95 <= passed.mean() <= 0.951
    assert ood.fit_ood_threshold(scores, 0.5) > t


def test_ood_metrics_and_kinds():
    rng = np.random.default_rng(14)
    s_in, s_out = rng.uniform(0.5, 1.0, 400), rng.uniform(0.0, 0.6, 200)
    t = ood.fit_ood_threshold(s_in)
    kinds = ["noise", "text"] * 100
    m = ood.ood_metrics(s_in, s_out, t, kinds)
    assert m["auroc"] > 0.95 and m["in_pass_rate"] >= 0.95
    assert m["false_pass_rate"] == pytest.approx(np.mean(s_out >= t))
    assert set(m["false_pass_rate_by_kind"]) == {"noise", "text"}
    assert ood.ood_metrics(s_in, s_in, t)["auroc"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="3 kinds for 200"):
        ood.ood_metrics(s_in, s_out, t, ["a", "b", "c"])


def test_ood_scores_point_the_same_way():
    sure = np.full((1, NUM_CLASSES), 0.01)
    sure[0, 0] = 1 - 0.01 * (NUM_CLASSES - 1)
    unsure = np.full((1, NUM_CLASSES), 1 / NUM_CLASSES)
    probs = np.r_[sure, unsure]
    for name in ("max_softmax", "neg_entropy"):
        s = ood.ood_score(probs, name)
        assert s[0] > s[1], name
    logits = np.array([[8.0] + [0.0] * 6, [0.5] * 7])
    e = ood.ood_score(logits, "energy")
    assert e[0] > e[1]
    with pytest.raises(ConfigError, match="unknown out-of-scope score"):
        ood.ood_score(probs, "mahalanobis")


def test_trust_does_not_import_tensorflow():
    import subprocess

    code = ("import sys, kdskin.trust, kdskin.data.out_of_scope; "
            "sys.exit(any(m in sys.modules for m in ('tensorflow', 'keras')))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_image_stats_score_separates_generated_out_of_scope_images():
    """Fitted on the built-in generated lesion images, the image-statistics check passes ~95%
    of held-out lesion images and flags the generated out-of-scope kinds."""
    import tempfile
    from pathlib import Path

    from kdskin.data.images import load_images
    from kdskin.data.out_of_scope import generate_out_of_scope
    from kdskin.data.synth import generate_dataset
    from kdskin.trust.image_stats import fit_image_gaussian, image_features, image_score
    from kdskin.trust.ood import fit_ood_threshold, ood_metrics

    with tempfile.TemporaryDirectory() as tmp:
        table = generate_dataset(Path(tmp) / "d", n_images=240, image_size=48, seed=3,
                                 progress=False)
        paths = sorted((Path(tmp) / "d").rglob("*.jpg"))
        images, _, _ = load_images(paths, 32, progress=False)
    assert len(table) == len(images) == 240
    fit, val, test = images[:140], images[140:190], images[190:]
    params = fit_image_gaussian(image_features(fit))
    threshold = fit_ood_threshold(image_score(image_features(val), params), 0.95)
    out, kinds = generate_out_of_scope(90, 32, seed=0, lesion_images=val[:10])
    m = ood_metrics(image_score(image_features(test), params),
                    image_score(image_features(out), params), threshold, kinds_out=kinds)
    assert m["auroc"] >= 0.9 and m["false_pass_rate"] <= 0.15 and m["in_pass_rate"] >= 0.8, m
