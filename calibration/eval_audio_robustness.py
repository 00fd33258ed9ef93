"""Top-1 of the demo audio models on out-of-style variants of the test sounds.

`mmedge.calibration.eval_audio` measures the models on clips like the ones they were
trained on (white background 15-40 dB down, peak 0.05-0.9, 1.0-2.0 s); this module runs
the same predictors, the same label check and the same result (top-1, per-class accuracy,
confusions) over the conditions of `mmedge.data.sound_variants`: other noise levels and
colours, gains, lengths and recording rates.  The condition "in-style" is the test clip
as is, so its figure equals `evaluate_audio`'s on the same clips.

    from mmedge import runtime
    results = evaluate_audio_robustness(runtime.load(artifact), ["in-style", "snr-0", "len-min"], limit=100)
    results["snr-0"].metrics["top1"]

benchmarks/audio_robustness.py prints the table for both demo models.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Mapping

from mmedge.calibration.eval_audio import TorchAudioPredictor, _describe, audio_result, check_demo_labels
from mmedge.calibration.evaluate import EvalResult
from mmedge.data import sound_variants, sounds
from mmedge.errors import InputError


def model_min_samples(predictor: Any) -> int:
    """The shortest clip the model takes: the manifest's `min_samples` (the config's for PyTorch)."""
    if isinstance(predictor, TorchAudioPredictor):
        return int(getattr(predictor.config, "min_samples", 0) or 0)
    return int(predictor.manifest.extra.min_samples or 0)


def resolve_conditions(conditions: Mapping[str, sound_variants.Condition] | Iterable[str]
                       ) -> dict[str, sound_variants.Condition]:
    """Name -> Condition from a mapping, or from names / ``key=value`` specs (`parse_condition`)."""
    if isinstance(conditions, str):
        conditions = [conditions]
    if isinstance(conditions, Mapping):
        out = dict(conditions)
    else:
        out = {}
        for text in conditions:
            try:
                out[text] = sound_variants.parse_condition(text)
            except ValueError as e:
                raise InputError(f"condition {e}") from None
    if not out:
        raise InputError("no conditions given; expected names of mmedge.data.sound_variants.CONDITIONS")
    return out


def evaluate_audio_robustness(predictor: Any,
                              conditions: Mapping[str, sound_variants.Condition] | Iterable[str] = (
                                  tuple(sound_variants.CONDITIONS)),
                              limit: int | None = 100, split: str = "test",
                              progress: bool = False) -> dict[str, EvalResult]:
    """Condition name -> top-1 result over the first `limit` clips of `split` under that condition.

    `predictor`: a runtime `AudioEncoder` or a `TorchAudioPredictor`, as for `evaluate_audio`.
    The first `limit` seeds of a split hold every class equally often when `limit` is a multiple
    of ten (the class is the seed mod 10).  details: the condition and its description, besides
    `evaluate_audio`'s per-class accuracy and confusions.
    """
    model, source, sr, labels = _describe(predictor)
    check_demo_labels(model, source, labels, split)
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    named = resolve_conditions(conditions)
    min_samples = model_min_samples(predictor)
    seeds = sounds.split(split)[:limit] if limit is not None else sounds.split(split)
    index = {name: i for i, name in enumerate(sounds.CLASSES)}
    results: dict[str, EvalResult] = {}
    for name, condition in named.items():
        preds, targets = [], []
        t0 = time.time()
        for seed in seeds:
            clip = sound_variants.variant(seed, condition, sr, min_samples)
            (res,) = predictor.embed([clip.audio])
            preds.append(index.get(res.label, -1))
            targets.append(clip.label)
        result = audio_result(model, source, split, preds, targets, time.time() - t0)
        result.details = {"condition": name, "changes": condition.describe(), **result.details}
        results[name] = result
        if progress:
            print(f"{model} {name}: top-1 {result.metrics['top1']:.3f} on {result.samples} clips "
                  f"({result.details['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return results
