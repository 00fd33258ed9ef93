"""The backend registry: which backends exist, what they need and the options their sessions take.

Data only (no backend package, no numpy is imported here), so `mmedge --help`,
the README's Options table and the errors list every backend's options even
where its package is not installed. The sessions themselves live in the
modules named by `BackendInfo.module` (imported by `runtime.session.open_session`).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from typing import Any, Callable

from mmedge.errors import UnknownNameError
from mmedge.registry import Registry
from mmedge.runtime.options import Option, OptionSchema

THREADS = Option("threads", int, None, "intra-op threads (default: the backend's; same as --threads)",
                 minimum=1, maximum=1024)


def _streams(value: Any) -> int | str:
    """OpenVINO NUM_STREAMS: a count, or AUTO."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "AUTO"
    return Option("streams", int, None, "", minimum=1, maximum=1024).read(value)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str  # imported lazily
    package: str  # the pip package it needs
    extra: str  # the mmedge extra that installs it
    formats: tuple[str, ...]  # artifact formats it runs
    platforms: tuple[str, ...] = ()  # sys.platform values it can run on (empty: any)
    options: OptionSchema | None = None  # session options (`-O KEY=VALUE`, load(**options)); None: threads only
    # the backend's sessions may be created in parallel threads (ONNX Runtime releases the GIL while it
    # reads and initializes a graph: a pipeline's graphs load side by side)
    parallel_load: bool = False
    # a graph's session options from the pipeline's and whether the graph runs once per decoding
    # step (GraphHints.step): Pipeline applies it to each graph it opens (None: the same for all)
    per_graph: Callable[[bool, dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.options is None:
            object.__setattr__(self, "options", OptionSchema(f"{self.name} session", (THREADS,)))

    @property
    def schema(self) -> OptionSchema:
        assert self.options is not None
        return self.options


BACKENDS: Registry[BackendInfo] = Registry("backend")


def register_backend(info: BackendInfo) -> None:
    BACKENDS.add(info.name, info)


def _ort_spinning_per_graph(step: bool, options: dict[str, Any]) -> dict[str, Any]:
    """spinning=auto: a step graph's workers keep spinning between its runs (a beam search calls it
    again within a fraction of a millisecond); any other graph's stop when its run returns, so that
    they do not take the cores from the graph that runs next (measured: an encoder's spinning worker
    made one decoding step in three take 11 ms instead of 2.5 on 2 cores)."""
    if options.get("spinning", "auto") != "auto":
        return options
    return {**options, "spinning": "on" if step else "run"}


register_backend(BackendInfo(
    "onnxruntime", "mmedge.runtime.backends.onnxruntime", "onnxruntime", "onnxruntime", ("onnx",),
    parallel_load=True, options=OptionSchema("onnxruntime session", (
        THREADS,
        Option("providers", list, None, "execution providers, first preferred (default: CPUExecutionProvider)",
               metavar="A,B"),
        Option("optimization", str, "all", "graph optimization level",
               choices=("all", "extended", "basic", "disable")),
        Option("spinning", str, "auto", "worker threads spin-wait for work (session.intra_op.allow_spinning): on: "
               "also between runs; run: only during a run (session.force_spinning_stop); off: never; auto: on for a "
               "graph run once per decoding step, run for the others", choices=("auto", "on", "run", "off")),
        Option("cache", str, "auto", "keep the optimized graph per machine in ~/.cache/mmedge/ort and load it "
               "with the optimizers off (auto: graphs of 8 MB and more)", choices=("auto", "on", "off")),
    )), per_graph=_ort_spinning_per_graph))
register_backend(BackendInfo(
    "openvino", "mmedge.runtime.backends.openvino", "openvino", "openvino", ("openvino",),
    options=OptionSchema("openvino session", (
        Option("device", str, "CPU", "device: CPU, GPU, GPU.1, NPU, AUTO, HETERO:GPU,CPU ... (one this machine has)",
               metavar="NAME"),
        Option("precision", str, "f32", "inference precision (INFERENCE_PRECISION_HINT)",
               choices=("f32", "bf16", "f16"), aliases=(("fp32", "f32"), ("fp16", "f16"))),
        Option("hint", str, "latency", "performance hint", choices=("latency", "throughput")),
        Option("streams", int, None, "NUM_STREAMS (default: from the hint)", parse=_streams,
               expects="an integer from 1 to 1024, or auto", metavar="N|auto"),
        THREADS,
    ))))
register_backend(BackendInfo(
    "coreml", "mmedge.runtime.backends.coreml", "coremltools", "coreml", ("coreml",), platforms=("darwin",),
    options=OptionSchema("coreml session", (
        Option("compute_units", str, "ALL", "where Core ML may run the model",
               choices=("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")),
        THREADS,
    ))))
register_backend(BackendInfo(
    "tensorrt", "mmedge.runtime.backends.tensorrt", "tensorrt", "tensorrt", ("tensorrt",),
    options=OptionSchema("tensorrt session", (
        Option("device", int, 0, "CUDA device number", minimum=0, maximum=1024),
        THREADS,
    ))))


def backend_names() -> list[str]:
    return BACKENDS.names()


def backend_for_format(fmt: str) -> str:
    for name, info in BACKENDS.items():
        if fmt in info.formats:
            return name
    raise UnknownNameError("artifact format", fmt, sorted({f for _, i in BACKENDS.items() for f in i.formats}))


def available(name: str) -> bool:
    """Installed, and able to run on this platform (Core ML predicts only on macOS)."""
    if name not in BACKENDS:
        return False
    info = BACKENDS.get(name)
    on_platform = not info.platforms or sys.platform in info.platforms
    return on_platform and importlib.util.find_spec(info.package) is not None


def session_options(backend: str, pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`-O KEY=VALUE` pairs of `backend`'s sessions -> typed options (checked before anything loads)."""
    return BACKENDS.get(backend).schema.parse(pairs)


def backends_help() -> str:
    """The `-O` help of the CLI: every backend's options, from their schemas."""
    return "; ".join(f"{name}: {info.schema.help_line()}" for name, info in BACKENDS.items())
