"""Deletion / insertion faithfulness of saliency maps (Petsiuk et al., RISE, 2018).

Deletion: starting from the image, replace the most salient pixels first with a baseline
(a blurred copy of the image, or its mean colour) and track the class probability; a faithful
map makes it fall fast (low area under the curve). Insertion: start from the baseline and
reveal the most salient pixels first; a faithful map makes the probability rise fast (high area).
Every method is compared with a seeded random saliency map on the same model and images: a
method whose deletion area is not below random's (minus a margin), or whose insertion area is
not above random's (plus the margin), is reported as no better than random on that curve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from kdskin.errors import DataError
from kdskin.explain.cams import as_image_batch
from kdskin.explain.cams import class_indices as resolve_classes
from kdskin.io import atomic_write

PredictFn = Callable[[np.ndarray], np.ndarray]
BASELINES = ("blur", "mean")
RANDOM = "random"


def baseline_image(image: np.ndarray, kind: str = "blur") -> np.ndarray:
    """(S, S, 3) float -> the "pixels removed" image: a strong Gaussian blur (sigma S/8) or the
    per-channel mean colour."""
    if kind == "mean":
        return np.broadcast_to(image.mean(axis=(0, 1), keepdims=True), image.shape).copy()
    if kind == "blur":
        sigma = max(1.0, image.shape[0] / 8.0)
        return gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")
    raise DataError(f"faithfulness baseline must be one of {', '.join(BASELINES)}, got {kind!r}")


def saliency_order(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, most salient first; ties (e.g. a constant map) in random order."""
    flat = np.asarray(saliency, np.float64).reshape(-1)
    return np.lexsort((rng.random(flat.size), -np.nan_to_num(flat)))


def curves(predict_fn: PredictFn, image: np.ndarray, saliency: np.ndarray, class_index: int,
           steps: int = 20, baseline: str = "blur", rng: np.random.Generator | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves ``(steps + 1,)`` of one image (probability of the class
    after removing / revealing the top ``k / steps`` fraction of pixels, k = 0..steps)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    size = image.shape[0] * image.shape[1]
    order = saliency_order(saliency, rng)
    base = baseline_image(image, baseline)
    counts = np.round(np.linspace(0.0, 1.0, steps + 1) * size).astype(int)
    rank = np.empty(size, np.int64)
    rank[order] = np.arange(size)
    top = (rank[None, :] < counts[:, None]).reshape(len(counts), *image.shape[:2], 1)
    deleted = np.where(top, base[None], image[None])
    inserted = np.where(top, image[None], base[None])
    batch = np.clip(np.rint(np.concatenate([deleted, inserted])), 0, 255).astype(np.uint8)
    probs = np.asarray(predict_fn(batch), np.float64)[:, class_index]
    return probs[:len(counts)], probs[len(counts):]


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at fractions 0..1 (trapezoid rule)."""
    curve = np.asarray(curve, np.float64)
    return float(np.trapezoid(curve, np.linspace(0.0, 1.0, len(curve))))


def _verdict(deletion: float, insertion: float, random: Mapping[str, float], margin: float
             ) -> str:
    del_ok = deletion < random["deletion_auc"] - margin
    ins_ok = insertion > random["insertion_auc"] + margin
    if del_ok and ins_ok:
        return "better than random"
    if del_ok:
        return "no better than random on insertion"
    if ins_ok:
        return "no better than random on deletion"
    return "no better than random"


def evaluate_faithfulness(predict_fn: PredictFn, images: Any,
                          maps_by_method: Mapping[str, Any],
                          class_indices: Sequence[int] | np.ndarray | None = None,
                          steps: int = 20, seed: int = 0, baseline: str = "blur",
                          margin: float = 0.02) -> dict[str, Any]:
    """Mean deletion / insertion curves and areas per method, plus a random-saliency baseline.

    ``images`` (N, S, S, 3) 0..255; ``maps_by_method`` ``{method: (N, S, S) saliency}``;
    ``class_indices`` (N,) the class whose probability is tracked (None: the predicted one);
    ``predict_fn`` uint8 images -> probabilities (N, C). Returns a JSON-serialisable dict:
    ``{"steps", "baseline", "margin", "fractions", "n_images", "class_indices",
    "methods": {name: {"deletion_auc", "insertion_auc", "deletion_auc_std",
    "insertion_auc_std", "deletion_curve", "insertion_curve", "per_image": {...},
    "verdict"}}}``; ``methods`` includes ``"random"`` (seeded uniform noise maps).
    """
    batch, _ = as_image_batch(images, None)
    n = len(batch)
    if steps < 1:
        raise DataError(f"faithfulness steps must be at least 1, got {steps}")
    if not maps_by_method:
        raise DataError("faithfulness: no saliency maps given; pass {method: (N, S, S) maps}")
    if RANDOM in maps_by_method:
        raise DataError(f"faithfulness: {RANDOM!r} is the built-in baseline; rename that method")
    maps = {}
    for name, method_maps in maps_by_method.items():
        arr = np.asarray(method_maps, np.float32)
        if arr.shape != batch.shape[:3]:
            raise DataError(f"faithfulness: {name} maps have shape {arr.shape}, expected "
                            f"{batch.shape[:3]} (one map per image, image-sized)")
        maps[name] = arr
    probs = np.asarray(predict_fn(np.clip(np.rint(batch), 0, 255).astype(np.uint8)))
    cls = resolve_classes(class_indices, probs.argmax(axis=1), probs.shape[1])
    maps[RANDOM] = np.random.default_rng(seed).random(batch.shape[:3]).astype(np.float32)

    fractions = np.linspace(0.0, 1.0, steps + 1)
    methods: dict[str, dict[str, Any]] = {}
    for name, method_maps in maps.items():
        rng = np.random.default_rng(seed)  # the same tie-breaking for every method
        dels, inss = [], []
        for i in range(n):
            d, ins = curves(predict_fn, batch[i], method_maps[i], int(cls[i]), steps, baseline,
                            rng)
            dels.append(d)
            inss.append(ins)
        dels, inss = np.asarray(dels), np.asarray(inss)
        del_auc = [auc(c) for c in dels]
        ins_auc = [auc(c) for c in inss]
        methods[name] = {
            "deletion_auc": float(np.mean(del_auc)),
            "insertion_auc": float(np.mean(ins_auc)),
            "deletion_auc_std": float(np.std(del_auc)),
            "insertion_auc_std": float(np.std(ins_auc)),
            "deletion_curve": dels.mean(axis=0).tolist(),
            "insertion_curve": inss.mean(axis=0).tolist(),
            "per_image": {"deletion_auc": del_auc, "insertion_auc": ins_auc},
        }
    for name, row in methods.items():
        row["verdict"] = "reference" if name == RANDOM else _verdict(
            row["deletion_auc"], row["insertion_auc"], methods[RANDOM], margin)
    return {"steps": int(steps), "baseline": baseline, "margin": float(margin),
            "seed": int(seed), "fractions": fractions.tolist(), "n_images": int(n),
            "class_indices": cls.tolist(), "methods": methods}


def faithfulness_table(result: Mapping[str, Any]) -> str:
    """Markdown table: method, deletion AUC (lower is better), insertion AUC (higher is
    better), verdict against the random baseline."""
    lines = [f"Faithfulness on {result['n_images']} images ({result['steps']} steps, "
             f"{result['baseline']} baseline, margin {result['margin']:.2f}):", "",
             "| method | deletion AUC (lower better) | insertion AUC (higher better) | verdict |",
             "|---|---|---|---|"]
    for name, row in result["methods"].items():
        lines.append(f"| {name} | {row['deletion_auc']:.3f} +/- {row['deletion_auc_std']:.3f} "
                     f"| {row['insertion_auc']:.3f} +/- {row['insertion_auc_std']:.3f} "
                     f"| {row['verdict']} |")
    return "\n".join(lines) + "\n"


def plot_faithfulness(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write the mean deletion and insertion curves of every method as one PNG (atomically)."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, no global state

    fig = Figure(figsize=(9, 3.6))
    fractions = result["fractions"]
    for ax, kind in zip(fig.subplots(1, 2), ("deletion", "insertion"), strict=True):
        for name, row in result["methods"].items():
            style = dict(color="0.4", linestyle="--") if name == RANDOM else {}
            ax.plot(fractions, row[f"{kind}_curve"], label=f"{name} ({row[f'{kind}_auc']:.3f})",
                    **style)
        better = "lower" if kind == "deletion" else "higher"
        ax.set_title(f"{kind} (AUC, {better} is better)")
        ax.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'revealed'}")
        ax.set_ylabel("probability of the class")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
