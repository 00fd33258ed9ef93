"""INT8 vs fp32 for every model and int8 format: accuracy and speed, one run.

    python benchmarks/int8_report.py [--models captioner:full,captioner:demo,...] [--calib-size 32]
                                     [--formats onnx,openvino] [--dynamic-decoder] [--markdown OUT.md]
                                     [--json OUT.json]

Every format's int8 build starts from the same fp32 ONNX graphs and the same
calibration set; the fp32 side of every row is the fp32 ONNX artifact on ONNX
Runtime, the int8 side runs on the format's own backend (OpenVINO for openvino).

For each model: exports fp32 and int8 (calibrated on the demo generators' train
split), then the accuracy report of the calibration subsystem: cosine / max error
per graph output on held-out samples, the task metric (BLEU-4 at beam 3 and caption
agreement, top-1, PSNR) on the test split, and the median latency per graph.
The full captioner has random weights (no task metric); its encoder is ResNet-101.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

DEFAULT = "captioner:full,captioner:demo,soundnet:demo,voice-encoder:demo,refocus:full"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT, help=f"model:config list (default {DEFAULT})")
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    ap.add_argument("--formats", default="onnx", help="int8 formats, comma-separated (default onnx; "
                    "onnx,openvino adds the NNCF rows)")
    ap.add_argument("--scenes", type=int, default=300,
                    help="test items the task metrics are measured on (default 300: a BLEU-4 difference of one "
                         "point is within the noise of 100 scenes)")
    ap.add_argument("--dynamic-decoder", action="store_true",
                    help="quantize the decoder's weights only (int8 weights, float activations): the decoder of "
                         "the fastest ONNX Runtime build on x86-avx2 (benchmarks/precision_matrix.py)")
    ap.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    ap.add_argument("--json", type=Path, help="also write the reports as JSON here")
    args = ap.parse_args(argv)
    if args.scenes < 1 or args.calib_size < 1:
        ap.error("--scenes and --calib-size must be >= 1")

    import onnxruntime

    from mmedge.calibration import int8_export
    from mmedge.calibration.data import CalibSource
    from mmedge.calibration.recipes import QuantConfig
    from mmedge.export import registry

    reports = []
    with tempfile.TemporaryDirectory(prefix="mmedge-int8-bench-") as tmp:
        for item in args.models.split(","):
            model, _, config = item.partition(":")
            print(f"[int8] {model} ({config})", file=sys.stderr, flush=True)
            formats = [f.strip() for f in args.formats.split(",") if f.strip()]
            req = registry.ExportRequest(model, formats, "int8", config or "demo", out=Path(tmp),
                                         calib=CalibSource(None, args.calib_size),
                                         quant=QuantConfig(method=args.method, cache_dir=Path(tmp) / "cache",
                                                           dynamic_decoder=args.dynamic_decoder),
                                         report_scenes=args.scenes)
            done = int8_export.export(req, log=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
            for fmt, rep in zip(formats, done.reports):
                reports.append((f"{model}:{config}", fmt, rep))
    lines = [f"ONNX Runtime {onnxruntime.__version__}, {platform.processor() or platform.machine()}, "
             f"calibration: {args.calib_size} samples, {args.method}"
             f"{'; decoder: int8 weights only' if args.dynamic_decoder else ''}; task metrics on {args.scenes} test items; "
             "fp32 = ONNX Runtime", "",
             "| model | int8 format | graph | fp32 ms | int8 ms | speed-up | min cosine | task metric | fp32 | int8 |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for name, fmt, rep in reports:
        tasks = list(rep.task.items()) or [("-", {"fp32": float("nan"), "int8": float("nan")})]
        graphs = list(rep.speed.items())
        for i in range(max(len(graphs), len(tasks))):  # a row per graph and per task metric
            timing = "| | | | |"
            g = ""
            if i < len(graphs):
                g, sp = graphs[i]
                cos = min(o.cosine for o in rep.outputs if o.graph == g)
                timing = f"| {sp['fp32_ms']:.2f} | {sp['int8_ms']:.2f} | {sp['speedup']:.2f}x | {cos:.4f} |"
            metric, vals = tasks[i] if i < len(tasks) else ("", None)
            fp, q = (f"{vals['fp32']:.4f}", f"{vals['int8']:.4f}") if vals and vals["fp32"] == vals["fp32"] else ("", "")
            lines.append(f"| {name if i == 0 else ''} | {fmt if i == 0 else ''} | {g} {timing} {metric} | {fp} | {q} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({f"{n}:{f}": r.to_json() for n, f, r in reports}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
