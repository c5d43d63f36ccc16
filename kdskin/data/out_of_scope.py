"""Generated inputs the model was not made for, to measure the out-of-scope warning.

Everything is drawn by the project itself (no download): uniform colours, noise, colour
gradients, rendered text (Pillow's default font), checkerboards, synthetic non-skin scenes
(a landscape of sky, grass and sun; geometric shapes on a plain background) and, when lesion
images are given, heavily blurred and over-exposed versions of them.

Image ``i`` is drawn from ``numpy.random.default_rng((seed, i))`` and its kind is
``kinds[i % len(kinds)]``, so the same seed gives identical images, the first ``k`` images do
not depend on ``n``, and every kind is present once ``n >= len(kinds)``.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from kdskin.errors import DataError

#: Kinds made without lesion images.
SYNTHETIC_KINDS: tuple[str, ...] = (
    "uniform", "noise", "gradient", "text", "checkerboard", "landscape", "shapes")
#: Kinds made from given lesion images.
LESION_KINDS: tuple[str, ...] = ("blurred_lesion", "overexposed_lesion")
KINDS: tuple[str, ...] = SYNTHETIC_KINDS + LESION_KINDS


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _uniform(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.broadcast_to(np.array(_colour(rng), np.uint8), (size, size, 3)).copy()


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    if rng.random() < 0.5:
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mean = rng.uniform(40, 215, 3)
    pixels = rng.normal(mean, rng.uniform(20, 70), (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
    else:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    return (a + (b - a) * t[..., None]).round().astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(8, size // 6))
    except (TypeError, ValueError, OSError, ImportError):  # Pillow without FreeType
        return ImageFont.load_default()


def _text(rng: np.random.Generator, size: int) -> np.ndarray:
    background = _colour(rng)
    ink = (0, 0, 0) if sum(background) > 3 * 128 else (255, 255, 255)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    font = _font(size)
    letters = string.ascii_letters + string.digits
    line_height = max(8, size // 5)
    for y in range(int(rng.integers(0, line_height // 2 + 1)), size, line_height):
        word = "".join(rng.choice(list(letters), int(rng.integers(3, 9))))
        draw.text((int(rng.integers(0, max(1, size // 4))), y), word, fill=ink, font=font)
    return np.asarray(image, dtype=np.uint8)


def _checkerboard(rng: np.random.Generator, size: int) -> np.ndarray:
    cell = int(rng.integers(2, max(3, size // 4) + 1))
    a, b = np.array(_colour(rng), np.uint8), np.array(_colour(rng), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    board = ((yy // cell + xx // cell) % 2).astype(bool)
    return np.where(board[..., None], a, b).astype(np.uint8)


def _landscape(rng: np.random.Generator, size: int) -> np.ndarray:
    horizon = int(size * rng.uniform(0.35, 0.7))
    yy = np.arange(size)[:, None, None] / max(size - 1, 1)
    sky = np.array([90, 150, 235], float) + (np.array([200, 225, 255]) - [90, 150, 235]) * yy
    pixels = np.broadcast_to(sky, (size, size, 3)).copy()
    grass = np.array([40, 140, 50], float) + rng.normal(0, 18, (size - horizon, size, 3))
    pixels[horizon:] = grass
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = max(2, int(size * rng.uniform(0.06, 0.12)))
    cx, cy = int(rng.integers(r, size - r)), int(rng.integers(r, max(r + 1, horizon - r)))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 230, 90))
    for _ in range(int(rng.integers(0, 3))):  # trees
        x = int(rng.integers(0, size))
        h = int(size * rng.uniform(0.1, 0.25))
        draw.rectangle((x, horizon - h // 2, x + max(1, size // 32), horizon), fill=(90, 60, 30))
        draw.ellipse((x - h // 3, horizon - h, x + h // 3, horizon - h // 3), fill=(20, 100, 30))
    return np.asarray(image, dtype=np.uint8)


def _shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    image = Image.new("RGB", (size, size), _colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(max(2, size // 8), max(3, size // 2), 2))
        box = (x0, y0, x0 + w, y0 + h)
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle(box, fill=_colour(rng))
        elif shape == 1:
            draw.ellipse(box, fill=_colour(rng))
        else:
            draw.polygon([(x0, y0 + h), (x0 + w // 2, y0), (x0 + w, y0 + h)], fill=_colour(rng))
    return np.asarray(image, dtype=np.uint8)


def _lesion(rng: np.random.Generator, size: int, lesions: Sequence[np.ndarray]) -> Image.Image:
    pixels = lesions[int(rng.integers(0, len(lesions)))]
    return Image.fromarray(pixels).convert("RGB").resize((size, size), Image.BILINEAR)


def _blurred(rng: np.random.Generator, size: int, lesions: Sequence[np.ndarray]) -> np.ndarray:
    radius = size * rng.uniform(0.12, 0.25)
    return np.asarray(_lesion(rng, size, lesions).filter(ImageFilter.GaussianBlur(radius)),
                      dtype=np.uint8)


def _overexposed(rng: np.random.Generator, size: int,
                 lesions: Sequence[np.ndarray]) -> np.ndarray:
    pixels = np.asarray(_lesion(rng, size, lesions), dtype=np.float64)
    return np.clip(pixels * rng.uniform(2.5, 4.0) + rng.uniform(60, 120), 0, 255).astype(np.uint8)


_MAKERS: dict[str, Callable[..., np.ndarray]] = {
    "uniform": _uniform, "noise": _noise, "gradient": _gradient, "text": _text,
    "checkerboard": _checkerboard, "landscape": _landscape, "shapes": _shapes,
    "blurred_lesion": _blurred, "overexposed_lesion": _overexposed,
}


def _check_lesions(lesion_images: Any) -> list[np.ndarray]:
    lesions = [np.asarray(im) for im in lesion_images]
    for i, im in enumerate(lesions):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise DataError(f"lesion image {i} must be uint8 (H, W, 3), got {im.dtype} "
                            f"{im.shape}")
    return lesions


def generate_out_of_scope(n: int, size: int = 64, seed: int = 0, lesion_images: Any = None,
                          kinds: Sequence[str] | None = None
                          ) -> tuple[np.ndarray, list[str]]:
    """``n`` out-of-scope RGB images ``(n, size, size, 3)`` uint8 and their kinds (``n`` names).

    ``lesion_images``: optional uint8 ``(M, H, W, 3)`` array or list of ``(H, W, 3)`` arrays
    (any size; resized) for the blurred and over-exposed kinds. ``kinds``: the kinds to cycle
    through (default: :data:`SYNTHETIC_KINDS`, plus :data:`LESION_KINDS` when lesion images are
    given). Same ``seed`` -> identical images.
    """
    if int(n) != n or n < 0:
        raise DataError(f"n must be a non-negative integer, got {n!r}")
    if int(size) != size or size < 8:
        raise DataError(f"size must be an integer >= 8, got {size!r}")
    lesions = _check_lesions(lesion_images) if lesion_images is not None else []
    if kinds is None:
        kinds = SYNTHETIC_KINDS + (LESION_KINDS if lesions else ())
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in _MAKERS]
    if unknown or not kinds:
        raise DataError(f"unknown out-of-scope kind {unknown[0] if unknown else None!r}; "
                        f"choose from {', '.join(KINDS)}")
    if any(k in LESION_KINDS for k in kinds) and not lesions:
        raise DataError(f"kinds {', '.join(LESION_KINDS)} need lesion_images")
    n, size = int(n), int(size)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    names = [kinds[i % len(kinds)] for i in range(n)]
    for i, kind in enumerate(names):
        rng = np.random.default_rng((seed, i))
        args = (rng, size, lesions) if kind in LESION_KINDS else (rng, size)
        images[i] = _MAKERS[kind](*args)
    return images, names
