"""Fake TensorRT and cuda-python modules for the runtime's TensorRT session (no GPU, no torch, no onnx).

Shared by tests/test_tensorrt.py and tests/test_tensorrt_session.py (the latter is in the
torch-free jobs: .ci/floors.sh and .ci/pythons.sh on Python 3.8-3.12). The fake `tensorrt`
reports tensor types as `DataType` members, as TensorRT does, and its `nptype` raises as
TensorRT 8.5's does under numpy >= 1.24 (it maps BOOL to `np.bool`): the runtime must use its
own table.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pytest

from mmedge.runtime.backends import tensorrt as trtrt
from mmedge.runtime.manifest import TensorSpec


class DataType(enum.Enum):
    """tensorrt.DataType's members (a pybind11 enum there: `.name` is 'FLOAT', ...)."""

    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


def nptype_85(trt_type: Any) -> Any:
    """TensorRT 8.5.2's `trt.nptype` under numpy >= 1.24: its table holds `np.bool`."""
    raise AttributeError("module 'numpy' has no attribute 'bool'.\n`np.bool` was a deprecated alias for the builtin "
                         "`bool`. To avoid this error in existing code, use `bool` by itself.")


class FakeCudart:
    """cuda-python's runtime API over host memory: enough for the session's calls."""

    class cudaError_t:  # noqa: N801 - cuda-python's names
        cudaSuccess = 0

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self, devices: int = 1) -> None:
        self.devices, self.mem, self.next, self.h2d = devices, {}, 4096, []

    def cudaGetDeviceCount(self) -> tuple:  # noqa: N802
        return (0, self.devices)

    def cudaGetDeviceProperties(self, dev: int) -> tuple:  # noqa: N802
        return (0, types.SimpleNamespace(name=b"Fake Orin", major=8, minor=7))

    def cudaSetDevice(self, dev: int) -> tuple:  # noqa: N802
        return (0,)

    def cudaMalloc(self, n: int) -> tuple:  # noqa: N802
        ptr, self.next = self.next, self.next + n + 64
        self.mem[ptr] = bytearray(n)
        return (0, ptr)

    def cudaFree(self, ptr: int) -> tuple:  # noqa: N802
        self.mem.pop(ptr, None)
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: Any) -> tuple:  # noqa: N802
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.mem[dst][:n] = ctypes.string_at(src, n)
            self.h2d.append(dst)
        else:
            ctypes.memmove(dst, bytes(self.mem[src][:n]), n)
        return (0,)

    def cudaStreamCreate(self) -> tuple:  # noqa: N802
        return (0, 7)

    def cudaStreamSynchronize(self, s: Any) -> tuple:  # noqa: N802
        return (0,)

    def cudaStreamDestroy(self, s: Any) -> tuple:  # noqa: N802
        return (0,)


def fake_tensorrt(cudart: FakeCudart, version: str = "8.5.2.2",
                  types_: Optional[Dict[str, str]] = None) -> Any:
    """TensorRT 8.5-like engine: feats [N,4] f32, prev_word [N] INT32, h [N,2] -> out [N,4], word [N] INT32."""
    # types_: tensor name -> DataType name reported by the engine instead (e.g. {"out": "BF16"})
    io = {"feats": ("in", np.float32), "prev_word": ("in", np.int32), "h": ("in", np.float32),
          "out": ("out", np.float32), "word": ("out", np.int32)}
    reported = {"feats": DataType.FLOAT, "prev_word": DataType.INT32, "h": DataType.FLOAT, "out": DataType.FLOAT,
                "word": DataType.INT32}
    reported.update({n: DataType[t] for n, t in (types_ or {}).items()})

    class Context:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}
            self.addr: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addr[name] = ptr

        def get_tensor_shape(self, name: str) -> tuple:
            n = self.shapes["feats"][0]
            return (n, 4) if name == "out" else (n,)

        def read(self, name: str) -> np.ndarray:
            dt = io[name][1]
            shape = self.shapes[name]
            size = int(np.prod(shape)) * np.dtype(dt).itemsize
            return np.frombuffer(bytes(cudart.mem[self.addr[name]][:size]), dt).reshape(shape)

        def execute_async_v3(self, handle: int) -> bool:
            feats, word, h = self.read("feats"), self.read("prev_word"), self.read("h")
            out = (feats * word[:, None] + h.sum(1, keepdims=True)).astype(np.float32)
            cudart.mem[self.addr["out"]][:out.nbytes] = out.tobytes()
            w = (word + 1).astype(np.int32)
            cudart.mem[self.addr["word"]][:w.nbytes] = w.tobytes()
            return True

    class Engine:
        num_io_tensors = len(io)

        def get_tensor_name(self, i: int) -> str:
            return list(io)[i]

        def get_tensor_mode(self, name: str) -> str:
            return "IN" if io[name][0] == "in" else "OUT"

        def get_tensor_dtype(self, name: str) -> Any:
            return reported[name]

        def get_tensor_profile_shape(self, name: str, profile: int) -> list:
            tail = {"feats": (4,), "h": (2,), "prev_word": ()}[name]
            return [(1, *tail), (3, *tail), (6, *tail)]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> Any:
            return Engine() if blob.startswith(b"fake-engine") else None

    class Logger:
        ERROR = 1

        def __init__(self, level: int) -> None:
            pass

    return types.SimpleNamespace(__version__=version, Logger=Logger, Runtime=Runtime, nptype=nptype_85,
                                 DataType=DataType,
                                 TensorIOMode=types.SimpleNamespace(INPUT="IN"))


SPECS_IN = [TensorSpec("feats", ["batch", 4], "float32"), TensorSpec("prev_word", ["batch"], "int64"),
            TensorSpec("h", ["batch", 2], "float32")]
SPECS_OUT = [TensorSpec("out", ["batch", 4], "float32"), TensorSpec("word", ["batch"], "int64")]


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[FakeCudart, Path]:
    cudart = FakeCudart()
    trt = fake_tensorrt(cudart)
    monkeypatch.setattr(trtrt, "cuda_runtime", lambda *a: cudart)
    monkeypatch.setattr(trtrt, "import_tensorrt", lambda *a: trt)
    engine = tmp_path / "step.engine"
    engine.write_bytes(b"fake-engine")
    (tmp_path / "tensorrt.json").write_text(json.dumps(
        {"tensorrt": "8.5.2", "gpu": {"name": "Fake Orin", "compute_capability": "8.7"}}))
    return cudart, engine
