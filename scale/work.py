"""Per-shard work, the same function in every executor (this process or a Ray actor).

A work kind takes the pipeline a worker loaded once, a shard of
`(index, input)` pairs and the job's options, and returns one JSON-ready
record per input. `key` names the record field that holds the input, which is
how a resumed run checks that a results file belongs to its input list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

from mmedge.errors import InputError
from mmedge.registry import Registry

Item = Tuple[int, Any]  # typing's generics: runtime aliases must work on Python 3.8
Records = List[Dict[str, Any]]


@dataclass(frozen=True)
class WorkKind:
    run: Callable[[Any, Sequence[Item], dict[str, Any]], Records]
    key: str  # the record field holding the input
    pipeline: str  # the artifact pipeline it needs (manifest.pipeline)


WORK: Registry[WorkKind] = Registry("work kind")


def register_work(name: str, key: str, pipeline: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        WORK.add(name, WorkKind(fn, key, pipeline))
        return fn

    return deco


def _decode_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in ("beam", "max_len", "length_norm") if k in options}


@register_work("caption", key="image", pipeline="captioner")
def caption_shard(pipe: Any, items: Sequence[Item], options: dict[str, Any]) -> Records:
    """Caption image paths as one batch; an unreadable image becomes an `error` record, not a failed job."""
    try:
        results = pipe.caption([path for _, path in items], **_decode_options(options))
    except InputError as e:
        if len(items) == 1:
            (i, path), = items
            return [{"index": i, "image": path, "error": str(e)}]
        return [rec for item in items for rec in caption_shard(pipe, [item], options)]
    return [{"index": i, **r.to_json(), "image": path} for (i, path), r in zip(items, results)]


@register_work("eval-captioner", key="seed", pipeline="captioner")
def eval_caption_shard(pipe: Any, items: Sequence[Item], options: dict[str, Any]) -> Records:
    """Caption held-out demo scenes (regenerated from their seeds) in one batch, as the evaluator does."""
    from mmedge.data import shapes_oos

    scenes = [shapes_oos.scene(seed) for _, seed in items]  # in style or out of style, by the seed's split
    results = pipe.caption([s.image for s in scenes], **_decode_options(options))
    return [{"index": i, "seed": seed, "caption": pipe.vocab.decode(r.tokens), "references": s.captions,
             "objects": [[o.colour, o.shape] for o in s.objects]}
            for (i, seed), s, r in zip(items, scenes, results)]


@register_work("eval-audio", key="seed", pipeline="audio")
def eval_audio_shard(pipe: Any, items: Sequence[Item], options: dict[str, Any]) -> Records:
    """Classify held-out demo clips one at a time (whole clips, batch 1), as the evaluator does."""
    from mmedge.data import sounds

    sr = int(pipe.manifest.preprocessing["sample_rate"])
    out = []
    for i, seed in items:
        clip = sounds.make_clip(seed, sr)
        (res,) = pipe.embed([clip.audio])
        out.append({"index": i, "seed": seed, "target": sounds.CLASSES[clip.label], "predicted": res.label})
    return out
