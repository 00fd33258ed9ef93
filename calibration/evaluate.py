"""Task metrics on held-out demo data, for the PyTorch reference or any artifact.

One evaluator per pipeline kind, registered by name; each takes a `Predictor`
(the runtime pipeline, or the PyTorch reference wrapped to look the same) so
fp32 vs int8 vs backend are compared by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mmedge.registry import Registry


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
EVALUATORS: Registry[Evaluator] = Registry(
    "model to evaluate", modules=("mmedge.calibration.eval_caption", "mmedge.calibration.eval_audio"))
register_evaluator = EVALUATORS.register
evaluator = EVALUATORS.get
