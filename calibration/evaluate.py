"""Task metrics on held-out demo data, for the PyTorch reference or any artifact.

One evaluator per pipeline kind, registered by name; each takes a `Predictor`
(the runtime pipeline, or the PyTorch reference wrapped to look the same) so
fp32 vs int8 vs backend are compared by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mmedge.errors import UnknownNameError


@dataclass
class EvalResult:
    model: str
    source: str  # "pytorch" or the artifact path
    metrics: dict[str, float]
    samples: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "source": self.source, "samples": self.samples,
                "metrics": self.metrics, **({"details": self.details} if self.details else {})}


Evaluator = Callable[..., EvalResult]
_EVALUATORS: dict[str, Evaluator] = {}


def register_evaluator(model: str) -> Callable[[Evaluator], Evaluator]:
    def deco(fn: Evaluator) -> Evaluator:
        _EVALUATORS[model] = fn
        return fn

    return deco


def evaluator(model: str) -> Evaluator:
    _load_builtin()
    if model not in _EVALUATORS:
        raise UnknownNameError("model to evaluate", model, list(_EVALUATORS))
    return _EVALUATORS[model]


def _load_builtin() -> None:
    import importlib

    for mod in ("mmedge.calibration.eval_caption", "mmedge.calibration.eval_audio"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
