"""TensorRT session: a serialized engine run through TensorRT's name-based I/O API.

Needs TensorRT >= 8.5 (JetPack 5.1; the `set_input_shape` / `set_tensor_address` /
`execute_async_v3` API) and NVIDIA's cuda-python for device memory
(`cuda.bindings.runtime`, or `cuda.cudart` in releases before 12.6). No torch,
no pycuda.

- Shapes are set per call (`set_input_shape`) within the engine's optimization
  profile; a shape outside it fails with the profile and how to rebuild.
- Step-invariant inputs (the captioner's features and att1) are uploaded once
  by `bind()` and only re-pointed at every beam-search step.
- Engines do not move across TensorRT versions or GPUs: the build record
  (`tensorrt.json`, written next to the engines) is checked against this
  machine before TensorRT sees the engine, and a mismatch says to rebuild the
  engine on this device.
- TensorRT 8.5 has no INT64 tensors (its parser turns the captioner's int64
  `prev_word` input into INT32): feeds are cast to the engine's dtypes (range
  checked) and outputs back to the manifest's.

`python -m mmedge.runtime.backends.tensorrt adopt ...` turns engines built by
`trtexec` (a Jetson bundle's build_engines.sh) into an artifact directory that
`mmedge parity` / `mmedge profile` load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import ArtifactError, InputError, MissingDependencyError, MmedgeError
from mmedge.runtime.manifest import MANIFEST, TensorSpec, read_manifest, write_manifest
from mmedge.runtime.session import Feeds, Session

RECORD = "tensorrt.json"  # build record next to the engines
ENGINE_EXT = ".engine"
MIN_VERSION = (8, 5)
REBUILD = ("rebuild the engine on this device (`mmedge export MODEL --format tensorrt` where TensorRT and "
           "the GPU are, or build_engines.sh of a Jetson bundle on the board)")


# ------------------------------------------------------------------ packages
def import_tensorrt(purpose: str = "the tensorrt backend") -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError("tensorrt", "tensorrt", purpose) from None
    if version_tuple(trt.__version__)[:2] < MIN_VERSION:
        raise MmedgeError(f"TensorRT {trt.__version__} is too old for mmedge (needs >= 8.5: JetPack 5.1 or later)")
    return trt


def cuda_runtime(purpose: str = "the tensorrt backend") -> Any:
    """NVIDIA's CUDA runtime bindings (cuda-python)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
        except ImportError:
            raise MissingDependencyError("cuda-python", "tensorrt", purpose) from None
    return cudart


# TensorRT DataType -> numpy, keyed by the enum member's name (the same names from TensorRT 8.5 to
# 11). Not `trt.nptype`: TensorRT 8.5's maps BOOL to `np.bool`, which numpy 1.24 removed, so it
# raises AttributeError for every binding under a newer numpy.
TRT_NUMPY_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
                    "BOOL": "bool", "UINT8": "uint8"}


def trt_dtype_name(dtype: Any) -> str:
    """'FLOAT' for trt.DataType.FLOAT (its `.name`; else the tail of 'DataType.FLOAT')."""
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype).rsplit(".", 1)[-1]
    return name.upper()


def numpy_dtype(dtype: Any, where: str = "tensor") -> np.dtype:
    """The numpy dtype of a TensorRT DataType; one clear error for types numpy has none of."""
    name = trt_dtype_name(dtype)
    if name in TRT_NUMPY_DTYPES:
        return np.dtype(TRT_NUMPY_DTYPES[name])
    raise ArtifactError(f"{where} has TensorRT type {name}, which numpy has no dtype for (mmedge runs engines "
                        f"whose inputs and outputs are {', '.join(TRT_NUMPY_DTYPES)}); build the engine with "
                        f"those I/O types (e.g. trtexec --inputIOFormats/--outputIOFormats)")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(version))[:4])


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"


def _cuda_ok(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python (err, value...) tuple; raise one line on error."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise MmedgeError(f"CUDA {what} failed: {name}")
    return rest[0] if len(rest) == 1 else tuple(rest) if rest else None


def gpu_info(device: int = 0, purpose: str = "the tensorrt backend") -> GpuInfo:
    """Name and compute capability of a CUDA device; one clear error when there is none."""
    cudart = cuda_runtime(purpose)
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        raise MmedgeError(f"no CUDA GPU found (needed for {purpose}): TensorRT engines run only where an NVIDIA "
                          f"GPU and its driver are")
    if not 0 <= device < count:
        raise InputError(f"CUDA device {device} does not exist (this machine has {count})")
    prop = _cuda_ok(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}")


def cuda_available() -> bool:
    """True where TensorRT, cuda-python and a CUDA GPU are all present (tests skip otherwise)."""
    try:
        import_tensorrt()
        gpu_info()
        return True
    except Exception:  # any missing piece means "no"
        return False


# ------------------------------------------------------------------ build record
def read_record(artifact_dir: Path) -> dict[str, Any]:
    path = Path(artifact_dir) / RECORD
    if path.is_file():
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{path}: invalid JSON ({e})") from None
        if isinstance(rec, dict):
            return rec
        raise ArtifactError(f"{path}: expected a JSON object")
    if (Path(artifact_dir) / MANIFEST).is_file():
        with_extra = read_manifest(artifact_dir, verify=False).extra.tensorrt
        if with_extra is not None:
            return with_extra
    raise ArtifactError(f"{path}: missing; the engines' build record (TensorRT version, GPU) is needed to "
                        f"run them — {REBUILD}")


def compatibility_problem(record: dict[str, Any], trt_version: str, gpu: GpuInfo | None) -> str | None:
    """Why engines built as `record` says cannot run here (None: they can)."""
    built = str(record.get("tensorrt", ""))
    b, r = version_tuple(built), version_tuple(trt_version)
    where = f"TensorRT {built or '?'} on {record.get('gpu', {}).get('name', '?')} " \
            f"(compute capability {record.get('gpu', {}).get('compute_capability', '?')})"
    here = f"TensorRT {trt_version} on {gpu.name} (compute capability {gpu.compute_capability})" if gpu else \
        f"TensorRT {trt_version}"
    if not b:
        return f"the build record names no TensorRT version; {REBUILD}"
    if record.get("version_compatible"):
        if r[:1] != b[:1] or r < b:
            return f"engine built with {where} (version-compatible: runs on TensorRT {b[0]}.x >= {built}) " \
                   f"cannot run with {here}; {REBUILD}"
    elif r[:min(len(b), 3)] != b[:3]:
        return f"engine built with {where} cannot run with {here}: engines do not move across TensorRT " \
               f"versions; {REBUILD}"
    cc = str(record.get("gpu", {}).get("compute_capability", ""))
    level = str(record.get("hardware_compatibility") or "none")
    if gpu is not None and cc and cc != "unknown":
        here_cc, built_cc = version_tuple(gpu.compute_capability), version_tuple(cc)
        if level == "ampere+":
            if here_cc < (8, 0):
                return f"engine built with {where} for Ampere and later GPUs cannot run on {here}; {REBUILD}"
        elif here_cc != built_cc:
            return f"engine built with {where} cannot run on {here}: engines do not move across GPU " \
                   f"architectures; {REBUILD}"
    return None


def _warn_other_gpu(record: dict[str, Any], gpu: GpuInfo, path: Path) -> None:
    name = record.get("gpu", {}).get("name")
    level = str(record.get("hardware_compatibility") or "none")
    if name and name not in ("unknown", gpu.name) and level == "none":
        warnings.warn(f"{path}: engine built on {name}, running on {gpu.name} (same compute capability); "
                      f"TensorRT advises against moving engines between GPU models — rebuild it here if "
                      f"results or speed look wrong", stacklevel=3)


# ------------------------------------------------------------------ session
class _DeviceBuffer:
    def __init__(self, cudart: Any, nbytes: int) -> None:
        self.cudart, self.nbytes = cudart, max(int(nbytes), 1)
        self.ptr = int(_cuda_ok(cudart, cudart.cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            self.cudart.cudaFree(self.ptr)
            self.ptr = 0


class TrtSession(Session):
    backend = "tensorrt"

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], device: int = 0,
                 threads: int | None = None, **_: Any) -> None:
        super().__init__(path, inputs, outputs)
        self._buffers: dict[str, _DeviceBuffer] = {}
        self._bound_dev: dict[str, tuple[_DeviceBuffer, tuple[int, ...]]] = {}
        self._stream: Any = None
        trt = import_tensorrt()
        self.cudart = cudart = cuda_runtime()
        gpu = gpu_info(device)
        record = read_record(self.path.parent)
        problem = compatibility_problem(record, trt.__version__, gpu)
        if problem:
            raise ArtifactError(f"{self.path}: {problem}")
        _warn_other_gpu(record, gpu, self.path)
        _cuda_ok(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        graph_record = record.get("graphs", {}).get(self.path.stem, {})
        dla = graph_record.get("dla_core", record.get("dla_core"))
        if dla is not None:
            self._runtime.DLA_core = int(dla)
        if record.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True
        try:
            blob = self.path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"{self.path}: cannot read the engine ({e.strerror})") from None
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise ArtifactError(f"{self.path}: TensorRT {trt.__version__} cannot deserialize this engine "
                                f"(built with TensorRT {record.get('tensorrt', '?')} on "
                                f"{record.get('gpu', {}).get('name', '?')}); {REBUILD}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._in_names = [n for n in names if is_in[n]]
        self._out_names = [n for n in names if not is_in[n]]
        want_in, want_out = [t.name for t in inputs], [t.name for t in outputs]
        if sorted(self._in_names) != sorted(want_in) or not set(want_out) <= set(self._out_names):
            raise ArtifactError(f"{self.path}: engine inputs {self._in_names} / outputs {self._out_names} do not "
                                f"match the manifest ({want_in} / {want_out}); the file belongs to another model")
        self._dtypes = {n: numpy_dtype(self.engine.get_tensor_dtype(n), f"{self.path.name}: tensor {n!r}")
                        for n in names}
        self._profiles = {n: self._profile(n) for n in self._in_names}
        self._out_dtypes = {t.name: np.dtype(t.dtype) for t in outputs}
        self._stream = _cuda_ok(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._handle = int(self._stream)

    # ---------------------------------------------------------------- helpers
    def _profile(self, name: str) -> tuple[tuple[int, ...], ...] | None:
        get = getattr(self.engine, "get_tensor_profile_shape", None)
        if get is None:
            return None
        try:
            return tuple(tuple(int(d) for d in dims) for dims in get(name, 0))
        except Exception:  # not a shape tensor of profile 0 in old releases
            return None

    def _to_engine(self, name: str, array: np.ndarray) -> np.ndarray:
        """Contiguous host array in the engine's dtype (int64 -> int32 range-checked)."""
        want = self._dtypes[name]
        if array.dtype != want:
            if array.dtype.kind in "iu" and want.kind in "iu":
                info = np.iinfo(want)
                if array.size and (array.min() < info.min or array.max() > info.max):
                    raise InputError(f"{self.path.name}: input {name!r} has values outside {want} (the engine's "
                                     f"type for it)")
            array = array.astype(want)
        return np.ascontiguousarray(array)

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        prof = self._profiles.get(name)
        if prof is None or len(prof) != 3:
            return
        lo, _, hi = prof
        if len(lo) == len(shape) and any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise InputError(f"{self.path.name}: input {name!r} has shape {list(shape)}, outside the engine's "
                             f"optimization profile (min {list(lo)}, max {list(hi)}); rebuild the engine with a "
                             f"wider profile (--export-option profile.AXIS=MIN,OPT,MAX)")

    def _scratch(self, name: str, nbytes: int) -> _DeviceBuffer:
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self._buffers[name] = _DeviceBuffer(self.cudart, nbytes)
        return buf

    def _h2d(self, buf: _DeviceBuffer, host: np.ndarray) -> None:
        cu = self.cudart
        if host.nbytes:
            _cuda_ok(cu, cu.cudaMemcpyAsync(buf.ptr, host.ctypes.data, host.nbytes,
                                            cu.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream),
                     "cudaMemcpyAsync (host to device)")

    def _sync(self) -> None:
        _cuda_ok(self.cudart, self.cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    # ---------------------------------------------------------------- Session
    def _bind(self, name: str, array: np.ndarray) -> None:
        host = self._to_engine(name, array)
        self._check_profile(name, host.shape)
        old = self._bound_dev.pop(name, None)
        if old is not None:
            old[0].free()
        buf = _DeviceBuffer(self.cudart, host.nbytes)
        self._h2d(buf, host)
        self._sync()  # `host` may be a temporary
        self._bound_dev[name] = (buf, tuple(host.shape))

    def _unbind(self, name: str) -> None:
        old = self._bound_dev.pop(name, None)
        if old is not None:
            old[0].free()

    def _run(self, feeds: Feeds) -> Feeds:
        ctx, cu = self.context, self.cudart
        keep = []  # host arrays alive until the stream is synchronized
        for name in self._in_names:
            if name in feeds:
                host = self._to_engine(name, feeds[name])
                shape = tuple(host.shape)
                self._check_profile(name, shape)
                buf = self._scratch(name, host.nbytes)
                self._h2d(buf, host)
                keep.append(host)
            else:
                buf, shape = self._bound_dev[name]
            if ctx.set_input_shape(name, shape) is False:
                raise InputError(f"{self.path.name}: TensorRT refused shape {list(shape)} for input {name!r}")
            ctx.set_tensor_address(name, buf.ptr)
        results = {}
        for name in self._out_names:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise InputError(f"{self.path.name}: output {name!r} shape {list(shape)} is not determined by "
                                 f"the input shapes")
            host = np.empty(shape, self._dtypes[name])
            buf = self._scratch(name, host.nbytes)
            ctx.set_tensor_address(name, buf.ptr)
            results[name] = (host, buf)
        if not ctx.execute_async_v3(self._handle):
            raise MmedgeError(f"{self.path.name}: TensorRT execution failed (see the TensorRT log)")
        for host, buf in results.values():
            if host.nbytes:
                _cuda_ok(cu, cu.cudaMemcpyAsync(host.ctypes.data, buf.ptr, host.nbytes,
                                                cu.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream),
                         "cudaMemcpyAsync (device to host)")
        self._sync()
        del keep
        return {t.name: results[t.name][0].astype(self._out_dtypes[t.name], copy=False) for t in self.outputs}

    def _close(self) -> None:
        for buf in list(self._buffers.values()) + [b for b, _ in self._bound_dev.values()]:
            buf.free()
        self._buffers.clear()
        self._bound_dev.clear()
        if self._stream is not None:
            self.cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass


def create_session(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], **options: Any) -> TrtSession:
    return TrtSession(path, inputs, outputs, **options)


# ------------------------------------------------------------------ adopt (board side)
def write_engine_artifact(source: Path, engines: Path, precision: str, record: dict[str, Any]) -> Path:
    """Make `engines` (holding `<graph>.engine` files) an artifact directory of format `tensorrt`.

    The graphs, preprocessing, vocabulary and test vectors come from the source ONNX
    artifact; the build record goes to `tensorrt.json` and the manifest's extra.
    """
    src = read_manifest(source)
    engines = Path(engines)
    graphs = []
    for g in src.graphs:
        engine = engines / f"{g.name}{ENGINE_EXT}"
        if not engine.is_file():
            raise ArtifactError(f"{engine}: missing (build_engines.sh did not build graph {g.name!r})")
        graphs.append(replace(g, file=engine.name))  # name, interface and hints as the source's
    vec = src.extra.vectors_file
    if (Path(source) / vec).is_file():
        shutil.copyfile(Path(source) / vec, engines / vec)
    (engines / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # the engines hold the int8 scales: the source's Q/DQ layout and calibration caches do not carry over
    extra = replace(src.extra, int8_layout=None, tensorrt_calibration_cache=None, tensorrt=record)
    manifest = src.derive(format="tensorrt", precision=precision, graphs=graphs, extra=extra,
                          tools={**src.tools, "tensorrt": str(record.get("tensorrt", ""))})
    write_manifest(engines, manifest)
    return engines


def _local_gpu() -> GpuInfo | None:
    try:
        return gpu_info(purpose="recording the build GPU")
    except Exception:  # no cuda-python / GPU here: the record says "unknown"
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmedge.runtime.backends.tensorrt",
                                     description="Turn trtexec-built engines into an mmedge artifact directory.")
    sub = parser.add_subparsers(dest="command", required=True)
    adopt = sub.add_parser("adopt", help="write manifest.json + tensorrt.json next to <graph>.engine files")
    adopt.add_argument("--source", required=True, type=Path, help="the ONNX artifact the engines were built from")
    adopt.add_argument("--engines", required=True, type=Path, help="folder holding <graph>.engine")
    adopt.add_argument("--precision", required=True, choices=("fp32", "fp16", "int8"))
    adopt.add_argument("--trt-version", required=True)
    adopt.add_argument("--int8-source", default=None, choices=("qdq", "calib"))
    adopt.add_argument("--dla-core", type=int, default=None)
    adopt.add_argument("--gpu-only", action="append", default=[], metavar="GRAPH",
                       help="a graph built for the GPU although --dla-core is given")
    adopt.add_argument("--version-compatible", action="store_true")
    args = parser.parse_args(argv)
    try:
        gpu = _local_gpu()
        record = {"tensorrt": args.trt_version, "built_with": "trtexec", "precision": args.precision,
                  "gpu": {"name": gpu.name if gpu else os.environ.get("GPU_NAME", "unknown"),
                          "compute_capability": gpu.compute_capability if gpu else "unknown"},
                  "dla_core": args.dla_core, "version_compatible": bool(args.version_compatible),
                  "hardware_compatibility": "none", "int8_source": args.int8_source,
                  "graphs": {g.name: {"dla_core": None if args.dla_core is None or g.name in args.gpu_only
                                      else args.dla_core}
                             for g in read_manifest(args.source).graphs}}
        path = write_engine_artifact(args.source, args.engines, args.precision, record)
    except MmedgeError as e:
        print(f"mmedge: error: {e}", file=sys.stderr)
        return e.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
