#!/usr/bin/env python3
"""How much of a folder's images kdskin's border-fill layer would fill (``data.border_fill``).

    python experiments/2026-12/border_share.py ../shared/data/ham10000_full \
        ../shared/data/isic2018_dev [--size 64] [--limit 1500] [--seed 0]

Per folder: the images are read as kdskin reads them (``kdskin.data.images``, at ``--size``),
``--limit`` of them drawn at random (seed ``--seed``) when there are more, and
:class:`kdskin.models.layers.BorderFill`'s mask is computed; prints the share of images with
any border pixel, with more than 5% of the image border, and the mean share of border pixels.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="folders of images (searched recursively)")
    parser.add_argument("--size", type=int, default=64, help="the model's input size")
    parser.add_argument("--limit", type=int, default=1500, help="at most N images a folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draw")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from kdskin.data.images import collect_images, load_images
    from kdskin.errors import KdskinError
    from kdskin.models.layers import BorderFill

    layer = BorderFill()
    print("| folder | images | any border pixel | border > 5% of the image | mean border share |")
    print("|---|---|---|---|---|")
    for folder in args.folders:
        try:
            paths = collect_images([folder])
        except KdskinError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if len(paths) > args.limit:
            pick = np.random.default_rng(args.seed).choice(len(paths), args.limit, replace=False)
            paths = [paths[i] for i in sorted(pick)]
        images, _, errors = load_images(paths, args.size)
        for line in errors:
            print(f"skipped: {line}", file=sys.stderr)
        share = np.zeros(0)
        for start in range(0, len(images), 256):
            batch = images[start:start + 256].astype(np.float32)
            mask = keras.ops.convert_to_numpy(layer.mask(batch))[..., 0]
            share = np.concatenate([share, mask.mean(axis=(1, 2))])
        print(f"| {folder} | {len(share)} | {np.mean(share > 0):.3f} | "
              f"{np.mean(share > 0.05):.3f} | {share.mean():.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
