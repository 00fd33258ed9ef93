#!/usr/bin/env python
"""Out-of-style robustness of the demo audio models: top-1 per condition x model, one run.

    python benchmarks/audio_robustness.py [--limit 100] [--conditions in-style,snr-0,...]
        [--artifact DIR ...] [--pytorch] [--markdown OUT.md] [--json OUT.json]

Both demo audio models (SoundNet-8 and the voice encoder, `--config demo`, the shipped
weights) are exported to ONNX fp32 in a temporary directory (or `--artifact DIR`, once per
model, names existing exports) and run by the torch-free runtime on ONNX Runtime; `--pytorch`
adds the PyTorch reference of each as a column.  Every condition of
`mmedge.data.sound_variants.CONDITIONS` (or `--conditions`: names or ``key=value`` specs)
derives its clips from the first `--limit` test clips (100 = 10 per class): other noise levels
and colours, gains (overdriven = clipped), lengths down to the manifest's `min_samples`, and
clips recorded at 8 or 44.1 kHz resampled by the runtime.  "in-style" is the test clip as is.

Accuracy does not depend on the machine's load; the CPU (`profiler.cpu_model()`) and the load
from other processes are recorded all the same, as every benchmark here does.  Progress goes to
stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from mmedge.calibration.eval_audio_robustness import (evaluate_audio_robustness, model_min_samples,
                                                      resolve_conditions)
from mmedge.data import sound_variants
from mmedge.errors import MmedgeError
from mmedge.runtime import profiler

MODELS = ("soundnet", "voice-encoder")
WEAK = 0.9  # top-1 below which a cell's most frequent confusions are listed under the table


def log(msg: str) -> None:
    print(f"[audio_robustness] {msg}", file=sys.stderr, flush=True)


def load_predictors(artifacts: list[Path], pytorch: bool, tmp: Path) -> dict[str, Any]:
    """Column name -> predictor: each demo model's ONNX fp32 build (exported here unless given)."""
    from mmedge import runtime

    given = {}
    for path in artifacts:
        pipe = runtime.load(path, backend="onnxruntime")
        if pipe.manifest.model not in MODELS:
            raise MmedgeError(f"{path}: a {pipe.manifest.model} artifact; expected one of {', '.join(MODELS)}")
        given[pipe.manifest.model] = pipe
    columns: dict[str, Any] = {}
    for name in MODELS:
        if name not in given:
            from mmedge.export.registry import ExportRequest, export

            log(f"exporting {name} (demo) to ONNX fp32")
            given[name] = runtime.load(export(ExportRequest(name, ["onnx"], config="demo", out=tmp)).artifacts[0],
                                       backend="onnxruntime")
        columns[f"{name} onnx fp32"] = given[name]
        if pytorch:
            from mmedge.calibration.eval_audio import TorchAudioPredictor

            columns[f"{name} pytorch"] = TorchAudioPredictor(name, "demo")
    return columns


def render(table: dict[str, dict[str, Any]], conditions: dict[str, Any], meta: dict[str, Any]) -> str:
    cols = list(table)
    lines = [f"Top-1 on {meta['limit']} test clips per condition ({meta['per_class']} per class); "
             f"CPU: {meta['cpu']}; ONNX Runtime {meta['onnxruntime']}", "",
             "| condition | what changes | " + " | ".join(cols) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in cols) + " |"]
    for name, cond in conditions.items():
        cells = [f"{table[c][name].metrics['top1']:.2f}" for c in cols]
        lines.append(f"| {name} | {cond.describe()} | " + " | ".join(cells) + " |")
    weak = []
    for c in cols:
        for name in conditions:
            r = table[c][name]
            if r.metrics["top1"] < WEAK and r.details["top_confusions"]:
                top = r.details["top_confusions"][:3]
                conf = ", ".join(f"{t['true']}->{t['predicted']} x{t['count']}" for t in top)
                weak.append(f"- {c}, {name} ({r.metrics['top1']:.2f}): {conf}")
    if weak:
        lines += ["", f"Most frequent confusions where top-1 < {WEAK}:", *weak]
    lines += ["", "len-min: " + ", ".join(f"{c} {m['samples']} samples ({m['samples'] / m['sample_rate']:.3f} s)"
                                       for c, m in meta["min_samples"].items())]
    load = meta["other_cpu_load"]
    lines += ["", f"other processes kept {'?' if load is None else f'{load:.2f}'} CPUs busy during the run "
              "(recorded only: accuracy does not depend on it)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--limit", type=int, default=100, help="test clips per condition (default 100 = 10 per class)")
    ap.add_argument("--conditions", default=",".join(sound_variants.CONDITIONS),
                    help="comma-separated condition names (default: all)")
    ap.add_argument("--artifact", type=Path, action="append", default=[],
                    help="an existing soundnet / voice-encoder ONNX artifact (repeatable)")
    ap.add_argument("--pytorch", action="store_true", help="also evaluate the PyTorch references")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    ap.add_argument("--json", type=Path, help="also write every result (with confusions) here as JSON")
    args = ap.parse_args(argv)
    if args.limit < 1:
        ap.error("--limit must be >= 1")
    import numpy as np
    import onnxruntime

    try:
        conditions = resolve_conditions([c.strip() for c in args.conditions.split(",") if c.strip()])
        with tempfile.TemporaryDirectory(prefix="mmedge-audio-robust-") as tmp:
            columns = load_predictors(args.artifact, args.pytorch, Path(tmp))
            before = profiler.cpu_snapshot()
            table = {}
            for col, predictor in columns.items():
                log(f"{col}: {len(conditions)} conditions x {args.limit} clips")
                table[col] = evaluate_audio_robustness(predictor, conditions, args.limit, progress=True)
            load = profiler.other_cpu_load(before, profiler.cpu_snapshot())
    except MmedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = {"cpu": profiler.cpu_model(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__, "limit": args.limit,
            "per_class": f"{args.limit / 10:g}",
            "min_samples": {col: {"samples": model_min_samples(p), "sample_rate": int(p.preprocessing["sample_rate"])}
                            for col, p in columns.items()},
            "other_cpu_load": None if load is None else round(load, 3)}
    text = render(table, conditions, meta)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        doc = {"meta": meta, "conditions": {n: c.describe() for n, c in conditions.items()},
               "results": {col: {n: r.to_json() for n, r in rows.items()} for col, rows in table.items()}}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
