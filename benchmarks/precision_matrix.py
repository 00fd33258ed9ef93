#!/usr/bin/env python
"""Precision x backend matrix for the captioner, and what `--precision auto` picks on this CPU.

The setting of benchmarks/caption_latency.py, whose functions are imported, not copied: the
captioner (`--config`, default full: ResNet-101 @256, 9,490 words, seeded random weights,
`<end>` unreachable so every caption is exactly 50 steps) captions one 640x480 PNG with beam
search k=3. Every build below starts from the same fp32 ONNX artifact and one calibration set
(`--calib-size` demo shapes scenes gathered through the fp32 artifact, as `mmedge export
--precision int8` does, with the export's recipes):

    onnx fp32                 ONNX Runtime, the reference build
    onnx int8                 static QDQ everywhere (uint8 activations, int8 per-channel weights;
                              decoder: its linear layers), the `--precision int8` build
    onnx int8 + wo decoder    int8 encoder, weight-only int8 decoder graphs (`--dynamic-decoder`)
    onnx int8 + fp32 decoder  int8 encoder, fp32 decoder graphs
    openvino fp32             OpenVINO IR, f32 inference precision
    openvino bf16             the same IR, bf16 inference precision (only where the plugin lists BF16)
    openvino int8 / + wo decoder / + fp32 decoder   NNCF, as for ONNX
    (openvino fp16            fp16 IR at f16, only when the policy picks it: Arm)

For each: the encoder and one decoder step (beam 3, step-invariant inputs bound as beam search
binds them) timed alone (median of `--op-repeat`), then the end-to-end caption (median of
`--repeat`, interleaved with the tutorial's eager loop, caption_latency.caption_image_beam_search);
the tokens' agreement with the fp32 build; the speed-up vs onnx fp32 and vs eager. The table
marks the fastest build and the one `mmedge export --precision auto` would choose here
(export/precision_policy.py) for each format, with the CPU model and family.

Random weights make near-ties, so reduced precision may pick other words; accuracy is judged on
the trained demo captioner (`mmedge export --precision int8` prints BLEU-4). Other processes'
CPU use is measured during the timed runs (/proc/stat); above `--max-other-load` the figures
are flagged as not trustworthy.

    python benchmarks/precision_matrix.py [--config full|demo|tiny] [--repeat 5] [--op-repeat 20]
        [--calib-size 16] [--threads T] [--onnx FP32_ONNX_ARTIFACT] [--json out.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (benchmarks/ is not a package)
import caption_latency as cl  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmedge.export.precision_policy import Choice, choose  # noqa: E402
from mmedge.models import zoo  # noqa: E402
from mmedge.runtime.cpu_features import detect  # noqa: E402
from mmedge.runtime.manifest import GraphEntry, Manifest, read_manifest  # noqa: E402
from mmedge.runtime.roles import DECODER_GRAPHS as DECODER  # noqa: E402

log = common.logger("precision_matrix")


@dataclass
class Build:
    """One row: an artifact, the backend options it runs with, and how each graph computes."""

    name: str
    label: str
    fmt: str
    artifact: Path
    encoder: str
    decoder: str
    options: dict[str, Any] = field(default_factory=dict)  # load(..., **options): OpenVINO precision

    def mix(self) -> tuple[str, str, str]:
        return (self.fmt, self.encoder, self.decoder)


# ===================================================================== building
def fp32_artifacts(model: Any, config: str, onnx: Path | None, out: Path) -> tuple[Path, Path]:
    """(fp32 ONNX, fp32 OpenVINO): exported from `model`, or converted from the given ONNX artifact."""
    from mmedge.export.openvino import convert_onnx_artifact

    if onnx is None:
        onnx_dir, ov_dir = cl.export_fp32(model, ["onnx", "openvino"], out, log, config)
        return onnx_dir, ov_dir
    m = read_manifest(onnx)
    if (m.model, m.config, m.format, m.precision) != ("captioner", config, "onnx", "fp32"):
        raise SystemExit(f"--onnx {onnx}: is {m.model} {m.config} {m.format} {m.precision}, "
                         f"not captioner {config} onnx fp32")
    log(f"reusing {onnx}; converting it to OpenVINO IR ...")
    return onnx, convert_onnx_artifact(onnx, out / "captioner-openvino-fp32")


def quantize(fmt: str, onnx_dir: Path, manifest: Manifest, calib: Any, dest: Path, cfg: Any,
             graphs: tuple[str, ...]) -> dict[str, GraphEntry]:
    """The export's int8 recipe for `fmt` on some graphs of the fp32 ONNX artifact, into `dest`."""
    from mmedge.calibration.recipes import QuantizeRequest, recipe

    dest.mkdir(parents=True, exist_ok=True)
    sub = replace(manifest, graphs=[g for g in manifest.graphs if g.name in graphs])
    return {g.name: g for g in recipe(fmt)(QuantizeRequest(onnx_dir, sub, calib, dest, cfg))}


def assemble(out: Path, base: Manifest, fmt: str, precision: str, parts: dict[str, tuple[Path, GraphEntry]],
             mix: dict[str, str]) -> Path:
    """An artifact whose graphs come from several builds (graph -> (folder, entry))."""
    from mmedge.export.artifact import atomic_dir, finish

    with atomic_dir(out) as tmp:
        for src, g in parts.values():
            for f in [src / g.file] + ([(src / g.file).with_suffix(".bin")] if g.file.endswith(".xml") else []):
                shutil.copyfile(f, tmp / f.name)
        extra = {k: v for k, v in base.extra.items() if k != "test_vectors"} | {"precision_mix": mix}
        finish(tmp, replace(base, format=fmt, precision=precision, files={}, extra=extra,
                            graphs=[parts[g.name][1] for g in base.graphs]))
    return out


def int8_builds(fmt: str, onnx_dir: Path, fp32_dir: Path, calib: Any, work: Path) -> list[Build]:
    """int8 / int8 + weight-only decoder / int8 + fp32 decoder for one format."""
    from mmedge.calibration.recipes import QuantConfig

    src = read_manifest(onnx_dir)
    fp32 = read_manifest(fp32_dir)
    cfg = QuantConfig(cache_dir=work / "cache")
    names = tuple(g.name for g in src.graphs)
    log(f"{fmt}: int8 (static) ...")
    t0 = time.perf_counter()
    static = quantize(fmt, onnx_dir, src, calib, work / f"{fmt}-static", cfg, names)
    log(f"{fmt}: weight-only int8 decoder ... (static took {time.perf_counter() - t0:.0f} s)")
    wo = quantize(fmt, onnx_dir, src, calib, work / f"{fmt}-wo", replace(cfg, dynamic_decoder=True), DECODER)
    short = "ov" if fmt == "openvino" else fmt
    name = "OpenVINO" if fmt == "openvino" else "ONNX Runtime"
    opts = {"precision": "f32"} if fmt == "openvino" else {}
    fp32_entries = {g.name: g for g in fp32.graphs}
    out = []
    for key, label, dec, parts in (
        ("int8", "int8", "int8", {n: (work / f"{fmt}-static", static[n]) for n in names}),
        ("int8_wo", "int8 + weight-only int8 decoder", "int8-weights",
         {"encoder": (work / f"{fmt}-static", static["encoder"]), **{n: (work / f"{fmt}-wo", wo[n]) for n in DECODER}}),
        ("int8_fp32dec", "int8 encoder + fp32 decoder", "fp32",
         {"encoder": (work / f"{fmt}-static", static["encoder"]), **{n: (fp32_dir, fp32_entries[n]) for n in DECODER}}),
    ):
        art = assemble(work / "artifacts" / f"captioner-{fmt}-{key}", fp32 if fmt == "openvino" else src, fmt,
                       "int8", parts, {"encoder": "int8", "decoder": dec})
        out.append(Build(f"{short}_{key}", f"{name} {label}", fmt, art, "int8", dec, dict(opts)))
    return out


def builds(onnx_dir: Path, ov_dir: Path, calib: Any, work: Path, choices: dict[str, Choice]) -> list[Build]:
    """Every row of the matrix (bf16 / fp16 only where this machine's OpenVINO CPU plugin runs them)."""
    from mmedge.runtime.backends.openvino import core

    caps = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    rows = [Build("onnx_fp32", "ONNX Runtime fp32", "onnx", onnx_dir, "fp32", "fp32")]
    rows += int8_builds("onnx", onnx_dir, onnx_dir, calib, work)
    rows.append(Build("ov_fp32", "OpenVINO fp32 (f32)", "openvino", ov_dir, "fp32", "fp32", {"precision": "f32"}))
    if "BF16" in caps:
        rows.append(Build("ov_bf16", "OpenVINO bf16", "openvino", ov_dir, "bf16", "bf16", {"precision": "bf16"}))
    else:
        log(f"OpenVINO bf16: not supported by this CPU (plugin capabilities: {', '.join(caps)})")
    if choices["openvino"].precision == "fp16" and "FP16" in caps:
        from mmedge.export.openvino import convert_onnx_artifact

        fp16 = convert_onnx_artifact(onnx_dir, work / "artifacts" / "captioner-openvino-fp16", "fp16")
        rows.append(Build("ov_fp16", "OpenVINO fp16 (f16)", "openvino", fp16, "fp16", "fp16", {"precision": "f16"}))
    rows += int8_builds("openvino", onnx_dir, ov_dir, calib, work)
    return rows


def policy_row(rows: list[Build], choice: Choice) -> str | None:
    """The row that is the policy's choice for its format (None: not built here)."""
    r = choice.rule
    want = dict(r.session).get("precision", "f32") if choice.format == "openvino" else None
    return next((b.name for b in rows
                 if b.mix() == (choice.format, r.encoder, r.decoder) and b.options.get("precision") == want), None)


# ===================================================================== timing
def median_ms(fn: Callable[[], Any], n: int) -> float:
    fn()  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def graph_times(pipe: Any, image: Path, n: int) -> dict[str, float]:
    """Encoder (batch 1) and one decoder step (beam 3, features/att1 bound) alone, median ms."""
    batch = pipe.preprocess([str(image)])
    enc, init, step = (pipe.sessions[g] for g in ("encoder", "decoder_init", "decoder_step"))
    feats = pipe.encode(batch)
    st = init.run({"features": feats})
    rows = np.zeros(cl.BEAM, np.int64)
    step.bind("features", np.ascontiguousarray(feats[rows]))
    step.bind("att1", np.ascontiguousarray(st["att1"][rows]))
    feeds = {"prev_word": np.full(cl.BEAM, pipe.vocab.start, np.int64), "h": st["h"][rows], "c": st["c"][rows]}
    try:
        return {"encoder_ms": median_ms(lambda: enc.run({"image": batch}), n),
                "decoder_step_ms": median_ms(lambda: step.run(feeds), n)}
    finally:
        step.unbind("features")
        step.unbind("att1")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from mmedge.calibration.data import CalibSource, gather
    from mmedge.runtime import load

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = detect()
    choices = {fmt: choose(cpu, fmt, "captioner", args.config) for fmt in ("onnx", "openvino")}
    log(f"CPU: {cpu.describe()}")
    for c in choices.values():
        log(c.line())
    image = cl.write_image(workdir / "scene.png")
    log(f"building the {args.config} captioner (seed 0, <end> unreachable) ...")
    model = cl.build_model(args.config)
    encoder, decoder = cl.tutorial_models(model)
    word_map = dict(model.vocab.word_map)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    onnx_dir, ov_dir = fp32_artifacts(model, args.config, args.onnx, workdir / "artifacts")
    times["fp32_export_s"] = time.perf_counter() - t0
    log(f"calibrating on {args.calib_size} shapes scenes through the fp32 ONNX artifact ...")
    t0 = time.perf_counter()
    calib = gather(load(onnx_dir), CalibSource(None, args.calib_size))
    rows = builds(onnx_dir, ov_dir, calib, workdir, choices)
    times["calibration_and_int8_s"] = time.perf_counter() - t0

    opts = {"threads": args.threads} if args.threads else {}
    pipes = {b.name: load(b.artifact, **b.options, **opts) for b in rows}
    runners = cl.runners(encoder, decoder, word_map, image, pipes)
    log("warm-up (one caption each) ...")
    warm = {name: fn() for name, fn in runners.items()}
    ref = warm["onnx_fp32"].tokens
    exact_eager = warm["eager"].tokens == ref
    if args.config == cl.CONFIG and not exact_eager:  # same weights, same 256x256 preprocessing: must agree
        raise cl.TokenMismatch(warm["eager"].tokens, ref)

    cpu0 = common.cpu_snapshot()
    log(f"timing the graphs alone ({args.op_repeat} runs each) ...")
    graph = {name: graph_times(pipe, image, args.op_repeat) for name, pipe in pipes.items()}
    runs = cl.interleave(runners, args.repeat, log)
    load_other = common.other_cpu_load(cpu0, common.cpu_snapshot())

    eager_s = statistics.median(r.total for r in runs["eager"])
    fp32_s = statistics.median(r.total for r in runs["onnx_fp32"])
    table = []
    for b in rows:
        e2e = statistics.median(r.total for r in runs[b.name])
        table.append({"name": b.name, "label": b.label, "format": b.fmt, "encoder": b.encoder, "decoder": b.decoder,
                      "options": b.options, **graph[b.name], "e2e_median_ms": 1e3 * e2e,
                      "e2e_min_ms": 1e3 * min(r.total for r in runs[b.name]),
                      "per_step_ms": 1e3 * statistics.median(r.decoding / r.steps for r in runs[b.name]),
                      "speedup_vs_fp32": fp32_s / e2e, "speedup_vs_eager": eager_s / e2e,
                      "tokens": common.agreement(ref, warm[b.name].tokens), "steps": warm[b.name].steps})
    fastest = min(table, key=lambda r: r["e2e_median_ms"])["name"]
    import onnxruntime
    import openvino

    from mmedge.runtime import profiler

    return {
        "benchmark": "precision_matrix", "model": "captioner", "config": args.config, "vocab_size": len(word_map),
        "beam": cl.BEAM, "steps": cl.STEPS, "repeat": args.repeat, "op_repeat": args.op_repeat,
        "calib_size": args.calib_size, "times": times,
        "machine": {"cpu": profiler.cpu_model(), "cpu_features": cpu.to_json(), "logical_cpus": os.cpu_count(),
                    "physical_cores": profiler.physical_cores(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__,
                    "threads": args.threads},
        "policy": {fmt: {**c.to_json(), "row": policy_row(rows, c)} for fmt, c in choices.items()},
        "eager": {"e2e_median_ms": 1e3 * eager_s, "e2e_min_ms": 1e3 * min(r.total for r in runs["eager"]),
                  "tokens_equal_fp32": exact_eager},
        "rows": table, "fastest": fastest, "other_cpu_load": load_other,
        "trusted": load_other is not None and load_other <= args.max_other_load,
        "max_other_load": args.max_other_load, "tokens": ref,
    }


# ===================================================================== report
def render(res: dict[str, Any]) -> str:
    m, pol = res["machine"], res["policy"]
    picks = {p["row"]: fmt for fmt, p in pol.items() if p["row"]}
    e = res["eager"]
    lines = [
        f"## Precision matrix: captioner {res['config']} (vocab {res['vocab_size']:,}), beam {res['beam']}, "
        f"{res['steps']} steps forced",
        "",
        f"Machine: {m['cpu']} - family **{m['cpu_features']['family']}** "
        f"({' '.join(m['cpu_features']['flags']) or 'no int8/bf16 matrix features'}); {m['logical_cpus']} logical "
        f"CPUs / {m['physical_cores']} cores; onnxruntime {m['onnxruntime']}, OpenVINO {m['openvino']}, "
        f"torch {m['torch']} (threads: {m['threads'] or 'default'}).",
        common.load_line(res["other_cpu_load"], m["logical_cpus"], res["max_other_load"]),
        f"Builds: fp32 export {res['times']['fp32_export_s']:.0f} s; calibration ({res['calib_size']} scenes) + "
        f"int8 builds {res['times']['calibration_and_int8_s']:.0f} s. Medians: graphs alone over "
        f"{res['op_repeat']} runs, end to end over {res['repeat']} interleaved runs.",
        "",
        "| build | encoder / decoder | encoder ms | decoder step ms | e2e median ms | e2e min ms "
        "| vs onnx fp32 | vs eager | tokens vs fp32 | |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        f"| tutorial eager (PyTorch) | fp32 / fp32 | | | {e['e2e_median_ms']:,.1f} | {e['e2e_min_ms']:,.1f} "
        f"| | 1.00x | {'identical' if e['tokens_equal_fp32'] else 'differ'} | |",
    ]
    for r in res["rows"]:
        tok = r["tokens"]
        same = "identical" if tok["equal"] else f"{tok['same_positions']}/{res['steps']}"
        notes = [w for w, on in (("**fastest**", r["name"] == res["fastest"]),
                                 (f"policy ({picks.get(r['name'])})", r["name"] in picks)) if on]
        lines.append(f"| {r['label']} | {r['encoder']} / {r['decoder']} | {r['encoder_ms']:,.1f} "
                     f"| {r['decoder_step_ms']:,.2f} | {r['e2e_median_ms']:,.1f} | {r['e2e_min_ms']:,.1f} "
                     f"| {r['speedup_vs_fp32']:.2f}x | {r['speedup_vs_eager']:.2f}x | {same} | {', '.join(notes)} |")
    lines.append("")
    for fmt, p in pol.items():
        row = next((r for r in res["rows"] if r["name"] == p["row"]), None)
        best = min((r for r in res["rows"] if r["format"] == fmt), key=lambda r: r["e2e_median_ms"])
        verdict = ("not built here" if row is None else "the fastest " + fmt + " build" if row is best
                   else f"{row['e2e_median_ms'] / best['e2e_median_ms']:.2f}x the time of the fastest {fmt} "
                   f"build ({best['label']})")
        lines.append(f"- `--precision auto` for {fmt}: {p['precision']} (encoder {p['encoder']}, decoder "
                     f"{p['decoder']}) - {p['reason']}. Here: {verdict}.")
    if res["config"] != cl.CONFIG:
        lines.append("- The eager loop preprocesses at 256x256 as the tutorial does; this config's image size "
                     "differs, so the eager column is not like for like.")
    if not res["trusted"]:
        lines.append("- **Preliminary**: other processes used the CPUs during the timed runs; rerun on an idle "
                     "machine before quoting these figures.")
    lines.append("- Random weights make near-ties: token agreement below 50/50 is expected for reduced "
                 "precision; accuracy is judged on the trained demo captioner (BLEU-4 in the int8 export report).")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.parser(
        "precision_matrix.py",
        "Captioner builds in every precision x backend offered here (ONNX Runtime, OpenVINO: fp32, "
        "bf16, int8, int8 encoder with weight-only int8 or fp32 decoder), timed per graph and end to "
        "end against fp32 and the tutorial's eager loop, with `--precision auto`'s choice marked.",
        "Exit status: 0 on success; 2 when the fp32 build's tokens differ from eager's (config full); "
        "3 with --check when other processes loaded the CPUs beyond --max-other-load.")
    p.add_argument("--config", default=cl.CONFIG, choices=zoo.get("captioner").configs,
                   help="captioner config (models/zoo.py); full is ResNet-101 @256")
    p.add_argument("--repeat", type=int, default=5, metavar="N", help="end-to-end runs per build after 1 warm-up")
    p.add_argument("--op-repeat", type=int, default=20, metavar="N", help="runs of each graph alone per build")
    p.add_argument("--calib-size", type=int, default=16, metavar="N", help="calibration scenes for int8 (>= 4)")
    p.add_argument("--onnx", type=Path, default=None, metavar="DIR",
                   help="start from this fp32 ONNX artifact of the same model (e.g. caption_latency.py --keep's) "
                        "instead of exporting; its tokens must match the eager loop's")
    common.add_common(
        p, threads="torch threads, ONNX Runtime intra-op and OpenVINO inference threads",
        check="exit 3 when the machine was loaded",
        max_other_load="CPUs other processes may keep busy during the timed runs before results are flagged",
        keep="keep the artifacts under DIR")
    args = p.parse_args(argv)
    common.at_least(p, args, repeat=1, op_repeat=1, calib_size=4, threads=1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = common.run_and_publish("precision_matrix", "the fp32 build's tokens differ from eager: ", args, run,
                                 common.workdir(args.keep, "precision_matrix_"), render, log)
    if res is None:
        return 2
    if args.check and not res["trusted"]:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
