"""Reading labelled image folders: the HAM10000 layout and the ISIC 2018 Task 3 layout.

Both readers return a :class:`LabelledImages` whose ``table`` has one row per image that exists
on disk, with columns ``image_id, lesion_id, dx, label, path``. Rows whose image file is missing
are counted in ``missing`` and skipped (``strict=True`` makes that an error). Images are decoded
later (:func:`kdskin.data.images.load_images`), where unreadable files are reported and skipped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kdskin.constants import (
    CLASS_INDEX,
    CLASSES,
    HAM10000_METADATA_NAMES,
    IMAGE_EXTENSIONS,
    ISIC2018_COLUMNS,
)
from kdskin.data.specs import FORMATS, check_choice
from kdskin.errors import DataError

__all__ = ["FORMATS", "LabelledImages", "index_images", "read_dataset", "read_ham10000",
           "read_isic2018"]
HAM_REQUIRED = ("lesion_id", "image_id", "dx")


@dataclass
class LabelledImages:
    """A dataset on disk: ``table`` (image_id, lesion_id, dx, label, path) plus what was skipped."""

    table: pd.DataFrame
    root: Path
    format: str
    metadata_file: Path
    rows: int  # rows in the metadata / ground-truth file
    missing: list[str] = field(default_factory=list)  # image ids without an image file

    def __len__(self) -> int:
        return len(self.table)


def index_images(root: Path) -> dict[str, Path]:
    """Map image stem (file name without extension) -> path for every image below ``root``."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.setdefault(path.stem, path)
    return found


def _strip_ext(image_id: str) -> str:
    image_id = str(image_id).strip()
    suffix = Path(image_id).suffix.lower()
    return image_id[: -len(suffix)] if suffix in IMAGE_EXTENSIONS else image_id


def _read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or tab-separated file (the Dataverse serves ``.tab``), sniffing the delimiter."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            head = handle.read(4096)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if not head.strip():
        raise DataError(f"{path}: the file is empty")
    sep = "\t" if head.count("\t") > head.count(",") else ","
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV/TSV ({exc.__class__.__name__}); "
                        f"check the file") from None
    table.columns = [str(c).strip().strip('"') for c in table.columns]
    return table


def _finish(table: pd.DataFrame, root: Path, fmt: str, meta: Path, strict: bool
            ) -> LabelledImages:
    rows = len(table)
    images = index_images(root)
    table = table.assign(path=[images.get(i) for i in table["image_id"]])
    missing_mask = table["path"].isna()
    missing = table.loc[missing_mask, "image_id"].tolist()
    if missing and strict:
        raise DataError(f"{meta}: {len(missing)} of {rows} rows have no image file below {root} "
                        f"(first: {missing[0]}); drop --strict to skip them")
    table = table.loc[~missing_mask].reset_index(drop=True)
    if table.empty:
        raise DataError(f"{meta}: none of the {rows} rows has an image file below {root}; "
                        f"put the images in that folder (any subfolder)")
    table["path"] = table["path"].map(str)
    table["label"] = table["dx"].map(CLASS_INDEX).astype(int)
    table = table[["image_id", "lesion_id", "dx", "label", "path"]]
    return LabelledImages(table, root, fmt, meta, rows, missing)


def find_ham10000_metadata(root: Path) -> Path:
    for name in HAM10000_METADATA_NAMES:
        if (root / name).is_file():
            return root / name
    candidates = sorted(p for p in root.glob("*metadata*") if p.is_file())
    if candidates:
        return candidates[0]
    raise DataError(f"{root}: no HAM10000_metadata.csv (or .tab) found; point --data at the "
                    f"HAM10000 folder, or use --format isic2018 for an ISIC ground-truth CSV")


def read_ham10000(root: str | Path, strict: bool = False) -> LabelledImages:
    """Read the HAM10000 layout: ``HAM10000_metadata.csv``/``.tab`` and images anywhere below."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    meta = find_ham10000_metadata(root)
    table = _read_table(meta)
    missing_cols = [c for c in HAM_REQUIRED if c not in table.columns]
    if missing_cols:
        raise DataError(f"{meta}: missing column(s) {', '.join(missing_cols)}; a HAM10000 "
                        f"metadata file needs lesion_id, image_id and dx")
    table = table.copy()
    table["dx"] = table["dx"].str.strip().str.lower()
    table["image_id"] = table["image_id"].map(_strip_ext)
    table["lesion_id"] = table["lesion_id"].str.strip()
    unknown = sorted(set(table["dx"]) - set(CLASSES))
    if unknown:
        raise DataError(f"{meta}: unknown dx value(s) {', '.join(map(repr, unknown))}; "
                        f"expected one of {', '.join(CLASSES)}")
    empty_lesion = table["lesion_id"] == ""
    table.loc[empty_lesion, "lesion_id"] = table.loc[empty_lesion, "image_id"]
    dup = table["image_id"].duplicated()
    if dup.any():
        raise DataError(f"{meta}: image_id {table.loc[dup, 'image_id'].iloc[0]!r} appears more "
                        f"than once; each image must have one row")
    return _finish(table, root, "ham10000", meta, strict)


def find_isic_ground_truth(root: Path) -> Path:
    if root.is_file():
        return root
    for path in sorted(root.glob("*.csv")):
        with open(path, encoding="utf-8-sig") as handle:
            header = handle.readline()
        cols = {c.strip().strip('"') for c in header.strip().split(",")}
        if "image" in cols and set(ISIC2018_COLUMNS) <= cols:
            return path
    raise DataError(f"{root}: no ISIC 2018 ground-truth CSV (columns image,MEL,NV,BCC,AKIEC,BKL,"
                    f"DF,VASC) found in this folder")


def read_isic2018(root: str | Path, strict: bool = False) -> LabelledImages:
    """Read the ISIC 2018 Task 3 layout: a one-hot ground-truth CSV beside a folder of images.

    ``root`` is the folder holding the CSV (or the CSV itself; images are searched below its
    folder). A ``*LesionGroupings*.csv`` (image, lesion_id) beside it supplies lesion ids;
    otherwise each image is its own lesion.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder not found")
    gt = find_isic_ground_truth(root)
    folder = gt.parent
    table = _read_table(gt)
    missing_cols = [c for c in ("image", *ISIC2018_COLUMNS) if c not in table.columns]
    if missing_cols:
        raise DataError(f"{gt}: missing column(s) {', '.join(missing_cols)}; an ISIC 2018 "
                        f"ground-truth CSV has image,MEL,NV,BCC,AKIEC,BKL,DF,VASC")
    cols = list(ISIC2018_COLUMNS)
    try:
        onehot = table[cols].astype(float)
    except ValueError:
        raise DataError(f"{gt}: class columns must be numbers (0 or 1)") from None
    sums = onehot.sum(axis=1)
    bad = (sums != 1.0) | ~onehot.isin([0.0, 1.0]).all(axis=1)
    if bad.any():
        row = int(bad.idxmax())
        raise DataError(f"{gt}: row {row + 2} ({table['image'].iloc[row]}) is not one-hot over "
                        f"{','.join(cols)}")
    out = pd.DataFrame({
        "image_id": table["image"].map(_strip_ext),
        "dx": [ISIC2018_COLUMNS[cols[i]] for i in onehot.to_numpy().argmax(axis=1)],
    })
    out["lesion_id"] = out["image_id"]
    groupings = sorted(folder.glob("*LesionGroupings*.csv"))
    if groupings:
        groups = _read_table(groupings[0])
        if {"image", "lesion_id"} <= set(groups.columns):
            lesion = dict(zip(groups["image"].map(_strip_ext), groups["lesion_id"], strict=True))
            out["lesion_id"] = [lesion.get(i, i) for i in out["image_id"]]
    return _finish(out, folder, "isic2018", gt, strict)


def read_dataset(root: str | Path, format: str = "ham10000", strict: bool = False
                 ) -> LabelledImages:
    """Read a dataset in ``format`` (``ham10000`` or ``isic2018``)."""
    if format == "ham10000":
        return read_ham10000(root, strict=strict)
    if format == "isic2018":
        return read_isic2018(root, strict=strict)
    check_choice("data.format", format, FORMATS)
    raise AssertionError(f"format {format!r} is declared but not implemented")
