#!/usr/bin/env python3
"""The resize-agreement table of a run's exported files on a folder of real images.

    python tools/resize_agreement.py --run RUN_DIR --images ../shared/data/isic2018_dev \
        [--limit N] [--update]

For every ``RUN_DIR/tflite/model_{int8,fp32}.tflite`` and ``RUN_DIR/tflite/app/*.tflite``: top-1
agreement with the same-kind file on kdskin's own resize (Pillow anti-aliased bilinear), under
OpenCV linear / area / nearest and MediaPipe's own resizing, with accuracy on a labelled folder
(kdskin.export.resize_check). Prints a markdown table; ``--update`` also stores it in
``RUN_DIR/tflite/export.json`` under ``resize_agreement``. Files exported before the app files
and metadata existed: re-export first (``kdskin export --run RUN_DIR``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run directory (with tflite/)")
    parser.add_argument("--images", required=True, help="folder of real images")
    parser.add_argument("--limit", type=int, default=None, help="at most N images")
    parser.add_argument("--update", action="store_true", help="write into export.json")
    args = parser.parse_args(argv)

    from kdskin.bench import format_table
    from kdskin.errors import KdskinError
    from kdskin.export.check import EXPORT_JSON
    from kdskin.export.quiet import quiet
    from kdskin.export.resize_check import agreement_rows, resize_agreement
    from kdskin.export.specs import APP_DIR, FILE_NAMES
    from kdskin.io import read_json, write_json

    tflite = Path(args.run) / "tflite"
    pairs = {}
    for kind in ("int8", "fp32"):
        ref = tflite / FILE_NAMES[kind]
        if ref.is_file():
            pairs[ref.name] = (ref, ref)
            app = tflite / APP_DIR / FILE_NAMES[kind]
            if app.is_file():
                pairs[f"{APP_DIR}/{app.name}"] = (app, ref)
    if not pairs:
        print(f"error: {tflite}: no model_int8/model_fp32 .tflite files", file=sys.stderr)
        return 2
    try:
        with quiet():
            table = resize_agreement(pairs, args.images, limit=args.limit)
    except KdskinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{table['n_images']} images from {table['images']}; cells: top-1 agreement with "
          f"kdskin's resize (accuracy)")
    print(format_table(agreement_rows(table)))
    for method, reason in table["skipped"].items():
        print(f"skipped {method}: {reason}")
    if args.update:
        path = tflite / EXPORT_JSON
        data = read_json(path) if path.is_file() else {}
        data["resize_agreement"] = table
        write_json(path, data)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
