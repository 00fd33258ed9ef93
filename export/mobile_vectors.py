"""A mobile bundle's `<model>/test_vectors/`: raw little-endian arrays described by `index.json`.

Written when packaging (the artifact's test vectors, the reference beam search step by step
on the artifact's own graphs, preprocessing from an RGBA image that is not the model's size)
so an app's own code can be checked on the device; read back by `--verify` and by the
JavaScript port (ports/js/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import ArtifactError
from mmedge.runtime.manifest import MANIFEST, Manifest
from mmedge.runtime.roles import DECODER_INIT, DECODER_STEP
from mmedge.runtime.schema import check_relpath, inside, load_schema, read_json, validate

VECTORS_SCHEMA = load_schema("mobile-test-vectors.schema.json")  # <model>/test_vectors/index.json


def write_vectors(dest: Path, vectors: dict[str, np.ndarray], m: Manifest,
                  image_vectors: dict[str, np.ndarray] | None, vocab: dict[str, int] | None,
                  precisions: dict[str, str], trace: dict[str, Any] | None = None,
                  prep: dict[str, Any] | None = None) -> None:
    """Raw little-endian arrays + index.json (inputs, expected outputs, expected tokens, the
    per-step beam trace, preprocessing vectors)."""
    from mmedge.runtime.parity import TOLERANCE

    dest.mkdir(parents=True)
    index: dict[str, Any] = {"arrays": {}, "graphs": {}, "precisions": precisions,
                             "criterion": "per output: max |got - expected| <= tolerance x max |expected| "
                                          "(int8: cosine similarity >= 0.9)",
                             "tolerance": dict(TOLERANCE)}
    sets = {"": {**vectors, **(trace or {}).get("arrays", {}), **(prep or {}).get("arrays", {})},
            "image.": image_vectors or {}}
    for prefix, arrays in sets.items():
        for key in sorted(arrays):
            arr = np.ascontiguousarray(arrays[key])
            arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
            name = f"{prefix}{key}.bin"
            (dest / name).write_bytes(arr.tobytes())
            index["arrays"][prefix + key] = {"file": name, "dtype": str(arr.dtype.name), "shape": list(arr.shape)}
    for g in m.graphs:
        index["graphs"][g.name] = {"inputs": [f"{g.name}.{t.name}" for t in g.inputs],
                                   "expected": [f"{g.name}.{t.name}" for t in g.outputs]}
    if "beam.tokens" in vectors:
        words = {i: w for w, i in (vocab or {}).items()}
        hidden = {(vocab or {}).get(s) for s in ("<start>", "<end>", "<pad>")}

        def tokens(v: dict[str, np.ndarray]) -> dict[str, Any]:
            rows = [[int(t) for t in row if t >= 0] for row in v["beam.tokens"]]
            return {"images": "beam.image", "beam_size": int(v["beam.settings"][0]),
                    "max_length": int(v["beam.settings"][1]), "expected_tokens": rows,
                    "expected_scores": [float(s) for s in v["beam.scores"]],
                    "expected_captions": [" ".join(words.get(t, "?") for t in r if t not in hidden) for r in rows],
                    "tokens_padding": "beam.tokens.bin rows end with -1 padding (dropped here)"}

        index["beam_search"] = tokens(vectors)
        if image_vectors and "beam.tokens" in image_vectors:
            index["beam_search_on_pixels"] = {**tokens(image_vectors), "images": "image.beam.pixels (uint8 HxWx3)"}
    if trace:
        index["beam_trace"] = {k: v for k, v in trace.items() if k != "arrays"}
        index["beam_trace"]["arrays"] = sorted(trace["arrays"])
    if prep:
        index["preprocessing"] = {k: v for k, v in prep.items() if k != "arrays"}
        index["preprocessing"]["arrays"] = sorted(prep["arrays"])
    (dest / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def beam_trace(root: Path, m: Manifest, vectors: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """The reference beam search on the artifact's own graphs, step by step (beam.trace.* arrays)."""
    if m.pipeline != "captioner" or "beam.tokens" not in vectors:
        return None
    from mmedge.runtime.decode import beam_search
    from mmedge.runtime.pipelines import load

    pipe = load(root, "onnxruntime")
    beam, max_len = (int(v) for v in vectors["beam.settings"])
    feats = pipe.encode(vectors["beam.image"])
    init = pipe.sessions[DECODER_INIT].run({"features": feats})
    steps: list[Any] = []
    hyps = beam_search(pipe.sessions[DECODER_STEP], feats, init["att1"], init["h"], init["c"],
                       pipe.vocab.start, pipe.vocab.end, beam, max_len, trace=steps)
    cols: dict[str, list[Any]] = {"step": [], "image": [], "source_row": [], "word": [], "score": []}
    for t, (_, per_image) in enumerate(steps):
        for image, src, words, scores in per_image:
            n = len(words)
            cols["step"] += [t] * n
            cols["image"] += [image] * n
            cols["source_row"] += [int(r) for r in src]
            cols["word"] += [int(w) for w in words]
            cols["score"] += [float(x) for x in scores]
    arrays = {"beam.trace.rows": np.array([r for r, _ in steps], np.int32),
              "beam.trace.step": np.array(cols["step"], np.int32),
              "beam.trace.image": np.array(cols["image"], np.int32),
              "beam.trace.source_row": np.array(cols["source_row"], np.int32),
              "beam.trace.word": np.array(cols["word"], np.int64),
              "beam.trace.score": np.array(cols["score"], np.float32)}
    return {"arrays": arrays, "images": "beam.image", "beam_size": beam, "max_length": max_len,
            "steps": len(steps), "recorded_with": f"mmedge.runtime.decode.beam_search on the {m.format} "
                                                  f"{m.precision} graphs (ONNX Runtime, CPU)",
            "tokens": [h.tokens for h in hyps], "scores": [float(h.score) for h in hyps],
            "finished": [bool(h.finished) for h in hyps],
            "format": "see decoding.json trace: per step the rows fed, then per image the k kept candidates "
                      "(source row, word, float32 score), best first"}


PREP_SOURCE = (53, 97)  # height, width of the synthetic preprocessing image: not square, not the model's size


def preprocess_vectors(m: Manifest) -> dict[str, Any] | None:
    """An RGBA image that is not the model's size, the 8-bit RGB after flattening and resizing, and
    the normalised tensor: what mmedge.runtime.image.preprocess_image does, as arrays."""
    pre = m.preprocessing
    if pre.get("kind") != "image":
        return None
    from PIL import Image

    from mmedge.runtime.image import as_rgb_array, preprocess_image

    size = int(pre["image_size"])
    h, w = PREP_SOURCE
    if (h, w) == (size, size):
        h += 1
    rng = np.random.default_rng(20)
    yy, xx = np.mgrid[0:h, 0:w]
    rgba = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256,
                     np.where(xx < w // 2, 255, (yy * 255) // max(h - 1, 1))], axis=-1).astype(np.int64)
    rgba = np.clip(rgba + rng.integers(-20, 21, rgba.shape) * (np.arange(4) < 3), 0, 255).astype(np.uint8)
    flat = as_rgb_array(rgba)  # alpha composited onto white
    rgb = np.asarray(Image.fromarray(flat).resize((size, size), Image.BILINEAR))
    image = preprocess_image(rgba, pre)[None]
    return {"arrays": {"preprocess.source_rgba": rgba, "preprocess.flattened_rgb": flat,
                       "preprocess.resized_rgb": rgb, "preprocess.image": image},
            "source": f"preprocess.source_rgba: uint8 [{h}, {w}, 4], a synthetic RGBA image (left half opaque, "
                      f"right half alpha ramping 0..255 top to bottom)",
            "steps": ["preprocess.flattened_rgb: alpha composited onto opaque white (PIL Image.alpha_composite, "
                      "uint8 rounding), then RGB",
                      f"preprocess.resized_rgb: resized to {size}x{size} with PIL's Image.resize(BILINEAR): "
                      f"antialiased (a triangle filter whose support widens with the downscale factor), uint8",
                      "preprocess.image: float32 [1, 3, S, S]: x = rgb * scale; (x - mean) / std per channel, NCHW"],
            "tolerance": {"preprocess.image from preprocess.resized_rgb": "max |diff| <= 1e-5 (float32 arithmetic)",
                          "preprocess.resized_rgb": "exact with Pillow's resize; other resizers differ by "
                                                    "several levels (see preprocessing.json)"}}


def read_vectors(root: Path, folder: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The arrays of a bundle's test_vectors folder: (test vectors, pixel-image vectors).

    `index.json` is validated against schemas/mobile-test-vectors.schema.json; every array file
    is a path inside the folder (no link) whose size is exactly shape x dtype before it is read."""
    where = f"{folder}/index.json"
    index = read_json(inside(root, check_relpath(folder, "the bundle manifest", "test_vectors") + "/index.json",
                             MANIFEST), "test vector index", ArtifactError, "is not valid JSON", follow_links=False)
    validate(index, VECTORS_SCHEMA, where, "test vector index")
    plain: dict[str, np.ndarray] = {}
    image: dict[str, np.ndarray] = {}
    for key, d in index["arrays"].items():
        dtype = np.dtype(d["dtype"]).newbyteorder("<")
        p = inside(root, f"{folder}/{d['file']}", where, "array file")
        count = 1
        for n in d["shape"]:
            count *= n
        if p.stat().st_size != count * dtype.itemsize:
            raise ArtifactError(f"{where}: array {key!r} is {d['dtype']} {d['shape']} ({count * dtype.itemsize} "
                                f"bytes) but {d['file']} holds {p.stat().st_size} bytes")
        arr = np.frombuffer(p.read_bytes(), dtype=dtype)
        arr = arr.astype(np.dtype(d["dtype"]), copy=False).reshape(d["shape"])
        if key.startswith("image."):
            image[key[len("image."):]] = arr
        else:
            plain[key] = arr
    return plain, image
