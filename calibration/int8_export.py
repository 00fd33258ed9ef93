"""`mmedge export --precision int8`: fp32 ONNX -> calibration data -> one int8 artifact per format.

An int8 export needs calibration data, the per-backend recipes and the accuracy
report, all of this layer, so it lives here rather than in the exporter
registry below: `export()` takes a request of any precision, hands fp32/fp16 to
`mmedge.export.registry.export` and does int8 itself. Both return an
ExportResult; the int8 accuracy reports travel in it, not in module state.

Every recipe starts from the same fp32 ONNX graphs and the same calibration set,
so the backends' int8 builds are comparable, and every recipe gets the same
QuantizeRequest.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from mmedge.calibration.data import CalibrationSet, CalibSource, gather, preflight
from mmedge.calibration.recipes import QuantConfig, QuantizeRequest, Recipe, calibration_record, recipe
from mmedge.errors import ExportError
from mmedge.export import registry
from mmedge.export.artifact import atomic_dir, finish, tool_versions
from mmedge.export.registry import ExportContext, ExportRequest, ExportResult
from mmedge.runtime.manifest import TEST_VECTORS, Manifest, read_manifest

if TYPE_CHECKING:  # the report module is imported where a report is built
    from mmedge.calibration.report import Int8Report
    from mmedge.runtime.pipelines import Pipeline

Log = Callable[[str], None]


def export(req: ExportRequest, log: Log = lambda s: None) -> ExportResult:
    """Export one model to every requested format in any precision (the CLI's and demo's entry point)."""
    if req.precision != "int8":
        return registry.export(req, log)
    return export_int8(registry.prepare(req), req, log)


def export_int8(ctx: ExportContext, req: ExportRequest, log: Log = lambda s: None) -> ExportResult:
    """int8 artifacts of an already-built model; the accuracy report (fp32 vs int8) of each is stored
    in its manifest under extra.int8_report and returned in the result."""
    from mmedge.runtime.pipelines import load

    calib_src = req.calib or CalibSource()
    qcfg = req.quant or QuantConfig()
    recipes = {f: recipe(f) for f in req.formats}  # unknown recipe fails before any work
    preflight(calib_src, ctx.spec.pipeline, ctx.spec.preprocessing(ctx.config), ctx.model_extra().min_samples or 0)
    fp32_ctx = replace(ctx, precision="fp32", options=registry.EXPORTERS.get("onnx").options.select(ctx.options))
    vectors = registry.test_vectors(fp32_ctx)
    written: list[Path] = []
    reports: list[Int8Report] = []
    with tempfile.TemporaryDirectory(prefix="mmedge-fp32-") as work:
        fp32_dir = registry.export_context(fp32_ctx, ["onnx"], Path(work), log).artifacts[0]
        fp32 = load(fp32_dir)
        log(f"calibrating on {calib_src.folder or 'the demo generator'} ({calib_src.size} samples, {qcfg.method})")
        calib = gather(fp32, calib_src)
        for fmt, fn in recipes.items():
            dest = Path(req.out) / registry.artifact_name(ctx, fmt)
            if fmt == "onnx" and ctx.options.get("target") == "tensorrt":
                written.append(_tensorrt_layout(ctx, fp32_dir, dest, calib_src, qcfg, log))
                continue
            log(f"quantizing {ctx.spec.name} ({ctx.config_name}) to {fmt} int8 -> {dest}")
            with atomic_dir(dest) as tmp:
                manifest = _quantize(ctx, fmt, fn, fp32, fp32_dir, calib, tmp, qcfg, vectors)
                rep = _measure(fmt, fp32, tmp, manifest, dest, req.report, log, req.report_scenes)
                if rep is not None:
                    reports.append(rep)
            written.append(dest)
    return ExportResult(written, reports)


def _tensorrt_layout(ctx: ExportContext, fp32_dir: Path, dest: Path, calib_src: CalibSource, qcfg: QuantConfig,
                     log: Log) -> Path:
    """--format onnx --target tensorrt: ONNX Runtime's x86 layout (uint8 activations) does not build on
    TensorRT 8.5; the TensorRT recipe's symmetric int8 Q/DQ graphs (with calibration caches) do."""
    from mmedge.calibration.tensorrt import quantize_artifact

    log(f"--target tensorrt: quantizing {ctx.spec.name} to int8 in TensorRT's layout -> {dest}")
    quantize_artifact(fp32_dir, dest, calib_src, qcfg, log)
    try:
        registry.check_target(ctx, "onnx", dest, read_manifest(dest).graphs, log)
    except ExportError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _quantize(ctx: ExportContext, fmt: str, fn: Recipe, fp32: Pipeline, fp32_dir: Path, calib: CalibrationSet,
              tmp: Path, qcfg: QuantConfig, vectors: dict[str, np.ndarray]) -> Manifest:
    """Run one recipe into `tmp` and write the artifact's test vectors and manifest."""
    own = registry.own_options(ctx, registry.EXPORTERS.get(fmt))  # the format's -o options and the model
    graphs = fn(QuantizeRequest(fp32_dir, fp32.manifest, calib, tmp, qcfg, own.options, own))
    np.savez_compressed(tmp / TEST_VECTORS, **vectors)
    src = fp32.manifest
    # tools: the fp32 ONNX source's (onnxslim too), then the quantizer's
    tools = {**src.tools, **tool_versions("torch", "onnx", "onnxruntime")}
    extra = replace(src.extra, calibration=calibration_record(calib, qcfg)).merged(ctx.manifest_extra.get(fmt))
    # the fp32 source's model description, as written (the same export); the catalog's graph hints
    manifest = src.derive(format=fmt, precision="int8", graphs=registry.with_hints(ctx.spec, graphs), tools=tools,
                          extra=extra)
    finish(tmp, manifest)
    return manifest


def _measure(fmt: str, fp32: Pipeline, tmp: Path, manifest: Manifest, dest: Path, report: bool,
             log: Log, scenes: int = 100) -> Int8Report | None:
    """The accuracy report of the artifact in `tmp` (stored in its manifest), or None where it is not
    asked for or its backend cannot run here."""
    from mmedge.runtime.pipelines import load
    from mmedge.runtime.session import available, backend_for_format

    if not report:
        return None
    if not available(backend_for_format(fmt)):
        log(f"no accuracy report for {fmt}: its backend cannot run on this machine")
        return None
    from mmedge.calibration.report import build_report

    log("measuring int8 vs fp32 (held-out samples, task metric, speed)")
    rep = build_report(fp32, load(tmp), limit=scenes)
    rep.fp32, rep.int8 = "fp32 (onnx)", str(dest)
    manifest.extra.int8_report = rep.to_json()
    finish(tmp, manifest)
    return rep
