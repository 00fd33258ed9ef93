"""A minimal ONNX model writer: the few protobuf fields a one-node benchmark graph needs.

`mmedge profile --roofline` measures the machine through ONNX Runtime with tiny graphs
(one MatMul, MatMulInteger or Add node). A device install (`pip install mmedge[onnxruntime]`)
has no `onnx` package to build them with, so this module serialises them itself: protobuf's
wire format is two rules (varint keys/integers, length-delimited bytes) and the field numbers
below are those of onnx/onnx.proto. The tests check the bytes with `onnx.checker` and compare
them with what `onnx.helper` builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

IR_VERSION = 8  # what opset 17 needs; ONNX Runtime >= 1.14 reads it
OPSET = 17
# TensorProto.DataType
DTYPES = {np.dtype("float32"): 1, np.dtype("uint8"): 2, np.dtype("int8"): 3, np.dtype("int32"): 6,
          np.dtype("int64"): 7, np.dtype("float16"): 10}
BFLOAT16 = 16  # numpy has no bfloat16: tensors of it are declared by number


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 fields: two's complement, ten bytes
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field_no: int, value: int) -> bytes:
    return _varint(field_no << 3) + _varint(value)


def _bytes(field_no: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(field_no << 3 | 2) + _varint(len(data)) + data


def elem_type(dtype: np.dtype | str | int) -> int:
    """TensorProto.DataType of a numpy dtype (or the number itself, e.g. BFLOAT16)."""
    if isinstance(dtype, int):
        return dtype
    try:
        return DTYPES[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"no ONNX element type for {dtype}") from None


@dataclass
class Value:
    """A graph input or output: name, element type and shape (ints, or strings for dynamic axes)."""

    name: str
    dtype: np.dtype | str | int
    shape: Sequence[int | str]

    def encode(self) -> bytes:
        dims = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, d)) for d in self.shape)
        tensor_type = _int(1, elem_type(self.dtype)) + _bytes(2, dims)
        return _bytes(1, self.name) + _bytes(2, _bytes(1, tensor_type))


@dataclass
class Node:
    op_type: str
    inputs: Sequence[str]
    outputs: Sequence[str]
    domain: str = ""

    def encode(self) -> bytes:
        out = b"".join(_bytes(1, i) for i in self.inputs) + b"".join(_bytes(2, o) for o in self.outputs)
        return out + _bytes(4, self.op_type) + (_bytes(7, self.domain) if self.domain else b"")


def encode_initializer(name: str, array: np.ndarray) -> bytes:
    """A TensorProto with raw little-endian data (non-packed dims, as onnx.helper writes them)."""
    arr = np.ascontiguousarray(array)
    dims = b"".join(_int(1, int(d)) for d in arr.shape)
    raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return dims + _int(2, elem_type(arr.dtype)) + _bytes(8, name) + _bytes(9, raw)


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "mmedge_bench"

    def model_bytes(self, opset: int = OPSET, ir_version: int = IR_VERSION) -> bytes:
        """The serialised ModelProto (what `onnxruntime.InferenceSession` takes instead of a path)."""
        graph = (b"".join(_bytes(1, n.encode()) for n in self.nodes) + _bytes(2, self.name)
                 + b"".join(_bytes(5, encode_initializer(k, v)) for k, v in self.initializers.items())
                 + b"".join(_bytes(11, v.encode()) for v in self.inputs)
                 + b"".join(_bytes(12, v.encode()) for v in self.outputs))
        opset_id = _bytes(1, "") + _int(2, opset)
        return _int(1, ir_version) + _bytes(2, "mmedge") + _bytes(7, graph) + _bytes(8, opset_id)
