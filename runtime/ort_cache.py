"""ONNX Runtime's optimized graphs, kept per machine so a second process skips the optimization.

Loading the full captioner's 170 MB encoder spends most of its time in ONNX Runtime's graph
optimizers (conv fusions, the NCHWc layout for the CPU's vector width), and while they run the
process holds the parsed model and its rewritten copy at once. ONNX Runtime can write the
optimized graph out (`SessionOptions.optimized_model_filepath`); loaded back with the optimizers
off it gives bit-identical outputs, loads several times faster and peaks at about half the memory.

The optimized graph's weights are written beside it (`<key>.data`, ORT's external initializers)
and memory-mapped when it loads: no protobuf parse or copy of every weight (the full captioner's
graphs load in 0.20 s instead of 0.57 s, benchmarks/caption_latency.py), and the pages are
shared with the page cache.

The optimized graph is specific to the machine (ORT warns that the NCHWc rewrite is), so the
cache key is the ONNX Runtime version, the CPU (`runtime/cpu_features`), the optimization level
and the source file's identity (`cache_entries.file_identity`: a rewritten graph never
matches its old entry, even with its mtime put back). Entries live in
`cache_home()/ort` (0700, refused when another user could write there: a planted graph would be
run), are written atomically, are checked by loading (a file ORT refuses is removed and the
source is optimized again), and are pruned oldest-first beyond `MAX_ENTRIES` / `MAX_BYTES`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mmedge.atomic import private_cache_dir
from mmedge.runtime.cache_entries import TMP_PREFIX, file_identity, prune

MIN_BYTES = 8 * 1024 * 1024  # `cache=auto`: smaller graphs optimize in milliseconds
MAX_ENTRIES = 32
MAX_BYTES = 4 * 1024 ** 3
MODES = ("auto", "on", "off")
SUFFIX, DATA_SUFFIX = ".onnx", ".data"
EXTERNAL_MIN_BYTES = 1024  # weights at least this large go to the mmapped data file


@dataclass(frozen=True)
class CacheDecision:
    """Whether a load goes through the cache, and the entry it would use."""

    entry: Optional[Path]
    why_not: str = ""


def _machine() -> str:
    from mmedge.runtime import cpu_features

    f = cpu_features.detect()
    return f"{f.arch}|{f.model}|{','.join(sorted(f.flags))}"


def cache_key(source: Path, level: str, ort_version: str, machine: str) -> str:
    text = "|".join([file_identity(source), level, ort_version, machine])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def decide(source: Path, level: str, mode: str, cpu_only: bool, ort_version: str) -> CacheDecision:
    """The cache entry for `source` at optimization `level`, or why the cache is not used."""
    if mode == "off":
        return CacheDecision(None, "cache=off")
    if level == "disable":
        return CacheDecision(None, "optimization=disable")
    if not cpu_only:
        return CacheDecision(None, "an execution provider other than the CPU's")
    try:
        size = os.stat(source).st_size
    except OSError as e:
        return CacheDecision(None, f"{source}: {e.strerror or e}")
    if mode == "auto" and size < MIN_BYTES:
        return CacheDecision(None, f"smaller than {MIN_BYTES >> 20} MB")
    folder, why = private_cache_dir("ort")
    if folder is None:
        return CacheDecision(None, why)
    return CacheDecision(folder / f"{cache_key(source, level, ort_version, _machine())}{SUFFIX}")


def save_config(save_to: str) -> dict[str, str]:
    """ONNX Runtime session config entries that write the optimized graph's weights beside it
    (`<name>.data`, a name relative to the graph's folder) for `make` to add when saving."""
    return {"session.optimized_model_external_initializers_file_name": Path(save_to).stem + DATA_SUFFIX,
            "session.optimized_model_external_initializers_min_size_in_bytes": str(EXTERNAL_MIN_BYTES)}


def _remove(entry: Path) -> None:
    entry.unlink(missing_ok=True)
    entry.with_suffix(DATA_SUFFIX).unlink(missing_ok=True)


def load(source: Path, decision: CacheDecision, make: Callable[[str, Optional[str]], Any]) -> Any:
    """A session of `source` through the cache: `make(path, save_to)` builds one (optimizers as the
    caller set them, writing the optimized graph to `save_to` when given, with `save_config`);
    `make(entry, "off")` means load an optimized graph with the optimizers off."""
    entry = decision.entry
    if entry is None:
        return make(str(source), None)
    if entry.is_file():
        try:
            session = make(str(entry), "off")
            os.utime(entry)  # most recently used: pruned last
            return session
        except Exception:  # unreadable, its weights missing, or from another ORT build: optimize again
            _remove(entry)
    # written into a private temp folder, then moved in weights first: an entry is never seen without them
    try:
        staging = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=entry.parent))
    except OSError:  # (the cache's disk full or read-only): a cache that cannot be written is only slower
        return make(str(source), None)
    try:
        staged = staging / entry.name
        try:
            session = make(str(source), str(staged))
        except Exception:  # (a graph ORT cannot write back, e.g. over 2 GB): load it as it is
            return make(str(source), None)  # and a broken source raises its own error here
        if staged.is_file():
            data = staged.with_suffix(DATA_SUFFIX)
            if data.is_file():
                os.replace(data, entry.with_suffix(DATA_SUFFIX))
            os.replace(staged, entry)
            prune(entry.parent, MAX_ENTRIES, MAX_BYTES, suffix=SUFFIX, companion=DATA_SUFFIX)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return session
