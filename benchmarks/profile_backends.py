#!/usr/bin/env python
"""Every backend and precision side by side, with `mmedge.runtime.profiler`: docs/profile.md + docs/profile.png.

Two parts, both measured by the profiler that `mmedge profile` runs (same clock,
warm-up, statistics and noise report):

1. **Demo models** - the trained demo models that exist (soundnet, voice-encoder;
   the captioner's `demo` weights when models/weights/captioner-demo.pt is there,
   else its `tiny` config, untrained, without a task metric), exported here to
   ONNX fp32 and int8 (and OpenVINO fp32 / int8 when OpenVINO is installed);
   per graph and end to end, with the task metric on the held-out demo data
   (`--eval`: top-1, BLEU-4) so format, precision, size, accuracy and speed share
   one table.
2. **Full captioner** (ResNet-101 @256, 9,490 words, seeded random weights,
   `<end>` unreachable: exactly 50 steps at beam 3) - the tutorial's PyTorch-eager
   pipeline from benchmarks/caption_latency.py (`caption_image_beam_search`, the
   same weights through `tutorial_models`) against mmedge's ONNX fp32 export
   (and ONNX int8 with --full-int8, OpenVINO fp32 when installed), all captioning
   the same 640x480 PNG. The eager row is timed with the profiler's `timed_runs`
   and split with the tutorial function's own stage timings; the fp32 export must
   give the eager pipeline's tokens.

    python benchmarks/profile_backends.py [--runs 20] [--full-runs 5] [--threads T] [--pin 0,1]
                                          [--out docs] [--json] [--skip-full] [--full-int8]

Writes OUT/profile.md and OUT/profile.png (with --json also OUT/profile-demo.json and
OUT/profile-full.json, documents for `mmedge profile --compare`); progress on stderr.
Exit status 0; 2 when the eager and mmedge fp32 captions differ.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import _common as common  # noqa: E402  (benchmarks/ is not a package)

from mmedge.errors import MmedgeError  # noqa: E402
from mmedge.runtime import profile_render as R  # noqa: E402
from mmedge.runtime import profiler as P  # noqa: E402
from mmedge.runtime.session import available  # noqa: E402

try:  # the other benchmark's eager tutorial pipeline (needs torch)
    from caption_latency import (BEAM, STEPS, build_model, caption_image_beam_search,  # noqa: E402
                                 tutorial_models, write_image)
except ImportError as e:  # pragma: no cover - reported, the demo part still runs
    CAPTION_LATENCY_ERROR: str | None = f"benchmarks/caption_latency.py is not importable ({e})"
else:
    CAPTION_LATENCY_ERROR = None


log = common.logger("profile_backends")


# ===================================================================== exports
def formats_here() -> list[str]:
    from mmedge.export import registry

    return [f for f in ("onnx", "openvino") if f in registry.formats() and available(
        "onnxruntime" if f == "onnx" else f)]


def export_one(model: str, config: str, fmt: str, precision: str, out: Path, calib_size: int,
               skipped: list[str]) -> Path | None:
    from mmedge.calibration.data import CalibSource
    from mmedge.calibration.int8_export import export  # every precision: int8 calibrates
    from mmedge.calibration.recipes import QuantConfig
    from mmedge.export.registry import ExportRequest

    int8 = precision == "int8"
    req = ExportRequest(model, [fmt], precision, config, out=out,
                        calib=CalibSource(None, calib_size) if int8 else None,
                        quant=QuantConfig(cache_dir=out / "calib-cache") if int8 else None, report=False)
    t0 = time.perf_counter()
    try:
        (art,) = export(req, log=lambda s: None).artifacts
    except (MmedgeError, ImportError, RuntimeError) as e:
        skipped.append(f"{model} ({config}) {fmt} {precision}: {str(e).splitlines()[0][:160]}")
        log(f"skipped {model} {fmt} {precision}: {e}")
        return None
    log(f"exported {art.name} in {time.perf_counter() - t0:.1f} s")
    return art


def demo_artifacts(out: Path, formats: list[str], calib_size: int, skipped: list[str]
                   ) -> tuple[list[Path], list[Path]]:
    """(artifacts of trained demo models: evaluated, others: profiled only)."""
    from mmedge.models import zoo

    cap = zoo.get("captioner")
    cap_config = "demo" if (zoo.WEIGHTS_DIR / cap.weights.get("demo", "-")).is_file() else "tiny"
    if cap_config == "tiny":
        skipped.append("captioner demo: models/weights/captioner-demo.pt is not there yet; the untrained "
                       "tiny captioner is profiled instead (no task metric)")
    trained, untrained = [], []
    for model, config in (("captioner", cap_config), ("soundnet", "demo"), ("voice-encoder", "demo")):
        for fmt in formats:
            for precision in ("fp32", "int8"):
                art = export_one(model, config, fmt, precision, out, calib_size, skipped)
                if art is not None:
                    (trained if config == "demo" else untrained).append(art)
    return trained, untrained


def full_artifacts(model: Any, out: Path, formats: list[str], int8: bool, calib_size: int,
                   skipped: list[str]) -> list[Path]:
    """The full captioner with `model`'s weights: fp32 per format (+ ONNX int8)."""
    from dataclasses import replace

    from mmedge.calibration.data import CalibSource
    from mmedge.calibration.int8_export import export_int8
    from mmedge.calibration.recipes import QuantConfig
    from mmedge.export.registry import ExportContext, ExportRequest, export_context
    from mmedge.models import zoo

    spec = zoo.get("captioner")
    ctx = ExportContext(spec, "full", spec.config("full"), model, "fp32", model.vocab)
    arts = []
    for fmt in formats:
        t0 = time.perf_counter()
        try:
            arts += export_context(ctx, [fmt], out).artifacts
            log(f"exported the full captioner to {fmt} fp32 in {time.perf_counter() - t0:.1f} s")
        except (MmedgeError, ImportError, RuntimeError) as e:
            skipped.append(f"captioner (full) {fmt} fp32: {str(e).splitlines()[0][:160]}")
    if int8:
        t0 = time.perf_counter()
        req = ExportRequest("captioner", ["onnx"], "int8", "full", out=out, calib=CalibSource(None, calib_size),
                            quant=QuantConfig(cache_dir=out / "calib-cache"), report=False)
        try:
            arts += export_int8(replace(ctx, precision="int8"), req, log=lambda s: None).artifacts
            log(f"exported the full captioner to onnx int8 in {time.perf_counter() - t0:.1f} s")
        except (MmedgeError, ImportError, RuntimeError) as e:
            skipped.append(f"captioner (full) onnx int8: {str(e).splitlines()[0][:160]}")
    return arts


# ===================================================================== `mmedge profile` in a torch-free process
def mmedge_profile(artifacts: list[Path], args: argparse.Namespace, *extra: str) -> P.ProfileResult:
    """Run `python -m mmedge profile --json` on `artifacts` in a fresh process (no torch loaded, so the
    peak RSS column is the runtime's own) and read its JSON back."""
    cmd = [sys.executable, "-m", "mmedge", "profile", "--json", *extra]
    for a in artifacts:
        cmd += ["--artifact", str(a)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.pin:
        cmd += ["--pin", args.pin]
    log("$ " + " ".join(["mmedge", *cmd[3:]]))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"mmedge profile failed with exit code {proc.returncode}")
    return P.result_from_json(P.validate_json(json.loads(proc.stdout), "mmedge profile --json"))


# ===================================================================== the eager tutorial pipeline as a row
def eager_row(encoder: Any, decoder: Any, word_map: dict[str, int], image: Path, build_s: float, size_bytes: int,
              opts: P.ProfileOptions) -> P.ProfileRow:
    """`caption_image_beam_search` timed like every other row, split by its own stage timings."""
    call: Callable[[], Any] = lambda: caption_image_beam_search(encoder, decoder, image, word_map)  # noqa: E731
    timed = P.timed_runs(call, opts.runs, opts.warmup, P.PERF_CLOCK, opts.disable_gc)
    stages: dict[str, list[float]] = {"preprocess": [], "encoder": [], "decoder_init": [], "decoder_steps": [],
                                      "other": []}
    for run, total in zip(timed.values, timed.samples_s):
        parts = (run.preprocess, run.encoder, run.decoder_init, run.decoding)
        for name, v in zip(stages, parts):
            stages[name].append(v)
        stages["other"].append(max(0.0, total - sum(parts)))
    runs = timed.values
    steps = sum(r.steps for r in runs) / len(runs)
    mean_total = sum(timed.samples_s) / len(timed.samples_s)
    tokens = sum(len(r.tokens) for r in runs) / len(runs)
    extra = {"steps": steps, "per_step_ms": sum(r.decoding for r in runs) / sum(r.steps for r in runs) * 1e3,
             "tokens": tokens, "tokens_per_s": tokens / mean_total}
    info = P.RowInfo("captioner-full-pytorch-eager", "captioner", "full", "captioner", "pytorch", "fp32",
                     "torch-eager")
    return P.make_row(info, "e2e", P.E2E, 1, BEAM, timed, load_s=build_s, size_bytes=size_bytes, items=1,
                      unit="images/s", noise_threshold=opts.noise_threshold, stages=stages, extra=extra)


def profile_full(args: argparse.Namespace, work: Path, formats: list[str], skipped: list[str]
                 ) -> tuple[P.ProfileResult, list[str]]:
    import torch

    from mmedge.runtime import load

    if args.threads:
        torch.set_num_threads(args.threads)
    image = write_image(work / "scene.png")
    log("building the full captioner (seed 0, <end> unreachable) ...")
    model = build_model()
    t0 = time.perf_counter()
    encoder, decoder = tutorial_models(model)
    build_s = time.perf_counter() - t0
    size = sum(p.numel() * p.element_size() for m in (encoder, decoder) for p in m.state_dict().values())
    word_map = dict(model.vocab.word_map)
    arts = full_artifacts(model, work / "full", formats, args.full_int8, args.full_calib_size, skipped)
    if not arts:
        raise SystemExit("no full-captioner artifact could be exported")

    eager_tokens = caption_image_beam_search(encoder, decoder, image, word_map).tokens
    fp32 = next(a for a in arts if a.name.endswith("onnx-fp32"))
    ours = load(fp32).caption([str(image)], beam=BEAM, max_len=STEPS)[0].tokens
    if ours != eager_tokens or len(ours) != STEPS:
        print(f"profile_backends: FAILED: eager and mmedge fp32 captions differ ({len(eager_tokens)} vs "
              f"{len(ours)} tokens)", file=sys.stderr)
        raise SystemExit(2)
    log(f"eager and mmedge fp32 give the same {STEPS} tokens")

    res = mmedge_profile(arts, args, "--runs", str(args.full_runs), "--warmup", str(args.full_warmup),
                         "--beam", str(BEAM), "--max-len", str(STEPS), "--image", str(image))
    opts = P.ProfileOptions(runs=args.full_runs, warmup=args.full_warmup, beam=(BEAM,), max_len=STEPS)
    log("tutorial eager pipeline ...")
    res.rows.append(eager_row(encoder, decoder, word_map, image, build_s, size, opts))
    res.artifacts.append(P.ArtifactInfo("captioner-full-pytorch-eager", "benchmarks/caption_latency.py",
                                        "captioner", "full", "captioner", "pytorch", "fp32", "torch-eager", size,
                                        size, build_s * 1e3))
    res.machine["backends"]["torch"] = torch.__version__
    P.finish(res, opts.noise_threshold)
    eager = res.rows[-1]
    lines = ["| pipeline | e2e p50 ms | e2e min ms | speed-up vs eager (p50) | (min) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in [x for x in res.rows if x.kind == "e2e"]:
        lines.append(f"| {r.info.artifact} ({r.info.backend}) | {R.fmt_ms(r.latency.p50)} | {R.fmt_ms(r.latency.min)} "
                     f"| {eager.latency.p50 / r.latency.p50:.2f}x | {eager.latency.min / r.latency.min:.2f}x |")
    return res, lines


# ===================================================================== main
def merged(results: list[P.ProfileResult]) -> P.ProfileResult:
    """One result holding every row (for the plot)."""
    out = P.ProfileResult(results[0].machine, results[0].options, environment=dict(results[0].environment))
    loads = [r.environment.get("other_cpu_load") for r in results if r.environment.get("other_cpu_load") is not None]
    out.environment["other_cpu_load"] = max(loads) if loads else None
    for r in results:
        out.artifacts += r.artifacts
        out.rows += r.rows
        out.warnings += r.warnings
    P.finish(out, float(results[0].options.get("noise_threshold", P.DEFAULT_NOISE_THRESHOLD)))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="profile_backends.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs", type=int, default=20, help="timed runs per row (demo models)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per row (demo models)")
    p.add_argument("--full-runs", type=int, default=5, help="timed runs per row (full captioner)")
    p.add_argument("--full-warmup", type=int, default=1, help="warm-up runs per row (full captioner)")
    p.add_argument("--threads", type=int, default=None, help="backend intra-op threads (and torch threads)")
    p.add_argument("--pin", default=None, help="pin to these CPUs, e.g. 0,1")
    p.add_argument("--calib-size", type=int, default=32, help="int8 calibration samples (demo models)")
    p.add_argument("--full-calib-size", type=int, default=8, help="int8 calibration samples (full captioner)")
    p.add_argument("--full-int8", action="store_true", help="also export and profile the full captioner in int8")
    p.add_argument("--eval-limit", type=int, default=None, help="task metric on the first N test items only")
    p.add_argument("--skip-full", action="store_true", help="only the demo models")
    p.add_argument("--out", type=Path, default=ROOT.parent / "docs", help="where profile.md / profile.png go")
    p.add_argument("--json", action="store_true", help="also write profile-demo.json and profile-full.json")
    p.add_argument("--keep", type=Path, default=None, help="export under this folder and keep it")
    return p.parse_args(argv)


def run(args: argparse.Namespace, work: Path) -> int:
    skipped: list[str] = []
    formats = formats_here()
    log(f"formats here: {', '.join(formats)}")
    trained, untrained = demo_artifacts(work / "demo", formats, args.calib_size, skipped)
    demo_args = ["--runs", str(args.runs), "--warmup", str(args.warmup), "--beam", "3", "--max-len", "30"]
    results = []
    if trained:
        results.append(mmedge_profile(trained, args, *demo_args, "--eval",
                                      *(["--eval-limit", str(args.eval_limit)] if args.eval_limit else [])))
    if untrained:
        results.append(mmedge_profile(untrained, args, *demo_args))
    demo = merged(results)
    full, speedups = None, []
    if not args.skip_full:
        if CAPTION_LATENCY_ERROR:
            skipped.append(CAPTION_LATENCY_ERROR)
        else:
            full, speedups = profile_full(args, work, formats, skipped)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/profile_backends.py " + " ".join(sys.argv[1:])
    md = ["# Latency profile", "",
          f"Made by `{cmd.strip()}` ({when}) with `mmedge.runtime.profiler`, the code behind `mmedge profile`.",
          "", "## Demo models: format x precision, size, task metric and speed", "",
          R.to_markdown(demo).rstrip()]
    if full is not None:
        md += ["", f"## Full captioner: the tutorial's PyTorch-eager pipeline vs mmedge (beam {BEAM}, "
               f"{STEPS} steps)", "",
               "Same weights (ResNet-101 @256, 9,490 words, seeded random, `<end>` unreachable), same 640x480 PNG, "
               "same 50 tokens. Eager: `caption_image_beam_search` of benchmarks/caption_latency.py; its decoder "
               "steps include the beam bookkeeping (interleaved torch ops); its peak RSS is the benchmark process's "
               "(torch, the exports), the other rows' that of a torch-free `mmedge profile` process.", "",
               *speedups, "",
               R.to_markdown(full).rstrip()]
    if skipped:
        md += ["", "Not profiled here:", ""] + [f"- {s}" for s in skipped]
    md += ["", "![latency distributions per backend and precision](profile.png)", ""]
    (out / "profile.md").write_text("\n".join(md))
    plot_src = merged([demo] + ([full] if full is not None else []))
    R.plot(plot_src, out / "profile.png", title="mmedge profile: demo models and the full captioner vs PyTorch eager")
    if args.json:
        (out / "profile-demo.json").write_text(json.dumps(demo.to_json(), indent=1) + "\n")
        if full is not None:
            (out / "profile-full.json").write_text(json.dumps(full.to_json(), indent=1) + "\n")
    log(f"wrote {out / 'profile.md'} and {out / 'profile.png'}")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with P.pinned(tuple(int(c) for c in args.pin.split(",")) if args.pin else None):  # the eager rows too
        with common.workdir(args.keep, "profile_backends_") as wd:
            return run(args, wd)


if __name__ == "__main__":
    sys.exit(main())
