"""Keeping library noise off the terminal while converting, checking and timing models.

:func:`quiet` swallows what Keras and the TFLite converter print (Python stdout, Python warnings,
TensorFlow/absl log records below ERROR) and what their C++ code writes straight to the stderr
file descriptor (e.g. "fully_quantize: 0, inference_type: 6 ..."); :func:`native_stderr` drops
LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate" line and keeps its warnings and errors.
Errors still arrive as exceptions with their messages. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator

#: Python warnings that say nothing to a kdskin user (shown with ``verbose=True``).
NOISE: tuple[str, ...] = ("Statistics for quantized inputs",  # uint8 input: we calibrate it
                          "Please consider providing the trackable_obj",
                          "Compiled the loaded model, but the compiled metrics",
                          "Warning: Enabling `experimental_preserve_all_tensors`")


def _stderr_fd() -> int | None:
    """File descriptor 2, where native code writes (whatever ``sys.stderr`` is), if open."""
    try:
        os.fstat(2)
    except OSError:
        return None
    return 2


@contextlib.contextmanager
def native_stderr(keep: Callable[[str], bool] = lambda line: not line.startswith("INFO:")
                  ) -> Iterator[None]:
    """Capture what native code writes to the stderr descriptor; re-write the lines ``keep``
    accepts (by default everything but ``INFO:`` lines) on ``sys.stderr``. A no-op when file
    descriptor 2 is closed.
    """
    fd = _stderr_fd()
    if fd is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines()
                    if line.strip() and keep(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Keep library output off stdout and stderr unless ``verbose`` (see the module docstring).

    TensorFlow's C++ log level itself is set by ``TF_CPP_MIN_LOG_LEVEL`` before TensorFlow is
    imported (the CLI's job, :func:`kdskin.console.quiet_libraries`).
    """
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with (contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(),
              native_stderr(keep=lambda line: False)):
            for message in NOISE:
                warnings.filterwarnings("ignore", message=message)
            warnings.filterwarnings("ignore", module=r"(keras|tensorflow|absl)(\.|$)")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
