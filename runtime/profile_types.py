"""The profile's data: clock, latency statistics, options, rows, artifacts and the result document.

Plain dataclasses with no measuring in them, so that the code that measures (runtime/profiler.py),
holds rows to the machine's peaks (runtime/roofline.py), compares two profiles
(runtime/profile_compare.py) and renders them (runtime/profile_render.py) share them without
importing one another. The statistics and the JSON document are described in
runtime/profiler.py; `mmedge.runtime.profiler` re-exports every name here.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from mmedge.errors import InputError
from mmedge.runtime.decode import DEFAULT_MAX_LEN
from mmedge.runtime.session import backend_names

SCHEMA = "mmedge.profile"
SCHEMA_VERSION = 1
DEFAULT_NOISE_THRESHOLD = 0.2  # (p90 - p10) / p50 above this: the row is flagged noisy
AUDIO_SECONDS = 2.0  # the demo sounds' longest clip
IMAGE_HW = (480, 640)  # captioner and refocus end-to-end inputs (height, width)
_MAIN_METRIC = {"captioner": "bleu4", "soundnet": "top1", "voice-encoder": "top1"}


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


def main_metric(model: str, metrics: dict[str, float] | None) -> tuple[str, float] | None:
    """The headline task metric of a row (BLEU-4 for the captioner, top-1 for audio)."""
    if not metrics:
        return None
    key = _MAIN_METRIC.get(model) or next(iter(metrics))
    return (key, metrics[key]) if key in metrics else None
