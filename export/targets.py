"""Target-compatibility checks of exported ONNX graphs (`mmedge export --target NAME`).

A check takes an ONNX file and returns a list of problems (empty: compatible);
targets register here by name (e.g. `tensorrt`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List

from mmedge.registry import Registry

TargetCheck = Callable[[Path], List[str]]
TARGETS: Registry[TargetCheck] = Registry("target", per_name={"tensorrt": "mmedge.export.tensorrt_compat"})
register_target = TARGETS.register
target_check = TARGETS.get


def check_graphs(target: str, folder: Path, files: list[str], log: Callable[[str], None]) -> None:
    """Run `target`'s check on every ONNX file of an artifact being written; any problem is an
    ExportError (nothing is published), a pass is logged so the user knows the check ran."""
    from mmedge.errors import ExportError

    check = target_check(target)
    problems = [f"{f}: {p}" for f in files for p in check(folder / f)]
    if problems:
        raise ExportError(f"not compatible with {target}: " + "; ".join(problems[:5]))
    log(f"--target {target}: {len(files)} graph{'s' if len(files) != 1 else ''} checked, compatible")
