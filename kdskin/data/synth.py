"""The built-in generated dataset: dermoscopy-like lesion images in the HAM10000 layout.

``generate_dataset`` writes ``HAM10000_metadata.csv`` (the real columns) and JPEG images split
across ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``, so that the default run needs
no download and every reader, split and report works on it exactly as on HAM10000.

What it mimics
--------------
* Classes: the seven HAM10000 diagnoses with HAM10000's imbalance *square-root tempered*
  (class share proportional to ``sqrt(HAM10000_COUNTS)``, at least 3 images a class): at 900
  images nv 39 %, mel and bkl 16 % each, bcc 11 %, akiec 9 %, vasc 6 %, df 5 %. The ordering of
  HAM10000 is kept while every class still reaches train, val and test of a 70/15/15
  lesion-grouped split.
* Lesions: images per lesion follow HAM10000 (1: 74 %, 2: 19 %, 3: 7 %, 4+: <1 % of lesions,
  capped at ``max_images_per_lesion``), so about a quarter of the images are repeat images of a
  lesion. Repeat images show the same lesion (same shape, colours, texture, skin) under another
  view: rotation, scale, position, lighting, colour balance, hair, noise, focus.
* Appearance: each class has overlapping distributions of size, shape (round vs irregular or
  lobulated), border sharpness, colours (brown / dark / black / blue-grey / pink / red /
  purple), variegation, asymmetry and structures (pigment network, dots and globules, streaks,
  white scale or regression, arborizing vessels, lacunae). About a third of lesions borrow part
  of their appearance from a look-alike class (mel <-> nv <-> bkl, bcc <-> akiec, ...), so the
  class is learnable but not trivially. Nuisances: skin tone, hair, lighting gradient,
  dermoscope vignette, noise, blur, JPEG artefacts, an occasional ruler or ink mark.
* Metadata: ``lesion_id`` ``HAM_0000001``..., ``image_id`` ``SYN_0000001``... (never an ISIC
  id), ``dataset`` ``kdskin_synth``, and class-dependent ``dx_type``, ``age``, ``sex`` and
  ``localization`` with HAM10000's vocabulary (``dx_type`` leaks the label, as in HAM10000).

Everything is drawn from ``numpy.random.default_rng`` seeded by ``seed`` (one stream for the
metadata, one per lesion, one per view), so the same seed gives byte-identical metadata and
identical pixels, and a different seed a different dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw, ImageFilter

from kdskin.console import progress as progress_bar
from kdskin.constants import CLASSES, HAM10000_COUNTS
from kdskin.data.specs import MIN_IMAGE_SIZE
from kdskin.errors import DataError
from kdskin.io import atomic_write

METADATA_FILE = "HAM10000_metadata.csv"
METADATA_COLUMNS: tuple[str, ...] = (
    "lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset")
IMAGE_DIRS: tuple[str, str] = ("HAM10000_images_part_1", "HAM10000_images_part_2")
DATASET_NAME = "kdskin_synth"
IMAGE_PREFIX = "SYN_"
LESION_PREFIX = "HAM_"
JPEG_QUALITY = 90
#: Class share is proportional to HAM10000_COUNTS ** CLASS_TEMPERING.
CLASS_TEMPERING = 0.5
MIN_IMAGES_PER_CLASS = 3
#: Share of lesions with 1, 2, 3, 4, 5, 6 images in HAM10000 (7,470 lesions).
HAM10000_IMAGES_PER_LESION = (0.738, 0.1905, 0.0656, 0.0044, 0.0012, 0.0003)
#: Share of atypical lesions, and how often a lesion (atypical / typical) borrows each
#: appearance parameter from a look-alike class: the knob for how hard the dataset is.
ATYPICAL_SHARE = 0.3
BORROW_ATYPICAL = 0.5
BORROW_TYPICAL = 0.05


# --------------------------------------------------------------------------- class profiles

_RGB = {
    "tan": (0.80, 0.64, 0.50), "light_brown": (0.70, 0.50, 0.37), "brown": (0.54, 0.35, 0.24),
    "dark_brown": (0.36, 0.22, 0.16), "black": (0.16, 0.12, 0.12),
    "blue_grey": (0.43, 0.47, 0.56), "pink": (0.87, 0.58, 0.58), "red": (0.74, 0.25, 0.27),
    "dark_red": (0.50, 0.12, 0.17), "purple": (0.48, 0.22, 0.40),
    "bluish_purple": (0.38, 0.29, 0.53), "white": (0.94, 0.91, 0.87),
    "yellowish": (0.86, 0.78, 0.58),
}

#: Each class's appearance: scalar parameters as [mean, sd], colour palettes as {colour: weight},
#: structure probabilities. Data, not code: kdskin/data/synth_profiles.yaml.
PROFILES_FILE = Path(__file__).with_name("synth_profiles.yaml")


def _load_profiles(path: Path = PROFILES_FILE) -> dict[str, dict]:
    profiles = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(profiles, dict) or set(profiles) != set(CLASSES):
        raise DataError(f"{path}: expected one appearance profile per class "
                        f"({', '.join(CLASSES)}); reinstall kdskin")
    return profiles


_PROFILES: dict[str, dict] = _load_profiles()

#: Look-alike classes a lesion may borrow parameters from.
_CONFUSERS: dict[str, tuple[str, ...]] = {
    "nv": ("mel", "bkl", "df"), "mel": ("nv", "bkl", "nv"), "bkl": ("mel", "nv", "akiec"),
    "bcc": ("akiec", "bkl", "nv"), "akiec": ("bcc", "bkl"), "df": ("nv", "bkl"),
    "vasc": ("bcc", "mel", "akiec"),
}

# Metadata distributions (HAM10000 vocabulary, roughly its class-conditional frequencies).
_DX_TYPE = {
    "akiec": {"histo": 1.0}, "bcc": {"histo": 1.0}, "mel": {"histo": 1.0},
    "bkl": {"histo": 0.5, "consensus": 0.35, "confocal": 0.06, "follow_up": 0.09},
    "df": {"histo": 0.45, "consensus": 0.55},
    "nv": {"follow_up": 0.55, "histo": 0.35, "consensus": 0.10},
    "vasc": {"histo": 0.55, "consensus": 0.45},
}
_AGE = {"akiec": (67, 11), "bcc": (66, 12), "bkl": (60, 14), "df": (52, 15), "mel": (60, 15),
        "nv": (45, 16), "vasc": (50, 20)}
_MALE = {"akiec": 0.67, "bcc": 0.62, "bkl": 0.57, "df": 0.5, "mel": 0.6, "nv": 0.5,
         "vasc": 0.45}
_SITE = {
    "akiec": {"face": 0.55, "upper extremity": 0.15, "scalp": 0.08, "lower extremity": 0.07,
              "back": 0.05, "neck": 0.05, "chest": 0.05},
    "bcc": {"face": 0.25, "back": 0.25, "trunk": 0.1, "chest": 0.1, "lower extremity": 0.1,
            "upper extremity": 0.1, "neck": 0.05, "scalp": 0.05},
    "bkl": {"face": 0.3, "back": 0.2, "trunk": 0.1, "chest": 0.1, "lower extremity": 0.1,
            "upper extremity": 0.1, "abdomen": 0.05, "neck": 0.05},
    "df": {"lower extremity": 0.7, "upper extremity": 0.15, "trunk": 0.1, "back": 0.05},
    "mel": {"back": 0.3, "lower extremity": 0.2, "upper extremity": 0.15, "face": 0.12,
            "trunk": 0.08, "chest": 0.08, "abdomen": 0.05, "neck": 0.02},
    "nv": {"back": 0.25, "lower extremity": 0.22, "trunk": 0.15, "abdomen": 0.12,
           "upper extremity": 0.1, "chest": 0.05, "face": 0.04, "foot": 0.03, "acral": 0.02,
           "genital": 0.01, "hand": 0.01},
    "vasc": {"trunk": 0.25, "lower extremity": 0.25, "abdomen": 0.15, "back": 0.1,
             "face": 0.1, "upper extremity": 0.1, "chest": 0.05},
}


# --------------------------------------------------------------------------- counts


def class_counts(n_images: int) -> dict[str, int]:
    """Images per class: HAM10000's imbalance square-root tempered, at least 3 a class.

    Largest-remainder rounding keeps HAM10000's ordering (ties possible) and sums to
    ``n_images``.
    """
    if n_images < MIN_IMAGES_PER_CLASS * len(CLASSES):
        raise DataError(f"n_images={n_images}: the generated dataset needs at least "
                        f"{MIN_IMAGES_PER_CLASS * len(CLASSES)} images (3 per class)")
    weights = np.array([HAM10000_COUNTS[c] for c in CLASSES], float) ** CLASS_TEMPERING
    raw = weights / weights.sum() * n_images
    counts = np.maximum(np.floor(raw).astype(int), MIN_IMAGES_PER_CLASS)
    remainder = raw - np.floor(raw)
    order = sorted(range(len(CLASSES)), key=lambda i: (-remainder[i], -weights[i]))
    i = 0
    while counts.sum() < n_images:
        counts[order[i % len(order)]] += 1
        i += 1
    while counts.sum() > n_images:  # floors pushed the total over: take from the largest
        counts[int(np.argmax(counts))] -= 1
    return {c: int(k) for c, k in zip(CLASSES, counts, strict=True)}


def _lesion_sizes(n: int, max_per_lesion: int, rng: np.random.Generator) -> list[int]:
    """Split ``n`` images into lesions with HAM10000's images-per-lesion distribution."""
    k = min(max_per_lesion, len(HAM10000_IMAGES_PER_LESION))
    probs = np.array(HAM10000_IMAGES_PER_LESION[:k])
    probs /= probs.sum()
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.choice(k, p=probs)) + 1)
    sizes[-1] -= sum(sizes) - n
    while len(sizes) < min(3, n):  # at least three lesions a class (one per split)
        j = int(np.argmax(sizes))
        sizes[j] -= 1
        sizes.append(1)
    return sizes


# --------------------------------------------------------------------------- lesions


@dataclass
class _Field:
    """A smooth random field on lesion coordinates: a sum of a few random cosines."""

    freq: np.ndarray  # (J, 2)
    phase: np.ndarray  # (J,)
    amp: np.ndarray  # (J,)

    @classmethod
    def draw(cls, rng: np.random.Generator, lo: float, hi: float, j: int = 5) -> _Field:
        angle = rng.uniform(0, 2 * np.pi, j)
        mag = rng.uniform(lo, hi, j)
        freq = np.stack([mag * np.cos(angle), mag * np.sin(angle)], 1)
        amp = rng.uniform(0.5, 1.0, j)
        return cls(freq, rng.uniform(0, 2 * np.pi, j), amp / np.sqrt((amp ** 2).sum() / 2))

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros_like(u)
        for (fu, fv), p, a in zip(self.freq.tolist(), self.phase.tolist(), self.amp.tolist(),
                                  strict=True):
            out += a * np.cos(fu * u + fv * v + p)
        return out


@dataclass
class _Lesion:
    """Everything intrinsic to one lesion (shared by all its images), in lesion coordinates
    where the lesion's mean radius is 1."""

    dx: str
    skin: np.ndarray  # (3,) RGB 0..1
    skin_field: _Field
    hairiness: float
    radius: float  # mean radius, fraction of the image half-width
    aspect: float
    harmonics: np.ndarray  # (K,) amplitudes of cos(k*phi + phase), k = 2..K+1
    harm_phase: np.ndarray
    softness: float
    border_var: float
    border_angle: float
    opacity: float
    colours: np.ndarray  # (C, 3)
    colour_fields: list[_Field]
    colour_bias: np.ndarray  # (C,)
    patchy: float
    asym: np.ndarray  # (2,) offset of the darkest part
    centre_dark: float
    network: dict | None
    dots: dict | None
    streaks: dict | None
    white: dict | None
    ridges: dict | None
    vessels: list[np.ndarray] | None  # polylines (P, 2) in lesion coordinates
    vessel_colour: np.ndarray | None
    erythema: float


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _colour(rng: np.random.Generator, name: str) -> np.ndarray:
    rgb = np.array(_RGB[name]) * rng.normal(1.0, 0.04, 3) * rng.normal(1.0, 0.08)
    return np.clip(rgb, 0.02, 1.0)


def _make_lesion(dx: str, rng: np.random.Generator) -> _Lesion:
    """Draw one lesion's intrinsic appearance from its class profile (sometimes a look-alike's)."""
    own = _PROFILES[dx]
    other = _PROFILES[_CONFUSERS[dx][int(rng.integers(len(_CONFUSERS[dx])))]]
    borrow = BORROW_ATYPICAL if rng.random() < ATYPICAL_SHARE else BORROW_TYPICAL

    def prof() -> dict:
        return other if rng.random() < borrow else own

    def normal(key: str, lo: float, hi: float) -> float:
        mean, sd = prof()[key]
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    # Skin of the patient: light to darker, pinkish.
    t = rng.beta(2.0, 4.0)
    skin = (1 - t) * np.array([0.93, 0.78, 0.71]) + t * np.array([0.70, 0.50, 0.40])
    skin = np.clip(skin * rng.normal(1.0, 0.03, 3), 0, 1)
    hairiness = 0.0 if rng.random() < 0.5 else float(rng.uniform(1.0, 9.0))

    radius = normal("radius", 0.22, 0.95)
    aspect = 1.0 + abs(rng.normal(0.0, prof()["aspect"]))
    irregular = normal("irregular", 0.0, 0.35)
    lobes = prof()["lobes"]
    k = np.arange(2, 10)
    harmonics = irregular * rng.normal(0, 1, k.size) / k ** 0.8
    harmonics[3:] += 0.5 * lobes * irregular * np.abs(rng.normal(0, 1, k.size - 3))
    softness = normal("softness", 0.02, 0.45)
    border_var = float(rng.uniform(0.0, 0.9 if prof() is _PROFILES["mel"] else 0.4))

    base = prof()["base"]
    extra = prof()["extra"]
    lo, hi = prof()["n_colours"]
    n_col = int(rng.integers(lo, hi + 1))
    names = [_pick(rng, base)] + [_pick(rng, extra) for _ in range(n_col - 1)]
    colours = np.stack([_colour(rng, n) for n in names])
    colour_bias = np.concatenate([[1.0], rng.uniform(-0.8, 0.3, n_col - 1)])

    p = prof()
    network = None
    if rng.random() < p["p_network"]:
        network = dict(freq=float(rng.uniform(16.0, 24.0)), angle=float(rng.uniform(0, np.pi)),
                       thick=float(rng.uniform(0.18, 0.32)), warp=p["network_warp"],
                       field=_Field.draw(rng, 1.0, 3.0), gate=_Field.draw(rng, 1.5, 3.5),
                       contrast=float(rng.uniform(0.3, 0.6)),
                       style="peripheral" if p is _PROFILES["df"] else
                       "patchy" if p is _PROFILES["mel"] else "fading")
    p = prof()
    dots = None
    if rng.random() < p["p_dots"]:
        where, n_lo, n_hi, s_lo, s_hi = p["dots"]
        n = int(rng.integers(n_lo, n_hi + 1))
        if where == "central":
            r = np.sqrt(rng.uniform(0, 0.45, n))
        elif where == "peripheral":
            r = rng.uniform(0.55, 1.0, n)
        else:
            r = np.sqrt(rng.uniform(0, 0.8, n))
        a = rng.uniform(0, 2 * np.pi, n)
        if where == "peripheral" and rng.random() < 0.6:  # clustered on one side
            a = rng.normal(rng.uniform(0, 2 * np.pi), 1.0, n)
        cols = np.stack([_colour(rng, _pick(rng, p["dot_colours"])) for _ in range(n)])
        dots = dict(pos=np.stack([r * np.cos(a), r * np.sin(a)], 1),
                    sigma=rng.uniform(s_lo, s_hi, n), colour=cols,
                    alpha=rng.uniform(0.6, 0.95, n))
    p = prof()
    streaks = None
    if rng.random() < p["p_streaks"]:
        n = int(rng.integers(6, 18))
        if p is _PROFILES["nv"]:  # regular starburst
            angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.normal(0, 0.05, n)
        else:  # irregular, focal
            angles = rng.normal(rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 2.5), n)
        streaks = dict(angle=angles, width=float(rng.uniform(0.05, 0.09)),
                       reach=rng.uniform(1.1, 1.35, n),
                       colour=_colour(rng, _pick(rng, {"dark_brown": 2, "black": 1})))
    p = prof()
    white = None
    if rng.random() < p["p_white"]:
        white = dict(style=p["white"], field=_Field.draw(rng, 3.0, 7.0),
                     level=float(rng.uniform(0.2, 0.9)),
                     colour=_colour(rng, "yellowish" if p["white"] == "scale"
                                    and rng.random() < 0.4 else "white"),
                     alpha=float(rng.uniform(0.45, 0.85)))
        if p["white"] == "regression":
            white["colour"] = _colour(rng, "blue_grey" if rng.random() < 0.5 else "white")
    p = prof()
    ridges = None
    if rng.random() < p["p_ridges"]:  # cerebriform fissures and ridges (seborrhoeic keratosis)
        ridges = dict(freq=float(rng.uniform(9.0, 14.0)), angle=float(rng.uniform(0, np.pi)),
                      warp=float(rng.uniform(0.3, 0.6)), field=_Field.draw(rng, 1.5, 3.5),
                      contrast=float(rng.uniform(0.25, 0.45)))
    p = prof()
    vessels = None
    vessel_colour = None
    if rng.random() < p["p_vessels"]:
        vessel_colour = _colour(rng, "red" if rng.random() < 0.7 else "dark_red")
        vessels = _draw_vessels(rng, p["vessels"])
    erythema = float(rng.uniform(0.0, 0.25)) if dx in ("akiec", "bcc", "vasc") else float(
        rng.uniform(0.0, 0.08))
    lesion = _Lesion(
        dx=dx, skin=skin, skin_field=_Field.draw(rng, 8.0, 20.0, 6), hairiness=hairiness,
        radius=radius, aspect=aspect, harmonics=harmonics,
        harm_phase=rng.uniform(0, 2 * np.pi, k.size), softness=softness,
        border_var=border_var, border_angle=float(rng.uniform(0, 2 * np.pi)),
        opacity=normal("opacity", 0.3, 1.0), colours=colours,
        colour_fields=[_Field.draw(rng, 1.0, 3.5) for _ in range(n_col)],
        colour_bias=colour_bias, patchy=normal("patchy", 0.5, 9.0),
        asym=rng.normal(0, 1, 2) / math.sqrt(2) * normal("asym", 0.0, 0.7),
        centre_dark=normal("centre_dark", -0.6, 0.5), network=network, dots=dots,
        streaks=streaks, white=white, ridges=ridges, vessels=vessels, vessel_colour=vessel_colour,
        erythema=erythema)
    return _as_float32(lesion)


def _as_float32(lesion: _Lesion) -> _Lesion:
    """Cast the lesion's arrays to float32 so that rendering stays in float32."""
    for name, value in vars(lesion).items():
        if isinstance(value, np.ndarray):
            setattr(lesion, name, value.astype(np.float32))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, np.ndarray):
                    value[key] = item.astype(np.float32)
        elif isinstance(value, list):
            setattr(lesion, name, [v.astype(np.float32) if isinstance(v, np.ndarray) else v
                                   for v in value])
    return lesion


def _draw_vessels(rng: np.random.Generator, style: str) -> list[np.ndarray]:
    """Branching polylines (arborizing) or short hairpin/dotted segments, lesion coordinates."""
    lines: list[np.ndarray] = []
    if style == "arborizing":
        for _ in range(int(rng.integers(2, 5))):
            start = rng.uniform(-0.6, 0.6, 2)
            heading = rng.uniform(0, 2 * np.pi)
            stack = [(start, heading, 0)]
            while stack and len(lines) < 14:
                p, h, depth = stack.pop()
                pts = [p]
                for _ in range(int(rng.integers(3, 7))):
                    h += rng.normal(0, 0.35)
                    p = p + 0.12 * np.array([np.cos(h), np.sin(h)])
                    pts.append(p)
                lines.append(np.array(pts))
                if depth < 2:
                    for _ in range(int(rng.integers(1, 3))):
                        j = int(rng.integers(1, len(pts)))
                        stack.append((pts[j], h + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0),
                                      depth + 1))
    else:  # short comma / hairpin vessels
        for _ in range(int(rng.integers(5, 15))):
            p = rng.uniform(-0.7, 0.7, 2)
            h = rng.uniform(0, 2 * np.pi)
            q = p + 0.1 * np.array([np.cos(h), np.sin(h)])
            lines.append(np.stack([p, q, q + 0.06 * np.array([np.cos(h + 1), np.sin(h + 1)])]))
    return lines


# --------------------------------------------------------------------------- rendering


def _uniform(rng: np.random.Generator, lo: float, hi: float, n: int | None = None) -> Any:
    """A float, or float32 array of ``n`` (keeps the float32 image math in float32)."""
    x = rng.uniform(lo, hi, n)
    return float(x) if n is None else x.astype(np.float32)


def _normal(rng: np.random.Generator, mean: float, sd: float, n: int | None = None) -> Any:
    x = rng.normal(mean, sd, n)
    return float(x) if n is None else x.astype(np.float32)


def _vec(values: list) -> np.ndarray:
    return np.array(values, np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _line_mask(lines: list[np.ndarray], widths: list[float], size: int) -> np.ndarray:
    """Anti-aliased mask (size, size) float 0..1 of polylines given in pixel coordinates."""
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, w in zip(lines, widths, strict=True):
        draw.line([(float(x) * 2, float(y) * 2) for x, y in pts], fill=255,
                  width=max(1, round(2 * w)), joint="curve")
    canvas = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(canvas, np.float32) / 255.0


def _render(lesion: _Lesion, rng: np.random.Generator, size: int) -> np.ndarray:
    """One image (view) of ``lesion``: (size, size, 3) uint8 RGB."""
    lin = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    ys, xs = np.meshgrid(lin, lin, indexing="ij")

    # View: rotation, scale, position.
    theta = _uniform(rng, 0, 2 * np.pi)
    scale = lesion.radius * float(np.clip(_normal(rng, 1.0, 0.08), 0.8, 1.2))
    theta = float(theta)
    tx, ty = np.clip(_normal(rng, 0.0, 0.07, 2), -0.2, 0.2).tolist()
    c, s = math.cos(theta), math.sin(theta)
    px, py = xs - tx, ys - ty
    u = (c * px + s * py) / scale
    v = (-s * px + c * py) / scale

    # Shape and border.
    sq = math.sqrt(lesion.aspect)
    ua, va = u / sq, v * sq
    rho = np.hypot(ua, va)
    phi = np.arctan2(va, ua)
    unit = (ua + 1j * va) / np.maximum(rho, 1e-9)  # e^{i phi}
    power = unit.copy()
    boundary = np.ones_like(phi)
    for a, p in zip(lesion.harmonics.tolist(), lesion.harm_phase.tolist(), strict=True):
        power *= unit  # e^{i k phi}
        boundary += a * (power * complex(math.cos(p), math.sin(p))).real
    d = rho / np.maximum(boundary, 0.35)
    width = lesion.softness * (1 + lesion.border_var * np.cos(phi - lesion.border_angle))
    mask = _sigmoid((1.0 - d) / np.maximum(width, 0.015))

    # Skin with texture and a little erythema around the lesion.
    skin = lesion.skin[None, None, :] * (1 + 0.015 * lesion.skin_field(u, v))[..., None]
    ery = lesion.erythema * np.exp(-np.maximum(d - 0.8, 0) ** 2 / 0.5)
    skin = skin * (1 - ery[..., None] * _vec([0.0, 0.35, 0.3]))

    # Lesion colour: patches of its colours, radial profile, an asymmetric dark part.
    logits = np.stack([lesion.patchy * f(u, v) + 2 * b
                       for f, b in zip(lesion.colour_fields, lesion.colour_bias, strict=True)], -1)
    logits -= logits.max(-1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(-1, keepdims=True)
    col = w @ lesion.colours
    radial = 1 - np.clip(d, 0, 1)
    dark = lesion.centre_dark * radial
    dark += 0.25 * np.exp(-((u - lesion.asym[0]) ** 2 + (v - lesion.asym[1]) ** 2) / 0.25) * (
        np.linalg.norm(lesion.asym) > 0.2)
    col = col * np.clip(1 - dark, 0.3, 1.6)[..., None]

    if lesion.network is not None:
        # Honeycomb: the low ridges of three cosines 60 degrees apart form a connected mesh.
        net = lesion.network
        warp = net["warp"] * net["field"](u, v)
        wu, wv = (u + warp) * net["freq"], (v - warp) * net["freq"]
        h = np.zeros_like(u)
        for j in range(3):
            a = net["angle"] + j * np.pi / 3
            h += np.cos(math.cos(a) * wu + math.sin(a) * wv)
        thick = net["thick"] * (1 + 1.5 * net["warp"] * net["gate"](2 * u, 2 * v))
        lines = _sigmoid((thick * 4 - 1.0 - h) / 0.25)
        if net["style"] == "fading":
            env = np.clip(1.3 - d, 0, 1)
        elif net["style"] == "peripheral":
            env = np.exp(-((d - 0.85) / 0.25) ** 2)
        else:
            env = _sigmoid(3 * net["gate"](u, v))
        col = col * (1 - net["contrast"] * (lines * env)[..., None])

    if lesion.white is not None:
        wh = lesion.white
        if wh["style"] == "central":
            area = _sigmoid((0.45 - rho + 0.08 * wh["field"](u, v)) / 0.08)
        else:
            area = _sigmoid((wh["field"](u, v) - (1.2 - 1.5 * wh["level"])) / 0.25)
            area = area * np.clip(1.1 - d, 0, 1)
        a = (wh["alpha"] * area)[..., None]
        col = col * (1 - a) + wh["colour"] * a

    if lesion.ridges is not None:
        rd = lesion.ridges
        ca, sa = math.cos(rd["angle"]), math.sin(rd["angle"])
        wave = np.cos(rd["freq"] * (ca * u + sa * v + rd["warp"] * rd["field"](u, v)))
        grooves = _sigmoid((wave - 0.4) / 0.15) * np.clip(1.2 - d, 0, 1)
        col = col * (1 - rd["contrast"] * grooves)[..., None] * 1.08

    alpha = (lesion.opacity * mask)[..., None]
    img = skin * (1 - alpha) + col * alpha

    if lesion.dots is not None:
        dots = lesion.dots
        du = u[..., None] - dots["pos"][:, 0]
        dv = v[..., None] - dots["pos"][:, 1]
        g = np.exp(-(du ** 2 + dv ** 2) / (2 * dots["sigma"] ** 2)) * dots["alpha"]
        total = g.sum(-1)
        a = np.clip(total, 0, 1)[..., None]
        dot_col = (g @ dots["colour"]) / np.maximum(total, 1e-6)[..., None]
        img = img * (1 - a) + dot_col * a

    if lesion.streaks is not None:
        st = lesion.streaks
        diff = phi[..., None] - st["angle"]
        along = rho[..., None] * np.cos(diff)
        perp = rho[..., None] * np.abs(np.sin(diff))
        reach = st["reach"] * np.maximum(boundary, 0.35)[..., None]
        inside = _sigmoid((along - 0.7 * reach) / 0.04) * _sigmoid((reach - along) / 0.04)
        streak = (np.exp(-(perp / st["width"]) ** 2) * inside).max(-1)
        a = (0.8 * streak)[..., None]
        img = img * (1 - a) + st["colour"] * a

    # Lines drawn in pixel coordinates: vessels (lesion), then per-view hair, ruler, ink.
    def to_pixels(pts: np.ndarray) -> np.ndarray:
        x = tx + scale * (c * pts[:, 0] - s * pts[:, 1])
        y = ty + scale * (s * pts[:, 0] + c * pts[:, 1])
        return np.stack([(x + 1) * size / 2, (y + 1) * size / 2], 1)

    if lesion.vessels is not None:
        vm = _line_mask([to_pixels(p) for p in lesion.vessels],
                        [max(0.6, size / 96)] * len(lesion.vessels), size)
        a = (0.75 * vm * np.clip(mask * 1.5, 0, 1))[..., None]
        img = img * (1 - a) + lesion.vessel_colour * a

    n_hair = int(rng.poisson(lesion.hairiness))
    if n_hair:
        hairs, widths = [], []
        for _ in range(n_hair):
            p0 = _uniform(rng, -1.2, 1.2, 2)
            h = _uniform(rng, 0, 2 * np.pi)
            bend = _normal(rng, 0, 0.25)
            pts = [p0]
            for _ in range(10):
                h += bend * 0.3
                pts.append(pts[-1] + 0.15 * _vec([np.cos(h), np.sin(h)]))
            hairs.append((np.array(pts) + 1) * size / 2)
            widths.append(_uniform(rng, 0.5, 1.2) * max(1.0, size / 96))
        hm = _line_mask(hairs, widths, size)
        hair_col = _vec([0.12, 0.09, 0.08]) * _uniform(rng, 0.6, 1.8)
        a = (0.85 * hm)[..., None]
        img = img * (1 - a) + hair_col * a

    if rng.random() < 0.05:  # ruler along one edge
        edge = _uniform(rng, 0.05, 0.12) * size
        ticks = [_vec([[x, edge], [x, edge + (0.06 if i % 5 else 0.11) * size]])
                 for i, x in enumerate(np.arange(0, size, size / 16))]
        marks = [_vec([[0, edge], [size, edge]])] + ticks
        rm = _line_mask(marks, [max(0.6, size / 128)] * len(marks), size)
        if rng.random() < 0.5:
            rm = rm[::-1]
        if rng.random() < 0.5:
            rm = rm.T
        a = (0.9 * rm)[..., None]
        img = img * (1 - a) + _vec([0.1, 0.1, 0.1]) * a
    if rng.random() < 0.05:  # surgical ink mark: an arc or a few dots
        ink = []
        centre = _vec([tx, ty])
        r = scale * _uniform(rng, 1.4, 1.9)
        a0 = _uniform(rng, 0, 2 * np.pi)
        t = np.linspace(a0, a0 + _uniform(rng, 0.8, 2.5), 12)
        ink.append((centre + r * np.stack([np.cos(t), np.sin(t)], 1) + 1) * size / 2)
        im = _line_mask(ink, [max(1.0, size / 64)], size)
        a = (0.8 * im)[..., None]
        img = img * (1 - a) + _vec([0.35, 0.22, 0.55]) * a

    # Acquisition: colour balance, exposure, lighting gradient, dermoscope vignette, noise.
    img = img * _normal(rng, 1.0, 0.035, 3) * _uniform(rng, 0.88, 1.08)
    ga = _uniform(rng, 0, 2 * np.pi)
    img = img * (1 + _uniform(rng, 0, 0.15) * (xs * math.cos(ga) + ys * math.sin(ga)))[..., None]
    img = img * (1 - _uniform(rng, 0, 0.25) * np.clip(np.hypot(xs, ys) - 0.6, 0, 1) ** 2)[
        ..., None]
    if rng.random() < 0.3:
        rv = _uniform(rng, 1.0, 1.35)
        keep = _sigmoid((rv - np.hypot(xs - _normal(rng, 0, 0.05), ys - _normal(rng, 0, 0.05)))
                        / 0.02)[..., None]
        img = img * keep + _uniform(rng, 0.02, 0.12) * (1 - keep)
    img = img + _uniform(rng, 0.004, 0.02) * rng.standard_normal(img.shape, np.float32)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = np.asarray(Image.fromarray(out).filter(
            ImageFilter.GaussianBlur(_uniform(rng, 0.3, 0.8) * size / 96)))
    return out


# --------------------------------------------------------------------------- writing


def _check_target(out_dir: Path, overwrite: bool) -> None:
    meta = out_dir / METADATA_FILE
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; choose another output folder")
    if not meta.exists():
        return
    if not overwrite:
        raise DataError(f"{meta} already exists; pass overwrite=True (--overwrite) to replace "
                        f"it, or choose another output folder")
    try:
        existing = pd.read_csv(meta, dtype=str, keep_default_na=False, usecols=["dataset"])
        synthetic = bool(len(existing)) and (existing["dataset"] == DATASET_NAME).all()
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError):
        synthetic = False
    if not synthetic:
        raise DataError(f"{meta} is not a kdskin-generated dataset; refusing to overwrite it, "
                        f"choose another output folder")


def _metadata(counts: dict[str, int], max_per_lesion: int, rng: np.random.Generator
              ) -> pd.DataFrame:
    """One row per image, lesion-level fields shared by a lesion's images; ids shuffled."""
    lesions: list[dict] = []
    for dx in CLASSES:
        for n in _lesion_sizes(counts[dx], max_per_lesion, rng):
            sex = "unknown" if rng.random() < 0.005 else (
                "male" if rng.random() < _MALE[dx] else "female")
            site = "unknown" if rng.random() < 0.02 else _pick(rng, _SITE[dx])
            mean, sd = _AGE[dx]
            age = float(np.clip(round(rng.normal(mean, sd) / 5) * 5, 0, 85))
            lesions.append(dict(dx=dx, n=n, dx_type=_pick(rng, _DX_TYPE[dx]), age=age,
                                sex=sex, localization=site))
    lesion_order = rng.permutation(len(lesions))
    rows = []
    for rank, li in enumerate(lesion_order, start=1):
        les = lesions[li]
        for _ in range(les["n"]):
            rows.append(dict(lesion_id=f"{LESION_PREFIX}{rank:07d}", **{
                k: les[k] for k in ("dx", "dx_type", "age", "sex", "localization")},
                dataset=DATASET_NAME, lesion_index=int(li)))
    table = pd.DataFrame(rows)
    image_order = rng.permutation(len(table))
    table["image_id"] = [f"{IMAGE_PREFIX}{i + 1:07d}" for i in np.argsort(image_order)]
    table = table.sort_values("image_id", kind="stable").reset_index(drop=True)
    return table


def generate_dataset(out_dir: str | Path, n_images: int = 900, max_images_per_lesion: int = 4,
                     image_size: int = 96, seed: int = 0, progress: bool = False,
                     overwrite: bool = False) -> pd.DataFrame:
    """Write the generated dataset in the HAM10000 layout into ``out_dir``.

    Returns the metadata table (columns :data:`METADATA_COLUMNS`, one row per image). Images
    (``image_size`` x ``image_size`` RGB JPEG, quality 90) are written first, the metadata CSV
    last (temporary file + rename), so an interrupted run leaves no CSV pointing at missing
    images. An existing ``HAM10000_metadata.csv`` is replaced only with ``overwrite=True`` and
    only if it is itself generated (``dataset == kdskin_synth``).
    """
    if out_dir is None or not isinstance(out_dir, str | os.PathLike) or not str(out_dir):
        raise DataError(f"out_dir: expected the folder to write the dataset to (kdskin data synth "
                        f"--out DIR), got {out_dir!r}")
    out_dir = Path(out_dir)
    if max_images_per_lesion < 1:
        raise DataError(f"max_images_per_lesion={max_images_per_lesion}: must be at least 1")
    if image_size < MIN_IMAGE_SIZE:
        raise DataError(f"image_size={image_size}: must be at least {MIN_IMAGE_SIZE} pixels")
    counts = class_counts(n_images)
    _check_target(out_dir, overwrite)

    seed = int(seed)
    table = _metadata(counts, max_images_per_lesion,
                      np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])))

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = out_dir / METADATA_FILE
    meta.unlink(missing_ok=True)  # never leave an old CSV beside half-replaced images
    for name in IMAGE_DIRS:
        folder = out_dir / name
        folder.mkdir(exist_ok=True)
        for old in folder.glob(f"{IMAGE_PREFIX}*.jpg"):
            old.unlink()

    lesion_cache: dict[int, _Lesion] = {}
    views: dict[int, int] = {}
    half = (len(table) + 1) // 2
    rows = enumerate(table.itertuples(index=False))
    if progress:
        rows = progress_bar(rows, total=len(table), desc="generating images", unit="image")
    for i, row in rows:
        li = int(row.lesion_index)
        if li not in lesion_cache:
            lesion_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1E5, li]))
            lesion_cache[li] = _make_lesion(row.dx, lesion_rng)
        view = views.get(li, 0)
        views[li] = view + 1
        view_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x71E, li, view]))
        pixels = _render(lesion_cache[li], view_rng, image_size)
        folder = out_dir / IMAGE_DIRS[0 if i < half else 1]
        Image.fromarray(pixels).save(folder / f"{row.image_id}.jpg", "JPEG",
                                     quality=JPEG_QUALITY)

    table = table[list(METADATA_COLUMNS)]
    atomic_write(meta, lambda tmp: table.to_csv(tmp, index=False))
    return table
