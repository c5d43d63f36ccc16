"""Choosing a few images per class (explanations, TensorBoard summaries): pure NumPy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdskin.errors import DataError


def pick_images_per_class(labels: Sequence[int] | np.ndarray, per_class: int = 1,
                          seed: int = 0) -> np.ndarray:
    """Indices of up to ``per_class`` items of every class present in ``labels`` (N,), chosen
    with ``seed``, ordered by class then index."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if per_class < 1:
        raise DataError(f"per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked.append(np.sort(rng.choice(members, size=min(per_class, len(members)),
                                         replace=False)))
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def pick_stratified(labels: Sequence[int] | np.ndarray, n: int, num_classes: int,
                    seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices, about ``n / num_classes`` per class, in round-robin class order.

    The first indices cover every class present (so a figure of the first few images shows each
    class); within a round, classes come in label order. ``labels`` (N,) -> indices (<= n,).
    """
    if n < 1:
        raise DataError(f"n must be at least 1, got {n}")
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    idx = pick_images_per_class(labels, per_class=max(1, -(-n // num_classes)), seed=seed)
    rank = np.zeros(len(idx), int)
    for c in np.unique(labels[idx]):
        members = np.flatnonzero(labels[idx] == c)
        rank[members] = np.arange(len(members))
    return idx[np.lexsort((labels[idx], rank))][:n]
