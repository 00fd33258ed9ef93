"""Target-compatibility checks of exported ONNX graphs (`mmedge export --target NAME`).

A check takes an ONNX file and returns a list of problems (empty: compatible);
targets register here by name (e.g. `tensorrt`).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable

from mmedge.errors import UnknownNameError

TargetCheck = Callable[[Path], list[str]]
_CHECKS: dict[str, TargetCheck] = {}
TARGET_MODULES = {"tensorrt": "mmedge.export.tensorrt_compat"}


def register_target(name: str) -> Callable[[TargetCheck], TargetCheck]:
    def deco(fn: TargetCheck) -> TargetCheck:
        _CHECKS[name] = fn
        return fn

    return deco


def target_check(name: str) -> TargetCheck:
    mod = TARGET_MODULES.get(name)
    if mod is not None and importlib.util.find_spec(mod) is not None:
        importlib.import_module(mod)
    if name not in _CHECKS:
        raise UnknownNameError("target", name, list(TARGET_MODULES))
    return _CHECKS[name]
