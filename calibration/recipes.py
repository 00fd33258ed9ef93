"""INT8 recipes, one per target format, registered by name.

A recipe takes one QuantizeRequest (the fp32 artifact directory, the
calibration set gathered from it (calibration/data.py), the destination, the
QuantConfig, and the format's own export options and model where a backend
needs them) and writes the int8 model files into the destination directory,
returning their graph entries. Every recipe has that one signature, so the
caller passes the same request to each. Ranges are cached on disk by (model
hash, data digest, method) so that exporting for a second backend reuses them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Mapping

from mmedge.atomic import cache_home
from mmedge.calibration.data import CalibrationSet
from mmedge.errors import UnknownNameError
from mmedge.registry import Registry
from mmedge.runtime.manifest import Calibration, GraphEntry, Manifest
from mmedge.runtime.roles import DECODER_INIT, DECODER_QUANTIZE_OPS, DECODER_STEP

if TYPE_CHECKING:  # the export context carries a PyTorch model; the recipes that need none import no torch
    from mmedge.export.registry import ExportContext

METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantConfig:
    method: str = "minmax"
    per_channel: bool = True
    # node names or op types kept in float (the decoder's softmaxes by default)
    keep_float: tuple[str, ...] = ("Softmax", "LogSoftmax")
    # weight-only (dynamic) int8 for the decoder graphs instead of static QDQ
    dynamic_decoder: bool = False
    # op types to quantize per graph ("<pipeline>/<graph>" or "<graph>"); others: the backend's default.
    # The captioner's decoder keeps its recurrent state in float; the refocus network quantizes its
    # blur convolutions only (int8 element-wise masking was slower than fp32 and cost PSNR).
    op_types: tuple[tuple[str, tuple[str, ...]], ...] = (
        (DECODER_INIT, DECODER_QUANTIZE_OPS),
        (DECODER_STEP, DECODER_QUANTIZE_OPS),
        ("refocus/model", ("Conv",)),
    )
    cache_dir: Path | None = None
    percentile: float = 99.999

    def ops_for(self, pipeline: str, graph: str) -> list[str] | None:
        table = dict(self.op_types)
        ops = table.get(f"{pipeline}/{graph}", table.get(graph))
        return list(ops) if ops is not None else None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UnknownNameError("calibration method", self.method, METHODS)


def cache_dir(cfg: QuantConfig) -> Path:
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    return cache_home() / "calibration"


def cache_key(model_sha256: str, calib: CalibrationSet, cfg: QuantConfig, graph: str) -> str:
    text = f"{model_sha256}|{calib.digest}|{cfg.method}|{cfg.percentile}|{graph}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def calibration_record(calib: CalibrationSet, cfg: QuantConfig, dynamic_decoder: bool | None = None) -> Calibration:
    """What an int8 artifact's manifest records of its calibration (`extra.calibration`)."""
    return Calibration(data=calib.description, digest=calib.digest, method=cfg.method, per_channel=cfg.per_channel,
                       keep_float=list(cfg.keep_float),
                       dynamic_decoder=cfg.dynamic_decoder if dynamic_decoder is None else dynamic_decoder)


@dataclass(frozen=True)
class QuantizeRequest:
    """What every int8 recipe gets; each reads the fields its backend needs."""

    fp32_dir: Path  # the fp32 ONNX artifact every recipe starts from
    manifest: Manifest  # its manifest
    calib: CalibrationSet  # gathered through the runtime from that artifact
    dest: Path  # where the int8 model files go
    cfg: QuantConfig
    options: Mapping[str, Any] = field(default_factory=dict)  # the format's own -o options (TensorRT, Core ML)
    # the export context, when the PyTorch model is at hand (Core ML converts from torch, not ONNX);
    # None: a recipe that needs the model rebuilds it from the manifest
    ctx: ExportContext | None = None


Recipe = Callable[[QuantizeRequest], List[GraphEntry]]
# one recipe module per backend, keyed by the artifact format it writes
RECIPES: Registry[Recipe] = Registry("int8 recipe for format", modules=tuple(
    f"mmedge.calibration.{m}" for m in ("onnxruntime", "openvino", "coreml", "tensorrt")))
register_recipe = RECIPES.register
recipe = RECIPES.get


@dataclass
class GraphCalibration:
    """Where one graph's ranges live (the ORT JSON cache) — reused by other recipes."""

    graph: str
    path: Path
    hit: bool = False
    extra: dict = field(default_factory=dict)
