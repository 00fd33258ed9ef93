"""Pipelines: what `mmedge.runtime.load()` returns, built from the manifest alone.

A pipeline owns one Session per graph and the pre/post-processing around them:
`Captioner` (image preprocessing -> encoder -> decoder_init -> numpy beam
search), `AudioEncoder` (WAV -> STFT front-end -> network), `Refocuser`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmedge.errors import ArtifactError, InputError
from mmedge.runtime.decode import DEFAULT_MAX_LEN, beam_search
from mmedge.runtime.image import ImageLike, as_rgb_array, preprocess_image, read_depth
from mmedge.runtime.manifest import Manifest, read_manifest
from mmedge.runtime.session import Session, backend_for_format, open_session
from mmedge.runtime.vocab import Vocabulary


class Pipeline:
    """Sessions for every graph of an artifact."""

    def __init__(self, root: Path, manifest: Manifest, backend: str, **options: Any) -> None:
        self.root, self.manifest, self.backend = root, manifest, backend
        self.sessions: dict[str, Session] = {
            g.name: open_session(backend, root / g.file, g.inputs, g.outputs, **options) for g in manifest.graphs
        }

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.manifest.preprocessing


@dataclass
class CaptionResult:
    image: str
    caption: str
    tokens: list[int]
    score: float
    finished: bool
    attention: np.ndarray = field(repr=False)  # [steps, S, S]

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "caption": self.caption, "tokens": self.tokens,
                "score": round(self.score, 6), "finished": self.finished}


def _label(item: Any, i: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<array {i}>"


class Captioner(Pipeline):
    """Image captioning: encoder -> decoder_init -> beam search over decoder_step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.manifest.vocabulary is None:
            raise ArtifactError(f"{self.root}: captioner artifact has no vocabulary in its manifest")
        self.vocab = Vocabulary(self.manifest.vocabulary)

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        return np.stack([preprocess_image(im, self.preprocessing, _label(im, i)) for i, im in enumerate(images)])

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """[B, 3, S, S] -> features [B, P, C]."""
        feats = self.sessions["encoder"].run({"image": batch})["features"]
        return feats.reshape(feats.shape[0], -1, feats.shape[-1])

    def caption(self, images: Sequence[ImageLike] | ImageLike, beam: int = 3, max_len: int = DEFAULT_MAX_LEN,
                length_norm: bool = False) -> list[CaptionResult]:
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        if beam < 1:
            raise InputError(f"beam must be >= 1, got {beam}")
        if max_len < 1:
            raise InputError(f"max length must be >= 1, got {max_len}")
        images = list(images)
        if not images:
            raise InputError("no images given")
        feats = self.encode(self.preprocess(images))
        return self.caption_features(feats, [_label(im, i) for i, im in enumerate(images)], beam, max_len, length_norm)

    def caption_features(self, feats: np.ndarray, names: list[str], beam: int = 3, max_len: int = DEFAULT_MAX_LEN,
                         length_norm: bool = False) -> list[CaptionResult]:
        if not np.isfinite(feats).all():
            raise ArtifactError("encoder produced NaN/Inf features; the artifact or the input is broken")
        init = self.sessions["decoder_init"].run({"features": feats})
        hyps = beam_search(self.sessions["decoder_step"], feats, init["att1"], init["h"], init["c"],
                           self.vocab.start, self.vocab.end, beam, max_len, length_norm)
        side = int(round(np.sqrt(feats.shape[1])))
        return [CaptionResult(n, self.vocab.decode(h.tokens), h.tokens, h.score, h.finished,
                              h.alphas.reshape(-1, side, side)) for n, h in zip(names, hyps)]


@dataclass
class AudioResult:
    audio: str
    outputs: dict[str, np.ndarray] = field(repr=False)
    label: str | None = None
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"audio": self.audio, "label": self.label, "score": self.score}
        for k, v in self.outputs.items():
            doc[k] = np.round(v.astype(np.float64), 6).tolist()
        return doc


class AudioEncoder(Pipeline):
    """WAV/array -> front-end from the manifest (waveform or STFT) -> network.

    Clips longer than `max_seconds` are refused rather than run: the network's
    activations grow with the length (a 10-minute clip needs GBs), and these
    encoders summarise a clip, they do not stream.
    """

    max_seconds: float = 300.0

    def features(self, audio: str | Path | np.ndarray, name: str = "audio") -> np.ndarray:
        from mmedge.runtime import audio as A

        params = self.preprocessing
        if isinstance(audio, (str, Path)):
            x, _ = A.read_wav(audio, sample_rate=int(params["sample_rate"]))
            name = str(audio)
        else:
            x = np.asarray(audio, dtype=np.float32)
            if x.ndim != 1:
                raise InputError(f"{name}: expected a mono 1-D waveform, got shape {list(x.shape)}")
        if x.size and not x.any():  # before check_audio, which only warns about silence
            raise InputError(f"{name}: audio is silent (all samples are zero)")
        A.check_audio(x, name)
        sr = int(params["sample_rate"])
        if x.shape[0] > self.max_seconds * sr:
            raise InputError(f"{name}: {x.shape[0] / sr:.0f} s is longer than the {self.max_seconds:.0f} s this "
                             f"pipeline accepts; cut it into clips (AudioEncoder.max_seconds)")
        min_samples = int(self.manifest.extra.get("min_samples", 0))
        if x.shape[0] < min_samples:
            raise InputError(f"{name}: too short for this model ({x.shape[0] / sr:.3f} s; needs at least "
                             f"{min_samples / sr:.3f} s = {min_samples} samples at {sr} Hz)")
        return A.spectrogram_from_params(x, params)[None].astype(np.float32)

    def embed(self, audio: Sequence[str | Path | np.ndarray] | str | Path | np.ndarray) -> list[AudioResult]:
        if isinstance(audio, (str, Path)) or (isinstance(audio, np.ndarray) and audio.ndim == 1):
            audio = [audio]
        graph = self.manifest.graphs[0]
        session = self.sessions[graph.name]
        results = []
        for i, a in enumerate(audio):
            name = _label(a, i)
            feed = self.features(a, name)
            out = {k: v[0] for k, v in session.run({graph.inputs[0].name: feed}).items()}
            label, score = self._top1(out)
            results.append(AudioResult(name, out, label, score))
        return results

    def _top1(self, out: dict[str, np.ndarray]) -> tuple[str | None, float | None]:
        head = self.manifest.extra.get("class_output")
        if not head or head not in out:
            return None, None
        logits = out[head].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        i = int(p.argmax())
        labels = self.manifest.labels or [str(j) for j in range(len(p))]
        return labels[i], float(p[i])


class Refocuser(Pipeline):
    """Synthetic defocus: image + depth + focus range [near, far] -> image."""

    def refocus(self, image: ImageLike, depth: str | Path | np.ndarray, near: float, far: float) -> np.ndarray:
        if not (np.isfinite(near) and near >= 0):
            raise InputError(f"near must be a non-negative depth, got {near}")
        if not far >= near:
            raise InputError(f"far ({far}) must be >= near ({near})")
        rgb = as_rgb_array(image)
        d = read_depth(depth) if isinstance(depth, (str, Path)) else np.asarray(depth, np.float32)
        if d.shape != rgb.shape[:2]:
            raise InputError(f"depth map is {d.shape[1]}x{d.shape[0]} but the image is {rgb.shape[1]}x{rgb.shape[0]}")
        feeds = {
            "image": np.ascontiguousarray(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0),
            "depth": np.ascontiguousarray(d[None, None]),
            "near": np.array([near], np.float32),
            "far": np.array([far], np.float32),
        }
        out = self.sessions["model"].run(feeds)["refocused"][0]
        return (np.clip(out.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


PIPELINES: dict[str, type[Pipeline]] = {"captioner": Captioner, "audio": AudioEncoder, "refocus": Refocuser}


def load(artifact_dir: str | Path, backend: str | None = None, **options: Any) -> Pipeline:
    """Open an artifact directory as the pipeline its manifest names."""
    root = Path(artifact_dir)
    manifest = read_manifest(root)
    cls = PIPELINES.get(manifest.pipeline)
    if cls is None:
        raise ArtifactError(f"{root}: unknown pipeline {manifest.pipeline!r} in manifest")
    return cls(root, manifest, backend or backend_for_format(manifest.format), **options)
