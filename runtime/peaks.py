"""The machine's peaks, measured through a backend: matrix throughput per precision and memory bandwidth.

`mmedge profile` divides each graph's FLOPs and weight bytes (`runtime/graph_cost.py`) by its
time and by these peaks, so a stage's efficiency says how far it is from what this backend can
do on this machine with the same threads, not from a datasheet number.

- **GEMM**: an n x n x n matrix product (n = 1024 to start, doubled while one run takes under
  5 ms so per-call overhead stays below ~1%), the left matrix an input, the right one a
  constant (as a graph's weights: the backend prepacks it). Best of `runs` runs after a warm-up;
  peak = 2 n^3 / best time. ONNX Runtime: `MatMul` fp32, `MatMulInteger` uint8 x int8 (the
  kernel behind ORT's int8 Conv and MatMul), `MatMul` bfloat16 where a kernel exists (fp16 is
  not measured: no ONNX artifact is fp16).
  OpenVINO: a model built in memory with the opset API, compiled with INFERENCE_PRECISION_HINT
  f32 / bf16 / f16, int8 through FakeQuantize on both operands (reported only when the compiled
  model really runs the product in int8).
- **Bandwidth**, two ways, both through the backend on float32 data of at least 4x the
  last-level caches (STREAM's rule), inputs and output bound once:
  `stream_add`: STREAM's Add kernel, c = a + b, one `Add` node; bytes counted as STREAM counts
  them, 2 reads + 1 write per element (the write-allocate read some CPUs add is not counted);
  `weights_read`: y = x W, x one row, W [K, N] (a decoder step's access pattern: every weight
  read once per call); bytes counted = W's alone (x and y are under 0.1% of it).
  The ceiling the efficiencies use (`bandwidth`) is the higher of the two: a backend's Add can
  trail its matrix kernels' streaming (OpenVINO's does), and a stage reading weights faster
  than the "peak" would otherwise show more than 100%.

A precision the backend cannot run gets no number, and a note saying why ("n/a (backend): ...").
"""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmedge.errors import MmedgeError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MEMORY = ("stream_add", "weights_read")
MIN_RUN_S = 0.005  # a GEMM run shorter than this is doubled in size (call overhead)
MAX_GEMM_N = 8192
STREAM_MIN_BYTES = 64 << 20  # per array, whatever the caches
STREAM_MAX_BYTES = 1 << 30


@dataclass
class PeakOptions:
    gemm_n: int = 1024  # first GEMM size (doubled while too fast)
    runs: int = 5  # timed runs; the best counts
    warmup: int = 1
    stream_bytes: int | None = None  # per array; None: max(64 MiB, 4 x last-level caches), at most 1 GiB
    threads: int | None = None  # as the profiled sessions (None: the backend's default)
    session: dict[str, Any] = field(default_factory=dict)  # backend options: providers=, device=


@dataclass
class Peak:
    """One measured peak: value in FLOP/s (ops/s for int8) or B/s; None with `note` when not measured."""

    value: float | None
    unit: str
    how: str = ""
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "value": float(f"{self.value:.6g}") if self.value is not None else None}


@dataclass
class MachinePeaks:
    backend: str
    threads: int | None
    compute: dict[str, Peak]  # precision -> peak
    memory: dict[str, Peak]  # "stream_add", "weights_read" -> bandwidth
    seconds: float = 0.0  # what measuring took

    @property
    def bandwidth(self) -> Peak:
        """The memory ceiling: the higher of the measured bandwidths (a note when none was measured)."""
        got = [p for p in self.memory.values() if p.value is not None]
        if not got:
            notes = "; ".join(dict.fromkeys(p.note or "" for p in self.memory.values())) or "n/a: not measured"
            return Peak(None, "B/s", "", notes)
        best = max(got, key=lambda p: p.value or 0.0)
        return Peak(best.value, "B/s", best.how)

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "threads": self.threads, "seconds": round(self.seconds, 3),
                "compute": {k: v.to_json() for k, v in self.compute.items()},
                "memory": {k: v.to_json() for k, v in self.memory.items()}, "bandwidth": self.bandwidth.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "MachinePeaks":
        return cls(d["backend"], d.get("threads"), {k: Peak(**v) for k, v in d["compute"].items()},
                   {k: Peak(**v) for k, v in d.get("memory", {}).items()}, d.get("seconds", 0.0))


# ============================================================================ helpers
def best_seconds(call: Callable[[], Any], runs: int, warmup: int) -> float:
    """The fastest of `runs` timed calls after `warmup` untimed ones (gc off, as timeit does)."""
    for _ in range(warmup):
        call()
    was = gc.isenabled()
    gc.disable()
    try:
        best = math.inf
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t0)
    finally:
        if was:
            gc.enable()
    return best


def last_level_cache_bytes(sysfs: Path = Path("/sys/devices/system/cpu")) -> int | None:
    """Sum of the distinct highest-level caches (Linux sysfs); None where unknown."""
    caches: dict[tuple[str, str], int] = {}
    for index in sysfs.glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
            shared = (index / "shared_cpu_list").read_text().strip()
            kind = (index / "type").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:].upper(), 1)
        caches[(str(level), shared)] = int(size.rstrip("KMGkmg") or 0) * mult
    if not caches:
        return None
    top = max(int(level) for level, _ in caches)
    return sum(v for (level, _), v in caches.items() if int(level) == top)


def stream_array_bytes(requested: int | None = None) -> int:
    """Bytes per STREAM array: STREAM's rule (4x the last-level caches), at least 64 MiB, at most
    1 GiB and an eighth of the available memory."""
    if requested is not None:
        return int(requested)
    llc = last_level_cache_bytes() or (32 << 20)
    want = min(max(STREAM_MIN_BYTES, 4 * llc), STREAM_MAX_BYTES)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        want = min(want, max(16 << 20, avail // 8))
    except (ValueError, OSError, AttributeError):
        pass
    return want


def _gemm_peak(measure: Callable[[int], float], n0: int, label: str, runs: int) -> Peak:
    """Grow n until one run takes MIN_RUN_S; peak = 2 n^3 / best seconds of `measure(n)`."""
    n = n0
    while True:
        best = measure(n)
        if best >= MIN_RUN_S or 2 * n > MAX_GEMM_N:
            return Peak(2.0 * n ** 3 / best, "FLOP/s", f"{label} {n}x{n}x{n}, best of {runs}")
        n *= 2


def _first_line(e: BaseException) -> str:
    text = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip() and "Exception from" not in ln)
    return (text or e.__class__.__name__)[:200]


# ============================================================================ ONNX Runtime
def _ort_session(model: bytes, opts: PeakOptions) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if opts.threads:  # as runtime/backends/onnxruntime.py sets them
        so.intra_op_num_threads = opts.threads
        so.inter_op_num_threads = 1
    providers = opts.session.get("providers") or ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    return ort.InferenceSession(model, so, providers=providers)


class _BoundRun:
    """One ONNX Runtime run with the inputs and the output bound once (no allocation or copy per call)."""

    def __init__(self, sess: Any, feeds: dict[str, np.ndarray], out: np.ndarray) -> None:
        import onnxruntime as ort

        self.sess, self.binding = sess, sess.io_binding()
        self.values = [ort.OrtValue.ortvalue_from_numpy(v) for v in (*feeds.values(), out)]  # kept alive here
        for name, value in zip(feeds, self.values):
            self.binding.bind_ortvalue_input(name, value)
        self.binding.bind_ortvalue_output(sess.get_outputs()[0].name, self.values[-1])

    def __call__(self) -> None:
        self.sess.run_with_iobinding(self.binding)


_ORT_GEMMS = {  # precision -> (op, A dtype, B dtype, output dtype, label)
    "fp32": ("MatMul", np.float32, np.float32, np.float32, "ONNX MatMul fp32"),
    "int8": ("MatMulInteger", np.uint8, np.int8, np.int32, "ONNX MatMulInteger u8 x s8"),
}


def _ort_gemm(precision: str, opts: PeakOptions) -> Peak:
    from mmedge.runtime.onnx_writer import BFLOAT16, Graph, Node, Value

    rng = np.random.default_rng(0)
    if precision == "fp16":  # not worth the second: no ONNX artifact is fp16 (fp16 is TensorRT's / Core ML's)
        return Peak(None, "FLOP/s", "ONNX MatMul fp16", "n/a: not measured (mmedge's ONNX artifacts are fp32 "
                    "or int8)")
    if precision == "bf16":
        n = 64  # only asks whether a kernel exists
        g = Graph([Node("MatMul", ["a", "b"], ["y"])], [Value("a", BFLOAT16, [n, n]), Value("b", BFLOAT16, [n, n])],
                  [Value("y", BFLOAT16, [n, n])])
        try:
            _ort_session(g.model_bytes(), opts)
        except Exception as e:  # ORT: NOT_IMPLEMENTED, no kernel for this type
            why = "no bfloat16 MatMul kernel" if "NOT_IMPLEMENTED" in str(e) else _first_line(e)
            return Peak(None, "FLOP/s", "ONNX MatMul bf16", f"n/a (backend): {why}")
        return Peak(None, "FLOP/s", "ONNX MatMul bf16", "n/a (backend): a bf16 MatMul loads, but numpy "
                    "cannot feed bfloat16 inputs to time it")
    op, ta, tb, ty, label = _ORT_GEMMS[precision]

    def measure(n: int) -> float:
        if ta is np.uint8:
            a, b = rng.integers(0, 256, (n, n), dtype=np.uint8), rng.integers(-127, 128, (n, n), dtype=np.int8)
        else:
            a, b = rng.standard_normal((n, n)).astype(ta), rng.standard_normal((n, n)).astype(tb)
        g = Graph([Node(op, ["a", "b"], ["y"])], [Value("a", ta, [n, n])], [Value("y", ty, [n, n])], {"b": b})
        sess = _ort_session(g.model_bytes(), opts)
        return best_seconds(_BoundRun(sess, {"a": a}, np.empty((n, n), ty)), opts.runs, opts.warmup)

    try:
        return _gemm_peak(measure, opts.gemm_n, label, opts.runs)
    except Exception as e:  # a provider without this kernel: say so, keep the other precisions
        return Peak(None, "FLOP/s", label, f"n/a (backend): {_first_line(e)}")


def _stream_how(what: str, n: int, runs: int) -> str:
    return f"{what} c = a + b (STREAM Add), 3 x {4 * n / 2**20:.0f} MiB float32, 12 B/element counted, best of {runs}"


def _weights_how(what: str, k: int, runs: int) -> str:
    return f"{what} y = x W, W {k}x{k} float32 ({4 * k * k / 2**20:.0f} MiB) read per call, best of {runs}"


def _ort_memory(opts: PeakOptions) -> dict[str, Peak]:
    from mmedge.runtime.onnx_writer import Graph, Node, Value

    n = stream_array_bytes(opts.stream_bytes) // 4
    k = int(math.isqrt(n))
    add = Graph([Node("Add", ["a", "b"], ["c"])], [Value("a", np.float32, [n]), Value("b", np.float32, [n])],
                [Value("c", np.float32, [n])])
    gemv = Graph([Node("MatMul", ["x", "w"], ["y"])], [Value("x", np.float32, [1, k]), Value("w", np.float32, [k, k])],
                 [Value("y", np.float32, [1, k])])
    a, b, c = np.full(n, 1.0, np.float32), np.full(n, 2.0, np.float32), np.zeros(n, np.float32)
    out = {}
    for name, graph, feeds, result, nbytes, how in (  # W reuses a's memory: one set of large arrays
            ("stream_add", add, {"a": a, "b": b}, c, 12 * n, _stream_how("ONNX Add", n, opts.runs)),
            ("weights_read", gemv, {"x": b[:k].reshape(1, k), "w": a[:k * k].reshape(k, k)}, c[:k].reshape(1, k),
             4 * k * k, _weights_how("ONNX MatMul", k, opts.runs))):
        try:
            best = best_seconds(_BoundRun(_ort_session(graph.model_bytes(), opts), feeds, result), opts.runs,
                                opts.warmup)
            out[name] = Peak(nbytes / best, "B/s", how)
        except Exception as e:  # noqa: BLE001 - a provider that cannot run it: no number, the reason
            out[name] = Peak(None, "B/s", how, f"n/a (backend): {_first_line(e)}")
    return out


def onnxruntime_peaks(opts: PeakOptions) -> tuple[dict[str, Peak], dict[str, Peak]]:
    return {p: _ort_gemm(p, opts) for p in PRECISIONS}, _ort_memory(opts)


# ============================================================================ OpenVINO
_OV_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}


def _ov_opset() -> Any:
    try:
        import openvino.opset13 as ops
    except ImportError:  # OpenVINO before 2024.x
        import openvino.runtime.opset13 as ops  # type: ignore[no-redef]
    return ops


def _ov_compile(model: Any, precision: str, opts: PeakOptions) -> Any:
    from mmedge.runtime.backends.openvino import check_device, compile_config, core

    device = check_device(str(opts.session.get("device", "CPU")))
    return core().compile_model(model, device, compile_config(device, _OV_HINT[precision], "latency", None,
                                                              opts.threads))


def _ov_runtime_precision(compiled: Any) -> str:
    """The precision the compiled model's matrix product really runs in (CPU plugin's runtime info)."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if {"layerType", "runtimePrecision"} <= set(info.keys()) and \
                info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
            kernel = info["primitiveType"].astype(str) if "primitiveType" in info.keys() else "?"
            return f"{info['runtimePrecision'].astype(str).lower()} ({kernel})"
    return "?"


def _ov_gemm(precision: str, opts: PeakOptions) -> Peak:
    import openvino as ov

    ops = _ov_opset()
    rng = np.random.default_rng(0)
    label = f"OpenVINO MatMul {precision}" + (" (FakeQuantize u8 x i8)" if precision == "int8" else "")
    ran = {}

    def measure(n: int) -> float:
        a = ops.parameter([n, n], ov.Type.f32, name="a")
        b = ops.constant(rng.standard_normal((n, n)).astype(np.float32))
        left, right = a, b
        if precision == "int8":
            def fq(x: Any, lo: float, hi: float, levels: int) -> Any:
                lo_c, hi_c = ops.constant(np.float32(lo)), ops.constant(np.float32(hi))
                return ops.fake_quantize(x, lo_c, hi_c, lo_c, hi_c, levels)

            left, right = fq(a, 0.0, 2.55, 256), fq(b, -4.0, 4.0, 255)
        model = ov.Model([ops.matmul(left, right, False, True)], [a], "mmedge_gemm")  # b as [N, K]: weights
        compiled = _ov_compile(model, precision, opts)
        ran["precision"] = _ov_runtime_precision(compiled)
        request = compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(rng.uniform(0.0, 2.55, (n, n)).astype(np.float32), shared_memory=True))
        return best_seconds(request.infer, opts.runs, opts.warmup)

    try:
        peak = _gemm_peak(measure, opts.gemm_n, label, opts.runs)
    except MmedgeError as e:  # compile_config: this CPU has no such precision
        return Peak(None, "FLOP/s", label, f"n/a (backend): {e}")
    except Exception as e:  # OpenVINO's own errors
        return Peak(None, "FLOP/s", label, f"n/a (backend): {_first_line(e)}")
    got = ran.get("precision", "?")
    peak.how += f", runs in {got}"
    if precision == "int8" and got.split()[0] not in ("i8", "u8"):
        return Peak(None, "FLOP/s", peak.how, f"n/a (backend): the FakeQuantize MatMul was compiled to {got}, "
                    "not int8")
    return peak


def _ov_memory(opts: PeakOptions) -> dict[str, Peak]:
    import openvino as ov

    ops = _ov_opset()
    n = stream_array_bytes(opts.stream_bytes) // 4
    k = int(math.isqrt(n))
    a, b = np.full(n, 1.0, np.float32), np.full(n, 2.0, np.float32)  # W reuses a's memory
    out = {}
    for name in ("stream_add", "weights_read"):
        if name == "stream_add":
            how, nbytes = _stream_how("OpenVINO Add", n, opts.runs), 12 * n
            pa, pb = ops.parameter([n], ov.Type.f32, name="a"), ops.parameter([n], ov.Type.f32, name="b")
            model, arrays = ov.Model([ops.add(pa, pb)], [pa, pb], "mmedge_stream"), [a, b]
        else:
            how, nbytes = _weights_how("OpenVINO MatMul", k, opts.runs), 4 * k * k
            x, w = ops.parameter([1, k], ov.Type.f32, name="x"), ops.parameter([k, k], ov.Type.f32, name="w")
            model = ov.Model([ops.matmul(x, w, False, True)], [x, w], "mmedge_weights")
            arrays = [b[:k].reshape(1, k), a[:k * k].reshape(k, k)]
        try:
            request = _ov_compile(model, "fp32", opts).create_infer_request()
            for i, arr in enumerate(arrays):
                request.set_input_tensor(i, ov.Tensor(arr, shared_memory=True))
            out[name] = Peak(nbytes / best_seconds(request.infer, opts.runs, opts.warmup), "B/s", how)
        except MmedgeError as e:
            out[name] = Peak(None, "B/s", how, f"n/a (backend): {e}")
        except Exception as e:  # OpenVINO's own errors
            out[name] = Peak(None, "B/s", how, f"n/a (backend): {_first_line(e)}")
    return out


def openvino_peaks(opts: PeakOptions) -> tuple[dict[str, Peak], dict[str, Peak]]:
    return {p: _ov_gemm(p, opts) for p in PRECISIONS}, _ov_memory(opts)


# ============================================================================ entry point
MEASURERS: dict[str, Callable[[PeakOptions], tuple[dict[str, Peak], dict[str, Peak]]]] = {
    "onnxruntime": onnxruntime_peaks, "openvino": openvino_peaks}


def measure_peaks(backend: str, opts: PeakOptions | None = None) -> MachinePeaks:
    """Every peak of `backend` on this machine (a backend without microbenchmarks: notes only)."""
    opts = opts or PeakOptions()
    t0 = time.perf_counter()
    fn = MEASURERS.get(backend)
    if fn is None:
        note = f"n/a (backend): no microbenchmark for {backend} (measured: {', '.join(MEASURERS)})"
        compute = {p: Peak(None, "FLOP/s", "", note) for p in PRECISIONS}
        return MachinePeaks(backend, opts.threads, compute, {m: Peak(None, "B/s", "", note) for m in MEMORY})
    compute, memory = fn(opts)
    return MachinePeaks(backend, opts.threads, compute, memory, time.perf_counter() - t0)
