"""Splitting into train/val/test.

``lesion_grouped`` (the default and the honest protocol): every lesion (``lesion_id``) lands in
exactly one split, and each class is spread over the splits in the requested fractions.

``paper`` (LEAKY, for reproduction only): the published code oversamples every class by
augmentation to the same count and only then splits at random, so augmented copies of one image
(and other images of the same lesion) end up in train and test. Rows get a ``copy`` index; copy 0
is the original image, copies > 0 are augmented deterministically by the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from kdskin.constants import CLASSES, SPLIT_COLUMNS, SPLITS
from kdskin.data.specs import PROTOCOLS, check_choice, check_split_fractions
from kdskin.errors import DataError

LEAKY_LABEL = "paper protocol (LEAKY: augmented before splitting, lesions shared across splits)"
HONEST_LABEL = "lesion-grouped (no lesion in two splits)"


def protocol_label(protocol: str) -> str:
    return LEAKY_LABEL if protocol == "paper" else HONEST_LABEL


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    return np.asarray(check_split_fractions(fractions), dtype=float)


def lesion_grouped_split(table: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                         seed: int = 42) -> pd.DataFrame:
    """Assign each lesion to train/val/test, stratified by class, grouped by ``lesion_id``.

    Per class, lesions are shuffled (seeded); when a class has at least as many lesions as there
    are non-empty splits, each split first gets one lesion (test, then val, then train), then every
    further lesion goes to the split furthest below its target image count. Returns ``table``'s
    ``image_id, lesion_id, dx`` plus ``split``.
    """
    f = _check_fractions(fractions)
    if table.empty:
        raise DataError("nothing to split: the dataset has no images")
    rng = np.random.default_rng(seed)
    lesion_dx = table.groupby("lesion_id")["dx"].agg(lambda s: s.value_counts().index[0])
    lesion_size = table.groupby("lesion_id").size()
    assignment: dict[str, str] = {}
    active = [i for i in (2, 1, 0) if f[i] > 0]  # seed test, val, train first
    for dx in CLASSES:
        lesions = np.array(sorted(lesion_dx.index[lesion_dx == dx]))
        if len(lesions) == 0:
            continue
        lesions = lesions[rng.permutation(len(lesions))]
        total = lesion_size[lesions].sum()
        counts = np.zeros(3)
        order = list(lesions)
        if len(order) >= len(active):
            for split_idx in active:
                lesion = order.pop(0)
                assignment[lesion] = SPLITS[split_idx]
                counts[split_idx] += lesion_size[lesion]
        for lesion in order:
            deficit = f * total - counts
            deficit[f == 0] = -np.inf
            split_idx = int(np.argmax(deficit))
            assignment[lesion] = SPLITS[split_idx]
            counts[split_idx] += lesion_size[lesion]
    out = table[["image_id", "lesion_id", "dx"]].copy()
    out["split"] = out["lesion_id"].map(assignment)
    return out.reset_index(drop=True)


def paper_split(table: pd.DataFrame, per_class: int, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                seed: int = 42) -> pd.DataFrame:
    """LEAKY reproduction of the published protocol: balance every class to ``per_class`` rows by
    repeating images as augmented copies (or subsampling a larger class), then split at random,
    stratified by class only. Returns ``image_id, lesion_id, dx, split, copy``.
    """
    f = _check_fractions(fractions)
    if per_class < 1:
        raise DataError(f"paper protocol: per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    parts = []
    for dx in CLASSES:
        rows = table[table["dx"] == dx]
        if rows.empty:
            continue
        if len(rows) >= per_class:
            idx = np.sort(rng.choice(len(rows), per_class, replace=False))
            copies = np.zeros(per_class, dtype=int)
        else:
            idx = np.arange(per_class) % len(rows)
            copies = np.arange(per_class) // len(rows)
        part = rows.iloc[idx][["image_id", "lesion_id", "dx"]].copy()
        part["copy"] = copies
        # random split within the class (stratified by class, NOT grouped: the leak)
        perm = rng.permutation(len(part))
        n_train = int(round(f[0] * len(part)))
        n_val = int(round(f[1] * len(part)))
        split = np.empty(len(part), dtype=object)
        split[perm[:n_train]] = "train"
        split[perm[n_train:n_train + n_val]] = "val"
        split[perm[n_train + n_val:]] = "test"
        part["split"] = split
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    return out[[*SPLIT_COLUMNS, "copy"]]


def make_split(table: pd.DataFrame, protocol: str = "lesion_grouped",
               fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42,
               per_class: int = 600) -> pd.DataFrame:
    """The split for ``protocol`` (``lesion_grouped`` or the leaky ``paper``)."""
    if protocol == "lesion_grouped":
        return lesion_grouped_split(table, fractions, seed)
    if protocol == "paper":
        return paper_split(table, per_class, fractions, seed)
    check_choice("data.protocol", protocol, PROTOCOLS)
    raise AssertionError(f"protocol {protocol!r} is declared but not implemented")


def read_split(path) -> pd.DataFrame:
    """Read a split CSV written by :func:`write_split`, checking its columns and values."""
    try:
        split = pd.read_csv(path, dtype={"image_id": str, "lesion_id": str, "dx": str})
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found; create it with `kdskin data split`"
                        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        raise DataError(f"{path}: not a readable split CSV") from None
    missing = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                        f"{','.join(SPLIT_COLUMNS)}")
    bad = sorted(set(split["split"]) - set(SPLITS))
    if bad:
        raise DataError(f"{path}: unknown split value(s) {bad}; expected train, val or test")
    if "copy" not in split.columns:
        split["copy"] = 0
    return split


def write_split(split: pd.DataFrame, path) -> None:
    """Write the split CSV atomically (temp file, then rename)."""
    from kdskin.io import atomic_write_text

    atomic_write_text(path, split.to_csv(index=False))


def lesions_in_several_splits(split: pd.DataFrame) -> list[str]:
    """Lesion ids that appear in more than one split (empty for an honest split)."""
    n = split.groupby("lesion_id")["split"].nunique()
    return sorted(n.index[n > 1])


def lesion_folds(image_ids: Sequence[str], labels: np.ndarray, lesion_ids: Sequence[str],
                 folds: int, seed: int = 0) -> np.ndarray:
    """``(N,)`` fold index 0..folds-1 of each image: lesion-grouped (every image of a lesion in
    one fold), stratified by class (scikit-learn's ``StratifiedGroupKFold``, shuffled by
    ``seed``). :class:`DataError` when a fold would be empty."""
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(image_ids)
    if folds < 2 or len(set(lesion_ids)) < folds:
        raise DataError(f"{folds} lesion-grouped folds need at least {folds} lesions in the "
                        f"training split, it has {len(set(lesion_ids))}")
    out = np.full(n, -1, np.int64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(splitter.split(np.zeros(n), labels, groups=lesion_ids)):
        out[held] = f
    return out
