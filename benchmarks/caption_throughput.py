#!/usr/bin/env python
"""Caption throughput: the tutorial's one-image-at-a-time eager loop vs mmedge's batched runtime.

The setting of benchmarks/caption_latency.py, whose functions are imported, not
copied: the FULL captioner (ResNet-101 @256, decoder 512/512/512/2048, 9,490
words, seeded random weights, `<end>` unreachable), beam search k=3 for exactly
`--steps` decoding steps (default 50: both sides do the same work per image),
over `--images` different 640x480 scenes (default 64: caption_latency's scene,
then variants of it with shifted, flipped, recoloured and re-noised pixels).
Rows, in one process:

1. **tutorial eager**: caption_latency's re-implementation of caption.py, one
   image after another, as the tutorial captions a folder;
2. **mmedge fp32, batched**: `load(artifact).caption(paths, beam=3,
   max_len=steps)` on the same weights exported to ONNX: images read and
   encoded a batch at a time, the live beams of a whole batch in each
   decoder_step call; the batch size is the runtime's automatic one
   (machine memory, cores, model sizes) unless `--batch-size` is given;
3. **mmedge fp32, one image per batch**: the same pipeline with batch_size=1,
   to separate what batching adds from what the runtime alone gives;
4. any further `--artifact` of another build (fp16 / int8, any backend),
   batched, against the reduced-precision target.

Throughput is images per second over the whole set (read, preprocess, encode,
decode). fp32 rows must produce the eager tokens on every image, and the
batched row the one-image-per-batch row's tokens and scores (1e-4 per step):
batching must not change a caption (exit 2 otherwise, after the table);
reduced-precision rows report how many images keep the eager tokens. Other
processes' CPU use is measured per row (/proc/stat); above `--max-other-load`
the run is flagged as loaded (exit 3 with --check), since an oversubscribed
machine slows multi-threaded PyTorch far more than ONNX Runtime.

    python benchmarks/caption_throughput.py [--images 64] [--steps 50] [--artifact DIR]...
        [--batch-size B] [--threads T] [--json out.json] [--check] [--keep DIR]

`--artifact DIR` reuses an fp32 ONNX export of these weights (caption_latency's
`--keep DIR` writes one to DIR/artifacts/captioner-full-onnx-fp32); without an
fp32 one, it is exported once into the work folder (about 30 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (benchmarks/ is not a package)
import caption_latency as cl  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mmedge.runtime.batching import this_machine  # noqa: E402

TARGETS = {"fp32": 10.0, "reduced": 20.0}  # images/s, mmedge batched / tutorial eager
SCORE_TOL = 1e-4  # batched vs one image per batch: score difference per decoding step (DESIGN's 1e-4)
PAUSE_S = 1.0  # between rows, so the other runtime's spinning worker threads go idle


log = common.logger("caption_throughput")


# ===================================================================== inputs
def scene_variant(base: np.ndarray, seed: int) -> np.ndarray:
    """A different scene from the same generator: shifted, maybe mirrored, channels swapped and
    recoloured, fresh noise. Seed 0 is the base scene itself."""
    if seed == 0:
        return base
    rng = np.random.default_rng(seed)
    img = base.astype(np.float32)[:, :, rng.permutation(3)] * rng.uniform(0.6, 1.3, 3)
    img = np.roll(img, (int(rng.integers(-80, 80)), int(rng.integers(-160, 160))), axis=(0, 1))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base = np.asarray(Image.open(cl.write_image(folder / "scene-00.png")).convert("RGB"))
    paths = [folder / "scene-00.png"]
    for i in range(1, n):
        paths.append(folder / f"scene-{i:02d}.png")
        Image.fromarray(scene_variant(base, i)).save(paths[-1])
    return paths


# ===================================================================== the rows
@dataclass
class Row:
    """One pipeline over the whole set: tokens per image and where the time went (seconds)."""

    name: str
    precision: str
    seconds: float
    tokens: list[list[int]]
    scores: list[float]
    stages: dict[str, float]
    other_load: float | None
    batch_size: int | None = None
    step_calls: int | None = None
    step_rows_max: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def images_per_s(self) -> float:
        return len(self.tokens) / self.seconds


def eager_row(encoder: Any, decoder: Any, paths: list[Path], word_map: dict[str, int], steps: int) -> Row:
    """The tutorial's loop: caption.py's beam search on each image in turn."""
    cpu0, t0 = common.cpu_snapshot(), time.perf_counter()
    runs = []
    for i, p in enumerate(paths):
        runs.append(cl.caption_image_beam_search(encoder, decoder, p, word_map, cl.BEAM, steps))
        log(f"eager {i + 1}/{len(paths)}: {runs[-1].total:.2f} s")
    seconds = time.perf_counter() - t0
    stages = {k: sum(getattr(r, k) for r in runs) for k in ("preprocess", "encoder", "decoder_init", "decoding")}
    return Row("tutorial eager (PyTorch), one image at a time", "fp32", seconds, [r.tokens for r in runs],
               [r.score for r in runs], stages, common.other_cpu_load(cpu0, common.cpu_snapshot()))


def mmedge_row(cap: Any, paths: list[Path], steps: int, batch_size: int, name: str) -> Row:
    """`cap.caption(paths, ...)` over the whole set, split by the Sessions' timing."""
    for s in cap.sessions.values():
        s.timing.calls.clear()
    rows: list[int] = []
    step = cap.sessions["decoder_step"]
    real_run = step.run
    step.run = lambda feeds: (rows.append(feeds["prev_word"].shape[0]), real_run(feeds))[1]
    try:
        cpu0, t0 = common.cpu_snapshot(), time.perf_counter()
        results = cap.caption([str(p) for p in paths], beam=cl.BEAM, max_len=steps, batch_size=batch_size)
        seconds = time.perf_counter() - t0
        load = common.other_cpu_load(cpu0, common.cpu_snapshot())
    finally:
        del step.run  # the instance attribute: back to the class's method
    stages = {g: cap.sessions[g].timing.total for g in ("encoder", "decoder_init", "decoder_step")}
    stages["rest"] = seconds - sum(stages.values())
    return Row(name, cap.manifest.precision, seconds, [list(r.tokens) for r in results],
               [float(r.score) for r in results], stages, load, batch_size, len(rows), max(rows))


def compare(ref: Row, row: Row, paths: list[Path]) -> dict[str, Any]:
    """Per-image token agreement (and the largest score difference where tokens agree)."""
    same = [a == b for a, b in zip(ref.tokens, row.tokens)]
    diffs = [abs(a - b) for a, b, s in zip(ref.scores, row.scores, same) if s]
    return {"images_equal": sum(same), "images": len(same),
            "first_different": next((str(paths[i].name) for i, s in enumerate(same) if not s), None),
            "max_score_diff": max(diffs) if diffs else None}


class TokenMismatch(common.TokenMismatch):
    """The warm-up's captions differ: the artifact does not hold these weights."""


# ===================================================================== main flow
def fp32_artifact(given: list[Path], workdir: Path) -> tuple[Path, list[Path]]:
    """(the fp32 ONNX artifact, the other builds): a given one, else exported once into `workdir`."""
    from mmedge.runtime.manifest import read_manifest

    fp32 = [a for a in given if (m := read_manifest(a)).precision == "fp32" and m.format == "onnx"]
    if fp32:
        return fp32[0], [a for a in given if a != fp32[0]]
    log("exporting the full captioner (seed 0, <end> unreachable) to ONNX fp32 ...")
    return cl.export_fp32(cl.build_model(), ["onnx"], workdir / "artifacts", log)[0], list(given)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from mmedge.runtime import load

    if args.threads:
        torch.set_num_threads(args.threads)
    opts = {"threads": args.threads} if args.threads else {}
    paths = write_images(workdir / "images", args.images)
    log(f"{len(paths)} scenes (640x480 PNG) in {paths[0].parent}")
    art, others = fp32_artifact(args.artifact, workdir)
    model = cl.build_model()
    encoder, decoder = cl.tutorial_models(model)
    word_map = dict(model.vocab.word_map)
    cap = load(art, **opts)
    machine = this_machine()
    batch = args.batch_size or cap.auto_batch_size(cl.BEAM, args.steps)
    log(f"mmedge batch size {batch} ({'given' if args.batch_size else 'automatic'}; "
        f"{machine.available_bytes / 2**30:.1f} GiB available, {machine.cores} cores)")

    log("warm-up (one image each) ...")
    eager_w = cl.caption_image_beam_search(encoder, decoder, paths[0], word_map, cl.BEAM, args.steps)
    mm_w = cap.caption([str(paths[0])], beam=cl.BEAM, max_len=args.steps)[0]
    if eager_w.tokens != list(mm_w.tokens) or len(eager_w.tokens) != args.steps:
        raise TokenMismatch(f"warm-up: {paths[0].name}: eager {len(eager_w.tokens)} tokens, mmedge "
                            f"{len(mm_w.tokens)}, equal: {eager_w.tokens == list(mm_w.tokens)} (is {art} an "
                            "export of these weights?)")

    rows = [eager_row(encoder, decoder, paths, word_map, args.steps)]
    del encoder, decoder, model
    time.sleep(PAUSE_S)
    log("mmedge fp32, batched ...")
    rows.append(mmedge_row(cap, paths, args.steps, batch, f"mmedge ONNX Runtime fp32, batches of {batch}"))
    time.sleep(PAUSE_S)
    log("mmedge fp32, one image per batch ...")
    rows.append(mmedge_row(cap, paths, args.steps, 1, "mmedge ONNX Runtime fp32, one image per batch"))
    for other in others:
        time.sleep(PAUSE_S)
        pipe = load(other, **opts)
        m = pipe.manifest
        pipe.caption([str(paths[0])], beam=cl.BEAM, max_len=args.steps)  # warm-up
        log(f"mmedge {m.format} {m.precision}, batched ...")
        size = args.batch_size or pipe.auto_batch_size(cl.BEAM, args.steps)
        rows.append(mmedge_row(pipe, paths, args.steps, size, f"mmedge {m.format} {m.precision} ({pipe.backend}), "
                               f"batches of {size}"))

    eager, batched, single = rows[0], rows[1], rows[2]
    failures = []
    for r in rows[1:]:
        a = compare(eager, r, paths)
        if r.precision == "fp32" and a["images_equal"] != a["images"]:
            failures.append(f"{r.name}: tokens differ from eager on {a['images'] - a['images_equal']} of "
                            f"{a['images']} images (first: {a['first_different']})")
    alone = compare(single, batched, paths)  # batching must not change a caption
    if alone["images_equal"] != alone["images"] or alone["max_score_diff"] > SCORE_TOL * args.steps:
        failures.append(f"batched and one-image-per-batch captions differ: same tokens on {alone['images_equal']}/"
                        f"{alone['images']} images, max score difference {alone['max_score_diff']}")
    out_rows = []
    for r in rows:
        target = None
        if r is not eager and r is not single:
            target = TARGETS["fp32" if r.precision == "fp32" else "reduced"]
        ratio = r.images_per_s() / eager.images_per_s()
        out_rows.append({"name": r.name, "precision": r.precision, "seconds": r.seconds,
                         "images_per_s": r.images_per_s(), "ms_per_image": 1e3 * r.seconds / len(r.tokens),
                         "stages_s": r.stages, "other_cpu_load": r.other_load, "batch_size": r.batch_size,
                         "decoder_step_calls": r.step_calls, "decoder_step_rows_max": r.step_rows_max,
                         "speedup": ratio, "target": target, "target_met": None if target is None else ratio >= target,
                         "agreement": compare(eager, r, paths)})
    loads = [r.other_load for r in rows if r.other_load is not None]
    worst = max(loads) if loads else None
    return {"benchmark": "caption_throughput", "model": "captioner", "config": cl.CONFIG,
            "vocab_size": len(word_map), "beam": cl.BEAM, "steps": args.steps, "images": len(paths),
            "artifact": str(art), "machine": {**cl.machine_info(args.threads),
                                              "available_memory_gib": round(machine.available_bytes / 2**30, 2),
                                              "usable_cores": machine.cores},
            "batch_size": batch, "batch_size_automatic": args.batch_size is None,
            "other_cpu_load": worst, "max_other_load": args.max_other_load,
            "valid": worst is None or worst <= args.max_other_load, "rows": out_rows,
            "batched_vs_one_per_call": alone, "failures": failures}


# ===================================================================== report
def render(res: dict[str, Any]) -> str:
    m, rows = res["machine"], res["rows"]
    eager = rows[0]
    lines = [
        f"## Caption throughput: full captioner (ResNet-101 @256, decoder 512/512/512, vocab {res['vocab_size']:,}), "
        f"{res['images']} different 640x480 scenes, beam {res['beam']}, {res['steps']} steps forced",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs / {m['physical_cores']} physical cores "
        f"({m['usable_cores']} usable), {m['available_memory_gib']:.1f} GiB available; Python {m['python']}, "
        f"torch {m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']} "
        f"(intra-op threads: {m['ort_intra_op_threads']}).",
        common.load_line(res["other_cpu_load"], m["logical_cpus"], res["max_other_load"], " (figure: the busiest row)"),
        f"mmedge batch size: {res['batch_size']} images "
        f"({'automatic: machine memory and cores, model sizes' if res['batch_size_automatic'] else '--batch-size'}).",
        "",
        "| pipeline | images/s | ms / image | encoder ms/img | decoding ms/img | decoder calls (max rows) "
        "| other load | speed-up | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        n, s = res["images"], r["stages_s"]
        dec = s.get("decoding", s.get("decoder_step"))
        calls = "-" if r["decoder_step_calls"] is None else \
            f"{r['decoder_step_calls']:,} ({r['decoder_step_rows_max']})"
        load = "-" if r["other_cpu_load"] is None else f"{r['other_cpu_load']:.2f}"
        if r["target"] is None:
            verdict = ""
        elif not res["valid"]:
            verdict = f">= {r['target']:.0f}x: INCONCLUSIVE (machine busy)"
        else:
            verdict = f">= {r['target']:.0f}x: {'met' if r['target_met'] else 'NOT met'}"
        ratio = "" if r is eager else f"**{r['speedup']:.2f}x**"
        lines.append(f"| {r['name']} | {r['images_per_s']:.3f} | {r['ms_per_image']:,.0f} | "
                     f"{1e3 * s['encoder'] / n:,.0f} | {1e3 * dec / n:,.0f} | {calls} | {load} | {ratio} | {verdict} |")
    lines.append("")
    for r in rows[1:]:
        a = r["agreement"]
        diff = "" if a["max_score_diff"] is None else f" (max score difference {a['max_score_diff']:.1e})"
        lines.append(f"- {r['name']}: the eager tokens on {a['images_equal']}/{a['images']} images{diff}.")
    a = res["batched_vs_one_per_call"]
    lines.append(f"- Batched against one image per batch (same runtime, same weights): the same tokens on "
                 f"{a['images_equal']}/{a['images']} images, max score difference {a['max_score_diff'] or 0:.1e} "
                 f"(allowed {SCORE_TOL:.0e} per step).")
    lines.append("- Scores against eager differ more than float32 rounding suggests: the random ResNet-101 "
                 "weights make features of order 1e5, so kernels that sum in another order move each step's "
                 "log-probabilities by up to ~1e-2; the tokens are compared exactly.")
    lines += [f"- FAILED: {f}" for f in res["failures"]]
    lines += ["", "Speed-up = images/s against the eager row. Eager decoding includes its beam bookkeeping; mmedge "
              "decoding is decoder_step Session time (bookkeeping, reading and preprocessing are in neither column). "
              "Eager deviates from caption.py in three ways: " + "; ".join(cl.EAGER_DEVIATIONS) + "."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.parser(
        "caption_throughput.py",
        "Caption throughput (images/s) of the FULL captioner over many different scenes: the tutorial's "
        "PyTorch-eager loop, one image at a time, against mmedge's batched runtime on the same weights. "
        "Markdown table on stdout; progress on stderr.",
        "Exit status: 0 on success; 1 with --check when a target is not met; 2 when an fp32 mmedge row's "
        "tokens differ from eager, or batching changes a caption; 3 with --check when other processes "
        "loaded the CPUs beyond --max-other-load.")
    p.add_argument("--images", type=int, default=64, metavar="N", help="different scenes to caption")
    p.add_argument("--steps", type=int, default=cl.STEPS, metavar="S",
                   help="decoding steps per image (<end> is unreachable: every image runs exactly S steps)")
    p.add_argument("--artifact", type=Path, action="append", default=[], metavar="DIR",
                   help="an artifact of these weights (repeatable): an fp32 ONNX one is reused instead of "
                        "exporting; any other build (fp16, int8, another backend) is an extra row")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="mmedge images per batch (default: the runtime's automatic choice)")
    common.add_common(
        p, threads="threads for both: torch.set_num_threads(T) and the runtime's intra-op threads",
        check="exit 1 if a row misses its target",
        max_other_load="average CPUs other processes may keep busy during a row before the run is flagged",
        keep="write the images (and an export, if one is made) under DIR and keep them")
    args = p.parse_args(argv)
    common.at_least(p, args, images=1, steps=1, batch_size=1, threads=1)
    for a in args.artifact:
        if not (a / "manifest.json").is_file():
            p.error(f"--artifact {a}: not an artifact directory (no manifest.json)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = common.run_and_publish("caption_throughput", "", args, run, common.workdir(args.keep, "caption_throughput_"),
                                 render, log)
    if res is None:
        return 2
    if res["failures"]:
        print("caption_throughput: FAILED: " + "; ".join(res["failures"]), file=sys.stderr)
        return 2
    if args.check and not res["valid"]:
        return common.inconclusive("caption_throughput", res["other_cpu_load"], args.max_other_load)
    missed = [r["name"] for r in res["rows"] if r["target_met"] is False]
    if args.check and missed:
        print(f"caption_throughput: target missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
