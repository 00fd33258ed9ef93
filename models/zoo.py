"""The model registry: the one place that lists mmedge's models.

Each model registers a declarative `ModelSpec` (configs, graphs with their
input/output names and dynamic axes, example inputs, preprocessing parameters).
Exporters, the golden-output script, the CLI and the tests read it; nothing else
keeps a list of models (a meta-test fails when a registered model has no test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from mmedge.errors import InputError, UnknownNameError
from mmedge.registry import Registry

# name -> tensor, in the graph's input order
Feeds = dict[str, torch.Tensor]


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph of a model.

    `wrap(model)` returns an nn.Module whose `forward(*inputs)` takes the inputs in
    `inputs` order and returns a tuple in `outputs` order. `example(model, config,
    batch, generator)` returns feeds for it (used for tracing and golden outputs).
    `dynamic_axes` maps an input/output name to {axis index: axis name}.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    wrap: Callable[[nn.Module], nn.Module]
    example: Callable[[nn.Module, Any, int, torch.Generator], Feeds]
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)


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
        if seed is not None:
            torch.manual_seed(seed)
        model = self.build(self.config(config))
        if config in self.weights:
            load_weights(model, WEIGHTS_DIR / self.weights[config], f"{self.name} --config {config}")
        return model.eval()


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def load_weights(model: nn.Module, path: Path, what: str) -> None:
    """Load a shipped state dict (plain tensors: `weights_only`, no pickle code runs)."""
    if not path.is_file():
        raise InputError(f"{path}: weights for {what} are missing; train them with "
                         f"`python -m mmedge.models.train` or reinstall mmedge")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise InputError(f"{path}: cannot load weights for {what} ({first[:200]})") from None


# Importing the model modules runs their register() calls.
MODELS: Registry[ModelSpec] = Registry(
    "model", modules=tuple(f"mmedge.models.{m}" for m in ("captioner", "refocus", "soundnet", "voice_encoder")))


def register(spec: ModelSpec) -> ModelSpec:
    return MODELS.add(spec.name, spec)


def get(name: str) -> ModelSpec:
    return MODELS.get(name)


def names() -> list[str]:
    return MODELS.names()
