"""Load captioners trained with sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning, safely.

The tutorial's `train.py` saves `BEST_checkpoint_<data>.pth.tar` with
`torch.save(state, filename)`, where `state` holds the *whole pickled* encoder,
decoder and Adam optimizers. A plain `torch.load` would import the tutorial's
`models.py` and torchvision and run whatever the pickle asks for; torch's
`weights_only=True` refuses the module objects. This loader does neither: it
reads both torch.save formats itself (the zip archive and the legacy stream)
with a restricted unpickler whose `find_class` resolves a short allow-list of
globals (tensor rebuilding, a few containers) to our own checked functions,
every allowed model/optimizer class to an inert `PickledObject` stand-in that
only records its state, and refuses everything else. Nothing from the file is
ever executed; the stand-ins are then walked to rebuild the state dicts that
`module.state_dict()` would have returned. Forks of the tutorial often save
the decoder (or both) inside `nn.DataParallel` / `DistributedDataParallel`:
those wrappers are allowed as stand-ins too (with the `torch.device` and
config records they hold) and unwrapped to their `.module`.

Hostile files are refused before they cost anything (each a one-line CheckpointError):
- nothing a pickle says may modify an object it did not create: BUILD only on the
  stand-ins, SETITEM(S)/APPEND(S)/ADDITEMS only on the plain containers, and calls only
  to the allow-listed callables (stand-in classes are fresh per load), so a refused
  checkpoint cannot change how the next one loads;
- every tensor must lie inside its storage (offset + extent from shape and stride,
  non-negative, at most MAX_TENSOR_DIMS dims) and not expand it (numel <= storage size);
- storages are read whole from the file: a zip member must hold exactly the declared
  bytes; a legacy stream must write every storage it declares, exactly once, in full,
  and declare no more bytes than follow in the file (no uninitialised memory, ever);
- sizes are capped before allocating: the file (MAX_CHECKPOINT_BYTES), the pickle
  (MAX_PICKLE_BYTES), zip members (declared sizes against the archive, no overlapping
  members, at most MAX_COMPRESSION_RATIO inflation), the weights (MAX_WEIGHTS elements,
  and no more than twice the bytes actually stored), the pooled grid (MAX_ENCODED_SIZE);
  the model is sized on the meta device and compared with the weights first;
- the checkpoint and the word map must be regular files (a FIFO, a device or a folder
  is refused without blocking), the word map at most MAX_WORD_MAP_BYTES.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import os
import pickle
import stat
import struct
import tarfile
import types
import zipfile
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from mmedge.errors import CheckpointError, InputError
from mmedge.models.captioner import CaptionerConfig, CaptionModel
from mmedge.models.resnet import BackboneConfig, Bottleneck
from mmedge.runtime.vocab import Vocabulary

_REFUSAL_HINT = "only tensors and the tutorial's model classes are allowed"

# ------------------------------------------------------------------ limits (documented in the README)
MAX_CHECKPOINT_BYTES = 8 << 30  # the checkpoint file, and all tensor bytes read from it
MAX_PICKLE_BYTES = 64 << 20  # the pickled object tree (data.pkl / the legacy stream's pickles)
MAX_COMPRESSION_RATIO = 20  # a compressed zip member inflates at most this much (torch stores them uncompressed)
MAX_TENSOR_DIMS = 32
MAX_WEIGHTS = 1 << 29  # elements in the encoder + decoder weights (the tutorial's ResNet-101: ~65M)
MAX_BLOCKS_PER_STAGE = 64  # ResNet-152 has 36
MAX_ENCODED_SIZE = 64  # the pooled grid (the tutorial: 14)
MAX_WORD_MAP_BYTES = 64 << 20  # the COCO word map: ~0.2 MB
_MAX_INDEX = 1 << 62


# ------------------------------------------------------------------ inert stand-ins
class PickledObject:
    """Inert stand-in for a pickled module or optimizer: keeps its state, runs nothing.

    `qualified_name` is the class the pickle named (e.g. "models.Encoder");
    `pickle_state` is what `__setstate__` received (a module's `__dict__`).
    """

    qualified_name: str = "?"
    dump_patches = False  # read by torch's legacy loader when it compares class sources

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledObject":
        obj = object.__new__(cls)
        object.__setattr__(obj, "pickle_args", args)
        object.__setattr__(obj, "pickle_state", None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "pickle_state", state)

    def __repr__(self) -> str:
        return f"<pickled {self.qualified_name}>"


def _new_stand_in(qualified_name: str) -> type[PickledObject]:
    short = qualified_name.rsplit(".", 1)[-1]
    # A dotted __qualname__ cannot be found by `inspect`, so torch's legacy
    # source check gives up quietly instead of comparing against our source.
    return type(short, (PickledObject,), {"qualified_name": qualified_name, "__qualname__": qualified_name})


class _StorageType:
    """What `torch.FloatStorage` (or `torch.cuda.FloatStorage`, ...) names in a pickle: a dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


# ------------------------------------------------------------------ allowed callables
def _storage_elements(storage: Any) -> int:
    return int(storage._size())  # .size() warns that TypedStorage is deprecated


def _check_tensor_header(storage: Any, storage_offset: Any, size: Any, stride: Any) -> tuple[tuple, tuple]:
    """Refuse a tensor that reaches outside its storage or expands it (stride 0, overlaps)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"tensor storage is a {type(storage).__name__}, not a torch storage")
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))):
        raise pickle.UnpicklingError("malformed tensor header")
    values = (storage_offset, *size, *stride)
    if not all(type(v) is int for v in values) or len(size) != len(stride):
        raise pickle.UnpicklingError("malformed tensor header")
    if len(size) > MAX_TENSOR_DIMS:
        raise _Unsafe(f"a tensor with {len(size)} dimensions (at most {MAX_TENSOR_DIMS})")
    if any(v < 0 or v > _MAX_INDEX for v in values):
        raise _Unsafe(f"a tensor with a negative or huge shape, stride or offset "
                      f"(shape {tuple(size)}, stride {tuple(stride)}, offset {storage_offset})")
    available = _storage_elements(storage)
    numel = 1
    for s in size:
        numel *= s
    if numel == 0:
        end = storage_offset
    else:
        end = storage_offset + 1 + sum((s - 1) * st for s, st in zip(size, stride))
    if end > available or numel > max(available - storage_offset, 0):
        raise _Unsafe(f"a tensor of shape {tuple(size)} (stride {tuple(stride)}, offset {storage_offset}) "
                      f"that does not fit in its storage of {available} elements")
    return tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None) -> Tensor:
    """torch._utils._rebuild_tensor_v2 without hooks or autograd (they are dropped), bounds-checked."""
    size, stride = _check_tensor_header(storage, storage_offset, size, stride)
    tensor = torch._utils._rebuild_tensor(storage, storage_offset, size, stride)
    if metadata:  # conj / neg bits
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and type(v) is bool
                                                     for k, v in metadata.items()):
            raise pickle.UnpicklingError("malformed tensor metadata")
        torch._utils.set_tensor_metadata(tensor, metadata)
    return tensor


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Tensor:
    """torch._utils._rebuild_parameter, returning the plain tensor (as state_dict() does)."""
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data.detach()


def _rebuild_parameter_with_state(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                                  state: Any = None) -> Tensor:
    """Same, ignoring the Python attributes the parameter carried."""
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _no_backend() -> None:
    """torch<=1.4 modules pickle `_backend` as a call to this (torch keeps it returning None)."""
    return None


def _device_name(type_: Any, index: Any = None) -> str:
    """torch.device (a DataParallel's `src_device_obj`, a DDP's `device`): only its name is kept."""
    if not isinstance(type_, str) or not (index is None or (isinstance(index, int) and not isinstance(index, bool))):
        raise pickle.UnpicklingError("malformed torch.device")
    return type_ if index is None or ":" in type_ else f"{type_}:{index}"


def _new_defaultdict(default_factory: Any = None, *rest: Any) -> defaultdict:
    """collections.defaultdict, whose default factory may only be dict (an Optimizer's state) or None."""
    if rest or not (default_factory is None or default_factory is dict):
        raise _Unsafe("a defaultdict whose default factory is not dict")
    return defaultdict(default_factory)


# (module, name) -> the object find_class returns. Exactly what real tutorial
# checkpoints need (checked with pickletools on torch.save output, zip and legacy):
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,  # _parameters/_buffers/_modules, hooks
    ("collections", "defaultdict"): _new_defaultdict,  # Optimizer.state
    ("builtins", "dict"): dict,  # defaultdict's default_factory
    ("builtins", "set"): set,  # _non_persistent_buffers_set (protocol 2 has no set opcode)
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,  # checkpoints from torch 0.4-1.4
    ("torch", "device"): _device_name,  # in nn.DataParallel / DistributedDataParallel wrappers
}
_ALLOWED_CALLABLES = frozenset(_ALLOWED_GLOBALS.values())
_CONTAINERS = (dict, OrderedDict, defaultdict)  # exact types SETITEM(S) may fill
_NEW_CLASSES = frozenset({dict, OrderedDict, set})  # NEWOBJ may make these (and stand-ins)

# Classes that become PickledObject stand-ins.
_TUTORIAL_CLASSES = frozenset({
    ("models", "Encoder"), ("models", "Attention"), ("models", "DecoderWithAttention"),
    ("torchvision.models.resnet", "Bottleneck"), ("torchvision.models.resnet", "BasicBlock"),
})
_TORCH_CLASS_PACKAGES = ("torch.nn.modules.", "torch.optim.")
# Forks of the tutorial save `nn.DataParallel(decoder)` (or DDP) whole: the wrapper becomes a stand-in
# too and is unwrapped to its `.module` (its only weights; state_dict() would prefix them "module.").
_PARALLEL_WRAPPERS = frozenset({
    "torch.nn.parallel.data_parallel.DataParallel", "torch.nn.parallel.distributed.DistributedDataParallel",
})
# Plain records a pickled DistributedDataParallel holds (torch 2.x); inert stand-ins like the rest.
_PARALLEL_RECORDS = frozenset({
    ("torch.nn.parallel.distributed", "_BucketCapacityConfig"), ("torch.distributed.algorithms.join", "_JoinConfig"),
})


def _is_allowed_class(module: str, name: str) -> bool:
    if (module, name) in _TUTORIAL_CLASSES or (module, name) in _PARALLEL_RECORDS:
        return True
    if f"{module}.{name}" in _PARALLEL_WRAPPERS:
        return True
    return (module.startswith(_TORCH_CLASS_PACKAGES) and name.isidentifier() and name[:1].isupper()
            and all(part.isidentifier() for part in module.split(".")))


class _Refused(Exception):
    def __init__(self, qualified_name: str) -> None:
        super().__init__(qualified_name)
        self.qualified_name = qualified_name


class _Unsafe(Exception):
    """The pickle asks for something the loader never does (it names what)."""


def _what(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {getattr(obj, 'qualified_name', None) or obj.__qualname__}"
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"the function {obj.__qualname__}"
    return f"a {type(obj).__name__}"


def _is_stand_in_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, PickledObject) and obj is not PickledObject


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler (its opcodes can be checked one by one) with an allow-list.

    Every opcode that calls or modifies something is checked: REDUCE / OBJ / INST only call
    the allow-listed callables and this load's stand-in classes, NEWOBJ only makes those
    classes and plain containers, BUILD only fills stand-ins (and ignores a state dict's
    `_metadata`), SETITEM(S) / APPEND(S) / ADDITEMS only fill plain containers. The stand-in
    classes are made afresh for each load, so nothing is shared between loads.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._stand_ins: dict[str, type[PickledObject]] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if not (isinstance(module, str) and isinstance(name, str)):
            raise _Refused(f"{module!r}.{name!r}")
        # Protocol <3 pickles spell builtins `__builtin__`; the default find_class
        # maps those names, an override has to do it itself.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is not None:
            return found
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if _is_allowed_class(module, name):
            qualified = f"{module}.{name}"
            cls = self._stand_ins.get(qualified)
            if cls is None:
                cls = self._stand_ins[qualified] = _new_stand_in(qualified)
            return cls
        raise _Refused(f"{module}.{name}")

    # -- opcodes that call
    @staticmethod
    def _check_call(func: Any, args: Any) -> None:
        if not (_is_stand_in_class(func) or (func in _ALLOWED_CALLABLES if _hashable(func) else False)):
            raise _Unsafe(f"a call to {_what(func)}")
        if type(args) is not tuple:
            raise pickle.UnpicklingError("malformed call arguments")

    def _load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        self._check_call(func, args)
        stack[-1] = func(*args)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (_is_stand_in_class(cls) or (_hashable(cls) and cls in _NEW_CLASSES)) or type(args) is not tuple:
            raise _Unsafe(f"creating {_what(cls)}")
        self.append(cls.__new__(cls, *args) if _is_stand_in_class(cls) else cls())

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        if type(kwargs) is not dict:
            raise pickle.UnpicklingError("malformed NEWOBJ_EX")
        self.stack.append(args)
        self._load_newobj()
        if kwargs and isinstance(self.stack[-1], PickledObject):
            object.__setattr__(self.stack[-1], "pickle_args", (*self.stack[-1].pickle_args, kwargs))

    def _instantiate(self, klass: Any, args: list) -> None:
        self._check_call(klass, tuple(args))
        self.append(klass(*args))

    # -- opcodes that modify
    def _load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, PickledObject) and not isinstance(inst, type):
            inst.__setstate__(state)
        elif type(inst) in (OrderedDict, defaultdict) and (state is None or isinstance(state, (dict, tuple))):
            pass  # a state dict's `_metadata` (torch's version records); not needed
        else:
            raise _Unsafe(f"a pickle that sets the state of {_what(inst)}")

    def _container(self, kinds: tuple[type, ...], op: str) -> Any:
        target = self.stack[-1]
        if type(target) not in kinds:
            raise _Unsafe(f"a pickle that modifies {_what(target)} ({op})")
        return target

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._container(_CONTAINERS, "SETITEM")[key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._container(_CONTAINERS, "SETITEMS")
        if len(items) % 2:
            raise pickle.UnpicklingError("odd number of items for SETITEMS")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._container((list,), "APPEND").append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        self._container((list,), "APPENDS").extend(items)

    def _load_additems(self) -> None:
        items = self.pop_mark()
        self._container((set,), "ADDITEMS").update(items)

    def _load_bytearray8(self) -> None:
        raise _Unsafe("a pickled bytearray")

    def _load_next_buffer(self) -> None:
        raise _Unsafe("out-of-band pickle buffers")

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.APPEND[0]] = _load_append
    dispatch[pickle.APPENDS[0]] = _load_appends
    dispatch[pickle.ADDITEMS[0]] = _load_additems
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    dispatch[pickle.NEXT_BUFFER[0]] = _load_next_buffer


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# What torch.load uses of `pickle_module`: `.Unpickler` (subclassed by torch's
# UnpicklerWrapper, which sets persistent_load on the instance), `.load` (the
# legacy format's header records) and `.__name__` (its dill check). mmedge itself
# does not use torch.load (see _read_checkpoint); this stays for callers who do.
restricted_pickle = types.ModuleType("mmedge_restricted_pickle", "pickle with an allow-list find_class")
restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


# ------------------------------------------------------------------ loading
@dataclass
class TutorialCheckpoint:
    """Tensors and metadata of a tutorial checkpoint; nothing executable."""

    path: Path
    encoder_state: dict[str, Tensor]
    decoder_state: dict[str, Tensor]
    epoch: int | None = None
    epochs_since_improvement: int | None = None
    bleu4: float | None = None
    encoded_size: int | None = None  # the pickled Encoder's enc_image_size
    dropout: float | None = None  # the pickled decoder's Dropout p
    encoder_class: str | None = None  # "models.Encoder", or None for a state dict
    decoder_class: str | None = None
    wrappers: dict[str, str] = field(default_factory=dict)  # entry -> nn.DataParallel/DDP class it was saved in
    stored_bytes: int | None = None  # tensor bytes read from the file (bounds what the weights may claim)


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


def _is_batchnorm(obj: PickledObject) -> bool:
    return obj.qualified_name.startswith("torch.nn.modules.batchnorm.")


def _walk_module(obj: PickledObject, prefix: str, out: dict[str, Tensor], path: Path, entry: str,
                 seen: set[int]) -> None:
    where = f"{entry}.{prefix[:-1]}" if prefix else entry
    if id(obj) in seen:
        raise CheckpointError(f"{path}: '{where}' contains itself (corrupt module tree)")
    seen.add(id(obj))
    state = obj.pickle_state
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: '{where}' ({obj.qualified_name}) has no module state")
    groups = {}
    for attr in ("_parameters", "_buffers", "_modules"):
        value = state.get(attr, {})
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: '{where}' ({obj.qualified_name}) has a malformed {attr}")
        groups[attr] = value
    non_persistent = state.get("_non_persistent_buffers_set", set())
    if not isinstance(non_persistent, (set, frozenset)):
        raise CheckpointError(f"{path}: '{where}' ({obj.qualified_name}) has a malformed _non_persistent_buffers_set")

    def add(name: Any, value: Any) -> None:
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"{path}: '{where}.{name}' is a {type(value).__name__}, expected a tensor")
        out[prefix + name] = value.detach()

    for name, value in groups["_parameters"].items():
        if value is not None:
            add(name, value)
    for name, value in groups["_buffers"].items():
        if value is not None and name not in non_persistent:
            add(name, value)
    # BatchNorm from torch 0.4.0 has no num_batches_tracked; torch's own loader adds a zero.
    if (_is_batchnorm(obj) and state.get("track_running_stats", True)
            and "running_mean" in groups["_buffers"] and "num_batches_tracked" not in groups["_buffers"]):
        out[prefix + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    for name, child in groups["_modules"].items():
        if child is None:
            continue
        if not isinstance(name, str) or not isinstance(child, PickledObject):
            raise CheckpointError(f"{path}: '{where}.{name}' is a {type(child).__name__}, expected a module")
        _walk_module(child, f"{prefix}{name}.", out, path, entry, seen)


def _unwrap_parallel(value: Any, path: Path, entry: str) -> tuple[Any, str | None]:
    """A pickled nn.DataParallel / DistributedDataParallel -> (its `.module`, the wrapper's class name)."""
    wrapper = None
    seen: set[int] = set()
    while isinstance(value, PickledObject) and value.qualified_name in _PARALLEL_WRAPPERS:
        if id(value) in seen:
            raise CheckpointError(f"{path}: '{entry}' contains itself (corrupt module tree)")
        seen.add(id(value))
        wrapper = wrapper or value.qualified_name
        modules = value.pickle_state.get("_modules") if isinstance(value.pickle_state, dict) else None
        inner = modules.get("module") if isinstance(modules, dict) else None
        if not isinstance(inner, PickledObject):
            raise CheckpointError(f"{path}: '{entry}' is a {value.qualified_name} without a wrapped module")
        value = inner
    return value, wrapper


def _state_dict_of(value: Any, path: Path, entry: str) -> tuple[dict[str, Tensor], str | None]:
    """A pickled module or a state dict -> (state dict, pickled class name or None)."""
    if isinstance(value, PickledObject):
        if value.qualified_name.startswith("torch.optim."):
            raise CheckpointError(f"{path}: '{entry}' is an optimizer ({value.qualified_name}), expected a module")
        out: dict[str, Tensor] = OrderedDict()
        _walk_module(value, "", out, path, entry, set())
        return out, value.qualified_name
    if isinstance(value, dict):
        bad = [k for k, v in value.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
        if bad or not value:
            what = f"key {bad[0]!r} is not a name -> tensor item" if bad else "it is empty"
            raise CheckpointError(f"{path}: '{entry}' is a dict but not a state dict ({what})")
        sd = OrderedDict((k, v.detach()) for k, v in value.items())
        if all(k.startswith("module.") for k in sd):  # saved from nn.DataParallel
            sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
        return sd, None
    raise CheckpointError(f"{path}: '{entry}' is a {type(value).__name__}, "
                          "expected the tutorial's pickled module or a state dict")


def _optional_number(state: dict, key: str, kind: type, path: Path) -> Any:
    value = state.get(key)
    if value is None:
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise CheckpointError(f"{path}: '{key}' is a {type(value).__name__}, expected {'an int' if kind is int else 'a number'}")
    return kind(value)


def _module_attr(obj: Any, *names: str) -> Any:
    """state[names[0]] of a stand-in, following `_modules` for the rest; None if absent."""
    for i, name in enumerate(names):
        if not isinstance(obj, PickledObject) or not isinstance(obj.pickle_state, dict):
            return None
        state = obj.pickle_state
        if i < len(names) - 1:
            modules = state.get("_modules")
            obj = modules.get(name) if isinstance(modules, dict) else None
        else:
            return state.get(name)
    return None


def _encoded_size_of(encoder: Any, path: Path) -> int | None:
    size = _module_attr(encoder, "enc_image_size")
    if size is None:
        out = _module_attr(encoder, "adaptive_pool", "output_size")
        size = out[0] if isinstance(out, (tuple, list)) and out and out[0] == out[-1] else out
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return None
    _check_encoded_size(size, path, "the pickled Encoder's enc_image_size")
    return size


def _check_encoded_size(size: int, path: Path, what: str) -> None:
    if not 0 < size <= MAX_ENCODED_SIZE:
        raise CheckpointError(f"{path}: {what} is {size}, outside 1..{MAX_ENCODED_SIZE} "
                              "(the tutorial pools to 14x14)")


def load_tutorial_checkpoint(path: str | Path) -> TutorialCheckpoint:
    """Read a tutorial `BEST_checkpoint_*.pth.tar` without executing pickled code.

    Accepts the tutorial's dict with whole pickled modules (also inside
    `nn.DataParallel` / `DistributedDataParallel`, as forks save them: the
    wrapper is unwrapped to its `.module`), or the same dict whose 'encoder' /
    'decoder' are state dicts. Raises CheckpointError (one line naming the
    file) for anything else.
    """
    p = Path(path)
    state, stored = _read_checkpoint(p)
    try:
        return _from_state(p, state, stored)
    except RecursionError:
        raise CheckpointError(f"{p}: corrupt checkpoint (module tree nested too deeply)") from None


def _from_state(p: Path, state: Any, stored: int) -> TutorialCheckpoint:
    if not isinstance(state, dict):
        kind = state.qualified_name if isinstance(state, PickledObject) else type(state).__name__
        raise CheckpointError(f"{p}: checkpoint holds a {kind}, expected the tutorial's dict "
                              "with 'encoder' and 'decoder' entries")
    for entry in ("encoder", "decoder"):
        if state.get(entry) is None:
            keys = ", ".join(repr(k) for k in list(state)[:8])
            raise CheckpointError(f"{p}: no '{entry}' entry (keys: {keys or 'none'}); "
                                  "not a tutorial BEST_checkpoint file?")
    modules, wrappers = {}, {}
    for entry in ("encoder", "decoder"):
        modules[entry], wrapper = _unwrap_parallel(state[entry], p, entry)
        if wrapper is not None:
            wrappers[entry] = wrapper
    encoder_state, encoder_class = _state_dict_of(modules["encoder"], p, "encoder")
    decoder_state, decoder_class = _state_dict_of(modules["decoder"], p, "decoder")
    dropout = _module_attr(modules["decoder"], "dropout", "p")
    return TutorialCheckpoint(
        path=p,
        encoder_state=encoder_state,
        decoder_state=decoder_state,
        epoch=_optional_number(state, "epoch", int, p),
        epochs_since_improvement=_optional_number(state, "epochs_since_improvement", int, p),
        bleu4=_optional_number(state, "bleu-4", float, p),
        encoded_size=_encoded_size_of(modules["encoder"], p),
        dropout=float(dropout) if (isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
                                   and 0.0 <= dropout <= 1.0) else None,  # only used in training; NaN/junk dropped
        encoder_class=encoder_class,
        decoder_class=decoder_class,
        wrappers=wrappers,
        stored_bytes=stored,
    )


# ------------------------------------------------------------------ building the model
def _need(sd: dict[str, Tensor], key: str, ndim: int, path: Path, what: str) -> Tensor:
    t = sd.get(key)
    if t is None or t.ndim != ndim:
        found = "missing" if t is None else f"has shape {tuple(t.shape)}"
        raise CheckpointError(f"{path}: wrong architecture: {what} '{key}' is {found} "
                              "(not the tutorial's ResNet encoder / attention decoder?)")
    return t


def _infer_backbone(enc: dict[str, Tensor], path: Path) -> BackboneConfig:
    stem = _need(enc, "resnet.0.weight", 4, path, "encoder")
    layers, widths = [], []
    for stage in range(4, 8):
        blocks = {k.split(".")[2] for k in enc if k.startswith(f"resnet.{stage}.")}
        ids = sorted(int(b) for b in blocks if b.isdigit())
        if not ids or ids != list(range(len(ids))) or len(ids) != len(blocks):
            raise CheckpointError(f"{path}: wrong architecture: encoder stage 'resnet.{stage}' has blocks "
                                  f"{sorted(blocks) or 'none'} (expected the 4 stages of a ResNet trunk)")
        if len(ids) > MAX_BLOCKS_PER_STAGE:
            raise CheckpointError(f"{path}: wrong architecture: encoder stage 'resnet.{stage}' has {len(ids)} blocks "
                                  f"(at most {MAX_BLOCKS_PER_STAGE})")
        layers.append(len(ids))
        widths.append(int(_need(enc, f"resnet.{stage}.0.conv1.weight", 4, path, "encoder").shape[0]))
    return BackboneConfig(layers=tuple(layers), widths=tuple(widths), stem_width=int(stem.shape[0]))  # type: ignore[arg-type]


def infer_config(ckpt: TutorialCheckpoint, encoded_size: int | None = None) -> CaptionerConfig:
    """The CaptionerConfig whose CaptionModel has the checkpoint's shapes."""
    path, dec = ckpt.path, ckpt.decoder_state
    if encoded_size is not None:
        _check_encoded_size(encoded_size, path, "the encoded size")
    backbone = _infer_backbone(ckpt.encoder_state, path)
    emb = _need(dec, "embedding.weight", 2, path, "decoder")
    enc_att = _need(dec, "attention.encoder_att.weight", 2, path, "decoder")
    init_h = _need(dec, "init_h.weight", 2, path, "decoder")
    if int(enc_att.shape[1]) != backbone.out_channels:
        raise CheckpointError(f"{path}: wrong architecture: the encoder outputs {backbone.out_channels} channels "
                              f"({backbone.widths[-1]} x {Bottleneck.expansion}) but the decoder expects "
                              f"{int(enc_att.shape[1])}")
    return CaptionerConfig(
        backbone=backbone,
        encoded_size=encoded_size or ckpt.encoded_size or 14,
        embed_dim=int(emb.shape[1]),
        attention_dim=int(enc_att.shape[0]),
        decoder_dim=int(init_h.shape[0]),
        vocab_size=int(emb.shape[0]),
        dropout=ckpt.dropout if ckpt.dropout is not None else 0.5,
    )


def _few(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _check_budget(ckpt: TutorialCheckpoint) -> None:
    """The weights may not claim more than MAX_WEIGHTS elements, nor (with aliased views) twice what is stored."""
    count = nbytes = 0
    for sd in (ckpt.encoder_state, ckpt.decoder_state):
        for t in sd.values():
            count += t.numel()
            nbytes += t.numel() * t.element_size()
    if count > MAX_WEIGHTS:
        raise CheckpointError(f"{ckpt.path}: the weights hold {count} elements, over the {MAX_WEIGHTS} limit")
    if ckpt.stored_bytes is not None and nbytes > 2 * ckpt.stored_bytes + (1 << 20):
        raise CheckpointError(f"{ckpt.path}: corrupt checkpoint (its weights claim {_mib(nbytes)} but the file "
                              f"stores {_mib(ckpt.stored_bytes)}: tensors alias each other)")


def _compare(expected: dict[str, Tensor], sd: dict[str, Tensor], what: str, path: Path) -> None:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and sd[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_few(shapes, 3)}")
    if problems:
        raise CheckpointError(f"{path}: wrong architecture for the {what}: {'; '.join(problems)}")


def _load_strict(module: nn.Module, sd: dict[str, Tensor], what: str, path: Path) -> None:
    _compare(module.state_dict(), sd, what, path)
    try:
        module.load_state_dict(sd, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot load the {what} weights ({_first_line(e)})") from None


def captioner_from_checkpoint(ckpt: TutorialCheckpoint, vocab: Vocabulary, *,
                              word_map_path: str | Path | None = None,
                              encoded_size: int | None = None) -> CaptionModel:
    """Build the CaptionModel the checkpoint describes and load its weights (eval mode).

    `encoded_size` overrides the pooled grid size (the pickled Encoder's
    enc_image_size, else 14) — needed only for state-dict checkpoints trained
    with another size, since the pooling has no weights to infer it from.
    """
    cfg = infer_config(ckpt, encoded_size)
    if len(vocab) != cfg.vocab_size:
        wm = f"word map {word_map_path}" if word_map_path is not None else "the word map"
        raise CheckpointError(f"{ckpt.path}: the decoder has {cfg.vocab_size} words but {wm} has {len(vocab)}; "
                              "use the WORDMAP_*.json the checkpoint was trained with")
    _check_budget(ckpt)
    with torch.device("meta"):  # sized from the checkpoint's shapes: compare them before allocating anything
        skeleton = CaptionModel(cfg, vocab)
    _compare(skeleton.encoder.state_dict(), ckpt.encoder_state, "encoder", ckpt.path)
    _compare(skeleton.decoder.state_dict(), ckpt.decoder_state, "decoder", ckpt.path)
    del skeleton
    model = CaptionModel(cfg, vocab)
    _load_strict(model.encoder, ckpt.encoder_state, "encoder", ckpt.path)
    _load_strict(model.decoder, ckpt.decoder_state, "decoder", ckpt.path)
    return model.eval()


def load_captioner(checkpoint_path: str | Path, word_map_path: str | Path, *,
                   encoded_size: int | None = None) -> CaptionModel:
    """`BEST_checkpoint_*.pth.tar` + `WORDMAP_*.json` -> a CaptionModel in eval mode."""
    vocab = load_word_map(word_map_path)  # first: it is cheap, and a bad one should not wait for the checkpoint
    ckpt = load_tutorial_checkpoint(checkpoint_path)
    return captioner_from_checkpoint(ckpt, vocab, word_map_path=word_map_path, encoded_size=encoded_size)


def load_word_map(path: str | Path) -> Vocabulary:
    """Read a tutorial `WORDMAP_*.json`: a regular file of at most MAX_WORD_MAP_BYTES (never blocks on a FIFO)."""
    p = Path(path)
    f, _ = _open_regular(p, "word map", MAX_WORD_MAP_BYTES)
    with f:
        try:
            raw = f.read(MAX_WORD_MAP_BYTES + 1)
        except OSError as e:
            raise CheckpointError(f"{p}: cannot read the word map ({_first_line(e)})") from None
    if len(raw) > MAX_WORD_MAP_BYTES:
        raise CheckpointError(f"{p}: the word map is over the {_mib(MAX_WORD_MAP_BYTES)} limit")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{p}: not a JSON word map ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and type(v) is int for k, v in data.items()):
        raise CheckpointError(f"{p}: expected a JSON object mapping words to integer ids (the tutorial's "
                              "WORDMAP_*.json)")
    try:
        return Vocabulary(data)
    except InputError as e:
        raise CheckpointError(f"{p}: {e}") from None


__all__ = [
    "PickledObject", "TutorialCheckpoint", "captioner_from_checkpoint", "infer_config",
    "load_captioner", "load_tutorial_checkpoint", "load_word_map", "restricted_pickle",
]


def save_checkpoint(obj: Any, path: str | Path) -> None:
    """torch.save whole or not at all (a killed training never leaves half a checkpoint), fsynced."""
    from mmedge.atomic import atomic_path

    with atomic_path(path, fsync=True) as tmp:
        torch.save(obj, tmp)
