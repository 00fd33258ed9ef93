"""What one run of an ONNX graph costs: FLOPs of its matrix ops and the weight bytes it reads.

The roofline section of `mmedge profile` divides these by the measured time and the machine's
peaks (`runtime/peaks.py`). They are counted once, at export time, from the ONNX file (written
into the manifest as the graph's `cost`), or at profile time for artifacts without one.

Counting rules (batch 1; shapes from `onnx.shape_inference` after the dynamic input axes are
fixed: axis 0, the batch, to 1 and every other dynamic axis to the test vectors' size):

- `flops` = 2 x multiply-accumulates of the matrix ops, the convention of every GEMM peak:
  Conv / ConvInteger / QLinearConv: N x M x prod(out spatial) x C/group x prod(kernel);
  ConvTranspose: N x C_in x prod(in spatial) x M/group x prod(kernel);
  MatMul / MatMulInteger / QLinearMatMul: prod(output) x K; Gemm: M x N x K;
  LSTM / GRU / RNN: seq x batch x directions x gates x H x (input + H), gates 4 / 3 / 1.
  A quantized graph counts the same MACs as its float original (QDQ pairs around a Conv are
  the Conv's data path, not extra work).
- `elementwise` = one operation per output element of every other node (Add, Relu, Softmax,
  Reshape, ...): reported apart, never added to `flops`, since their cost is memory traffic.
- `weight_bytes` = the bytes of the initializers and Constant nodes read per run, each counted
  once however many nodes use it; a table read only by Gather (an embedding) counts the rows
  gathered, not the whole table.

Control-flow subgraphs (If, Loop, Scan) are not entered: their nodes count as elementwise
outputs. OpenVINO IR (`.xml`) is counted by the same rules on its own ops (Convolution,
GroupConvolution, ConvolutionBackpropData, MatMul, LSTM/GRU/RNNSequence; Constants for the
weights), so an OpenVINO artifact gets the FLOPs of the ONNX graph it came from. Needs the
`onnx` (or `openvino`) package, imported inside the functions: the runtime never requires it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from mmedge.errors import ArtifactError

if TYPE_CHECKING:  # annotations only: the runtime imports onnx only to count
    import numpy as np

    from mmedge.runtime.manifest import GraphEntry

COUNTER = "mmedge-graph-cost/1"  # changes when a counting rule changes meaning
# TensorProto.DataType -> bits per element
_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128,
         16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4}
_CONV = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}  # op -> (input index of x, of w)
_MATMUL = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}  # op -> (a, b)
_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# Shape inference copies the whole model through C++ (seconds for a 170 MB encoder): weights go
# in without their values; small tensors (shapes, axes) keep them for data propagation.
_KEEP_VALUES = 1024
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


@dataclass
class GraphCost:
    """One run of a graph at batch 1 (see the module docstring for the counting rules)."""

    flops: int
    weight_bytes: int
    elementwise: int
    inputs: dict[str, list[int]]  # the input shapes the count was made at
    by_op: dict[str, int] = field(default_factory=dict)  # flops per op type
    batch: int = 1
    counter: str = COUNTER

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GraphCost":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _numel(shape: list[int]) -> int:
    return math.prod(shape) if shape else 1


def _tensor_bytes(dims: Any, data_type: int) -> int:
    return (_numel([int(d) for d in dims]) * _BITS.get(int(data_type), 32) + 7) // 8


def _shapes(graph: Any) -> dict[str, list[int] | None]:
    """Static shape of every named value (None where a dim is unknown)."""
    out: dict[str, list[int] | None] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        out[vi.name] = None if any(d is None for d in dims) else [int(d) for d in dims]
    for init in graph.initializer:
        out[init.name] = [int(d) for d in init.dims]
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _node_macs(node: Any, shape: Any) -> int | None:
    """Multiply-accumulates of one matrix node; None for the others."""
    op = node.op_type
    if op in _CONV:
        w, y = shape(node.input[_CONV[op][1]]), shape(node.output[0])
        return y[0] * y[1] * _numel(y[2:]) * w[1] * _numel(w[2:])  # w: [M, C/group, k...]
    if op == "ConvTranspose":
        x, w = shape(node.input[0]), shape(node.input[1])  # w: [C, M/group, k...]
        return x[0] * x[1] * _numel(x[2:]) * w[1] * _numel(w[2:])
    if op in _MATMUL:
        a = shape(node.input[_MATMUL[op][0]])
        return _numel(shape(node.output[0])) * a[-1]
    if op == "Gemm":
        a, y = shape(node.input[0]), shape(node.output[0])
        return y[0] * y[1] * (a[0] if _attr(node, "transA", 0) else a[1])
    if op in _RNN_GATES:
        x, r = shape(node.input[0]), shape(node.input[2])  # x: [seq, batch, input]; r: [dirs, gates*H, H]
        if _attr(node, "layout", 0):
            x = [x[1], x[0], x[2]]
        return x[0] * x[1] * r[0] * r[1] * (x[2] + r[2])
    return None


def _weight_bytes(graph: Any, shape: Any) -> int:
    """Initializer and Constant bytes; a table only ever Gathered counts the gathered rows."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    total = 0
    tensors = [(t.name, t.dims, t.data_type) for t in graph.initializer]
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
            if value is not None:
                tensors.append((node.output[0], value.dims, value.data_type))
    for name, dims, data_type in tensors:
        users = consumers.get(name, [])
        if users and all(n.op_type == "Gather" and i == 0 for n, i in users):
            rows = 0
            for n, _ in users:
                y = shape(n.output[0])
                rows += _numel(y)
            total += (rows * _BITS.get(int(data_type), 32) + 7) // 8
        elif users:
            total += _tensor_bytes(dims, data_type)
    return total


def count_onnx(model: Any, input_shapes: Mapping[str, list[int]]) -> GraphCost:
    """Cost of one run of `model` (an onnx.ModelProto) with its inputs at `input_shapes`."""
    import onnx

    where = model.graph.name or "graph"
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for t in fixed.graph.initializer:  # shape inference needs their dims, and the values of small ones only
        if _numel(list(t.dims)) > _KEEP_VALUES:
            for data in _DATA_FIELDS:
                t.ClearField(data)
    inits = {t.name for t in fixed.graph.initializer}
    for vi in fixed.graph.input:
        if vi.name in inits:
            continue
        if vi.name not in input_shapes:
            raise ArtifactError(f"{where}: no shape given for input {vi.name!r} to count its cost")
        want = list(input_shapes[vi.name])
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(want):
            raise ArtifactError(f"{where}: input {vi.name!r} has rank {len(dims)}, shape given {want}")
        for d, n in zip(dims, want):
            d.Clear()
            d.dim_value = int(n)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception as e:  # onnx raises its own error types; one line naming the graph
        raise ArtifactError(f"{where}: ONNX shape inference failed ({str(e).splitlines()[0][:200]})") from None
    g = inferred.graph
    shapes = _shapes(g)

    def shape(name: str) -> list[int]:
        s = shapes.get(name)
        if s is None:
            raise ArtifactError(f"{where}: cannot infer the static shape of {name!r} to count its cost")
        return s

    flops, elementwise, by_op = 0, 0, {}
    for node in g.node:
        if node.op_type == "Constant":
            continue
        macs = _node_macs(node, shape)
        if macs is None:
            out = shapes.get(node.output[0]) if node.output else None
            elementwise += _numel(out) if out is not None else 0
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + 2 * macs
        flops += 2 * macs
    return GraphCost(flops, _weight_bytes(g, shape), elementwise,
                     {k: list(map(int, v)) for k, v in input_shapes.items()}, by_op)


def counting_shapes(graph: "GraphEntry", vectors: Mapping[str, "np.ndarray"] | None) -> dict[str, list[int]]:
    """The input shapes a graph is counted at: fixed dims as declared, dynamic axis 0 (the batch)
    at 1, any other dynamic axis at the size of the artifact's test vector."""
    out = {}
    for t in graph.inputs:
        vec = None if vectors is None else vectors.get(f"{graph.name}.{t.name}")
        dims = []
        for axis, d in enumerate(t.shape):
            if isinstance(d, int):
                dims.append(d)
            elif axis == 0:
                dims.append(1)
            elif vec is not None and vec.ndim == len(t.shape):
                dims.append(int(vec.shape[axis]))
            else:
                raise ArtifactError(f"graph {graph.name!r}: input {t.name!r} axis {axis} ({d!r}) is dynamic and "
                                    f"there is no test vector to size it")
        out[t.name] = dims
    return out


def onnx_file_cost(path: str | Path, graph: "GraphEntry", vectors: Mapping[str, "np.ndarray"] | None) -> GraphCost:
    """Cost of an ONNX graph file of an artifact (weights stay on disk: only their dims are read)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # a protobuf DecodeError or OSError: one line naming the file
        raise ArtifactError(f"{path}: not a readable ONNX file ({str(e).splitlines()[0][:200] if str(e) else e})"
                            ) from None
    model.graph.name = model.graph.name or graph.name
    return count_onnx(model, counting_shapes(graph, vectors))


# ============================================================================ OpenVINO IR
_OV_GATES = {"LSTMSequence": 5, "GRUSequence": 4, "RNNSequence": 4}  # op -> input index of R


def _ov_macs(op: Any) -> int | None:
    """Multiply-accumulates of one OpenVINO op (the same rules as ONNX's); None for the others."""
    kind = op.get_type_name()

    def shape(port: Any) -> list[int]:
        return [int(d) for d in port.get_shape()]

    if kind in ("Convolution", "GroupConvolution"):
        w, y = shape(op.input(1)), shape(op.output(0))
        w = w[1:] if kind == "GroupConvolution" else w  # [G, M/G, C/G, k...] -> [M/G, C/G, k...]
        return y[0] * y[1] * _numel(y[2:]) * w[1] * _numel(w[2:])
    if kind in ("ConvolutionBackpropData", "GroupConvolutionBackpropData"):
        x, w = shape(op.input(0)), shape(op.input(1))  # w: [C, M, k...] or [G, C/G, M/G, k...]
        w = w[1:] if kind.startswith("Group") else w
        return x[0] * x[1] * _numel(x[2:]) * w[1] * _numel(w[2:])
    if kind == "MatMul":
        a = shape(op.input(0))
        k = a[-2] if op.get_attributes().get("transpose_a") and len(a) > 1 else a[-1]
        return _numel(shape(op.output(0))) * k
    if kind in _OV_GATES:  # x: [batch, seq, input]; r: [dirs, gates*H, H]
        x, r = shape(op.input(0)), shape(op.input(_OV_GATES[kind]))
        return x[0] * x[1] * r[0] * r[1] * (x[2] + r[2])
    return None


def count_openvino(model: Any, input_shapes: Mapping[str, list[int]]) -> GraphCost:
    """Cost of one run of an `openvino.Model` with its inputs at `input_shapes` (reshaped in place)."""
    import openvino as ov

    where = model.get_friendly_name() or "graph"
    try:
        model.reshape({p.get_any_name(): ov.PartialShape(list(input_shapes[p.get_any_name()]))
                       for p in model.inputs})
    except KeyError as e:
        raise ArtifactError(f"{where}: no shape given for input {e.args[0]!r} to count its cost") from None
    except Exception as e:  # OpenVINO's shape errors
        raise ArtifactError(f"{where}: OpenVINO cannot reshape it to {dict(input_shapes)} "
                            f"({str(e).strip().splitlines()[0][:200] if str(e).strip() else e})") from None
    flops, elementwise, weight_bytes, by_op = 0, 0, 0, {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Constant":
            users = [t.get_node() for t in op.output(0).get_target_inputs()]
            gathered = [u for u in users if u.get_type_name() == "Gather" and u.input_value(0).get_node() is op]
            if users and len(gathered) == len(users):  # a table only ever gathered: the rows read
                bits = op.get_element_type().bitwidth
                weight_bytes += sum(_numel([int(d) for d in u.get_output_shape(0)]) * bits + 7 for u in gathered) // 8
            else:
                weight_bytes += int(op.get_byte_size())
            continue
        if kind in ("Parameter", "Result"):
            continue
        try:
            macs = _ov_macs(op)
        except RuntimeError:  # a dynamic shape left after reshape
            raise ArtifactError(f"{where}: cannot infer the static shape of {op.get_friendly_name()!r} to count "
                                f"its cost") from None
        if macs is None:
            out = op.get_output_partial_shape(0) if op.get_output_size() else None
            elementwise += _numel([d.get_length() for d in out]) if out is not None and out.is_static else 0
            continue
        by_op[kind] = by_op.get(kind, 0) + 2 * macs
        flops += 2 * macs
    return GraphCost(flops, weight_bytes, elementwise, {k: list(map(int, v)) for k, v in input_shapes.items()}, by_op)


def openvino_file_cost(path: str | Path, graph: "GraphEntry",
                       vectors: Mapping[str, "np.ndarray"] | None) -> GraphCost:
    """Cost of an OpenVINO IR graph file (`.xml` + `.bin`) of an artifact."""
    from mmedge.runtime.backends.openvino import core  # one Core per process

    try:
        model = core().read_model(str(path))
    except Exception as e:  # OpenVINO raises RuntimeError with a C++ trace
        raise ArtifactError(f"{path}: OpenVINO cannot read it ({str(e).strip().splitlines()[0][:200]})") from None
    model.set_friendly_name(graph.name)
    return count_openvino(model, counting_shapes(graph, vectors))


def file_cost(path: str | Path, graph: "GraphEntry", vectors: Mapping[str, "np.ndarray"] | None) -> GraphCost:
    """Cost of an ONNX (`.onnx`) or OpenVINO (`.xml`) graph file; ArtifactError for other formats."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return onnx_file_cost(path, graph, vectors)
    if suffix == ".xml":
        return openvino_file_cost(path, graph, vectors)
    raise ArtifactError(f"{path}: no cost counter for {suffix or 'this'} files (ONNX and OpenVINO IR only)")


COUNTABLE = {".onnx": "onnx", ".xml": "openvino"}  # graph file suffix -> the package that counts it
