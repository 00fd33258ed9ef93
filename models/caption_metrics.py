"""BLEU-1..4 of generated captions, and captioning images in batches to score them.

The metric the trainer picks its best checkpoint by (`models/train_captioner.py`)
and the one `mmedge eval` reports (`calibration/eval_caption.py`), so it lives
here, in the lowest layer that needs it. No torch: `caption_scores` takes any
predictor with `caption(images, beam, max_len)` and a `vocab` (the runtime
`Captioner` of an artifact, or the PyTorch reference `TorchCaptioner`).

BLEU is nltk's `corpus_bleu`, called the way sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning
does in its `validate()` / `eval.py` (`corpus_bleu(references, hypotheses)`: default weights,
no smoothing, corpus-level clipped n-gram counts and brevity penalty); BLEU-n for n < 4 uses
the weights (1, 0, 0, 0), (1/2, 1/2, 0, 0), (1/3, 1/3, 1/3, 0).
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol, Sequence

import numpy as np

from mmedge.errors import MissingDependencyError
from mmedge.runtime.decode import DEFAULT_MAX_LEN
from mmedge.runtime.image import ImageLike
from mmedge.runtime.vocab import Vocabulary

BATCH = 32
MAX_LEN = 30  # decoding steps, <end> included; the grammar's longest caption has 17 words

BLEU_WEIGHTS: dict[str, tuple[float, ...]] = {
    "bleu1": (1.0, 0.0, 0.0, 0.0),
    "bleu2": (0.5, 0.5, 0.0, 0.0),
    "bleu3": (1.0 / 3, 1.0 / 3, 1.0 / 3, 0.0),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}


class CaptionPredictor(Protocol):
    vocab: Vocabulary

    def caption(self, images: Sequence[ImageLike], beam: int = 3, max_len: int = DEFAULT_MAX_LEN) -> list[Any]: ...


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


def bleu_metrics(captions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 and exact match of generated captions against their reference lists."""
    refs = [[c.split() for c in rs] for rs in references]
    metrics = corpus_bleu(refs, [c.split() for c in captions])
    metrics["exact_match"] = float(np.mean([c in rs for c, rs in zip(captions, references)])) if captions else 0.0
    return metrics


def _progress(total: int, enabled: bool, what: str):
    """A rich progress bar on stderr (or a no-op)."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)
    return prog


def caption_scores(predictor: CaptionPredictor, images: Sequence[ImageLike], references: Sequence[Sequence[str]],
                   beam: int = 3, max_len: int = MAX_LEN, batch_size: int = BATCH, progress: bool = False
                   ) -> tuple[dict[str, float], list[str]]:
    """Caption `images` in batches -> (bleu1..4 + exact_match, the generated captions)."""
    if len(images) != len(references):
        raise ValueError(f"{len(images)} images for {len(references)} reference lists")
    captions: list[str] = []
    with _progress(len(images), progress, f"captioning (beam {beam})") as prog:
        task = prog.add_task("caption", total=len(images)) if prog is not None else None
        for i in range(0, len(images), batch_size):
            chunk = list(images[i:i + batch_size])
            for r in predictor.caption(chunk, beam=beam, max_len=max_len):
                captions.append(predictor.vocab.decode(r.tokens))
            if prog is not None:
                prog.update(task, advance=len(chunk))
    return bleu_metrics(captions, references), captions
