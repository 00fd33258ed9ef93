"""OpenVINO session: one compiled model with dynamic shapes, one InferRequest reused.

Options (all passed through `mmedge.runtime.load(artifact, backend="openvino", **options)`):

- `device`: "CPU" (default); "GPU", "GPU.1", "NPU", "AUTO", "HETERO:GPU,CPU" ... are passed to
  OpenVINO as given. A device this machine does not have is refused with the list of those it has.
- `precision`: the inference precision, OpenVINO's INFERENCE_PRECISION_HINT. "f32" (default) for
  fp32 parity: on CPUs with AMX (or AVX512-BF16) OpenVINO otherwise runs float graphs in bf16 without
  saying so. "bf16" (CPU) or "f16" (GPU) only when asked for.
- `hint`: "latency" (default: one stream, all threads on one request) or "throughput".
- `streams`, `threads`: NUM_STREAMS and INFERENCE_NUM_THREADS (default: OpenVINO's, from `hint`).

The model is compiled once, with the dynamic dimensions the artifact declares (batch, time, ...),
so the decoder's beam dimension changes as beams finish without recompiling. Step-invariant
inputs (`bind`) are wrapped once as `ov.Tensor`s sharing the numpy memory and set on the request
once per row layout; per-step feeds are passed zero-copy (`share_inputs=True`) and outputs are
copied out. Within `reuse_outputs()` (the mode beam search runs decoder_step in) a fed array is
wrapped as a shared-memory tensor once and set on the request only when another one takes its
place (beam search feeds the same few buffers, rewritten in place), the request runs without
OpenVINO's Python-side input/output dictionaries, and run() returns views of the request's own
output tensors, which the next run overwrites: the caller copies what it keeps (the decoder keeps
attention rows and gathers h/c into buffers of its own; nothing it feeds back is such a view).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from mmedge.errors import ArtifactError, InputError, UnknownNameError
from mmedge.runtime.backends.wrapped import ReuseState, WrapCache
from mmedge.runtime.manifest import TensorSpec
from mmedge.runtime.session import Feeds, Session

PRECISIONS = ("f32", "bf16", "f16")
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")

_CORE: ov.Core | None = None


def core() -> ov.Core:
    """One OpenVINO Core per process (device plugins are loaded once)."""
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    return (lines[0] if lines else e.__class__.__name__)[:200]


def check_device(device: str) -> str:
    """`device` if this machine has it (GPU.0 / GPU / virtual devices accepted), else InputError."""
    if not isinstance(device, str) or not device:
        raise InputError(f"OpenVINO device must be a name such as CPU or GPU, got {device!r}")
    have = core().available_devices
    base = device.split(":", 1)[0].split(".", 1)[0].upper()
    if device in have or base in {d.split(".", 1)[0] for d in have} or base in VIRTUAL_DEVICES:
        return device
    raise InputError(f"OpenVINO device {device!r} is not available here (available: {', '.join(have) or 'none'}; "
                     f"also {', '.join(VIRTUAL_DEVICES)})")


def compile_config(device: str, precision: str = "f32", hint: str = "latency", streams: int | str | None = None,
                   threads: int | None = None) -> dict[str, Any]:
    """The compile_model() properties for these options (checked; nothing is silently changed)."""
    if precision not in PRECISIONS:
        raise UnknownNameError("OpenVINO inference precision", precision, PRECISIONS)
    if hint not in HINTS:
        raise UnknownNameError("OpenVINO performance hint", hint, list(HINTS))
    base = device.split(":", 1)[0].split(".", 1)[0].upper()
    if base == "CPU":
        caps = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        want = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}[precision]
        if want not in caps:
            raise InputError(f"OpenVINO CPU here cannot run precision {precision!r} "
                             f"(capabilities: {', '.join(caps)})")
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[hint], "INFERENCE_PRECISION_HINT": precision}
    if streams is not None:
        cfg["NUM_STREAMS"] = str(streams)
    if threads:
        if int(threads) < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


class OvSession(Session):
    backend = "openvino"

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], device: str = "CPU",
                 precision: str = "f32", hint: str = "latency", streams: int | str | None = None,
                 threads: int | None = None) -> None:
        super().__init__(path, inputs, outputs)
        config = compile_config(check_device(device), precision, hint, streams, threads)
        self.device, self.precision, self.config = device, precision, config
        try:
            model = core().read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line C++ trace
            raise ArtifactError(f"{path}: OpenVINO cannot read it ({_first_line(e)})") from None
        self._check_names(path, [p.get_any_name() for p in model.inputs if p.get_names()],
                          sorted(n for o in model.outputs for n in o.get_names()))  # an output has several names
        try:
            self.compiled = core().compile_model(model, device, config)
        except Exception as e:
            raise ArtifactError(f"{path}: OpenVINO cannot compile it for {device} ({_first_line(e)})") from None
        self.request = self.compiled.create_infer_request()
        self._outputs = [(t.name, self.compiled.output(t.name)) for t in outputs]
        self._bound_tensors: dict[str, ov.Tensor] = {}
        self._stale: set[str] = set()  # bound inputs that a feed replaced on the request

    # reuse_outputs() (the base class): run() returns views of the request's output tensors, valid
    # until the next run
    def _reuse_begin(self) -> ReuseState:
        return ReuseState(WrapCache(lambda a: ov.Tensor(a, shared_memory=True)))

    def _reuse_end(self) -> None:
        self._stale = set(self._bound_tensors)  # the request holds what the mode set: set them again

    def get_property(self, name: str) -> Any:
        """A property of the compiled model, e.g. "INFERENCE_PRECISION_HINT" (what really runs)."""
        return self.compiled.get_property(name)

    def _bind(self, name: str, array: np.ndarray) -> None:
        arr = np.ascontiguousarray(array)
        self._bound[name] = arr  # keep the memory the tensor shares alive
        tensor = ov.Tensor(arr, shared_memory=True)
        self._bound_tensors[name] = tensor
        self.request.set_tensor(name, tensor)
        self._stale.discard(name)
        if self._reuse is not None:
            self._reuse.placed[name] = tensor

    def _unbind(self, name: str) -> None:
        self._bound_tensors.pop(name, None)
        self._stale.discard(name)

    def _run(self, feeds: Feeds) -> Feeds:
        for name in self._stale - feeds.keys():
            self.request.set_tensor(name, self._bound_tensors[name])
        self._stale = feeds.keys() & self._bound_tensors.keys()
        try:
            res = self.request.infer(feeds, share_inputs=True, share_outputs=False)  # outputs copied
        except Exception as e:
            raise InputError(f"{self.path.name}: OpenVINO inference failed ({_first_line(e)})") from None
        return {name: res[port] for name, port in self._outputs}

    def _run_reusing(self, feeds: Feeds, reuse: ReuseState) -> Feeds:
        request = self.request
        self._place_inputs(feeds, reuse, self._bound_tensors, request.set_tensor)
        try:
            request.start_async()
            request.wait()
        except Exception as e:
            raise InputError(f"{self.path.name}: OpenVINO inference failed ({_first_line(e)})") from None
        return {name: request.get_tensor(port).data for name, port in self._outputs}

    def _close(self) -> None:
        self.request = None
        self.compiled = None  # OpenVINO frees the compiled model with the last reference


def create_session(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], **options: Any) -> OvSession:
    return OvSession(path, inputs, outputs, **options)
