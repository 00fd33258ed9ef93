"""`mmedge package TARGET`: the packagers (export/) bundle; where a bundle needs int8, calibration quantizes.

A Jetson bundle carries int8 graphs in TensorRT's layout, quantized from the fp32
ONNX artifacts it is given. Quantizing needs calibration data, a layer above the
packagers, so `package()` hands the Jetson packager its quantize step (the
`quantize` option), built from the `calib` (CalibSource) and `quant`
(QuantConfig) options. The other targets are passed through unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mmedge.export.package import PackageRequest, packager

if TYPE_CHECKING:
    from mmedge.export.jetson import Quantize


def package(target: str, req: PackageRequest) -> Path:
    """Bundle (or with the `verify` option re-check) artifacts for `target`; returns the bundle."""
    fn = packager(target)  # an unknown target fails naming the valid ones
    if target == "jetson" and req.options.get("verify") is None and "quantize" not in req.options:
        req = replace(req, options={**req.options, "quantize": tensorrt_quantizer(req.options)})
    return fn(req)


def tensorrt_quantizer(options: dict[str, Any]) -> Quantize:
    """The Jetson packager's int8 step: `quantize_artifact` with the package's calibration settings."""
    calib, quant = options.get("calib"), options.get("quant")

    def quantize(fp32_dir: Path, dest: Path, log: Callable[[str], None]) -> Path:
        from mmedge.calibration.tensorrt import quantize_artifact  # ONNX Runtime's quantizer, when int8 is built

        return quantize_artifact(fp32_dir, dest, calib, quant, log)

    return quantize
