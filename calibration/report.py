"""The INT8 accuracy report: fp32 vs int8 artifact, per graph and per task.

Per graph: cosine similarity and max error of every output against the fp32
artifact on held-out samples (not the calibration samples). Per model: the
task metric of both (BLEU-4 at beam 3 and caption agreement, top-1, PSNR of
the refocused image) and the speed ratio, measured in the same run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmedge.calibration.data import CalibSource, gather
from mmedge.data.caption_objects import parse_caption, score_captions
from mmedge.runtime.pipelines import AudioEncoder, Captioner, Pipeline, Refocuser
from mmedge.runtime.session import Feeds

HELDOUT = CalibSource(size=16, seed=1, split="val")


@dataclass
class OutputAccuracy:
    graph: str
    output: str
    cosine: float
    max_abs: float
    max_rel: float  # max abs error / max abs fp32 value


@dataclass
class Int8Report:
    model: str
    fp32: str
    int8: str
    outputs: list[OutputAccuracy] = field(default_factory=list)
    task: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {"fp32", "int8"}
    speed: dict[str, dict[str, float]] = field(default_factory=dict)  # graph/e2e -> {fp32_ms, int8_ms, speedup}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[str]:
        lines = [f"INT8 report for {self.model}: {self.int8} vs {self.fp32}"]
        lines.append(f"  {'graph.output':<28} {'cosine':>8} {'max abs':>10} {'max rel':>9}")
        for o in self.outputs:
            lines.append(f"  {o.graph + '.' + o.output:<28} {o.cosine:>8.5f} {o.max_abs:>10.3e} {o.max_rel:>9.2e}")
        if self.task:
            lines.append(f"  {'task metric':<28} {'fp32':>8} {'int8':>10} {'change':>9}")
            for k, v in self.task.items():
                change = v["int8"] - v["fp32"]
                shown = f"{change:>+9.4f}" if np.isfinite(change) else f"{'':>9}"
                lines.append(f"  {k:<28} {v['fp32']:>8.4f} {v['int8']:>10.4f} {shown}")
        if self.speed:
            lines.append(f"  {'latency':<28} {'fp32 ms':>8} {'int8 ms':>10} {'speed-up':>9}")
            for k, v in self.speed.items():
                lines.append(f"  {k:<28} {v['fp32_ms']:>8.2f} {v['int8_ms']:>10.2f} {v['speedup']:>8.2f}x")
        return lines


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return float(a @ b / max(na * nb, 1e-300))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


def _median_ms(pipe: Pipeline, graph: str, feeds: list[Feeds], repeat: int = 3) -> float:
    sess = pipe.sessions[graph]
    sess.run(feeds[0])  # warm-up
    times = []
    for _ in range(repeat):
        for f in feeds:
            t0 = time.perf_counter()
            sess.run(f)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def compare_outputs(fp32: Pipeline, int8: Pipeline, feeds: dict[str, list[Feeds]]) -> list[OutputAccuracy]:
    out = []
    for g in fp32.manifest.graphs:
        for t in g.outputs:
            ref = [fp32.sessions[g.name].run(f)[t.name] for f in feeds[g.name]]
            got = [int8.sessions[g.name].run(f)[t.name] for f in feeds[g.name]]
            r, q = np.concatenate([x.ravel() for x in ref]), np.concatenate([x.ravel() for x in got])
            err = float(np.abs(r.astype(np.float64) - q).max())
            out.append(OutputAccuracy(g.name, t.name, cosine(r, q), err, err / max(float(np.abs(r).max()), 1e-12)))
    return out


def task_metrics(fp32: Pipeline, int8: Pipeline, limit: int = 100) -> dict[str, dict[str, float]]:
    """The demo task metric of both artifacts on the test split (first `limit` items)."""
    model = fp32.manifest.model
    if isinstance(fp32, Captioner) and fp32.manifest.config == "demo":
        from mmedge.calibration.eval_caption import caption_scores, scenes

        data = scenes("test", limit)
        images, refs = [s.image for s in data], [s.captions for s in data]
        m32, c32 = caption_scores(fp32, images, refs, beam=3)
        m8, c8 = caption_scores(int8, images, refs, beam=3)
        agree = float(np.mean([a == b for a, b in zip(c32, c8)]))
        # the grammar has five true paraphrases per scene, nearly tied in the model: int8 may pick
        # another one; whether it names the same objects is the agreement that matters to a user
        same = float(np.mean([Counter(parse_caption(a)) == Counter(parse_caption(b)) for a, b in zip(c32, c8)]))
        objects = [s.objects for s in data]
        return {"bleu4@beam3": {"fp32": m32["bleu4"], "int8": m8["bleu4"]},
                "caption_agreement": {"fp32": 1.0, "int8": agree},
                "object_agreement": {"fp32": 1.0, "int8": same},
                "object_accuracy": {"fp32": score_captions(c32, objects).object_accuracy,
                                    "int8": score_captions(c8, objects).object_accuracy}}
    if isinstance(fp32, AudioEncoder) and fp32.manifest.config == "demo":
        from mmedge.calibration.evaluate import evaluator

        ev = evaluator(model)
        a = ev(fp32, split="test", limit=limit, progress=False).metrics["top1"]
        b = ev(int8, split="test", limit=limit, progress=False).metrics["top1"]
        return {"top1": {"fp32": a, "int8": b}}
    if isinstance(fp32, Refocuser):
        from mmedge.data import depth_scenes, shapes

        values = []
        for seed in shapes.split("test")[: min(limit, 20)]:
            s = depth_scenes.make_depth_scene(seed)
            values.append(psnr(fp32.refocus(s.image, s.depth, s.near, s.far),
                               int8.refocus(s.image, s.depth, s.near, s.far)))
        finite = [v for v in values if np.isfinite(v)]
        return {"psnr_vs_fp32_db": {"fp32": float("inf"), "int8": float(np.mean(finite)) if finite else float("inf")}}
    return {}


def build_report(fp32: Pipeline, int8: Pipeline, task: bool = True, limit: int = 100) -> Int8Report:
    heldout = gather(fp32, HELDOUT).feeds
    rep = Int8Report(fp32.manifest.model, str(fp32.root), str(int8.root), compare_outputs(fp32, int8, heldout))
    if task:
        rep.task = task_metrics(fp32, int8, limit)
    for g in fp32.manifest.graphs:
        a, b = _median_ms(fp32, g.name, heldout[g.name]), _median_ms(int8, g.name, heldout[g.name])
        rep.speed[g.name] = {"fp32_ms": a, "int8_ms": b, "speedup": a / max(b, 1e-9)}
    return rep
