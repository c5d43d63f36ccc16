"""What kdskin prints: its own lines on stdout, progress bars on stderr, library noise off.

* :func:`quiet_libraries` -- call before TensorFlow is imported (the CLI does): TensorFlow's C++
  logging is silenced by ``TF_CPP_MIN_LOG_LEVEL=3`` set before the import (2 is not enough in
  TF 2.21), except the lines printed while its shared libraries load ("All log messages before
  absl::InitializeLog() ...", "oneDNN custom operations are on"), which ignore that variable:
  the first ``import tensorflow`` runs with file descriptor 2 pointed at /dev/null (an import
  hook; the process's own stderr is untouched before and after). Python-side warnings and log
  records of TensorFlow, Keras and absl are filtered too. ``--verbose`` skips all of it.
* :func:`log` -- one ``[kdskin] ...`` line on stdout.
* :func:`progress` -- a tqdm bar on stderr, shown only on a terminal.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: Loggers and warning-emitting modules of the libraries kdskin builds on.
LIBRARY_LOGGERS: tuple[str, ...] = ("tensorflow", "absl", "keras", "h5py", "matplotlib", "PIL",
                                    "ai_edge_litert", "tf_keras_vis", "lime")
_QUIET = {"on": False}


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null inside the block (C/C++ writes included)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


class _Loaded(importlib.abc.Loader):
    """Loader handing back a module that is already imported."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def create_module(self, spec: Any) -> Any:
        return self.module

    def exec_module(self, module: Any) -> None:
        return None


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """On the first ``import tensorflow``, import it with native stderr silenced."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        with native_stderr_silenced():
            module = importlib.import_module("tensorflow")
        return importlib.util.spec_from_loader(name, _Loaded(module))


def quiet_libraries() -> None:
    """Silence library logging and warnings for the rest of the process (idempotent)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules and not any(
            isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("keras", "tensorflow", "absl", "tf_keras_vis", "lime", "sklearn", "numpy",
                   "google", "ai_edge_litert", "skimage"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    _QUIET["on"] = True
    if "absl.logging" in sys.modules or _importable("absl"):
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # pragma: no cover - absl comes with TensorFlow
            pass


def is_quiet() -> bool:
    """True once :func:`quiet_libraries` ran (library noise is filtered)."""
    return _QUIET["on"]


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def log(msg: str) -> None:
    """One ``[kdskin] msg`` line on stdout (flushed, so it interleaves with fit's lines)."""
    print(f"[kdskin] {msg}", flush=True)


def progress(items: Iterable[T], total: int | None = None, desc: str = "",
             unit: str = "it") -> Iterator[T]:
    """``items`` with a tqdm progress bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None,
                    leave=False, dynamic_ncols=True)


def progress_bar(total: int, desc: str = "", unit: str = "it") -> Any:
    """A manual tqdm bar on stderr (``bar.update(n)``; use as a context manager)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False,
                dynamic_ncols=True)
