"""TensorRT INT8: Q/DQ ONNX in the layout TensorRT fuses, and TensorRT's calibration cache.

Two products of one calibration, both usable from TensorRT 8.5 (JetPack 5) to 11:

- **Q/DQ ONNX** (explicit quantization): int8 per-tensor *symmetric* activations
  and int8 per-channel symmetric weights, zero points 0 — the only Q/DQ form
  TensorRT's ONNX parser accepts (ONNX Runtime's x86 layout, uint8 activations
  with zero points, is refused by it). Weights stay float behind a Q/DQ pair
  (every TensorRT release parses that), biases stay float (TensorRT has no
  int32 DequantizeLinear). It is the only int8 input TensorRT 11 takes
  (strongly typed networks).
- **Calibration cache** in TensorRT's text format, for `trtexec --int8
  --calib=FILE` with the fp32 ONNX on TensorRT <= 10 (implicit quantization;
  the calibrator classes are deprecated since 10.1 and gone in 11). It is the
  int8 path for Jetson's DLA cores. The file format (and reading it back) is
  `mmedge.export.trt_cache`, one layer down, where the engine builder and the
  Jetson packager use it too.

Both come from the same statistics as the ONNX Runtime recipe: the same
CalibrationSet, the same pre-processing and op types, and ORT's JSON
calibration cache under the same key (model hash + data digest + method), so a
model calibrated once for ONNX Runtime is not calibrated again for TensorRT.
The activation scales in the Q/DQ graph equal the cache's values, except for
tensors feeding a ReLU, which ORT quantizes with the ReLU's output range (the
Conv+ReLU fusion TensorRT makes as well).

The recipe registered as `tensorrt` also builds engines (needs a GPU:
`mmedge.export.tensorrt`); `quantize_artifact()` writes the Q/DQ graphs and
caches as an int8 *ONNX* artifact without one (ONNX Runtime runs it too),
which is what a Jetson bundle carries to the board.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from mmedge.calibration.onnxruntime import _quiet  # one place silences ORT's quantizer logging
from mmedge.calibration.data import CalibrationSet, CalibSource
from mmedge.calibration.recipes import (QuantConfig, QuantizeRequest, cache_dir, cache_key, calibration_record,
                                        register_recipe)
from mmedge.errors import ExportError, InputError
# The cache format and the int8-layout marker live one layer down (export/trt_cache.py), where
# the engine builder and the Jetson packager read them; re-exported here for this recipe's callers.
from mmedge.export.trt_cache import (CACHE_CALIBRATOR, CACHE_SUFFIX, CACHE_TRT_VERSION,  # noqa: F401
                                     INT8_LAYOUT, cache_scales, caches_of, format_calibration_cache,
                                     is_tensorrt_int8, read_calibration_cache, retarget_cache, scale_of,
                                     trt_version_int, trt_version_str, write_calibration_cache)
from mmedge.runtime.manifest import GraphEntry, Manifest


# ------------------------------------------------------------------ Q/DQ for TensorRT
def qdq_extra_options(cfg: QuantConfig) -> dict[str, Any]:
    """ORT quantizer options for TensorRT's layout."""
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,  # zero point 0: the only Q/DQ TensorRT parses
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT has no int32 DequantizeLinear; it fuses float biases
        "AddQDQPairToWeight": True,  # float weight -> Q -> DQ: parsed by every TensorRT from 8.0 on
    }
    if cfg.method == "percentile":
        extra["CalibPercentile"] = cfg.percentile
    return extra


def quantize_graph(src: Path, dst: Path, feeds: list, cfg: QuantConfig, cache_file: Path,
                   ops: list[str] | None) -> None:
    """fp32 ONNX -> Q/DQ ONNX for TensorRT, calibrating through (or reading) ORT's JSON cache.

    Same pre-processing and op types as the ONNX Runtime recipe, so both read and write
    the same cache entry; only the quantized layout differs.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mmedge.calibration.onnxruntime import FeedsReader

    import onnx

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.method]
    with tempfile.TemporaryDirectory(prefix="mmedge-trt-quant-") as tmp, _quiet():
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre), load_external_data=False).graph
        exclude = [n.name for n in graph.node if n.name in cfg.keep_float or n.op_type in cfg.keep_float]
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(str(pre), str(dst), FeedsReader(feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=ops, per_channel=cfg.per_channel,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude, calibrate_method=method, extra_options=qdq_extra_options(cfg),
                        calibration_cache_path=str(cache_file))


def ranges_cache_file(manifest: Manifest, graph: GraphEntry, calib: CalibrationSet, cfg: QuantConfig) -> Path:
    """ORT's JSON range cache of a graph: the same file the ONNX Runtime recipe uses."""
    return cache_dir(cfg) / f"ort-{cache_key(manifest.files[graph.file], calib, cfg, graph.name)}.json"


def quantize_tensorrt(fp32_dir: Path, manifest: Manifest, calib: CalibrationSet, dest: Path,
                      cfg: QuantConfig) -> list[GraphEntry]:
    """Q/DQ ONNX (`<graph>.onnx`) and TensorRT calibration cache (`<graph>.calib`) of every graph."""
    from mmedge.calibration.onnxruntime import ranges

    if cfg.dynamic_decoder:
        raise ExportError("--dynamic-decoder (weight-only int8) is an ONNX Runtime option: TensorRT has no "
                          "dynamic quantization (DynamicQuantizeLinear); drop it for TensorRT")
    if manifest.format != "onnx" or manifest.precision != "fp32":
        raise InputError(f"TensorRT int8 starts from an fp32 ONNX artifact, got {manifest.format} "
                         f"{manifest.precision}")
    dest.mkdir(parents=True, exist_ok=True)
    entries = []
    for g in manifest.graphs:
        feeds = calib.feeds.get(g.name)
        if not feeds:
            raise ExportError(f"no calibration feeds for graph {g.name!r}")
        cache_file = ranges_cache_file(manifest, g, calib, cfg)
        out = dest / f"{g.name}.onnx"
        try:
            quantize_graph(fp32_dir / g.file, out, feeds, cfg, cache_file, cfg.ops_for(manifest.pipeline, g.name))
        except Exception as e:  # ORT's quantizer internals: one line naming the graph
            msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise ExportError(f"TensorRT int8 quantization of graph {g.name!r} failed: {msg[:300]}") from e
        write_calibration_cache(ranges(cache_file), dest / f"{g.name}{CACHE_SUFFIX}")
        entries.append(replace(g, file=out.name))
    return entries


def calibration_extra(calib: CalibrationSet, cfg: QuantConfig, entries: list[GraphEntry]) -> dict[str, Any]:
    """The extra fields of an int8 artifact in TensorRT's layout: its calibration, the layout, the caches."""
    return {"calibration": calibration_record(calib, cfg, dynamic_decoder=False), "int8_layout": INT8_LAYOUT,
            "tensorrt_calibration_cache": {e.name: f"{e.name}{CACHE_SUFFIX}" for e in entries}}


def quantize_artifact(fp32_dir: Path, dest: Path, source: CalibSource | None = None,
                      cfg: QuantConfig | None = None, log: Any = lambda s: None) -> Path:
    """An int8 ONNX artifact in TensorRT's layout from an fp32 ONNX artifact (no GPU needed).

    Holds the Q/DQ graphs, their TensorRT calibration caches and the fp32 artifact's test
    vectors; ONNX Runtime runs it too (`mmedge parity` works on it anywhere).
    """
    from mmedge.calibration.data import gather
    from mmedge.export.artifact import atomic_dir, finish, tool_versions
    from mmedge.runtime.pipelines import load

    fp32_dir, dest = Path(fp32_dir), Path(dest)
    source, cfg = source or CalibSource(), cfg or QuantConfig()
    fp32 = load(fp32_dir, "onnxruntime")
    m = fp32.manifest
    if m.format != "onnx" or m.precision != "fp32":
        raise InputError(f"{fp32_dir}: TensorRT int8 starts from an fp32 ONNX artifact, this one is "
                         f"{m.format} {m.precision}")
    log(f"calibrating {m.model} ({m.config}) for TensorRT on {source.folder or 'the demo generator'} "
        f"({source.size} samples, {cfg.method})")
    calib = gather(fp32, source)
    with atomic_dir(dest) as tmp:
        entries = quantize_tensorrt(fp32_dir, m, calib, tmp, cfg)
        vec = m.extra.vectors_file
        if (fp32_dir / vec).is_file():
            shutil.copyfile(fp32_dir / vec, tmp / vec)
        finish(tmp, m.derive(precision="int8", graphs=entries, tools=tool_versions("onnx", "onnxruntime"),
                             extra=m.extra.merged(calibration_extra(calib, cfg, entries))))
    return dest


@register_recipe("tensorrt")
def tensorrt_recipe(req: QuantizeRequest) -> list[GraphEntry]:
    """int8 TensorRT artifact: Q/DQ ONNX + caches under onnx/, engines built from them (needs a GPU)."""
    from mmedge.export import tensorrt as engines

    fp32_dir, manifest, calib, dest, cfg = req.fp32_dir, req.manifest, req.calib, req.dest, req.cfg
    settings = engines.settings_from_options(dict(req.options), "int8")  # its build options (-o)
    engines.require_gpu()  # before any quantization work
    onnx_dir = dest / engines.ONNX_DIR
    qdq = quantize_tensorrt(fp32_dir, manifest, calib, onnx_dir, cfg)
    shapes = engines.example_shapes_from_vectors(fp32_dir / manifest.extra.vectors_file)
    fp32_sources = {g.name: fp32_dir / g.file for g in manifest.graphs}
    return engines.build_artifact_engines(qdq, onnx_dir, dest, manifest, shapes, settings,
                                          fp32_sources=fp32_sources)
