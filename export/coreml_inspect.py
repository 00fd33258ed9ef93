"""Checks of a saved `.mlpackage` without running it (Core ML predicts only on macOS).

Reads the package's spec: interface, metadata, ops and stored weights (`describe_package`),
and holds every op against the deployment target's op set (`check_package`); the exporter,
the int8 recipe and the tests use it on Linux.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import ArtifactError, ExportError
from mmedge.export.coreml_tools import coremltools, quiet, target_value
from mmedge.runtime.backends.coreml import package_dir


@dataclass
class PackageInfo:
    """A package as Core ML would see it: interface, metadata, ops, weights (from the spec)."""

    path: str
    spec_version: int
    deployment_target: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    metadata: dict[str, Any]
    ops: dict[str, int]
    weights: dict[str, int]  # stored weight elements by dtype (int8, fp16, fp32)
    size_bytes: int

    def input(self, name: str) -> dict[str, Any]:
        return next(i for i in self.inputs if i["name"] == name)

    def output(self, name: str) -> dict[str, Any]:
        return next(o for o in self.outputs if o["name"] == name)


def _feature(f: Any) -> dict[str, Any]:
    kind = f.type.WhichOneof("Type")
    d: dict[str, Any] = {"name": f.name, "kind": kind, "description": f.shortDescription}
    if kind == "imageType":
        t = f.type.imageType
        d.update({"kind": "image", "width": int(t.width), "height": int(t.height),
                  "color_space": t.ColorSpace.Name(t.colorSpace)})
    elif kind == "multiArrayType":
        t = f.type.multiArrayType
        d.update({"kind": "tensor", "dtype": t.ArrayDataType.Name(t.dataType).lower(), "shape": list(t.shape)})
        which = t.WhichOneof("ShapeFlexibility")
        if which == "shapeRange":
            d["ranges"] = [(int(r.lowerBound), int(r.upperBound)) for r in t.shapeRange.sizeRanges]
        elif which == "enumeratedShapes":
            d["enumerated"] = [list(s.shape) for s in t.enumeratedShapes.shapes]
    return d


def _ops(block: Any, counts: dict[str, int], weights: dict[str, int]) -> None:
    coremltools()
    from coremltools.proto import MIL_pb2

    for op in block.operations:
        counts[op.type] = counts.get(op.type, 0) + 1
        for value in op.attributes.values():
            if value.WhichOneof("value") == "blobFileValue" and value.type.WhichOneof("type") == "tensorType":
                tt = value.type.tensorType
                n = int(np.prod([dim.constant.size for dim in tt.dimensions])) if tt.dimensions else 1
                dtype = MIL_pb2.DataType.Name(tt.dataType).lower()
                weights[dtype] = weights.get(dtype, 0) + n
        for nested in op.blocks:
            _ops(nested, counts, weights)


def describe_package(path: str | Path) -> PackageInfo:
    """Read a `.mlpackage` (or its Manifest.json) without running it: works on Linux."""
    ct = coremltools()
    pkg = package_dir(path)
    try:
        with quiet():
            spec = ct.utils.load_spec(str(pkg))
    except Exception as e:
        raise ArtifactError(f"{pkg}: not a readable Core ML package ({str(e).strip()[:200] or e.__class__.__name__})"
                            ) from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{pkg}: a Core ML {spec.WhichOneof('Type')} model, not an ML Program")
    ops: dict[str, int] = {}
    weights: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        _ops(fn.block_specializations[fn.opset], ops, weights)
    desc = spec.description
    meta = {"author": desc.metadata.author, "version": desc.metadata.versionString,
            "description": desc.metadata.shortDescription, "license": desc.metadata.license,
            "user_defined": dict(desc.metadata.userDefined)}
    names = {int(t.value): t.name for t in ct.target if t.name.startswith("iOS")}
    size = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file())
    return PackageInfo(str(pkg), int(spec.specificationVersion), names.get(int(spec.specificationVersion), "?"),
                       [_feature(f) for f in desc.input], [_feature(f) for f in desc.output], meta, ops, weights, size)


def check_package(path: str | Path, target: str | None = None) -> PackageInfo:
    """Names distinct, every op available in the deployment target's op set (coremltools' registry)."""
    ct = coremltools()
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    info = describe_package(path)
    want = target_value(target) if target else info.spec_version
    if info.spec_version > want:
        raise ExportError(f"{info.path}: specification version {info.spec_version} is newer than "
                          f"deployment target {target} ({want})")
    tgt = ct.target(want)
    missing = sorted(op for op in info.ops if tgt not in SSAOpRegistry.core_ops.get(op, {}))
    if missing:
        raise ExportError(f"{info.path}: op(s) {', '.join(missing)} are not in the {tgt.name} op set")
    clash = {i["name"] for i in info.inputs} & {o["name"] for o in info.outputs}
    if clash:
        raise ExportError(f"{info.path}: output name(s) {', '.join(sorted(clash))} equal input names")
    return info
