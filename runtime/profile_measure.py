"""Timing primitives of the profile: timed runs, a timing Session proxy, batched feeds, a row from timings.

The pieces every measurement shares, per-graph and end to end, and that the benchmarks reuse to
time code outside an artifact (the eager PyTorch row of benchmarks/profile_backends.py) with
the profiler's own clock and statistics. `mmedge.runtime.profiler` re-exports every name here.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.machine import peak_rss_mb, rss_mb
from mmedge.runtime.manifest import GraphEntry
from mmedge.runtime.profile_types import PERF_CLOCK, Clock, LatencyStats, ProfileRow, RowInfo, _r, throughput
from mmedge.runtime.session import Session


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
