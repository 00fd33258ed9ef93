"""Task metrics (no torch): corpus BLEU-1..4 as the captioning tutorial reports it, top-1 accuracy.

BLEU is nltk's `corpus_bleu`, called the way sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning
does in its `validate()` / `eval.py` (`corpus_bleu(references, hypotheses)`: default weights,
no smoothing, corpus-level clipped n-gram counts and brevity penalty); BLEU-n for n < 4 uses
the weights (1, 0, 0, 0), (1/2, 1/2, 0, 0), (1/3, 1/3, 1/3, 0).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

from mmedge.errors import MissingDependencyError

BLEU_WEIGHTS: dict[str, tuple[float, ...]] = {
    "bleu1": (1.0, 0.0, 0.0, 0.0),
    "bleu2": (0.5, 0.5, 0.0, 0.0),
    "bleu3": (1.0 / 3, 1.0 / 3, 1.0 / 3, 0.0),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}


def _nltk_corpus_bleu():
    try:
        from nltk.translate.bleu_score import corpus_bleu
    except ModuleNotFoundError:
        raise MissingDependencyError("nltk", "eval", "BLEU scores") from None
    return corpus_bleu


def corpus_bleu(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 of tokenised hypotheses against their lists of tokenised references.

    `references[i]` holds every reference caption of item i (each a list of words),
    `hypotheses[i]` the generated caption (a list of words).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    if not hypotheses:
        return {k: 0.0 for k in BLEU_WEIGHTS}
    bleu = _nltk_corpus_bleu()
    refs = [[list(r) for r in rs] for rs in references]
    hyps = [list(h) for h in hypotheses]
    out = {}
    for name, weights in BLEU_WEIGHTS.items():
        with warnings.catch_warnings():  # nltk warns on zero n-gram counts; the score says it already
            warnings.simplefilter("ignore")
            out[name] = float(bleu(refs, hyps, weights=weights))
    return out


def top1_accuracy(pred: Sequence[Any], target: Sequence[Any]) -> float:
    """Fraction of positions where the prediction equals the target."""
    pred, target = list(pred), list(target)
    if len(pred) != len(target):
        raise ValueError(f"{len(pred)} predictions for {len(target)} targets")
    if not pred:
        return 0.0
    return sum(1 for p, t in zip(pred, target) if p == t) / len(pred)
