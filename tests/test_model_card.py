"""kdskin.trust.model_card: MODEL_CARD.md from a run's numbers, and file hashes."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.special import softmax

from kdskin.constants import CLASSES, NUM_CLASSES
from kdskin.metrics import classification_metrics
from kdskin.trust import calibration as cal
from kdskin.trust import model_card as mc
from kdskin.trust import ood, referral, uncertainty


def full_info(tmp_path) -> dict:
    """A ModelCardInfo filled from the trust functions, as the pipeline will fill it."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.arange(NUM_CLASSES), rng.integers(0, NUM_CLASSES, 293)]
    logits = rng.normal(0, 1, (300, NUM_CLASSES))
    logits[np.arange(300), labels] += 2
    probs = softmax(3 * logits, axis=1)
    t = cal.fit_temperature_from_probs(probs, labels)
    after = cal.apply_temperature_to_probs(probs, t)
    threshold = referral.fit_referral_threshold(labels, after, 0.9)
    scores = ood.max_softmax_score(after)
    oos_threshold = ood.fit_ood_threshold(scores)
    model = tmp_path / "student_int8.tflite"
    model.write_bytes(b"tflite bytes")
    result = {"n": 300, "intervals": uncertainty.bootstrap_ci(labels, after, n_resamples=100),
              "per_class": classification_metrics(labels, after)["per_class"]}
    external = {**result, "external": True,
                "intervals": {k: {**v, "value": v["value"] - 0.1}
                              for k, v in result["intervals"].items()}}
    return {
        "run_name": "quickstart", "model_name": "student_mkd_fusion", "image_size": 64,
        "data": {"source": "ham10000", "n_images": 10015, "n_lesions": 7470},
        "protocol": {"name": "lesion_grouped", "split_sizes": {"train": 7000, "val": 1500,
                                                               "test": 1515}, "seed": 42},
        "results": {"test": result, "isic2018": external},
        "bootstrap": {"n_resamples": 100, "seed": 0, "alpha": 0.05},
        "comparisons": {"KD - baseline": uncertainty.paired_bootstrap_diff(
            labels, after, softmax(logits, axis=1), ["balanced_accuracy"], n_resamples=100)},
        "calibration": {"temperature": t, "fitted_on": "val",
                        "reports": {"test": cal.calibration_report(labels, probs, after, 15, t)}},
        "operating_point": {"classes": list(referral.MALIGNANT_CLASSES), "threshold": threshold,
                            "target_sensitivity": 0.9, "fitted_on": "val",
                            "results": {"test": referral.referral_metrics(labels, after,
                                                                          threshold)}},
        "out_of_scope": {"score": "max_softmax", "threshold": oos_threshold, "pass_rate": 0.95,
                         "metrics": ood.ood_metrics(scores, rng.uniform(0, 0.5, 90),
                                                    oos_threshold, ["noise", "text", "uniform"]
                                                    * 30)},
        "versions": {"kdskin": "0.1.0", "tensorflow": "2.21.0", "litert": None},
        "files": mc.describe_files([model], root=tmp_path),
        "limits": ["a run-specific limit"],
    }


def test_every_section_is_named_with_minimal_info():
    for info in ({}, {"model_name": "m"}, None):
        card = mc.render_model_card(info)
        for section in mc.SECTIONS:
            assert f"## {section}" in card, section
        assert "not a medical device" in card.lower() and "not for diagnosis" in card.lower()
        assert mc.NOT_MEASURED in card
        assert "no skin-tone labels" in card
        assert "dermoscopic images only" in card.lower()


def test_full_card_shows_the_numbers(tmp_path):
    info = full_info(tmp_path)
    card = mc.render_model_card(info)
    assert card.startswith("# Model card: student_mkd_fusion")
    assert "CC BY-NC 4.0" in card and "lesion-grouped" in card
    test = info["results"]["test"]["intervals"]["balanced_accuracy"]
    assert f"{test['value']:.3f} ({test['low']:.3f} to {test['high']:.3f})" in card
    assert "isic2018 (external), n=300" in card
    assert "drop 0.100" in card
    assert "bootstrap 95% interval" in card and "100 resamples, seed 0" in card
    assert "| KD - baseline | balanced accuracy (ISIC metric) | 0.000 (0.000 to 0.000) |" in card
    assert f"T = {info['calibration']['temperature']:.3f}" in card
    ece = info["calibration"]["reports"]["test"]["after"]["ece"]
    assert f"{ece:.3f}" in card
    assert f"{info['operating_point']['threshold']:.4f}" in card
    assert "P(mel + bcc + akiec)" in card
    assert "false-pass rate" in card and "| noise |" in card
    for c in CLASSES:
        assert f"| {c} |" in card
    assert "64 x 64 px" in card and "a run-specific limit" in card
    assert "TensorFlow: 2.21.0" in card and "LiteRT: not recorded" in card
    assert hashlib.sha256(b"tflite bytes").hexdigest() in card
    assert "| student_int8.tflite | 12 |" in card


def test_synth_source_says_generated_data(tmp_path):
    card = mc.render_model_card({"data": {"source": "synth"}})
    assert "built-in generated data" in card
    assert "CC BY-NC" not in card


def test_nan_and_missing_values_do_not_crash():
    info = {"results": {"test": {"n": 10, "intervals": {
        "melanoma_recall": {"value": float("nan"), "low": float("nan"), "high": float("nan")}},
        "per_class": {"mel": {"recall": 0.5}}}},
        "calibration": {"reports": {"val": {"before": {"ece": 0.1}}}},
        "operating_point": {"threshold": 0.3, "results": {"test": {}}},
        "out_of_scope": {"threshold": 0.5}}
    card = mc.render_model_card(info)
    assert "n/a" in card and "Temperature: not measured in this run" in card


def test_write_sha256_and_versions(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f.bin").write_bytes(data)
    assert mc.sha256_file(tmp_path / "f.bin", chunk_size=1000) == hashlib.sha256(data).hexdigest()
    path = mc.write_model_card({"model_name": "x"}, tmp_path / "run" / "MODEL_CARD.md")
    assert path.read_text() == mc.render_model_card({"model_name": "x"})
    versions = mc.package_versions()
    assert set(versions) == {"kdskin", "tensorflow", "keras", "litert"}
    assert versions["kdskin"]
