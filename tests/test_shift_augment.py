"""Acquisition-shift augmentation (augment.shift): seeded, shapes and range kept, and each
transform does what it says when it is the only one on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kdskin.config import ShiftAugmentConfig, load_config
from kdskin.errors import ConfigError

S = 32
OFF = ShiftAugmentConfig(enabled=True, probability=1.0, colour_gain=0.0, whiten=0.0, border=0.0,
                         zoom_out=0.0, aspect=0.0, blur=0.0, jpeg_quality=100)
#: AugmentConfig arguments that turn off every Keras augmentation layer (the shift's alone acts)
KERAS_OFF = dict(flip=False, rotation=0.0, zoom=0.0, brightness=0.0, contrast=0.0, hue=0.0,
                 saturation=0.0)


def _batch(n: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(70, 170, (n, S, S, 3))
    x[:, 12:20, 12:20] = 25.0  # a dark lesion in the centre
    return x.astype(np.float32)


def _run(cfg: ShiftAugmentConfig, x: np.ndarray, seed: tuple[int, int] = (1, 2)) -> np.ndarray:
    from kdskin.data.shift_augment import shift_augment

    return np.asarray(shift_augment(x, np.array(seed), cfg))


def test_seeded_shape_dtype_range():
    cfg = ShiftAugmentConfig(enabled=True)
    x = _batch()
    a, b, c = _run(cfg, x), _run(cfg, x), _run(cfg, x, seed=(1, 3))
    assert a.shape == x.shape and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 255.0
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0


def test_probability_zero_is_the_identity():
    x = _batch()
    np.testing.assert_allclose(_run(ShiftAugmentConfig(enabled=True, probability=0.0), x), x,
                               atol=1e-4)


def test_colour_gains_shift_channel_means_within_the_range():
    x = _batch()
    out = _run(dataclasses.replace(OFF, colour_gain=0.2), x)
    ratio = out.mean(axis=(1, 2)) / x.mean(axis=(1, 2))  # (n, 3): the gains themselves
    assert (ratio >= 0.8 - 1e-4).all() and (ratio <= 1.2 + 1e-4).all()
    assert np.abs(ratio - 1.0).max() > 0.05
    assert np.ptp(ratio, axis=1).max() > 0.02  # per channel, not one brightness factor


def test_whiten_blends_towards_white_within_the_range():
    """Over-exposure: every pixel moves towards 255 by one weight per image, in [0, whiten];
    the contrast shrinks by the same factor (what the colour-constancy layer cannot undo)."""
    x = _batch()
    out = _run(dataclasses.replace(OFF, whiten=0.3), x)
    weight = (out - x) / (255.0 - x)  # (n, S, S, 3): the blend weight of each pixel
    per_image = weight.reshape(len(x), -1)
    np.testing.assert_allclose(per_image, per_image[:, :1].repeat(per_image.shape[1], 1),
                               atol=1e-4)
    assert (per_image >= -1e-5).all() and (per_image <= 0.3 + 1e-5).all()
    assert np.ptp(per_image[:, 0]) > 0.05  # drawn per image
    np.testing.assert_allclose(np.ptp(out, axis=(1, 2, 3)),
                               np.ptp(x, axis=(1, 2, 3)) * (1 - per_image[:, 0]), rtol=1e-4)


def test_borders_are_black_and_the_centre_is_kept():
    x = _batch(16)
    out = _run(dataclasses.replace(OFF, border=0.15), x)
    centre = slice(12, 20)
    np.testing.assert_allclose(out[:, centre, centre], x[:, centre, centre])
    corner_black = (out[:, 0, 0] == 0).all(axis=-1)
    assert corner_black.all()  # circles of diameter <= 1.3 S and frames both reach the corner
    edge_mid_black = (out[:, 0, S // 2] == 0).all(axis=-1)
    assert 0 < edge_mid_black.sum() < len(x)  # frames (and the smallest circles) only


def test_zoom_out_makes_the_lesion_smaller():
    x = _batch()
    out = _run(dataclasses.replace(OFF, zoom_out=0.4), x)
    dark_in = (x.mean(axis=-1) < 40).mean(axis=(1, 2))
    dark_out = (out.mean(axis=-1) < 40).mean(axis=(1, 2))
    assert (dark_out <= 1.1 * dark_in).all() and (dark_out < 0.8 * dark_in).any()
    assert abs(out[:, S // 2, S // 2].mean() - 25.0) < 3.0  # zoomed about the centre


def test_aspect_changes_width_not_height():
    x = _batch()
    out = _run(dataclasses.replace(OFF, aspect=0.3), x)
    rows = lambda im: (im[:, :, S // 2].mean(-1) < 40).sum(1)  # noqa: E731  centre column
    cols = lambda im: (im[:, S // 2, :].mean(-1) < 40).sum(1)  # noqa: E731  centre row
    np.testing.assert_array_equal(rows(out), rows(x))
    assert (cols(out) != cols(x)).any()


def test_blur_and_jpeg():
    x = _batch()
    blurred = _run(dataclasses.replace(OFF, blur=1.5), x)
    assert np.diff(blurred, axis=2).std() < np.diff(x, axis=2).std()
    jpeg = _run(dataclasses.replace(OFF, jpeg_quality=20), x)
    assert 0.5 < np.abs(jpeg - x).mean() < 40.0


def test_config_checks_and_default_off():
    assert load_config().augment.shift.enabled is False
    cfg = load_config(overrides=["augment.shift.enabled=true", "augment.shift.border=0.2"])
    assert cfg.augment.shift.border == 0.2
    for bad, match in (("augment.shift.border=0.7", r"augment.shift.border must be in \[0, "
                                                    r"0.5\]"),
                       ("augment.shift.probability=2", "augment.shift.probability"),
                       ("augment.shift.whiten=0.8", r"augment.shift.whiten must be in \[0, "),
                       ("augment.shift.blur=5", "augment.shift.blur"),
                       ("augment.shift.jpeg_quality=0", "augment.shift.jpeg_quality")):
        with pytest.raises(ConfigError, match=match):
            load_config(overrides=[bad])


def test_training_dataset_applies_it_seeded():
    from kdskin.config import AugmentConfig
    from kdskin.data.pipeline import make_tf_dataset

    x = _batch(16).astype(np.uint8)
    y = np.arange(16) % 7
    aug = AugmentConfig(flip=False, rotation=0.0, zoom=0.0, brightness=0.0, contrast=0.0,
                        hue=0.0, saturation=0.0,
                        shift=dataclasses.replace(OFF, colour_gain=0.3, border=0.15))

    def first(seed: int) -> np.ndarray:
        ds = make_tf_dataset(x, y, 8, training=True, augment=aug, seed=seed)
        return np.concatenate([np.asarray(b[0]) for b in ds])

    a, b, c = first(3), first(3), first(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a[:, 0, 0] == 0).all()  # every image got a black border


def test_unshifted_view_keeps_the_image_before_the_shift_for_the_teacher():
    """distill.teacher_view: unshifted -- the batch carries the shifted image for the student and
    the same image before the shift for the teacher; without the shift it is a plain batch."""
    from kdskin.config import AugmentConfig
    from kdskin.constants import INPUT_NAME, TEACHER_INPUT_NAME
    from kdskin.data.pipeline import make_tf_dataset

    x = _batch(16).astype(np.uint8)
    y = np.arange(16) % 7
    aug = AugmentConfig(**KERAS_OFF, shift=dataclasses.replace(OFF, colour_gain=0.3,
                                                               border=0.15))
    plain = [np.asarray(b[0]) for b in make_tf_dataset(x, y, 8, training=True, augment=aug,
                                                       seed=3)]
    both = list(make_tf_dataset(x, y, 8, training=True, augment=aug, seed=3,
                                unshifted_view=True))
    assert all(set(b[0]) == {INPUT_NAME, TEACHER_INPUT_NAME} for b in both)
    for shifted, (views, _) in zip(plain, both, strict=True):
        np.testing.assert_array_equal(np.asarray(views[INPUT_NAME]), shifted)
    clean = np.concatenate([np.asarray(v[TEACHER_INPUT_NAME]) for v, _ in both])
    # the teacher's view is the dataset's own images (shuffled), untouched by the shift
    assert sorted(map(bytes, clean.astype(np.uint8))) == sorted(map(bytes, x))
    assert not np.array_equal(clean, np.concatenate(plain))
    # no shift augmentation: nothing to keep apart, a plain batch of images
    no_shift = AugmentConfig(**KERAS_OFF)
    first = next(iter(make_tf_dataset(x, y, 8, training=True, augment=no_shift, seed=3,
                                      unshifted_view=True)))
    assert np.asarray(first[0]).shape == (8, *x.shape[1:])


def test_the_teacher_of_an_unshifted_view_trains_without_the_shift():
    """distill.teacher_view: unshifted -- the run's teacher trains on the training split without
    augment.shift (it only ever judges unshifted images); the students keep it."""
    from kdskin.config import AugmentConfig, Config
    from kdskin.data.pipeline import SplitArrays
    from kdskin.distill.stages import teacher_trains_shifted
    from kdskin.pipeline.data import RunData, datasets

    assert teacher_trains_shifted("augmented") and not teacher_trains_shifted("unshifted")
    x = _batch(16).astype(np.uint8)
    y = np.arange(16) % 7
    split = SplitArrays(x, y, [f"i{i}" for i in range(16)])
    data = RunData(train=split, val=split, test=split, class_weight=None, oversample=False,
                   protocol="lesion_grouped", source="test")
    cfg = Config()
    cfg.augment = AugmentConfig(**KERAS_OFF, shift=dataclasses.replace(OFF, border=0.15))
    cfg.train.seed = 3

    def images(**kw):
        train = datasets(cfg, data, 8, **kw)[0]
        return np.concatenate([np.asarray(b[0]) for b in train])

    shifted, plain = images(), images(shift=False)
    assert (shifted[:, 0, 0] == 0).all()  # every image got a black border
    # without the shift: the split's own images (shuffled), untouched
    assert sorted(map(bytes, plain.astype(np.uint8))) == sorted(map(bytes, x))
    assert cfg.augment.shift.enabled  # the run's config is not changed
