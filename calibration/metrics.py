"""Task metrics (no torch): corpus BLEU-1..4 as the captioning tutorial reports it, top-1 accuracy.

BLEU lives in `mmedge.models.caption_metrics` (the trainer selects checkpoints by it) and is
re-exported here.
"""

from __future__ import annotations

from typing import Any, Sequence

from mmedge.models.caption_metrics import BLEU_WEIGHTS, corpus_bleu  # noqa: F401


def top1_accuracy(pred: Sequence[Any], target: Sequence[Any]) -> float:
    """Fraction of positions where the prediction equals the target."""
    pred, target = list(pred), list(target)
    if len(pred) != len(target):
        raise ValueError(f"{len(pred)} predictions for {len(target)} targets")
    if not pred:
        return 0.0
    return sum(1 for p, t in zip(pred, target) if p == t) / len(pred)
