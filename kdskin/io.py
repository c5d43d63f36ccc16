"""The one file writer: atomic writes, so no command leaves a half-written output behind.

Every file kdskin writes goes through :func:`atomic_write`: the content is written to a temporary
file beside the target, which is then renamed into place (``os.replace``, atomic on POSIX). The
temporary file is created like any other file (``open(..., 0o666)`` filtered by the process
umask), so outputs get the usual permissions (0644 under umask 022), not ``mkstemp``'s 0600.
A folder of outputs is written the same way (:func:`atomic_write_dir`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TRIES = 100


def _create_temp(path: Path) -> Path:
    """Create an empty, new temp file beside ``path`` (mode 0666 & ~umask) and return it.

    The name keeps ``path``'s suffix last (``.x.tmp.png``), so writers that infer a format from
    the name (matplotlib, NumPy, Keras) see the real one.
    """
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path.parent}: could not create a temporary file for {path.name}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place.

    On any exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` on a new folder beside ``path`` (created like any folder: mode
    0777 filtered by the umask, not ``mkdtemp``'s 0700), then rename it to ``path``, which must
    be absent or an empty folder. On any exception the folder is removed and ``path`` is left as
    it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{path.parent}: could not create a temporary folder for "
                              f"{path.name}")
    try:
        write(tmp)
        if path.exists():
            path.rmdir()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (NumPy values converted, NaN -> null)."""
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
