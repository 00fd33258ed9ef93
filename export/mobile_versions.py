"""What a mobile bundle's models need on the device, read from the files themselves (torch-free,
no coremltools, no onnxruntime needed to read).

* Android: an `.ort` file is a FlatBuffer whose root `InferenceSession` table starts with
  `ort_version`, the ORT *format* version (a string, "6" from onnxruntime 1.16 on), under the
  file identifier `ORTM` (onnxruntime/core/flatbuffers/schema/ort.fbs). ONNX Runtime reads its
  own and older format versions, not newer ones. Which release reads which format:
  onnxruntime.ai/docs/performance/model-optimizations/ort-format-models.html ("Backwards
  Compatibility": v5 from 1.13; v4 limited from 1.14) and, for v6, the maintainers'
  answer in microsoft/onnxruntime#20670 ("v6 was introduced in ORT 1.16.0 so the minimum
  version you would be able to use a v6 model in is 1.16.0"). A reduced (minimal) build must
  come from the release that converted the models (the same page; #20670).
* iOS: a Core ML package's root model is a `CoreML.Specification.Model` protobuf whose first
  field is `specificationVersion`; version 7 is iOS 16 / macOS 13, 8 iOS 17 / macOS 14, 9 iOS 18 /
  macOS 15 (coremltools' `ct.target`).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Any

from mmedge.errors import ArtifactError

ORT_IDENTIFIER = b"ORTM"
# ORT format version -> the first onnxruntime release that reads it (full builds)
ORT_FORMAT_MIN_RELEASE = {5: "1.13.0", 6: "1.16.0"}
RUNTIME_OPT_SUFFIX = ".with_runtime_opt.ort"
RUNTIME_OPT_SESSION_OPTION = "session.enable_saved_runtime_optimizations"

COREML_MIN_OS = {7: {"iOS": "16", "macOS": "13", "tvOS": "16", "watchOS": "9"},
                 8: {"iOS": "17", "macOS": "14", "tvOS": "17", "watchOS": "10"},
                 9: {"iOS": "18", "macOS": "15", "tvOS": "18", "watchOS": "11"}}


def ort_format_version(path: str | Path) -> int:
    """The ORT format version in an `.ort` file's header (the InferenceSession's `ort_version`)."""
    path = Path(path)
    with open(path, "rb") as f:
        size = path.stat().st_size
        if size < 16:
            raise ArtifactError(f"{path}: {size} bytes, not an ORT format model")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                if buf[4:8] != ORT_IDENTIFIER:
                    raise ArtifactError(f"{path}: file identifier {bytes(buf[4:8])!r}, not {ORT_IDENTIFIER!r}: "
                                        f"not an ORT format model")
                (root,) = struct.unpack_from("<I", buf, 0)
                (back,) = struct.unpack_from("<i", buf, root)
                vtable = root - back
                (vt_size,) = struct.unpack_from("<H", buf, vtable)
                field = struct.unpack_from("<H", buf, vtable + 4)[0] if vt_size > 4 else 0
                if not field:
                    raise ArtifactError(f"{path}: no ORT format version in its header")
                at = root + field
                start = at + struct.unpack_from("<I", buf, at)[0]
                (n,) = struct.unpack_from("<I", buf, start)
                text = bytes(buf[start + 4: start + 4 + min(n, 16)]).decode("ascii")
            except (struct.error, UnicodeDecodeError, ValueError):
                raise ArtifactError(f"{path}: unreadable ORT format header") from None
    if not text.isdigit():
        raise ArtifactError(f"{path}: ORT format version {text!r} is not a number")
    return int(text)


def min_onnxruntime(format_version: int, writer: str) -> str:
    """The oldest onnxruntime(-android/-mobile) release that reads this ORT format version; for a
    format this table does not know yet, the release that wrote it."""
    return ORT_FORMAT_MIN_RELEASE.get(format_version, writer)


def ort_requirements(ort_files: list[Path], writer: str) -> dict[str, Any]:
    """What the `.ort` files one onnxruntime wrote need: format version, who reads it, reduced builds."""
    versions = sorted({ort_format_version(p) for p in ort_files})
    if len(versions) != 1:
        raise ArtifactError(f"ORT format versions {versions} in one bundle; expected one")
    fmt = versions[0]
    floor = min_onnxruntime(fmt, writer)
    return {"writer": f"onnxruntime {writer}", "onnxruntime_version": writer, "format_version": fmt,
            "format_readable_from": floor, "reduced_build_release": writer,
            "note": (f"ORT format v{fmt}, written by onnxruntime {writer}: releases before {floor} cannot read it "
                     f"(onnxruntime.ai ORT model format docs; microsoft/onnxruntime#20670), and only {writer} has "
                     f"run these files; a reduced-operator build (build.sh --minimal_build "
                     f"--include_ops_by_config ...) must be built from onnxruntime {writer}")}


RUNTIME_OPT_EPS = ("NNAPI", "XNNPACK", "CoreML")


def add_ort_requirements(stage: Path, doc: dict[str, Any], requirements: dict[str, Any]) -> None:
    """Complete a mobile bundle's manifest from its staged files: per Android model the
    runtime-optimised `.ort` files (listed apart from the fixed ones), the ORT format record under
    `requirements.android.ort`; per iOS model its Core ML specification version and minimum OS."""
    from mmedge.export.artifact import tool_versions

    ort_files: list[Path] = []
    for model, entry in sorted(doc.items()):
        android = entry.get("android")
        if android:
            graphs = []
            for g in android["graphs"]:
                fixed = stage / g["file"]
                rt = fixed.with_name(fixed.name[: -len(".ort")] + RUNTIME_OPT_SUFFIX)
                if not rt.is_file():
                    raise ArtifactError(f"ONNX Runtime did not write {rt.name} (runtime-optimisation style)")
                ort_files += [fixed, rt]
                graphs.append({"name": g["name"], "file": rt.relative_to(stage).as_posix()})
            config = android.get("ort_config", "").replace(".config", ".with_runtime_opt.config")
            android["runtime_optimized"] = {
                "graphs": graphs, "execution_providers": list(RUNTIME_OPT_EPS),
                "session_options": {RUNTIME_OPT_SESSION_OPTION: "1"},
                **({"ort_config": config} if config and (stage / config).is_file() else {}),
                "note": "ORT 'Runtime' optimisation style: basic optimisations only, the rest saved and replayed "
                        "at load time on the nodes the compiling EP (NNAPI, CoreML) or XNNPACK does not take; use "
                        "these with those EPs, the `graphs` files (fixed CPU optimisations, FusedConv/FusedGemm "
                        "contrib ops) with the CPU EP"}
        ios = entry.get("ios")
        if ios:
            spec = max(coreml_spec_version(stage / g["file"]) for g in ios["graphs"])
            ios["coreml_spec_version"] = spec
            ios["minimum_os"] = coreml_minimum_os(spec)
            per = requirements.setdefault("ios", {}).setdefault("per_model", {})
            per[model] = {"precision": ios["precision"], "coreml_spec_version": spec,
                          "minimum_ios": COREML_MIN_OS[spec]["iOS"], "minimum_macos": COREML_MIN_OS[spec]["macOS"]}
    if ort_files:
        writer = tool_versions("onnxruntime").get("onnxruntime", "")
        requirements.setdefault("android", {})["ort"] = ort_requirements(ort_files, writer)


def check_ort_versions(root: Path, doc: dict[str, Any], where: str) -> None:
    """Every `.ort` file of an extracted bundle has the ORT format version its manifest states."""
    from mmedge.errors import CheckFailedError

    ort = doc.get("requirements", {}).get("android", {}).get("ort")
    if not isinstance(ort, dict):
        return
    for model, entry in sorted(doc.get("models", {}).items()):
        android = entry.get("android") or {}
        files = [g["file"] for g in android.get("graphs", [])]
        files += [g["file"] for g in (android.get("runtime_optimized") or {}).get("graphs", [])]
        for rel in files:
            got = ort_format_version(root / rel)
            if got != ort.get("format_version"):
                raise CheckFailedError(f"{where}: {rel}: ORT format version {got}, but the manifest says "
                                       f"{ort.get('format_version')}")


def coreml_spec_version(package: str | Path) -> int:
    """`specificationVersion` of a `.mlpackage`'s root model, read without coremltools."""
    pkg = Path(package)
    try:
        index = json.loads((pkg / "Manifest.json").read_text(encoding="utf-8"))
        root = index["itemInfoEntries"][index["rootModelIdentifier"]]["path"]
        with open(pkg / "Data" / root, "rb") as f:
            head = f.read(16)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{pkg}: not a readable Core ML package ({e.__class__.__name__})") from None
    if not head or head[0] != 0x08:  # field 1, varint
        raise ArtifactError(f"{pkg}: its root model does not start with a specification version")
    value, shift = 0, 0
    for b in head[1:]:
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value
    raise ArtifactError(f"{pkg}: unreadable specification version")


def coreml_minimum_os(spec_version: int) -> dict[str, str]:
    """The OS versions that run a Core ML specification version."""
    if spec_version not in COREML_MIN_OS:
        raise ArtifactError(f"Core ML specification version {spec_version}: unknown to this mmedge")
    return dict(COREML_MIN_OS[spec_version])
