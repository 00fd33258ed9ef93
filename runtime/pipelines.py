"""Pipelines: what `mmedge.runtime.load()` returns, built from the manifest alone.

A pipeline owns one Session per graph and the pre/post-processing around them:
`Captioner` (image preprocessing -> encoder -> decoder_init -> numpy beam
search), `AudioEncoder` (WAV -> STFT front-end -> network), `Refocuser`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numbers
import os

import numpy as np

from mmedge.errors import ArtifactError, InputError
from mmedge.runtime.batching import CaptionerSizes, auto_batch_size
from mmedge.runtime.decode import DEFAULT_MAX_LEN, beam_search
from mmedge.runtime.image import ImageLike, _check_depth_array, as_rgb_array, preprocess_image, read_depth
from mmedge.runtime.manifest import GraphEntry, Manifest, read_manifest
from mmedge.runtime.roles import DECODER_INIT, DECODER_STEP, ENCODER
from mmedge.runtime.session import BACKENDS, Session, backend_for_format, open_session
from mmedge.runtime.vocab import Vocabulary


class Pipeline:
    """Sessions for every graph of an artifact."""

    def __init__(self, root: Path, manifest: Manifest, backend: str, **options: Any) -> None:
        self.root, self.manifest, self.backend = root, manifest, backend
        self.sessions: dict[str, Session] = {}
        per_graph = BACKENDS.get(backend).per_graph

        def open_one(g: GraphEntry) -> Session:
            opts = per_graph(g.hints.step, options) if per_graph is not None else options
            return open_session(backend, root / g.file, g.inputs, g.outputs, **opts)

        graphs = list(manifest.graphs)
        try:
            if len(graphs) > 1 and BACKENDS.get(backend).parallel_load:
                self._open_parallel(graphs, open_one)
            else:
                for g in graphs:
                    self.sessions[g.name] = open_one(g)
        except BaseException:  # a graph that fails to open: the ones opened before it are freed now
            self.close()
            raise

    def _open_parallel(self, graphs: list[GraphEntry], open_one: Callable[[GraphEntry], Session]) -> None:
        """Open the graphs side by side, largest first; the first error (in graph order) is raised once
        every other session has been kept for close()."""
        from concurrent.futures import ThreadPoolExecutor

        order = sorted(graphs, key=lambda g: -self._size(g))
        with ThreadPoolExecutor(max_workers=min(len(graphs), 4), thread_name_prefix="mmedge-load") as pool:
            futures = {g.name: pool.submit(open_one, g) for g in order}
        first: BaseException | None = None
        for g in graphs:
            err = futures[g.name].exception()
            if err is None:
                self.sessions[g.name] = futures[g.name].result()
            elif first is None:
                first = err
        if first is not None:
            raise first

    def _size(self, g: GraphEntry) -> int:
        try:
            return (self.root / g.file).stat().st_size
        except OSError:
            return 0

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.manifest.preprocessing

    def close(self) -> None:
        """Close every session (frees engines, device memory, compiled models); idempotent."""
        for session in self.sessions.values():
            session.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item) if not isinstance(os.fspath(item), bytes) else os.fsdecode(item)
    return f"<array {i}>" if isinstance(item, np.ndarray) else f"<{type(item).__name__} {i}>"


def _int_arg(what: str, value: Any, minimum: int) -> int:
    """An integer argument of the Python API (numpy integers too; not bools, floats or strings)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise InputError(f"{what} must be >= {minimum}, got {value}")
    return int(value)


def _float_arg(what: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _is_single_image(images: Any) -> bool:
    from PIL import Image

    return isinstance(images, (str, os.PathLike, Image.Image)) or (
        isinstance(images, np.ndarray) and images.dtype != object)


def _as_image_list(images: Any) -> list[Any]:
    """One image or a sequence of images -> a list; anything else is an InputError, not a TypeError."""
    if images is None:
        raise InputError("no images given (got None); pass an image path, a PIL image, a uint8 array or a list of them")
    if _is_single_image(images):
        return [images]
    if isinstance(images, (bytes, dict)) or not hasattr(images, "__iter__"):
        raise InputError(f"expected an image path, a PIL image, a uint8 array or a list of them, "
                         f"got {type(images).__name__}")
    return list(images)


class Captioner(Pipeline):
    """Image captioning: encoder -> decoder_init -> beam search over decoder_step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.manifest.vocabulary is None:
            raise ArtifactError(f"{self.root}: captioner artifact has no vocabulary in its manifest")
        self.vocab = Vocabulary(self.manifest.vocabulary)

    def preprocess(self, images: Sequence[ImageLike], names: Sequence[str] | None = None) -> np.ndarray:
        """[B, 3, S, S] float32; `names` label the images in errors (default: paths, `<array i>`)."""
        names = names if names is not None else [_label(im, i) for i, im in enumerate(images)]
        return np.stack([preprocess_image(im, self.preprocessing, n) for im, n in zip(images, names)])

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """[B, 3, S, S] -> features [B, P, C]."""
        feats = self.sessions[ENCODER].run({"image": batch})["features"]
        return feats.reshape(feats.shape[0], -1, feats.shape[-1])

    def caption(self, images: Sequence[ImageLike] | ImageLike, beam: int = 3, max_len: int = DEFAULT_MAX_LEN,
                length_norm: bool = False, batch_size: int | None = None) -> list[CaptionResult]:
        """One result per image, in input order. Images are read, encoded and decoded `batch_size`
        at a time (default: `auto_batch_size()`, from this machine's memory and cores): each
        decoder_step call runs the live beams of a whole batch. Results equal captioning each
        image alone."""
        beam = _int_arg("beam", beam, 1)
        max_len = _int_arg("max length", max_len, 1)
        size = self.auto_batch_size(beam, max_len) if batch_size is None else _int_arg("batch size", batch_size, 1)
        images = _as_image_list(images)
        if not images:
            raise InputError("no images given")
        names = [_label(im, i) for i, im in enumerate(images)]
        results: list[CaptionResult] = []
        for start in range(0, len(images), size):
            chunk = names[start:start + size]
            feats = self.encode(self.preprocess(images[start:start + size], chunk))
            results += self.caption_features(feats, chunk, beam, max_len, length_norm)
        return results

    def auto_batch_size(self, beam: int = 3, max_len: int = DEFAULT_MAX_LEN) -> int:
        """Images per batch for this model on this machine (see `mmedge.runtime.batching`)."""
        return auto_batch_size(CaptionerSizes.from_manifest(self.manifest), beam, max_len)

    def caption_features(self, feats: np.ndarray, names: list[str], beam: int = 3, max_len: int = DEFAULT_MAX_LEN,
                         length_norm: bool = False) -> list[CaptionResult]:
        if not np.isfinite(feats).all():
            raise ArtifactError("encoder produced NaN/Inf features; the artifact or the input is broken")
        init = self.sessions[DECODER_INIT].run({"features": feats})
        hyps = beam_search(self.sessions[DECODER_STEP], feats, init["att1"], init["h"], init["c"],
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
        if isinstance(audio, (str, os.PathLike)):
            x, _ = A.read_wav(audio, sample_rate=int(params["sample_rate"]), max_seconds=self.max_seconds)
            name = _label(audio, 0)
        else:
            if not isinstance(audio, np.ndarray) or audio.dtype.kind not in "fiu":
                raise InputError(f"{name}: expected a WAV path or a 1-D numeric waveform, got "
                                 f"{getattr(audio, 'dtype', type(audio).__name__)}")
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
        min_samples = self.manifest.extra.min_samples or 0
        if x.shape[0] < min_samples:
            raise InputError(f"{name}: too short for this model ({x.shape[0] / sr:.3f} s; needs at least "
                             f"{min_samples / sr:.3f} s = {min_samples} samples at {sr} Hz)")
        return A.spectrogram_from_params(x, params)[None].astype(np.float32)

    def embed(self, audio: Sequence[str | Path | np.ndarray] | str | Path | np.ndarray) -> list[AudioResult]:
        if audio is None:
            raise InputError("no audio given (got None); pass a WAV path, a 1-D waveform or a list of them")
        if isinstance(audio, (str, os.PathLike)) or (isinstance(audio, np.ndarray) and audio.ndim == 1):
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
        head = self.manifest.extra.class_output
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
        near, far = _float_arg("near", near), _float_arg("far", far)
        if not (np.isfinite(near) and near >= 0):
            raise InputError(f"near must be a non-negative depth, got {near}")
        if not far >= near:
            raise InputError(f"far ({far}) must be >= near ({near})")
        rgb = as_rgb_array(image)
        d = read_depth(depth) if isinstance(depth, (str, os.PathLike)) else _check_depth_array(depth, "depth")
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
    if artifact_dir is None or not isinstance(artifact_dir, (str, os.PathLike)):
        raise InputError(f"load: expected an artifact directory path, got {type(artifact_dir).__name__}")
    if backend is not None and not isinstance(backend, str):
        raise InputError(f"load: backend must be a name, got {backend!r}")
    if backend is not None:  # the options are checked against the backend's schema before anything loads
        options = BACKENDS.get(backend).schema.validate(options)
    root = Path(artifact_dir)
    manifest = read_manifest(root)
    cls = PIPELINES.get(manifest.pipeline)
    if cls is None:
        raise ArtifactError(f"{root}: unknown pipeline {manifest.pipeline!r} in manifest")
    backend = backend or backend_for_format(manifest.format)
    return cls(root, manifest, backend, **BACKENDS.get(backend).schema.validate(options))
