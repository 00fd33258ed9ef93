"""Calibration data: what every INT8 recipe consumes, gathered once.

Samples come from a folder (images or WAV files) or from the demo generators,
are preprocessed by the runtime's own functions (the same code that runs at
inference), and are turned into feeds for every graph of the artifact by
running the fp32 artifact itself: the captioner's decoder graphs are
calibrated on the `decoder_step` inputs that beam search really produces,
recorded while it captions the calibration images. Like nncf's Dataset, the
result is a plain list of feeds per graph; thin adapters turn it into ONNX
Runtime's CalibrationDataReader or an nncf.Dataset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.pipelines import AudioEncoder, Captioner, Pipeline, Refocuser
from mmedge.runtime.roles import DECODER_INIT, DECODER_STEP, ENCODER
from mmedge.runtime.session import Feeds, Session

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
AUDIO_EXT = {".wav", ".wave"}
MIN_SAMPLES = 4
STEP_ROW_BUDGET = 256 * 1024 * 1024  # bytes of recorded decoder_step rows kept for calibration
MAX_STEP_ROWS = 512
BATCH = 8


@dataclass
class CalibrationSet:
    """Feeds per graph name, plus a digest identifying the data (cache key part)."""

    feeds: dict[str, list[Feeds]]
    description: str
    digest: str = ""
    count: int = 0

    def __post_init__(self) -> None:
        if not self.digest:
            h = hashlib.sha256()
            for graph in sorted(self.feeds):
                for f in self.feeds[graph]:
                    for k in sorted(f):
                        h.update(k.encode())
                        h.update(np.ascontiguousarray(f[k]).tobytes())
            self.digest = h.hexdigest()


def list_folder(folder: Path, kind: str) -> list[Path]:
    """Files of `kind` ("image" | "audio") in a folder; refuses empty or mixed folders."""
    if not folder.is_dir():
        raise InputError(f"{folder}: calibration folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXT]
    audio = [p for p in files if p.suffix.lower() in AUDIO_EXT]
    if images and audio:
        raise InputError(f"{folder}: mixes {len(images)} images and {len(audio)} audio files; "
                         f"give a folder of {kind} files only")
    chosen = images if kind == "image" else audio
    if not chosen:
        what = "images (PNG, JPEG, ...)" if kind == "image" else "WAV files"
        raise InputError(f"{folder}: no {what} found for calibration ({len(files)} other files)")
    return chosen


def sample(items: list[Any], size: int, seed: int, where: str) -> list[Any]:
    """`size` items drawn without replacement with `seed` (all of them, in order, if equal)."""
    need = max(size, MIN_SAMPLES)
    if len(items) < need:
        raise InputError(f"{where}: found {len(items)} calibration samples, need at least {need} "
                         f"(lower --calib-size or add samples)")
    if len(items) == size:
        return list(items)
    idx = np.sort(np.random.default_rng(seed).choice(len(items), size=size, replace=False))
    return [items[i] for i in idx]


class RecordingSession:
    """Wraps a Session and keeps a copy of every feed it runs (bound inputs included)."""

    def __init__(self, inner: Session) -> None:
        self.inner = inner
        self.records: list[Feeds] = []
        self._bound: Feeds = {}

    def bind(self, name: str, array: np.ndarray) -> None:
        self._bound[name] = array
        self.inner.bind(name, array)

    def unbind(self, name: str) -> None:
        self._bound.pop(name, None)
        self.inner.unbind(name)

    def run(self, feeds: Feeds) -> Feeds:
        self.records.append({**self._bound, **{k: np.array(v) for k, v in feeds.items()}})
        return self.inner.run(feeds)


def _batches(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _rows(records: list[Feeds], budget: int, seed: int) -> list[Feeds]:
    """Split recorded step batches into single rows, keep a random subset, re-batch by BATCH."""
    rows = [(r, i) for r in records for i in range(next(iter(r.values())).shape[0])]
    row_bytes = sum(v[0].nbytes for v in records[0].values()) if records else 1
    keep = min(len(rows), MAX_STEP_ROWS, max(BATCH, budget // max(row_bytes, 1)))
    idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=keep, replace=False))
    picked = [rows[i] for i in idx]
    out = []
    for chunk in _batches(picked, BATCH):
        out.append({k: np.stack([r[k][i] for r, i in chunk]) for k in chunk[0][0]})
    return out


def captioner_feeds(pipe: Captioner, images: list[Any], seed: int, beam: int = 3, max_len: int = 20
                    ) -> dict[str, list[Feeds]]:
    """Encoder, decoder_init and (recorded) decoder_step feeds for calibration images."""
    enc, init = [], []
    recorder = RecordingSession(pipe.sessions[DECODER_STEP])
    original = pipe.sessions[DECODER_STEP]
    pipe.sessions[DECODER_STEP] = recorder  # type: ignore[assignment]
    try:
        for chunk in _batches(images, BATCH):
            batch = pipe.preprocess(chunk)
            enc.append({"image": batch})
            feats = pipe.encode(batch)
            init.append({"features": feats})
            pipe.caption_features(feats, ["calib"] * len(chunk), beam=beam, max_len=max_len)
    finally:
        pipe.sessions[DECODER_STEP] = original
    return {ENCODER: enc, DECODER_INIT: init, DECODER_STEP: _rows(recorder.records, STEP_ROW_BUDGET, seed)}


def audio_feeds(pipe: AudioEncoder, clips: list[Any]) -> dict[str, list[Feeds]]:
    """One feed per clip, cropped to the shortest clip's length: ORT's entropy and
    percentile calibrators stack activations across samples, so shapes must agree."""
    graph = pipe.manifest.graphs[0]
    feats = [pipe.features(c, c if isinstance(c, (str, Path)) else f"clip {i}") for i, c in enumerate(clips)]
    n = min(f.shape[-1] for f in feats)
    return {graph.name: [{graph.inputs[0].name: np.ascontiguousarray(f[..., :n])} for f in feats]}


def refocus_feeds(items: list[tuple[np.ndarray, np.ndarray, float, float]]) -> dict[str, list[Feeds]]:
    feeds = []
    for image, depth, near, far in items:
        feeds.append({"image": np.ascontiguousarray(image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0),
                      "depth": np.ascontiguousarray(depth[None, None].astype(np.float32)),
                      "near": np.array([near], np.float32), "far": np.array([far], np.float32)})
    return {"model": feeds}


def preflight(source: "CalibSource", pipeline: str, preprocessing: dict[str, Any], min_samples: int = 0) -> None:
    """Check a calibration folder before any export work: kind, count, every sample readable."""
    if source.size < 1:
        raise InputError(f"--calib-size must be >= 1, got {source.size}")
    if source.folder is None:
        return
    if pipeline == "refocus":
        raise InputError("refocus calibration uses the generated depth scenes; drop --calib-data")
    kind = "image" if pipeline == "captioner" else "audio"
    files = sample(list_folder(Path(source.folder), kind), source.size, source.seed, str(source.folder))
    if kind == "image":
        from mmedge.runtime.image import read_image

        for f in files:
            read_image(f)
        return
    from mmedge.runtime import audio as A

    sr = int(preprocessing["sample_rate"])
    for f in files:
        x, _ = A.read_wav(f, sample_rate=sr)
        A.check_audio(x, str(f))
        if x.shape[0] < min_samples:
            raise InputError(f"{f}: {x.shape[0] / sr:.3f} s is too short for this model "
                             f"(needs at least {min_samples / sr:.3f} s)")


@dataclass(frozen=True)
class CalibSource:
    """Where calibration samples come from: a folder, or the demo generator (folder=None)."""

    folder: Path | None = None
    size: int = 64
    seed: int = 0
    split: str = "train"  # demo-generator split (held-out checks use "val")


def gather(pipe: Pipeline, source: CalibSource) -> CalibrationSet:
    """Run the fp32 pipeline over the calibration samples and collect feeds per graph."""
    if source.size < 1:
        raise InputError(f"--calib-size must be >= 1, got {source.size}")
    if isinstance(pipe, Captioner):
        if source.folder is not None:
            items: list[Any] = sample(list_folder(Path(source.folder), "image"), source.size, source.seed,
                                      str(source.folder))
            desc = f"{len(items)} images from {source.folder}"
        else:
            from mmedge.data import shapes

            seeds = sample(shapes.split(source.split), source.size, source.seed, f"shapes {source.split} split")
            items = [shapes.make_scene(s).image for s in seeds]
            desc = f"{len(items)} shapes scenes ({source.split} split, seed {source.seed})"
        feeds = captioner_feeds(pipe, items, source.seed)
    elif isinstance(pipe, AudioEncoder):
        sr = int(pipe.preprocessing["sample_rate"])
        if source.folder is not None:
            items = sample(list_folder(Path(source.folder), "audio"), source.size, source.seed, str(source.folder))
            desc = f"{len(items)} WAV files from {source.folder}"
        else:
            from mmedge.data import sounds

            seeds = sample(list(sounds.split(source.split)), source.size, source.seed, f"sounds {source.split} split")
            min_samples = pipe.manifest.extra.min_samples or 0
            items = [sounds.make_clip(s, sr, min_samples).audio for s in seeds]
            desc = f"{len(items)} generated clips ({source.split} split, seed {source.seed})"
        feeds = audio_feeds(pipe, items)
    elif isinstance(pipe, Refocuser):
        if source.folder is not None:
            raise InputError("refocus calibration uses the generated depth scenes; drop --calib-data")
        from mmedge.data import depth_scenes, shapes

        seeds = sample(shapes.split(source.split), source.size, source.seed, f"depth scenes {source.split} split")
        scenes = [depth_scenes.make_depth_scene(s) for s in seeds]
        feeds = refocus_feeds([(s.image, s.depth, s.near, s.far) for s in scenes])
        desc = f"{len(scenes)} generated depth scenes ({source.split} split)"
    else:
        raise InputError(f"no calibration data for pipeline {pipe.manifest.pipeline!r}")
    return CalibrationSet(feeds, desc, count=source.size)
