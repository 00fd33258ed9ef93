"""The caption-latency issue's targets, measured: what benchmarks/caption_latency.py prints after its table.

caption_latency.py times the tutorial's eager loop against mmedge builds of the same weights; this
module holds what it adds to that loop, each piece measured with the library's own tools:

- **builds**: the fp32 ONNX export (`-O spinning=auto|on|run|off`, or several) and other builds of the same
  weights (`--artifact DIR`, e.g. precision_matrix.py `--keep`'s int8 / OpenVINO ones);
- **floors**: per build, encoder FLOPs / the peak of its precision + decoder_init's roofline bound
  + steps x decoder_step weight bytes / bandwidth, from the graphs' costs
  (`runtime.roofline.artifact_costs`: the manifest's `cost`, else counted) and the peaks measured
  through the same backend with the same threads (`runtime.peaks.measure_peaks`);
- **beam bookkeeping** per step, as benchmarks/overhead.py measures it (its Recorder / Replay /
  StepTimes: `beam_search` replayed over one caption's recorded step outputs);
- **cold start**: a new Python process with torch refused by a meta-path finder loads the artifact
  and captions the image once; the time from starting it to its result, and its peak RSS;
- **targets**: one row per target of the issue, its figure here and whether it is met.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overhead import TARGET_BOOKKEEPING_MS, TARGET_REST_MS

from mmedge.runtime import profiler
from mmedge.runtime.graph_cost import GraphCost
from mmedge.runtime.peaks import MachinePeaks, PeakOptions, measure_peaks

TARGET_FLOOR_RATIO = 1.3  # the fastest build's end to end / the sum of its floors
TARGET_COLD_START_S = 1.0  # new process to first caption, torch-free
RSS_MARGIN_BYTES = 100_000_000  # peak RSS <= the model files + 100 MB
FAMILY_TARGETS = {  # runtime.cpu_features family -> (the fastest build's speed-up vs eager, the words)
    "x86-avx512-bf16": (20.0, "AMD EPYC with AVX-512 BF16/VNNI"),
    "x86-amx": (8.0, "Intel with AMX"),
}
BOOK_REPLAYS = 30  # as overhead.py's default --repeat
COLD_START_TIMEOUT_S = 300.0
BACKEND_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}

# Run by `python -c` in a new process: refuses torch, loads the artifact, captions once, reports.
COLD_START_CODE = r'''
import sys, time
t0 = time.perf_counter()


class NoTorch:
    """A meta-path finder that refuses torch: the runtime must caption without it."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the runtime must not need torch)",
                                      name=name)
        return None


sys.meta_path.insert(0, NoTorch())
import json
artifact, image, options, beam, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), *map(int, sys.argv[4:6])
from mmedge.runtime import load
t1 = time.perf_counter()
cap = load(artifact, **options)
t2 = time.perf_counter()
res = cap.caption([image], beam=beam, max_len=steps)[0]
t3 = time.perf_counter()
hwm = None
try:
    with open("/proc/self/status") as f:
        hwm = next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:")), None)
except OSError:
    pass
if hwm is None:
    import resource
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({"tokens": [int(t) for t in res.tokens], "import_s": t1 - t0, "load_s": t2 - t1,
                  "caption_s": t3 - t2, "in_process_s": t3 - t0, "peak_rss_bytes": hwm,
                  "torch_imported": "torch" in sys.modules}), flush=True)
'''


# ===================================================================== builds
@dataclass
class Build:
    """One mmedge build in the interleaved loop: an artifact and the options it is loaded with."""

    name: str  # key in the results: "mmedge" (the fp32 export), "mmedge_spin_off", "artifact_1", ...
    label: str
    artifact: Path
    backend: str
    options: dict[str, Any] = field(default_factory=dict)  # load(artifact, **options)
    exact: bool = False  # must give the eager loop's tokens (the fp32 export, whatever its threading)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "artifact": str(self.artifact), "backend": self.backend,
                "options": dict(self.options), "exact": self.exact}


def check_same_model(path: Path, config: str) -> str | None:
    """Why `path` is not a build of caption_latency's captioner (None when it is one)."""
    from mmedge.errors import MmedgeError
    from mmedge.runtime.manifest import read_manifest

    try:
        m = read_manifest(path, verify=False)
    except MmedgeError as e:
        return str(e)
    if (m.model, m.config) != ("captioner", config):
        return f"{path} is a {m.model} {m.config} artifact, not captioner {config} (the same weights are needed)"
    return None


def describe(path: Path) -> tuple[str, str]:
    """(backend, label) of an artifact: its format's backend, precision and precision mix."""
    from mmedge.runtime.backends import backend_for_format
    from mmedge.runtime.manifest import read_manifest

    m = read_manifest(path, verify=False)
    backend = backend_for_format(m.format)
    mix = m.extra.precision_mix or {}
    how = f" (encoder {mix['encoder']}, decoder {mix['decoder']})" if {"encoder", "decoder"} <= set(mix) else ""
    return backend, f"{BACKEND_NAMES.get(backend, backend)} {m.precision}{how}: {path.name}"


# --spinning: one of ONNX Runtime's -O spinning values, or a set of them timed side by side
SPINNING_SETS = {"both": ("on", "off"), "all": ("auto", "on", "off")}
SPINNING_CHOICES = ("auto", "on", "run", "off", *SPINNING_SETS)


def make_builds(artifact: Path, extra: list[Path], threads: int | None, spinning: str) -> list[Build]:
    """The fp32 export (at one or several spinning settings) and each `--artifact` build, threads as given."""
    base = {"threads": threads} if threads else {}
    spins = SPINNING_SETS.get(spinning, (spinning,))
    out = [Build("mmedge" if i == 0 else f"mmedge_spin_{spin}",
                 f"mmedge ONNX Runtime fp32 (spinning {spin})", artifact, "onnxruntime",
                 {**base, "spinning": spin}, exact=True) for i, spin in enumerate(spins)]
    for i, path in enumerate(extra, 1):
        backend, label = describe(path)
        opts = {**base, **({"spinning": spins[0]} if backend == "onnxruntime" else {})}
        out.append(Build(f"artifact_{i}", label, path, backend, opts))
    return out


def agreement(ref: list[int], got: list[int]) -> dict[str, Any]:
    """Tokens of a build against the fp32 reference (openvino_latency's measure, imported when needed)."""
    from openvino_latency import agreement as agree

    return agree(ref, got)


# ===================================================================== floors
def measure_backend_peaks(builds: list[Build], threads: int | None) -> dict[str, MachinePeaks]:
    """The machine's peaks through each backend the builds use, with the builds' threads."""
    return {b: measure_peaks(b, PeakOptions(threads=threads)) for b in dict.fromkeys(x.backend for x in builds)}


def floor(build: Build, peaks: MachinePeaks | None, steps: int) -> dict[str, Any]:
    """The least time this build's graphs can take here (seconds per stage; None with a note where a
    cost or a peak is missing): encoder FLOPs / the peak of the encoder's precision; decoder_init's
    roofline bound, max(FLOPs / peak, weight bytes / bandwidth); `steps` x decoder_step weight bytes
    / bandwidth (a beam-3 step reads every weight once and does little arithmetic per byte)."""
    from mmedge.runtime.manifest import read_manifest
    from mmedge.runtime.roofline import artifact_costs, peak_precision

    m = read_manifest(build.artifact, verify=False)
    costs = artifact_costs(build.artifact)
    mix = m.extra.precision_mix or {}
    dec = str(mix.get("decoder", m.precision))
    prec = {"encoder": peak_precision(str(mix.get("encoder", m.precision)), build.backend, build.options),
            "decoder": peak_precision("fp32" if dec == "int8-weights" else dec, build.backend, build.options)}
    notes: list[str] = []

    def peak(p: str) -> float | None:
        got = peaks.compute.get(p) if peaks else None
        if got is None or got.value is None:
            notes.append(f"no {p} peak ({got.note if got is not None and got.note else 'not measured'})")
            return None
        return got.value

    bw = peaks.bandwidth.value if peaks else None
    if bw is None:
        notes.append(f"no bandwidth ({peaks.bandwidth.note if peaks else 'not measured'})")
    cost = {g: costs.get(g) for g in ("encoder", "decoder_init", "decoder_step")}
    for g, c in cost.items():
        if not isinstance(c, GraphCost):
            notes.append(f"{g}: {c or 'no cost'}")
    enc, init, step = (c if isinstance(c, GraphCost) else None for c in cost.values())
    p_enc, p_dec = peak(prec["encoder"]), peak(prec["decoder"])
    terms: dict[str, float | None] = {
        "encoder": enc.flops / p_enc if enc and p_enc else None,
        "decoder_init": max(init.flops / p_dec, init.weight_bytes / bw) if init and p_dec and bw else None,
        "decoder_steps": steps * step.weight_bytes / bw if step and bw else None,
    }
    known = [v for v in terms.values() if v is not None]
    return {"precision": prec, "peak_flops": {"encoder": p_enc, "decoder": p_dec}, "bandwidth": bw,
            "costs": {g: c.to_json() if isinstance(c, GraphCost) else {"note": c} for g, c in cost.items()},
            "terms_s": terms, "total_s": sum(known) if len(known) == len(terms) else None,
            "note": "; ".join(dict.fromkeys(notes)) or None}


# ===================================================================== bookkeeping
def bookkeeping(cap: Any, image: Path, beam: int, steps: int, replays: int = BOOK_REPLAYS) -> dict[str, Any]:
    """Beam bookkeeping per step as overhead.py measures it: one caption's decoder_step outputs are
    recorded, then `beam_search` is replayed over them (a session that costs nothing) `replays`
    times; per step = each step's minimum over the replays, averaged over the steps."""
    import overhead as oh

    from mmedge.runtime.decode import beam_search

    feats = cap.encode(cap.preprocess([str(image)]))
    init = cap.sessions["decoder_init"].run({"features": feats})
    args = (feats, init["att1"], init["h"], init["c"], cap.vocab.start, cap.vocab.end, beam, steps)
    rec = oh.Recorder(cap.sessions["decoder_step"])
    want = beam_search(rec, *args)[0].tokens
    times = oh.StepTimes([])
    for i in range(replays + 1):  # the first replay warms up
        stamps: list[tuple[float, float]] = []
        start = time.perf_counter()
        got = beam_search(oh.Replay(rec.outputs, stamps), *args)[0].tokens
        end = time.perf_counter()
        if got != want:
            raise RuntimeError("the replayed beam search does not give the recorded tokens")
        if i:
            times.runs.append((start, stamps, end))
    step, total = times.per_step(), times.total()
    return {"per_step_min_ms": step.min, "per_step_median_ms": step.median, "per_image_min_ms": total.min,
            "per_image_median_ms": total.median, "replays": replays, "steps": len(rec.outputs),
            "how": "overhead.py's replay: beam_search over recorded decoder_step outputs"}


# ===================================================================== cold start
def model_bytes(artifact: Path) -> int:
    """Bytes of the artifact's graph files (an OpenVINO .xml with its .bin), test vectors excluded."""
    from mmedge.runtime.manifest import read_manifest

    total = 0
    for g in read_manifest(artifact, verify=False).graphs:
        f = artifact / g.file
        total += f.stat().st_size + (f.with_suffix(".bin").stat().st_size if f.suffix == ".xml" else 0)
    return total


def cold_start(artifact: Path, image: Path, options: dict[str, Any], beam: int, steps: int,
               timeout: float = COLD_START_TIMEOUT_S, cache_home: Path | None = None) -> dict[str, Any]:
    """A new Python process, torch refused, loads `artifact` and captions `image` once: seconds from
    starting it to its result (read from its stdout as it prints it), its own split, its peak RSS,
    and the other processes' CPU load meanwhile (the child's own CPU time excluded). `cache_home`:
    its XDG_CACHE_HOME (where ONNX Runtime's optimized graphs are kept, runtime/ort_cache.py)."""
    cmd = [sys.executable, "-c", COLD_START_CODE, str(artifact), str(image), json.dumps(options), str(beam),
           str(steps)]
    children0, snap0 = _children_cpu(), profiler.cpu_snapshot()
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        env = {**os.environ, **({"XDG_CACHE_HOME": str(cache_home)} if cache_home is not None else {})}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            line = "-"
            while line and not line.startswith("{"):  # the result line (a library may print before it)
                line = proc.stdout.readline() if proc.stdout else ""
            first = time.perf_counter() - t0
            proc.communicate()
            exited = time.perf_counter() - t0
        finally:
            timer.cancel()
        err.seek(0)
        tail = [ln.strip() for ln in err.read().splitlines() if ln.strip()]
    snap1 = profiler.cpu_snapshot()
    load = profiler.other_cpu_load(snap0, snap1, min_interval=0.0)
    if load is not None and snap0 is not None and snap1 is not None:
        load = max(0.0, load - (_children_cpu() - children0) / (snap1[2] - snap0[2]))
    out: dict[str, Any] = {"command": "python -c COLD_START_CODE (torch refused by a meta-path finder)",
                           "options": options, "returncode": proc.returncode, "other_cpu_load": load,
                           "model_bytes": model_bytes(artifact)}
    try:
        got = json.loads(line)
    except ValueError:
        why = "killed after the timeout" if proc.returncode and exited >= timeout else (tail[-1] if tail else "")
        return {**out, "error": f"no result (exit {proc.returncode}): {why[:300]}"}
    return {**out, **got, "first_caption_s": first, "exit_s": exited,
            "interpreter_s": max(0.0, first - got["in_process_s"])}


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


# ===================================================================== targets
def family_target(family: str) -> tuple[float | None, str]:
    target, who = FAMILY_TARGETS.get(family, (None, ""))
    return target, (f"{who} ({family})" if target else f"no target set for {family}")


def _row(key: str, what: str, measured: float | None, unit: str, op: str, target: float | None,
         loaded: bool, detail: str = "", note: str | None = None) -> dict[str, Any]:
    met = None
    if measured is not None and target is not None:
        met = measured >= target if op == ">=" else measured <= target
    return {"key": key, "what": what, "measured": measured, "unit": unit, "op": op, "target": target,
            "met": met, "loaded": loaded, "detail": detail, "note": note}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target of the issue, from caption_latency's results."""
    limit = res["max_other_load"]
    loop = not res["valid"]

    def over(x: float | None) -> bool:
        return x is not None and x > limit

    extras = over(res.get("extras_other_cpu_load"))
    mm, fast = res["mmedge"], next(b for b in res["builds"] if b["name"] == res["fastest"])
    fl, bk, cold = fast["floor"], res["bookkeeping"], res.get("cold_start")
    rows = [
        _row("speedup", "end-to-end speed-up vs tutorial eager (mmedge fp32 export, median)", res["speedup_median"],
             "x", ">=", res["target_speedup"], loop, f"min {res['speedup_min']:.2f}x"),
        _row("rest", 'fixed overhead "rest" per image (median)', mm["rest_median_s"] * 1e3, "ms", "<=",
             TARGET_REST_MS, loop, f"min {min(r['rest'] for r in mm['runs']) * 1e3:.2f} ms: image read + "
             "preprocess + beam bookkeeping + binding"),
        _row("bookkeeping", "beam bookkeeping per step (overhead.py's replay, min)", bk["per_step_min_ms"], "ms",
             "<=", TARGET_BOOKKEEPING_MS, extras, f"median {bk['per_step_median_ms']:.3f} ms, {bk['replays']} "
             "replays"),
    ]
    ratio = fast["e2e_over_floor"]
    terms = fl["terms_s"]
    detail = (f"{fast['label']}: {fast['summary']['median_s'] * 1e3:,.1f} ms / floor "
              + (f"{fl['total_s'] * 1e3:,.1f} ms (encoder {terms['encoder'] * 1e3:,.1f} + decoder_init "
                 f"{terms['decoder_init'] * 1e3:,.1f} + {res['steps']} steps {terms['decoder_steps'] * 1e3:,.1f})"
                 if fl["total_s"] else "n/a"))
    rows.append(_row("floor", "fastest build end to end / the sum of its floors", ratio, "x", "<=",
                     TARGET_FLOOR_RATIO, loop or extras, detail, fl["note"] if ratio is None else None))
    family = res["machine"]["cpu_features"]["family"]
    target, who = family_target(family)
    rows.append(_row("family_speedup", f"fastest build's speed-up vs eager, the target for this CPU family "
                     f"({family})", fast["speedup_median"], "x", ">=", target, loop,
                     fast["label"] + (f"; the issue's target for {who}" if target else ""), None if target else who))
    if cold is None or "error" in cold:
        why = "skipped (--skip-cold-start)" if cold is None else f"failed: {cold['error']}"
        rows.append(_row("cold_start", "torch-free cold start to first caption", None, "s", "<=",
                         TARGET_COLD_START_S, False, note=why))
        rows.append(_row("cold_start_rss", "peak RSS of that process", None, "MB", "<=", None, False, note=why))
        return rows
    torch_note = "torch was imported" if cold["torch_imported"] else None
    first = cold.get("first_run") or {}
    first_note = (f"; the first run on this machine, which optimizes and caches the graphs: "
                  f"{first['first_caption_s']:.2f} s, peak {first['peak_rss_bytes'] / 1e6:,.0f} MB") \
        if "first_caption_s" in first else ""
    rows.append(_row("cold_start", "torch-free cold start to first caption (new process, page cache warm)",
                     cold["first_caption_s"], "s", "<=", TARGET_COLD_START_S, over(cold["other_cpu_load"]),
                     f"interpreter {cold['interpreter_s']:.2f} + import mmedge.runtime {cold['import_s']:.2f} + load "
                     f"{cold['load_s']:.2f} + caption {cold['caption_s']:.2f} s{first_note}", torch_note))
    rows.append(_row("cold_start_rss", "peak RSS of that process (VmHWM)", cold["peak_rss_bytes"] / 1e6, "MB", "<=",
                     (cold["model_bytes"] + RSS_MARGIN_BYTES) / 1e6, False,
                     f"model files {cold['model_bytes'] / 1e6:,.0f} MB + {RSS_MARGIN_BYTES / 1e6:.0f} MB"))
    return rows


# ===================================================================== report
def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "ms":
        return f"{v:.3f} ms" if v < 1 else f"{v:,.2f} ms"
    return f"{v:.2f} s" if unit == "s" else f"{v:,.0f} {unit}"


def verdict(row: dict[str, Any]) -> str:
    if row["met"] is None:
        return row["note"] or "-"
    text = "met" if row["met"] else "**NOT met**"
    return text + (" (loaded run: inconclusive)" if row["loaded"] else "")


def render_targets(res: dict[str, Any]) -> list[str]:
    lines = ["### Targets of the issue, measured here", "",
             "| target | measured | required | verdict | detail |", "| --- | ---: | ---: | --- | --- |"]
    for r in res["targets"]:
        req = "-" if r["target"] is None else f"{r['op']} {_fmt(r['target'], r['unit'])}"
        detail = r["detail"] + (f"; {r['note']}" if r["note"] and r["met"] is not None else "")
        lines.append(f"| {r['what']} | {_fmt(r['measured'], r['unit'])} | {req} | {verdict(r)} | {detail} |")
    lines.append("")
    cold = res.get("cold_start") or {}
    for when, load in (("the bookkeeping replays and the peak measurements", res.get("extras_other_cpu_load")),
                       ("the cold start (its own CPU time excluded)", cold.get("other_cpu_load"))):
        if load is not None:
            over = load > res["max_other_load"]
            lines.append(f"Competing load during {when}: other processes kept {load:.2f} CPUs busy on average"
                         + (f" - above the {res['max_other_load']:.2f} limit: those figures are inflated; rerun on "
                            "an idle machine." if over else "."))
    lines.append("Verdicts follow the figures as measured; a row measured while other processes loaded the CPUs "
                 "is marked inconclusive. The cold start runs with the page cache warm (this process has just read "
                 "the model files); only the first row decides the exit status of --check.")
    return lines


def render_builds(res: dict[str, Any]) -> list[str]:
    """The mmedge builds side by side, each against the eager loop and its floor."""
    ms = lambda s: "-" if s is None else f"{s * 1e3:,.1f}"  # noqa: E731
    lines = ["### mmedge builds against their floors", "",
             "| build | median e2e (ms) | min e2e (ms) | encoder | per step | rest | vs eager | tokens vs fp32 "
             f"| floor: encoder + decoder_init + {res['steps']} steps (ms) | e2e / floor | |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for b in res["builds"]:
        s, fl, tok = b["summary"], b["floor"], b["tokens"]
        same = "identical" if tok["equal"] else f"{tok['same_positions']}/{res['steps']}"
        t = fl["terms_s"]
        floor_cell = (f"{ms(t['encoder'])} + {ms(t['decoder_init'])} + {ms(t['decoder_steps'])} = "
                      f"{ms(fl['total_s'])}" if fl["total_s"] else f"n/a ({fl['note']})")
        ratio = "-" if b["e2e_over_floor"] is None else f"{b['e2e_over_floor']:.2f}x"
        lines.append(f"| {b['label']} | {ms(s['median_s'])} | {ms(s['min_s'])} | {ms(s['encoder_median_s'])} "
                     f"| {s['per_step_median_s'] * 1e3:,.2f} | {ms(s['rest_median_s'])} | {b['speedup_median']:.2f}x "
                     f"| {same} | {floor_cell} | {ratio} | {'**fastest**' if b['name'] == res['fastest'] else ''} |")
    lines.append("")
    for backend, p in res["peaks"].items():
        comp = ", ".join(f"{k} {v['value'] / 1e9:,.0f} GFLOP/s" for k, v in p["compute"].items() if v["value"])
        bw = p["bandwidth"]
        lines.append(f"Peaks through {BACKEND_NAMES.get(backend, backend)} (threads: {p['threads'] or 'default'}, "
                     f"measured after the timed runs): {comp or 'none'}; bandwidth "
                     + (f"{bw['value'] / 1e9:,.1f} GB/s ({bw['how']})." if bw["value"] else f"n/a ({bw['note']})."))
    lines.append("Floor = encoder FLOPs / the peak of its precision + decoder_init's roofline bound (max of FLOPs / "
                 f"peak and weight bytes / bandwidth) + {res['steps']} x decoder_step weight bytes / bandwidth; "
                 "costs from the manifest (`runtime/graph_cost.py`), counted at batch 1. Reduced precision may "
                 "change the tokens (random weights make near-ties): agreement is reported, not required.")
    return lines
