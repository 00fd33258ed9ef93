"""TensorRT's text calibration cache, and how an int8 artifact says it carries them.

The cache is what `trtexec --int8 --calib=FILE` (and the engine builder's
calibrator) reads with the fp32 ONNX on TensorRT <= 10: header
`TRT-<version int>-<calibrator>`, then `tensor: <scale>` with the scale as the
big-endian IEEE float32 bit pattern in 8 hex digits; scale = max(|min|, |max|) / 127.

It lives in the export layer, the lowest that needs it: the engine builder
(`export/tensorrt.py`) retargets a cache to the TensorRT that builds, the Jetson
packager finds an artifact's caches, and the TensorRT int8 recipe
(`calibration/tensorrt.py`, a layer above) writes them.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from mmedge.atomic import write_atomic
from mmedge.errors import ArtifactError, ExportError, InputError
from mmedge.runtime.manifest import Manifest, read_manifest
from mmedge.runtime.manifest_sections import INT8_LAYOUT_TENSORRT

# The calibrator `trtexec --calib` reads the cache with (its internal calibrator is an
# IInt8EntropyCalibrator2): a header naming another algorithm makes TensorRT recalibrate
# on trtexec's random data instead of using the cache. The statistics themselves are
# mmedge's (minmax, entropy or percentile ranges), whatever the header says.
CACHE_CALIBRATOR = "EntropyCalibration2"
# Header version of the cache files written at export. TensorRT checks it against its own
# version, so build_engines.sh writes a copy with the board's version before using it.
CACHE_TRT_VERSION = "8.5.2"  # JetPack 5.1
CACHE_SUFFIX = ".calib"
INT8_LAYOUT = INT8_LAYOUT_TENSORRT  # the manifest's extra.int8_layout of int8 artifacts in TensorRT's Q/DQ layout

_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


def trt_version_int(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION for "8.5.2" (8502) or "10.3.0" (100300).

    Major < 10: major*1000 + minor*100 + patch; from 10 on: major*10000 + minor*100 + patch.
    """
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]]
    if not parts:
        raise InputError(f"not a TensorRT version: {version!r} (expected e.g. 8.5.2 or 10.3)")
    major, minor, patch = (parts + [0, 0])[:3]
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def trt_version_str(number: int) -> str:
    """Inverse of `trt_version_int`: 8502 -> "8.5.2", 100300 -> "10.3.0"."""
    if number >= 100000:
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"


def scale_of(lo: float, hi: float) -> float:
    """TensorRT's symmetric int8 scale of a range, rounded to float32."""
    return float(np.float32(max(abs(lo), abs(hi))) / np.float32(127.0))


def cache_scales(ranges: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """tensor -> scale; tensors with an all-zero range have no scale (TensorRT keeps them in float)."""
    return {name: scale_of(lo, hi) for name, (lo, hi) in sorted(ranges.items()) if max(abs(lo), abs(hi)) > 0}


def format_calibration_cache(ranges: Mapping[str, tuple[float, float]], version: str = CACHE_TRT_VERSION,
                             calibrator: str = CACHE_CALIBRATOR) -> str:
    lines = [f"TRT-{trt_version_int(version)}-{calibrator}"]
    for name, scale in cache_scales(ranges).items():
        if "\n" in name:
            raise ExportError(f"tensor name {name!r} cannot be written to a TensorRT calibration cache")
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def write_calibration_cache(ranges: Mapping[str, tuple[float, float]], path: Path,
                            version: str = CACHE_TRT_VERSION, calibrator: str = CACHE_CALIBRATOR) -> Path:
    """Write TensorRT's text calibration cache for `ranges` (tensor -> (min, max)) atomically."""
    return write_atomic(path, format_calibration_cache(ranges, version, calibrator), encoding="ascii")


def read_calibration_cache(path: Path) -> tuple[str, str, dict[str, float]]:
    """(TensorRT version, calibrator, tensor -> scale) of a TensorRT text calibration cache."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read a TensorRT calibration cache ({e.__class__.__name__})") from None
    head = _HEADER.match(lines[0].strip()) if lines else None
    if head is None:
        raise InputError(f"{path}: not a TensorRT calibration cache (expected a first line like "
                         f"TRT-8502-{CACHE_CALIBRATOR})")
    scales: dict[str, float] = {}
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        m = _LINE.match(line.rstrip())
        if m is None:
            raise InputError(f"{path}:{i}: expected 'tensor: <8 hex digits>', got {line[:80]!r}")
        scales[m.group(1)] = struct.unpack(">f", bytes.fromhex(m.group(2)))[0]
    return trt_version_str(int(head.group(1))), head.group(2), scales


def retarget_cache(src: Path, dst: Path, version: str) -> Path:
    """Copy of a calibration cache whose header carries TensorRT `version` (values unchanged)."""
    read_calibration_cache(src)  # refuse anything that is not a cache
    lines = Path(src).read_text(encoding="ascii").splitlines(keepends=True)
    calibrator = _HEADER.match(lines[0].strip()).group(2)  # type: ignore[union-attr]
    Path(dst).write_text(f"TRT-{trt_version_int(version)}-{calibrator}\n" + "".join(lines[1:]), encoding="ascii")
    return Path(dst)


# ------------------------------------------------------------------ int8 artifacts that carry caches
def is_tensorrt_int8(manifest: Manifest) -> bool:
    """An int8 artifact in TensorRT's Q/DQ layout, with a calibration cache per graph."""
    return manifest.precision == "int8" and manifest.extra.int8_layout == INT8_LAYOUT


def caches_of(artifact_dir: Path) -> dict[str, Path]:
    """graph -> TensorRT calibration cache of an int8 artifact in TensorRT's layout."""
    m = read_manifest(artifact_dir)
    if not is_tensorrt_int8(m):
        raise ArtifactError(f"{artifact_dir}: not an int8 artifact in TensorRT's layout")
    return {g: Path(artifact_dir) / f for g, f in (m.extra.tensorrt_calibration_cache or {}).items()}
