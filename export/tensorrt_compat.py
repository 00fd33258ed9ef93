"""Will TensorRT's ONNX parser take this graph? Checked without TensorRT or a GPU.

`mmedge export --format onnx --target tensorrt` and the tests run `check()` on
every exported graph, for the TensorRT releases a Jetson runs: 8.5 (JetPack 5)
and 10.3 (JetPack 6). It returns the problems that make parsing or building
fail (empty: compatible); `inspect()` also returns notes — things that work
with a caveat (TensorRT 8.5 casts INT64 graph inputs such as the captioner's
`prev_word` to INT32, which the runtime handles by casting feeds; a weighted
layer with only one quantized input runs in float).

What is checked, as data below:
- the ai.onnx opset is in the parser's range, and no node is from another domain;
- every operator is in the parser's support matrix, with the restrictions the
  matrix states (inputs that must be build-time constants, Pad/Resize modes,
  MaxPool's Indices output, ...);
- graph input/output dtypes;
- Q/DQ placement: int8 with zero point 0 (TensorRT parses nothing else — ONNX
  Runtime's x86 layout with uint8 activations fails), constant scales,
  per-tensor activations, per-channel weights along the output-channel axis,
  every QuantizeLinear feeding only DequantizeLinear nodes.

Sources (transcribed, not fetched at run time):
- TensorRT 8.5: onnx/onnx-tensorrt branch release/8.5-GA, docs/operators.md
  ("TensorRT 8.5 supports operators up to Opset 17"; INT64 cast down to INT32).
- TensorRT 10.x: onnx/onnx-tensorrt docs/operators.md of the 10.x releases
  ("TensorRT 10.0 supports operators in the inclusive range of opset 9 to
  opset 20"; native INT64; UINT8 only as network input/output; INT8 only as a
  quantized type through Q/DQ). The table was read from a later 10.x release;
  operators of opsets past 20 are left out of 10.3, and those the later table
  lists but 10.3's may not are reported as notes (`UNVERIFIED_10_3`), not
  problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmedge.export.targets import register_target

VERSIONS = ("8.5", "10.3")  # JetPack 5, JetPack 6

_COMMON = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSigmoid HardSwish Identity If ImageScaler
InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# "N" rows of the 8.5 matrix (named in messages; any other unknown op is refused too)
_UNSUPPORTED_8_5 = frozenset("""
Bernoulli BitShift BlackmanWindow Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear
HammingWindow HannWindow Hardmax IsInf LayerNormalization MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix
Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul
STFT SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap
SoftmaxCrossEntropyLoss SplitToSequence StringNormalizer TfIdfVectorizer Unique
""".split())

# 10.x additions over 8.5 that 10.3 has (LayerNormalization: opset 17; CastLike: 15)
_ADDED_10 = frozenset({"LayerNormalization", "CastLike"})
# listed by the later 10.x matrix; whether 10.3's parser has them is not verified here
UNVERIFIED_10_3 = frozenset({"BlackmanWindow", "HammingWindow", "HannWindow", "STFT", "DeformConv", "Gelu",
                             "GroupNormalization", "Mish", "Hardmax", "IsInf"})
_UNSUPPORTED_10 = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert
SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit
TfIdfVectorizer Unique Attention RMSNormalization RotaryEmbedding TensorScatter
""".split())  # the last four: opsets 23-24, past 10.3's range

_REDUCE = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
           "ReduceProd", "ReduceSum", "ReduceSumSquare")


@dataclass(frozen=True)
class TrtSpec:
    version: str
    opset: tuple[int, int]  # inclusive ai.onnx opset range of the parser
    supported: frozenset[str]
    unsupported: frozenset[str]
    unverified: frozenset[str]
    io_ok: frozenset[str]  # graph input/output element types taken as they are
    io_cast: dict[str, str]  # element type -> what the parser does with it (a note)
    qdq_types: frozenset[str]  # quantized types of Q/DQ
    # op -> {input index: what it is}: inputs that must be build-time constants
    const_inputs: dict[str, dict[int, str]] = field(default_factory=dict)
    pad_modes: frozenset[str] = frozenset({"constant", "reflect", "edge"})


_CONST_BOTH: dict[str, dict[int, str]] = {"Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"}, "CumSum": {1: "axis"},
                                          **{op: {1: "axes"} for op in _REDUCE}}

SPECS: dict[str, TrtSpec] = {
    "8.5": TrtSpec(
        "8.5", (7, 17), _COMMON, _UNSUPPORTED_8_5, frozenset(),
        io_ok=frozenset({"FLOAT", "FLOAT16", "INT32", "BOOL"}),
        io_cast={"INT64": "TensorRT 8.5 has no INT64: the parser casts it to INT32 (values must fit; the mmedge "
                          "runtime casts feeds and outputs)",
                 "DOUBLE": "TensorRT 8.5 casts DOUBLE to FLOAT"},
        qdq_types=frozenset({"INT8"}),
        const_inputs={**_CONST_BOTH, "Slice": {3: "axes"}, "TopK": {1: "K"}},
    ),
    "10.3": TrtSpec(
        "10.3", (9, 20), (_COMMON | _ADDED_10 | UNVERIFIED_10_3), _UNSUPPORTED_10, UNVERIFIED_10_3,
        io_ok=frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "BOOL", "UINT8"}),
        io_cast={"DOUBLE": "TensorRT 10 casts DOUBLE to FLOAT"},
        qdq_types=frozenset({"INT8", "FLOAT8E4M3FN", "INT4"}),
        const_inputs={**_CONST_BOTH, "OneHot": {1: "depth"}, "Dropout": {2: "training_mode"}},
    ),
}

_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
# weighted ops: input index of the weights -> the per-channel axis TensorRT fuses (None: by attribute)
_WEIGHTED = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


@dataclass(frozen=True)
class Finding:
    version: str  # "8.5", "10.3", or "8.5, 10.3"
    severity: str  # "problem" | "note"
    message: str

    def __str__(self) -> str:
        return f"TensorRT {self.version}: {self.message}"


class _Graph:
    """Lookups over one ONNX graph: constants, producers, consumers."""

    def __init__(self, model: Any) -> None:
        import onnx

        self.model, self.graph = model, model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.type_name = onnx.TensorProto.DataType.Name
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.const = set(self.initializers)
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.graph.node:
            if n.op_type == "Constant":
                self.const.update(n.output)
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)

    def array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant" and _attr(p, "value") is not None:
            return numpy_helper.to_array(_attr(p, "value"))
        return None

    def op_of(self, name: str) -> str:
        return getattr(self.producer.get(name), "op_type", "")


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _weight_axis(node: Any, rank: int) -> int:
    """The output-channel axis of a weighted op's weights: the axis TensorRT's per-channel scales run along."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    return rank - 1  # MatMul: output columns


Add = Callable[[str, str], None]


def _inspect_version(g: _Graph, spec: TrtSpec) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def add(severity: str, msg: str) -> None:
        found.append((severity, msg))

    if g.opset and not spec.opset[0] <= g.opset <= spec.opset[1]:
        add("problem", f"opset {g.opset} is outside the parser's range {spec.opset[0]}..{spec.opset[1]}")
    for kind, values in (("input", g.graph.input), ("output", g.graph.output)):
        for v in values:
            if kind == "input" and v.name in g.initializers:
                continue
            et = g.type_name(v.type.tensor_type.elem_type) if v.type.HasField("tensor_type") else "non-tensor"
            if et in spec.io_ok:
                continue
            if et in spec.io_cast:
                add("note", f"graph {kind} {v.name!r} is {et}: {spec.io_cast[et]}")
            else:
                add("problem", f"graph {kind} {v.name!r} has type {et}, not taken at the network's boundary")
    for n in g.graph.node:
        label = f"{n.op_type} node {n.name or n.output[0]!r}"
        if n.domain not in ("", "ai.onnx"):
            add("problem", f"{label} is from domain {n.domain!r}; the parser reads ai.onnx operators only")
            continue
        if n.op_type not in spec.supported:
            why = "listed as unsupported" if n.op_type in spec.unsupported else "not in the support matrix"
            add("problem", f"{label}: operator {n.op_type} is {why}")
            continue
        if n.op_type in spec.unverified:
            add("note", f"{label}: {n.op_type} is in later 10.x support matrices, not verified for this release")
        for idx, what in spec.const_inputs.get(n.op_type, {}).items():
            if idx < len(n.input) and n.input[idx] and n.input[idx] not in g.const:
                add("problem", f"{label}: input {what} must be a build-time constant (initializer)")
        if n.op_type == "Pad" and (mode := str(_attr(n, "mode", "constant"))) not in spec.pad_modes:
            add("problem", f"{label}: pad mode {mode!r} is not supported (constant, reflect, edge)")
        if n.op_type == "Resize":
            mode = str(_attr(n, "mode", "nearest"))
            coord = str(_attr(n, "coordinate_transformation_mode", "half_pixel"))
            if mode not in _RESIZE_MODES:
                add("problem", f"{label}: resize mode {mode!r} is not supported (nearest, linear)")
            if coord not in _RESIZE_COORDS:
                add("problem", f"{label}: coordinate_transformation_mode {coord!r} is not supported")
            if _attr(n, "antialias", 0):
                add("problem", f"{label}: antialiasing is not supported")
        if n.op_type == "MaxPool" and len(n.output) > 1 and n.output[1] and n.output[1] in g.consumers:
            add("problem", f"{label}: the Indices output is not supported")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            _check_qdq(g, n, label, spec, add)
        if n.op_type in _WEIGHTED:
            quantized = [bool(i) and g.op_of(i) == "DequantizeLinear" for i in n.input[:2]]
            if any(quantized) and not all(quantized):
                add("note", f"{label}: only one of its inputs is quantized, so it runs in float")
    return found


def _qtype(g: _Graph, n: Any) -> str | None:
    """The quantized element type of a Q/DQ node (None: not known statically)."""
    zp_name = n.input[2] if len(n.input) > 2 else ""
    if zp_name in g.initializers:
        return g.type_name(g.initializers[zp_name].data_type)
    if zp_name:
        zp = g.array(zp_name)
        return None if zp is None else _np_type(zp)
    if n.op_type == "QuantizeLinear":
        return "UINT8"  # ONNX's output type of a QuantizeLinear without a zero point
    src = g.array(n.input[0])
    return None if src is None else _np_type(src)


def _np_type(a: np.ndarray) -> str:
    return {np.dtype(np.int8): "INT8", np.dtype(np.uint8): "UINT8", np.dtype(np.int16): "INT16",
            np.dtype(np.uint16): "UINT16", np.dtype(np.int32): "INT32"}.get(a.dtype, str(a.dtype).upper())


def _check_qdq(g: _Graph, n: Any, label: str, spec: TrtSpec, add: Add) -> None:
    scale_name = n.input[1] if len(n.input) > 1 else ""
    zp_name = n.input[2] if len(n.input) > 2 else ""
    if scale_name not in g.const:
        add("problem", f"{label}: scale must be a constant")
    scale = g.array(scale_name)
    if zp_name:
        zp = g.array(zp_name)
        if zp is None:
            add("problem", f"{label}: zero point must be a constant")
        elif np.any(zp != 0):
            add("problem", f"{label}: zero point must be 0 (TensorRT quantizes symmetrically)")
    qtype = _qtype(g, n)
    if qtype is not None and qtype not in spec.qdq_types:
        add("problem", f"{label}: quantized type {qtype} (TensorRT takes {', '.join(sorted(spec.qdq_types))} "
                       f"with zero point 0)")
    per_channel = scale is not None and scale.size > 1
    if per_channel and g.opset < 13:
        add("problem", f"{label}: per-channel scales need opset >= 13")
    if n.op_type == "QuantizeLinear":
        bad = sorted({c.op_type for c in g.consumers.get(n.output[0], []) if c.op_type != "DequantizeLinear"})
        if bad:
            add("problem", f"{label}: feeds {', '.join(bad)}; every QuantizeLinear must be followed by "
                           f"DequantizeLinear")
        if per_channel and n.input[0] not in g.const:
            add("problem", f"{label}: activations must be quantized per tensor (scalar scale)")
        return
    src = g.producer.get(n.input[0])
    from_q = getattr(src, "op_type", "") == "QuantizeLinear"
    if not from_q and n.input[0] not in g.const:
        add("problem", f"{label}: its input comes from {getattr(src, 'op_type', 'a graph input')}, not from "
                       f"QuantizeLinear or a constant")
    weight_name = src.input[0] if from_q else n.input[0]
    if not per_channel:
        return
    if weight_name not in g.const:
        add("problem", f"{label}: activations must be dequantized per tensor (scalar scale)")
        return
    w = g.array(weight_name)
    rank = w.ndim if w is not None else 0
    axis = int(_attr(n, "axis", 1))
    axis = axis + rank if axis < 0 else axis
    for c in g.consumers.get(n.output[0], []):
        if c.op_type in _WEIGHTED and list(c.input).index(n.output[0]) == _WEIGHTED[c.op_type]:
            want = _weight_axis(c, rank)
            if axis != want:
                add("problem", f"{label}: per-channel weights of {c.op_type} must be quantized along axis {want} "
                               f"(output channels), not {axis}")


def inspect(path: Path, versions: tuple[str, ...] = VERSIONS) -> list[Finding]:
    """Problems and notes of one ONNX file for each TensorRT version (merged when they agree)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # not ONNX at all: one problem, not a traceback
        return [Finding(", ".join(versions), "problem", f"{Path(path).name}: not a readable ONNX file "
                                                         f"({e.__class__.__name__})")]
    graph = _Graph(model)
    per: dict[tuple[str, str], list[str]] = {}
    for v in versions:
        if v not in SPECS:
            raise ValueError(f"no TensorRT spec for {v!r}; known: {', '.join(SPECS)}")
        for severity, msg in _inspect_version(graph, SPECS[v]):
            vs = per.setdefault((severity, msg), [])
            if v not in vs:
                vs.append(v)
    return [Finding(", ".join(vs), sev, msg) for (sev, msg), vs in per.items()]


@register_target("tensorrt")
def check(path: Path) -> list[str]:
    """Problems that stop TensorRT 8.5 or 10.3 from parsing/building `path` (empty: compatible)."""
    return [str(f) for f in inspect(Path(path)) if f.severity == "problem"]


def notes(path: Path) -> list[str]:
    return [str(f) for f in inspect(Path(path)) if f.severity == "note"]
