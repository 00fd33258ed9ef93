"""Captioner task metrics on the synthetic shapes scenes: BLEU-1..4, exact match, and whether
the captions name the right objects (object accuracy, hallucination rate).

Splits: train, val, test (the training style, `data/shapes.py`) and oos (out of style:
drawn by the independent renderer of `data/shapes_oos.py`, never trained on). Object
metrics parse each caption into (colour, shape) objects (`data/caption_objects.py`) and
match them with the scene's: object accuracy = true objects named / true objects;
hallucination rate = share of captions naming an object the scene lacks (or one too many).

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
from mmedge.data import caption_objects, shapes, shapes_oos
from mmedge.errors import InputError
# BLEU, batched captioning and the PyTorch reference live in models/ (the trainer validates with
# them); re-exported here, where `mmedge eval`, scale/ and the int8 report have always found them.
from mmedge.models.caption_metrics import (BATCH, MAX_LEN, CaptionPredictor, bleu_metrics,  # noqa: F401
                                           caption_scores)
from mmedge.models.torch_captioner import TorchCaption, TorchCaptioner  # noqa: F401

EXAMPLES = 8
CAPTION_SPLITS = (*shapes.SPLITS, *shapes.OOS_SPLITS)  # train, val, test, oos (drawn out of style)


def scenes(split: str = "test", limit: int | None = None) -> list[shapes.Scene]:
    if split not in CAPTION_SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {', '.join(CAPTION_SPLITS)}")
    # the first `limit` seeds; a held-out split's may go past its fixed 300 (data/shapes.py)
    return [shapes_oos.scene(s) for s in shapes.split(split, limit)]


@register_evaluator("captioner")
def evaluate_captioner(predictor: CaptionPredictor, split: str = "test", beam: int = 3, max_len: int = MAX_LEN,
                       limit: int | None = None, progress: bool = True, batch_size: int = BATCH) -> EvalResult:
    """BLEU-1..4, exact match, object accuracy and hallucination rate of `predictor` on a split."""
    data = scenes(split, limit)
    _, captions = caption_scores(predictor, [s.image for s in data], [s.captions for s in data],
                                 beam, max_len, batch_size, progress)
    source = getattr(predictor, "source", None) or str(getattr(predictor, "root", type(predictor).__name__))
    return captioner_result(source, split, beam, max_len, [s.seed for s in data], captions,
                            [s.captions for s in data], [s.objects for s in data])


def scene_objects(seeds: Sequence[int]) -> list[list[shapes.ShapeObject]]:
    """The objects of the scenes of `seeds` (any split), regenerated: for callers that did not keep them."""
    return [shapes_oos.oos_layout(s)[0] if shapes_oos.is_oos_seed(s) else shapes.scene_layout(s)[0]
            for s in seeds]


def captioner_result(source: str, split: str, beam: int, max_len: int, seeds: Sequence[int],
                     captions: Sequence[str], references: Sequence[Sequence[str]],
                     objects: Sequence[Sequence[caption_objects.ObjectLike]] | None = None) -> EvalResult:
    """The EvalResult of captions already generated (in-process here, or sharded by `mmedge.scale`).

    `objects[i]`: the true objects of scene i (`ShapeObject`s or [colour, shape] pairs); regenerated
    from the seeds when not given."""
    if objects is None:
        objects = scene_objects(seeds)
    score = caption_objects.score_captions(captions, objects)
    examples = [{"seed": int(s), "caption": c, "references": list(r),
                 "objects": [list(k) for k in caption_objects.object_keys(o)]}
                for s, c, r, o in zip(seeds, captions, references, objects)][:EXAMPLES]
    return EvalResult(model="captioner", source=source, metrics={**bleu_metrics(captions, references),
                                                                 **score.metrics()},
                      samples=len(captions), details={"split": split, "beam": beam, "max_len": max_len,
                                                      "objects": score.counts(),
                                                      "intervals": {k: list(v) for k, v in score.intervals().items()},
                                                      "examples": examples})
