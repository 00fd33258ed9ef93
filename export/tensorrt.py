"""TensorRT engines: `mmedge export MODEL --format tensorrt [--precision fp32|fp16|int8]`.

Builds one serialized engine per graph with TensorRT's Python API, where
TensorRT and a CUDA GPU are (engines do not move across GPUs or TensorRT
versions, so for a Jetson they are built on the board: `mmedge package jetson`).
The artifact holds `<graph>.engine`, the ONNX they were built from under
`onnx/`, and `tensorrt.json` — the build record (TensorRT version, GPU name and
compute capability, precision, profiles, DLA, compatibility flags) that the
runtime checks before loading an engine.

Precision per TensorRT release (decided by `plan_build`, a pure function):

| TensorRT | fp32 | fp16 | int8 |
| --- | --- | --- | --- |
| 8.5-10.x | fp32 ONNX | fp32 ONNX + FP16 flag | Q/DQ ONNX + INT8 (+FP16) flags; DLA: fp32 ONNX + calibration cache |
| 11+ (strongly typed) | fp32 ONNX | fp16 ONNX (converted, fp32 I/O) | Q/DQ ONNX, no flags |

Every engine has one optimization profile: the batch axis (`batch`, and for the
captioner's `decoder_step` rows = images x beams) and the other dynamic axes
get min/opt/max from `--export-option batch=1,1,8 --export-option beam=1,3,5 --option
profile.AXIS=MIN,OPT,MAX`. Other options: `workspace=MIB`, `timing_cache=PATH|false`,
`dla_core=N` (GPU fallback on unless `gpu_fallback=false`; DLA takes static shapes, so those
engines are pinned to the opt shapes and the captioner's decoder graphs stay on the GPU), `version_compatible=true`,
`hardware_compatibility=ampere+|same-cc`, `strongly_typed=true` (TensorRT 10),
`int8_source=qdq|calib`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from mmedge.atomic import cache_home, write_atomic
from mmedge.errors import ExportError, MmedgeError
from mmedge.export.onnx import OPTIONS as ONNX_OPTIONS
from mmedge.export.registry import ExportContext, build_manifest, register_exporter
from mmedge.export.trt_cache import CACHE_SUFFIX, retarget_cache
from mmedge.runtime.backends.tensorrt import (ENGINE_EXT, RECORD, GpuInfo, gpu_info, import_tensorrt,
                                              version_tuple)
from mmedge.runtime.manifest import GraphEntry, Manifest, ManifestExtra
from mmedge.runtime.options import Option, OptionSchema

ONNX_DIR = "onnx"
DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_BATCH = (1, 1, 8)
DEFAULT_BEAM = (1, 3, 5)
HARDWARE_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
INT8_SOURCES = ("auto", "qdq", "calib")
Range = Tuple[int, int, int]
Shapes = Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]  # input -> (min, opt, max)


# ------------------------------------------------------------------ settings
@dataclass
class BuildSettings:
    precision: str = "fp32"
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    batch: Range = DEFAULT_BATCH
    beam: Range = DEFAULT_BEAM
    axes: dict[str, Range] = field(default_factory=dict)  # other dynamic axes by name
    timing_cache: Path | None | bool = True  # True: the default file; None/False: none
    dla_core: int | None = None
    gpu_fallback: bool = True
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    strongly_typed: bool = False  # TensorRT 10 only (forced from 11 on)
    int8_source: str = "auto"


def _range(value: Any) -> Range:
    """MIN,OPT,MAX (text, or three integers) of an optimization profile axis."""
    if isinstance(value, str):
        parts = tuple(_INT_OPT.read(v) for v in value.split(","))
    elif isinstance(value, (list, tuple)):
        parts = tuple(_INT_OPT.read(v) for v in value)
    else:
        raise ValueError
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise ValueError
    return parts  # type: ignore[return-value]


def _timing_cache(value: Any) -> Path | bool:
    """true (the default file), false (none) or the path of a cache file."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return Path(_PATH_OPT.read(value))


_INT_OPT = Option("n", int, None, "", minimum=1)
_PATH_OPT = Option("path", str, None, "")
_RANGE = "MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX"
# The engines are built from ONNX graphs exported here: the onnx exporter's options apply too.
OPTIONS = OptionSchema("tensorrt export", (
    Option("workspace", int, DEFAULT_WORKSPACE_MIB, "builder workspace in MiB", minimum=1, maximum=1 << 20),
    Option("batch", tuple, DEFAULT_BATCH, "profile of the batch axis (decoder_step: images x beams)",
           parse=_range, expects=_RANGE, metavar="MIN,OPT,MAX"),
    Option("beam", tuple, DEFAULT_BEAM, "profile of the beam width (captioner decoder_step rows)",
           parse=_range, expects=_RANGE, metavar="MIN,OPT,MAX"),
    Option("profile.AXIS", tuple, None, "profile of another dynamic axis, by name (profile.samples=...)",
           parse=_range, expects=_RANGE, metavar="MIN,OPT,MAX", prefix=True),
    Option("timing_cache", Path, True, "TensorRT timing cache: the default file, none, or this file",
           parse=_timing_cache, expects="true, false or the path of a cache file", metavar="true|false|PATH"),
    Option("dla_core", int, None, "build for this DLA core (fp16/int8; static shapes)", minimum=0, maximum=15),
    Option("gpu_fallback", bool, True, "with dla_core: layers DLA cannot run go to the GPU"),
    Option("version_compatible", bool, False, "engines that later TensorRT releases load (TensorRT >= 8.6)"),
    Option("hardware_compatibility", str, "none", "engines for other GPUs of this level (TensorRT >= 8.6)",
           choices=tuple(HARDWARE_LEVELS)),
    Option("strongly_typed", bool, False, "strongly typed network (TensorRT 10; always from 11)"),
    Option("int8_source", str, "auto", "int8 from the Q/DQ graph or from the calibration cache",
           choices=INT8_SOURCES),
    *ONNX_OPTIONS.options,
))


def settings_from_options(options: Mapping[str, Any], precision: str) -> BuildSettings:
    """Build settings from this exporter's options (checked against OPTIONS: unknown keys are refused)."""
    o = OPTIONS.validate(options)
    s = BuildSettings(precision=precision)
    for key, value in o.items():
        if key.startswith("profile."):
            s.axes[key[len("profile."):]] = value
        elif key == "workspace":
            s.workspace_mib = value
        elif key in ("batch", "beam", "timing_cache", "dla_core", "gpu_fallback", "version_compatible",
                     "hardware_compatibility", "strongly_typed", "int8_source"):
            setattr(s, key, value)
    return s


# ------------------------------------------------------------------ what to build
@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built on a given TensorRT release (pure data; `build_engine` applies it)."""

    source: str  # "fp32" | "fp16" | "qdq": which ONNX graph is parsed
    strongly_typed: bool
    flags: tuple[str, ...]  # trt.BuilderFlag names
    calibrator: bool  # implicit int8 from the TensorRT calibration cache
    dla: bool


def plan_build(trt_version: str, s: BuildSettings) -> BuildPlan:
    from mmedge.export.trt_matrix import dla_problem, release

    v = version_tuple(trt_version)
    row = release(trt_version)  # the support matrix (export/trt_matrix.py); refuses < 8.5
    if s.version_compatible and not row.version_compatible:
        raise ExportError(f"version-compatible engines need TensorRT >= 8.6 (this is {trt_version})")
    if s.hardware_compatibility != "none" and v[:2] < (8, 6):
        raise ExportError(f"hardware-compatible engines need TensorRT >= 8.6 (this is {trt_version})")
    dla = s.dla_core is not None
    if dla and s.precision == "fp32":
        raise ExportError("DLA runs fp16 or int8 only; use --precision fp16|int8 or drop --export-option dla_core")
    if dla and s.hardware_compatibility != "none":
        raise ExportError("hardware-compatible engines cannot use DLA")
    if dla and dla_problem(trt_version):
        raise ExportError(f"{dla_problem(trt_version)}; build for the GPU (drop --export-option dla_core) or on the board "
                          f"with a TensorRT that has DLA")
    common: tuple[str, ...] = ()
    if dla and s.gpu_fallback:
        common += ("GPU_FALLBACK",)
    if s.version_compatible:
        common += ("VERSION_COMPATIBLE",)
    if row.fp16 == "typed":  # TensorRT 11+: strongly typed only, precision comes from the graph's types
        if s.precision == "int8" and s.int8_source == "calib":
            raise ExportError(f"TensorRT {trt_version} has no INT8 calibrators: int8 comes from the Q/DQ model "
                              f"(--export-option int8_source=qdq)")
        return BuildPlan(_TYPED_SOURCE[s.precision], True, common, False, dla)
    if s.strongly_typed:
        if s.int8_source == "calib":
            raise ExportError("strongly typed networks take int8 from Q/DQ nodes, not a calibration cache")
        return BuildPlan(_TYPED_SOURCE[s.precision], True, common, False, dla)
    flags: tuple[str, ...] = ()
    source, calibrator = "fp32", False
    if s.precision == "fp16":
        flags = ("FP16",)
    elif s.precision == "int8":
        flags = ("INT8", "FP16")  # layers left in float may run in fp16
        calibrator = s.int8_source == "calib" or (s.int8_source == "auto" and dla)
        source = "fp32" if calibrator else "qdq"
    return BuildPlan(source, False, flags + common, calibrator, dla)


_TYPED_SOURCE = {"fp32": "fp32", "fp16": "fp16", "int8": "qdq"}


# ------------------------------------------------------------------ shapes
def example_shapes_from_vectors(npz: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """graph -> input -> shape of the example inputs in an artifact's test vectors."""
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    with np.load(npz) as vectors:
        for key in vectors.files:
            graph, _, name = key.partition(".")
            out.setdefault(graph, {})[name] = tuple(vectors[key].shape)
    return out


def _axis_default(axis: str, example: int, pipeline: str, preprocessing: Mapping[str, Any],
                  extra: ManifestExtra) -> Range:
    """min/opt/max of a non-batch dynamic axis: opt is the example's size."""
    sr = int(preprocessing.get("sample_rate", 0) or 0)
    min_samples = extra.min_samples or 0
    if axis == "samples":
        lo = max(1, min_samples)
        opt = max(example, lo)
        return lo, opt, max(opt * 4, sr * 30)
    if axis == "frames" and preprocessing.get("hop_length"):
        hop = int(preprocessing["hop_length"])
        center = bool(preprocessing.get("center", True))
        n_fft = int(preprocessing.get("n_fft", 0) or 0)
        def frames(n: int) -> int:
            return 1 + n // hop if center else 1 + max(n - n_fft, 0) // hop
        lo = max(1, frames(min_samples))
        opt = max(example, lo)
        return lo, opt, max(opt * 4, frames(sr * 30) if sr else 0)
    if axis in ("height", "width"):
        return min(example, 16), example, max(example * 4, 1024)
    return max(1, example // 2), example, example * 4


def profile_shapes(pipeline: str, graph: GraphEntry, example: Mapping[str, tuple[int, ...]], s: BuildSettings,
                   preprocessing: Mapping[str, Any] | None = None,
                   extra: ManifestExtra | Mapping[str, Any] | None = None) -> Shapes:
    """input -> (min, opt, max) shapes of the engine's optimization profile.

    `batch` axes take --export-option batch; a decoding step graph (hints.step: the captioner's
    decoder_step), whose rows are images x beams, takes batch x beam. Other dynamic axes take
    --export-option profile.AXIS or a default around the example's size (an audio input's from the
    manifest's extra.min_samples). With DLA (no dynamic shapes there) min = max = opt.
    """
    preprocessing = preprocessing or {}
    extra = extra if isinstance(extra, ManifestExtra) else ManifestExtra.from_json(extra or {})
    rows = graph.hints.step
    out: Shapes = {}
    for t in graph.inputs:
        if t.name not in example:
            raise ExportError(f"graph {graph.name!r}: no example shape for input {t.name!r}")
        ex = example[t.name]
        lo, opt, hi = [], [], []
        for i, dim in enumerate(t.shape):
            if isinstance(dim, int):
                r: Range = (dim, dim, dim)
            elif dim in s.axes:
                r = s.axes[dim]
            elif dim == "batch":
                r = tuple(b * k for b, k in zip(s.batch, s.beam)) if rows else s.batch  # type: ignore[assignment]
            else:
                r = _axis_default(dim, int(ex[i]), pipeline, preprocessing, extra)
            lo.append(r[0])
            opt.append(r[1])
            hi.append(r[2])
        if s.dla_core is not None:
            lo, hi = opt, opt
        out[t.name] = (tuple(lo), tuple(opt), tuple(hi))
    return out


def trtexec_shapes(shapes: Shapes) -> tuple[str, str, str]:
    """--minShapes/--optShapes/--maxShapes values: `name:1x3x224x224,other:...`."""
    def one(i: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in dims[i]) or '1'}" for name, dims in shapes.items())
    return one(0), one(1), one(2)


# ------------------------------------------------------------------ GPU / files
def require_gpu(device: int = 0) -> GpuInfo:
    """The GPU engines are built for; one clear error when TensorRT or a CUDA GPU is missing."""
    import_tensorrt("--format tensorrt")
    try:
        return gpu_info(device, "--format tensorrt")
    except MmedgeError as e:
        if "no CUDA GPU" in str(e):
            raise ExportError("--format tensorrt: no CUDA GPU found (TensorRT builds an engine on the GPU that runs "
                              "it); for a Jetson, bundle the ONNX artifacts with `mmedge package jetson --artifact "
                              "DIR --out bundle.tar.gz` and build the engines on the board") from None
        raise


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def default_timing_cache(trt_version: str, gpu: GpuInfo) -> Path:
    return cache_home() / "tensorrt" / \
        f"timing-{trt_version}-{_slug(gpu.name)}-sm{gpu.compute_capability.replace('.', '')}.cache"



def fp16_onnx(src: Path, dst: Path) -> Path:
    """fp16 copy of an fp32 ONNX graph with fp32 inputs/outputs (strongly typed fp16 engines)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise ExportError("fp16 engines on TensorRT >= 11 need an fp16 ONNX graph; converting one needs "
                          "onnxruntime (pip install 'mmedge[onnxruntime]')") from None
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, disable_shape_infer=False)
    onnx.save(model, str(dst))
    return dst


# ------------------------------------------------------------------ the builder
def _calibrator(trt: Any, cache: bytes) -> Any:
    """An IInt8EntropyCalibrator2 that only replays a TensorRT calibration cache (TensorRT <= 10)."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None  # no data: everything comes from the cache

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: Any) -> None:
            return None

    return CacheCalibrator()


def build_engine(onnx_path: Path, engine_path: Path, shapes: Shapes, s: BuildSettings, plan: BuildPlan,
                 calib_cache: Path | None = None, timing_cache: Path | None = None,
                 log: Any = lambda m: None) -> dict[str, Any]:
    """Parse `onnx_path`, build with `plan`, write the serialized engine atomically."""
    trt = import_tensorrt("--format tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if version_tuple(trt.__version__)[0] < 10:
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if plan.strongly_typed and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(err.desc() if hasattr(err, "desc") else str(err))
        raise ExportError(f"{onnx_path.name}: TensorRT {trt.__version__}'s ONNX parser refused the graph: "
                          f"{'; '.join(errors)[:400] or 'no reason given'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(s.workspace_mib) << 20)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.calibrator:
        if calib_cache is None or not calib_cache.is_file():
            raise ExportError(f"{onnx_path.name}: int8 from a calibration cache needs the cache file")
        config.int8_calibrator = _calibrator(trt, calib_cache.read_bytes())
        config.set_calibration_profile(profile)
    if plan.dla:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(s.dla_core)  # type: ignore[arg-type]
    if s.hardware_compatibility != "none":
        level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_LEVELS[s.hardware_compatibility], None)
        if level is None:
            raise ExportError(f"TensorRT {trt.__version__} has no hardware compatibility level "
                              f"{s.hardware_compatibility!r}")
        config.hardware_compatibility_level = level
    cache = None
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    log(f"building {engine_path.name} with TensorRT {trt.__version__} ({s.precision}, {plan.source} ONNX"
        f"{', DLA core %d' % s.dla_core if plan.dla else ''})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path.name}: TensorRT {trt.__version__} could not build an engine "
                          f"(see the TensorRT log above)")
    write_atomic(engine_path, bytes(serialized))
    if cache is not None and timing_cache is not None:
        write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"source": f"{ONNX_DIR}/{onnx_path.name}", "profile": {k: [list(d) for d in v] for k, v in shapes.items()},
            "flags": list(plan.flags), "strongly_typed": plan.strongly_typed,
            "int8_source": ("calib" if plan.calibrator else "qdq") if s.precision == "int8" else None}


def build_artifact_engines(entries: list[GraphEntry], onnx_dir: Path, dest: Path, manifest: Manifest,
                           examples: Mapping[str, Mapping[str, tuple[int, ...]]], s: BuildSettings,
                           fp32_sources: Mapping[str, Path] | None = None,
                           log: Any = lambda m: None) -> list[GraphEntry]:
    """Build `<graph>.engine` into `dest` for every graph (ONNX under `onnx_dir`), write the record.

    `entries` name the ONNX files the plan's default source reads (fp32 graphs, or the
    Q/DQ graphs for int8); `fp32_sources` the fp32 graphs for int8 from a calibration cache.
    """
    trt = import_tensorrt("--format tensorrt")
    gpu = require_gpu()
    plan_build(trt.__version__, s)  # refuse impossible settings before building anything
    timing = None
    if isinstance(s.timing_cache, Path):
        timing = s.timing_cache
    elif s.timing_cache:
        timing = default_timing_cache(trt.__version__, gpu)
    graphs, out = {}, []
    for e in entries:
        gs = s
        if s.dla_core is not None and not dla_allowed(e):
            gs = replace(s, dla_core=None)
            log(f"{e.name}: built for the GPU, not DLA (its rows change at every beam-search step; DLA needs "
                f"static shapes)")
        plan = plan_build(trt.__version__, gs)
        src = onnx_dir / e.file
        calib_cache = None
        if plan.source == "fp16":
            src = fp16_onnx(src, onnx_dir / f"{e.name}.fp16.onnx")
        elif plan.calibrator:
            fp32 = (fp32_sources or {}).get(e.name)
            if fp32 is None:
                raise ExportError(f"graph {e.name!r}: int8 from a calibration cache needs the fp32 ONNX graph")
            src = onnx_dir / f"{e.name}.fp32.onnx"
            src.write_bytes(Path(fp32).read_bytes())
            calib_cache = retarget_cache(onnx_dir / f"{e.name}{CACHE_SUFFIX}",
                                         onnx_dir / f"{e.name}.trt{CACHE_SUFFIX}", trt.__version__)
        shapes = profile_shapes(manifest.pipeline, e, examples.get(e.name, {}), gs, manifest.preprocessing,
                                manifest.extra)
        engine = dest / f"{e.name}{ENGINE_EXT}"
        graphs[e.name] = {**build_engine(src, engine, shapes, gs, plan, calib_cache, timing, log),
                          "dla_core": gs.dla_core if plan.dla else None}
        out.append(replace(e, file=engine.name))
    on_dla = any(g["dla_core"] is not None for g in graphs.values())
    record = {"tensorrt": trt.__version__, "built_with": "python", "precision": s.precision,
              "gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability},
              "dla_core": s.dla_core if on_dla else None, "gpu_fallback": s.gpu_fallback if on_dla else None,
              "version_compatible": s.version_compatible, "hardware_compatibility": s.hardware_compatibility,
              "workspace_mib": s.workspace_mib, "timing_cache": str(timing) if timing else None,
              "graphs": graphs, "settings": {k: v for k, v in asdict(s).items() if k not in ("timing_cache",)}}
    (dest / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return out


def dla_allowed(graph: GraphEntry) -> bool:
    """DLA takes static shapes only: not decoder graphs (hints.decoder), whose rows change every step."""
    return not graph.hints.decoder


@register_exporter("tensorrt", packages=("tensorrt",), extra="tensorrt", precisions=("fp32", "fp16", "int8"),
                   file_ext=ENGINE_EXT, options=OPTIONS)
def export_tensorrt(ctx: ExportContext, dest: Path) -> list[GraphEntry]:
    """fp32/fp16 engines (int8 goes through the `tensorrt` calibration recipe)."""
    from mmedge.export.onnx import export_graph
    from mmedge.export.tensorrt_compat import check

    settings = settings_from_options(ctx.options, ctx.precision)
    trt = import_tensorrt("--format tensorrt")
    require_gpu()
    plan_build(trt.__version__, settings)  # refuse impossible settings before exporting anything
    onnx_dir = dest / ONNX_DIR
    onnx_dir.mkdir()
    entries, examples = [], {}
    for g in ctx.spec.graphs:
        entry = export_graph(ctx, g, onnx_dir / f"{g.name}.onnx")
        problems = check(onnx_dir / entry.file)
        if problems:
            raise ExportError(f"{entry.file}: not compatible with TensorRT: " + "; ".join(problems[:5]))
        entries.append(entry)
        examples[g.name] = {k: tuple(v.shape) for k, v in ctx.examples(g).items()}
    manifest = build_manifest(ctx, "tensorrt", entries)  # what the registry will write; hints on its graphs
    return build_artifact_engines(manifest.graphs, onnx_dir, dest, manifest, examples, settings)
