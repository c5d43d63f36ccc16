"""Overlays, figures and the one-call ``explain_images`` that writes an explanations folder.

Layout written by :func:`explain_images` under ``out_dir`` (paths in ``explanations.json`` are
relative to it)::

    {method}/{image}.png      image | overlay, title: name, predicted class and probability
    grid_{method}.png         every image and its overlay for one method
    comparison.png            rows: images; columns: image, then each method
    maps.npz                  the raw maps, one (N, S, S) float32 array per method
    faithfulness.{json,md,png} deletion / insertion curves (when cfg.faithfulness)
    explanations.json         what was written: image, method, predicted class, prob, file

Figures use matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg) and never
pyplot, so nothing depends on a display or on global pyplot state.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.config import ExplainConfig
from kdskin.console import progress
from kdskin.constants import CLASSES
from kdskin.errors import DataError, ModelError
from kdskin.explain.cams import (
    GradCAM,
    ScoreCAM,
    as_image_batch,
    explainable_model,
    predict_probs_fn,
)
from kdskin.explain.cams import class_indices as resolve_classes
from kdskin.explain.faithfulness import (
    evaluate_faithfulness,
    faithfulness_table,
    plot_faithfulness,
)
from kdskin.explain.lime_explainer import LimeExplainer
from kdskin.explain.methods import CAM_METHODS, METHODS, TITLES, check_methods_for
from kdskin.io import atomic_write, atomic_write_bytes, atomic_write_text, write_json
from kdskin.models.contract import input_size, load_keras

__all__ = ["CAM_METHODS", "METHODS", "TITLES", "class_name", "explain_images", "load_model",
           "model_kind",
           "model_input_size", "overlay", "save_comparison_grid", "save_method_grid",
           "save_overlay_figure"]


# --------------------------------------------------------------------------- pixels


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
            colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heatmap (S, S) over an RGB image (S, S, 3) 0..255 -> uint8 (S, S, 3).

    The colour weight is ``alpha * heatmap`` per pixel, so cold (zero) regions show the image
    unchanged and hot regions the colormap's top colour.
    """
    from matplotlib import colormaps

    image = np.asarray(image, np.float32)
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
    if heat.shape != image.shape[:2]:
        raise DataError(f"overlay: heatmap shape {heat.shape} does not match the image "
                        f"{image.shape[:2]}")
    colour = colormaps[colormap](heat)[..., :3] * 255.0
    weight = alpha * heat[..., None]
    return np.clip(np.rint(image * (1.0 - weight) + colour * weight), 0, 255).astype(np.uint8)


def class_name(index: int, num_classes: int = len(CLASSES)) -> str:
    return CLASSES[index] if num_classes == len(CLASSES) and 0 <= index < len(CLASSES) \
        else str(index)


def _safe_names(names: Sequence[str]) -> list[str]:
    out, seen = [], set()
    for i, name in enumerate(names):
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name)).stem).strip("._") or f"img{i}"
        stem, k = base, 1
        while stem in seen:
            stem, k = f"{base}_{k}", k + 1
        seen.add(stem)
        out.append(stem)
    return out


# --------------------------------------------------------------------------- figures


def _save(fig: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _show(ax: Any, pixels: np.ndarray, title: str | None = None) -> None:
    ax.imshow(pixels, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def save_overlay_figure(path: str | Path, image: np.ndarray, heatmap: np.ndarray, title: str,
                        alpha: float = 0.4, colormap: str = "jet") -> Path:
    """One image: original | overlay, with ``title`` (class and probability) above."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 2.8))
    left, right = fig.subplots(1, 2)
    _show(left, np.asarray(image, np.uint8), "image")
    _show(right, overlay(image, heatmap, alpha, colormap), "explanation")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def save_method_grid(path: str | Path, images: np.ndarray, maps: np.ndarray,
                     titles: Sequence[str], method: str, alpha: float = 0.4,
                     colormap: str = "jet", max_cols: int = 8) -> Path:
    """All images for one method: per block of up to ``max_cols`` images, a row of originals
    (titled) above a row of overlays."""
    from matplotlib.figure import Figure

    n = len(images)
    cols = min(n, max_cols)
    blocks = -(-n // cols)
    fig = Figure(figsize=(1.7 * cols, 3.6 * blocks))
    axes = np.asarray(fig.subplots(2 * blocks, cols, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        b, c = divmod(i, cols)
        _show(axes[2 * b, c], np.asarray(images[i], np.uint8), titles[i])
        _show(axes[2 * b + 1, c], overlay(images[i], maps[i], alpha, colormap))
        axes[2 * b, c].axis("on")
        axes[2 * b + 1, c].axis("on")
    fig.suptitle(TITLES.get(method, method), fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def save_comparison_grid(path: str | Path, images: np.ndarray, maps_by_method: dict[str, Any],
                         titles: Sequence[str], alpha: float = 0.4, colormap: str = "jet"
                         ) -> Path:
    """Rows: images; columns: the image, then each method's overlay."""
    from matplotlib.figure import Figure

    methods = list(maps_by_method)
    n, cols = len(images), 1 + len(methods)
    fig = Figure(figsize=(1.9 * cols, 2.0 * n + 0.3))
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    for i in range(n):
        _show(axes[i, 0], np.asarray(images[i], np.uint8), titles[i])
        for j, method in enumerate(methods, start=1):
            _show(axes[i, j], overlay(images[i], maps_by_method[method][i], alpha, colormap),
                  TITLES.get(method, method) if i == 0 else None)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- models


def model_kind(model_or_path: Any) -> tuple[str, str]:
    """-> (kind "keras" | "tflite", label) without loading anything."""
    if not isinstance(model_or_path, str | Path):
        return "keras", getattr(model_or_path, "name", type(model_or_path).__name__)
    path = Path(model_or_path)
    if path.suffix not in (".keras", ".tflite"):
        raise ModelError(f"{path}: unknown model format {path.suffix!r}; pass a .keras or "
                         f".tflite file")
    return path.suffix[1:], str(path)


def load_model(model_or_path: Any) -> tuple[Any, str, str]:
    """-> ``(model, kind, label)``: an explainable Keras model (a distiller's student) or a
    ``TFLiteClassifier``, its kind (``"keras"`` | ``"tflite"``) and a label for messages."""
    kind, label = model_kind(model_or_path)
    if not isinstance(model_or_path, str | Path):
        return explainable_model(model_or_path), kind, label
    path = Path(model_or_path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found; pass an existing .keras or .tflite "
                         f"file")
    if kind == "tflite":
        from kdskin.export.litert import TFLiteClassifier

        return TFLiteClassifier(path), kind, label
    return explainable_model(load_keras(path)), kind, label


def model_input_size(model_or_path: Any) -> int:
    """The input size S of a model, a ``.keras`` or a ``.tflite`` file."""
    model, kind, _ = load_model(model_or_path)
    return input_size(model) if kind == "keras" else int(model.input_size)


def _titles(names: Sequence[str], probs: np.ndarray, predicted: np.ndarray,
            explained: np.ndarray, labels: Sequence[int] | None) -> list[str]:
    """Each image's figure title: its name, the predicted class and probability, the true
    class when known, and the explained class when it is not the predicted one."""
    num_classes = probs.shape[1]
    titles = []
    for i, name in enumerate(names):
        title = f"{name}\n{class_name(predicted[i], num_classes)} ({probs[i, predicted[i]]:.2f})"
        if labels is not None:
            title += f", true {class_name(int(labels[i]), num_classes)}"
        if explained[i] != predicted[i]:
            title += f"\nmap for {class_name(explained[i], num_classes)}"
        titles.append(title)
    return titles


def explain_images(model_or_path: Any, images: Any, names: Sequence[str],
                   methods: Sequence[str], out_dir: str | Path, cfg: ExplainConfig | None = None,
                   class_index: Any = None, labels: Sequence[int] | None = None
                   ) -> dict[str, Any]:
    """Explain ``images`` (N, S, S, 3) uint8 with each method and write the folder above.

    ``model_or_path``: an in-memory kdskin model (a distiller is explained through its
    student), a ``.keras`` path, or a ``.tflite`` path (LIME only: Grad-CAM / Score-CAM on a
    ``.tflite`` raise :class:`ModelError` before any work). ``class_index`` None explains the
    predicted class of each image; ``labels`` (N,) optional true classes shown in the titles.
    Returns the ``explanations.json`` content (plus ``"out_dir"``).
    """
    cfg = cfg or ExplainConfig()
    kind, label = model_kind(model_or_path)
    methods = check_methods_for(methods, kind, label, key="methods")
    model, kind, label = load_model(model_or_path)
    size = input_size(model) if kind == "keras" else model.input_size
    batch, _ = as_image_batch(images, size)
    batch = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
    n = len(batch)
    if len(names) != n:
        raise DataError(f"explain: got {len(names)} names for {n} images")
    if labels is not None and len(labels) != n:
        raise DataError(f"explain: got {len(labels)} labels for {n} images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    predict_fn = predict_probs_fn(model) if kind == "keras" else model.predict
    probs = np.asarray(predict_fn(batch), np.float32)
    num_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    explained = resolve_classes(class_index, predicted, num_classes)
    layers = tuple(cfg.cam_layers) or None

    maps: dict[str, np.ndarray] = {}
    for method in progress(methods, total=len(methods), desc="explaining", unit="method"):
        if method == "gradcam":
            explainer: Any = GradCAM(model, layer=layers)
        elif method == "scorecam":
            explainer = ScoreCAM(model, layer=layers, max_n=cfg.scorecam_max_n)
        else:
            explainer = LimeExplainer(predict_fn, num_samples=cfg.lime_samples,
                                      num_segments=cfg.lime_segments, seed=cfg.seed)
        maps[method] = np.asarray(explainer(batch, class_index=explained), np.float32)

    stems = _safe_names(names)
    titles = _titles(names, probs, predicted, explained, labels)

    entries = []
    steps = [(method, i) for method in methods for i in range(n)]
    for method, i in progress(steps, total=len(steps), desc="writing overlays", unit="image"):
        rel = f"{method}/{stems[i]}.png"
        save_overlay_figure(out_dir / rel, batch[i], maps[method][i],
                            f"{TITLES[method]}: {titles[i].replace(chr(10), ' | ')}",
                            cfg.overlay_alpha, cfg.colormap)
        entries.append({
            "image": str(names[i]), "method": method,
            "predicted_class": class_name(predicted[i], num_classes),
            "predicted_index": int(predicted[i]), "prob": float(probs[i, predicted[i]]),
            "explained_class": class_name(explained[i], num_classes),
            "explained_index": int(explained[i]),
            "true_class": None if labels is None else class_name(int(labels[i]), num_classes),
            "file": rel,
        })
    grids = {}
    shown = max(1, int(cfg.grid_images))  # figures stay readable; every image has its overlay
    for method in methods:
        rel = f"grid_{method}.png"
        save_method_grid(out_dir / rel, batch[:shown], maps[method][:shown], titles[:shown],
                         method, cfg.overlay_alpha, cfg.colormap)
        grids[method] = rel
    save_comparison_grid(out_dir / "comparison.png", batch[:shown],
                         {m: v[:shown] for m, v in maps.items()}, titles[:shown],
                         cfg.overlay_alpha, cfg.colormap)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **maps)
    atomic_write_bytes(out_dir / "maps.npz", buffer.getvalue())

    manifest: dict[str, Any] = {
        "model": label, "model_format": kind, "methods": methods, "n_images": n,
        "image_size": int(size), "entries": entries, "grids": grids,
        "comparison": "comparison.png", "maps": "maps.npz",
    }
    if cfg.faithfulness:
        result = evaluate_faithfulness(predict_fn, batch, maps, explained,
                                       steps=cfg.faithfulness_steps, seed=cfg.seed)
        write_json(out_dir / "faithfulness.json", result)
        atomic_write_text(out_dir / "faithfulness.md", faithfulness_table(result))
        plot_faithfulness(result, out_dir / "faithfulness.png")
        manifest["faithfulness"] = {
            "json": "faithfulness.json", "table": "faithfulness.md", "plot": "faithfulness.png",
            "summary": {m: {k: r[k] for k in ("deletion_auc", "insertion_auc", "verdict")}
                        for m, r in result["methods"].items()}}
    write_json(out_dir / "explanations.json", manifest)
    return {**manifest, "out_dir": str(out_dir)}
