"""kdskin.data.out_of_scope: generated inputs the model was not made for."""

from __future__ import annotations

import numpy as np
import pytest

from kdskin.data.out_of_scope import (
    KINDS,
    LESION_KINDS,
    SYNTHETIC_KINDS,
    generate_out_of_scope,
)
from kdskin.errors import DataError


@pytest.fixture(scope="module")
def lesions() -> np.ndarray:
    """Three lesion-like images (dark blob on skin tone), 80 x 90, uint8."""
    rng = np.random.default_rng(0)
    images = np.empty((3, 80, 90, 3), np.uint8)
    images[:] = (200, 160, 140)
    images[:, 25:55, 30:60] = (90, 50, 30)
    return np.clip(images + rng.integers(-20, 20, images.shape), 0, 255).astype(np.uint8)


def test_shapes_dtype_and_all_kinds(lesions):
    images, kinds = generate_out_of_scope(2 * len(KINDS), size=48, seed=1, lesion_images=lesions)
    assert images.shape == (2 * len(KINDS), 48, 48, 3) and images.dtype == np.uint8
    assert kinds == list(KINDS) * 2
    plain, plain_kinds = generate_out_of_scope(len(SYNTHETIC_KINDS), size=32, seed=1)
    assert plain.shape == (len(SYNTHETIC_KINDS), 32, 32, 3)
    assert set(plain_kinds) == set(SYNTHETIC_KINDS)


def test_same_seed_same_images_other_seed_other_images(lesions):
    a, ka = generate_out_of_scope(20, 32, seed=5, lesion_images=lesions)
    b, kb = generate_out_of_scope(20, 32, seed=5, lesion_images=lesions)
    c, _ = generate_out_of_scope(20, 32, seed=6, lesion_images=lesions)
    assert np.array_equal(a, b) and ka == kb
    assert not np.array_equal(a, c)
    first, _ = generate_out_of_scope(7, 32, seed=5, lesion_images=lesions)
    assert np.array_equal(first, a[:7])          # image i does not depend on n


def test_each_kind_looks_like_its_name(lesions):
    images, kinds = generate_out_of_scope(len(KINDS), size=64, seed=2, lesion_images=lesions)
    by_kind = dict(zip(kinds, images.astype(float), strict=True))
    assert by_kind["uniform"].std(axis=(0, 1)).max() == 0
    assert by_kind["noise"].std() > 15
    assert len(np.unique(by_kind["checkerboard"].reshape(-1, 3), axis=0)) <= 2
    grass = by_kind["landscape"][-4:].mean(axis=(0, 1))
    assert grass[1] > grass[0] and grass[1] > grass[2]       # green at the bottom
    source = np.asarray(lesions, float)
    assert by_kind["overexposed_lesion"].mean() > source.mean() + 40
    # blurring removes the fine detail: neighbouring pixels differ less than in any source
    blur_detail = np.abs(np.diff(by_kind["blurred_lesion"], axis=1)).mean()
    assert blur_detail < np.abs(np.diff(source, axis=2)).mean() / 3
    assert len({im.tobytes() for im in images}) == len(KINDS)


def test_text_is_drawn():
    images, _ = generate_out_of_scope(1, 64, seed=0, kinds=["text"])
    colours = np.unique(images[0].reshape(-1, 3), axis=0)
    assert len(colours) >= 2                     # background and ink (anti-aliased: more)


def test_errors():
    with pytest.raises(DataError, match="need lesion_images"):
        generate_out_of_scope(4, 32, kinds=list(LESION_KINDS))
    with pytest.raises(DataError, match="unknown out-of-scope kind 'sky'"):
        generate_out_of_scope(4, 32, kinds=["sky"])
    with pytest.raises(DataError, match="size"):
        generate_out_of_scope(4, 4)
    with pytest.raises(DataError, match="lesion image 0 must be uint8"):
        generate_out_of_scope(4, 32, lesion_images=[np.zeros((10, 10), np.uint8)])
    assert generate_out_of_scope(0, 32)[0].shape == (0, 32, 32, 3)
