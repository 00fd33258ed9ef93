"""Write a file whole or not at all: a temporary file beside it, then `os.replace`.

One mechanism for every file mmedge writes outside an artifact folder (WAVs,
PNGs, bundles, caches, checkpoints, results sidecars); artifact folders have
`export.artifact.atomic_dir`. Standard library only, so the torch-free runtime
uses it too.

Also the two helpers for machines shared with other users: `private_dir` (a
folder under the temp dir only this user can change) and `FileLock` (an advisory
lock file that is never followed through a link, never truncated).
"""

from __future__ import annotations

import errno
import os
import stat
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


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while a temp folder and its lock file are created or removed as a pair.

    The CLI's handler raises KeyboardInterrupt between any two bytecodes; landing between
    "lock file created" and "cleanup registered" (or halfway through a cleanup) left a stray
    lock file beside the destination. Inside this block a SIGINT is only recorded; when the
    block ends the previous handler gets it (so the KeyboardInterrupt comes right after).
    A process-level signal mask would not do: Python runs handlers in the main thread even
    when another thread (a BLAS or ONNX Runtime pool) took the signal. Outside the main thread
    (where handlers cannot be changed) it changes nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if pending:
            if callable(old):
                old(*pending[0])
            else:  # SIG_DFL or SIG_IGN: let the kernel apply it now
                signal.raise_signal(signal.SIGINT)


def check_interrupted() -> None:
    """Called right before a result is renamed into place: nothing is published after Ctrl-C."""
    if _interrupted:
        raise KeyboardInterrupt


def make_folder(folder: Path) -> None:
    """`mkdir -p folder`; a file in the way is one line naming it, not a FileExistsError."""
    from mmedge.errors import InputError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        where = "" if blocker == folder else f"; cannot create {folder}"
        raise InputError(f"{blocker}: is a file, not a folder{where}") from None


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", mode: int = 0o644, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder to write; on success it becomes `path` (with `mode`).

    On any exception (Ctrl-C included) the temporary file is removed and `path` is untouched.
    `suffix` matters to writers that pick a format by extension (np.savez appends .npz otherwise).
    """
    from mmedge.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give the path of the file to write")
    make_folder(path.parent)
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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        raise_write_error(e, path)
        raise


def raise_write_error(e: BaseException, dest: str | Path) -> None:
    """A disk-full / file-size-limit / read-only error while writing `dest` becomes one InputError
    naming `dest` (a bare write() error names no file); anything else is left to the caller."""
    from mmedge.errors import InputError, environment_error

    if isinstance(e, OSError) and environment_error(e) is not None:
        raise InputError(f"{dest}: cannot be written ({e.strerror or e}); nothing was written") from None


def write_atomic(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """`path` holds exactly `data` (str is encoded, newlines kept as given), or is left as it was."""
    blob = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return Path(path)


def private_dir(name: str) -> Path:
    """`<tmp>/<name>-<uid>`: a folder only this user can change, created 0700 if absent.

    An existing one must be a real folder (not a link), owned by this user, with no
    group or other access; anything else (planted by another user, world-writable, a
    file) is refused with one line naming it, never used.
    """
    from mmedge.errors import InputError

    uid = os.getuid() if hasattr(os, "getuid") else None
    path = Path(tempfile.gettempdir()) / (f"{name}-{uid}" if uid is not None else name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise InputError(f"{path}: cannot create a private folder ({e.strerror or e})") from None
    why = not_private(path)
    if why:
        raise InputError(f"{path}: {why}; refusing to use it as a private folder (remove it, or set TMPDIR "
                         f"to a folder of your own)")
    return path


def not_private(path: Path) -> str:
    """Why `path` is not a folder only this user can change ("" when it is one)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if uid is not None and st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if uid is not None and st.st_mode & 0o077:
        return f"is accessible to other users (mode {stat.S_IMODE(st.st_mode):o})"
    return ""


def cache_home() -> Path:
    """`$XDG_CACHE_HOME/mmedge` (default `~/.cache/mmedge`): where mmedge keeps what it can recompute."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmedge"


def private_cache_dir(name: str) -> tuple[Path | None, str]:
    """`cache_home()/<name>`, created 0700 if absent -> (path, "") when only this user can change it,
    else (None, why): a cache another user could write into is not read (its files would be trusted)."""
    path = cache_home() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        return None, f"{path}: cannot be created ({e.strerror or e})"
    why = not_private(path)
    return (None, f"{path}: {why}") if why else (path, "")


class FileLock:
    """An advisory lock (`flock`) on `path`, held until `release()` (or the `with` block ends).

    The file is opened with O_NOFOLLOW and without O_TRUNC, so a planted link is refused and
    no file's content is ever changed; it must be a regular file. With `wait=False` a lock
    held elsewhere is one line, `<what>: is in use by another mmedge run`. The holder removes
    the file on release (`remove=True`); a waiter that then gets the lock on the removed file
    notices (the path no longer names the file it locked) and tries again, so removing lock
    files is safe and they do not accumulate. On systems without `fcntl` it locks nothing.
    """

    def __init__(self, path: str | Path, wait: bool = False, what: str | Path | None = None,
                 remove: bool = True) -> None:
        self.path, self.wait, self.remove = Path(path), wait, remove
        self.what = str(what if what is not None else path)
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock; False (nothing held) when another process holds it and `wait` is False."""
        from mmedge.errors import InputError

        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; callers still work, unserialised
            return True
        flags = os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
            | getattr(os, "O_NONBLOCK", 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o600)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    why = "is a symbolic link; refusing to follow it (another user may have planted it)"
                else:
                    why = f"cannot open the lock file ({e.strerror or e})"
                raise InputError(f"{self.path}: {why}") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise InputError(f"{self.path}: is not a regular file; refusing to use it as a lock file")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    os.close(fd)
                    return False
                try:
                    now = os.lstat(self.path)
                except FileNotFoundError:
                    now = None
                if now is not None and (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                    self.fd = fd
                    return True
                os.close(fd)  # removed (or replaced) by its last holder while we waited: try again
            except BaseException:
                if self.fd != fd:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                raise

    def acquire(self) -> "FileLock":
        from mmedge.errors import InputError

        if not self.try_acquire():
            raise InputError(f"{self.what}: is in use by another mmedge run; wait for it to finish")
        return self

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if self.remove:
                try:
                    self.path.unlink()
                except OSError:
                    pass
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
