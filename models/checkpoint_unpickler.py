"""The restricted unpickler that reads a torch.save pickle without running anything it names.

`find_class` resolves a short allow-list of globals (tensor rebuilding, a few containers)
to our own checked functions, every allowed model/optimizer class to an inert, per-load
`PickledObject` stand-in, and refuses everything else; every opcode that calls or modifies
an object is checked (see `_RestrictedUnpickler`). Kept apart from the file readers
(checkpoint_files) because it is the security boundary: what a pickle may name and do.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
from collections import OrderedDict, defaultdict
from typing import Any

import torch
from torch import Tensor

from mmedge.models.checkpoint_limits import _MAX_INDEX, MAX_TENSOR_DIMS


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
# does not use torch.load (see checkpoint_files._read_checkpoint); this stays for callers who do.
restricted_pickle = types.ModuleType("mmedge_restricted_pickle", "pickle with an allow-list find_class")
restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
