"""Bounded readers of the two torch.save containers: the zip archive and the legacy stream.

Storages are read whole from the file and every declared size is checked against what the
file holds before it is allocated (see the caps in checkpoint_limits); the object pickle
goes through the restricted unpickler. `_read_checkpoint` turns every failure of an
untrusted file into one CheckpointError line naming it.
"""

from __future__ import annotations

import io
import os
import pickle
import stat
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mmedge.errors import CheckpointError
from mmedge.models.checkpoint_limits import (
    _MAX_INDEX,
    MAX_CHECKPOINT_BYTES,
    MAX_COMPRESSION_RATIO,
    MAX_PICKLE_BYTES,
)
from mmedge.models.checkpoint_unpickler import (
    _is_stand_in_class,
    _Refused,
    _RestrictedUnpickler,
    _StorageType,
    _Unsafe,
)

_REFUSAL_HINT = "only tensors and the tutorial's model classes are allowed"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    if len(msg) > 160:
        msg = msg[:157] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _open_regular(path: Path, what: str, limit: int) -> tuple[BinaryIO, int]:
    """Open a regular file without blocking (a FIFO or a device is refused, never read) -> (file, size)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, expected a {what} file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the {what} ({_first_line(e)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "not a regular file")
            raise CheckpointError(f"{path}: is {kind}, expected a regular {what} file")
        if st.st_size > limit:
            raise CheckpointError(f"{path}: the {what} is {st.st_size} bytes, over the {_mib(limit)} limit")
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


class _Reader:
    """A file read only up to `limit` bytes: a length in the file never allocates more than is there."""

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self.f, self.limit, self.pos = f, limit, 0

    def read(self, n: int = -1) -> bytes:
        left = self.limit - self.pos
        n = left if n is None or n < 0 else min(n, left)
        data = self.f.read(max(n, 0))
        self.pos += len(data)
        return data

    def readline(self) -> bytes:
        data = self.f.readline(max(min(self.limit - self.pos, 1 << 16), 0))
        self.pos += len(data)
        return data

    def readinto(self, buf: memoryview) -> int:
        """Fill all of `buf`; returns how much was there."""
        done = 0
        while done < len(buf) and self.pos < self.limit:
            n = self.f.readinto(buf[done:done + min(len(buf) - done, self.limit - self.pos, 1 << 24)])
            if not n:
                break
            done += n
            self.pos += n
        return done


def _untyped(buf: bytearray) -> torch.UntypedStorage:
    """A storage sharing `buf`'s memory (kept alive by the tensor torch.frombuffer makes)."""
    return torch.frombuffer(buf, dtype=torch.uint8).untyped_storage() if buf else torch.UntypedStorage(0)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _storage_id(saved_id: Any) -> tuple[str, list]:
    if not isinstance(saved_id, tuple) or not saved_id:
        raise pickle.UnpicklingError("malformed persistent id")
    kind = saved_id[0].decode("ascii") if isinstance(saved_id[0], bytes) else saved_id[0]
    return kind, list(saved_id[1:])


def _check_storage_decl(storage_type: Any, key: Any, location: Any, numel: Any) -> tuple[torch.dtype, int]:
    if not (isinstance(storage_type, _StorageType) and isinstance(key, str) and isinstance(location, (str, bytes))
            and type(numel) is int and 0 <= numel <= _MAX_INDEX):
        raise pickle.UnpicklingError("malformed storage record")
    return storage_type.dtype, numel * _element_size(storage_type.dtype)


class _ZipCheckpoint:
    """torch.save's zip archive (torch>=1.6), each member's declared size checked before it is read."""

    def __init__(self, f: BinaryIO, size: int, path: Path) -> None:
        self.path, self.size = path, size
        try:
            self.zip = zipfile.ZipFile(f)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint "
                                  f"(zip archive unreadable: {_first_line(e)})") from None
        names = [i.filename for i in infos]
        tails = {n.split("/", 1)[-1] for n in names}
        if "constants.pkl" in tails:  # torch.load would hand it to torch.jit.load
            raise CheckpointError(f"{path}: a TorchScript archive, not a training checkpoint (torch.save output)")
        prefix = names[0].split("/", 1)[0] if names else ""
        self.prefix = prefix
        if f"{prefix}/data.pkl" not in names:
            raise CheckpointError(f"{path}: a zip archive without data.pkl, not a PyTorch checkpoint")
        stored = inflated = 0
        for info in infos:
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                raise CheckpointError(f"{path}: corrupt zip archive (member {info.filename!r} declares "
                                      f"{info.file_size} bytes but stores {info.compress_size})")
            if info.file_size > MAX_COMPRESSION_RATIO * info.compress_size + (64 << 10):
                raise CheckpointError(f"{path}: zip member {info.filename!r} would inflate from "
                                      f"{_mib(info.compress_size)} to {_mib(info.file_size)} (more than "
                                      f"{MAX_COMPRESSION_RATIO}x; a zip bomb?)")
            stored += info.compress_size
            inflated += info.file_size
        if stored > size:
            raise CheckpointError(f"{path}: corrupt zip archive (its members store {stored} bytes in a "
                                  f"{size}-byte file: overlapping members, a zip bomb?)")
        if inflated > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{path}: the archive inflates to {_mib(inflated)}, over the "
                                  f"{_mib(MAX_CHECKPOINT_BYTES)} limit")
        self.read_bytes = 0
        self.storages: dict[str, tuple[bytearray, torch.storage.UntypedStorage]] = {}
        order = f"{prefix}/byteorder"
        self.big_endian = order in names and self._member(order, limit=16).strip() == b"big"

    def _member(self, name: str, *, limit: int, expected: int | None = None) -> bytearray:
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: corrupt checkpoint (the archive lacks {name!r})") from None
        if expected is not None and info.file_size != expected:
            raise CheckpointError(f"{self.path}: corrupt checkpoint ({name!r} holds {info.file_size} bytes, "
                                  f"its tensors declare {expected})")
        if info.file_size > limit:
            raise CheckpointError(f"{self.path}: {name!r} is {_mib(info.file_size)}, over the {_mib(limit)} limit")
        self.read_bytes += info.file_size
        if self.read_bytes > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{self.path}: more than {_mib(MAX_CHECKPOINT_BYTES)} of tensor data")
        buf = bytearray(info.file_size)
        view, done = memoryview(buf), 0
        with self.zip.open(info) as member:
            while done < len(buf):
                chunk = member.read(min(len(buf) - done, 1 << 24))
                if not chunk:
                    raise CheckpointError(f"{self.path}: truncated or corrupt checkpoint ({name!r} ends early)")
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
            if member.read(1):
                raise CheckpointError(f"{self.path}: corrupt checkpoint ({name!r} is longer than declared)")
        return buf

    def persistent_load(self, saved_id: Any) -> Any:
        kind, data = _storage_id(saved_id)
        if kind != "storage" or len(data) != 4:
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        storage_type, key, location, numel = data
        dtype, nbytes = _check_storage_decl(storage_type, key, location, numel)
        if key in self.storages:
            buf, untyped = self.storages[key]
            if len(buf) != nbytes:
                raise CheckpointError(f"{self.path}: corrupt checkpoint (storage {key!r} declared with two sizes)")
        else:
            buf = self._member(f"{self.prefix}/data/{key}", limit=MAX_CHECKPOINT_BYTES, expected=nbytes)
            if self.big_endian:
                _byteswap(buf, dtype)
            untyped = _untyped(buf)
            self.storages[key] = (buf, untyped)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)

    def load(self) -> Any:
        pickled = self._member(f"{self.prefix}/data.pkl", limit=MAX_PICKLE_BYTES)
        self.read_bytes -= len(pickled)
        unpickler = _RestrictedUnpickler(io.BytesIO(bytes(pickled)))
        unpickler.persistent_load = self.persistent_load
        return unpickler.load()


def _byteswap(buf: bytearray, dtype: torch.dtype) -> None:
    import numpy as np

    width = _element_size(dtype) // (2 if dtype.is_complex else 1)
    if width > 1 and buf:
        a = np.frombuffer(buf, dtype=np.uint8).reshape(-1, width)
        a[:] = a[:, ::-1].copy()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _LegacyCheckpoint:
    """torch.save's legacy stream (torch<1.6, `_use_new_zipfile_serialization=False`).

    Header pickles, the object pickle, the list of storage keys, then each storage's
    element count and bytes. Storages are declared in the pickle before their bytes
    follow: each is checked against what is left of the file, made zero-filled (never
    uninitialised), and must then be written exactly once, in full.
    """

    def __init__(self, f: BinaryIO, size: int, path: Path) -> None:
        self.path, self.size = path, size
        self.reader = _Reader(f, min(size, MAX_PICKLE_BYTES))
        self.roots: dict[str, tuple[torch.dtype, bytearray, torch.storage.UntypedStorage]] = {}
        self.views: dict[str, torch.storage.UntypedStorage] = {}
        self.declared = 0

    def _pickle(self, persistent_load: Any = None) -> Any:
        unpickler = _RestrictedUnpickler(self.reader)
        if persistent_load is not None:
            unpickler.persistent_load = persistent_load
        return unpickler.load()

    def persistent_load(self, saved_id: Any) -> Any:
        kind, data = _storage_id(saved_id)
        if kind == "module" and len(data) == 3:  # (class, source file, source): torch compares sources
            if not _is_stand_in_class(data[0]):
                raise pickle.UnpicklingError("malformed module record")
            return data[0]
        if kind != "storage" or len(data) != 5:
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        storage_type, key, location, numel, view = data
        dtype, nbytes = _check_storage_decl(storage_type, key, location, numel)
        if key in self.roots:
            root_dtype, buf, untyped = self.roots[key]
            if len(buf) != nbytes:
                raise CheckpointError(f"{self.path}: corrupt checkpoint (storage {key!r} declared with two sizes)")
        else:
            self.declared += 8 + nbytes
            left = self.size - self.reader.pos
            if self.declared > left:
                raise CheckpointError(f"{self.path}: corrupt checkpoint (its tensors declare {_mib(self.declared)} "
                                      f"of data but only {_mib(left)} follow in the file)")
            buf = bytearray(nbytes)  # zero-filled; must be overwritten from the file below
            untyped = _untyped(buf)
            self.roots[key] = (dtype, buf, untyped)
        if view is not None:
            if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                    and all(type(v) is int and v >= 0 for v in view[1:])):
                raise pickle.UnpicklingError("malformed storage view")
            view_key, offset, count = view
            item = _element_size(dtype)
            if (offset + count) * item > nbytes:
                raise _Unsafe(f"a storage view outside its storage ({offset}+{count} of {numel} elements)")
            if view_key not in self.views:
                self.views[view_key] = untyped[offset * item:(offset + count) * item]
            untyped = self.views[view_key]
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)

    def load(self) -> Any:
        p = self.path
        if self._pickle() != _LEGACY_MAGIC:
            raise CheckpointError(f"{p}: not a PyTorch checkpoint (bad magic number)")
        if self._pickle() != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{p}: unsupported legacy checkpoint protocol")
        sys_info = self._pickle()
        if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) is not True:
            raise CheckpointError(f"{p}: a legacy checkpoint written on a big-endian machine; not supported")
        result = self._pickle(self.persistent_load)
        keys = self._pickle()
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CheckpointError(f"{p}: corrupt checkpoint (malformed storage key list)")
        self.reader.limit = self.size
        written: set[str] = set()
        for key in keys:
            if key not in self.roots:
                raise CheckpointError(f"{p}: corrupt checkpoint (data for storage {key!r}, which no tensor declares)")
            if key in written:
                raise CheckpointError(f"{p}: corrupt checkpoint (storage {key!r} written twice)")
            dtype, buf, _ = self.roots[key]
            head = self.reader.read(8)
            count = struct.unpack("<q", head)[0] if len(head) == 8 else -1
            if count * _element_size(dtype) != len(buf) or count < 0:
                raise CheckpointError(f"{p}: truncated or corrupt checkpoint (storage {key!r} holds "
                                      f"{count if count >= 0 else 'no'} elements, its tensors declare "
                                      f"{len(buf) // _element_size(dtype)})")
            if self.reader.readinto(memoryview(buf)) != len(buf):
                raise CheckpointError(f"{p}: truncated checkpoint (storage {key!r} ends early)")
            written.add(key)
        missing = [k for k in self.roots if k not in written]
        if missing:
            raise CheckpointError(f"{p}: corrupt checkpoint ({len(missing)} declared storage(s) never written, "
                                  f"e.g. {missing[0]!r}: the weights would be uninitialised memory)")
        if self.reader.pos != self.size:
            raise CheckpointError(f"{p}: corrupt checkpoint ({self.size - self.reader.pos} bytes of unexpected "
                                  "data after the last storage)")
        return result

    @property
    def read_bytes(self) -> int:
        return sum(len(buf) for _, buf, _ in self.roots.values())


def _read_checkpoint(path: Path) -> tuple[Any, int]:
    """The unpickled object tree of a torch.save file (zip or legacy) and its tensor bytes."""
    f, size = _open_regular(path, "checkpoint", MAX_CHECKPOINT_BYTES)
    with f:
        head = f.read(4)
        f.seek(0)
        if not head:
            raise CheckpointError(f"{path}: empty file, not a PyTorch checkpoint")
        if head[:1] != b"\x80" and head != b"PK\x03\x04":
            try:
                is_tar = tarfile.is_tarfile(f)
            except (OSError, ValueError):
                is_tar = False
            if is_tar:
                raise CheckpointError(f"{path}: a pre-0.4 tar-format torch checkpoint; not supported, "
                                      "re-save it with torch>=1.6")
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor the "
                                  "legacy torch.save format with pickle protocol >= 2)")
        try:
            # a zip archive, or the legacy format (it starts with a protocol-2 pickle)
            loader: Any = (_ZipCheckpoint if head == b"PK\x03\x04" else _LegacyCheckpoint)(f, size, path)
            return loader.load(), loader.read_bytes
        except _Refused as e:
            raise CheckpointError(f"{path}: refusing to unpickle {e.qualified_name!r} ({_REFUSAL_HINT})") from None
        except _Unsafe as e:
            raise CheckpointError(f"{path}: refusing {e} (not something torch.save writes: "
                                  "a corrupt or hostile checkpoint)") from None
        except CheckpointError:
            raise
        except RecursionError:
            raise CheckpointError(f"{path}: corrupt checkpoint (pickle nested too deeply)") from None
        except MemoryError:
            raise CheckpointError(f"{path}: not enough memory to load the checkpoint") from None
        except Exception as e:  # any parse failure of an untrusted file is an input error
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_first_line(e)})") from None
