"""kdskin.compat: every private API kdskin uses exists in the installed versions, and a missing
one is recorded or raises a clear error (never silently ignored)."""

from __future__ import annotations

import ast
import io
from contextlib import redirect_stdout
from pathlib import Path

import keras
import numpy as np
import pytest

from kdskin import compat
from kdskin.compat import CompatError
from kdskin.errors import KdskinError
from kdskin.export import centre
from kdskin.export.convert import export_tflite
from kdskin.export.graph import float_ops
from kdskin.export.litert import TFLiteClassifier
from tests.test_export import SIZE, colour_data, tiny_classifier

PACKAGE = Path(__file__).resolve().parents[1] / "kdskin"


# --------------------------------------------------------------------------- present today


@pytest.mark.parametrize("name", sorted(compat.PRIVATE_APIS))
def test_private_api_exists_in_installed_versions(name):
    """Fails after an upgrade that removes or renames one: then fix kdskin/compat.py."""
    assert compat.PRIVATE_APIS[name]() is None


def test_registry_covers_every_converter_flag():
    assert {f"TFLiteConverter.{flag}" for flag in compat.CONVERTER_FLAGS} <= set(
        compat.PRIVATE_APIS)
    assert set(compat.check_private_apis()) == set(compat.PRIVATE_APIS)


def _private_uses(path: Path) -> list[str]:
    """``x._name`` (x not self/cls) and getattr/hasattr/setattr/delattr(x, "_name") in a file;
    imports of ``*.src.*`` / ``*.python.*`` modules (Keras / TensorFlow internals)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_")
                and not str(node.args[1].value).startswith(("__", "_kdskin"))):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [
                a.name for a in node.names]
            found += [f"{path.name}:{node.lineno} import {m}" for m in names
                      if m and (".src" in m or ".python" in m)
                      and not m.startswith(PUBLIC_PYTHON_MODULES)]
    return found


#: ``*.python.*`` modules that are a package's documented public API (MediaPipe Tasks' Python
#: API is ``mediapipe.tasks.python``), unlike ``tensorflow.python``.
PUBLIC_PYTHON_MODULES = ("mediapipe.tasks.python",)


def test_no_private_api_outside_compat():
    uses = [use for path in sorted(PACKAGE.rglob("*.py")) if path.name != "compat.py"
            for use in _private_uses(path)]
    assert uses == []
    assert _private_uses(PACKAGE / "compat.py")  # the scan does see compat's own uses


# --------------------------------------------------------------------------- Keras


def test_print_msg_follows_keras_interactive_logging():
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            compat.print_msg("shown")
            keras.config.disable_interactive_logging()
            compat.print_msg("hidden")
    finally:
        keras.config.enable_interactive_logging()
    assert buf.getvalue() == "shown\n"


def test_functional_nodes_walks_the_graph_and_refuses_without_it():
    image = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="a")(image)
    model = keras.Model(image, keras.layers.Dense(2, name="b")(hidden), name="m")
    layers = {node.operation.name for node in compat.functional_nodes(model)}
    assert {"a", "b"} <= layers
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="seq")
    with pytest.raises(CompatError, match="model 'seq'.*_nodes_by_depth.*centre_input") as err:
        compat.functional_nodes(seq)
    assert "\n" not in str(err.value) and isinstance(err.value, KdskinError)


@pytest.mark.slow
def test_export_records_why_centring_was_skipped(tmp_path, monkeypatch):
    def gone(model):
        raise CompatError("model 'x': cannot read its layer graph (test)")

    monkeypatch.setattr(centre, "functional_nodes", gone)
    info: dict = {}
    files = export_tflite(tiny_classifier(), tmp_path, None, kinds=("fp32",), info=info)
    assert info["centred_convs"] == [] and "cannot read its layer graph" in info[
        "centre_input_skipped"]
    assert files["fp32"].is_file()


# --------------------------------------------------------------------------- TFLite converter


class _Bare:
    """An object without any converter flag (a TensorFlow that renamed them)."""


def test_set_converter_flag_checks_before_assigning():
    flag = "_experimental_calibrate_only"
    bare = _Bare()
    reason = compat.set_converter_flag(bare, flag, True)
    assert reason is not None and flag in reason and "TensorFlow" in reason
    assert not hasattr(bare, flag)  # no unused attribute created
    converter = compat._converter_probe()
    assert compat.set_converter_flag(converter, flag, True) is None
    assert getattr(converter, flag) is True
    with pytest.raises(ValueError, match="not a converter flag"):
        compat.set_converter_flag(converter, "_experimental_new_thing", True)
    with pytest.raises(CompatError, match=r"per_channel=False needs .*_experimental_disable_"):
        compat.require_converter_flag(bare, "_experimental_disable_per_channel", True,
                                      "per_channel=False")


class _Renamed:
    """A converter whose TensorFlow renamed ``flag``: kdskin sees no ``flag`` (and must not assign
    it), the converter itself works as before."""

    def __init__(self, real, flag):
        object.__setattr__(self, "real", real)
        object.__setattr__(self, "flag", flag)

    def __getattr__(self, name):
        if name == self.flag:
            raise AttributeError(name)
        return getattr(self.real, name)

    def __setattr__(self, name, value):
        assert name != self.flag, f"kdskin assigned {name} without checking it exists"
        setattr(self.real, name, value)


def _converters_without(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    """Make every converter kdskin creates lack ``flag`` (as after a rename upstream)."""
    import tensorflow as tf

    original = tf.lite.TFLiteConverter.from_keras_model.__func__

    def patched(cls, model):
        converter = _Renamed(original(cls, model), flag)
        assert not hasattr(converter, flag)
        return converter

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", classmethod(patched))


def test_per_channel_off_without_its_flag_raises(tmp_path, monkeypatch):
    _converters_without(monkeypatch, "_experimental_disable_per_channel")
    images, _ = colour_data(n_per_class=2)
    with pytest.raises(CompatError, match="per_channel=False") as err:
        export_tflite(tiny_classifier(), tmp_path, images, kinds=("int8",), per_channel=False,
                      method="from_keras_model")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("*.tflite"))


@pytest.mark.slow
def test_dynamic_without_dense_flag_is_recorded(tmp_path, monkeypatch):
    flag = "_experimental_disable_per_channel_quantization_for_dense_layers"
    _converters_without(monkeypatch, flag)
    info: dict = {}
    files = export_tflite(tiny_classifier(), tmp_path, None, kinds=("dynamic",), info=info,
                          method="from_keras_model")
    assert flag in info["compat"]["dynamic_dense_per_tensor"]
    assert files["dynamic"].stat().st_size > 0


@pytest.mark.slow
def test_int8_float_head_without_calibrate_only_falls_back(tmp_path, monkeypatch):
    _converters_without(monkeypatch, "_experimental_calibrate_only")
    images, _ = colour_data(n_per_class=2)
    info: dict = {}
    files = export_tflite(tiny_classifier(), tmp_path, images, kinds=("int8",), info=info,
                          method="from_keras_model")
    assert "_experimental_calibrate_only" in info["int8_head_fallback"]
    assert "int8_float_head" not in info
    assert float_ops(files["int8"]) == []  # the all-integer file
    out = TFLiteClassifier(files["int8"]).predict(images)
    assert out.shape == (len(images), 7) and np.allclose(out.sum(axis=1), 1, atol=0.03)


def test_mlir_quantize_missing_or_changed_is_a_reason(monkeypatch):
    from tensorflow.lite.python import convert as tfl_convert

    fn, reason = compat.mlir_quantize()
    assert fn is tfl_convert.mlir_quantize and reason is None

    def old(input_data_str, disable_per_channel=False):
        return b""

    monkeypatch.setattr(tfl_convert, "mlir_quantize", old)
    fn, reason = compat.mlir_quantize()
    assert fn is None and "denylisted_nodes" in reason
    monkeypatch.delattr(tfl_convert, "mlir_quantize")
    fn, reason = compat.mlir_quantize()
    assert fn is None and "has no mlir_quantize" in reason
    assert compat.PRIVATE_APIS["tensorflow.lite.python.convert.mlir_quantize"]() == reason


@pytest.mark.slow
def test_export_without_mlir_quantize_records_the_fallback(tmp_path, monkeypatch):
    from tensorflow.lite.python import convert as tfl_convert

    monkeypatch.delattr(tfl_convert, "mlir_quantize")
    images, _ = colour_data(n_per_class=2, size=SIZE)
    info: dict = {}
    files = export_tflite(tiny_classifier(), tmp_path, images, kinds=("int8",), info=info)
    assert "has no mlir_quantize" in info["int8_head_fallback"]
    assert float_ops(files["int8"]) == []


def test_producing_layer_and_its_absence():
    image = keras.Input((4,))
    soft = keras.layers.Softmax(name="soft")
    model = keras.Model(image, soft(keras.layers.Dense(7)(image)))
    assert compat.producing_layer(model.outputs[0]) is soft

    class Bare:
        name = "bare_tensor"

    with pytest.raises(CompatError, match="bare_tensor.*_keras_history.*'logits' or 'probs'"):
        compat.producing_layer(Bare())
