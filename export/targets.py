"""Target-compatibility checks of exported ONNX graphs (`mmedge export --target NAME`).

A check takes an ONNX file and returns a list of problems (empty: compatible);
targets register here by name (e.g. `tensorrt`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mmedge.registry import Registry

TargetCheck = Callable[[Path], list[str]]
TARGETS: Registry[TargetCheck] = Registry("target", per_name={"tensorrt": "mmedge.export.tensorrt_compat"})
register_target = TARGETS.register
target_check = TARGETS.get
