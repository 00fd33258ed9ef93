"""`mmedge package TARGET`: bundles for a device, one packager module per target.

A packager takes artifact directories and writes one archive (atomically); the
targets (`jetson`, `mobile`) register here by name.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmedge.errors import UnknownNameError


@dataclass
class PackageRequest:
    artifacts: list[Path]
    out: Path
    options: dict[str, Any] = field(default_factory=dict)


Packager = Callable[[PackageRequest], Path]
_PACKAGERS: dict[str, Packager] = {}
PACKAGER_MODULES = {"jetson": "mmedge.export.jetson", "mobile": "mmedge.export.mobile"}


def register_packager(name: str) -> Callable[[Packager], Packager]:
    def deco(fn: Packager) -> Packager:
        _PACKAGERS[name] = fn
        return fn

    return deco


def packager(name: str) -> Packager:
    mod = PACKAGER_MODULES.get(name)
    if mod is not None and importlib.util.find_spec(mod) is not None:
        importlib.import_module(mod)
    if name not in _PACKAGERS:
        raise UnknownNameError("package target", name, list(PACKAGER_MODULES))
    return _PACKAGERS[name]
