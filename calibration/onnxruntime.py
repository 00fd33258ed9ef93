"""ONNX Runtime INT8: static QDQ quantization from the calibration set.

x86 layout by default: uint8 activations, int8 per-channel weights (the faster
layout on x86 for ResNet-101; int8 activations were not faster: README, INT8).
Graphs are pre-processed with ORT's quant_pre_process (shape inference and
optimisation) first. Decoder graphs quantize only their linear layers by
default, so the recurrent state and the softmaxes stay in float; weight-only
(dynamic) int8 is the alternative for them. Ranges are cached as ORT's JSON
calibration cache, keyed by model hash + data digest + method.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from mmedge.calibration.recipes import QuantConfig, QuantizeRequest, cache_dir, cache_key, register_recipe
from mmedge.errors import ExportError
from mmedge.runtime.manifest import GraphEntry
from mmedge.runtime.session import Feeds



class FeedsReader:
    """ONNX Runtime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self.feeds = feeds
        self._it: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.feeds[start_index:end_index])


# Weight-only int8 exists to cut the weight bytes a decoding step streams; a MatMul/Gemm whose weight
# has fewer elements than this saves nothing but still pays the dynamic quantization of its input
# (the attention's full_att, a 512 x 1 weight over a [rows, 196, 512] input: 0.094 ms of a 0.88 ms
# step on AMD EPYC Zen 3, the third-largest node).
MIN_DYNAMIC_WEIGHT_ELEMENTS = 1 << 16


def _nodes_to_exclude(model_path: Path, keep: tuple[str, ...], min_weight: int = 0) -> list[str]:
    """Nodes kept in float: named in `keep` (by name or op type), and MatMul/Gemm nodes whose constant
    weight has fewer than `min_weight` elements."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        small = (n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
                 and sizes.get(n.input[1], min_weight) < min_weight)
        if n.name in keep or n.op_type in keep or small:
            out.append(n.name)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger().setLevel(level)


def quantize_graph(src: Path, dst: Path, feeds: list[Feeds], cfg: QuantConfig, cache_file: Path,
                   decoder: bool, ops: list[str] | None) -> None:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="mmedge-quant-") as tmp, _quiet():
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        if decoder and cfg.dynamic_decoder:
            exclude = _nodes_to_exclude(pre, cfg.keep_float, MIN_DYNAMIC_WEIGHT_ELEMENTS)
            quantize_dynamic(str(pre), str(dst), op_types_to_quantize=ops, per_channel=cfg.per_channel,
                             weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
            return
        exclude = _nodes_to_exclude(pre, cfg.keep_float)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[cfg.method]
        extra = {"CalibPercentile": cfg.percentile} if cfg.method == "percentile" else {}
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(str(pre), str(dst), FeedsReader(feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=ops, per_channel=cfg.per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude, calibrate_method=method, extra_options=extra,
                        calibration_cache_path=str(cache_file))


@register_recipe("onnx")
def quantize_onnx_artifact(req: QuantizeRequest) -> list[GraphEntry]:
    """Write int8 QDQ versions of every graph of an fp32 ONNX artifact into `req.dest`."""
    fp32_dir, manifest, calib, dest, cfg = req.fp32_dir, req.manifest, req.calib, req.dest, req.cfg
    entries = []
    for g in manifest.graphs:
        feeds = calib.feeds.get(g.name)
        if not feeds:
            raise ExportError(f"no calibration feeds for graph {g.name!r}")
        cache_file = cache_dir(cfg) / f"ort-{cache_key(manifest.files[g.file], calib, cfg, g.name)}.json"
        out = dest / g.file
        try:
            quantize_graph(fp32_dir / g.file, out, feeds, cfg, cache_file, g.hints.decoder,
                           cfg.ops_for(manifest.pipeline, g.name))
        except Exception as e:  # ORT's quantizer internals: one line naming the graph
            msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise ExportError(f"int8 quantization of graph {g.name!r} failed: {msg[:300]}") from e
        entries.append(replace(g))  # same file name, interface and hints
    return entries


def copy_ranges_cache(src: Path, dst: Path) -> None:
    """Keep the calibration ranges with the artifact (TensorRT's cache is written from them)."""
    if src.is_file():
        shutil.copyfile(src, dst)


def ranges(cache_file: Path) -> dict[str, tuple[float, float]]:
    """tensor name -> (min, max) from ORT's JSON calibration cache."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(cache_file)
    out = {}
    for name, tr in data.data.items():
        lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in tr.range_value)
        out[name] = (float(lo.min()), float(hi.max()))
    return out
