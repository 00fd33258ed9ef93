"""`mmedge demo`: the main job, end to end on the shipped demo models.

Exports the demo models to every format whose backend is installed here (fp32,
and int8 through the calibration subsystem), checks each artifact's parity with
the PyTorch reference, captions the bundled scenes next to their reference
captions, classifies the bundled clips, refocuses the bundled photo, and prints
a latency table measured in the same run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

EXAMPLES = Path(__file__).resolve().parent / "data" / "examples"
MODELS = (("captioner", "demo"), ("soundnet", "demo"), ("voice-encoder", "demo"), ("refocus", "full"))


@dataclass
class DemoResult:
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    captions: list[dict[str, Any]] = field(default_factory=list)
    sounds: list[dict[str, Any]] = field(default_factory=list)
    refocus: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"artifacts": self.artifacts, "captions": self.captions, "sounds": self.sounds,
                "refocus": self.refocus, "latency": self.latency}


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


def _median_ms(values: list[float]) -> float:
    return float(np.median(values) * 1e3) if values else float("nan")


def run_demo(out: Path, int8: bool = True, log: Callable[[str], None] = print) -> DemoResult:
    from PIL import Image

    from mmedge.calibration.data import CalibSource
    from mmedge.export.registry import ExportRequest, export
    from mmedge.runtime import AudioEncoder, Captioner, Refocuser, load
    from mmedge.runtime.parity import check
    from mmedge.runtime.visualize import save_png

    res = DemoResult()
    fmts = available_formats()
    log(f"formats with an installed backend: {', '.join(fmts)}")
    pipes = []
    for model, config in MODELS:
        precisions = ["fp32"] + (["int8"] if int8 else [])
        for precision in precisions:
            t0 = time.perf_counter()
            req = ExportRequest(model, fmts, precision, config, out=out, calib=CalibSource(size=32), report=False)
            for art in export(req, log=log):
                pipe = load(art)
                rep = check(pipe)
                res.artifacts.append({"artifact": str(art), "model": model, "format": pipe.manifest.format,
                                      "precision": precision, "parity_ok": rep.ok,
                                      "max_rel_error": max(m.max_rel for m in rep.outputs),
                                      "export_s": round(time.perf_counter() - t0, 2),
                                      "size_mb": round(sum((art / f).stat().st_size for f in pipe.manifest.files) / 1e6, 3)})
                pipes.append(pipe)
    for pipe in pipes:
        for s in pipe.sessions.values():
            s.timing.calls.clear()

    refs = json.loads((EXAMPLES / "scenes" / "captions.json").read_text())
    scenes = [EXAMPLES / "scenes" / name for name in refs]
    wavs = sorted((EXAMPLES / "sounds").glob("*.wav"))
    focus = json.loads((EXAMPLES / "refocus" / "focus.json").read_text())
    for pipe in pipes:
        tag = f"{pipe.manifest.format}-{pipe.manifest.precision}"
        t0 = time.perf_counter()
        if isinstance(pipe, Captioner):
            for r in pipe.caption([str(p) for p in scenes], beam=3, max_len=30):
                name = Path(r.image).name
                res.captions.append({"artifact": tag, "image": name, "caption": r.caption,
                                     "correct": r.caption in refs[name], "references": refs[name]})
            n = len(scenes)
        elif isinstance(pipe, AudioEncoder):
            for r in pipe.embed([str(p) for p in wavs]):
                truth = Path(r.audio).stem
                res.sounds.append({"artifact": tag, "model": pipe.manifest.model, "audio": Path(r.audio).name,
                                   "label": r.label, "score": round(r.score or 0.0, 3), "correct": r.label == truth})
            n = len(wavs)
        elif isinstance(pipe, Refocuser):
            img = pipe.refocus(str(EXAMPLES / "refocus" / "photo.png"), str(EXAMPLES / "refocus" / "depth_mm.png"),
                               focus["near"], focus["far"])
            dst = out / f"refocused-{tag}.png"
            save_png(Image.fromarray(img), dst)
            res.refocus[tag] = str(dst)
            n = 1
        wall = (time.perf_counter() - t0) / n
        for name, s in pipe.sessions.items():
            res.latency.append({"artifact": tag, "model": pipe.manifest.model, "graph": name,
                                "calls": len(s.timing.calls), "median_ms": round(_median_ms(s.timing.calls), 3)})
        res.latency.append({"artifact": tag, "model": pipe.manifest.model, "graph": "end-to-end per item",
                            "calls": n, "median_ms": round(wall * 1e3, 3)})
    return res


def print_demo(res: DemoResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="artifacts (parity vs the PyTorch reference)")
    for col in ("artifact", "parity", "max rel error", "size MB", "export s"):
        t.add_column(col)
    for a in res.artifacts:
        t.add_row(Path(a["artifact"]).name, "ok" if a["parity_ok"] else "FAIL", f"{a['max_rel_error']:.2e}",
                  f"{a['size_mb']:.2f}", f"{a['export_s']:.1f}")
    console.print(t)
    t = Table(title="captions of the bundled scenes (beam 3)")
    for col in ("build", "image", "caption", "matches a reference", "a reference"):
        t.add_column(col)
    for c in res.captions:
        t.add_row(c["artifact"], c["image"], c["caption"], "yes" if c["correct"] else "no", c["references"][0])
    console.print(t)
    t = Table(title="bundled sound clips")
    for col in ("model", "build", "clip", "label", "p", "correct"):
        t.add_column(col)
    for s in res.sounds:
        t.add_row(s["model"], s["artifact"], s["audio"], str(s["label"]), f"{s['score']:.2f}", "yes" if s["correct"] else "no")
    console.print(t)
    for tag, path in res.refocus.items():
        console.print(f"refocused photo ({tag}): {path}")
    t = Table(title="latency on this machine (median per call)")
    for col in ("model", "build", "graph", "calls", "ms"):
        t.add_column(col)
    for row in res.latency:
        t.add_row(row["model"], row["artifact"], row["graph"], str(row["calls"]), f"{row['median_ms']:.2f}")
    console.print(t)
