"""The acquisition-shift suite: each transform does what it says, deterministically, and the
suite's rows (metrics, drops from clean, out-of-scope share) are computed, not typed."""

from __future__ import annotations

import numpy as np
import pytest

from kdskin.constants import NUM_CLASSES
from kdskin.data import shifts
from kdskin.data.shifts import SHIFTS, apply_shift, check_shifts
from kdskin.errors import ConfigError
from kdskin.metrics import classification_metrics

S = 40


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(60, 180, (n, S, S, 3)).astype(np.uint8)
    x[:, S // 2 - 6:S // 2 + 6, S // 2 - 6:S // 2 + 6] = 30  # a dark "lesion" in the centre
    return x


@pytest.mark.parametrize("name", list(SHIFTS))
def test_every_shift_keeps_shape_dtype_and_is_deterministic(name):
    x = _images()
    a, b = apply_shift(name, x), apply_shift(name, x)
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    if name == "clean":
        np.testing.assert_array_equal(a, x)
    else:
        assert np.abs(a.astype(int) - x).mean() > 0.5, f"{name} changed nothing"


def test_colour_casts_scale_channel_means_by_their_gains():
    x = _images()
    for name, gains in (("warm_cast", shifts.WARM_GAINS), ("cool_cast", shifts.COOL_GAINS)):
        out = apply_shift(name, x).astype(float)
        ratio = out.mean(axis=(0, 1, 2)) / x.astype(float).mean(axis=(0, 1, 2))
        np.testing.assert_allclose(ratio, gains, atol=0.01)  # no clipping below 180 * 1.15


def test_whiter_moves_towards_white():
    x = _images()
    out = apply_shift("whiter", x).astype(float)
    np.testing.assert_allclose(out, 255 - 0.7 * (255 - x.astype(float)), atol=0.51)


def test_circle_vignette_blackens_corners_only():
    x = _images()
    out = apply_shift("circle_vignette", x)
    assert (out[:, 0, 0] == 0).all() and (out[:, -1, -1] == 0).all()
    np.testing.assert_array_equal(out[:, S // 2, 2:-2], x[:, S // 2, 2:-2])  # middle row inside
    inside = shifts.circle_mask(S, S, shifts.CIRCLE_DIAMETER)
    assert (out[:, ~inside] == 0).all() and 0.1 < (~inside).mean() < 0.4


def test_black_frame_border_is_black_and_interior_unchanged():
    x = _images()
    out = apply_shift("black_frame", x)
    w = round(shifts.FRAME_WIDTH * S)
    assert (out[:, :w] == 0).all() and (out[:, -w:] == 0).all()
    assert (out[:, :, :w] == 0).all() and (out[:, :, -w:] == 0).all()
    np.testing.assert_array_equal(out[:, w:-w, w:-w], x[:, w:-w, w:-w])


def test_zoom_out_shrinks_the_lesion_and_reflects_the_frame():
    x = _images()
    out = apply_shift("zoom_out_0.6", x)
    dark = lambda im: (im.mean(axis=-1) < 45).mean()  # noqa: E731  share of lesion pixels
    assert dark(out[0]) == pytest.approx(dark(x[0]) * 0.36, rel=0.35)
    small = round(0.6 * S)
    top = (S - small) // 2
    np.testing.assert_array_equal(out[:, top - 1], out[:, top + 1])  # reflected about the edge


def test_aspect_narrows_the_content_and_keeps_the_height():
    x = _images()
    out = apply_shift("aspect_3_2", x)
    dark_cols = lambda im: (im[S // 2].mean(axis=-1) < 45).sum()  # noqa: E731  centre row
    dark_rows = lambda im: (im[:, S // 2].mean(axis=-1) < 45).sum()  # noqa: E731  centre col
    assert dark_cols(out[0]) < dark_cols(x[0])
    assert dark_rows(out[0]) == dark_rows(x[0])


def test_blur_smooths_and_jpeg_stays_close():
    x = _images()
    blurred = apply_shift("blur", x).astype(float)
    assert np.diff(blurred, axis=2).std() < 0.7 * np.diff(x.astype(float), axis=2).std()
    jpeg = apply_shift("jpeg_30", x).astype(float)
    assert 1.0 < np.abs(jpeg - x).mean() < 40.0


def test_check_shifts_order_and_one_line_error():
    assert check_shifts(None) == list(SHIFTS) and check_shifts([]) == list(SHIFTS)
    assert check_shifts(["blur", "clean", "blur"]) == ["clean", "blur"]
    with pytest.raises(ConfigError) as err:
        check_shifts(["warm_cast", "sepia"])
    assert "'sepia'" in str(err.value) and "warm_cast" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="must be"):
        apply_shift("blur", np.zeros((S, S, 3), np.uint8))


# --------------------------------------------------------------------------- the suite


class CentreColour:
    """A stand-in classifier: the class is the brightness of the image's central 4x4 pixels
    (seven fixed levels), so a frame or vignette leaves it alone and a colour cast moves it."""

    input_size = S

    def predict(self, images: np.ndarray) -> np.ndarray:
        c = images[:, S // 2 - 2:S // 2 + 2, S // 2 - 2:S // 2 + 2].astype(float).mean((1, 2, 3))
        logits = -((c[:, None] - np.linspace(20, 240, NUM_CLASSES)[None]) / 15.0) ** 2
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def _labelled(n: int = 70, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    level = np.linspace(20, 240, NUM_CLASSES)[labels]
    x = level[:, None, None, None] + rng.normal(0, 6, (n, S, S, 3))
    return np.clip(x, 0, 255).astype(np.uint8), labels


def test_suite_rows_clean_equals_plain_evaluation_and_drops_are_computed():
    from kdskin.shift_suite import SUITE_METRICS, shift_suite, worst

    images, labels = _labelled()
    clf = CentreColour()
    suite = shift_suite(clf, images, labels)
    assert list(suite["shifts"]) == list(SHIFTS) and suite["n_images"] == len(labels)
    plain = classification_metrics(labels, clf.predict(images))
    for key in SUITE_METRICS:
        assert suite["shifts"]["clean"][key] == pytest.approx(plain[key])
    for name, row in suite["shifts"].items():
        shifted = classification_metrics(labels, clf.predict(apply_shift(name, images)))
        for key in SUITE_METRICS:
            assert row[key] == pytest.approx(shifted[key])
            assert row["drop"][key] == pytest.approx(plain[key] - shifted[key])
        assert row["flagged"] is None  # no rules given
        assert row["description"] == SHIFTS[name][0]
    # the frame leaves the centre alone; lifting towards white moves its brightness
    assert suite["shifts"]["black_frame"]["drop"]["balanced_accuracy"] == 0.0
    assert suite["shifts"]["whiter"]["drop"]["balanced_accuracy"] > 0.05
    name, drop = worst(suite)
    assert drop == max(r["drop"]["balanced_accuracy"] for r in suite["shifts"].values())
    assert name != "clean"


def test_suite_flags_with_the_out_of_scope_rule():
    from kdskin.decision import DecisionRules
    from kdskin.shift_suite import shift_suite
    from kdskin.trust.image_stats import fit_image_gaussian, image_features, image_score

    images, labels = _labelled()
    params = fit_image_gaussian(image_features(images))
    threshold = float(np.quantile(image_score(image_features(images), params), 0.05))
    rules = DecisionRules(ood_threshold=threshold, ood_params=params)
    suite = shift_suite(CentreColour(), images, labels, ["circle_vignette"], rules=rules)
    assert list(suite["shifts"]) == ["clean", "circle_vignette"]
    for name, row in suite["shifts"].items():
        scores = image_score(image_features(apply_shift(name, images)), params)
        assert row["flagged"] == pytest.approx(float(np.mean(scores < threshold)))
    assert suite["shifts"]["clean"]["flagged"] <= 0.1
    assert suite["shifts"]["circle_vignette"]["flagged"] > suite["shifts"]["clean"]["flagged"]


def test_suite_scores_the_referral_rule_on_calibrated_probabilities():
    from kdskin.decision import DecisionRules
    from kdskin.shift_suite import REFERRAL_METRICS, format_suite, shift_suite
    from kdskin.trust.referral import referral_metrics

    images, labels = _labelled()
    clf = CentreColour()
    rules = DecisionRules(temperature=2.0, referral_threshold=0.3)
    suite = shift_suite(clf, images, labels, ["whiter", "blur"], rules=rules)
    for name, row in suite["shifts"].items():
        calibrated = rules.calibrate(clf.predict(apply_shift(name, images)))
        expected = referral_metrics(labels, calibrated, 0.3)
        assert set(row["referral"]) == set(REFERRAL_METRICS)
        for key in REFERRAL_METRICS:
            assert row["referral"][key] == pytest.approx(expected[key])
    assert 0 < suite["shifts"]["clean"]["referral"]["referral_rate"] < 1
    head = format_suite(suite).splitlines()[0].split()
    assert head[-3:] == ["ref.sens", "ref.mel", "ref.rate"]
    # without a threshold there is no referral row, and no referral columns
    plain = shift_suite(clf, images, labels, ["blur"], rules=DecisionRules())
    assert all(row["referral"] is None for row in plain["shifts"].values())
    assert "ref.mel" not in format_suite(plain)


def test_format_suite_lists_every_row():
    from kdskin.shift_suite import format_suite, shift_suite

    images, labels = _labelled(35)
    text = format_suite(shift_suite(CentreColour(), images, labels, ["blur"]), "title")
    lines = text.splitlines()
    assert lines[0] == "title" and lines[2].startswith("clean") and lines[3].startswith("blur")
