"""TFLite metadata in exported files: labels, normalization, licence and decision rules, read back
from the file; files unchanged for the interpreter; a missing writer is recorded, not fatal.
The metadata is written by the default install (kdskin.export.metadata_flatbuffer, no
MediaPipe), and MediaPipe's generated schema module reads what it writes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from kdskin.constants import CLASSES
from kdskin.export import metadata as md
from kdskin.export import metadata_flatbuffer as mfb
from kdskin.export.convert import export_tflite, representative_sample
from kdskin.export.litert import TFLiteClassifier
from tests.test_export import trained_tiny

DECISION = {"temperature": 1.7, "temperature_folded": True, "referral_threshold": 0.31,
            "malignant_classes": ["mel", "bcc", "akiec"], "ood_score": "max_softmax",
            "ood_threshold": 0.42, "classes": list(CLASSES)}


@pytest.fixture(scope="module")
def with_metadata(tmp_path_factory: pytest.TempPathFactory):
    model, images, labels = trained_tiny(epochs=3)
    out = tmp_path_factory.mktemp("meta")
    info: dict = {}
    rep = representative_sample(images, labels, 40, seed=0)
    meta = md.ModelInfo(name="tiny", version="kdskin test", decision=DECISION)
    with pytest.MonkeyPatch.context() as mp:  # the default install: MediaPipe absent
        mp.setitem(sys.modules, "mediapipe", None)
        mp.setitem(sys.modules, "tflite_support", None)
        files = export_tflite(model, out, rep, kinds=("fp32", "int8"), info=info,
                              metadata=meta)
    return files, info, images


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_metadata_reads_back(with_metadata, kind):
    files, info, _ = with_metadata
    assert info["metadata"]["written"] is True
    meta = md.read_metadata(files[kind])
    assert meta["labels"] == list(CLASSES)
    assert meta["output"]["associated_files"][0]["name"] == "labels.txt"
    assert meta["input"]["normalization"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    assert meta["input"]["stats"] == {"min": [0.0], "max": [255.0]}
    assert meta["name"] == "tiny" and meta["version"] == "kdskin test"
    assert "CC BY-NC 4.0" in meta["license"] and meta["author"] == "kdskin"
    assert meta["min_parser_version"] == md.MIN_PARSER_VERSION
    assert meta["decision"]["referral_threshold"] == 0.31
    assert "0.31" in meta["description"] and "not a medical device" in meta["description"]
    packed = md.associated_files(files[kind])
    assert set(packed) == {"labels.txt", "decision.json"}


@pytest.mark.slow
def test_metadata_leaves_inference_unchanged_and_is_idempotent(with_metadata, tmp_path):
    files, _, images = with_metadata
    data = files["int8"].read_bytes()
    bare = md.strip_metadata(data)
    assert len(bare) < len(data) and md.associated_files(bare) == {}
    (tmp_path / "bare.tflite").write_bytes(bare)
    x = images[:16]
    with_meta = TFLiteClassifier(files["int8"]).predict(x)
    np.testing.assert_array_equal(with_meta, TFLiteClassifier(tmp_path / "bare.tflite").predict(x))
    again = md.add_metadata(data, md.ModelInfo(name="renamed", version="2"))
    (tmp_path / "again.tflite").write_bytes(again)
    meta = md.read_metadata(again)
    assert meta["name"] == "renamed" and "decision" not in meta
    assert set(md.associated_files(again)) == {"labels.txt"}  # replaced, not appended
    np.testing.assert_array_equal(with_meta,
                                  TFLiteClassifier(tmp_path / "again.tflite").predict(x))


@pytest.mark.slow
def test_missing_writer_is_recorded_not_fatal(tmp_path, monkeypatch):
    import ai_edge_litert

    model, images, labels = trained_tiny(epochs=1)
    monkeypatch.delattr(ai_edge_litert, "schema_py_generated", raising=False)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)
    info: dict = {}
    files = export_tflite(model, tmp_path, None, kinds=("fp32",), info=info,
                          metadata=md.ModelInfo(name="tiny", version="1"))
    assert files["fp32"].is_file()
    assert info["metadata"]["written"] is False
    assert "pip install ai-edge-litert" in info["metadata"]["reason"]
    assert md.associated_files(files["fp32"]) == {}
    monkeypatch.undo()
    assert md.read_metadata(files["fp32"]) is None  # a file without metadata reads as None


def test_metadata_flatbuffer_round_trip():
    meta = md.metadata_of(md.ModelInfo(name="m", version="3", decision=DECISION), "float32", 64)
    buf = mfb.to_bytes(meta)
    assert mfb.has_identifier(buf) and mfb.from_bytes(buf) == meta
    assert meta.inputs[0].image and meta.inputs[0].mean == (0.0,) * 3
    assert [f.name for f in meta.associated_files] == ["decision.json"]
    with pytest.raises(ValueError, match="M001"):
        mfb.from_bytes(b"\x00" * 16)


@pytest.mark.slow
def test_metadata_is_what_mediapipes_schema_reads(with_metadata):
    """The light writer against the generated schema module MediaPipe ships (test extra)."""
    fb = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")
    import flatbuffers

    files, _, _ = with_metadata
    buf = md.metadata_buffer(files["int8"])
    assert fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0)
    meta = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(buf, 0))
    assert (meta.name, meta.version, meta.minParserVersion) == (b"tiny", b"kdskin test",
                                                                md.MIN_PARSER_VERSION.encode())
    image = meta.subgraphMetadata[0].inputTensorMetadata[0]
    assert image.content.contentPropertiesType == fb.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == fb.ColorSpaceType.RGB
    unit = image.processUnits[0]
    assert unit.optionsType == fb.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [0.0] * 3 and list(unit.options.std) == [1.0] * 3
    assert (list(image.stats.min), list(image.stats.max)) == ([0.0], [255.0])
    probs = meta.subgraphMetadata[0].outputTensorMetadata[0]
    assert probs.content.contentPropertiesType == fb.ContentProperties.FeatureProperties
    labels = probs.associatedFiles[0]
    assert (labels.name, labels.type) == (b"labels.txt", fb.AssociatedFileType.TENSOR_AXIS_LABELS)
    assert [(f.name, f.type) for f in meta.associatedFiles] == [
        (b"decision.json", fb.AssociatedFileType.DESCRIPTIONS)]
    # and the other way: what the generated module writes, kdskin reads the same
    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), mfb.IDENTIFIER)
    assert mfb.from_bytes(bytes(builder.Output())) == mfb.from_bytes(buf)


def test_refuses_non_tflite_bytes():
    with pytest.raises(md.KdskinError, match="TFL3"):
        md.add_metadata(b"\x00" * 64, md.ModelInfo(name="x", version="1"))
