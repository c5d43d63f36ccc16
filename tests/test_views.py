"""Augmented views as parameters (kdskin.data.views): drawn once, replayed at any size."""

from __future__ import annotations

import numpy as np
import pytest

from kdskin.config import AugmentConfig
from kdskin.data.views import (
    IDENTITY_VIEW,
    NUM_VIEW_PARAMS,
    apply_views,
    draw_views,
    flip_views,
    view_settings,
)


def _smooth_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Low-frequency colour images (a resize of them is nearly exact), float32 0..255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-2, 2, 3)
        base = 0.5 + 0.4 * np.sin(a * xx + b * yy + c)
        blob = np.exp(-((xx - 0.3 * a / 2) ** 2 + (yy - 0.2 * b / 2) ** 2) / 0.2)
        rgb = np.stack([base, 0.6 * base + 0.3 * blob, 0.3 + 0.5 * blob], axis=-1)
        out.append(np.clip(rgb * 255, 0, 255))
    return np.stack(out).astype(np.float32)


def test_draw_views_seeded_within_ranges():
    cfg = AugmentConfig()
    views = draw_views(50, 4, cfg, seed=3)
    assert views.shape == (50, 4, NUM_VIEW_PARAMS) and views.dtype == np.float32
    np.testing.assert_array_equal(views, draw_views(50, 4, cfg, seed=3))
    assert not np.array_equal(views, draw_views(50, 4, cfg, seed=4))
    assert set(np.unique(views[..., :2])) == {0.0, 1.0}
    assert np.abs(views[..., 2]).max() <= 2 * np.pi * cfg.rotation
    assert views[..., 3].min() >= 1 - cfg.zoom and views[..., 3].max() <= 1 + cfg.zoom
    assert np.abs(views[..., 4]).max() <= 255 * cfg.brightness
    off = draw_views(5, 2, AugmentConfig(enabled=False), seed=3)
    np.testing.assert_array_equal(off, np.broadcast_to(IDENTITY_VIEW, off.shape))
    with pytest.raises(ValueError, match="k >= 1"):
        draw_views(5, 0, cfg, seed=0)


def test_identity_view_changes_nothing():
    images = _smooth_images(3, 24, 32)
    out = np.asarray(apply_views(images, np.tile(IDENTITY_VIEW, (3, 1))))
    np.testing.assert_allclose(out, images, atol=0.6)


def test_flip_view_mirrors_the_picture():
    images = _smooth_images(2, 20, 20)
    views = draw_views(2, 1, AugmentConfig(), seed=1)[:, 0]
    direct = np.asarray(apply_views(images, views))
    mirrored = np.asarray(apply_views(images, flip_views(views)))
    np.testing.assert_allclose(mirrored, direct[:, :, ::-1], atol=1.0)


def test_a_view_is_the_same_picture_at_two_resolutions():
    """The teacher's view at 96 x 128 resized to the student's 32 x 32 is the student's view of
    the image resized to 32 x 32 (normalised coordinates: aspect and size do not matter)."""
    import tensorflow as tf

    big = _smooth_images(6, 96, 128, seed=2)
    small = tf.image.resize(big, (32, 32), antialias=True).numpy()
    views = draw_views(6, 1, AugmentConfig(), seed=5)[:, 0]
    at_teacher = tf.image.resize(apply_views(big, views), (32, 32), antialias=True).numpy()
    at_student = np.asarray(apply_views(small, views))
    # interior (the reflected fill differs by a pixel at the edges)
    diff = np.abs(at_teacher - at_student)[:, 3:-3, 3:-3]
    assert diff.mean() < 2.0
    other = np.asarray(apply_views(small, views[::-1]))
    assert np.abs(other - at_student)[:, 3:-3, 3:-3].mean() > 5 * diff.mean()


def test_view_settings_names_what_views_depend_on():
    settings = view_settings(AugmentConfig(rotation=0.2))
    assert settings["rotation"] == 0.2 and settings["flip"] is True
    assert "shift" not in settings
