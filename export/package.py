"""`mmedge package TARGET`: bundles for a device, one packager module per target.

A packager takes artifact directories and writes one archive (atomically); the
targets (`jetson`, `mobile`) register here by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmedge.registry import Registry


@dataclass
class PackageRequest:
    artifacts: list[Path]
    out: Path
    options: dict[str, Any] = field(default_factory=dict)


Packager = Callable[[PackageRequest], Path]
PACKAGERS: Registry[Packager] = Registry(
    "package target", per_name={"jetson": "mmedge.export.jetson", "mobile": "mmedge.export.mobile"})
register_packager = PACKAGERS.register
packager = PACKAGERS.get
