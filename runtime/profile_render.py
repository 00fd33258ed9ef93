"""Rendering of `mmedge.runtime.profiler` results: text, Markdown, CSV and a PNG plot.

Torch-free; matplotlib is optional (the `plot` extra) and imported only by `plot()`.
Tables: a summary per artifact (format, precision, size, task metric, end-to-end
speed), every row (per graph and end to end), and the end-to-end split per pipeline
kind. Times are milliseconds; "spread" is the p10-p90 spread over the median, with
"!" where it is above the noise threshold (the row is not trustworthy).
"""

from __future__ import annotations

import csv
import io
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

from mmedge.errors import InputError, MissingDependencyError
from mmedge.runtime.profiler import CompareReport, ProfileResult, ProfileRow, main_metric

CAPTIONER_STAGES = ("preprocess", "encoder", "decoder_init", "decoder_steps", "beam_bookkeeping", "other")
AUDIO_STAGES = ("frontend", "network", "other")
REFOCUS_STAGES = ("pre_post", "network")
STAGE_COLORS = {"frontend": "C0", "network": "C1", "pre_post": "C2", "preprocess": "C3", "encoder": "C4",
                "decoder_init": "C5", "decoder_steps": "C6", "beam_bookkeeping": "C8", "other": "0.8"}


# ============================================================================ formatting
def fmt_ms(x: float | None) -> str:
    """Milliseconds with 3-4 significant digits."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if x < 1:
        return f"{x:.3f}"
    if x < 10:
        return f"{x:.2f}"
    if x < 1000:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def fmt_num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_mb(nbytes: int | float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:.2f}" if nbytes < 1e8 else f"{nbytes / 1e6:,.0f}"


class Table:
    """Headers, alignments ('l'/'r') and string cells; rendered as Markdown or aligned text."""

    def __init__(self, headers: Sequence[str], align: str) -> None:
        if len(headers) != len(align):
            raise ValueError("one alignment per header")
        self.headers, self.align = list(headers), align
        self.rows: list[list[str]] = []

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        sep = ["---:" if a == "r" else "---" for a in self.align]
        lines = ["| " + " | ".join(self.headers) + " |", "| " + " | ".join(sep) + " |"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self.rows]
        return "\n".join(lines)

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.headers)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.rjust(w) if a == "r" else c.ljust(w)
                             for c, w, a in zip(cells, widths, self.align)).rstrip()

        return "\n".join([line(self.headers), line(["-" * w for w in widths])] + [line(r) for r in self.rows])


# ============================================================================ tables
def _spread(row: ProfileRow) -> str:
    return f"{row.latency.spread_p10_p90:.0%}" + ("!" if row.noisy else "")


def _metric(row_model: str, metrics: dict[str, float] | None) -> str:
    m = main_metric(row_model, metrics)
    return f"{m[0]} {m[1]:.3f}" if m else "-"


def _e2e_headline(result: ProfileResult, artifact_id: str) -> ProfileRow | None:
    """The artifact's first end-to-end row (smallest batch, first beam)."""
    rows = [r for r in result.rows if r.info.artifact == artifact_id and r.kind == "e2e"]
    return min(rows, key=lambda r: r.batch) if rows else None


def summary_table(result: ProfileResult) -> Table:
    """One line per artifact: format, precision, size, accuracy and end-to-end speed side by side."""
    t = Table(["artifact", "format", "precision", "backend", "size MB", "load ms", "task metric",
               "e2e p50 ms", "e2e throughput"], "llllrrlrr")
    for a in result.artifacts:
        head = _e2e_headline(result, a.id)
        metric = "-"
        if a.eval:
            first = a.eval[0]
            metric = _metric(a.model, first["metrics"]) + (f" (k={first['beam']})" if first.get("beam") else "")
        elif a.eval_error:
            metric = "n/a"
        t.add(a.id, a.format, a.precision, a.backend, fmt_mb(a.model_bytes), fmt_ms(a.load_ms), metric,
              fmt_ms(head.latency.p50) if head else "-",
              f"{fmt_num(head.throughput)} {head.throughput_unit}" if head else "-")
    return t


def rows_table(result: ProfileResult) -> Table:
    """Every row: load, first inference, latency distribution, throughput, memory, noise."""
    t = Table(["artifact", "graph", "batch", "beam", "size MB", "load ms", "first ms", "min", "p50", "p90", "p99",
               "mean ± std", "throughput", "peak RSS MB", "spread"], "llrrrrrrrrrrrrr")
    for r in result.rows:
        lat = r.latency
        t.add(r.info.artifact, r.graph, r.batch, "-" if r.beam is None else r.beam, fmt_mb(r.size_bytes),
              fmt_ms(r.load_ms), fmt_ms(r.first_ms), fmt_ms(lat.min), fmt_ms(lat.p50), fmt_ms(lat.p90),
              fmt_ms(lat.p99), f"{fmt_ms(lat.mean)} ± {fmt_ms(lat.std)}", f"{fmt_num(r.throughput)} {r.throughput_unit}",
              fmt_num(r.peak_rss_mb), _spread(r))
    return t


def _stage(r: ProfileRow, name: str) -> str:
    s = (r.stages or {}).get(name)
    return "-" if s is None else f"{fmt_ms(s['mean_ms'])} ({s['share']:.0%})"


def split_tables(result: ProfileResult) -> list[tuple[str, Table]]:
    """End-to-end stage split per pipeline kind (mean ms per stage and its share of the mean total)."""
    out: list[tuple[str, Table]] = []
    cap = [r for r in result.rows if r.kind == "e2e" and r.stages and "decoder_steps" in r.stages]
    if cap:
        t = Table(["artifact", "batch", "beam", "total ms", "preprocess", "encoder", "decoder_init",
                   "decoder steps", "steps x per step", "beam bookkeeping", "other", "tokens/s"], "lrrrrrrrrrrr")
        for r in cap:
            t.add(r.info.artifact, r.batch, r.beam if r.beam is not None else "-", fmt_ms(r.latency.mean),
                  *(_stage(r, s) for s in CAPTIONER_STAGES[:4]),
                  f"{r.extra.get('steps', 0):.0f} x {fmt_ms(r.extra.get('per_step_ms'))}",
                  *(_stage(r, s) for s in CAPTIONER_STAGES[4:]), fmt_num(r.extra.get("tokens_per_s")))
        out.append(("Captioner: image -> caption", t))
    other = [r for r in result.rows if r.kind == "e2e" and r.stages and "decoder_steps" not in r.stages]
    aud = [r for r in other if "frontend" in r.stages]
    if aud:
        t = Table(["artifact", "clip s", "total ms", "front-end", "network", "other", "x real time"], "lrrrrrr")
        for r in aud:
            t.add(r.info.artifact, f"{r.extra.get('audio_seconds', 0):.2f}", fmt_ms(r.latency.mean),
                  *(_stage(r, s) for s in AUDIO_STAGES), fmt_num(r.extra.get("realtime_factor")))
        out.append(("Audio: waveform -> front-end (STFT) -> network", t))
    ref = [r for r in other if "pre_post" in r.stages]
    if ref:
        t = Table(["artifact", "MP", "total ms", "pre/post", "network", "MP/s"], "lrrrrr")
        for r in ref:
            t.add(r.info.artifact, f"{r.extra.get('megapixels', 0):.2f}", fmt_ms(r.latency.mean),
                  *(_stage(r, s) for s in REFOCUS_STAGES), fmt_num(r.extra.get("megapixels_per_s")))
        out.append(("Refocus: photo + depth -> photo", t))
    rest = [r for r in other if r not in aud and r not in ref]
    if rest:
        names = list(OrderedDict.fromkeys(k for r in rest for k in r.stages or {}))
        t = Table(["artifact", "batch", "beam", "total ms", *names], "lrrr" + "r" * len(names))
        for r in rest:
            t.add(r.info.artifact, r.batch, r.beam if r.beam is not None else "-", fmt_ms(r.latency.mean),
                  *(_stage(r, s) for s in names))
        out.append(("Other pipelines", t))
    return out


def _rate(value: float | None, unit: str) -> str:
    """1.23e11 FLOP/s -> "123 GFLOP/s"; None -> "n/a"."""
    return "n/a" if value is None else f"{fmt_num(value / 1e9)} G{unit}"


def _sig(x: float | None) -> str:
    """Three significant digits (GFLOP and MB of graphs from kilobytes to gigabytes)."""
    return "-" if x is None else f"{x:.3g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def roofline_tables(result: ProfileResult) -> list[tuple[str, Table, list[str]]]:
    """Peaks per backend, efficiency per stage, captioner overheads; each with its notes."""
    sec = result.roofline
    if not sec:
        return []
    peaks = Table(["backend", "threads", "fp32", "fp16", "bf16", "int8", "STREAM Add", "weights read"],
                  "lrrrrrrr")
    notes: list[str] = []
    for p in sec["peaks"]:
        c, mem = p["compute"], p.get("memory", {})
        peaks.add(p["backend"], p.get("threads") or "default",
                  *(_rate(c.get(k, {}).get("value"), "FLOP/s") for k in ("fp32", "fp16", "bf16", "int8")),
                  *(_rate(mem.get(k, {}).get("value"), "B/s") for k in ("stream_add", "weights_read")))
        for name, q in [*c.items(), *mem.items()]:
            notes.append(f"{p['backend']} {name}: " + (q.get("note") or q.get("how") or ""))
        notes.append(f"{p['backend']} bandwidth used below (the higher): {_rate(p['bandwidth'].get('value'), 'B/s')}")
    m = sec.get("machine", {})
    title = f"Machine peaks through the backend ({m.get('cpu')}; flags: {' '.join(m.get('flags') or []) or 'none'})"
    out = [(title, peaks, list(OrderedDict.fromkeys(notes)))]
    eff = Table(["row", "stage", "precision", "ms", "GFLOP", "weight MB", "GFLOP/s", "% peak", "GB/s", "% bw",
                 "% roofline", "bound"], "lllrrrrrrrrl")
    notes = []
    for e in sec["efficiency"]:
        s = e["seconds"]
        flops, nbytes = e.get("flops"), e.get("bytes")
        eff.add(e["row"], e["stage"], e["precision"], fmt_ms(s * 1e3),
                "-" if flops is None else _sig(flops / 1e9), "-" if nbytes is None else _sig(nbytes / 1e6),
                "-" if flops is None or not s else fmt_num(flops / s / 1e9), _pct(e.get("compute")),
                "-" if nbytes is None or not s else fmt_num(nbytes / s / 1e9), _pct(e.get("memory")),
                _pct(e.get("roofline")), e.get("bound") or "-")
        if e.get("note"):
            notes.append(f"{e['stage']}: {e['note']}")
    out.append(("Efficiency per stage: FLOPs / (time x peak), weight bytes / (time x bandwidth)", eff,
                list(OrderedDict.fromkeys(notes))))
    if sec.get("overheads"):
        t = Table(["row", "total ms", "preprocess ms", "decode alone ms", "preprocess / decode",
                   "outside sessions ms", "share"], "lrrrrrr")
        for o in sec["overheads"]:
            ratio = o.get("preprocess_over_decode")
            t.add(o["row"], fmt_ms(o["total_ms"]), fmt_ms(o.get("preprocess_ms")), fmt_ms(o.get("decode_ms")),
                  "-" if ratio is None else f"{ratio:.2f}x", fmt_ms(o["outside_sessions_ms"]), _pct(o.get("outside_share")))
        out.append(("Captioner: preprocessing vs image decode, time outside the sessions (Python)", t, []))
    return out


def machine_line(result: ProfileResult) -> str:
    m, env = result.machine, result.environment
    backends = ", ".join(f"{k} {v}" for k, v in sorted(m.get("backends", {}).items()) if v)
    pinned = env.get("pinned_cpus")
    parts = [f"{m.get('cpu')} ({m.get('arch')})" + (f", board {m['board']}" if m.get("board") else ""),
             f"{m.get('logical_cpus')} logical CPUs / {m.get('physical_cores')} physical cores"
             + (f", pinned to CPUs {','.join(map(str, pinned))}" if pinned else ""),
             f"Python {m.get('python')}, numpy {m.get('numpy')}" + (f", {backends}" if backends else "")]
    return "; ".join(parts)


def options_line(result: ProfileResult) -> str:
    o, env = result.options, result.environment
    load = env.get("other_cpu_load")
    return (f"{o.get('runs')} timed runs after {o.get('warmup')} warm-up per row; threads: "
            f"{o.get('threads') or 'backend default'}; beam search max_len {o.get('max_len')}"
            + (f"; other processes kept {load:.2f} CPUs busy on average" if load is not None else ""))


def to_markdown(result: ProfileResult, title: str | None = None) -> str:
    out = [f"## {title}", ""] if title else []
    out += [f"Machine: {machine_line(result)}.  ", f"Runs: {options_line(result)}. Times in ms; spread = "
            "(p90 - p10) / p50, `!` above the noise threshold.", "", summary_table(result).markdown(), "",
            rows_table(result).markdown()]
    for caption, t in split_tables(result):
        out += ["", f"**{caption}** (mean ms per stage, share of the mean total)", "", t.markdown()]
    for caption, t, notes in roofline_tables(result):
        out += ["", f"**{caption}**", "", t.markdown()] + ([""] + [f"- {n}" for n in notes] if notes else [])
    if result.warnings:
        out += [""] + [f"> warning: {w}  " for w in result.warnings]
    return "\n".join(out) + "\n"


def to_text(result: ProfileResult) -> str:
    out = [f"machine: {machine_line(result)}", f"runs: {options_line(result)}", "", summary_table(result).text(),
           "", rows_table(result).text()]
    for caption, t in split_tables(result):
        out += ["", f"{caption} (mean ms per stage, share of the mean total)", t.text()]
    for caption, t, notes in roofline_tables(result):
        out += ["", caption, t.text()] + [f"  {n}" for n in notes]
    return "\n".join(out) + "\n"


def to_csv(result: ProfileResult) -> str:
    """One line per row; stage, extra and metric columns are the union over the rows."""
    stages = list(OrderedDict.fromkeys(k for r in result.rows for k in (r.stages or {})))
    extras = list(OrderedDict.fromkeys(k for r in result.rows for k in r.extra))
    metrics = list(OrderedDict.fromkeys(k for r in result.rows for k in (r.metrics or {})))
    head = ["id", "artifact", "model", "config", "pipeline", "format", "precision", "backend", "kind", "graph",
            "batch", "beam", "size_bytes", "load_ms", "first_ms", "n", "min_ms", "p10_ms", "p50_ms", "p90_ms",
            "p99_ms", "max_ms", "mean_ms", "std_ms", "spread_minmax", "spread_p10_p90", "noisy", "throughput",
            "throughput_unit", "peak_rss_mb", "rss_mb"]
    head += [f"stage_{s}_ms" for s in stages] + [f"extra_{e}" for e in extras] + [f"metric_{m}" for m in metrics]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in result.rows:
        i, lat = r.info, r.latency
        w.writerow([r.id, i.artifact, i.model, i.config, i.pipeline, i.format, i.precision, i.backend, r.kind,
                    r.graph, r.batch, "" if r.beam is None else r.beam, r.size_bytes, _c(r.load_ms), _c(r.first_ms),
                    lat.n, _c(lat.min), _c(lat.p10), _c(lat.p50), _c(lat.p90), _c(lat.p99), _c(lat.max),
                    _c(lat.mean), _c(lat.std), _c(lat.spread_minmax), _c(lat.spread_p10_p90), int(r.noisy),
                    _c(r.throughput), r.throughput_unit, _c(r.peak_rss_mb), _c(r.rss_mb)]
                   + [_c((r.stages or {}).get(s, {}).get("mean_ms")) for s in stages]
                   + [_c(r.extra.get(e)) for e in extras] + [_c((r.metrics or {}).get(m)) for m in metrics])
    return buf.getvalue()


def _c(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def compare_text(report: CompareReport, markdown: bool = False) -> str:
    t = Table(["row", "old p50 ms", "new p50 ms", "change", "status"], "lrrrl")
    for c in report.changes:
        change = "-" if c.change is None else f"{c.change:+.1%}" + ("~" if c.noisy else "")
        status = c.status.upper() if c.status == "regression" else c.status
        t.add(c.id, fmt_ms(c.old_p50), fmt_ms(c.new_p50), change, status)
    body = t.markdown() if markdown else t.text()
    notes = [f"note: {n}" for n in report.notes]
    return "\n".join([body, "", *notes, report.summary()]) + "\n"


# ============================================================================ plot
def _matplotlib() -> Any:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("matplotlib", "plot", "--plot") from None
    return Figure, FigureCanvasAgg


_DEFAULT_BACKEND = {("onnx", "onnxruntime"), ("openvino", "openvino"), ("tensorrt", "tensorrt"), ("coreml", "coreml")}


def _label(r: ProfileRow) -> str:
    """"onnx int8 b1 k3"; the backend is named when it is not the format's own."""
    i = r.info
    name = f"{i.format} {i.precision}" + ("" if (i.format, i.backend) in _DEFAULT_BACKEND else f" [{i.backend}]")
    return name + f" b{r.batch}" + (f" k{r.beam}" if r.beam is not None else "")


def _boxplot(ax: Any, data: list[list[float]], labels: list[str], colors: list[Any]) -> None:
    kwargs = dict(patch_artist=True, whis=(1, 99), widths=0.6, showfliers=True,
                  flierprops={"markersize": 2, "alpha": 0.5})
    try:
        bp = ax.boxplot(data, orientation="horizontal", **kwargs)  # matplotlib >= 3.10
    except TypeError:
        bp = ax.boxplot(data, vert=False, **kwargs)
    for patch, color in zip(bp["boxes"], colors):
        patch.set_facecolor(color)
        patch.set_alpha(0.75)
    for med in bp["medians"]:
        med.set_color("black")
    ax.set_yticks(range(1, len(labels) + 1))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()


def plot(result: ProfileResult, path: str | Path, title: str | None = None) -> Path:
    """Latency distributions per graph (a box per format/precision/backend/batch) + the end-to-end splits."""
    Figure, FigureCanvasAgg = _matplotlib()
    if not result.rows:
        raise InputError("nothing to plot: the profile has no rows")
    path = Path(path)
    groups: "OrderedDict[tuple[str, str, str], list[ProfileRow]]" = OrderedDict()
    for r in result.rows:
        groups.setdefault((r.info.model, r.info.config, r.graph), []).append(r)
    split_rows = [r for r in result.rows if r.kind == "e2e" and r.stages]
    keys = list(groups)
    ncols = min(3, len(keys))
    grid_rows = [keys[i:i + ncols] for i in range(0, len(keys), ncols)]
    heights = [1.3 + 0.3 * max(len(groups[k]) for k in row) for row in grid_rows]
    if split_rows:
        heights.append(1.3 + 0.28 * len(split_rows))
    fig = Figure(figsize=(6.0 * max(ncols, 2), sum(heights) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(len(heights), ncols, height_ratios=heights)
    combos = list(OrderedDict.fromkeys((r.info.format, r.info.precision, r.info.backend) for r in result.rows))
    color_of = {c: f"C{i % 10}" for i, c in enumerate(combos)}
    for i, row_keys in enumerate(grid_rows):
        for j, key in enumerate(row_keys):
            ax = fig.add_subplot(gs[i, j])
            rows = groups[key]
            data = [r.samples_ms for r in rows]
            _boxplot(ax, data, [_label(r) for r in rows],
                     [color_of[(r.info.format, r.info.precision, r.info.backend)] for r in rows])
            lo = min(min(d) for d in data if d)
            hi = max(max(d) for d in data if d)
            if lo > 0 and hi / lo > 30:
                ax.set_xscale("log")
            model, config, graph = key
            ax.set_title(f"{model} ({config}): {graph}", fontsize=10)
            ax.set_xlabel("latency per call (ms)", fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="x", alpha=0.3)
    if split_rows:
        ax = fig.add_subplot(gs[len(heights) - 1, :])
        names = list(OrderedDict.fromkeys(s for r in split_rows for s in r.stages or {}))
        names = [n for n in names if n != "other"] + (["other"] if "other" in names else [])
        labels = [f"{r.info.model} ({r.info.config}) {_label(r)}" for r in split_rows]
        left = [0.0] * len(split_rows)
        for j, s in enumerate(names):
            shares = [100.0 * ((r.stages or {}).get(s, {}).get("share") or 0.0) for r in split_rows]
            color = STAGE_COLORS.get(s, f"C{j % 10}")
            ax.barh(range(len(split_rows)), shares, left=left, color=color, label=s, height=0.65)
            left = [a + b for a, b in zip(left, shares)]
        for y, r in enumerate(split_rows):
            ax.text(min(left[y], 100) + 0.5, y, f"{fmt_ms(r.latency.mean)} ms", va="center", fontsize=7)
        ax.set_yticks(range(len(split_rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 110)
        ax.set_xlabel("share of the mean end-to-end time (%)", fontsize=8)
        ax.set_title("end-to-end split (mean ms at the right)", fontsize=10)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    m = result.machine
    fig.suptitle((title + "\n" if title else "") + f"{m.get('cpu')}, {m.get('logical_cpus')} CPUs; "
                 "boxes: timed runs (p25-p75, median), whiskers p1-p99", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
