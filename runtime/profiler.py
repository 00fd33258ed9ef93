"""Latency profiling of artifacts: per graph and end to end, on the host or on the device.

Torch-free (numpy, the standard library and the runtime's backends only), so it
runs wherever `pip install mmedge[onnxruntime]` (or `[openvino]`) does, ARM included.

What is measured, per artifact (format x precision, on one backend):

- **per graph** (one row per graph x batch size): the time to open (load/compile)
  the graph's Session alone, the first inference, then `runs` timed inferences
  after `warmup` untimed ones, on the artifact's `test_vectors.npz` inputs tiled
  along the batch axis to each requested batch size (row i of a batch is row
  i mod n of the vectors);
- **end to end** (one row per batch x beam for the captioner, batch 1 for the
  audio and refocus pipelines, which take one item per call): the pipeline's own
  `load()`, then the public call on synthetic data (a 640x480 PNG, or `image`;
  a 2 s clip; a 640x480 photo, or `image`, with a depth ramp), split into stages:
  captioner `preprocess` (read + resize + normalise), `encoder`, `decoder_init`,
  `decoder_steps` (every `decoder_step` call; also reported per step),
  `beam_bookkeeping` (the numpy beam search around the steps: top-k, reordering,
  binding, finalize and building the results) and `other` (input checks,
  reshapes); audio `frontend` (STFT / waveform) and `network`; refocus `network`
  and `pre_post`. The stages are measured without touching `runtime/decode.py`:
  the pipeline's Sessions are swapped for timing proxies for the duration of the
  row and its `preprocess`/`features` method is wrapped on the instance;
  `beam_bookkeeping` is the time from the end of `decoder_init` to the end of
  `caption()` minus the step calls.

With `eval`, the task metric of the demo-models issue (BLEU-4 for the captioner at
each beam, top-1 for the audio models, on the held-out demo data) is measured
after every artifact has been timed, and attached to the artifact and its
end-to-end rows.

Measurement hygiene: warm-up runs are excluded; every interval comes from one
injectable `Clock` (default `time.perf_counter`, monotonic); the garbage
collector is off during timed runs (as `timeit` does); `threads` is passed to
the backends (`load(..., threads=T)`) and `pin` restricts the process to the
given CPUs (`os.sched_setaffinity`, Linux) for the whole profile, threads of the
backends included. Run-to-run noise is reported per row as the min-max spread,
(max - min) / p50, and the p10-p90 spread, (p90 - p10) / p50; a row whose
p10-p90 spread exceeds `noise_threshold` (default 0.2) is flagged noisy and a
warning says so. The CPU time other processes used during the profile is
reported too (Linux, /proc/stat).

Statistics over the timed runs of a row (`LatencyStats`, milliseconds):
min, max, mean, std (the sample standard deviation, n - 1 in the denominator;
0 for one run) and the percentiles p10, p50, p90, p99, computed with linear
interpolation between the closest ranks: for sorted values x[0..n-1] and
q in [0, 100], h = (n - 1) q / 100, p = x[floor h] + (h - floor h)(x[floor h + 1] - x[floor h]),
which is numpy's default `np.percentile(..., method="linear")` (Hyndman & Fan
type 7). Throughput is items per second: batch / p50 latency (images/s, clips/s,
or graph rows/s; the median rather than the mean, so that a few runs slowed down
by other processes do not move it); tokens/s is the output tokens (an image's
caption tokens plus its `<end>`) per second end to end (mean tokens / mean
latency), and `decode_tokens_per_s` per second of decoding (steps + bookkeeping);
megapixels/s = pixels / p50 latency; realtime_factor = audio seconds / p50 latency.

Memory: `peak_rss_mb` is the peak resident memory of the whole *process* so far,
`resource.getrusage(RUSAGE_SELF).ru_maxrss` (on Linux read as VmHWM from
/proc/self/status, the same peak without the parent's memory that Linux's
ru_maxrss carries over fork + exec). It is a high-water mark: it never goes
down, so a row also carries the peaks of the rows profiled before it (profile
one artifact per process to attribute memory). `rss_mb` is the current resident
memory after the row (/proc/self/statm; None elsewhere).

The JSON document (`ProfileResult.to_json()`, `mmedge profile --json`) is stable;
`schema_version` changes when a field is removed or changes meaning (fields may
be added within a version). Schema version 1:

    schema            "mmedge.profile"
    schema_version    1
    created           UTC time, ISO 8601
    mmedge            mmedge version
    machine           cpu, arch, board (device-tree model or null), logical_cpus,
                      physical_cores, affinity (CPUs this process may use), os,
                      python, numpy, backends {name: version or null}, l4t (Jetson Linux
                      release or null), power_mode / power_mode_id (`nvpmodel -q`, or null),
                      jetson_clocks (true/false, or null off a Jetson)
    options           runs, warmup, batch [..], beam [..], max_len, threads, pin,
                      backend, noise_threshold, eval, eval_split, eval_limit, image
    environment       other_cpu_load (mean CPUs kept busy by other processes, or null),
                      pinned_cpus, gc_disabled, tegrastats (null where `tegrastats` is not
                      installed; else {samples, interval_ms, ram_used_mb {min, mean, max},
                      ram_total_mb, swap_used_mb, gpu_pct, rails_mw {rail: {min, mean, max}}}
                      sampled every 100 ms over the whole profile, the eval included)
    artifacts[]       id, path, model, config, pipeline, format, precision, backend,
                      size_bytes (all files), model_bytes (graph files), load_ms
                      (pipeline load: manifest + sha256 check + every graph),
                      eval ([{beam, split, samples, metrics}] or null), eval_error
    rows[]            id ("<artifact id>/<graph>/b<batch>[/k<beam>]"), artifact, model,
                      config, pipeline, format, precision, backend,
                      kind ("graph" | "e2e"), graph (a graph name or "end-to-end"),
                      batch, beam (int or null), size_bytes, load_ms, first_ms,
                      latency_ms {n, min, p10, p50, p90, p99, max, mean, std},
                      noise {minmax, p10_p90, noisy}, throughput {value, unit},
                      memory {peak_rss_mb, rss_mb}, samples_ms [every timed run],
                      stages ({stage: {mean_ms, p50_ms, share}} or null; share = mean / mean total),
                      extra ({name: number}: steps, per_step_ms, tokens_per_s, ...),
                      metrics ({name: value} or null: the task metric with --eval)
    warnings[]        human-readable lines
    roofline          optional (`roofline` option): machine, peaks[], costs, efficiency[], overheads[];
                      described in mmedge/runtime/roofline.py

`compare(old, new, threshold)` matches rows by id and reports the relative
change of p50, (new - old) / old; a change above +threshold is a regression
(exit code 1 in `mmedge profile --compare`).
"""

from __future__ import annotations

import gc
import math
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mmedge.errors import InputError, MmedgeError
from mmedge.runtime.decode import DEFAULT_MAX_LEN
from mmedge.runtime.manifest import GraphEntry, Manifest, read_manifest
from mmedge.runtime.session import Session, available, backend_for_format, backend_names, open_session

SCHEMA = "mmedge.profile"
SCHEMA_VERSION = 1
DEFAULT_NOISE_THRESHOLD = 0.2  # (p90 - p10) / p50 above this: the row is flagged noisy
DEFAULT_COMPARE_THRESHOLD = 0.10  # relative p50 change that counts as a regression
E2E = "end-to-end"
AUDIO_SECONDS = 2.0  # the demo sounds' longest clip
IMAGE_HW = (480, 640)  # captioner and refocus end-to-end inputs (height, width)
_MAIN_METRIC = {"captioner": "bleu4", "soundnet": "top1", "voice-encoder": "top1"}

# Versions reported in `machine.backends`: backend -> distributions that provide it
_BACKEND_DISTS = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
    "coreml": ("coremltools",),
}


# ============================================================================ clock and statistics
class Clock:
    """Seconds from a monotonic clock. Tests inject a fake one to control every interval."""

    def now(self) -> float:
        return time.perf_counter()


PERF_CLOCK = Clock()


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = sorted(float(v) for v in values)
    h = (len(xs) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


@dataclass
class LatencyStats:
    """Summary of the timed runs of one row, in milliseconds."""

    n: int
    min: float
    p10: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single run

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "LatencyStats":
        if not samples:
            raise ValueError("no timed runs")
        ms = [float(s) * 1e3 for s in samples]
        n = len(ms)
        mean = math.fsum(ms) / n
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in ms) / (n - 1)) if n > 1 else 0.0
        return cls(n, min(ms), percentile(ms, 10), percentile(ms, 50), percentile(ms, 90), percentile(ms, 99),
                   max(ms), mean, std)

    @property
    def spread_minmax(self) -> float:
        """(max - min) / p50: the run-to-run noise."""
        return (self.max - self.min) / self.p50 if self.p50 > 0 else 0.0

    @property
    def spread_p10_p90(self) -> float:
        """(p90 - p10) / p50: the noise without the single worst and best runs' pull."""
        return (self.p90 - self.p10) / self.p50 if self.p50 > 0 else 0.0


def throughput(items: float, stats: LatencyStats) -> float:
    """Items per second: items per run / median seconds per run (robust to a shared machine's outliers)."""
    return items / (stats.p50 / 1e3) if stats.p50 > 0 else float("inf")


# ============================================================================ options and results
@dataclass
class ProfileOptions:
    runs: int = 20
    warmup: int = 3
    batch: tuple[int, ...] = (1,)
    beam: tuple[int, ...] = (3,)
    max_len: int = DEFAULT_MAX_LEN  # captioner: decoding steps at most, <end> included (51: the tutorial's)
    threads: int | None = None  # intra-op threads for the backends (None: the backend's default)
    pin: tuple[int, ...] | None = None  # CPUs to pin the process to (Linux)
    backend: str | None = None  # None: the backend of each artifact's format
    graphs: bool = True  # per-graph rows
    end_to_end: bool = True  # pipeline rows
    eval: bool = False  # add the task metric (demo data)
    # model name -> its evaluate(pipeline, split=, limit=, progress=, [beam=]) function. The task
    # metric lives above the runtime (mmedge.calibration.evaluate.evaluator, needs the demo data
    # generators and nltk): the caller hands it down, the runtime never imports it.
    evaluator: Callable[[str], Callable[..., Any]] | None = None
    eval_split: str = "test"
    eval_limit: int | None = None
    noise_threshold: float = DEFAULT_NOISE_THRESHOLD
    disable_gc: bool = True
    audio_seconds: float = AUDIO_SECONDS
    image_hw: tuple[int, int] = IMAGE_HW  # size of the synthetic end-to-end image
    image: str | None = None  # captioner / refocus end to end: this image file instead of the synthetic one
    session: dict[str, Any] = field(default_factory=dict)  # backend session options (device=GPU, precision=bf16)
    roofline: bool = False  # measure the machine's peaks and each stage's efficiency (runtime/roofline.py)

    def validate(self) -> None:
        if self.runs < 1:
            raise InputError(f"--runs must be >= 1, got {self.runs}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0, got {self.warmup}")
        if not self.batch or min(self.batch) < 1:
            raise InputError(f"--batch values must be >= 1, got {list(self.batch)}")
        if not self.beam or min(self.beam) < 1:
            raise InputError(f"--beam values must be >= 1, got {list(self.beam)}")
        if self.max_len < 1:
            raise InputError(f"max_len must be >= 1, got {self.max_len}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if self.pin is not None and (not self.pin or min(self.pin) < 0):
            raise InputError(f"--pin expects CPU numbers >= 0, got {list(self.pin)}")
        if self.backend is not None and self.backend not in backend_names():
            raise InputError(f"unknown backend {self.backend!r}; valid: {', '.join(backend_names())}")
        if not self.noise_threshold > 0:
            raise InputError(f"noise threshold must be > 0, got {self.noise_threshold}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise InputError(f"--eval-limit must be >= 1, got {self.eval_limit}")
        if self.audio_seconds <= 0 or min(self.image_hw) < 1:
            raise InputError("audio_seconds and image_hw must be positive")
        if self.image is not None and not Path(self.image).is_file():
            raise InputError(f"{self.image}: image not found")

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "warmup": self.warmup, "batch": list(self.batch), "beam": list(self.beam),
                "max_len": self.max_len, "threads": self.threads,
                "pin": list(self.pin) if self.pin is not None else None, "backend": self.backend,
                "noise_threshold": self.noise_threshold, "eval": self.eval, "eval_split": self.eval_split,
                "eval_limit": self.eval_limit, "image": self.image, "roofline": self.roofline}


@dataclass
class RowInfo:
    """What a row measures (identity), independent of the numbers."""

    artifact: str  # artifact id: "<model>-<config>-<format>-<precision>" (+ "@<backend>" off its default)
    model: str
    config: str
    pipeline: str
    format: str
    precision: str
    backend: str


@dataclass
class ProfileRow:
    info: RowInfo
    kind: str  # "graph" | "e2e"
    graph: str  # graph name or "end-to-end"
    batch: int
    beam: int | None
    size_bytes: int
    load_ms: float
    first_ms: float
    latency: LatencyStats
    samples_ms: list[float]
    throughput: float
    throughput_unit: str
    peak_rss_mb: float | None
    rss_mb: float | None
    noisy: bool
    stages: dict[str, dict[str, float]] | None = None
    extra: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] | None = None

    @property
    def id(self) -> str:
        return f"{self.info.artifact}/{self.graph}/b{self.batch}" + (f"/k{self.beam}" if self.beam is not None else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, **asdict(self.info), "kind": self.kind, "graph": self.graph, "batch": self.batch,
            "beam": self.beam, "size_bytes": self.size_bytes, "load_ms": _r(self.load_ms),
            "first_ms": _r(self.first_ms), "latency_ms": {k: _r(v) if k != "n" else v
                                                        for k, v in asdict(self.latency).items()},
            "noise": {"minmax": _r(self.latency.spread_minmax), "p10_p90": _r(self.latency.spread_p10_p90),
                      "noisy": self.noisy},
            "throughput": {"value": _r(self.throughput), "unit": self.throughput_unit},
            "memory": {"peak_rss_mb": _r(self.peak_rss_mb), "rss_mb": _r(self.rss_mb)},
            "samples_ms": [_r(s) for s in self.samples_ms],
            "stages": self.stages, "extra": {k: _r(v) for k, v in self.extra.items()}, "metrics": self.metrics,
        }


@dataclass
class ArtifactInfo:
    id: str
    path: str
    model: str
    config: str
    pipeline: str
    format: str
    precision: str
    backend: str
    size_bytes: int
    model_bytes: int
    load_ms: float | None = None
    eval: list[dict[str, Any]] | None = None
    eval_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "load_ms": _r(self.load_ms)}


@dataclass
class ProfileResult:
    machine: dict[str, Any]
    options: dict[str, Any]
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    rows: list[ProfileRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    roofline: dict[str, Any] | None = None  # peaks and efficiencies (runtime/roofline.py), when measured

    def to_json(self) -> dict[str, Any]:
        from mmedge import __version__

        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": self.created, "mmedge": __version__,
                "machine": self.machine, "options": self.options, "environment": self.environment,
                "artifacts": [a.to_json() for a in self.artifacts], "rows": [r.to_json() for r in self.rows],
                "warnings": list(self.warnings), **({"roofline": self.roofline} if self.roofline is not None else {})}


def _r(x: float | None, digits: int = 6) -> float | None:
    """Round for JSON (None and non-finite values stay as they are)."""
    if x is None or not math.isfinite(x):
        return x
    return round(float(x), digits)


# JSON schema version 1: required keys and their types (what `validate_json` checks)
_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
SCHEMA_TOP: dict[str, Any] = {"schema": str, "schema_version": int, "created": str, "mmedge": str,
                              "machine": dict, "options": dict, "environment": dict, "artifacts": list,
                              "rows": list, "warnings": list}
SCHEMA_MACHINE: dict[str, Any] = {"cpu": str, "arch": str, "board": (str, type(None)), "logical_cpus": int,
                                  "physical_cores": int, "affinity": (list, type(None)), "os": str, "python": str,
                                  "numpy": str, "backends": dict}
SCHEMA_ARTIFACT: dict[str, Any] = {"id": str, "path": str, "model": str, "config": str, "pipeline": str,
                                   "format": str, "precision": str, "backend": str, "size_bytes": int,
                                   "model_bytes": int, "load_ms": _OPT_NUM, "eval": (list, type(None)),
                                   "eval_error": (str, type(None))}
SCHEMA_ROW: dict[str, Any] = {"id": str, "artifact": str, "model": str, "config": str, "pipeline": str,
                              "format": str, "precision": str, "backend": str, "kind": str, "graph": str,
                              "batch": int, "beam": (int, type(None)), "size_bytes": int, "load_ms": _NUM,
                              "first_ms": _NUM, "latency_ms": dict, "noise": dict, "throughput": dict,
                              "memory": dict, "samples_ms": list, "stages": (dict, type(None)), "extra": dict,
                              "metrics": (dict, type(None))}
SCHEMA_LATENCY = ("n", "min", "p10", "p50", "p90", "p99", "max", "mean", "std")


def validate_json(doc: Any, where: str = "profile") -> dict[str, Any]:
    """Check a profile JSON document against schema version 1; raise InputError naming the first problem."""

    def need(obj: Any, spec: dict[str, Any], at: str) -> None:
        if not isinstance(obj, dict):
            raise InputError(f"{where}: {at} must be an object")
        for key, typ in spec.items():
            if key not in obj:
                raise InputError(f"{where}: {at} has no {key!r}")
            if not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
                raise InputError(f"{where}: {at}.{key} has type {type(obj[key]).__name__}")

    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(f"{where}: not an mmedge profile (expected \"schema\": \"{SCHEMA}\"; "
                         f"write one with `mmedge profile --json`)")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{where}: schema_version {doc.get('schema_version')!r}, this mmedge reads "
                         f"{SCHEMA_VERSION}")
    need(doc, SCHEMA_TOP, "document")
    need(doc["machine"], SCHEMA_MACHINE, "machine")
    for i, a in enumerate(doc["artifacts"]):
        need(a, SCHEMA_ARTIFACT, f"artifacts[{i}]")
    for i, row in enumerate(doc["rows"]):
        need(row, SCHEMA_ROW, f"rows[{i}]")
        need(row["latency_ms"], {k: (int if k == "n" else _NUM) for k in SCHEMA_LATENCY}, f"rows[{i}].latency_ms")
        need(row["noise"], {"minmax": _NUM, "p10_p90": _NUM, "noisy": bool}, f"rows[{i}].noise")
        need(row["throughput"], {"value": _NUM, "unit": str}, f"rows[{i}].throughput")
        need(row["memory"], {"peak_rss_mb": _OPT_NUM, "rss_mb": _OPT_NUM}, f"rows[{i}].memory")
    if "roofline" in doc:  # optional: profiles without it (older ones, --no-roofline) stay readable
        from mmedge.runtime.roofline import validate_section

        validate_section(doc["roofline"], where)
    return doc


# ============================================================================ machine and process
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo (x86 "model name", ARM "Hardware" / implementer+part) or platform."""
    text = _cpuinfo()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, val = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = val.strip()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    if "CPU implementer" in fields:
        return f"ARM implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.machine()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; the logical count where absent (ARM)."""
    pairs, phys, core = set(), "0", None
    for line in _cpuinfo().splitlines() + [""]:
        key, _, val = (s.strip() for s in line.partition(":"))
        if key == "physical id":
            phys = val
        elif key == "core id":
            core = val
        elif not line.strip() and core is not None:
            pairs.add((phys, core))
            core = None
    return len(pairs) or (os.cpu_count() or 1)


def board_model() -> str | None:
    """The board's name from the device tree (Jetson, Raspberry Pi, ...), else None."""
    for p in ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model"):
        try:
            return Path(p).read_bytes().rstrip(b"\x00").decode(errors="replace").strip() or None
        except OSError:
            continue
    return None


def affinity() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def backend_versions() -> dict[str, str | None]:
    """Installed version of each backend's package (read from metadata: nothing heavy is imported)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in backend_names():
        out[name] = None
        if not available(name):  # metadata can outlive a removed package
            continue
        for dist in _BACKEND_DISTS.get(name, (name,)):
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def machine_info() -> dict[str, Any]:
    return {"cpu": cpu_model(), "arch": platform.machine(), "board": board_model(),
            "logical_cpus": os.cpu_count() or 1, "physical_cores": physical_cores(), "affinity": affinity(),
            "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "backends": backend_versions(), **_board_facts()}


def _board_facts() -> dict[str, Any]:
    """Jetson facts (mmedge.runtime.device): L4T release, `nvpmodel -q` power mode, jetson_clocks;
    None each off a Jetson. Never raises: a failed probe is None."""
    from mmedge.runtime.device import machine_facts

    try:
        return machine_facts()
    except Exception:  # a probe must not stop a profile
        return {"l4t": None, "power_mode": None, "power_mode_id": None, "jetson_clocks": None}


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far (a high-water mark), MiB.

    `resource.getrusage(RUSAGE_SELF).ru_maxrss`; on Linux the same peak read as VmHWM from
    /proc/self/status instead, because Linux's ru_maxrss also carries the parent's peak over
    fork + exec (a profile started by a 5 GB process would report 5 GB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def rss_mb() -> float | None:
    """Current resident memory of this process, MiB (Linux /proc/self/statm), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the machine, this process's CPU seconds, monotonic time); None off Linux."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(vals) - vals[3] - (vals[4] if len(vals) > 4 else 0)  # minus idle and iowait
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system, time.monotonic()


def other_cpu_load(a: tuple[float, float, float] | None, b: tuple[float, float, float] | None,
                   min_interval: float = 0.5) -> float | None:
    """Mean number of CPUs kept busy by other processes between two snapshots (None if too short)."""
    if a is None or b is None or b[2] - a[2] < max(min_interval, 1e-9):
        return None
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (b[2] - a[2]))


@contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[list[int] | None]:
    """Restrict this process (and the threads it starts) to `cpus`; restore the previous set after."""
    if cpus is None:
        yield None
        return
    if not hasattr(os, "sched_setaffinity"):
        raise InputError("--pin needs os.sched_setaffinity (Linux); leave it out on this system")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, set(cpus))
    except (OSError, ValueError) as e:
        raise InputError(f"--pin {','.join(map(str, cpus))}: cannot pin to these CPUs ({e}); "
                         f"this process may use CPUs {sorted(before)}") from None
    try:
        yield sorted(os.sched_getaffinity(0))
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def _gc_off(enabled: bool) -> Iterator[None]:
    was = gc.isenabled()
    if enabled:
        gc.collect()
        gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ============================================================================ measuring
@dataclass
class Timed:
    first_s: float
    samples_s: list[float]
    first_value: Any
    values: list[Any]  # what each timed call returned


def timed_runs(call: Callable[[], Any], runs: int, warmup: int, clock: Clock = PERF_CLOCK,
               disable_gc: bool = True) -> Timed:
    """First call (timed, reported apart), `warmup` untimed calls, `runs` timed calls."""
    t0 = clock.now()
    first = call()
    first_s = clock.now() - t0
    for _ in range(warmup):
        call()
    samples, values = [], []
    with _gc_off(disable_gc):
        for _ in range(runs):
            t0 = clock.now()
            v = call()
            samples.append(clock.now() - t0)
            values.append(v)
    return Timed(first_s, samples, first, values)


class TimedSession:
    """Stands in for a Session inside a pipeline: times `run()` with the profiler's clock.

    Everything else (bind, unbind, inputs, ...) goes to the wrapped Session, so the
    runtime's code (beam search included) runs unchanged.
    """

    def __init__(self, session: Session, clock: Clock) -> None:
        self._session, self._clock = session, clock
        self.calls: list[float] = []
        self.last_end: float | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = self._clock.now()
        out = self._session.run(feeds)
        self.last_end = self._clock.now()
        self.calls.append(self.last_end - t0)
        return out

    def reset(self) -> None:
        self.calls.clear()
        self.last_end = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def batch_feeds(vectors: Any, graph: GraphEntry, batch: int) -> dict[str, np.ndarray] | None:
    """The graph's test-vector inputs at `batch` rows (row i = vector row i mod n); None if axis 0 is fixed."""
    feeds = {}
    for t in graph.inputs:
        key = f"{graph.name}.{t.name}"
        if key not in vectors:
            raise InputError(f"test vectors have no {key!r}; re-export the artifact")
        x = np.asarray(vectors[key])
        if x.ndim == 0 or not t.shape:
            return None
        if isinstance(t.shape[0], int) and t.shape[0] != batch:
            return None
        feeds[t.name] = np.ascontiguousarray(np.take(x, np.arange(batch) % x.shape[0], axis=0))
    return feeds


def make_row(info: RowInfo, kind: str, graph: str, batch: int, beam: int | None, timed: Timed, *, load_s: float,
             size_bytes: int, items: float, unit: str, noise_threshold: float,
             stages: dict[str, list[float]] | None = None, extra: dict[str, float] | None = None) -> ProfileRow:
    """A row from timed runs; `stages` maps a stage to its seconds in every timed run."""
    stats = LatencyStats.from_seconds(timed.samples_s)
    stage_doc = None
    if stages:
        total = stats.mean
        stage_doc = {}
        for name, secs in stages.items():
            s = LatencyStats.from_seconds(secs)
            stage_doc[name] = {"mean_ms": _r(s.mean), "p50_ms": _r(s.p50), "share": _r(s.mean / total if total else 0.0)}
    return ProfileRow(info, kind, graph, batch, beam, size_bytes, load_s * 1e3, timed.first_s * 1e3, stats,
                      [s * 1e3 for s in timed.samples_s], throughput(items, stats), unit, peak_rss_mb(), rss_mb(),
                      stats.spread_p10_p90 > noise_threshold, stage_doc, dict(extra or {}))


# ============================================================================ artifacts
def _artifact_id(m: Manifest, backend: str) -> str:
    name = f"{m.model}-{m.config}-{m.format}-{m.precision}"
    try:
        default = backend_for_format(m.format)
    except MmedgeError:
        default = None
    return name if backend == default else f"{name}@{backend}"


def _graph_bytes(root: Path, m: Manifest, g: GraphEntry) -> int:
    """The graph file plus its companions (`encoder.bin`, `encoder.onnx.data`, ...)."""
    stem = g.file.rsplit(".", 1)[0]
    names = {rel for rel in m.files if rel == g.file or rel.startswith(stem + ".")} | {g.file}
    return sum((root / rel).stat().st_size for rel in names if (root / rel).is_file())


def _dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _backend_options(options: ProfileOptions) -> dict[str, Any]:
    return {**options.session, **({"threads": options.threads} if options.threads else {})}


def profile_graphs(root: Path, m: Manifest, info: RowInfo, options: ProfileOptions, clock: Clock = PERF_CLOCK,
                   log: Callable[[str], None] = lambda s: None) -> tuple[list[ProfileRow], list[str]]:
    """One row per graph x batch size, on the artifact's test vectors."""
    vec_file = root / m.extra.get("test_vectors", "test_vectors.npz")
    if not vec_file.is_file():
        return [], [f"{root}: no {vec_file.name}; per-graph rows skipped (re-export the artifact)"]
    rows, warnings = [], []
    from mmedge.runtime.manifest import load_test_vectors

    vectors = load_test_vectors(root, m)  # checked against the graphs (no pickles, no bombs)
    for g in m.graphs:
        t0 = clock.now()
        session = open_session(info.backend, root / g.file, g.inputs, g.outputs, **_backend_options(options))
        load_s = clock.now() - t0
        size = _graph_bytes(root, m, g)
        for b in options.batch:
            feeds = batch_feeds(vectors, g, b)
            if feeds is None:
                warnings.append(f"{info.artifact}: graph {g.name} has a fixed batch size; batch {b} skipped")
                continue
            log(f"{info.artifact}: {g.name} batch {b}")
            timed = timed_runs(lambda: session.run(feeds), options.runs, options.warmup, clock, options.disable_gc)
            rows.append(make_row(info, "graph", g.name, b, None, timed, load_s=load_s, size_bytes=size, items=b,
                                 unit="items/s", noise_threshold=options.noise_threshold))
    return rows, warnings


# ---------------------------------------------------------------------------- synthetic inputs
def synthetic_image(height: int = IMAGE_HW[0], width: int = IMAGE_HW[1], seed: int = 0) -> np.ndarray:
    """A smooth scene (sky, sun, hills, a box) with sensor noise: HxWx3 uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = y / height
    img = np.stack([90 + 80 * sky, 150 + 60 * sky, 235 - 40 * sky], axis=-1)
    sun = np.exp(-(((x - 0.75 * width) ** 2 + (y - 0.2 * height) ** 2) / (2 * (0.06 * width) ** 2)))
    img += sun[..., None] * np.array([160, 120, 0], np.float32)
    hill = y > height * (0.62 + 0.08 * np.sin(x / width * 2 * np.pi * 1.5))
    img[hill] = np.stack([60 + 40 * sky[hill], 130 + 50 * np.cos(x[hill] / 37.0), 50 + 20 * sky[hill]], 1)
    box = (np.abs(x - 0.3 * width) < 0.08 * width) & (np.abs(y - 0.7 * height) < 0.1 * height)
    img[box] = (200, 40, 35)
    img += np.random.default_rng(seed).normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_clip(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A chirp with harmonics, clicks and noise: float32 in [-1, 1]."""
    t = np.arange(int(round(seconds * sample_rate)), dtype=np.float64) / sample_rate
    f = 220.0 + 660.0 * t / max(seconds, 1e-9)
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    x = 0.4 * np.sin(phase) + 0.15 * np.sin(2 * phase) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    x[:: max(1, sample_rate // 8)] += 0.3
    return np.clip(x, -1, 1).astype(np.float32)


# ---------------------------------------------------------------------------- end to end
@contextmanager
def _instrumented(pipe: Any, clock: Clock, method: str | None) -> Iterator[tuple[dict[str, TimedSession], list[float]]]:
    """Swap the pipeline's Sessions for TimedSessions and time `pipe.<method>` calls; restore after."""
    original = pipe.sessions
    proxies = {name: TimedSession(s, clock) for name, s in original.items()}
    spent: list[float] = []
    pipe.sessions = proxies
    if method is not None:
        inner = getattr(pipe, method)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            t0 = clock.now()
            try:
                return inner(*args, **kwargs)
            finally:
                spent.append(clock.now() - t0)

        setattr(pipe, method, wrapped)  # an instance attribute shadows the method
    try:
        yield proxies, spent
    finally:
        pipe.sessions = original
        if method is not None:
            delattr(pipe, method)


def _stage_lists(runs: list[dict[str, float]]) -> dict[str, list[float]]:
    return {k: [r[k] for r in runs] for k in runs[0]} if runs else {}


def profile_captioner(pipe: Any, info: RowInfo, options: ProfileOptions, load_s: float, size_bytes: int,
                      clock: Clock = PERF_CLOCK, log: Callable[[str], None] = lambda s: None) -> list[ProfileRow]:
    """image -> caption, split into preprocess / encoder / decoder_init / steps / bookkeeping / other."""
    rows = []
    h, w = options.image_hw
    with tempfile.TemporaryDirectory(prefix="mmedge-profile-") as tmp:
        from PIL import Image

        image = Path(options.image) if options.image else Path(tmp) / "scene.png"
        if not options.image:
            Image.fromarray(synthetic_image(h, w)).save(image)
        with _instrumented(pipe, clock, "preprocess") as (s, pre):
            enc, init, step = s["encoder"], s["decoder_init"], s["decoder_step"]
            for b in options.batch:
                images = [str(image)] * b
                for k in options.beam:

                    def once() -> dict[str, float]:
                        pre.clear()
                        for p in s.values():
                            p.reset()
                        t0 = clock.now()
                        results = pipe.caption(images, beam=k, max_len=options.max_len)
                        t1 = clock.now()
                        total, steps = t1 - t0, math.fsum(step.calls)
                        decoding = t1 - init.last_end if init.last_end is not None else steps
                        parts = {"preprocess": math.fsum(pre), "encoder": math.fsum(enc.calls),
                                 "decoder_init": math.fsum(init.calls), "decoder_steps": steps,
                                 "beam_bookkeeping": max(0.0, decoding - steps)}
                        parts["other"] = max(0.0, total - math.fsum(parts.values()))
                        return {**parts, "_steps": float(len(step.calls)),
                                "_tokens": float(sum(len(r.tokens) + int(r.finished) for r in results))}

                    log(f"{info.artifact}: end to end, batch {b}, beam {k}")
                    timed = timed_runs(once, options.runs, options.warmup, clock, options.disable_gc)
                    runs = timed.values
                    steps_per_run = [r.pop("_steps") for r in runs]
                    tokens_per_run = [r.pop("_tokens") for r in runs]
                    stage_lists = _stage_lists(runs)
                    mean_total = math.fsum(timed.samples_s) / len(timed.samples_s)
                    decode_s = math.fsum(stage_lists["decoder_steps"] + stage_lists["beam_bookkeeping"]) / len(runs)
                    steps_total = math.fsum(steps_per_run)
                    extra = {"steps": math.fsum(steps_per_run) / len(runs),
                             "per_step_ms": (math.fsum(stage_lists["decoder_steps"]) / steps_total * 1e3
                                             if steps_total else 0.0),
                             "tokens": math.fsum(tokens_per_run) / len(runs),
                             "tokens_per_s": math.fsum(tokens_per_run) / len(runs) / mean_total if mean_total else 0.0,
                             "decode_tokens_per_s": (math.fsum(tokens_per_run) / len(runs) / decode_s
                                                     if decode_s else 0.0)}
                    rows.append(make_row(info, "e2e", E2E, b, k, timed, load_s=load_s, size_bytes=size_bytes,
                                         items=b, unit="images/s", noise_threshold=options.noise_threshold,
                                         stages=stage_lists, extra=extra))
    return rows


def profile_audio(pipe: Any, info: RowInfo, options: ProfileOptions, load_s: float, size_bytes: int,
                  clock: Clock = PERF_CLOCK, log: Callable[[str], None] = lambda s: None) -> list[ProfileRow]:
    """clip -> outputs, split into front-end (STFT or waveform) and network."""
    sr = int(pipe.preprocessing["sample_rate"])
    min_s = int(pipe.manifest.extra.get("min_samples", 0)) / sr
    seconds = max(options.audio_seconds, min_s)
    clip = synthetic_clip(seconds, sr)
    with _instrumented(pipe, clock, "features") as (s, front):
        (net,) = s.values()

        def once() -> dict[str, float]:
            front.clear()
            net.reset()
            t0 = clock.now()
            pipe.embed([clip])
            total = clock.now() - t0
            parts = {"frontend": math.fsum(front), "network": math.fsum(net.calls)}
            parts["other"] = max(0.0, total - math.fsum(parts.values()))
            return parts

        log(f"{info.artifact}: end to end ({seconds:.2f} s clip)")
        timed = timed_runs(once, options.runs, options.warmup, clock, options.disable_gc)
    stats = LatencyStats.from_seconds(timed.samples_s)
    extra = {"audio_seconds": seconds, "realtime_factor": seconds / (stats.p50 / 1e3) if stats.p50 else 0.0}
    return [make_row(info, "e2e", E2E, 1, None, timed, load_s=load_s, size_bytes=size_bytes, items=1,
                     unit="clips/s", noise_threshold=options.noise_threshold, stages=_stage_lists(timed.values),
                     extra=extra)]


def profile_refocus(pipe: Any, info: RowInfo, options: ProfileOptions, load_s: float, size_bytes: int,
                    clock: Clock = PERF_CLOCK, log: Callable[[str], None] = lambda s: None) -> list[ProfileRow]:
    """photo + depth -> refocused photo; megapixels/s."""
    if options.image:
        from mmedge.runtime.image import read_image

        image = read_image(options.image)
        h, w = image.shape[:2]
    else:
        h, w = options.image_hw
        image = synthetic_image(h, w)
    max_depth = float(pipe.manifest.model_config.get("max_depth", 10.0) or 10.0)
    depth = np.broadcast_to(np.linspace(0.5, max_depth, h, dtype=np.float32)[:, None], (h, w)).copy()
    near, far = 0.3 * max_depth, 0.45 * max_depth
    with _instrumented(pipe, clock, None) as (s, _):
        (net,) = s.values()

        def once() -> dict[str, float]:
            net.reset()
            t0 = clock.now()
            pipe.refocus(image, depth, near, far)
            total = clock.now() - t0
            return {"network": math.fsum(net.calls), "pre_post": max(0.0, total - math.fsum(net.calls))}

        log(f"{info.artifact}: end to end ({w}x{h})")
        timed = timed_runs(once, options.runs, options.warmup, clock, options.disable_gc)
    stats = LatencyStats.from_seconds(timed.samples_s)
    mp = h * w / 1e6
    extra = {"megapixels": mp, "megapixels_per_s": mp / (stats.p50 / 1e3) if stats.p50 else 0.0}
    return [make_row(info, "e2e", E2E, 1, None, timed, load_s=load_s, size_bytes=size_bytes, items=1,
                     unit="images/s", noise_threshold=options.noise_threshold, stages=_stage_lists(timed.values),
                     extra=extra)]


E2E_PROFILERS: dict[str, Callable[..., list[ProfileRow]]] = {
    "captioner": profile_captioner, "audio": profile_audio, "refocus": profile_refocus}


def _evaluate(pipe: Any, m: Manifest, options: ProfileOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    if m.config != "demo":  # the held-out data is the demo data: other weights were not trained on it
        raise InputError(f"the task metric is measured on the demo data; this is the {m.config!r} config, "
                         f"not 'demo'")
    if options.evaluator is None:
        raise InputError("the task metric needs mmedge's evaluation code: pass "
                         "ProfileOptions(evaluator=mmedge.calibration.evaluate.evaluator)")
    evaluate = options.evaluator(m.model)  # UnknownNameError for models without a task metric
    kwargs: dict[str, Any] = {"split": options.eval_split, "limit": options.eval_limit, "progress": False}
    out = []
    for beam in (options.beam if m.pipeline == "captioner" else (None,)):
        log(f"{m.model}: task metric on the {options.eval_split} split" + (f", beam {beam}" if beam else ""))
        res = evaluate(pipe, **kwargs, **({"beam": beam} if beam is not None else {}))
        out.append({"beam": beam, "split": options.eval_split, "samples": res.samples,
                    "metrics": {k: _r(v) for k, v in res.metrics.items()}})
    return out


def profile_artifact(artifact: str | Path, options: ProfileOptions, clock: Clock = PERF_CLOCK,
                     log: Callable[[str], None] = lambda s: None) -> tuple[ArtifactInfo, list[ProfileRow], list[str]]:
    """Every row of one artifact: its graphs and its pipeline end to end (the task metric: `evaluate_artifact`)."""
    from mmedge.runtime.pipelines import load

    root = Path(artifact)
    m = read_manifest(root)
    backend = options.backend or backend_for_format(m.format)  # a missing package: open_session names the extra
    aid = _artifact_id(m, backend)
    info = RowInfo(aid, m.model, m.config, m.pipeline, m.format, m.precision, backend)
    model_bytes = sum(_graph_bytes(root, m, g) for g in m.graphs)
    art = ArtifactInfo(aid, str(root), m.model, m.config, m.pipeline, m.format, m.precision, backend,
                       _dir_bytes(root), model_bytes)
    rows: list[ProfileRow] = []
    warnings: list[str] = []
    if options.graphs:
        g_rows, g_warn = profile_graphs(root, m, info, options, clock, log)
        rows += g_rows
        warnings += g_warn
    if options.end_to_end:
        t0 = clock.now()
        pipe = load(root, backend, **_backend_options(options))
        art.load_ms = (clock.now() - t0) * 1e3
        fn = E2E_PROFILERS.get(m.pipeline)
        if fn is None:
            warnings.append(f"{aid}: no end-to-end profile for pipeline {m.pipeline!r}")
        else:
            rows += fn(pipe, info, options, art.load_ms / 1e3, model_bytes, clock, log)
        del pipe
    return art, rows, warnings


def evaluate_artifact(art: ArtifactInfo, rows: Sequence[ProfileRow], options: ProfileOptions,
                      log: Callable[[str], None] = lambda s: None) -> list[str]:
    """Task metric of one profiled artifact, attached to it and to its end-to-end rows; returns warnings.

    Run after every artifact is timed, so that neither the timings nor the peak-RSS column carry
    the evaluation's large batches."""
    from mmedge.runtime.pipelines import load

    root = Path(art.path)
    try:
        pipe = load(root, art.backend, **_backend_options(options))
        art.eval = _evaluate(pipe, pipe.manifest, options, log)
    except MmedgeError as e:
        art.eval_error = str(e)
        return [f"{art.id}: no task metric ({e})"]
    for row in rows:
        if row.info.artifact == art.id and row.kind == "e2e":
            match = [e for e in art.eval if e["beam"] in (row.beam, None)]
            row.metrics = match[0]["metrics"] if match else None
    return []


def noise_warning(rows: Sequence[ProfileRow], threshold: float) -> str | None:
    noisy = [r for r in rows if r.noisy]
    if not noisy:
        return None
    worst = max(noisy, key=lambda r: r.latency.spread_p10_p90)
    return (f"{len(noisy)} of {len(rows)} rows are too noisy to trust: p10-p90 spread above "
            f"{threshold:.0%} of the median (worst {worst.id}: {worst.latency.spread_p10_p90:.0%}); "
            "close other programs, pin with --pin and --threads, or raise --runs")


def profile(artifacts: Sequence[str | Path], options: ProfileOptions | None = None, clock: Clock = PERF_CLOCK,
            log: Callable[[str], None] = lambda s: None) -> ProfileResult:
    """Profile every artifact (in order) and return the rows, the machine and the warnings."""
    options = options or ProfileOptions()
    options.validate()
    if not artifacts:
        raise InputError("no artifact given (--artifact DIR)")
    from mmedge.runtime.device import TegraStats

    with pinned(options.pin) as cpus, TegraStats() as tegra:
        result = ProfileResult(machine_info(), options.to_json())
        snap = cpu_snapshot()
        for a in artifacts:
            art, rows, warnings = profile_artifact(a, options, clock, log)
            result.artifacts.append(art)
            result.rows += rows
            result.warnings += warnings
        load = other_cpu_load(snap, cpu_snapshot())
        if options.roofline:  # after the timings, on the same CPUs and threads
            from mmedge.runtime.roofline import roofline_section

            result.roofline = roofline_section(result, options, log)
        if options.eval:
            for art in result.artifacts:
                result.warnings += evaluate_artifact(art, result.rows, options, log)
    result.environment = {"other_cpu_load": _r(load, 3), "pinned_cpus": cpus, "gc_disabled": options.disable_gc,
                          "tegrastats": tegra.summary()}
    finish(result, options.noise_threshold)
    return result


def finish(result: ProfileResult, noise_threshold: float = DEFAULT_NOISE_THRESHOLD) -> None:
    """Add the noise and competing-load warnings (call again after adding rows by hand)."""
    result.warnings = [w for w in result.warnings if not w.startswith(("noise: ", "load: "))]
    w = noise_warning(result.rows, noise_threshold)
    if w:
        result.warnings.append("noise: " + w)
    load = result.environment.get("other_cpu_load")
    if load is not None and load > 0.25:
        result.warnings.append(f"load: other processes kept {load:.2f} CPUs busy on average during the profile; "
                               "latencies are inflated and noisy (compare the min columns)")


# ============================================================================ compare
@dataclass
class Change:
    id: str
    old_p50: float | None
    new_p50: float | None
    change: float | None  # (new - old) / old
    status: str  # "regression" | "improvement" | "same" | "added" | "removed"
    noisy: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "old_p50_ms": _r(self.old_p50), "new_p50_ms": _r(self.new_p50),
                "change": _r(self.change), "status": self.status, "noisy": self.noisy}


@dataclass
class CompareReport:
    threshold: float
    changes: list[Change]
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.status == "regression"]

    @property
    def exit_code(self) -> int:
        """0: no row slower than the threshold; 1: at least one regression."""
        return 1 if self.regressions else 0

    def summary(self) -> str:
        n = len(self.regressions)
        if n:
            worst = max(self.regressions, key=lambda c: c.change or 0.0)
            return (f"{n} regression{'s' if n != 1 else ''} beyond +{self.threshold:.0%} p50 "
                    f"(worst {worst.id}: {worst.change:+.1%})")
        matched = sum(c.status in ("same", "improvement") for c in self.changes)
        return f"no regression beyond +{self.threshold:.0%} p50 ({matched} rows compared)"

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "regressions": len(self.regressions), "exit_code": self.exit_code,
                "summary": self.summary(), "notes": self.notes, "changes": [c.to_json() for c in self.changes]}


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float = DEFAULT_COMPARE_THRESHOLD) -> CompareReport:
    """Match rows by id; p50 change (new - old) / old above `threshold` is a regression."""
    if not threshold > 0:
        raise InputError(f"--threshold must be > 0 (a fraction: 0.1 = 10%), got {threshold}")

    def rows_by_id(doc: dict[str, Any], which: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in doc["rows"]:
            if r["id"] in out:
                raise InputError(f"{which}: row {r['id']!r} appears twice")
            out[r["id"]] = r
        return out

    a, b = rows_by_id(old, "OLD"), rows_by_id(new, "NEW")
    changes = []
    for rid in list(a) + [k for k in b if k not in a]:
        ra, rb = a.get(rid), b.get(rid)
        if ra is None or rb is None:
            changes.append(Change(rid, ra and ra["latency_ms"]["p50"], rb and rb["latency_ms"]["p50"], None,
                                  "added" if ra is None else "removed"))
            continue
        p_old, p_new = float(ra["latency_ms"]["p50"]), float(rb["latency_ms"]["p50"])
        rel = (p_new - p_old) / p_old if p_old > 0 else (0.0 if p_new == p_old else math.inf)
        status = "regression" if rel > threshold else "improvement" if rel < -threshold else "same"
        changes.append(Change(rid, p_old, p_new, rel, status, bool(ra["noise"]["noisy"] or rb["noise"]["noisy"])))
    notes = []
    if old["machine"].get("cpu") != new["machine"].get("cpu"):
        notes.append(f"different CPUs: {old['machine'].get('cpu')!r} vs {new['machine'].get('cpu')!r}")
    if old["options"].get("threads") != new["options"].get("threads"):
        notes.append(f"different --threads: {old['options'].get('threads')} vs {new['options'].get('threads')}")
    if any(c.noisy for c in changes if c.status in ("regression", "improvement")):
        notes.append("some changed rows were noisy in one of the runs (marked ~); rerun to confirm")
    return CompareReport(threshold, changes, notes)


def read_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a JSON document written by `mmedge profile --json`."""
    import json

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: not found")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: invalid JSON ({e})") from None
    return validate_json(doc, str(p))


def result_from_json(doc: dict[str, Any]) -> ProfileResult:
    """Rebuild a ProfileResult (for rendering a saved profile)."""
    res = ProfileResult(doc["machine"], doc["options"], environment=doc.get("environment", {}),
                        warnings=list(doc.get("warnings", [])), created=doc.get("created", ""),
                        roofline=doc.get("roofline"))
    for a in doc["artifacts"]:
        res.artifacts.append(ArtifactInfo(**{k: a[k] for k in ArtifactInfo.__dataclass_fields__ if k in a}))
    info_keys = list(RowInfo.__dataclass_fields__)
    for r in doc["rows"]:
        lat = r["latency_ms"]
        res.rows.append(ProfileRow(
            RowInfo(**{k: r[k] for k in info_keys}), r["kind"], r["graph"], r["batch"], r["beam"], r["size_bytes"],
            r["load_ms"], r["first_ms"], LatencyStats(**{k: lat[k] for k in SCHEMA_LATENCY}), list(r["samples_ms"]),
            r["throughput"]["value"], r["throughput"]["unit"], r["memory"]["peak_rss_mb"], r["memory"]["rss_mb"],
            r["noise"]["noisy"], r["stages"], dict(r["extra"]), r["metrics"]))
    return res


def main_metric(model: str, metrics: dict[str, float] | None) -> tuple[str, float] | None:
    """The headline task metric of a row (BLEU-4 for the captioner, top-1 for audio)."""
    if not metrics:
        return None
    key = _MAIN_METRIC.get(model) or next(iter(metrics))
    return (key, metrics[key]) if key in metrics else None
