"""Keras classifier -> ``.tflite`` files: float32, dynamic-range and integer int8.

Every file holds the whole deployed model: preprocessing (inside the Keras model) and the final
softmax (the model is wrapped by ``to_deployable``), so it takes RGB pixels 0..255 at the model's
input size and returns 7 probabilities in ``CLASSES`` order under the signature output ``"probs"``.
Before conversion the first convolution after the input rescaling is rewritten, exactly, to see
centred pixels (``x - 128``; :mod:`kdskin.export.centre`), which shrinks its int8 weight error.

The int8 file has int8 weights (per-channel for convolutions by default) and int8 activations
in every layer with weights, calibrated on a class-stratified sample of the *training* split.
Its input is **uint8** and takes raw 0..255 pixels: the calibration sample is anchored so the
input range is exactly 0..255, which makes the input scale 1.0 and zero point 0 (checked after
conversion and written to ``export.json``; runtimes still read them). Its output is **float32**
probabilities by default, which removes the most common deployment bug, reading uint8 scores as
probabilities (tensorflow#53069).

``int8_head="float"`` (default): the *head*, the element-wise ops between the last weighted
layers and the output on (batch, 7) tensors (averaging the exits, adding the fusion logits,
softmax), runs in float32 on the dequantized 7-value logits. An int8 logits tensor has a step of
range/255 (~0.06 for logits spanning -8..8), so images whose two best classes are closer than
that come out *tied*, and argmax then picks the lower class index: on the cpu-config student
15 of the 22 test disagreements with Keras were such ties, all broken the same way. The float
head costs a few dozen float operations per image. ``int8_head="int8"`` keeps every op in
integer (needed with ``int8_output="uint8"``, for integer-only accelerators); its uint8 output
has scale 1/256, zero point 0.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdskin.constants import CLASSES, LABELS_FILE, NUM_CLASSES, PROBS_NAME
from kdskin.errors import DataError, ModelError

#: Conversion kinds and their file names.
KINDS: tuple[str, ...] = ("fp32", "dynamic", "int8")
FILE_NAMES: dict[str, str] = {kind: f"model_{kind}.tflite" for kind in KINDS}
INT8_OUTPUTS: tuple[str, ...] = ("float32", "uint8")
INT8_HEADS: tuple[str, ...] = ("float", "int8")
#: TFLite ops that carry weights; the float head starts after the last of them.
WEIGHTED_OPS: frozenset[str] = frozenset({"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D",
                                          "TRANSPOSE_CONV", "BATCH_MATMUL"})


# --------------------------------------------------------------------------- model checks


def output_tensors(model: Any) -> dict[str, Any]:
    """The named outputs of a functional Keras model: ``{name: KerasTensor}``.

    Dict outputs keep their keys; a single tensor or a list is named by its layer name.
    """
    try:
        out = model.output
    except (AttributeError, ValueError) as exc:
        raise ModelError(f"{getattr(model, 'name', model)!s}: not a functional Keras model "
                         f"with defined outputs ({exc.__class__.__name__}); pass a kdskin "
                         f"classifier") from None
    if isinstance(out, dict):
        return dict(out)
    names = list(getattr(model, "output_names", []) or [])
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    if len(names) != len(outs):
        names = [f"output_{i}" for i in range(len(outs))]
    return dict(zip(names, outs, strict=True))


def check_classifier(model: Any) -> tuple[int, str]:
    """Check that ``model`` is a kdskin classifier; return ``(image_size, head_name)``.

    A kdskin classifier has one input of shape (batch, S, S, 3) and an output named "probs" or
    "logits" of shape (batch, 7). Raises :class:`ModelError` (one line) otherwise.
    """
    name = getattr(model, "name", type(model).__name__)
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ModelError(f"model '{name}': expected exactly one input (an RGB image), got "
                         f"{0 if not inputs else len(inputs)}; pass a kdskin classifier")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelError(f"model '{name}': input must be (batch, S, S, 3), got rank "
                         f"{len(shape)} shape {shape}; pass a kdskin image classifier")
    if shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ModelError(f"model '{name}': input must be a fixed square RGB image "
                         f"(batch, S, S, 3), got {shape}")
    outputs = output_tensors(model)
    for head in (PROBS_NAME, "logits"):
        if head in outputs:
            out_shape = tuple(outputs[head].shape)
            if len(out_shape) != 2 or out_shape[-1] != NUM_CLASSES:
                raise ModelError(f"model '{name}': output '{head}' must be (batch, "
                                 f"{NUM_CLASSES}), got {out_shape}; pass a kdskin classifier")
            return int(shape[1]), head
    raise ModelError(f"model '{name}': no 'logits' or 'probs' output (outputs: "
                     f"{', '.join(outputs) or 'none'}); pass a kdskin classifier")


def deployable(model: Any) -> Any:
    """The model with a single output "probs" = softmax(logits), ready to convert.

    A model whose only output is already "probs" is returned as is.
    """
    _, head = check_classifier(model)
    outputs = output_tensors(model)
    if head == PROBS_NAME and len(outputs) == 1:
        return model
    from kdskin.models.deploy import to_deployable

    wrapped = to_deployable(model)
    check_classifier(wrapped)
    return wrapped


# --------------------------------------------------------------------------- calibration data


def representative_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a class-stratified sample of ``n`` items of ``labels`` (N,) int, shuffled.

    Every class present gets at least one item; the rest is shared in proportion to the class
    frequencies (largest remainder, capped by the class size). All N indices if n >= N.
    """
    labels = np.asarray(labels).astype(int).reshape(-1)
    if len(labels) == 0:
        raise DataError("no training images to calibrate the int8 model with")
    if n < 1:
        raise DataError(f"representative sample size must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    if n >= len(labels):
        return rng.permutation(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):  # not enough room for one per class: take the most frequent ones
        keep = np.sort(np.argsort(-counts, kind="stable")[:n])
        classes, counts = classes[keep], counts[keep]
    quota = np.ones(len(classes), int)
    spare = n - len(classes)
    if spare:
        extra = spare * (counts - 1) / max((counts - 1).sum(), 1)
        add = np.minimum(np.floor(extra).astype(int), counts - 1)
        left = spare - int(add.sum())
        order = np.argsort(-(extra - np.floor(extra)), kind="stable")
        while left > 0:  # largest remainder first, skipping classes already used up
            progressed = False
            for k in order:
                if left > 0 and add[k] < counts[k] - 1:
                    add[k] += 1
                    left -= 1
                    progressed = True
            if not progressed:
                break
        quota += add
    picked = np.concatenate([rng.choice(np.flatnonzero(labels == c), q, replace=False)
                             for c, q in zip(classes, quota, strict=True)])
    return rng.permutation(picked)


def representative_sample(images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0
                          ) -> np.ndarray:
    """A class-stratified sample of ``n`` images (from the TRAINING split) for calibration.

    ``images`` (N, S, S, 3) uint8 or float 0..255, ``labels`` (N,) int. Returns
    (min(n, N), S, S, 3) with the dtype of ``images`` (see :func:`representative_indices`).
    """
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"representative images must be (N, S, S, 3), got {images.shape}")
    if len(labels) != len(images):
        raise DataError(f"{len(images)} representative images but {len(labels)} labels")
    return images[representative_indices(labels, n, seed)]


def _calibration_batches(representative: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's ``representative_dataset``: one float32 image per step, 0..255.

    The first image gets one pixel 0 and one pixel 255 so the calibrated input range is exactly
    0..255, i.e. input scale 1.0 / zero point 0 and raw uint8 pixels can be fed as they are.
    """
    raw = np.asarray(representative)
    data = raw.astype(np.float32)
    if np.issubdtype(raw.dtype, np.floating) and data.max(initial=0.0) <= 1.0:
        raise DataError("representative images look normalised to 0..1; pass raw 0..255 pixels "
                        "(preprocessing is inside the model)")
    data = data.copy()
    data[0, 0, 0, :] = 0.0
    data[0, 0, -1, :] = 255.0

    def gen() -> Iterator[list[np.ndarray]]:
        for image in data:
            yield [image[None]]
    return gen


# --------------------------------------------------------------------------- conversion


def _converter(model: Any, method: str, saved_model_dir: Path | None) -> Any:
    import tensorflow as tf

    if method == "from_keras_model":
        return tf.lite.TFLiteConverter.from_keras_model(model)
    assert saved_model_dir is not None
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))


def _configure(converter: Any, kind: str, representative: np.ndarray | None, per_channel: bool,
               int8_output: str) -> None:
    import tensorflow as tf

    if kind == "fp32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if not per_channel:
        converter._experimental_disable_per_channel = True
    if kind == "dynamic":
        # Per-channel hybrid FULLY_CONNECTED is op version 12, which tflite-runtime 2.14 (still
        # on many boards) cannot load; per-tensor dense weights keep it loadable there.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    if kind == "int8":
        converter.representative_dataset = _calibration_batches(representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8 if int8_output == "uint8" else tf.float32


def head_nodes(model_content: bytes) -> list[str]:
    """Output-tensor names of the ops that form the classification head of a .tflite model.

    Walks back from the model's output through ops that are not weighted layers
    (:data:`WEIGHTED_OPS`) and whose outputs are all (batch, 7): e.g. SOFTMAX <- ADD (fusion
    logits + exits average) <- MUL, ADD (the average). Stops at the dense layers.
    """
    ops, tensors, outputs = _op_graph(model_content=model_content)
    producers = {out: op for op in ops for out in op["outputs"]}
    names: list[str] = []
    todo = list(outputs)
    seen: set[int] = set()
    while todo:
        op = producers.get(todo.pop())
        if op is None or op["index"] in seen or op["op_name"] in WEIGHTED_OPS:
            continue
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            todo.extend(i for i in op["inputs"] if i >= 0)
            continue
        if any(tuple(tensors[i]["shape"][1:]) != (NUM_CLASSES,) for i in op["outputs"]):
            continue
        seen.add(op["index"])
        names.extend(tensors[i]["name"] for i in op["outputs"])
        todo.extend(i for i in op["inputs"] if i >= 0)
    return names


def _int8_with_float_head(converter: Any, per_channel: bool, info: dict[str, Any]) -> bytes:
    """Calibrate with ``converter`` (configured for int8), then quantize everything but the head.

    Uses the calibrate-only mode and ``mlir_quantize`` with a node denylist, the machinery
    behind ``tf.lite.experimental.QuantizationDebugger``. If that private API is missing, falls
    back to the all-integer conversion and says why in ``info["int8_head_fallback"]``.
    """
    import tensorflow as tf

    try:
        from tensorflow.lite.python import convert as tfl_convert

        converter._experimental_calibrate_only = True
        calibrated = converter.convert()
        head = head_nodes(calibrated)
        flatbuffer = tfl_convert.mlir_quantize(
            calibrated, disable_per_channel=not per_channel, input_data_type=tf.uint8,
            output_data_type=tf.float32, denylisted_nodes=head)
    except (ImportError, AttributeError, TypeError) as exc:
        info["int8_head_fallback"] = _one_line(exc)
        converter._experimental_calibrate_only = False
        return converter.convert()
    info["int8_float_head"] = head
    return flatbuffer


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_labels(out_dir: Path) -> Path:
    """Write ``labels.txt`` (one class a line, CLASSES order) into ``out_dir``."""
    path = Path(out_dir) / LABELS_FILE
    _atomic_write_bytes(path, ("\n".join(CLASSES) + "\n").encode())
    return path


def export_tflite(model: Any, out_dir: str | Path, representative: np.ndarray | None,
                  kinds: Sequence[str] = KINDS, per_channel: bool = True,
                  int8_output: str = "float32", method: str = "auto",
                  info: dict[str, Any] | None = None, centre_input: bool = True,
                  int8_head: str = "float") -> dict[str, Path]:
    """Convert a kdskin classifier to ``.tflite`` files in ``out_dir``; write ``labels.txt``.

    ``model``: a training model (outputs with "logits") or a deployable one ("probs" only);
    it is wrapped by ``to_deployable`` so every file ends in the softmax. ``representative``:
    (N, S, S, 3) uint8 or float 0..255 images from the TRAINING split (needed for "int8"; see
    :func:`representative_sample`). ``method``: "auto" (``from_keras_model``, falling back to
    ``model.export`` + ``from_saved_model`` on failure, keras#19108), "from_keras_model" or
    "saved_model". ``info``, if given, receives the method used per kind, the centred
    convolutions (``centre_input``, see :mod:`kdskin.export.centre`) and the int8 head's float
    ops (``int8_head``: "float" or "int8", see the module docstring).

    Returns ``{kind: path}`` plus ``"labels"``. Files are written atomically; a failed
    conversion leaves no partial file behind. Raises :class:`ModelError` for a model that is not
    a kdskin classifier or cannot be converted.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ModelError(f"unknown export kinds {unknown or list(kinds)}; choose from "
                         f"{', '.join(KINDS)}")
    if int8_output not in INT8_OUTPUTS:
        raise ModelError(f"int8_output must be one of {', '.join(INT8_OUTPUTS)}, got "
                         f"{int8_output!r}")
    if int8_head not in INT8_HEADS:
        raise ModelError(f"int8_head must be one of {', '.join(INT8_HEADS)}, got {int8_head!r}")
    if int8_head == "float" and int8_output == "uint8" and "int8" in kinds:
        raise ModelError("int8_head='float' gives float32 probabilities; with "
                         "int8_output='uint8' use int8_head='int8'")
    if method not in ("auto", "from_keras_model", "saved_model"):
        raise ModelError(f"method must be auto, from_keras_model or saved_model, got {method!r}")
    size, _ = check_classifier(model)
    if "int8" in kinds:
        if representative is None or len(representative) == 0:
            raise DataError("the int8 export needs representative training images; pass "
                            "representative=representative_sample(train_images, ...)")
        rep_shape = tuple(np.shape(representative))
        if len(rep_shape) != 4 or rep_shape[1:] != (size, size, 3):
            raise DataError(f"representative images must be (N, {size}, {size}, 3), got "
                            f"{rep_shape}")
    deploy = deployable(model)
    info = {} if info is None else info
    if centre_input:
        from kdskin.export.centre import centre_first_convs

        deploy, info["centred_convs"] = centre_first_convs(deploy)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = info.setdefault("method", {})
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="kdskin_savedmodel_") as tmp:
        saved_model_dir: Path | None = None
        current = "from_keras_model" if method in ("auto", "from_keras_model") else "saved_model"
        for kind in kinds:
            while True:
                try:
                    if current == "saved_model" and saved_model_dir is None:
                        saved_model_dir = Path(tmp) / "saved_model"
                        with _quiet_stdout():
                            deploy.export(str(saved_model_dir), format="tf_saved_model",
                                          verbose=False)
                    converter = _converter(deploy, current, saved_model_dir)
                    _configure(converter, kind, representative, per_channel, int8_output)
                    with _quiet_stdout():
                        if kind == "int8" and int8_head == "float":
                            flatbuffer = _int8_with_float_head(converter, per_channel, info)
                        else:
                            flatbuffer = converter.convert()
                    break
                except (DataError, ModelError):
                    raise
                except Exception as exc:  # converter errors are many types; keep one line
                    if method == "auto" and current == "from_keras_model":
                        info.setdefault("fallback_reason", _one_line(exc))
                        current = "saved_model"
                        continue
                    raise ModelError(f"model '{model.name}': {kind} TFLite conversion failed "
                                     f"({current}): {_one_line(exc)}") from None
            path = out_dir / FILE_NAMES[kind]
            _atomic_write_bytes(path, flatbuffer)
            methods[kind] = current
            paths[kind] = path
    paths["labels"] = write_labels(out_dir)
    return paths


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) < 300 else text[:297] + "..."
    return f"{exc.__class__.__name__}: {text}"


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence the 'Saved artifact at ...' listing that Keras prints on export."""
    import io

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # Always emitted for a uint8 input: the input range comes from calibration instead.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        yield


# --------------------------------------------------------------------------- inspection


def tensor_io(path: str | Path) -> dict[str, dict[str, Any]]:
    """Signature input/output dtypes and quantization of a .tflite file.

    Returns ``{"input": {name, dtype, scale, zero_point, shape}, "output": {...}}``.
    """
    from kdskin.export.litert import TFLiteClassifier

    clf = TFLiteClassifier(path)
    return {"input": clf.input_info(), "output": clf.output_info()}


def _op_graph(path: str | Path | None = None, model_content: bytes | None = None
              ) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]], list[int]]:
    """``(ops, {tensor index: details}, output tensor indices)`` of a .tflite model, read
    without the default delegates (XNNPACK would replace ops by a DELEGATE node)."""
    from kdskin.export.litert import _interpreter_class

    interpreter_cls, _ = _interpreter_class()
    kwargs: dict[str, Any] = {}
    resolver = _without_delegates()
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver
    if model_content is not None:
        kwargs["model_content"] = model_content
    else:
        kwargs["model_path"] = str(path)
    interpreter = interpreter_cls(**kwargs)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    outputs = [d["index"] for d in interpreter.get_output_details()]
    return interpreter._get_ops_details(), tensors, outputs


def float_ops(path: str | Path) -> list[str]:
    """Ops of a .tflite file that compute in float (an input or output float32 tensor).

    The boundary QUANTIZE (float -> int8 input) and DEQUANTIZE (int8 -> float output) ops of a
    integer model are not counted. An empty list means everything runs in int8; an int8 file
    with a float head lists the head's ops (e.g. ADD, MUL, ADD, SOFTMAX).
    """
    ops, tensors, _ = _op_graph(path)
    dtypes = {i: np.dtype(t["dtype"]).name for i, t in tensors.items()}
    found = []
    for op in ops:
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        used = [dtypes.get(i) for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        if "float32" in used:
            found.append(op["op_name"])
    return found


def op_versions(path: str | Path) -> dict[str, int]:
    """``{builtin op name: highest version}`` used by a .tflite file (read from its flatbuffer).

    An old runtime refuses a model whose op versions it does not know ("Didn't find op for
    builtin opcode ... version ..."); this is what to compare against.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    versions: dict[str, int] = {}
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        versions[name] = max(versions.get(name, 0), int(code.Version()))
    return versions


def _without_delegates() -> Any:
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:
        return None
    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


# export_and_check lives with the evaluation code; importable from here too (kdskin.run does).
from kdskin.export.litert import export_and_check  # noqa: E402

__all__ = ["FILE_NAMES", "KINDS", "check_classifier", "deployable", "export_and_check",
           "export_tflite", "float_ops", "head_nodes", "op_versions", "representative_indices",
           "representative_sample", "tensor_io", "write_labels"]
