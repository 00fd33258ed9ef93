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

Where the parts live (each name is importable from here too): the dataclasses and statistics in
runtime/profile_types.py, the JSON validation in runtime/profile_schema.py, the machine and process
facts in runtime/machine.py, the timing primitives in runtime/profile_measure.py, the synthetic
inputs in runtime/profile_inputs.py and `compare` in runtime/profile_compare.py. This module runs
the measurements: per graph, end to end per pipeline, the task metric, the whole profile.
"""

from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mmedge.errors import InputError, MmedgeError
from mmedge.runtime.machine import (affinity, backend_versions, board_model, cpu_model, cpu_snapshot, machine_info,
                                    other_cpu_load, peak_rss_mb, physical_cores, pinned, rss_mb)
from mmedge.runtime.manifest import GraphEntry, Manifest, read_manifest
from mmedge.runtime.profile_compare import (DEFAULT_COMPARE_THRESHOLD, Change, CompareReport, compare, read_profile,
                                            result_from_json)
from mmedge.runtime.profile_inputs import synthetic_clip, synthetic_image
from mmedge.runtime.profile_measure import Timed, TimedSession, batch_feeds, make_row, timed_runs
from mmedge.runtime.profile_schema import (SCHEMA_ARTIFACT, SCHEMA_LATENCY, SCHEMA_MACHINE, SCHEMA_ROW, SCHEMA_TOP,
                                           validate_json)
from mmedge.runtime.profile_types import (AUDIO_SECONDS, DEFAULT_NOISE_THRESHOLD, IMAGE_HW, PERF_CLOCK, SCHEMA,
                                          SCHEMA_VERSION, ArtifactInfo, Clock, LatencyStats, ProfileOptions,
                                          ProfileResult, ProfileRow, RowInfo, _r, main_metric, percentile,
                                          throughput)
from mmedge.runtime.roles import DECODER_INIT, DECODER_STEP, ENCODER
from mmedge.runtime.session import backend_for_format, open_session

__all__ = [  # the names other modules import from here, wherever they are defined
    "AUDIO_SECONDS", "DEFAULT_COMPARE_THRESHOLD", "DEFAULT_NOISE_THRESHOLD", "E2E", "E2E_PROFILERS", "IMAGE_HW",
    "PERF_CLOCK", "SCHEMA", "SCHEMA_ARTIFACT", "SCHEMA_LATENCY", "SCHEMA_MACHINE", "SCHEMA_ROW", "SCHEMA_TOP",
    "SCHEMA_VERSION", "ArtifactInfo", "Change", "Clock", "CompareReport", "LatencyStats", "ProfileOptions",
    "ProfileResult", "ProfileRow", "RowInfo", "Timed", "TimedSession", "affinity", "backend_versions",
    "batch_feeds", "board_model", "compare", "cpu_model", "cpu_snapshot", "evaluate_artifact", "finish",
    "machine_info", "main_metric", "make_row", "noise_warning", "other_cpu_load", "peak_rss_mb", "percentile",
    "physical_cores", "pinned", "profile", "profile_artifact", "profile_audio", "profile_captioner",
    "profile_graphs", "profile_refocus", "read_profile", "result_from_json", "rss_mb", "synthetic_clip",
    "synthetic_image", "throughput", "timed_runs", "validate_json",
]

E2E = "end-to-end"


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
    vec_file = root / m.extra.vectors_file
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
            enc, init, step = s[ENCODER], s[DECODER_INIT], s[DECODER_STEP]
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
    min_s = (pipe.manifest.extra.min_samples or 0) / sr
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
