"""Captioner task metrics on the synthetic shapes scenes: BLEU-1..4 (and exact match).

`evaluate_captioner(predictor, split="test", beam=3)` works on anything with
`caption(images, beam, max_len) -> [result with .tokens]` and a `vocab`: the
runtime `Captioner` of any artifact (`mmedge.runtime.load(dir)`), or the PyTorch
reference wrapped by `TorchCaptioner`, which preprocesses with the runtime's own
`preprocess_image` and decodes with `mmedge.models.decoding.caption_images`, so
the two are compared by the same code on the same inputs. Torch is imported
only inside `TorchCaptioner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from mmedge.calibration.evaluate import EvalResult, register_evaluator
from mmedge.calibration.metrics import corpus_bleu
from mmedge.data import shapes
from mmedge.errors import InputError
from mmedge.runtime.decode import DEFAULT_MAX_LEN
from mmedge.runtime.image import ImageLike, preprocess_image
from mmedge.runtime.vocab import Vocabulary

BATCH = 32
MAX_LEN = 30  # decoding steps, <end> included; the grammar's longest caption has 17 words
EXAMPLES = 8


class CaptionPredictor(Protocol):
    vocab: Vocabulary

    def caption(self, images: Sequence[ImageLike], beam: int = 3, max_len: int = DEFAULT_MAX_LEN) -> list[Any]: ...


@dataclass
class TorchCaption:
    caption: str
    tokens: list[int]
    score: float
    finished: bool


class TorchCaptioner:
    """The PyTorch reference behind the runtime Captioner's `caption()` interface."""

    source = "pytorch"

    def __init__(self, model: Any, preprocessing: dict[str, Any] | None = None) -> None:
        if preprocessing is None:
            from mmedge.models import zoo

            preprocessing = zoo.get("captioner").preprocessing(model.config)
        self.model = model.eval()
        self.vocab: Vocabulary = model.vocab
        self.preprocessing = preprocessing

    @classmethod
    def from_zoo(cls, config: str = "demo") -> "TorchCaptioner":
        from mmedge.models import zoo

        return cls(zoo.get("captioner").create(config))

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        return np.stack([preprocess_image(im, self.preprocessing, f"image {i}") for i, im in enumerate(images)])

    def caption(self, images: Sequence[ImageLike] | ImageLike, beam: int = 3, max_len: int = DEFAULT_MAX_LEN,
                length_norm: bool = False) -> list[TorchCaption]:
        import torch

        from mmedge.models.decoding import caption_images

        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        batch = torch.from_numpy(self.preprocess(list(images)))
        hyps = caption_images(self.model, batch, beam, max_len, length_norm)
        return [TorchCaption(self.vocab.decode(h.tokens), list(h.tokens), h.score, h.finished) for h in hyps]


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


def bleu_metrics(captions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 and exact match of generated captions against their reference lists."""
    refs = [[c.split() for c in rs] for rs in references]
    metrics = corpus_bleu(refs, [c.split() for c in captions])
    metrics["exact_match"] = float(np.mean([c in rs for c, rs in zip(captions, references)])) if captions else 0.0
    return metrics


def scenes(split: str = "test", limit: int | None = None) -> list[shapes.Scene]:
    if split not in shapes.SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {', '.join(shapes.SPLITS)}")
    seeds = shapes.split(split)
    return [shapes.make_scene(s) for s in (seeds if limit is None else seeds[:limit])]


@register_evaluator("captioner")
def evaluate_captioner(predictor: CaptionPredictor, split: str = "test", beam: int = 3, max_len: int = MAX_LEN,
                       limit: int | None = None, progress: bool = True, batch_size: int = BATCH) -> EvalResult:
    """BLEU-1..4 and exact match of `predictor` on a split of the shapes scenes."""
    data = scenes(split, limit)
    _, captions = caption_scores(predictor, [s.image for s in data], [s.captions for s in data],
                                 beam, max_len, batch_size, progress)
    source = getattr(predictor, "source", None) or str(getattr(predictor, "root", type(predictor).__name__))
    return captioner_result(source, split, beam, max_len, [s.seed for s in data], captions,
                            [s.captions for s in data])


def captioner_result(source: str, split: str, beam: int, max_len: int, seeds: Sequence[int],
                     captions: Sequence[str], references: Sequence[Sequence[str]]) -> EvalResult:
    """The EvalResult of captions already generated (in-process here, or sharded by `mmedge.scale`)."""
    examples = [{"seed": int(s), "caption": c, "references": list(r)}
                for s, c, r in zip(seeds, captions, references)][:EXAMPLES]
    return EvalResult(model="captioner", source=source, metrics=bleu_metrics(captions, references),
                      samples=len(captions), details={"split": split, "beam": beam, "max_len": max_len,
                                                      "examples": examples})

