"""Reading a ``.tflite`` file's graph from its flatbuffer (public LiteRT schema, no interpreter).

The ops, tensors and op versions come from ``ai_edge_litert.schema_py_generated``: the file as
written by the converter, before any delegate rewrites it. Used to find the int8 model's float
head before quantization (:func:`head_nodes`), to list the ops that still compute in float
(:func:`float_ops`) and the op versions an old runtime must know (:func:`op_versions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdskin.constants import NUM_CLASSES
from kdskin.errors import KdskinError

#: TFLite ops that carry weights; the float head starts after the last of them.
WEIGHTED_OPS: frozenset[str] = frozenset({"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D",
                                          "TRANSPOSE_CONV", "BATCH_MATMUL"})
#: Boundary casts of an integer model (float <-> int8), not counted as float compute.
BOUNDARY_OPS: frozenset[str] = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass(frozen=True)
class Op:
    """One operator of the main subgraph: builtin name, version, tensor indices (-1: none)."""

    index: int
    name: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Tensor:
    """One tensor: name, element type (``"float32"``, ``"int8"``, ...) and static shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    """The main subgraph of a ``.tflite`` model: ops in execution order, tensors, outputs."""

    ops: tuple[Op, ...]
    tensors: tuple[Tensor, ...]
    outputs: tuple[int, ...]


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise KdskinError("reading a .tflite graph needs ai-edge-litert: pip install "
                          "ai-edge-litert") from None
    return schema_py_generated


def _names(enum: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def read_graph(source: str | Path | bytes) -> Graph:
    """The main subgraph of a ``.tflite`` file (a path) or of its bytes."""
    schema = _schema()
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("no TFL3 file identifier")
        return _parse(schema, data)
    except Exception as exc:  # flatbuffers raises many types on garbage
        where = "model bytes" if isinstance(source, (bytes, bytearray)) else str(source)
        raise KdskinError(f"{where}: not a readable .tflite flatbuffer ({type(exc).__name__}); "
                          f"re-export it") from None


def _parse(schema: Any, data: bytes | bytearray) -> Graph:
    model = schema.Model.GetRootAsModel(data, 0)
    subgraph = model.Subgraphs(0)
    op_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    kinds = [(op_names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "CUSTOM"),
              int(c.Version()))
             for c in (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))]
    ops = []
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        name, version = kinds[op.OpcodeIndex()]
        ops.append(Op(i, name, version, _ints(op.Inputs, op.InputsLength()),
                      _ints(op.Outputs, op.OutputsLength())))
    tensors = []
    for i in range(subgraph.TensorsLength()):
        t = subgraph.Tensors(i)
        tensors.append(Tensor((t.Name() or b"").decode(),
                              type_names.get(t.Type(), "unknown").lower(),
                              _ints(t.Shape, t.ShapeLength())))
    return Graph(tuple(ops), tuple(tensors), _ints(subgraph.Outputs, subgraph.OutputsLength()))


def _ints(item: Any, length: int) -> tuple[int, ...]:
    """A flatbuffer int vector as a tuple (empty when absent)."""
    return tuple(int(item(j)) for j in range(length))


def op_versions(source: str | Path | bytes) -> dict[str, int]:
    """``{builtin op name: highest version}`` used by a .tflite file.

    An old runtime refuses a model whose op versions it does not know ("Didn't find op for
    builtin opcode ... version ..."); this is what to compare against.
    """
    versions: dict[str, int] = {}
    for op in read_graph(source).ops:
        versions[op.name] = max(versions.get(op.name, 0), op.version)
    return versions


def float_ops(source: str | Path | bytes) -> list[str]:
    """Ops of a .tflite file that compute in float (an input or output float32 tensor).

    The boundary QUANTIZE (float -> int8 input) and DEQUANTIZE (int8 -> float output) ops of an
    integer model are not counted. An empty list means everything runs in int8; an int8 file
    with a float head lists the head's ops (e.g. ADD, MUL, ADD, SOFTMAX).
    """
    graph = read_graph(source)
    found = []
    for op in graph.ops:
        if op.name in BOUNDARY_OPS:
            continue
        if any(graph.tensors[i].dtype == "float32" for i in (*op.inputs, *op.outputs) if i >= 0):
            found.append(op.name)
    return found


def head_nodes(source: str | Path | bytes) -> list[str]:
    """Output-tensor names of the ops that form the classification head of a .tflite model.

    Walks back from the model's output through ops that are not weighted layers
    (:data:`WEIGHTED_OPS`) and whose outputs are all (batch, 7): e.g. SOFTMAX <- ADD (fusion
    logits + exits average) <- MUL, ADD (the average). Stops at the dense layers.
    """
    graph = read_graph(source)
    producers = {out: op for op in graph.ops for out in op.outputs}
    names: list[str] = []
    todo = list(graph.outputs)
    seen: set[int] = set()
    while todo:
        op = producers.get(todo.pop())
        if op is None or op.index in seen or op.name in WEIGHTED_OPS:
            continue
        if op.name in BOUNDARY_OPS:
            todo.extend(i for i in op.inputs if i >= 0)
            continue
        if any(graph.tensors[i].shape[1:] != (NUM_CLASSES,) for i in op.outputs):
            continue
        seen.add(op.index)
        names.extend(graph.tensors[i].name for i in op.outputs)
        todo.extend(i for i in op.inputs if i >= 0)
    return names


def nodes_named(source: str | Path | bytes, marker: str) -> list[str]:
    """Output-tensor names of the ops whose output tensor name contains ``marker`` (e.g. the
    in-model ``pillow_downscale`` of an app file, kept in float in its int8 file)."""
    graph = read_graph(source)
    return [graph.tensors[i].name for op in graph.ops for i in op.outputs
            if i >= 0 and marker in graph.tensors[i].name]
