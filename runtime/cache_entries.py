"""What the per-machine caches (`ort_cache`, `hash_cache`) share: a file's identity and pruning.

A cache entry derived from a file is valid while the file is the same file with the same bytes.
Its identity is every stat field a change moves: resolved path, device, inode, size, mtime and
ctime. ctime cannot be set by a user (a write, rename or `utime` moves it to now), so a file
rewritten with its mtime put back never matches its old entry.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"  # an interrupted write; removed once it is a day old


def file_identity(path: Path) -> str:
    """A string that changes whenever `path` may have changed (raises OSError when it is unreadable)."""
    st = os.stat(path)
    return "|".join(str(v) for v in (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                     st.st_ctime_ns))


def prune(folder: Path, max_entries: int, max_bytes: int | None = None, suffix: str = "") -> None:
    """Remove the least recently used entries (by mtime; a hit touches its entry) beyond `max_entries`
    or `max_bytes`, and temp files older than a day. Only names ending in `suffix` are entries."""
    entries = []
    now = time.time()
    for p in folder.iterdir():
        try:
            st = p.stat()
        except OSError:
            continue
        if p.name.startswith(TMP_PREFIX):
            if now - st.st_mtime > 86400:
                p.unlink(missing_ok=True)
        elif p.name.endswith(suffix):
            entries.append((st.st_mtime, st.st_size, p))
    entries.sort(reverse=True)
    total = 0
    for k, (_, size, p) in enumerate(entries):
        total += size
        if k >= max_entries or (max_bytes is not None and total > max_bytes):
            p.unlink(missing_ok=True)
