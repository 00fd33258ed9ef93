"""sha256 of an artifact's large files, remembered per machine so a load does not rehash 250 MB.

`read_manifest` checks every file an artifact lists against its recorded sha256; for the full
captioner that is a quarter of a second at every process start. A digest is remembered under a
key of everything a change to the file changes: its resolved path, device, inode, size, mtime
and ctime. ctime cannot be set by a user (any write, rename or `utime` moves it to now), so a file
whose content changed since it was hashed never matches its old key, even with its mtime put
back. Entries live in `cache_home()/sha256` (0700, not used when another user could write there)
and are written atomically; Windows, where st_ctime is the creation time, always hashes.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from mmedge.atomic import private_cache_dir, write_atomic
from mmedge.runtime.cache_entries import file_identity, prune

MIN_BYTES = 4 * 1024 * 1024  # smaller files hash in about a millisecond
MAX_ENTRIES = 4096
_DIGEST = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of `path`, from the per-machine record when the file is unchanged since it was hashed."""
    st = os.stat(path)
    if st.st_size < MIN_BYTES or os.name == "nt":
        return sha256_file(path)
    folder, _ = private_cache_dir("sha256")
    if folder is None:
        return sha256_file(path)
    key = file_identity(path)
    entry = folder / hashlib.sha256(key.encode()).hexdigest()
    try:
        with open(entry, "rb") as f:
            text = f.read(65).decode("ascii", "replace")
        if _DIGEST.fullmatch(text):
            return text
    except OSError:
        pass
    digest = sha256_file(path)  # keyed by the stat taken before: a change while hashing gets a new key
    try:
        write_atomic(entry, digest)
        prune(folder, MAX_ENTRIES)
    except Exception:  # a cache that cannot be written is only slower
        pass
    return digest
