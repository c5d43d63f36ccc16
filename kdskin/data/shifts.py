"""Acquisition shifts: what another clinic's dermatoscope changes in an image, as pure,
deterministic transforms of ``(N, S, S, 3)`` uint8 0..255 images at the model's input size.

The suite (:data:`SHIFTS`, in this order) is what ``kdskin evaluate --shifts`` and a run's
external evaluation apply to a labelled set (:mod:`kdskin.shift_suite`); each shift is one
documented, fixed transform, so two runs see the same pixels. The same primitives (with random
strengths) are the training augmentation ``augment.shift`` (:mod:`kdskin.data.shift_augment`).

| name | what it does |
|---|---|
| ``clean`` | nothing (the reference row) |
| ``warm_cast`` | per-channel gains R 1.12, G 1.0, B 0.80: a yellow (warm) white balance |
| ``cool_cast`` | gains R 0.85, G 0.97, B 1.15: a blue (cool) white balance |
| ``whiter`` | 30% of the way to white: over-exposed, paler skin (``255 - 0.7 (255 - x)``) |
| ``circle_vignette`` | black outside a centred circle of diameter 0.95 S (a round field) |
| ``black_frame`` | a black rectangular border 10% of the side wide on every edge |
| ``zoom_out_0.6`` | the lesion smaller: shrunk to 0.6 S in the centre, the rest reflected |
| ``aspect_3_2`` | a 3:2 instead of a 4:3 source: content 1.125x narrower, sides reflected |
| ``blur`` | Gaussian blur, sigma 1 pixel at the model's input size (out of focus) |
| ``jpeg_30`` | JPEG compression at quality 30 |

All work at the model's input size (after the resize every kdskin model expects), which is
what the model sees; sizes that depend on S are rounded to whole pixels.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from kdskin.errors import ConfigError

#: Gains (R, G, B) of the warm and cool casts.
WARM_GAINS: tuple[float, float, float] = (1.12, 1.0, 0.80)
COOL_GAINS: tuple[float, float, float] = (0.85, 0.97, 1.15)
WHITER = 0.3  # fraction of the way to white
CIRCLE_DIAMETER = 0.95  # of the side
FRAME_WIDTH = 0.10  # of the side, each edge
ZOOM_OUT = 0.6
ASPECT = (3 / 2) / (4 / 3)  # 1.125: how much wider a 3:2 field is than a 4:3 one
BLUR_SIGMA = 1.0
JPEG_QUALITY = 30


def _check(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ConfigError(f"shift images must be (N, H, W, 3), got shape {arr.shape}")
    return arr


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def colour_gains(images: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """Each channel multiplied by its gain ``(3,)`` (a white-balance change), clipped."""
    arr = _check(images).astype(np.float32)
    return _to_uint8(arr * np.asarray(gains, np.float32).reshape(1, 1, 1, 3))


def towards_white(images: np.ndarray, amount: float) -> np.ndarray:
    """``255 - (1 - amount) * (255 - x)``: ``amount`` 0 unchanged, 1 white."""
    arr = _check(images).astype(np.float32)
    return _to_uint8(255.0 - (1.0 - amount) * (255.0 - arr))


def circle_mask(height: int, width: int, diameter: float) -> np.ndarray:
    """``(H, W)`` bool: True inside the centred circle of ``diameter`` x min(H, W) pixels."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    radius = diameter * min(height, width) / 2.0
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def circle_vignette(images: np.ndarray, diameter: float = CIRCLE_DIAMETER) -> np.ndarray:
    """Black (0) outside a centred circle of ``diameter`` x the side."""
    arr = _check(images).copy()
    arr[:, ~circle_mask(arr.shape[1], arr.shape[2], diameter)] = 0
    return arr


def black_frame(images: np.ndarray, width: float = FRAME_WIDTH) -> np.ndarray:
    """A black border ``round(width * side)`` pixels wide on every edge."""
    arr = _check(images).copy()
    h, w = arr.shape[1:3]
    bh, bw = int(round(width * h)), int(round(width * w))
    if bh:
        arr[:, :bh], arr[:, h - bh:] = 0, 0
    if bw:
        arr[:, :, :bw], arr[:, :, w - bw:] = 0, 0
    return arr


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 image resized (Pillow's anti-aliased bilinear)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _reflect_into(small: np.ndarray, height: int, width: int) -> np.ndarray:
    """``small`` centred in an ``(height, width)`` frame, the rest filled by reflection."""
    sh, sw = small.shape[:2]
    top, left = (height - sh) // 2, (width - sw) // 2
    pad = ((top, height - sh - top), (left, width - sw - left), (0, 0))
    return np.pad(small, pad, mode="reflect")


def zoom_out(images: np.ndarray, scale: float = ZOOM_OUT) -> np.ndarray:
    """Each image shrunk to ``scale`` x its size, centred, surrounded by its reflection."""
    arr = _check(images)
    h, w = arr.shape[1:3]
    sh, sw = max(2, int(round(scale * h))), max(2, int(round(scale * w)))
    return np.stack([_reflect_into(_resize(im, sh, sw), h, w) for im in arr]) \
        if len(arr) else arr.copy()


def aspect(images: np.ndarray, ratio: float = ASPECT) -> np.ndarray:
    """Content ``ratio`` x narrower (a wider source squeezed into the same square), centred,
    the sides filled by reflection; ``ratio`` < 1 makes it wider, cropping the sides."""
    arr = _check(images)
    h, w = arr.shape[1:3]
    nw = max(2, int(round(w / ratio)))
    out = []
    for im in arr:
        resized = _resize(im, h, nw)
        if nw >= w:
            left = (nw - w) // 2
            out.append(resized[:, left:left + w])
        else:
            out.append(_reflect_into(resized, h, w))
    return np.stack(out) if out else arr.copy()


def blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (Pillow's ``GaussianBlur``)."""
    arr = _check(images)
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma)))
                     for im in arr]) if len(arr) else arr.copy()


def jpeg(images: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Each image encoded as JPEG at ``quality`` (1..95) and decoded again."""
    arr = _check(images)
    out = []
    for im in arr:
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(np.asarray(decoded.convert("RGB")))
    return np.stack(out) if out else arr.copy()


#: The shift suite, in report order: name -> (description, transform).
SHIFTS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "clean": ("no change (the reference row)", lambda x: _check(x).copy()),
    "warm_cast": ("yellow white balance: gains R 1.12, G 1.00, B 0.80",
                  lambda x: colour_gains(x, WARM_GAINS)),
    "cool_cast": ("blue white balance: gains R 0.85, G 0.97, B 1.15",
                  lambda x: colour_gains(x, COOL_GAINS)),
    "whiter": ("over-exposed, paler: 30% of the way to white", lambda x: towards_white(x, WHITER)),
    "circle_vignette": ("black outside a centred circle of diameter 0.95 of the side",
                        circle_vignette),
    "black_frame": ("black rectangular border, 10% of the side on every edge", black_frame),
    "zoom_out_0.6": ("lesion smaller: image shrunk to 0.6 of the side, reflected around it",
                     zoom_out),
    "aspect_3_2": ("3:2 instead of 4:3 source: content 1.125x narrower, sides reflected",
                   aspect),
    "blur": ("Gaussian blur, sigma 1 pixel at the input size", blur),
    "jpeg_30": ("JPEG compression at quality 30", jpeg),
}
CLEAN = "clean"


def check_shifts(names: Sequence[str] | None) -> list[str]:
    """The suite's names to run, ``clean`` first (None or empty: all of :data:`SHIFTS`);
    one-line :class:`ConfigError` for a name that is not in the suite."""
    if not names:
        return list(SHIFTS)
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        raise ConfigError(f"unknown shift {unknown[0]!r}; choose from {', '.join(SHIFTS)}")
    return [CLEAN] + [n for n in dict.fromkeys(names) if n != CLEAN]


def apply_shift(name: str, images: np.ndarray) -> np.ndarray:
    """``images`` (N, S, S, 3) uint8 under the suite's shift ``name``, same shape and dtype."""
    check_shifts([name])
    return SHIFTS[name][1](np.asarray(images, dtype=np.uint8))


__all__ = ["CLEAN", "SHIFTS", "apply_shift", "aspect", "black_frame", "blur", "check_shifts",
           "circle_mask", "circle_vignette", "colour_gains", "jpeg", "towards_white",
           "zoom_out"]
