"""The TFLite metadata flatbuffer, written and read with the ``flatbuffers`` package alone.

MediaPipe Tasks and the TFLite Task Library read a model's metadata from a flatbuffer of the
schema ``metadata_schema.fbs`` (namespace ``tflite``, file identifier ``M001``; TensorFlow /
MediaPipe authors, Apache-2.0). This module writes and reads the subset of that schema a
classifier needs, so the default install (``flatbuffers`` comes with TensorFlow and LiteRT)
writes metadata without MediaPipe. Field slots are the schema's field order, a union taking two
slots (its type, then its value)::

    ModelMetadata    name 0, description 1, version 2, subgraph_metadata 3, author 4,
                     license 5, associated_files 6, min_parser_version 7
    SubGraphMetadata name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3
    TensorMetadata   name 0, description 1, dimension_names 2, content 3, process_units 4,
                     stats 5, associated_files 6
    Content          content_properties_type 0, content_properties 1, range 2
    ImageProperties  color_space 0 (byte; RGB = 1)        FeatureProperties  (no fields)
    ProcessUnit      options_type 0, options 1             NormalizationOptions mean 0, std 1
    Stats            max 0, min 1
    AssociatedFile   name 0, description 1, type 2 (byte), locale 3, version 4

Union types: ``ContentProperties`` FeatureProperties 1, ImageProperties 2;
``ProcessUnitOptions`` NormalizationOptions 1. Fields outside this subset are neither written
nor read (a reader of the full schema sees them as absent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flatbuffers
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

IDENTIFIER = b"M001"

#: ``AssociatedFileType`` values.
DESCRIPTIONS = 1
TENSOR_AXIS_LABELS = 2
#: ``ColorSpaceType.RGB``.
RGB = 1
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties union
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union


@dataclass(frozen=True)
class AssociatedFile:
    """A file packed with the model (``type``: :data:`DESCRIPTIONS`,
    :data:`TENSOR_AXIS_LABELS`, ...)."""

    name: str
    description: str = ""
    type: int = DESCRIPTIONS


@dataclass(frozen=True)
class TensorMetadata:
    """One input or output tensor. ``image``: an RGB image (``ImageProperties``), else a
    feature vector; ``mean``/``std``: ``NormalizationOptions`` (None: none);
    ``stats_min``/``stats_max``: ``Stats``."""

    name: str
    description: str = ""
    image: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    stats_min: tuple[float, ...] = ()
    stats_max: tuple[float, ...] = ()
    associated_files: tuple[AssociatedFile, ...] = ()


@dataclass(frozen=True)
class ModelMetadata:
    """The metadata of a one-subgraph model."""

    name: str
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    min_parser_version: str = ""
    inputs: tuple[TensorMetadata, ...] = ()
    outputs: tuple[TensorMetadata, ...] = ()
    associated_files: tuple[AssociatedFile, ...] = ()


# --------------------------------------------------------------------------- writing


def _string(b: flatbuffers.Builder, text: str) -> int | None:
    return b.CreateString(text) if text else None


def _offsets(b: flatbuffers.Builder, offsets: Sequence[int]) -> int | None:
    if not offsets:
        return None
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: Sequence[float] | None) -> int | None:
    if values is None:
        return None
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _table(b: flatbuffers.Builder, n_slots: int, offsets: dict[int, int | None],
           bytes_: dict[int, int] | None = None) -> int:
    """A table of ``n_slots`` fields: ``offsets`` (slot -> built string/vector/table, None:
    absent) and ``bytes_`` (slot -> ``byte`` value; 0, the schema's default, reads as absent)."""
    b.StartObject(n_slots)
    for slot, off in offsets.items():
        if off is not None:
            b.PrependUOffsetTRelativeSlot(slot, off, 0)
    for slot, value in (bytes_ or {}).items():
        b.PrependInt8Slot(slot, int(value), 0)
    return b.EndObject()


def _file(b: flatbuffers.Builder, f: AssociatedFile) -> int:
    return _table(b, 5, {0: _string(b, f.name), 1: _string(b, f.description)}, {2: f.type})


def _files(b: flatbuffers.Builder, files: Sequence[AssociatedFile]) -> int | None:
    return _offsets(b, [_file(b, f) for f in files])


def _tensor(b: flatbuffers.Builder, t: TensorMetadata) -> int:
    if t.image:
        props, kind = _table(b, 2, {}, {0: RGB}), _IMAGE_PROPERTIES
    else:
        props, kind = _table(b, 0, {}), _FEATURE_PROPERTIES
    content = _table(b, 3, {1: props}, {0: kind})
    units = None
    if t.mean is not None or t.std is not None:
        norm = _table(b, 2, {0: _floats(b, t.mean), 1: _floats(b, t.std)})
        units = _offsets(b, [_table(b, 2, {1: norm}, {0: _NORMALIZATION_OPTIONS})])
    stats = None
    if t.stats_min or t.stats_max:
        stats = _table(b, 2, {0: _floats(b, t.stats_max), 1: _floats(b, t.stats_min)})
    return _table(b, 7, {0: _string(b, t.name), 1: _string(b, t.description), 3: content,
                         4: units, 5: stats, 6: _files(b, t.associated_files)})


def to_bytes(meta: ModelMetadata) -> bytes:
    """The metadata flatbuffer (identifier ``M001``) of ``meta``."""
    b = flatbuffers.Builder(1024)
    inputs = _offsets(b, [_tensor(b, t) for t in meta.inputs])
    outputs = _offsets(b, [_tensor(b, t) for t in meta.outputs])
    subgraph = _table(b, 10, {2: inputs, 3: outputs})
    root = _table(b, 8, {0: _string(b, meta.name), 1: _string(b, meta.description),
                         2: _string(b, meta.version), 3: _offsets(b, [subgraph]),
                         4: _string(b, meta.author), 5: _string(b, meta.license),
                         6: _files(b, meta.associated_files),
                         7: _string(b, meta.min_parser_version)})
    b.Finish(root, IDENTIFIER)
    return bytes(b.Output())


# --------------------------------------------------------------------------- reading


class _Reader:
    """Field access on one table of a flatbuffer (by slot, as in the module docstring)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.t = Table(buf, pos)

    def _offset(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str:
        off = self._offset(slot)
        return self.t.String(off + self.t.Pos).decode() if off else ""

    def byte(self, slot: int) -> int:
        off = self._offset(slot)
        return int(self.t.Get(number_types.Int8Flags, off + self.t.Pos)) if off \
            else 0

    def table(self, slot: int) -> _Reader | None:
        off = self._offset(slot)
        return _Reader(self.t.Bytes, self.t.Indirect(off + self.t.Pos)) if off else None

    def tables(self, slot: int) -> list[_Reader]:
        off = self._offset(slot)
        if not off:
            return []
        start = self.t.Vector(off)
        return [_Reader(self.t.Bytes, self.t.Indirect(start + 4 * i))
                for i in range(self.t.VectorLen(off))]

    def floats(self, slot: int) -> tuple[float, ...] | None:
        off = self._offset(slot)
        if not off:
            return None
        values = self.t.GetVectorAsNumpy(number_types.Float32Flags, off)
        return tuple(float(v) for v in values)


def _read_files(r: _Reader, slot: int) -> tuple[AssociatedFile, ...]:
    return tuple(AssociatedFile(f.string(0), f.string(1), f.byte(2)) for f in r.tables(slot))


def _read_tensor(r: _Reader) -> TensorMetadata:
    content = r.table(3)
    image = content is not None and content.byte(0) == _IMAGE_PROPERTIES
    mean = std = None
    for unit in r.tables(4):
        options = unit.table(1)
        if unit.byte(0) == _NORMALIZATION_OPTIONS and options is not None:
            mean, std = options.floats(0), options.floats(1)
    stats = r.table(5)
    return TensorMetadata(
        name=r.string(0), description=r.string(1), image=image, mean=mean, std=std,
        stats_min=(stats.floats(1) or ()) if stats else (),
        stats_max=(stats.floats(0) or ()) if stats else (),
        associated_files=_read_files(r, 6))


def has_identifier(buf: bytes) -> bool:
    """Whether ``buf`` is a metadata flatbuffer (identifier ``M001`` after the root offset)."""
    return bytes(buf[4:8]) == IDENTIFIER


def from_bytes(buf: bytes) -> ModelMetadata:
    """Read a metadata flatbuffer written by :func:`to_bytes` (or any writer of the schema;
    fields outside the subset are skipped). ``ValueError`` without the ``M001`` identifier."""
    buf = bytes(buf)
    if not has_identifier(buf):
        raise ValueError("not a TFLite metadata flatbuffer (no M001 identifier)")
    root = _Reader(buf, encode.Get(packer.uoffset, buf, 0))
    subgraphs = root.tables(3)
    sub = subgraphs[0] if subgraphs else None
    return ModelMetadata(
        name=root.string(0), description=root.string(1), version=root.string(2),
        author=root.string(4), license=root.string(5), min_parser_version=root.string(7),
        inputs=tuple(_read_tensor(t) for t in sub.tables(2)) if sub else (),
        outputs=tuple(_read_tensor(t) for t in sub.tables(3)) if sub else (),
        associated_files=_read_files(root, 6))


__all__ = ["DESCRIPTIONS", "IDENTIFIER", "RGB", "TENSOR_AXIS_LABELS", "AssociatedFile",
           "ModelMetadata", "TensorMetadata", "from_bytes", "has_identifier", "to_bytes"]
