"""Peak resident memory of a block of code, measured the same way in every run.

On Linux the kernel keeps the process's peak resident set ("high-water mark") as ``VmHWM`` in
``/proc/self/status``, and writing ``5`` to ``/proc/self/clear_refs`` resets it to the current
resident size, so each block's peak is its own (:data:`METHOD_RESET`). Where that file cannot be
written (other systems, some containers) the figure is the process's peak so far
(``resource.getrusage``'s ``ru_maxrss``, or ``VmHWM`` without a reset): an upper bound that only
grows from one block to the next (:data:`METHOD_PROCESS`). The method used is recorded beside the
figures. Blocks may nest: an outer block's peak includes its inner blocks'.

:func:`predict_in_chunks` is how every Keras prediction of a whole split runs: ``model.predict``
on a whole array makes a float32 copy of it and hands that to TensorFlow (a second copy), 8x
the uint8 images at once; chunk by chunk the extra memory is one chunk, with the same batches
and therefore the same outputs. :func:`release` gives the heap freed by a finished stage back to
the system, so the next stage does not start on top of it.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Each block's own peak (``VmHWM`` reset at its start through ``/proc/self/clear_refs``).
METHOD_RESET = "VmHWM, reset per stage"
#: The process's peak so far at the end of each block (no reset available).
METHOD_PROCESS = "process peak so far"
#: Batches per chunk of :func:`predict_in_chunks`.
CHUNK_BATCHES = 4

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def status_kib(text: str, key: str) -> int | None:
    """The value in KiB of ``key`` (``VmHWM``, ``VmRSS``) in a ``/proc/PID/status`` text, or
    None when it is missing."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            parts = value.split()
            if parts and parts[0].isdigit():
                scale = {"kb": 1, "mb": 1024, "gb": 1024 ** 2}.get(
                    parts[1].lower() if len(parts) > 1 else "kb", 1)
                return int(parts[0]) * scale
    return None


def _status(key: str) -> int | None:
    try:
        return status_kib(STATUS.read_text(), key)
    except OSError:
        return None


def _maxrss_kib() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else int(peak)  # bytes on macOS


def peak_kib() -> int | None:
    """The process's resident high-water mark in KiB (since the last :func:`reset_peak`), or
    None where the system tells neither."""
    value = _status("VmHWM")
    return value if value is not None else _maxrss_kib()


def current_kib() -> int | None:
    """The process's resident size now in KiB (``VmRSS``), or None."""
    return _status("VmRSS")


def reset_peak() -> bool:
    """Reset the high-water mark to the current resident size; False where not supported."""
    if _status("VmHWM") is None:
        return False
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Peak:
    """The result of one :func:`measure` block: its peak in KiB (None where unknown) and the
    method (:data:`METHOD_RESET` or :data:`METHOD_PROCESS`)."""

    kib: int | None = None
    method: str = METHOD_PROCESS

    @property
    def mib(self) -> float | None:
        return None if self.kib is None else round(self.kib / 1024, 1)


_open: list[Peak] = []  # the blocks being measured, outermost first


def _carry(kib: int | None) -> None:
    """Fold a peak seen now into every open block (a reset would lose it)."""
    if kib is not None:
        for block in _open:
            block.kib = kib if block.kib is None else max(block.kib, kib)


@contextmanager
def measure() -> Iterator[Peak]:
    """Measure the peak resident memory of the ``with`` block; the yielded :class:`Peak` is
    filled in when the block ends (also when it raises)."""
    _carry(peak_kib())  # the open blocks' peak so far, before the reset clears it
    peak = Peak(method=METHOD_RESET if reset_peak() else METHOD_PROCESS)
    _open.append(peak)
    try:
        yield peak
    finally:
        _carry(peak_kib())  # this block's and every enclosing block's
        _open.remove(peak)


def release() -> None:
    """Collect garbage and return the freed heap to the system (glibc's ``malloc_trim``; a
    no-op elsewhere). Changes no result: only where freed memory lives."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            pass


def predict_in_chunks(model: Any, images: np.ndarray, batch_size: int,
                      chunk_batches: int = CHUNK_BATCHES) -> Any:
    """``model.predict(float32 images, batch_size)`` (an array, or a dict or list of arrays),
    run on ``chunk_batches * batch_size`` images at a time: the same batches as one call on the
    whole array (so the same outputs), with one chunk's float32 copy in memory at a time."""
    n = len(images)
    step = max(1, int(batch_size)) * max(1, int(chunk_batches))
    if n <= step:
        return model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    parts = [model.predict(np.asarray(images[i:i + step], np.float32), batch_size=batch_size,
                           verbose=0) for i in range(0, n, step)]
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in first}
    if isinstance(first, list | tuple):
        return [np.concatenate([np.asarray(p[j]) for p in parts]) for j in range(len(first))]
    return np.concatenate([np.asarray(p) for p in parts])
