"""The roofline section of `mmedge profile`: how close each stage runs to what this machine can do.

After the timed rows, the machine's peaks are measured through each profiled backend with the
same threads and CPU pinning (`runtime/peaks.py`), and every row whose graphs have a cost
(FLOPs and weight bytes per run, `runtime/graph_cost.py`, recorded in the manifest at export)
gets, per stage:

    compute efficiency  = FLOPs / (seconds x peak FLOP/s of the artifact's precision)
    memory efficiency   = weight bytes / (seconds x bandwidth)
    roofline efficiency = max(compute, memory efficiency)
                        = max(FLOPs / peak, bytes / bandwidth) / seconds

i.e. the fraction of the roofline bound reached; the larger term names the bound (compute or
memory). Seconds are the median per call for per-graph rows (FLOPs x batch; the weights are read
once per call whatever the batch) and the mean per call of a stage end to end. Captioner rows
add the encoder and decoder_init (compute), the decoding steps (weight bytes per step / time per
step), the preprocessing against the image decode alone (the same file, the same reader), and
the share of the time spent outside the backend's sessions (Python: preprocessing, beam search
bookkeeping, glue). Audio and refocus artifacts get the per-graph rows (their end-to-end inputs
differ in length from the shapes the cost was counted at).

A number that cannot be had is None with a note: a graph without a cost and no `onnx` package
to count it, a precision the backend cannot run, a backend without microbenchmarks.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mmedge.errors import ArtifactError, InputError
from mmedge.runtime.graph_cost import GraphCost
from mmedge.runtime.peaks import MachinePeaks, PeakOptions, measure_peaks
from mmedge.runtime.roles import DECODER_STEP

if TYPE_CHECKING:
    from mmedge.runtime.profile_types import ArtifactInfo, ProfileOptions, ProfileResult, ProfileRow

SESSION_STAGES = ("encoder", "decoder_init", "decoder_steps")  # the captioner's time inside sessions


@dataclass
class Efficiency:
    """One stage of one profile row against the machine's peaks (fractions, not percent)."""

    row: str  # profile row id
    stage: str  # a graph name (per-graph rows) or an end-to-end stage
    precision: str  # the peak it is held against
    seconds: float  # per call
    flops: float | None  # per call
    bytes: float | None  # weight bytes per call
    compute: float | None = None  # flops / (seconds x peak)
    memory: float | None = None  # bytes / (seconds x bandwidth)
    roofline: float | None = None  # max(compute, memory) when both are known
    bound: str | None = None  # "compute" | "memory"
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: round_sig(v) for k, v in asdict(self).items()}


def round_sig(x: Any, digits: int = 6) -> Any:
    """Floats to `digits` significant digits for the JSON (times span microseconds to seconds)."""
    return float(f"{x:.{digits}g}") if isinstance(x, float) and math.isfinite(x) else x


# ============================================================================ arithmetic
def efficiency(row: str, stage: str, precision: str, seconds: float, flops: float | None, nbytes: float | None,
               peak_flops: float | None, bandwidth: float | None, note: str | None = None) -> Efficiency:
    """The efficiencies of `flops` and `nbytes` done in `seconds` against the two peaks."""
    e = Efficiency(row, stage, precision, seconds, flops, nbytes, note=note)
    if not seconds > 0:
        e.note = note or "n/a: no time measured"
        return e
    if flops is not None and peak_flops:
        e.compute = flops / (seconds * peak_flops)
    if nbytes is not None and bandwidth:
        e.memory = nbytes / (seconds * bandwidth)
    if e.compute is not None and e.memory is not None:
        e.roofline = max(e.compute, e.memory)
        e.bound = "compute" if e.compute >= e.memory else "memory"
    return e


def peak_precision(artifact_precision: str, backend: str, session: dict[str, Any]) -> str:
    """Which measured peak an artifact is held against: its precision, or the precision its
    backend was told to compute in (OpenVINO `-O precision=bf16` runs an fp32 graph in bf16)."""
    asked = str(session.get("precision", "")) if backend == "openvino" else ""
    if asked in ("bf16", "f16"):
        return {"bf16": "bf16", "f16": "fp16"}[asked]
    return artifact_precision if artifact_precision in ("fp32", "fp16", "bf16", "int8") else "fp32"


# ============================================================================ graph costs
def artifact_costs(path: str | Path) -> dict[str, GraphCost | str]:
    """Each graph's cost: from the manifest, else counted now from its ONNX or OpenVINO file
    (needs the `onnx` / `openvino` package), else a note saying why there is none."""
    import importlib

    from mmedge.runtime.graph_cost import COUNTABLE, file_cost
    from mmedge.runtime.manifest import load_test_vectors, read_manifest

    root = Path(path)
    m = read_manifest(root, verify=False)  # the profile has just verified every file
    out: dict[str, GraphCost | str] = {}
    vectors: Any = None
    for g in m.graphs:
        if g.name in m.costs:
            out[g.name] = GraphCost.from_json(m.costs[g.name])
            continue
        package = COUNTABLE.get(Path(g.file).suffix.lower())
        if package is None:
            out[g.name] = f"n/a: the manifest records no cost and {g.file} is not an ONNX or OpenVINO graph"
            continue
        try:
            importlib.import_module(package)
        except ImportError:
            out[g.name] = f"n/a: the manifest records no cost; install {package} to count it (pip install {package})"
            continue
        try:
            if vectors is None:
                vectors = load_test_vectors(root, m)
            out[g.name] = file_cost(root / g.file, g, vectors)
        except ArtifactError as e:
            out[g.name] = f"n/a: {e}"
    return out


# ============================================================================ rows
def _peaks_of(peaks: MachinePeaks | None, precision: str) -> tuple[float | None, float | None, str | None]:
    if peaks is None:
        return None, None, "n/a: no peaks measured for this backend"
    p = peaks.compute.get(precision)
    peak = p.value if p is not None else None
    note = None
    if peak is None:
        note = p.note if p is not None and p.note else f"n/a: no {precision} peak"
    elif peaks.bandwidth.value is None:
        note = peaks.bandwidth.note
    return peak, peaks.bandwidth.value, note


def held(row_id: str, stage: str, precision: str, seconds: float, cost: GraphCost | str | None, batch: int,
         peaks: MachinePeaks | None) -> Efficiency:
    """`cost` x `batch` FLOPs and its weight bytes (read once per call) done in `seconds`."""
    peak, bw, note = _peaks_of(peaks, precision)
    if not isinstance(cost, GraphCost):
        return efficiency(row_id, stage, precision, seconds, None, None, peak, bw, cost or "n/a: no cost")
    return efficiency(row_id, stage, precision, seconds, float(cost.flops * batch), float(cost.weight_bytes),
                      peak, bw, note)


def graph_row(row: "ProfileRow", cost: GraphCost | str | None, peaks: MachinePeaks | None,
              precision: str) -> Efficiency:
    """A per-graph row, at its median time."""
    return held(row.id, row.graph, precision, row.latency.p50 / 1e3, cost, row.batch, peaks)


def captioner_rows(row: "ProfileRow", costs: dict[str, GraphCost | str], peaks: MachinePeaks | None,
                   precision: str) -> list[Efficiency]:
    """An end-to-end captioner row: encoder and decoder_init per call (stage means), one decoding step."""
    stages = row.stages or {}
    out = [held(row.id, stage, precision, stages.get(stage, {}).get("mean_ms", 0.0) / 1e3, costs.get(stage),
                row.batch, peaks) for stage in ("encoder", "decoder_init")]
    step = held(row.id, "decoder_step (per step)", precision, (row.extra.get("per_step_ms") or 0.0) / 1e3,
                costs.get(DECODER_STEP), row.batch, peaks)
    if step.flops is not None:  # the rows per step shrink as beams finish: held to the bandwidth only
        step.flops = step.compute = step.roofline = step.bound = None
        step.note = step.note or "memory only: the rows per step vary as beams finish"
    return out + [step]


def captioner_overheads(row: "ProfileRow", decode_s: float | None) -> dict[str, Any]:
    """Preprocessing against the image decode alone, and the time outside the sessions."""
    stages = row.stages or {}
    total = row.latency.mean
    pre = stages.get("preprocess", {}).get("mean_ms")
    decode_ms = decode_s * 1e3 * row.batch if decode_s is not None else None
    inside = math.fsum(stages.get(s, {}).get("mean_ms", 0.0) for s in SESSION_STAGES)
    outside = max(0.0, total - inside)
    doc = {"row": row.id, "batch": row.batch, "beam": row.beam, "total_ms": total, "preprocess_ms": pre,
           "decode_ms": decode_ms, "preprocess_over_decode": pre / decode_ms if pre is not None and decode_ms else None,
           "outside_sessions_ms": outside, "outside_share": outside / total if total else None}
    return {k: round_sig(v) for k, v in doc.items()}


def decode_seconds(image: str | None, hw: tuple[int, int], image_size: int, runs: int) -> float:
    """Mean seconds to decode the profile's image alone, as the pipeline reads it (one warm-up)."""
    import time

    from mmedge.runtime.image import read_image

    with tempfile.TemporaryDirectory(prefix="mmedge-roofline-") as tmp:
        if image is None:
            from PIL import Image

            from mmedge.runtime.profile_inputs import synthetic_image

            image = str(Path(tmp) / "scene.png")
            Image.fromarray(synthetic_image(*hw)).save(image)
        read_image(image, min_size=image_size)
        t0 = time.perf_counter()
        for _ in range(runs):
            read_image(image, min_size=image_size)
        return (time.perf_counter() - t0) / runs


# ============================================================================ the section
def machine_facts() -> dict[str, Any]:
    from mmedge.runtime.device import Probe
    from mmedge.runtime.peaks import last_level_cache_bytes

    cpu = Probe(import_modules=False).cpu()
    return {"cpu": cpu.get("model"), "arch": cpu.get("arch"), "flags": cpu.get("flags", []),
            "llc_bytes": last_level_cache_bytes()}


def roofline_section(result: "ProfileResult", options: "ProfileOptions",
                     log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Peaks per profiled backend, costs per artifact, efficiencies per row (the profile's `roofline`)."""
    arts: dict[str, ArtifactInfo] = {a.id: a for a in result.artifacts}
    peaks: dict[str, MachinePeaks] = {}
    for backend in dict.fromkeys(a.backend for a in result.artifacts):
        log(f"roofline: measuring {backend}'s peaks (GEMM per precision, STREAM Add)")
        peaks[backend] = measure_peaks(backend, PeakOptions(threads=options.threads, session=dict(options.session)))
    costs = {a.id: artifact_costs(a.path) for a in result.artifacts}
    eff: list[Efficiency] = []
    overheads: list[dict[str, Any]] = []
    decode_s: dict[str, float | None] = {}  # artifact path -> seconds (the JPEG decode depends on the size)
    for row in result.rows:
        art = arts[row.info.artifact]
        precision = peak_precision(art.precision, art.backend, options.session)
        if row.kind == "graph":
            eff.append(graph_row(row, costs[art.id].get(row.graph), peaks.get(art.backend), precision))
        elif row.info.pipeline == "captioner" and row.stages and "decoder_steps" in row.stages:
            eff += captioner_rows(row, costs[art.id], peaks.get(art.backend), precision)
            if art.path not in decode_s:
                decode_s[art.path] = _decode_or_none(art, options, log)
            overheads.append(captioner_overheads(row, decode_s[art.path]))
    return {"machine": machine_facts(), "peaks": [p.to_json() for p in peaks.values()],
            "costs": {aid: {g: c.to_json() if isinstance(c, GraphCost) else {"note": c} for g, c in cs.items()}
                      for aid, cs in costs.items()},
            "efficiency": [e.to_json() for e in eff], "overheads": overheads}


def _decode_or_none(art: "ArtifactInfo", options: "ProfileOptions", log: Callable[[str], None]) -> float | None:
    from mmedge.runtime.manifest import read_manifest

    size = int(read_manifest(art.path, verify=False).preprocessing["image_size"])
    log("roofline: timing the image decode alone")
    try:
        return decode_seconds(options.image, options.image_hw, size, max(3, min(options.runs, 20)))
    except InputError:
        return None


# ============================================================================ JSON
_SECTION = {"machine": dict, "peaks": list, "costs": dict, "efficiency": list, "overheads": list}
_PEAK = {"backend": str, "compute": dict, "bandwidth": dict}
_EFF = {"row": str, "stage": str, "precision": str, "seconds": (int, float)}


def validate_section(doc: Any, where: str) -> None:
    """Check a profile's optional `roofline` object (InputError naming the first problem)."""

    def need(obj: Any, spec: dict[str, Any], at: str) -> None:
        if not isinstance(obj, dict):
            raise InputError(f"{where}: {at} must be an object")
        for key, typ in spec.items():
            if not isinstance(obj.get(key), typ):
                raise InputError(f"{where}: {at}.{key} is missing or has type {type(obj.get(key)).__name__}")

    need(doc, _SECTION, "roofline")
    for i, p in enumerate(doc["peaks"]):
        need(p, _PEAK, f"roofline.peaks[{i}]")
    for i, e in enumerate(doc["efficiency"]):
        need(e, _EFF, f"roofline.efficiency[{i}]")
