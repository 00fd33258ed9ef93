"""Writing artifact directories: atomically, with a manifest and test vectors.

Every exporter writes into a fresh temporary directory next to the destination;
only when the export (and the manifest with every file's sha256) is complete is
it renamed into place. An interrupted or failed export leaves nothing behind,
and a concurrent export to the same destination never mixes files.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mmedge.atomic import check_interrupted
from mmedge.runtime.manifest import MANIFEST, Manifest, TensorSpec, hash_files


def _owner_file(tmp: Path) -> Path:
    return tmp.parent / f"{tmp.name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(dest: Path) -> None:
    """Remove temp dirs of earlier exports to `dest` whose process died (a crash, SIGKILL)."""
    for p in dest.parent.glob(f".{dest.name}.tmp-*"):
        if not p.is_dir():
            continue
        try:
            pid = int(_owner_file(p).read_text())
        except (OSError, ValueError):
            pid = -1
        if pid != os.getpid() and (pid < 0 or not _alive(pid)):
            shutil.rmtree(p, ignore_errors=True)
            _owner_file(p).unlink(missing_ok=True)


@contextlib.contextmanager
def _swap_lock(dest: Path) -> Iterator[None]:
    """Serialise the final rename of concurrent exports to the same destination."""
    try:
        import fcntl
    except ImportError:  # Windows: os.replace retry below still keeps artifacts whole
        yield
        return
    import hashlib

    locks = Path(tempfile.gettempdir()) / "mmedge-locks"  # not beside the artifact: no clutter there
    locks.mkdir(exist_ok=True)
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:32]
    with open(locks / f"{key}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temp dir; on success it replaces `dest` whole, on any failure (an
    exception, Ctrl-C) it is removed. Temp dirs left by crashed runs are cleaned
    up by the next run; concurrent exports to one destination never mix files
    (the last one to finish wins)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    owner = _owner_file(tmp)
    owner.write_text(str(os.getpid()))
    try:
        yield tmp
        check_interrupted()
        os.chmod(tmp, 0o755)
        with _swap_lock(dest):
            old = None
            if dest.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
                os.replace(dest, old / "x")
            os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        owner.unlink(missing_ok=True)


def tool_versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version(), "mmedge": _version("mmedge")}
    for p in packages:
        v = _version(p)
        if v:
            out[p] = v
    return out


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return ""


def tensor_spec(name: str, arr: np.ndarray, dynamic: dict[int, str] | None = None) -> TensorSpec:
    shape: list[int | str] = list(arr.shape)
    for axis, label in (dynamic or {}).items():
        shape[axis] = label
    return TensorSpec(name, shape, str(arr.dtype))


def config_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def finish(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file and write the manifest (last, so a manifest means complete)."""
    for p in root.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    manifest.files = hash_files(root)
    (root / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    os.chmod(root / MANIFEST, 0o644)
    return manifest
