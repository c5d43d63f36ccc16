#!/usr/bin/env python3
"""Classify skin-lesion images with a kdskin ``.tflite`` model, on a phone-class Linux board.

    python classify.py --model model_int8.tflite [--labels labels.txt] [--top 3] IMAGE...

Needs only a TFLite runtime, NumPy and Pillow (no TensorFlow, no kdskin):
``pip install ai-edge-litert pillow`` or, where ai-edge-litert has no wheel,
``pip install tflite-runtime "numpy<2" pillow``.

Input contract: RGB, resized to the model's input size with the same code as training
(:func:`to_rgb_array`, a verbatim copy of ``kdskin.data.images.to_rgb_array``), pixel values
0..255, quantized with the input tensor's own scale / zero point (uint8 for the int8 model,
float32 otherwise) by :func:`quantize` (with :func:`quant_params` and :func:`dequantize`, verbatim
copies of ``kdskin.export.litert``'s). ``tests/test_tflite_runtime.py`` checks that the copies
give identical output. Output: 7 class probabilities in ``labels.txt`` order.

Decision rules: when ``decision.json`` (written by kdskin beside the files) is found, each image
also gets the referral decision (refer when P(mel)+P(bcc)+P(akiec) reaches the threshold fitted
on validation for 90% sensitivity) and an out-of-scope warning from the image's statistics
(:func:`image_features` / :func:`image_score`, verbatim copies of ``kdskin.trust.image_stats``'s).
The exported probabilities are already calibrated (the temperature, and the melanoma offset of
the top-1 class when the run fitted one, are folded into the file).
Research and education only: not a medical device, not for diagnosis.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Same filter as kdskin.data.images.RESAMPLE (Image.Resampling exists from Pillow 9.1).
RESAMPLE = getattr(Image, "Resampling", Image).BILINEAR
#: Used only when no labels.txt is found beside the model (kdskin.constants.CLASSES).
DEFAULT_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
OUTPUT_NAME = "probs"


class UsageError(Exception):
    """A bad argument or file: printed as one line, exit status 2."""


# ---------------------------------------------------------------- copy of kdskin.data.images


def to_rgb_array(image: Image.Image, size: int) -> np.ndarray:
    """Convert a PIL image of any mode to RGB and resize it to ``(size, size, 3)`` uint8.

    EXIF orientation is applied; transparent pixels are composited on black (RGBA/LA/P);
    CMYK, grayscale and 16-bit images are converted by Pillow.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        hi = arr.max() or 1.0
        image = Image.fromarray((arr / hi * 255).astype(np.uint8))
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLE)
    return np.asarray(image, dtype=np.uint8)


def load_image(path: Path, size: int) -> np.ndarray:
    if not path.is_file():
        raise UsageError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_array(image, size)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UsageError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


# ---------------------------------------------------------------- runtime


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    raise UsageError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime "
                     "'numpy<2' on boards without an ai-edge-litert wheel)")


# ---------------------------------------------------------------- copy of kdskin.export.litert


def quant_params(details: Mapping[str, Any]) -> tuple[float, int]:
    """``(scale, zero_point)`` of a tensor from its interpreter details ((0.0, 0): float)."""
    params = details.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64).reshape(-1)
    zeros = np.asarray(params.get("zero_points", []), dtype=np.int64).reshape(-1)
    if scales.size:
        return float(scales[0]), int(zeros[0]) if zeros.size else 0
    scale, zero = details.get("quantization", (0.0, 0))
    return float(scale), int(zero)


def quantize(pixels: np.ndarray, dtype: Any, scale: float, zero: int) -> np.ndarray:
    """Pixels 0..255 (any shape) -> ``dtype`` values: ``round(x / scale + zero)``, clipped.

    A float32 ``dtype`` takes the pixels as they are; scale 0 means unquantized (1, 0).
    """
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return np.asarray(pixels).astype(np.float32, copy=False)
    scale, zero = (scale, zero) if scale else (1.0, 0)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(pixels).astype(np.float32) / scale + zero)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(raw: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """Raw output values -> float32: ``(q - zero) * scale`` (float32 input unchanged)."""
    raw = np.asarray(raw)
    if raw.dtype == np.float32:
        return raw
    return (raw.astype(np.float32) - zero) * np.float32(scale if scale else 1.0)


# ---------------------------------------------------------------- the model


class Model:
    """A kdskin .tflite classifier: input and output found by signature name, never by index."""

    def __init__(self, path: Path, num_threads: int | None = None):
        if not path.is_file():
            raise UsageError(f"{path}: model file not found")
        try:
            self.interp = interpreter_class()(model_path=str(path), num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            why = " ".join(str(exc).split())
            raise UsageError(f"{path}: cannot load this .tflite model ({why}); an op version "
                             f"error means the runtime is older than the converter") from None
        signatures = self.interp.get_signature_list()
        if signatures:
            key = "serving_default" if "serving_default" in signatures else list(signatures)[0]
            runner = self.interp.get_signature_runner(key)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            del runner  # it holds the interpreter's internals; resizing refuses while it lives
        else:
            ins = {d["name"]: d for d in self.interp.get_input_details()}
            outs = {d["name"]: d for d in self.interp.get_output_details()}
        if len(ins) != 1 or (OUTPUT_NAME not in outs and len(outs) != 1):
            raise UsageError(f"{path}: expected one image input and a '{OUTPUT_NAME}' output; "
                             f"not a kdskin classifier")
        self.inp = list(ins.values())[0]
        self.out = outs.get(OUTPUT_NAME) or list(outs.values())[0]
        shape = list(self.inp["shape"])
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise UsageError(f"{path}: input shape {shape} is not (batch, S, S, 3)")
        self.size = int(shape[1])
        self.num_classes = int(self.out["shape"][-1])
        self.interp.resize_tensor_input(self.inp["index"], [1, self.size, self.size, 3])
        self.interp.allocate_tensors()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """One (S, S, 3) uint8 RGB image -> (num_classes,) float32 probabilities."""
        x = quantize(image, self.inp["dtype"], *quant_params(self.inp))
        self.interp.set_tensor(self.inp["index"], x[None])
        self.interp.invoke()
        y = self.interp.get_tensor(self.out["index"]).reshape(-1)
        return dequantize(y, *quant_params(self.out)).astype(np.float32)


# ---------------------------------------------------------------- copy of kdskin.trust.image_stats


def image_features(images: Any) -> np.ndarray:
    """``(N, 13)`` statistics of uint8 RGB images ``(N, S, S, 3)`` (see :data:`FEATURES`)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] < 4 or x.shape[2] < 4:
        raise UsageError(f"images must be (N, S, S, 3) RGB, got shape {x.shape}")
    x = x.astype(np.float64) / 255.0
    n = x.shape[0]
    flat = x.reshape(n, -1, 3)
    mean, std = flat.mean(axis=1), flat.std(axis=1)
    hi, lo = x.max(axis=-1), x.min(axis=-1)
    sat = (hi - lo) / np.maximum(hi, 1e-6)
    gray = x @ np.array([0.299, 0.587, 0.114])
    gx, gy = np.diff(gray, axis=2), np.diff(gray, axis=1)
    gradient = 0.5 * (np.abs(gx).mean(axis=(1, 2)) + np.abs(gy).mean(axis=(1, 2)))
    lap = (4 * gray[:, 1:-1, 1:-1] - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1]
           - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:])
    h, w = gray.shape[1:]
    centre = gray[:, h // 4: h - h // 4, w // 4: w - w // 4].mean(axis=(1, 2))
    border = (gray.sum(axis=(1, 2)) - centre * (h - 2 * (h // 4)) * (w - 2 * (w // 4))) / max(
        h * w - (h - 2 * (h // 4)) * (w - 2 * (w // 4)), 1)
    return np.column_stack([
        mean, std, sat.mean(axis=(1, 2)), sat.std(axis=(1, 2)),
        np.log(gradient + 1e-4), np.log(lap.var(axis=(1, 2)) + 1e-6),
        (gray > 0.98).mean(axis=(1, 2)), (gray < 0.02).mean(axis=(1, 2)), centre - border])


def image_score(features: Any, params: dict[str, Any]) -> np.ndarray:
    """Minus the squared Mahalanobis distance ``(N,)`` of ``features`` ``(N, F)`` to the fitted
    Gaussian (higher = more like the training images)."""
    f = np.asarray(features, dtype=np.float64)
    mean = np.asarray(params["mean"], dtype=np.float64)
    precision = np.asarray(params["precision"], dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != mean.size or precision.shape != (mean.size, mean.size):
        raise UsageError(f"features {f.shape} do not match the fitted check ({mean.size} "
                        f"statistics); refit it")
    d = f - mean
    return -np.einsum("ni,ij,nj->n", d, precision, d)


# ---------------------------------------------------------------- decision rules


def read_rules(model_path: Path) -> dict[str, Any] | None:
    """``decision.json`` beside the model (None when there is none)."""
    path = model_path.with_name("decision.json")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UsageError(f"{path}: not a kdskin decision file; re-export the model") from None


def decide(rules: dict[str, Any], names: list[str], probs: np.ndarray, image: np.ndarray
           ) -> dict[str, Any]:
    """Referral and out-of-scope decisions for one image (probabilities ``(7,)``, the model's
    input ``(S, S, 3)`` uint8), as ``kdskin predict --json`` reports them."""
    malignant = float(sum(probs[names.index(c)] for c in rules["malignant_classes"]))
    threshold = rules.get("referral_threshold")
    out: dict[str, Any] = {"malignant_probability": malignant,
                           "refer": None if threshold is None else malignant >= threshold,
                           "referral_threshold": threshold, "out_of_scope": None}
    if rules.get("ood_score") == "image_stats" and rules.get("ood_params"):
        score = float(image_score(image_features(image[None]), rules["ood_params"])[0])
        out["in_scope_score"] = score
        out["out_of_scope"] = score < rules["ood_threshold"]
    elif rules.get("ood_score") == "max_softmax" and rules.get("ood_threshold") is not None:
        out["out_of_scope"] = float(probs.max()) < rules["ood_threshold"]
    return out


def read_labels(model_path: Path, labels: str | None, num_classes: int) -> list[str]:
    path = Path(labels) if labels else model_path.with_name("labels.txt")
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif labels:
        raise UsageError(f"{path}: labels file not found")
    else:
        print(f"note: no {path.name} beside the model; using the built-in HAM10000 class order",
              file=sys.stderr)
        names = list(DEFAULT_CLASSES)
    if len(names) != num_classes:
        raise UsageError(f"{path}: {len(names)} labels but the model has {num_classes} outputs")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with a kdskin .tflite model.")
    parser.add_argument("--model", required=True, help="path to a kdskin .tflite file")
    parser.add_argument("--labels", help="labels.txt (default: the one beside the model)")
    parser.add_argument("--top", type=int, default=3, help="classes to print per image")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    args = parser.parse_args(argv)
    try:
        if args.top < 1:
            raise UsageError(f"--top must be at least 1, got {args.top}")
        model_path = Path(args.model)
        model = Model(model_path, args.threads)
        names = read_labels(model_path, args.labels, model.num_classes)
        rules = read_rules(model_path)
        for image_path in args.images:
            pixels = load_image(Path(image_path), model.size)
            probs = model.predict(pixels)
            order = np.argsort(-probs, kind="stable")[: args.top]
            line = f"{image_path}: " + ", ".join(f"{names[k]} {probs[k]:.3f}" for k in order)
            if rules is not None:
                d = decide(rules, names, probs, pixels)
                if d["refer"] is not None:
                    line += (f" | {'REFER' if d['refer'] else 'no referral'} (malignant "
                             f"probability {d['malignant_probability']:.3f}, threshold "
                             f"{d['referral_threshold']:.3f})")
                if d["out_of_scope"]:
                    line += (" | WARNING: outside what the model was trained on; the classes "
                             "above are unreliable")
            print(line)
        if rules is not None:
            print("(Research and education only: not a medical device, not for diagnosis.)")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
