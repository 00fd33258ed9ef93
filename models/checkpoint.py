"""Load captioners trained with sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning, safely.

The tutorial's `train.py` saves `BEST_checkpoint_<data>.pth.tar` with
`torch.save(state, filename)`, where `state` holds the *whole pickled* encoder,
decoder and Adam optimizers. A plain `torch.load` would import the tutorial's
`models.py` and torchvision and run whatever the pickle asks for; torch's
`weights_only=True` refuses the module objects. This loader does neither: it
gives `torch.load` a pickle module whose `find_class` resolves a short
allow-list of globals (tensor rebuilding, a few containers) to real objects,
every allowed model/optimizer class to an inert `PickledObject` stand-in that
only records its state, and refuses everything else. Nothing from the file is
ever executed; the stand-ins are then walked to rebuild the state dicts that
`module.state_dict()` would have returned. Forks of the tutorial often save
the decoder (or both) inside `nn.DataParallel` / `DistributedDataParallel`:
those wrappers are allowed as stand-ins too (with the `torch.device` and
config records they hold) and unwrapped to their `.module`.

Storage types (`torch.FloatStorage`, ...) never reach `find_class`: torch's own
`UnpicklerWrapper` turns any global whose name contains "Storage" into an inert
`StorageType` (a dtype holder) before asking the pickle module.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import tarfile
import types
import warnings
import zipfile
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmedge.errors import CheckpointError, InputError
from mmedge.models.captioner import CaptionerConfig, CaptionModel
from mmedge.models.resnet import BackboneConfig, Bottleneck
from mmedge.runtime.vocab import Vocabulary

_REFUSAL_HINT = "only tensors and the tutorial's model classes are allowed"


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


_STAND_INS: dict[str, type[PickledObject]] = {}


def _stand_in(qualified_name: str) -> type[PickledObject]:
    cls = _STAND_INS.get(qualified_name)
    if cls is None:
        short = qualified_name.rsplit(".", 1)[-1]
        # A dotted __qualname__ cannot be found by `inspect`, so torch's legacy
        # source check gives up quietly instead of comparing against our source.
        cls = type(short, (PickledObject,), {"qualified_name": qualified_name, "__qualname__": qualified_name})
        _STAND_INS[qualified_name] = cls
    return cls


# ------------------------------------------------------------------ allowed callables
def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None) -> Tensor:
    """torch._utils._rebuild_tensor_v2 without hooks or autograd (they are dropped)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"tensor storage is a {type(storage).__name__}, not a torch storage")
    if not (isinstance(storage_offset, int) and isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
            and all(isinstance(v, int) for v in (*size, *stride))):
        raise pickle.UnpicklingError("malformed tensor header")
    tensor = torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))
    if metadata:  # conj / neg bits
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, bool)
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


# (module, name) -> the object find_class returns. Exactly what real tutorial
# checkpoints need (checked with pickletools on torch.save output, zip and legacy):
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,  # _parameters/_buffers/_modules, hooks
    ("collections", "defaultdict"): defaultdict,  # Optimizer.state
    ("builtins", "dict"): dict,  # defaultdict's default_factory
    ("builtins", "set"): set,  # _non_persistent_buffers_set (protocol 2 has no set opcode)
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,  # checkpoints from torch 0.4-1.4
    ("torch", "device"): _device_name,  # in nn.DataParallel / DistributedDataParallel wrappers
}

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


class _RestrictedUnpickler(pickle.Unpickler):
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
        if _is_allowed_class(module, name):
            return _stand_in(f"{module}.{name}")
        raise _Refused(f"{module}.{name}")


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# What torch.load uses of `pickle_module`: `.Unpickler` (subclassed by torch's
# UnpicklerWrapper, which sets persistent_load on the instance), `.load` (the
# legacy format's header records) and `.__name__` (its dill check).
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    if len(msg) > 160:
        msg = msg[:157] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _check_container(path: Path) -> None:
    """Refuse what torch.load would not route through our pickle module, with clear messages."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(e)})") from None
    if not head:
        raise CheckpointError(f"{path}: empty file, not a PyTorch checkpoint")
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint (zip archive unreadable: {_first_line(e)})") from None
        tails = {n.split("/", 1)[-1] for n in names}
        if "constants.pkl" in tails:  # torch.load would hand it to torch.jit.load
            raise CheckpointError(f"{path}: a TorchScript archive, not a training checkpoint (torch.save output)")
        if "data.pkl" not in tails:
            raise CheckpointError(f"{path}: a zip archive without data.pkl, not a PyTorch checkpoint")
        return
    if head[:1] != b"\x80":  # legacy torch.save starts with a protocol-2 pickle
        try:
            is_tar = tarfile.is_tarfile(path)
        except OSError:
            is_tar = False
        if is_tar:
            raise CheckpointError(f"{path}: a pre-0.4 tar-format torch checkpoint; not supported, "
                                  "re-save it with torch>=1.6")
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor the "
                              "legacy torch.save format with pickle protocol >= 2)")


def _torch_load(path: Path) -> Any:
    _check_container(path)
    try:
        with path.open("rb") as f, warnings.catch_warnings():
            # the legacy format compares pickled class sources: noise for stand-ins
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=False, pickle_module=restricted_pickle, mmap=False)
    except _Refused as e:
        raise CheckpointError(f"{path}: refusing to unpickle {e.qualified_name!r} ({_REFUSAL_HINT})") from None
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt checkpoint (pickle nested too deeply)") from None
    except RuntimeError as e:
        if "explicit pickle_module" in str(e):
            raise CheckpointError(f"{path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which forbids this loader's "
                                  "restricted unpickler; unset it") from None
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_first_line(e)})") from None
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


def _encoded_size_of(encoder: Any) -> int | None:
    size = _module_attr(encoder, "enc_image_size")
    if size is None:
        out = _module_attr(encoder, "adaptive_pool", "output_size")
        size = out[0] if isinstance(out, (tuple, list)) and out and out[0] == out[-1] else out
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def load_tutorial_checkpoint(path: str | Path) -> TutorialCheckpoint:
    """Read a tutorial `BEST_checkpoint_*.pth.tar` without executing pickled code.

    Accepts the tutorial's dict with whole pickled modules (also inside
    `nn.DataParallel` / `DistributedDataParallel`, as forks save them: the
    wrapper is unwrapped to its `.module`), or the same dict whose 'encoder' /
    'decoder' are state dicts. Raises CheckpointError (one line naming the
    file) for anything else.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if not p.is_file():
        raise CheckpointError(f"{p}: not a file")
    state = _torch_load(p)
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
        encoded_size=_encoded_size_of(modules["encoder"]),
        dropout=float(dropout) if isinstance(dropout, (int, float)) and not isinstance(dropout, bool) else None,
        encoder_class=encoder_class,
        decoder_class=decoder_class,
        wrappers=wrappers,
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
        layers.append(len(ids))
        widths.append(int(_need(enc, f"resnet.{stage}.0.conv1.weight", 4, path, "encoder").shape[0]))
    return BackboneConfig(layers=tuple(layers), widths=tuple(widths), stem_width=int(stem.shape[0]))  # type: ignore[arg-type]


def infer_config(ckpt: TutorialCheckpoint, encoded_size: int | None = None) -> CaptionerConfig:
    """The CaptionerConfig whose CaptionModel has the checkpoint's shapes."""
    path, dec = ckpt.path, ckpt.decoder_state
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


def _load_strict(module: nn.Module, sd: dict[str, Tensor], what: str, path: Path) -> None:
    expected = module.state_dict()
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
    model = CaptionModel(cfg, vocab)
    _load_strict(model.encoder, ckpt.encoder_state, "encoder", ckpt.path)
    _load_strict(model.decoder, ckpt.decoder_state, "decoder", ckpt.path)
    return model.eval()


def load_captioner(checkpoint_path: str | Path, word_map_path: str | Path, *,
                   encoded_size: int | None = None) -> CaptionModel:
    """`BEST_checkpoint_*.pth.tar` + `WORDMAP_*.json` -> a CaptionModel in eval mode."""
    ckpt = load_tutorial_checkpoint(checkpoint_path)
    try:
        vocab = Vocabulary.load(word_map_path)
    except CheckpointError:
        raise
    except InputError as e:
        raise CheckpointError(str(e)) from None
    return captioner_from_checkpoint(ckpt, vocab, word_map_path=word_map_path, encoded_size=encoded_size)


__all__ = [
    "PickledObject", "TutorialCheckpoint", "captioner_from_checkpoint", "infer_config",
    "load_captioner", "load_tutorial_checkpoint", "restricted_pickle",
]


def save_checkpoint(obj: Any, path: str | Path) -> None:
    """torch.save whole or not at all (a killed training never leaves half a checkpoint), fsynced."""
    from mmedge.atomic import atomic_path

    with atomic_path(path, fsync=True) as tmp:
        torch.save(obj, tmp)
