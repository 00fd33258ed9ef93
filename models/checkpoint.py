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

One job per module: checkpoint_limits (the caps), checkpoint_unpickler (the allow-list
and the stand-ins), checkpoint_files (the bounded zip / legacy readers); this module
turns the stand-ins into state dicts and builds the CaptionModel, and is the import
path for all of it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmedge.errors import CheckpointError, InputError
from mmedge.models.captioner import CaptionerConfig, CaptionModel
from mmedge.models.checkpoint_files import _first_line, _mib, _open_regular, _read_checkpoint
# The limits and the unpickler's public face are re-exported: tests and callers read them here.
from mmedge.models.checkpoint_limits import (  # noqa: F401 - re-exported
    MAX_BLOCKS_PER_STAGE,
    MAX_CHECKPOINT_BYTES,
    MAX_COMPRESSION_RATIO,
    MAX_ENCODED_SIZE,
    MAX_PICKLE_BYTES,
    MAX_TENSOR_DIMS,
    MAX_WEIGHTS,
    MAX_WORD_MAP_BYTES,
)
from mmedge.models.checkpoint_unpickler import (  # noqa: F401 - re-exported
    _PARALLEL_WRAPPERS,
    PickledObject,
    _rebuild_parameter,
    _rebuild_tensor_v2,
    restricted_pickle,
)
from mmedge.models.resnet import BackboneConfig, Bottleneck
from mmedge.runtime.vocab import Vocabulary


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
