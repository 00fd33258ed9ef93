"""Top-1 accuracy of the audio models on the held-out synthetic sounds (`mmedge.data.sounds`).

The predictor is either a runtime `AudioEncoder` (`mmedge.runtime.load(artifact)`)
or the PyTorch reference wrapped by `TorchAudioPredictor`, which applies the
same front-end the trainer used (raw waveform for SoundNet, the torch
`spectrogram` for the voice encoder) and answers `embed()` like the runtime.
Both are fed the same float32 clips, at the sample rate the model's
preprocessing names, one clip per call (whole clips, batch 1).

Reproduce from the shell:

    python -m mmedge export soundnet --config demo --format onnx --out /tmp/aud
    python -m mmedge.calibration.eval_audio soundnet --artifact /tmp/aud/soundnet-demo-onnx-fp32
    python -m mmedge.calibration.eval_audio soundnet --pytorch          # the reference
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmedge.calibration.evaluate import EvalResult, register_evaluator
from mmedge.data import sounds
from mmedge.errors import InputError
from mmedge.runtime.manifest import ManifestExtra


@dataclass
class TorchAudioResult:
    audio: str
    outputs: dict[str, np.ndarray] = field(repr=False)
    label: str | None = None
    score: float | None = None


class TorchAudioPredictor:
    """The PyTorch reference of an audio model with the runtime `AudioEncoder`'s `embed()`."""

    source = "pytorch"

    def __init__(self, model: str, config: str = "demo", module: Any = None) -> None:
        from mmedge.models import zoo

        self.spec = zoo.get(model)
        if self.spec.pipeline != "audio":
            raise InputError(f"{model} is not an audio model")
        self.model_name, self.config_name = model, config
        self.config = self.spec.config(config)
        self.module = (module if module is not None else self.spec.create(config)).eval()
        self.graph = self.spec.graphs[0]
        self.preprocessing = self.spec.preprocessing(self.config)
        self.labels = self.spec.labels(self.config)
        self.class_output = ManifestExtra.from_json(self.spec.manifest_extra(self.config)).class_output

    def embed(self, audio: Sequence[np.ndarray] | np.ndarray) -> list[TorchAudioResult]:
        import torch

        from mmedge.models.train_audio import model_input

        if isinstance(audio, np.ndarray) and audio.ndim == 1:
            audio = [audio]
        results = []
        with torch.no_grad():
            for i, a in enumerate(audio):
                x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
                out = self.graph.wrap(self.module)(model_input(self.model_name, self.config, x))
                outputs = {k: v[0].numpy() for k, v in zip(self.graph.outputs, out)}
                label, score = None, None
                if self.class_output in outputs:
                    logits = outputs[self.class_output].astype(np.float64)
                    p = np.exp(logits - logits.max())
                    p /= p.sum()
                    j = int(p.argmax())
                    label = self.labels[j] if self.labels else str(j)
                    score = float(p[j])
                results.append(TorchAudioResult(f"<array {i}>", outputs, label, score))
        return results


def _describe(predictor: Any) -> tuple[str, str, int, list[str] | None]:
    """(model name, source, sample rate, labels) of a runtime pipeline or a TorchAudioPredictor."""
    if isinstance(predictor, TorchAudioPredictor):
        return (predictor.model_name, "pytorch", int(predictor.preprocessing["sample_rate"]), predictor.labels)
    manifest = getattr(predictor, "manifest", None)
    if manifest is None:
        raise InputError("evaluate_audio needs a runtime AudioEncoder (mmedge.runtime.load) "
                         "or a TorchAudioPredictor")
    return (manifest.model, str(predictor.root), int(manifest.preprocessing["sample_rate"]), manifest.labels)


def _top1(predictions: list[int], targets: list[int]) -> float:
    try:
        from mmedge.calibration.metrics import top1_accuracy
    except ImportError:
        return float(np.mean(np.asarray(predictions) == np.asarray(targets))) if targets else 0.0
    return float(top1_accuracy(predictions, targets))


@register_evaluator("soundnet")
@register_evaluator("voice-encoder")
def evaluate_audio(predictor: Any, split: str = "test", limit: int | None = None,
                   progress: bool = True) -> EvalResult:
    """Top-1 accuracy over the clips of `split` (all of them, or the first `limit`).

    details: per-class accuracy, the confusion matrix (rows: true class, columns:
    predicted, in `CLASSES` order) and the most frequent confusions.
    """
    model, source, sr, labels = _describe(predictor)
    check_demo_labels(model, source, labels, split)
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    seeds = sounds.split(split)[:limit] if limit is not None else sounds.split(split)
    index = {name: i for i, name in enumerate(sounds.CLASSES)}
    preds, targets = [], []
    t0 = time.time()
    for k, seed in enumerate(seeds):
        clip = sounds.make_clip(seed, sr)
        (res,) = predictor.embed([clip.audio])
        preds.append(index.get(res.label, -1))
        targets.append(clip.label)
        if progress and (k % 25 == 0 or k == len(seeds) - 1):
            print(f"\r{model} {split}: {k + 1}/{len(seeds)} clips, top-1 so far {_top1(preds, targets):.3f}",
                  end="\n" if k == len(seeds) - 1 else "", file=sys.stderr, flush=True)
    return audio_result(model, source, split, preds, targets, time.time() - t0)


def check_demo_labels(model: str, source: str, labels: Sequence[str] | None, split: str) -> None:
    """Refuse models not trained on the demo sounds, and unknown splits, before any work."""
    if labels is None or list(labels) != list(sounds.CLASSES):
        raise InputError(f"{source}: this {model} was not trained on the demo sounds (its class labels are "
                         f"{labels}); evaluate the `demo` config")
    if split not in sounds.SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {sorted(sounds.SPLITS)}")


def audio_result(model: str, source: str, split: str, preds: Sequence[int], targets: Sequence[int],
                 seconds: float) -> EvalResult:
    """Top-1, per-class accuracy and confusions of predicted class indices (-1: not a demo class)."""
    n = len(sounds.CLASSES)
    confusion = np.zeros((n, n), dtype=np.int64)
    for p, t in zip(preds, targets):
        if p >= 0:
            confusion[t, p] += 1
    per_class = {name: round(float(confusion[i, i] / max(1, confusion[i].sum())), 4)
                 for i, name in enumerate(sounds.CLASSES)}
    off = [(int(confusion[i, j]), sounds.CLASSES[i], sounds.CLASSES[j]) for i in range(n) for j in range(n)
           if i != j and confusion[i, j]]
    details = {
        "split": split,
        "per_class_accuracy": per_class,
        "confusion": {"classes": list(sounds.CLASSES), "matrix": confusion.tolist()},
        "top_confusions": [{"true": t, "predicted": p, "count": c} for c, t, p in sorted(off, reverse=True)[:5]],
        "seconds": round(seconds, 2),
    }
    return EvalResult(model, source, {"top1": _top1(list(preds), list(targets))}, len(targets), details)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmedge.calibration.eval_audio",
                                description="Top-1 accuracy of an audio model on the synthetic demo sounds.")
    p.add_argument("model", choices=["soundnet", "voice-encoder"])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--artifact", type=Path, help="an exported artifact directory (runs through the runtime)")
    src.add_argument("--pytorch", action="store_true", help="the PyTorch reference of --config")
    p.add_argument("--config", default="demo", help="config of the PyTorch reference (default: demo)")
    p.add_argument("--backend", default=None, help="runtime backend (default: the artifact format's)")
    p.add_argument("--split", default="test", choices=sorted(sounds.SPLITS))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = p.parse_args(argv)
    try:
        if args.pytorch:
            predictor: Any = TorchAudioPredictor(args.model, args.config)
        else:
            from mmedge import runtime

            predictor = runtime.load(args.artifact, backend=args.backend)
            if predictor.manifest.model != args.model:
                raise InputError(f"{args.artifact} is a {predictor.manifest.model} artifact, not {args.model}")
        result = evaluate_audio(predictor, args.split, args.limit, progress=True)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"{result.model} ({result.source}) {args.split}: top-1 {result.metrics['top1']:.4f} "
              f"on {result.samples} clips")
        print("per class: " + ", ".join(f"{k} {v:.2f}" for k, v in result.details["per_class_accuracy"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
