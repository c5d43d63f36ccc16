"""TFLite metadata in kdskin's ``.tflite`` files: labels, normalization, licence, decision rules.

Apps built on MediaPipe Tasks (``ImageClassifier``) or the TFLite Task Library read a model's
*metadata*: a flatbuffer (schema ``metadata_schema.fbs``, file identifier ``M001``) stored in the
model's ``metadata`` list under the name ``TFLITE_METADATA``, plus *associated files* packed as a
zip archive appended to the model (a ``.tflite`` with metadata is both a valid flatbuffer and a
zip file). Without it MediaPipe returns empty category names, and refuses a float32 input
("it requires specifying NormalizationOptions metadata").

What :func:`add_metadata` writes:

- input ``image``: RGB image properties, normalization ``mean 0, std 1`` (kdskin models take raw
  0..255 pixels: rescaling is inside the model) and stats min 0 / max 255. The int8 file's uint8
  input keeps its own quantization (scale 1, zero point 0), which MediaPipe reads from the tensor;
- output ``probs``: ``labels.txt`` as ``TENSOR_AXIS_LABELS`` (one class a line, CLASSES order);
- model name, description (intended use, the decision rules), version, author and licence;
- ``decision.json`` (temperature, referral and out-of-scope thresholds) as an associated file of
  type ``DESCRIPTIONS`` when the run fitted them.

The metadata flatbuffer is written and read by :mod:`kdskin.export.metadata_flatbuffer` (the
subset of ``metadata_schema.fbs`` a classifier needs, with the ``flatbuffers`` package that
TensorFlow and LiteRT install), so the default install writes it: no MediaPipe needed. The model
is re-packed with LiteRT's own schema module (``ai_edge_litert.schema_py_generated``), the steps
of MediaPipe's ``MetadataPopulator``. Only features of metadata schema 1.0.0 are used, so
``min_parser_version`` is ``1.0.0``. Without LiteRT's schema module, :class:`MetadataUnavailable`
says what to install; the export goes on without metadata and records why
(:func:`kdskin.export.check.export_and_check`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdskin.constants import CLASSES, LABELS_FILE
from kdskin.errors import KdskinError
from kdskin.export import metadata_flatbuffer as mfb

#: Name of the model's metadata entry that holds the metadata flatbuffer.
METADATA_NAME = "TFLITE_METADATA"
MODEL_IDENTIFIER = b"TFL3"
#: Lowest metadata parser version that reads every field written here.
MIN_PARSER_VERSION = "1.0.0"
DECISION_FILE = "decision.json"
DEFAULT_LICENSE = ("Model weights trained on HAM10000 (ViDIR Group, Medical University of "
                   "Vienna), CC BY-NC 4.0: non-commercial use with attribution. kdskin code: "
                   "Apache-2.0.")
INTENDED_USE = ("Research and education only: not a medical device, not for diagnosis. "
                "Dermoscopic images only.")


class MetadataUnavailable(KdskinError):
    """LiteRT's model schema module is not installed (the export records why)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the metadata says about a model (see the module docstring)."""

    name: str
    version: str
    author: str = "kdskin"
    license: str = DEFAULT_LICENSE
    description: str = ""
    labels: tuple[str, ...] = CLASSES
    #: decision.json content (DecisionRules.to_dict()), or None
    decision: Mapping[str, Any] | None = None
    extra_files: Mapping[str, bytes] = field(default_factory=dict)

    def full_description(self) -> str:
        """The model description: classes, input contract, intended use, decision rules."""
        parts = [self.description.strip()] if self.description.strip() else []
        parts.append(f"Skin-lesion classifier, {len(self.labels)} classes "
                     f"({', '.join(self.labels)}). Input: RGB pixels 0..255 (no normalisation); "
                     f"resize with an anti-aliased filter. Output: probabilities.")
        parts.append(INTENDED_USE)
        if self.decision:
            d = self.decision
            rules = [f"temperature {float(d.get('temperature', 1.0)):.4g}"
                     + (" (already folded into the softmax)" if d.get("temperature_folded")
                        else "")]
            offsets = d.get("class_offsets")
            if offsets and any(float(v) for v in offsets):
                shifted = ", ".join(f"{c} {float(v):+.2f}" for c, v in
                                    zip(self.labels, offsets, strict=False) if float(v))
                rules.append(f"log-odds offsets of the top-1 class ({shifted})"
                             + (" (already folded)" if d.get("temperature_folded") else ""))
            if d.get("referral_threshold") is not None:
                rules.append(f"refer when P({'+'.join(d.get('malignant_classes', []))}) >= "
                             f"{float(d['referral_threshold']):.4g}")
            if d.get("ood_threshold") is not None:
                rules.append(f"out of scope when {d.get('ood_score', 'max_softmax')} < "
                             f"{float(d['ood_threshold']):.4g}")
            parts.append("Decision rules (" + DECISION_FILE + "): " + "; ".join(rules) + ".")
        return " ".join(parts)


# --------------------------------------------------------------------------- model schema


def _model_schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise MetadataUnavailable("writing TFLite metadata needs ai-edge-litert: pip install "
                                  "ai-edge-litert") from None
    return schema_py_generated


def _model_io(schema: Any, data: bytes) -> tuple[str, tuple[int, ...]]:
    """(input element type name, input shape) of the model's first input."""
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    tensor = graph.Tensors(graph.Inputs(0))
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    shape = tuple(int(tensor.Shape(i)) for i in range(tensor.ShapeLength()))
    return names.get(tensor.Type(), "UNKNOWN").lower(), shape


# --------------------------------------------------------------------------- writing


def metadata_of(info: ModelInfo, input_type: str, size: int) -> mfb.ModelMetadata:
    """The metadata of a kdskin classifier whose input is ``input_type`` (``uint8``,
    ``float32``) images of ``size`` x ``size`` pixels."""
    image = mfb.TensorMetadata(
        name="image",
        description=(f"RGB image {size}x{size}, pixel values 0..255 "
                     f"({'uint8, raw pixels' if input_type == 'uint8' else input_type}); "
                     f"the model rescales inside. Resize with an anti-aliased filter."),
        image=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        stats_min=(0.0,), stats_max=(255.0,))
    labels = mfb.AssociatedFile(LABELS_FILE, "Class names, one a line, in output order.",
                                mfb.TENSOR_AXIS_LABELS)
    probs = mfb.TensorMetadata(
        name="probs",
        description=(f"Probabilities of the {len(info.labels)} classes in {LABELS_FILE} "
                     f"order (softmax inside the model)."),
        stats_min=(0.0,), stats_max=(1.0,), associated_files=(labels,))
    files = tuple(mfb.AssociatedFile(name, "Decision rules: calibration temperature, referral "
                                     "and out-of-scope thresholds." if name == DECISION_FILE
                                     else name, mfb.DESCRIPTIONS)
                  for name in _model_files(info))
    return mfb.ModelMetadata(name=info.name, description=info.full_description(),
                             version=info.version, author=info.author, license=info.license,
                             min_parser_version=MIN_PARSER_VERSION, inputs=(image,),
                             outputs=(probs,), associated_files=files)


def _model_files(info: ModelInfo) -> list[str]:
    return ([DECISION_FILE] if info.decision else []) + list(info.extra_files)


def _associated(info: ModelInfo) -> dict[str, bytes]:
    files = {LABELS_FILE: ("\n".join(info.labels) + "\n").encode()}
    if info.decision:
        files[DECISION_FILE] = (json.dumps(dict(info.decision), indent=2) + "\n").encode()
    files.update({k: bytes(v) for k, v in info.extra_files.items()})
    return files


def strip_metadata(data: bytes) -> bytes:
    """The model flatbuffer alone: appended associated files (a zip archive) removed."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            starts = [i.header_offset for i in zf.infolist()]
    except zipfile.BadZipFile:
        return data
    # the archive's offsets are relative to the whole file: the model ends where it starts
    return data[:min(starts)] if starts else data


def add_metadata(data: bytes, info: ModelInfo) -> bytes:
    """``data`` (a .tflite flatbuffer) with kdskin's metadata and associated files.

    Replaces metadata and associated files written before (idempotent). Raises
    :class:`MetadataUnavailable` when LiteRT's schema module is not installed, and
    :class:`KdskinError` for bytes that are not a .tflite model.
    """
    import flatbuffers

    schema = _model_schema()
    data = strip_metadata(bytes(data))
    if not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise KdskinError("not a .tflite flatbuffer (no TFL3 identifier); re-export the model")
    input_type, shape = _model_io(schema, data)
    size = int(shape[1]) if len(shape) == 4 else 0
    meta_buf = mfb.to_bytes(metadata_of(info, input_type, size))

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    buffer = schema.BufferT()
    buffer.data = list(meta_buf)
    model.buffers = list(model.buffers or [])
    entries = [m for m in (model.metadata or []) if _name(m.name) == METADATA_NAME]
    if entries:
        model.buffers[entries[0].buffer] = buffer
    else:
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    out = io.BytesIO(bytes(builder.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as zf:
        for name, content in _associated(info).items():
            zf.writestr(name, content)
    return out.getvalue()


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value or "")


# --------------------------------------------------------------------------- reading


def metadata_buffer(source: str | Path | bytes) -> bytes | None:
    """The raw metadata flatbuffer of a .tflite file (None when it has none)."""
    schema = _model_schema()
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    model = schema.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _name(entry.Name()) == METADATA_NAME:
            buf = model.Buffers(entry.Buffer())
            return bytes(buf.DataAsNumpy().tobytes()) if buf.DataLength() else None
    return None


def associated_files(source: str | Path | bytes) -> dict[str, bytes]:
    """``{name: content}`` of the files packed into a .tflite file (empty when none)."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except zipfile.BadZipFile:
        return {}


def _files(items: Sequence[mfb.AssociatedFile]) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": f.type, "description": f.description} for f in items]


def _tensor(t: mfb.TensorMetadata) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name, "description": t.description,
                           "associated_files": _files(t.associated_files)}
    if t.mean is not None or t.std is not None:
        out["normalization"] = {"mean": list(t.mean or ()), "std": list(t.std or ())}
    if t.image:
        out["color_space"] = mfb.RGB
    if t.stats_min or t.stats_max:
        out["stats"] = {"min": list(t.stats_min), "max": list(t.stats_max)}
    return out


def read_metadata(source: str | Path | bytes) -> dict[str, Any] | None:
    """A .tflite file's metadata as a JSON-ready dict (None when it has none).

    ``{"name", "version", "author", "license", "description", "min_parser_version",
    "associated_files": [...], "input": {name, normalization: {mean, std}, color_space, stats,
    ...}, "output": {name, associated_files: [{name, type}], ...}, "labels": [...] (from the
    packed labels file), "decision": {...} (decision.json, when packed)}``.
    """
    buf = metadata_buffer(source)
    if buf is None:
        return None
    if not mfb.has_identifier(buf):
        raise KdskinError(f"{source if not isinstance(source, bytes) else 'model'}: metadata "
                          f"buffer without the M001 identifier")
    meta = mfb.from_bytes(buf)
    if not meta.inputs or not meta.outputs:
        raise KdskinError(f"{source if not isinstance(source, bytes) else 'model'}: metadata "
                          f"without input and output tensors; re-export the model")
    out: dict[str, Any] = {
        "name": meta.name, "version": meta.version, "author": meta.author,
        "license": meta.license, "description": meta.description,
        "min_parser_version": meta.min_parser_version,
        "associated_files": _files(meta.associated_files),
        "input": _tensor(meta.inputs[0]),
        "output": _tensor(meta.outputs[0]),
    }
    packed = associated_files(source)
    axis = [f["name"] for f in out["output"]["associated_files"]
            if f["type"] == mfb.TENSOR_AXIS_LABELS]
    if axis and axis[0] in packed:
        out["labels"] = [line.strip() for line in packed[axis[0]].decode().splitlines()
                         if line.strip()]
    if DECISION_FILE in packed:
        out["decision"] = json.loads(packed[DECISION_FILE].decode())
    return out


__all__ = ["DEFAULT_LICENSE", "METADATA_NAME", "MIN_PARSER_VERSION", "MetadataUnavailable",
           "ModelInfo", "add_metadata", "associated_files", "metadata_buffer", "metadata_of",
           "read_metadata", "strip_metadata"]
