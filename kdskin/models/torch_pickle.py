"""Read a PyTorch checkpoint (``.pth``) of plain tensors into NumPy, without torch.

A ``.pth`` file is a Python pickle, and a pickle is code: unpickling can call any importable
function (``os.system`` included). :func:`read_state_dict` therefore uses a restricted
unpickler that resolves only the globals a state dict of tensors needs
(:data:`ALLOWED_GLOBALS`: ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
the typed storage classes) to inert stand-ins, and refuses every other global with a
:class:`~kdskin.errors.WeightsError` before anything of it runs.

Both of torch's formats are read:

- legacy (``torch.save`` before 1.6, ``_use_new_zipfile_serialization=False``): a magic-number
  pickle, a protocol pickle, a sys-info pickle, the state-dict pickle, a pickle of storage keys,
  then each storage as an int64 element count and its raw little-endian bytes;
- zip (1.6 and later): ``*/data.pkl`` and one ``*/data/<key>`` entry per storage.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from kdskin.errors import WeightsError

#: legacy format's first pickle (torch.serialization.MAGIC_NUMBER)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: torch storage class name -> NumPy dtype (little-endian)
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}
#: every global a state dict of tensors may name; nothing else is resolved
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
     ("torch._utils", "_rebuild_tensor")}
    | {("torch", name) for name in STORAGE_DTYPES})


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` etc.: only its dtype is used."""

    dtype: str


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor before its storage bytes are read: a strided view of ``storage``."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *_: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (requires_grad, hooks ignored)."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves :data:`ALLOWED_GLOBALS` to stand-ins, refuses the rest."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise WeightsError(
                f"{self.source}: refused: the pickle names {module}.{name}, which is not tensor "
                f"data (a pickle is code); use a checkpoint of plain tensors from a trusted "
                f"source")
        if module == "collections":
            return OrderedDict
        if module == "torch._utils":
            return _rebuild_tensor
        return _StorageType(STORAGE_DTYPES[name])

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise WeightsError(f"{self.source}: refused: unexpected persistent id {pid!r:.80}")
        return _Storage(str(pid[2]), pid[1].dtype, int(pid[4]))


def _load(file: BinaryIO, source: str) -> Any:
    try:
        return _RestrictedUnpickler(file, source).load()
    except WeightsError:
        raise
    except Exception as exc:  # truncated or not a pickle
        raise WeightsError(f"{source}: not a readable PyTorch checkpoint "
                           f"({type(exc).__name__}: {exc})") from None


def _materialise(ref: _TensorRef, buffers: dict[str, bytes], source: str) -> np.ndarray:
    data = buffers.get(ref.storage.key)
    if data is None:
        raise WeightsError(f"{source}: storage {ref.storage.key} is missing")
    flat = np.frombuffer(data, dtype=ref.storage.dtype)
    item = flat.itemsize
    needed = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True)) + 1
    if any(n == 0 for n in ref.shape):
        return np.zeros(ref.shape, dtype=flat.dtype)
    if ref.offset < 0 or needed > flat.size or any(s < 0 for s in ref.stride):
        raise WeightsError(f"{source}: a tensor of shape {ref.shape} runs past its storage")
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.shape,
                                           strides=tuple(s * item for s in ref.stride))
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


def _legacy_buffers(file: BinaryIO, source: str, storages: dict[str, _Storage]
                    ) -> dict[str, bytes]:
    keys = _load(file, source)
    if not isinstance(keys, list):
        raise WeightsError(f"{source}: the storage key list is not a list")
    buffers: dict[str, bytes] = {}
    for key in keys:
        header = file.read(8)
        if len(header) != 8:
            raise WeightsError(f"{source}: truncated at storage {key}")
        (numel,) = struct.unpack("<q", header)
        storage = storages.get(str(key))
        if storage is None or numel != storage.numel:
            raise WeightsError(f"{source}: storage {key} does not match the state dict")
        size = numel * np.dtype(storage.dtype).itemsize
        data = file.read(size)
        if len(data) != size:
            raise WeightsError(f"{source}: truncated at storage {key}")
        buffers[str(key)] = data
    return buffers


def _collect(obj: Any, storages: dict[str, _Storage]) -> None:
    if isinstance(obj, _TensorRef):
        storages[obj.storage.key] = obj.storage
    elif isinstance(obj, dict):
        for value in obj.values():
            _collect(value, storages)


def _flatten(obj: Any, buffers: dict[str, bytes], source: str, prefix: str = ""
             ) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, _TensorRef):
            out[name] = _materialise(value, buffers, source)
        elif isinstance(value, dict):  # {"state_dict": {...}} wrappers
            out.update(_flatten(value, buffers, source, f"{name}."))
    return out


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``{name: array}`` of every tensor in the ``.pth`` file at ``path`` (shapes as saved).

    Raises :class:`~kdskin.errors.WeightsError` (one line naming the file) for a pickle that
    names anything but tensor data, a truncated or inconsistent file, or a file that is not a
    PyTorch checkpoint. torch is not imported.
    """
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsError(f"{source}: cannot read it ({exc.strerror})") from None
    if zipfile.is_zipfile(io.BytesIO(raw)):
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = archive.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise WeightsError(f"{source}: a zip without data.pkl is not a PyTorch checkpoint")
            root = pkl[: -len("data.pkl")]
            state = _load(io.BytesIO(archive.read(pkl)), source)
            storages: dict[str, _Storage] = {}
            if isinstance(state, dict):
                _collect(state, storages)
            buffers = {}
            for key in storages:
                try:
                    buffers[key] = archive.read(f"{root}data/{key}")
                except KeyError:
                    raise WeightsError(f"{source}: storage {key} is missing") from None
    else:
        file = io.BytesIO(raw)
        magic = _load(file, source)
        if magic != LEGACY_MAGIC:
            raise WeightsError(f"{source}: not a PyTorch checkpoint (no magic number)")
        _load(file, source)  # protocol version
        _load(file, source)  # sys info
        state = _load(file, source)
        storages = {}
        if isinstance(state, dict):
            _collect(state, storages)
        buffers = _legacy_buffers(file, source, storages)
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: holds a {type(state).__name__}, not a state dict")
    return _flatten(state, buffers, source)
