"""`mmedge demo`: the main job, end to end on the shipped demo models.

Exports the demo models to every format whose backend is installed here (fp32,
and int8 through the calibration subsystem), checks each artifact's parity with
the PyTorch reference, captions the bundled scenes next to their reference
captions, classifies the bundled clips, refocuses the bundled photo, and
measures every artifact's latency with the profiler of `mmedge profile`.

The refocus network is built in its `demo` config (blur levels up to sigma 3)
so that a first run, with an empty calibration cache, stays short; `full=True`
(`mmedge demo --full`) builds it at its real size (`full`: up to sigma 8).

The groups (one model in one precision, every format) are built in parallel
worker processes, one per CPU (at most 4). Progress goes to `log` (stderr in the
CLI) as one line per step, with the time since the start; each part's table is
handed to `show` as soon as the part is done. Every artifact row is timed by
itself: `export_s` is the time of that artifact's own conversion or
quantization, `parity_s` the time to load it and replay its test vectors; what
the rows of one export share (building the PyTorch model and its reference
outputs; for int8 the fp32 ONNX source and the calibration set) is reported once
per group in `shared`. The latency table is measured by `mmedge profile`'s code
(warm-up, timed runs, p50, p10-p90 spread, noisy rows and competing load flagged).
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

EXAMPLES = Path(__file__).resolve().parent / "data" / "examples"
MODELS = (("captioner", "demo"), ("soundnet", "demo"), ("voice-encoder", "demo"), ("refocus", "demo"))
FULL_CONFIGS = {"refocus": "full"}  # --full: the full-size builds
CALIB_SIZE = 32
CAPTION_MAX_LEN = 30  # the bundled scenes' captions are at most 14 words
SCENE = EXAMPLES / "scenes" / "scene0.png"  # the latency table's inputs
PHOTO = EXAMPLES / "refocus" / "photo.png"
LATENCY_RUNS = 10  # timed runs per latency row, after LATENCY_WARMUP untimed ones (`mmedge profile`: 20 and 3)
LATENCY_WARMUP = 2
SECTIONS = ("artifacts", "captions", "sounds", "refocus", "latency")


@dataclass
class DemoResult:
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    shared: list[dict[str, Any]] = field(default_factory=list)  # per export group: time its rows share
    captions: list[dict[str, Any]] = field(default_factory=list)
    sounds: list[dict[str, Any]] = field(default_factory=list)
    refocus: dict[str, Any] = field(default_factory=dict)
    latency: Any = None  # runtime.profiler.ProfileResult
    timings: dict[str, float] = field(default_factory=dict)  # seconds per part
    jobs: int = 1  # groups built at a time

    def to_json(self) -> dict[str, Any]:
        return {"artifacts": self.artifacts, "shared": self.shared, "captions": self.captions,
                "sounds": self.sounds, "refocus": self.refocus,
                "latency": self.latency.to_json() if self.latency is not None else None,
                "timings_s": {k: round(v, 2) for k, v in self.timings.items()}, "build_jobs": self.jobs}


def available_formats() -> list[str]:
    """Export formats whose exporter and runtime backend are both installed here."""
    from mmedge.errors import MissingDependencyError
    from mmedge.export.registry import exporter, formats
    from mmedge.runtime.session import available, backend_for_format

    out = []
    for fmt in formats():
        try:
            exporter(fmt)
        except MissingDependencyError:
            continue
        if available(backend_for_format(fmt)):
            out.append(fmt)
    return out


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


class DemoProgress:
    """Progress on stderr: one line per step, "[m:ss.s] what", so that no step longer than a
    second or two runs silently (in logs and pipes too); on a terminal, also a transient rich
    bar over the demo's steps with a spinner and the elapsed time (the columns of the other
    progress bars of mmedge: calibration/eval_caption.py, scale/driver.py)."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.log = total, log
        self.t0 = time.perf_counter()
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> "DemoProgress":
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, \
            TimeElapsedColumn

        console = Console(stderr=True)
        if console.is_terminal:  # the log lines printed on stderr meanwhile appear above the bar (rich Live)
            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("mmedge demo", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def note(self, msg: str) -> None:
        """A step starts (or reports): one line with the time since the demo started."""
        self.log(f"[{_clock(self.elapsed)}] {msg}")
        if self.bar is not None:
            self.bar.update(self.task, description=msg if len(msg) <= 60 else msg[:57] + "...")

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=n)


class _RowTimer:
    """Splits one `export()` call into per-artifact times from its log lines: the exporters
    announce each artifact ("exporting ... -> DEST", "quantizing ... -> DEST") before writing it,
    so an artifact's own time runs from its line to the next artifact's line (or the end); what
    comes before the first one (model, reference outputs, fp32 source, calibration) is shared."""

    ARROW = re.compile(r" -> (.+)$")

    def __init__(self, out: Path, forward: Callable[[str], None]) -> None:
        self.out, self.forward = Path(out), forward
        self.t0 = time.perf_counter()
        self.current: Path | None = None
        self.since = self.t0
        self.own: dict[Path, float] = {}
        self.shared = 0.0

    def log(self, msg: str) -> None:
        m = self.ARROW.search(msg)
        dest = Path(m.group(1)) if m else None
        if dest is not None and dest.parent == self.out:
            self._close()
            self.current = dest
        self.forward(msg)

    def _close(self) -> None:
        now = time.perf_counter()
        if self.current is None:
            self.shared += now - self.since
        else:
            self.own[self.current] = self.own.get(self.current, 0.0) + now - self.since
        self.since = now

    def stop(self) -> None:
        self._close()
        self.current = None


def _build_group(out: Path, model: str, config: str, precision: str, fmts: list[str],
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Export one model in one precision to every format, then check each artifact's parity.
    Runs in a worker process (or in this one); returns plain data: the rows and the shared time."""
    from mmedge.calibration.data import CalibSource
    from mmedge.calibration.int8_export import export  # every precision: int8 calibrates
    from mmedge.export.registry import ExportRequest
    from mmedge.runtime import load
    from mmedge.runtime.parity import check

    timer = _RowTimer(out, log)
    req = ExportRequest(model, fmts, precision, config, out=out, calib=CalibSource(size=CALIB_SIZE), report=False)
    arts = export(req, log=timer.log).artifacts
    timer.stop()
    rows = []
    for art in arts:
        t0 = time.perf_counter()
        pipe = load(art)
        rep = check(pipe)
        parity_s = time.perf_counter() - t0
        row = {"artifact": str(art), "model": model, "config": config, "pipeline": pipe.manifest.pipeline,
               "format": pipe.manifest.format, "precision": precision, "parity_ok": rep.ok,
               "max_rel_error": max(m.max_rel for m in rep.outputs),
               "export_s": round(timer.own.get(Path(art), 0.0), 2), "parity_s": round(parity_s, 2),
               "size_mb": round(sum((art / f).stat().st_size for f in pipe.manifest.files) / 1e6, 3)}
        rows.append(row)
        log(f"{Path(art).name}: parity {'ok' if rep.ok else 'FAIL'} (max rel error {row['max_rel_error']:.2e}); "
            f"export {row['export_s']:.1f} s, parity {parity_s:.1f} s")
    log(f"{model} ({config}) {precision}: {timer.shared:.1f} s shared by its {len(arts)} artifacts (model, "
        f"reference outputs{', fp32 ONNX source, calibration' if precision == 'int8' else ''})")
    return {"rows": rows, "shared": {"model": model, "config": config, "precision": precision,
                                     "shared_s": round(timer.shared, 2)}}


_worker_queue: Any = None


def _worker_init(queue: Any, threads: int) -> None:
    """A build worker: log lines go to `queue`; torch uses this worker's share of the CPUs (set before
    torch is imported), so that parallel workers do not oversubscribe the cores."""
    import os

    global _worker_queue
    _worker_queue = queue
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _worker_build(args: tuple[Any, ...]) -> dict[str, Any]:
    return _build_group(*args, log=_worker_queue.put)


def default_jobs() -> int:
    """Build processes: one per CPU this process may use, at most 4 (the groups are mostly one-threaded
    Python: tracing, NNCF's graph passes)."""
    return max(1, min(4, _cpus()))


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _build_all(out: Path, groups: list[tuple[str, str, str]], fmts: list[str], jobs: int,
               progress: "DemoProgress") -> list[dict[str, Any]]:
    """Every group's result, in `groups` order; `jobs` > 1 builds that many groups at a time in worker
    processes (spawned: no forked torch or OpenVINO state), their log lines streamed to `progress`."""
    if jobs <= 1 or len(groups) <= 1:
        results = []
        for model, config, precision in groups:
            results.append(_build_group(out, model, config, precision, fmts, progress.note))
            progress.advance(len(results[-1]["rows"]))
        return results
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    done: dict[int, dict[str, Any]] = {}
    # the slowest groups first, so that no long one starts last: the captioner (both precisions), then
    # the other models' int8 builds (calibration, NNCF), then their fp32 ones
    order = sorted(range(len(groups)), key=lambda i: (groups[i][0] != "captioner", groups[i][2] != "int8", i))
    workers = min(jobs, len(groups))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(q, max(1, _cpus() // workers))) as pool:
        futures = {pool.submit(_worker_build, (out, *groups[i], fmts)): i for i in order}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            while True:
                try:
                    progress.note(q.get_nowait())
                except queue_mod.Empty:
                    break
            for f in finished:
                done[futures[f]] = f.result()  # a worker's exception is raised here, as in one process
                progress.advance(len(done[futures[f]]["rows"]))
    return [done[i] for i in range(len(groups))]


def run_demo(out: Path, int8: bool = True, log: Callable[[str], None] = print, full: bool = False,
             show: Callable[[DemoResult, str], None] | None = None, jobs: int | None = None) -> DemoResult:
    """Build, check, run and time everything; `show(result, section)` is called as each part is done."""
    from PIL import Image

    from mmedge.errors import require

    require("torch", "mmedge demo: it exports the demo models from PyTorch")
    from mmedge.runtime import AudioEncoder, Captioner, Refocuser, load
    from mmedge.runtime.visualize import save_png

    out = Path(out)
    res = DemoResult()
    fmts = available_formats()
    models = [(m, FULL_CONFIGS.get(m, c) if full else c) for m, c in MODELS]
    precisions = ["fp32"] + (["int8"] if int8 else [])
    groups = [(m, c, p) for m, c in models for p in precisions]
    jobs = default_jobs() if jobs is None else jobs
    n_artifacts = len(groups) * len(fmts)
    steps = n_artifacts + 3 + n_artifacts  # build + parity, the three example parts, one latency row each
    with DemoProgress(steps, log) as progress:
        progress.note(f"formats with an installed backend: {', '.join(fmts)}; building {n_artifacts} artifacts "
                      f"({', '.join(f'{m} {c}' for m, c in models)}; {' and '.join(precisions)}), "
                      f"{jobs} at a time{'' if full else '; --full builds refocus at full size'}")
        t_build = time.perf_counter()
        for r in _build_all(out, groups, fmts, jobs, progress):
            res.artifacts += r["rows"]
            res.shared.append(r["shared"])
        res.timings["build"] = time.perf_counter() - t_build
        res.jobs = jobs
        if show:
            show(res, "artifacts")

        refs = json.loads((EXAMPLES / "scenes" / "captions.json").read_text())
        scenes = [EXAMPLES / "scenes" / name for name in refs]
        wavs = sorted((EXAMPLES / "sounds").glob("*.wav"))
        focus = json.loads((EXAMPLES / "refocus" / "focus.json").read_text())
        t0 = time.perf_counter()
        pipes = [load(a["artifact"]) for a in res.artifacts]
        caps = [p for p in pipes if isinstance(p, Captioner)]
        progress.note(f"captioning {len(scenes)} bundled scenes with {len(caps)} builds (beam 3)")
        for pipe in caps:
            tag = f"{pipe.manifest.format}-{pipe.manifest.precision}"
            for r in pipe.caption([str(p) for p in scenes], beam=3, max_len=CAPTION_MAX_LEN):
                name = Path(r.image).name
                res.captions.append({"artifact": tag, "image": name, "caption": r.caption,
                                     "correct": r.caption in refs[name], "references": refs[name]})
        progress.advance()
        if show:
            show(res, "captions")
        auds = [p for p in pipes if isinstance(p, AudioEncoder)]
        progress.note(f"classifying {len(wavs)} bundled clips with {len(auds)} builds")
        for pipe in auds:
            tag = f"{pipe.manifest.format}-{pipe.manifest.precision}"
            for r in pipe.embed([str(p) for p in wavs]):
                truth = Path(r.audio).stem
                res.sounds.append({"artifact": tag, "model": pipe.manifest.model, "audio": Path(r.audio).name,
                                   "label": r.label, "score": round(r.score or 0.0, 3), "correct": r.label == truth})
        progress.advance()
        if show:
            show(res, "sounds")
        refs_ = [p for p in pipes if isinstance(p, Refocuser)]
        progress.note(f"refocusing the bundled photo with {len(refs_)} builds")
        for pipe in refs_:
            tag = f"{pipe.manifest.format}-{pipe.manifest.precision}"
            img = pipe.refocus(str(PHOTO), str(EXAMPLES / "refocus" / "depth_mm.png"), focus["near"], focus["far"])
            dst = out / f"refocused-{tag}.png"
            save_png(Image.fromarray(img), dst)
            res.refocus[tag] = str(dst)
        progress.advance()
        res.timings["examples"] = time.perf_counter() - t0
        if show:
            show(res, "refocus")
        del pipes, caps, auds, refs_

        t0 = time.perf_counter()
        progress.note(f"timing {len(res.artifacts)} artifacts end to end as `mmedge profile` does "
                      f"({LATENCY_WARMUP} warm-up + {LATENCY_RUNS} timed runs each)")
        res.latency = measure_latency(res.artifacts, progress)
        res.timings["latency"] = time.perf_counter() - t0
        res.timings["total"] = progress.elapsed
        progress.note(f"done in {_clock(progress.elapsed)} (build {res.timings['build']:.1f} s, examples "
                      f"{res.timings['examples']:.1f} s, latency {res.timings['latency']:.1f} s)")
    if show:
        show(res, "latency")
    return res


def measure_latency(artifacts: list[dict[str, Any]], progress: "DemoProgress") -> Any:
    """The latency table, measured by `mmedge profile`'s code (runtime/profiler.py): per artifact its
    pipeline end to end, warm-up runs then timed runs, p50 and the p10-p90 spread, noisy rows and the
    other processes' load flagged. Inputs: the bundled scene and photo, a 2 s synthetic clip."""
    from mmedge.runtime.profiler import ProfileOptions, finish, profile

    def profile_log(msg: str) -> None:
        progress.note(f"latency: {msg}")
        progress.advance()

    parts = []
    for pipeline, image in (("captioner", SCENE), ("audio", None), ("refocus", PHOTO)):
        paths = [a["artifact"] for a in artifacts if a["pipeline"] == pipeline]
        if paths:
            opts = ProfileOptions(runs=LATENCY_RUNS, warmup=LATENCY_WARMUP, graphs=False, max_len=CAPTION_MAX_LEN,
                                  image=str(image) if image else None)
            parts.append(profile(paths, opts, log=profile_log))
    if not parts:
        return None
    result = parts[0]
    loads = [p.environment.get("other_cpu_load") for p in parts if p.environment.get("other_cpu_load") is not None]
    for p in parts[1:]:
        result.artifacts += p.artifacts
        result.rows += p.rows
        result.warnings += p.warnings
    result.options["image"] = None  # per pipeline: see measure_latency's docstring
    result.environment["other_cpu_load"] = max(loads) if loads else None
    finish(result, result.options.get("noise_threshold", 0.2))  # the noise and load warnings over every row
    return result


# ----------------------------------------------------------------------------- printing
def print_section(res: DemoResult, section: str, console: Any = None) -> None:
    """Print one part's table on stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 120)  # a log or pipe: wide enough rows
    if section == "artifacts":
        t = Table(title="artifacts (parity vs the PyTorch reference)")
        for col in ("artifact", "parity", "max rel error", "size MB", "export s", "parity s"):
            t.add_column(col, justify="left" if col in ("artifact", "parity") else "right")
        for a in res.artifacts:
            t.add_row(Path(a["artifact"]).name, "ok" if a["parity_ok"] else "FAIL", f"{a['max_rel_error']:.2e}",
                      f"{a['size_mb']:.2f}", f"{a['export_s']:.1f}", f"{a['parity_s']:.1f}")
        console.print(t)
        shared = ", ".join(f"{s['model']} {s['precision']} {s['shared_s']:.1f}" for s in res.shared)
        console.print(f"export s: each artifact's own conversion or quantization ({res.jobs} groups built at a "
                      f"time); parity s: loading it and replaying its test vectors. Shared by the rows of a "
                      f"group, in s (PyTorch model and reference outputs; int8: fp32 ONNX source and "
                      f"calibration on {CALIB_SIZE} samples): {shared}.", highlight=False)
    elif section == "captions":
        t = Table(title="captions of the bundled scenes (beam 3)")
        for col in ("build", "image", "caption", "matches a reference", "a reference"):
            t.add_column(col)
        for c in res.captions:
            t.add_row(c["artifact"], c["image"], c["caption"], "yes" if c["correct"] else "no", c["references"][0])
        console.print(t)
    elif section == "sounds":
        t = Table(title="bundled sound clips")
        for col in ("model", "build", "clip", "label", "p", "correct"):
            t.add_column(col)
        for s in res.sounds:
            t.add_row(s["model"], s["artifact"], s["audio"], str(s["label"]), f"{s['score']:.2f}",
                      "yes" if s["correct"] else "no")
        console.print(t)
    elif section == "refocus":
        for tag, path in res.refocus.items():
            console.print(f"refocused photo ({tag}): {path}", highlight=False)
    elif section == "latency" and res.latency is not None:
        print_latency(res.latency, console)


def print_latency(result: Any, console: Any) -> None:
    """The profiler's end-to-end rows (the columns of `mmedge profile`'s summary), its machine and
    run lines, and its warnings (noisy rows, other processes' load)."""
    from rich.table import Table

    from mmedge.runtime.profile_render import fmt_ms, fmt_num, machine_line, options_line

    t = Table(title="latency on this machine, end to end (as `mmedge profile` measures it)")
    for col in ("artifact", "input", "runs", "p50 ms", "min ms", "p90 ms", "spread", "throughput"):
        t.add_column(col, justify="left" if col in ("artifact", "input") else "right")
    for r in result.rows:
        what = {"captioner": f"{SCENE.name}, beam {r.beam}", "audio": f"{r.extra.get('audio_seconds', 0):.1f} s clip",
                "refocus": f"{PHOTO.name} {r.extra.get('megapixels', 0):.2f} MP"}.get(r.info.pipeline, "")
        lat = r.latency
        t.add_row(r.info.artifact, what, str(lat.n), fmt_ms(lat.p50), fmt_ms(lat.min), fmt_ms(lat.p90),
                  f"{lat.spread_p10_p90:.0%}" + ("!" if r.noisy else ""),
                  f"{fmt_num(r.throughput)} {r.throughput_unit}")
    console.print(t)
    console.print(f"machine: {machine_line(result)}\nruns: {options_line(result)}; spread = (p90 - p10) / p50, "
                  f"'!' above {result.options.get('noise_threshold', 0.2):.0%}: not to be trusted. "
                  "`mmedge profile -a DIR` gives every graph and stage.", highlight=False)
    for w in result.warnings:
        console.print(f"warning: {w}", style="yellow", highlight=False)


def print_demo(res: DemoResult) -> None:
    """Every part's table (what `show` prints part by part during the run)."""
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 120)
    for section in SECTIONS:
        print_section(res, section, console)
