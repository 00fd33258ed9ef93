"""The model registry: the one place that lists mmedge's models.

Two halves, so that listing needs no torch (`mmedge models` on a device install):

- `CATALOG`, torch-free: each model's name, runtime pipeline, config names, graphs
  with their input/output names and dynamic axes, and description. `info()` /
  `catalog()` read it; importing this module never imports torch.
- `ModelSpec`, built by the model's own module (which needs torch) when `get()`
  asks for it: `register()` joins the catalog entry with the module's configs,
  builder, graph wrappers, example inputs and preprocessing parameters, and fails
  if the two disagree. With torch missing, `get()` raises `MissingDependencyError`.

Exporters, the golden-output script, the CLI and the tests read it; nothing else
keeps a list of models (a meta-test fails when a registered model has no test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from mmedge.errors import InputError, UnknownNameError, require
from mmedge.registry import Registry
from mmedge.runtime.roles import DECODER_INIT, DECODER_STEP, ENCODER, NO_HINTS, GraphHints, hints_for

if TYPE_CHECKING:
    import torch
    from torch import nn

    # name -> tensor, in the graph's input order
    Feeds = dict[str, torch.Tensor]


@dataclass(frozen=True)
class GraphInfo:
    """The interface of one exported graph (torch-free): input and output names in
    order, `dynamic_axes`: an input/output name -> {axis index: axis name}, and `hints`:
    the graph's role as recipes and exporters read it (decoder, step graph, ops to quantize)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    hints: GraphHints = NO_HINTS


@dataclass(frozen=True)
class ModelInfo:
    """What is known of a model without torch: enough to list it and name its graphs."""

    name: str
    pipeline: str  # runtime pipeline: "captioner" | "audio" | "refocus"
    module: str  # the module (needs torch) that registers its ModelSpec
    configs: tuple[str, ...]
    graphs: tuple[GraphInfo, ...]
    description: str = ""


def _batch(*names: str) -> dict[str, dict[int, str]]:
    return {n: {0: "batch"} for n in names}


_IMG = {0: "batch", 2: "height", 3: "width"}
CATALOG: dict[str, ModelInfo] = {m.name: m for m in (
    ModelInfo(
        "captioner", "captioner", "mmedge.models.captioner", ("tiny", "full", "demo"), (
            GraphInfo(ENCODER, ("image",), ("features",), _batch("image", "features")),
            GraphInfo(DECODER_INIT, ("features",), ("h", "c", "att1"), _batch("features", "h", "c", "att1"),
                      hints_for(DECODER_INIT)),
            GraphInfo(DECODER_STEP, ("features", "att1", "prev_word", "h", "c"),
                      ("log_probs", "h_next", "c_next", "alpha"),
                      _batch("features", "att1", "prev_word", "h", "c", "log_probs", "h_next", "c_next", "alpha"),
                      hints_for(DECODER_STEP)),
        ),
        "Show, Attend and Tell: ResNet encoder, attention LSTM decoder, beam search in the runtime"),
    ModelInfo(
        "refocus", "refocus", "mmedge.models.refocus", ("tiny", "demo", "full"), (
            GraphInfo("model", ("image", "depth", "near", "far"), ("refocused",),
                      {"image": _IMG, "depth": _IMG, "near": {0: "batch"}, "far": {0: "batch"}, "refocused": _IMG}),
        ),
        "Depth-based synthetic defocus: soft in-focus mask and depth-dependent Gaussian blur levels; "
        "focus range [near, far] is an input"),
    ModelInfo(
        "soundnet", "audio", "mmedge.models.soundnet", ("tiny", "demo", "full"), (
            GraphInfo("model", ("waveform",), ("objects", "scenes", "embedding"),
                      {"waveform": {0: "batch", 1: "samples"}, **_batch("objects", "scenes", "embedding")}),
        ),
        "SoundNet-8: 1-D conv encoder on the raw waveform; object/scene logits and conv7 embedding, "
        "averaged over time"),
    ModelInfo(
        "voice-encoder", "audio", "mmedge.models.voice_encoder", ("tiny", "demo", "full"), (
            GraphInfo("model", ("spectrogram",), ("embedding", "logits"),
                      {"spectrogram": {0: "batch", 3: "frames"}, **_batch("embedding", "logits")}),
        ),
        "Speech2Face-style voice encoder: power-law STFT (front-end in the runtime) -> VGG CNN, "
        "mean over time, embedding + classifier"),
)}


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph of a model.

    `wrap(model)` returns an nn.Module whose `forward(*inputs)` takes the inputs in
    `inputs` order and returns a tuple in `outputs` order. `example(model, config,
    batch, generator)` returns feeds for it (used for tracing and golden outputs).
    `dynamic_axes` maps an input/output name to {axis index: axis name}; `hints` as on GraphInfo.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    wrap: Callable[[nn.Module], nn.Module]
    example: Callable[[nn.Module, Any, int, torch.Generator], Feeds]
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    hints: GraphHints = NO_HINTS


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it per config and which graphs it exports."""

    name: str
    pipeline: str  # runtime pipeline: "captioner" | "audio" | "refocus"
    configs: Mapping[str, Any]  # config name -> config dataclass instance
    build: Callable[[Any], nn.Module]
    graphs: tuple[GraphSpec, ...]
    preprocessing: Callable[[Any], dict[str, Any]]
    description: str = ""
    # config -> extra manifest fields the runtime needs (e.g. which output holds class logits)
    manifest_extra: Callable[[Any], dict[str, Any]] = lambda cfg: {}
    # config -> class names for classifier outputs (None: not a classifier)
    labels: Callable[[Any], list[str] | None] = lambda cfg: None
    # config name -> weights file shipped in models/weights/ (trained demo models)
    weights: Mapping[str, str] = field(default_factory=dict)

    def config(self, name: str) -> Any:
        if name not in self.configs:
            raise UnknownNameError(f"config of {self.name}", name, list(self.configs))
        return self.configs[name]

    def graph(self, name: str) -> GraphSpec:
        for g in self.graphs:
            if g.name == name:
                return g
        raise UnknownNameError(f"graph of {self.name}", name, [g.name for g in self.graphs])

    def create(self, config: str, seed: int | None = 0) -> nn.Module:
        """Build the model for `config` in eval mode: shipped weights if the config
        has them, else seeded random weights (reproducible)."""
        import torch

        if seed is not None:
            torch.manual_seed(seed)
        model = self.build(self.config(config))
        if config in self.weights:
            load_weights(model, WEIGHTS_DIR / self.weights[config], f"{self.name} --config {config}")
        return model.eval()


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def load_weights(model: nn.Module, path: Path, what: str) -> None:
    """Load a shipped state dict (plain tensors: `weights_only`, no pickle code runs)."""
    import torch

    if not path.is_file():
        raise InputError(f"{path}: weights for {what} are missing; train them with "
                         f"`python -m mmedge.models.train` or reinstall mmedge")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise InputError(f"{path}: cannot load weights for {what} ({first[:200]})") from None


# A model's module is imported (and runs its register() call) when get() first asks for it.
MODELS: Registry[ModelSpec] = Registry("model", per_name={m.name: m.module for m in CATALOG.values()})


def register(name: str, *, configs: Mapping[str, Any], build: Callable[[Any], nn.Module],
             graphs: Mapping[str, tuple[Callable[[nn.Module], nn.Module], Callable[..., Feeds]]],
             preprocessing: Callable[[Any], dict[str, Any]], **extra: Any) -> ModelSpec:
    """Register the ModelSpec of catalog entry `name`: `graphs` maps each catalog graph
    to its (wrap, example) pair; `extra` holds the optional ModelSpec fields. Names,
    pipeline, graph interfaces and description come from the catalog only."""
    entry = info(name)
    if tuple(configs) != entry.configs or set(graphs) != {g.name for g in entry.graphs}:
        raise RuntimeError(f"{entry.module} registers configs {list(configs)} and graphs {sorted(graphs)}, "
                           f"but the catalog in mmedge.models.zoo lists {list(entry.configs)} and "
                           f"{[g.name for g in entry.graphs]}")
    spec = ModelSpec(name=name, pipeline=entry.pipeline, configs=configs, build=build,
                     graphs=tuple(GraphSpec(g.name, g.inputs, g.outputs, *graphs[g.name], g.dynamic_axes, g.hints)
                                  for g in entry.graphs),
                     preprocessing=preprocessing, description=entry.description, **extra)
    return MODELS.add(name, spec)


def get(name: str) -> ModelSpec:
    """The full spec (imports the model's module, so needs torch)."""
    entry = info(name)
    require("torch", f"the {name} model")
    return MODELS.get(entry.name)


def info(name: str) -> ModelInfo:
    """The torch-free catalog entry of a model."""
    if name not in CATALOG:
        raise UnknownNameError("model", name, list(CATALOG))
    return CATALOG[name]


def catalog() -> list[ModelInfo]:
    """Every model's catalog entry, sorted by name (no torch needed)."""
    return [CATALOG[n] for n in names()]


def names() -> list[str]:
    return sorted(CATALOG)
