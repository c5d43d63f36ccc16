"""``kdskin data inspect``: what a data folder holds, before anything is trained on it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
from PIL import Image

from kdskin.constants import CLASSES, SPLITS
from kdskin.data.datasets import LabelledImages
from kdskin.data.images import load_image
from kdskin.errors import DataError


def summarize(dataset: LabelledImages, split: pd.DataFrame | None = None, verify: bool = False
              ) -> dict[str, Any]:
    """Counts per class (and per split), missing images, repeated lesions, image sizes.

    ``verify`` decodes every image fully (finds truncated files); otherwise only headers are read.
    """
    table = dataset.table
    sizes: Counter = Counter()
    modes: Counter = Counter()
    unreadable: list[str] = []
    for path in table["path"]:
        try:
            if verify:
                load_image(path, 16)
            with Image.open(path) as im:
                sizes[f"{im.size[0]}x{im.size[1]}"] += 1
                modes[im.mode] += 1
        except (DataError, OSError) as exc:
            unreadable.append(str(exc) if isinstance(exc, DataError) else f"{path}: {exc}")
    per_lesion = table.groupby("lesion_id").size()
    counts = {c: int((table["dx"] == c).sum()) for c in CLASSES}
    out: dict[str, Any] = {
        "root": str(dataset.root),
        "format": dataset.format,
        "metadata_file": str(dataset.metadata_file),
        "metadata_rows": dataset.rows,
        "images": len(table),
        "rows_without_image": len(dataset.missing),
        "unreadable_images": unreadable,
        "lesions": int(len(per_lesion)),
        "lesions_with_several_images": int((per_lesion > 1).sum()),
        "images_of_repeated_lesions": int(per_lesion[per_lesion > 1].sum()),
        "per_class": counts,
        "image_sizes": dict(sizes.most_common()),
        "image_modes": dict(modes.most_common()),
    }
    if split is not None:
        joined = split[split["image_id"].isin(set(table["image_id"]))]
        out["per_split"] = {
            s: {c: int(((joined["split"] == s) & (joined["dx"] == c)).sum()) for c in CLASSES}
            for s in SPLITS
        }
        n = joined.groupby("lesion_id")["split"].nunique()
        out["lesions_in_several_splits"] = int((n > 1).sum())
    return out


def format_summary(s: dict[str, Any]) -> str:
    """A human-readable report of :func:`summarize`'s result."""
    lines = [
        f"data: {s['root']} ({s['format']}, {s['metadata_file']})",
        f"metadata rows: {s['metadata_rows']:,}   images found: {s['images']:,}   "
        f"rows without an image: {s['rows_without_image']:,}   "
        f"unreadable images: {len(s['unreadable_images'])}",
        f"lesions: {s['lesions']:,}   with several images: {s['lesions_with_several_images']:,} "
        f"({s['images_of_repeated_lesions']:,} images)",
        "image sizes: " + ", ".join(f"{k} x{v:,}" for k, v in list(s["image_sizes"].items())[:5])
        + ("" if len(s["image_sizes"]) <= 5 else f", ... ({len(s['image_sizes'])} sizes)"),
        "image modes: " + ", ".join(f"{k} x{v:,}" for k, v in s["image_modes"].items()),
        "",
    ]
    header = f"{'class':<8}{'images':>8}"
    if "per_split" in s:
        header += "".join(f"{name:>8}" for name in SPLITS)
    lines.append(header)
    for c in CLASSES:
        row = f"{c:<8}{s['per_class'][c]:>8,}"
        if "per_split" in s:
            row += "".join(f"{s['per_split'][name][c]:>8,}" for name in SPLITS)
        lines.append(row)
    total = f"{'total':<8}{s['images']:>8,}"
    if "per_split" in s:
        total += "".join(f"{sum(s['per_split'][n].values()):>8,}" for n in SPLITS)
    lines.append(total)
    if "lesions_in_several_splits" in s:
        lines.append(f"lesions in more than one split: {s['lesions_in_several_splits']}")
    for err in s["unreadable_images"][:20]:
        lines.append(f"unreadable: {err}")
    return "\n".join(lines)
