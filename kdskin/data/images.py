"""Reading any image file as RGB uint8 at the model's size: one resize for training, evaluation
and deployment (``tflite/classify.py`` carries a copy of :func:`to_rgb_array` that must match).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from kdskin.console import progress as progress_bar
from kdskin.constants import IMAGE_EXTENSIONS
from kdskin.errors import DataError

# Truncated files must fail loudly, not be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Resampling filter used everywhere an image is resized to the model's input.
RESAMPLE = Image.Resampling.BILINEAR


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


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Read one image file as ``(size, size, 3)`` uint8 RGB; :class:`DataError` if unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_array(image, size)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc}); "
                        f"replace or remove the file") from None


def load_images(paths: Sequence[str | Path], size: int, workers: int = 4,
                progress: bool = False) -> tuple[np.ndarray, list[int], list[str]]:
    """Read many images. Returns ``(images (N, size, size, 3) uint8, kept indices, errors)``.

    Unreadable files are skipped and reported in ``errors`` (one line each, naming the file).
    ``progress``: a tqdm bar on stderr (shown only when stderr is a terminal).
    """
    def one(i_path: tuple[int, str | Path]) -> tuple[int, np.ndarray | None, str | None]:
        i, path = i_path
        try:
            return i, load_image(path, size), None
        except DataError as exc:
            return i, None, str(exc)

    images: list[np.ndarray] = []
    kept: list[int] = []
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results: Iterable = pool.map(one, enumerate(paths))
        if progress:
            results = progress_bar(results, total=len(paths), desc="decoding images",
                                   unit="image")
        for i, arr, err in results:
            if arr is None:
                errors.append(err or f"{paths[i]}: unreadable")
            else:
                images.append(arr)
                kept.append(i)
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return stacked, kept, errors


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named in ``inputs`` (files, or folders searched recursively), in order.

    Raises :class:`DataError` naming the path for a missing path or a folder with no images.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this "
                                f"folder")
            found += files
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path}: no such image file or folder")
    return found
