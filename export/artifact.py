"""Writing artifact directories: atomically, with a manifest and test vectors.

Every exporter writes into a fresh temporary directory next to the destination;
only when the export (and the manifest with every file's sha256) is complete is
it renamed into place. An interrupted or failed export leaves nothing behind,
and a concurrent export to the same destination never mixes files.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mmedge.atomic import FileLock, check_interrupted, make_folder, raise_write_error, sigint_deferred
from mmedge.errors import ArtifactError, MmedgeError
from mmedge.runtime.manifest import Manifest, TensorSpec, write_manifest


def _lock_of(tmp: Path) -> Path:
    """The lock file a live export holds on its temp dir (created first, removed last)."""
    return tmp.parent / f"{tmp.name}.lock"


def clean_stale(dest: Path) -> None:
    """Remove temp dirs of earlier exports to `dest` whose process is gone (a crash, SIGKILL).

    Liveness is the temp dir's lock, held by the exporting process for as long as it
    lives (the kernel drops it when the process dies), never a PID: a PID means nothing
    to a process in another container sharing the folder. A temp dir without a lock file
    (an older mmedge's, or one whose lock was removed) has no owner and goes too.
    """
    pattern = f".{glob.escape(dest.name)}.tmp-*"
    for p in sorted(dest.parent.glob(pattern)):
        if p.name.endswith(".lock") or p.name.endswith(".pid") or p.is_symlink() or not p.is_dir():
            continue
        lock_path = _lock_of(p)
        if not lock_path.exists() and not lock_path.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            p.with_name(p.name + ".pid").unlink(missing_ok=True)  # the PID file older versions wrote
            continue
        try:
            lock = FileLock(lock_path)
            if not lock.try_acquire():
                continue  # its export is running (here or in another container)
        except MmedgeError:
            continue  # not a lock file we can use: leave it alone
        try:
            shutil.rmtree(p, ignore_errors=True)
            p.with_name(p.name + ".pid").unlink(missing_ok=True)
        finally:
            lock.release()
    for lock_path in dest.parent.glob(pattern + ".lock"):  # a lock whose temp dir is gone
        if lock_path.with_name(lock_path.name[:-len(".lock")]).exists():
            continue
        try:
            lock = FileLock(lock_path)
            if lock.try_acquire():
                lock.release()
        except MmedgeError:
            pass


def _new_temp(dest: Path) -> tuple[Path, FileLock]:
    """A fresh temp dir beside `dest`, and the held lock that marks it live (taken before it exists)."""
    while True:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", suffix=".lock", dir=dest.parent)
        os.close(fd)
        lock = FileLock(name, wait=True).acquire()
        tmp = Path(name[:-len(".lock")])
        try:
            os.mkdir(tmp, 0o700)
        except FileExistsError:  # a name another process took between: pick another
            lock.release()
            continue
        except BaseException:
            lock.release()
            raise
        return tmp, lock


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temp dir; on success it replaces `dest` whole, on any failure (an
    exception, Ctrl-C) it is removed. Temp dirs left by crashed runs are cleaned
    up by the next run; concurrent exports to one destination never mix files
    (the last one to finish wins). The final rename is serialised by a lock file
    beside `dest` (`.<name>.lock`, opened without following links, removed after)."""
    dest = Path(dest)
    make_folder(dest.parent)
    tmp: Path | None = None
    live: FileLock | None = None
    try:
        with sigint_deferred():  # the temp dir and its lock come into being as a pair
            clean_stale(dest)
            tmp, live = _new_temp(dest)
        yield tmp
        check_interrupted()
        os.chmod(tmp, 0o755)
        with FileLock(dest.parent / f".{dest.name}.lock", wait=True):
            old = None
            if dest.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
                os.replace(dest, old / "x")
            os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        if tmp is not None:
            with sigint_deferred():  # a second Ctrl-C must not cut the cleanup short
                shutil.rmtree(tmp, ignore_errors=True)
        raise_write_error(e, dest)
        raise
    finally:
        if live is not None:
            with sigint_deferred():
                live.release()


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


def add_costs(root: Path, manifest: Manifest) -> None:
    """Record the FLOPs and weight bytes of every ONNX or OpenVINO graph (the profiler's roofline
    divides them by time and the machine's peaks). Counted at the test vectors' shapes, batch 1;
    a graph that cannot be counted here (no `onnx` / `openvino` package, a shape that does not
    infer) gets no cost: the profiler then says why. Always recounted from the files written: a
    manifest derived from another build's (int8 from fp32) must not keep that build's costs. A
    graph another writer gave a cost but whose format is not countable keeps it."""
    import importlib

    from mmedge.runtime.graph_cost import COUNTABLE, file_cost
    from mmedge.runtime.manifest import load_npz

    rel = manifest.extra.vectors_file
    vectors: dict[str, np.ndarray] | None = None
    manifest.costs = dict(manifest.costs)  # a copy: a derived manifest may share its base's dict
    for g in manifest.graphs:
        package = COUNTABLE.get(Path(g.file).suffix.lower())
        if package is None:
            continue
        manifest.costs.pop(g.name, None)
        try:
            importlib.import_module(package)
        except ImportError:
            continue
        if vectors is None and (root / rel).is_file():
            vectors = load_npz(root / rel)
        try:
            manifest.costs[g.name] = file_cost(root / g.file, g, vectors).to_json()
        except ArtifactError:
            continue


def finish(root: Path, manifest: Manifest) -> Manifest:
    """Record graph costs, hash every file and write the manifest (last, so a manifest means complete)."""
    add_costs(root, manifest)
    for p in root.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    write_manifest(root, manifest)  # hashes every file first
    return manifest
