"""Checking and decoding an uploaded image, in memory, with one-line errors and HTTP statuses.

Every refusal is an :class:`UploadError` (a :class:`~kdskin.errors.DataError`) carrying the HTTP
status the API answers with:

* 400: empty, not an image, or truncated/corrupt;
* 413: more bytes than the upload limit, or more pixels than the pixel limit (a decompression
  bomb is refused from its header, before any pixel is decoded);
* 415: a pixel mode kdskin does not convert to RGB (32-bit float, LAB, HSV, ...).

CMYK, grayscale, palette, transparent (composited on black) and 16-bit images are converted
exactly as :func:`kdskin.data.images.to_rgb_array` converts them for training and evaluation.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from kdskin.data.images import to_rgb_array
from kdskin.errors import DataError

#: Default upload limit in MiB (``kdskin serve --max-upload-mb``).
DEFAULT_MAX_UPLOAD_MB = 20.0
#: Default pixel limit (width x height) against decompression bombs (``--max-pixels``).
DEFAULT_MAX_PIXELS = 40_000_000
#: Pixel modes converted to RGB (the rest are refused with 415).
CONVERTIBLE_MODES: frozenset[str] = frozenset({
    "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
    "I", "I;16", "I;16B", "I;16L", "I;16N"})


class UploadError(DataError):
    """An upload the server refuses; ``status`` is the HTTP status of the JSON answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def max_upload_bytes(max_upload_mb: float) -> int:
    """The upload limit in bytes (MiB -> bytes); :class:`DataError` unless positive."""
    if not max_upload_mb > 0:
        raise DataError(f"--max-upload-mb {max_upload_mb}: must be a positive number of MiB")
    return int(max_upload_mb * 1024 * 1024)


def decode_upload(data: bytes, name: str, size: int, max_bytes: int,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An uploaded file's bytes -> RGB ``(size, size, 3)`` uint8 at the model's input size.

    Raises :class:`UploadError` (400, 413 or 415) naming ``name`` and what to do.
    """
    if not data:
        raise UploadError(f"{name}: the file is empty; choose an image file (JPEG, PNG, ...)")
    if len(data) > max_bytes:
        raise UploadError(f"{name}: {len(data) / 2**20:.1f} MiB is more than the upload limit "
                          f"of {max_bytes / 2**20:.1f} MiB; send a smaller image", 413)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UploadError(f"{name}: {width} x {height} = {width * height:,} pixels "
                                      f"is more than the limit of {max_pixels:,}; send a "
                                      f"smaller image", 413)
                mode = image.mode
                if mode not in CONVERTIBLE_MODES:
                    raise UploadError(f"{name}: pixel mode {mode!r} is not supported; save the "
                                      f"image as 8-bit RGB (JPEG or PNG)", 415)
                image.load()
                return to_rgb_array(image, size)
        except UploadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(f"{name}: too many pixels (decompression bomb?); send a smaller "
                              f"image", 413) from None
        except UnidentifiedImageError:
            raise UploadError(f"{name}: not an image file kdskin can read; choose a JPEG, PNG, "
                              f"BMP or TIFF image") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            detail = " ".join(str(exc).split())[:160] or exc.__class__.__name__
            raise UploadError(f"{name}: the image is truncated or corrupt ({detail}); send the "
                              f"complete file") from None
