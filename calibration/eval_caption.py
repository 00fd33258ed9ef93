"""Captioner task metrics on the synthetic shapes scenes: BLEU-1..4 (and exact match).

`evaluate_captioner(predictor, split="test", beam=3)` works on anything with
`caption(images, beam, max_len) -> [result with .tokens]` and a `vocab`: the
runtime `Captioner` of any artifact (`mmedge.runtime.load(dir)`), or the PyTorch
reference wrapped by `TorchCaptioner` (`mmedge.models.torch_captioner`), which
preprocesses with the runtime's own `preprocess_image` and decodes with
`mmedge.models.decoding.caption_images`, so the two are compared by the same
code on the same inputs. Torch is imported only inside `TorchCaptioner`.
"""

from __future__ import annotations

from typing import Sequence

from mmedge.calibration.evaluate import EvalResult, register_evaluator
from mmedge.data import shapes
from mmedge.errors import InputError
# BLEU, batched captioning and the PyTorch reference live in models/ (the trainer validates with
# them); re-exported here, where `mmedge eval`, scale/ and the int8 report have always found them.
from mmedge.models.caption_metrics import (BATCH, MAX_LEN, CaptionPredictor, bleu_metrics,  # noqa: F401
                                           caption_scores)
from mmedge.models.torch_captioner import TorchCaption, TorchCaptioner  # noqa: F401

EXAMPLES = 8


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

