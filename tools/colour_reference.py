"""Print HAM10000's per-channel mean colour and mean per-image standard deviation (0..255) at a
model's input size: the reference that :class:`kdskin.models.layers.ColourStandardise` gives
every image (``HAM_MEAN_RGB``, ``HAM_STD_RGB``).

    python tools/colour_reference.py ../shared/data/ham10000_full [--size 64]

Every ``*.jpg`` under the folder, resized to ``size x size`` (bilinear, as Pillow does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def colour_reference(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(mean (3,), std (3,), n)``: the mean of the images' per-channel means and of their
    per-channel standard deviations, over the ``n`` JPEGs under ``folder``."""
    files = sorted(folder.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"error: {folder}: no .jpg images found; pass a HAM10000 folder")
    means, stds = [], []
    for path in files:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
        means.append(arr.mean(axis=(0, 1)))
        stds.append(arr.std(axis=(0, 1)))
    return np.mean(means, axis=0), np.mean(stds, axis=0), len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    mean, std, n = colour_reference(args.folder, args.size)
    print(f"{n} images at {args.size}x{args.size}: mean RGB {tuple(round(float(v), 1) for v in mean)}, "
          f"mean per-image std RGB {tuple(round(float(v), 1) for v in std)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
