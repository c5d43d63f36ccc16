"""Print HAM10000's colour references (R, G, B, 0..255) at a model's input size: the per-channel
mean colour and mean per-image standard deviation that
:class:`kdskin.models.layers.ColourStandardise` gives every image (``HAM_MEAN_RGB``,
``HAM_STD_RGB``), and the mean black point (per-image minimum) and mean Shades of Grey norm
(p = 6) above it that :class:`kdskin.models.layers.AutoLevels` gives (``HAM_BLACK_RGB``,
``HAM_SPAN_RGB``).

    python experiments/2026-12/colour_reference.py ../shared/data/ham10000_full \
        [--size 64] [--every 1]

Every ``every``-th ``*.jpg`` under the folder (sorted), resized to ``size x size`` (bilinear).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def colour_reference(folder: Path, size: int, every: int = 1) -> tuple[dict[str, np.ndarray], int]:
    """``({name: (3,)}, n)``: over ``n`` JPEGs under ``folder``, the mean of the images'
    per-channel ``mean``, ``std``, ``black`` (minimum) and ``span`` (the 6-norm above it)."""
    files = sorted(folder.rglob("*.jpg"))[::every]
    if not files:
        raise SystemExit(f"error: {folder}: no .jpg images found; pass a HAM10000 folder")
    stats: dict[str, list[np.ndarray]] = {"mean": [], "std": [], "black": [], "span": []}
    for path in files:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float64)
        black = arr.min(axis=(0, 1))
        stats["mean"].append(arr.mean(axis=(0, 1)))
        stats["std"].append(arr.std(axis=(0, 1)))
        stats["black"].append(black)
        stats["span"].append(255.0 * np.mean(((arr - black) / 255.0) ** 6, axis=(0, 1)) ** (1 / 6))
    return {k: np.mean(v, axis=0) for k, v in stats.items()}, len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--every", type=int, default=1)
    args = parser.parse_args(argv)
    stats, n = colour_reference(args.folder, args.size, args.every)
    print(f"{n} images at {args.size}x{args.size}:")
    for name, label in (("mean", "HAM_MEAN_RGB"), ("std", "HAM_STD_RGB"),
                        ("black", "HAM_BLACK_RGB"), ("span", "HAM_SPAN_RGB")):
        print(f"  {label} = {tuple(round(float(v), 1) for v in stats[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
