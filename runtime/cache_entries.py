"""What the per-machine caches (`ort_cache`, `hash_cache`) share: a file's identity and pruning.

A cache entry derived from a file is valid while the file is the same file with the same bytes.
Its identity is every stat field a change moves: resolved path, device, inode, size, mtime and
ctime. ctime cannot be set by a user (a write, rename or `utime` moves it to now), so a file
rewritten with its mtime put back never matches its old entry.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"  # an interrupted write; removed once it is a day old


def file_identity(path: Path) -> str:
    """A string that changes whenever `path` may have changed (raises OSError when it is unreadable)."""
    st = os.stat(path)
    return "|".join(str(v) for v in (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                     st.st_ctime_ns))


def prune(folder: Path, max_entries: int, max_bytes: int | None = None, suffix: str = "",
          companion: str | None = None) -> None:
    """Remove the least recently used entries (by mtime; a hit touches its entry) beyond `max_entries`
    or `max_bytes`, and temp files or folders older than a day. Only names ending in `suffix` are
    entries; an entry's `companion` (its name with `suffix` replaced, e.g. its weights file) is
    counted and removed with it, and one left without its entry for a day is removed."""
    entries, companions = [], {}
    now = time.time()
    for p in folder.iterdir():
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.name.startswith(TMP_PREFIX):
            if now - st.st_mtime > 86400:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        elif companion and p.name.endswith(companion):
            companions[p.name[:-len(companion)]] = (st, p)
        elif p.name.endswith(suffix):
            entries.append([st.st_mtime, st.st_size, p])
    for e in entries:  # an entry's size includes its companion's
        stem = e[2].name[:len(e[2].name) - len(suffix)] if suffix else e[2].name
        if stem in companions:
            e[1] += companions.pop(stem)[0].st_size
            e.append(e[2].with_name(stem + (companion or "")))
    for st, p in companions.values():  # orphans: the entry was removed, or its write never finished
        if now - st.st_mtime > 86400:
            p.unlink(missing_ok=True)
    entries.sort(key=lambda e: e[0], reverse=True)
    total = 0
    for k, (_, size, *paths) in enumerate(entries):
        total += size
        if k >= max_entries or (max_bytes is not None and total > max_bytes):
            for p in paths:
                p.unlink(missing_ok=True)
