"""Write a file whole or not at all: a temporary file beside it, then `os.replace`.

One mechanism for every file mmedge writes outside an artifact folder (WAVs,
PNGs, bundles, caches, checkpoints, results sidecars); artifact folders have
`export.artifact.atomic_dir`. Standard library only, so the torch-free runtime
uses it too.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_interrupted = False


def on_sigint(signum: int, frame: Any) -> None:
    """SIGINT handler (installed by the CLI): remember the interrupt, then raise as Python does.

    Some libraries swallow KeyboardInterrupt (onnxslim guards an import with a bare
    `except:`), so a Ctrl-C could otherwise let the work finish and publish its result.
    """
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def check_interrupted() -> None:
    """Called right before a result is renamed into place: nothing is published after Ctrl-C."""
    if _interrupted:
        raise KeyboardInterrupt


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", mode: int = 0o644, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder to write; on success it becomes `path` (with `mode`).

    On any exception (Ctrl-C included) the temporary file is removed and `path` is untouched.
    `suffix` matters to writers that pick a format by extension (np.savez appends .npz otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        check_interrupted()
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """`path` holds exactly `data` (str is encoded, newlines kept as given), or is left as it was."""
    blob = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return Path(path)
