"""`mmedge package mobile`: one zip per app, for iOS (Core ML) and Android (ONNX Runtime).

    mmedge package mobile --artifact A [--artifact B ...] --out app.zip
    mmedge package mobile --verify app.zip

Artifacts: `coreml` ones become `ios/<model>/<graph>.mlpackage`, `onnx` ones are
converted to ONNX Runtime's mobile format (`android/<model>/<graph>.ort`, with
`onnxruntime.tools.convert_onnx_models_to_ort`, fixed optimisations for ARM)
together with the reduced-operator configuration that ORT's build script takes
(`build.sh --include_ops_by_config android/required_operators_and_types.config
--enable_reduced_operator_type_support`). Per model the zip holds
`preprocessing.json`, the vocabulary / labels, for captioners `decoding.json`
(the beam-search loop spelled out: graphs, which output feeds which input,
start/end tokens, max length), and `test_vectors/` (raw little-endian arrays
described in `index.json`: inputs, expected outputs, expected tokens) so an
app's own implementation can be checked on the device, with a per-step beam trace
(`beam.trace.*`, recorded by `beam_search(trace=...)` on the artifact's graphs) and
preprocessing vectors from an RGBA image that is not the model's size. `manifest.json`
lists the sha256 and size of every other file and the minimum OS / runtime versions;
`MODEL_CARD.md`, `LICENSE`, a label file per classifier head and `README.md` (Kotlin and
Swift feeds) are for the app developer. `ports/js/` in the repository is a second
implementation (JavaScript, onnxruntime-node) that replays a bundle's vectors.

The zip is written to a temporary file next to `--out` and renamed into place
(`os.replace`): a failed packaging leaves nothing. Entries are sorted and dated
1980-01-01; every file is reproducible except the `.ort` files, whose table order
ONNX Runtime's serializer does not keep from run to run (and so `manifest.json`).

`--verify` extracts safely (absolute paths, `..`, links and oversized archives
are refused before anything is written), checks every sha256 and that nothing
unlisted was added, then replays the Android test vectors through
`mmedge.runtime` (ONNX Runtime reads `.ort` files) with the parity criteria of
`mmedge parity`, beam-search tokens included; on macOS the iOS packages too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mmedge.atomic import atomic_path
from mmedge.errors import ArtifactError, CheckFailedError, InputError, ParityError, require
from mmedge.export.mobile_versions import add_ort_requirements, check_ort_versions
from mmedge.export.package import PackageRequest, register_packager
from mmedge.runtime.decode import DEFAULT_MAX_LEN
from mmedge.runtime.parity import SCORE_TOLERANCE
from mmedge.runtime.manifest import (MANIFEST, GraphEntry, Manifest, artifact_file, load_npz, load_test_vectors,
                                    read_manifest, sha256_file)
from mmedge.runtime.schema import (MAX_JSON_BYTES, check_relpath, inside, load_schema, newer_format, parse_json,
                                   path_problem, read_json, validate)

BUNDLE_FORMAT = "mmedge-mobile"
BUNDLE_VERSION = 1
FORMATS = {"coreml": "ios", "onnx": "android"}
ORT_CONFIG = "required_operators_and_types.config"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
MAX_ENTRIES = 100_000
MAX_UNPACKED = 16 << 30  # bytes; a bigger archive is refused before extraction
BUNDLE_SCHEMA = load_schema("mobile-bundle.schema.json")  # the zip's manifest.json
VECTORS_SCHEMA = load_schema("mobile-test-vectors.schema.json")  # <model>/test_vectors/index.json
last_reports: list[Any] = []  # parity reports of the last --verify


# ============================================================================ building
def _artifacts(paths: list[Path]) -> dict[str, dict[str, tuple[Path, Manifest]]]:
    """model -> platform -> (artifact dir, manifest); every problem named before any work."""
    if not paths:
        raise InputError("package mobile needs at least one --artifact (onnx and/or coreml)")
    models: dict[str, dict[str, tuple[Path, Manifest]]] = {}
    for p in paths:
        m = read_manifest(p)  # verifies every file's sha256
        platform = FORMATS.get(m.format)
        if platform is None:
            raise InputError(f"{p}: a {m.format} artifact; mobile packages take onnx (Android) and coreml (iOS) "
                             f"artifacts")
        per = models.setdefault(m.model, {})
        if platform in per:
            raise InputError(f"{p}: a second {m.format} artifact of {m.model} (first: {per[platform][0]}); "
                             f"one per platform and model")
        for other_dir, other in per.values():
            if other.config != m.config:
                raise InputError(f"{p}: {m.model} config {m.config!r} but {other_dir} is {other.config!r}; "
                                 f"package one build of each model")
            _same_vectors(other_dir, other, p, m)
        per[platform] = (Path(p), m)
    return models


def _vectors(root: Path, m: Manifest) -> dict[str, np.ndarray]:
    path = root / m.extra.get("test_vectors", "test_vectors.npz")
    if not path.is_file() and not path.is_symlink():
        raise ArtifactError(f"{path}: missing; the artifact has no test vectors to ship")
    return load_test_vectors(root, m)  # checked against the graphs: no pickles, no bombs


def _same_vectors(a_dir: Path, a: Manifest, b_dir: Path, b: Manifest) -> None:
    va, vb = _vectors(a_dir, a), _vectors(b_dir, b)
    if set(va) != set(vb) or any(va[k].shape != vb[k].shape or not np.array_equal(va[k], vb[k]) for k in va):
        raise InputError(f"{b_dir}: its reference outputs differ from {a_dir}'s; the artifacts come from "
                         f"different weights (package the builds of one model)")


def convert_to_ort(onnx_dir: Path, out_dir: Path, type_reduction: bool = True) -> Path:
    """`.onnx` files under onnx_dir -> `.ort` files under out_dir (same layout) + the reduced-ops config."""
    import logging

    for module in ("onnxruntime", "onnx"):  # the converter imports onnx; a device install may lack it
        require(module, "mmedge package mobile: ONNX Runtime's ORT-format converter", extra="onnx")
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # it logs INFO lines to stderr
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            # Fixed: CPU-EP optimisations baked in (FusedConv/FusedGemm...); Runtime: `.with_runtime_opt.ort`,
            # basic optimisations only, the rest replayed at load time: for NNAPI/XNNPACK/CoreML EPs
            convert_onnx_models_to_ort(onnx_dir, output_dir=out_dir,
                                       optimization_styles=[OptimizationStyle.Fixed, OptimizationStyle.Runtime],
                                       target_platform="arm", enable_type_reduction=type_reduction)
    except Exception as e:  # ORT's converter: one line naming the failing model (it prints which)
        failing = [ln for ln in log.getvalue().splitlines() if ln.startswith("Error converting")]
        detail = failing[-1] if failing else (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise InputError(f"ONNX Runtime mobile (.ort) conversion failed: {detail[:300]}") from None
    config = out_dir / (ORT_CONFIG if type_reduction else "required_operators.config")
    if not config.is_file():
        raise InputError(f"ONNX Runtime did not write {config.name}")
    # its comments name the models by absolute (temporary) path: make them bundle-relative
    prefix = str(out_dir.resolve().parent) + os.sep
    for c in (config, config.with_suffix(".with_runtime_opt.config")):
        if c.is_file():  # the Runtime style also lists its temporary fixed-style conversion: name it stably
            text = re.sub(r"(?m)^# - .*?\.without_runtime_opt[/\\](.*)$", r"# - (fixed style, for the config) \1",
                          c.read_text(encoding="utf-8").replace(prefix, ""))
            c.write_text(text, encoding="utf-8")
    return config


def _decoding(model: str, m: Manifest, files: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The beam-search loop of mmedge.runtime.decode, as data for an app developer."""
    vocab = m.vocabulary or {}
    step = m.graph("decoder_step")
    return {
        "model": model,
        "graphs": {g: files[g] for g in ("encoder", "decoder_init", "decoder_step")},
        "start_token": vocab.get("<start>"), "end_token": vocab.get("<end>"), "pad_token": vocab.get("<pad>"),
        "vocabulary_size": len(vocab), "vocabulary": "vocabulary.json",
        "beam_size": 3, "max_length": DEFAULT_MAX_LEN, "length_normalisation": False,
        "max_length_counts": "decoding steps, <end> included (51: the tutorial's 50 words + <end>)",
        "tensors": {"step_inputs": [asdict(t) for t in step.inputs], "step_outputs": [asdict(t) for t in step.outputs]},
        "dtypes": {"prev_word": {"android": "int64", "ios": "int32 (Core ML has no int64 inputs)"},
                   "everything else": "float32"},
        "feeds": {
            "encoder.image": "the preprocessed image (preprocessing.json); iOS: a pixel buffer of the model's size",
            "decoder_init.features": "encoder.features reshaped from [B, S, S, C] to [B, S*S, C]",
            "decoder_step.features": "decoder_init's features, one row per live beam (the row of its image)",
            "decoder_step.att1": "decoder_init.att1, one row per live beam (the row of its image)",
            "decoder_step.prev_word": "start_token at step 1, then the word each beam chose",
            "decoder_step.h": "decoder_init.h at step 1, then h_next of the beam's source row",
            "decoder_step.c": "decoder_init.c at step 1, then c_next of the beam's source row",
        },
        "loop": [
            "features = encoder(image).reshape(B, S*S, C); h, c, att1 = decoder_init(features)",
            "per image: beams = [[]] (one empty hypothesis), scores = [0.0], k = beam_size, complete = []",
            "for t in 1..max_length:",
            "  log_probs, h_next, c_next, alpha = decoder_step(features[rows], att1[rows], prev_word, h, c)",
            "  per image: candidates = scores[:, None] + log_probs[rows of its beams]  (live beams x vocabulary)",
            "    take the k best candidates (step 1: from the single row), largest first; source row = index // V,"
            " word = index % V",
            "    a candidate whose word is end_token is complete: store (tokens without <end>, score); k -= 1",
            "    the others stay live: tokens + [word], score",
            "  stop when every image has k == 0 or t == max_length (an <end> at t == max_length still completes)",
            "  h, c = h_next[source rows], c_next[source rows]; prev_word = the live words;"
            " rows follow the source rows",
            "result per image: the complete hypothesis with the best score; if none completed, the best live one",
            "caption: the words of the tokens (vocabulary.json maps word -> id), without <start>/<end>/<pad>",
        ],
        "scores": "sums of log-probabilities (natural log), <end> included",
        "score_arithmetic": "float32: each step adds decoder_step's float32 log_probs to the float32 running score "
                            "(one float32 rounding per step, as numpy float32 + float32); nothing is accumulated in "
                            "float64. JavaScript: Math.fround(score + logp); Kotlin/Swift: Float",
        "tolerance": {"scores": f"|score - expected| <= {SCORE_TOLERANCE} x max(1, |expected|) (fp32 graphs); "
                                f"tokens, source rows and words must be equal",
                      "score_relative": SCORE_TOLERANCE,
                      "note": "a port on another ONNX Runtime build may see log_probs differ by ~1e-7; only a "
                              "near-tie (two candidates closer than that) may then legitimately flip"},
        "tie_breaking": [
            "top-k per image over the flattened candidates (live beams x vocabulary, row-major: index = "
            "row * V + word): larger score first; equal scores: the lower flat index first (lower source row, "
            "then lower word id)",
            "final choice: the highest score among the completed hypotheses, in completion order (earlier step "
            "first, then rank within the step); equal scores: the first completed wins. Only when none "
            "completed: the highest-scoring live beam, equal scores: the first in rank order",
        ],
        "tokens_padding": "test_vectors/beam.tokens.bin is int64 [images, max_length]: each row holds the chosen "
                          "tokens (without <start> and <end>) followed by -1 padding; drop every -1",
        "caption_text": "words of the tokens joined by single spaces; <start>, <end> and <pad> are dropped, <unk> is "
                        "kept and shown literally as '<unk>'",
        "trace": {"what": "test_vectors/beam.trace.*: every step of the reference beam search on the bundle's "
                          "graphs (see test_vectors/index.json beam_trace)",
                  "arrays": {"beam.trace.rows": "int32 [steps]: rows fed to decoder_step at each step (live beams "
                                                "of all images, grouped by image in image order)",
                             "beam.trace.step": "int32 [N]: the step (0-based) of each chosen candidate",
                             "beam.trace.image": "int32 [N]: its image",
                             "beam.trace.source_row": "int32 [N]: the decoder_step input row it extends (index "
                                                      "into that step's rows)",
                             "beam.trace.word": "int64 [N]: the word chosen (end_token: a completed hypothesis)",
                             "beam.trace.score": "float32 [N]: its running score"},
                  "order": "by step, then image, then rank (best first): the k candidates kept for each image "
                           "with live beams, <end> ones included"},
        "reference": "mmedge.runtime.decode.beam_search (numpy); test_vectors/index.json holds expected tokens; "
                     "a second implementation: ports/js/decoder.mjs in the mmedge repository (onnxruntime-node)",
    }


def _write_vectors(dest: Path, vectors: dict[str, np.ndarray], m: Manifest,
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


def _beam_trace(root: Path, m: Manifest, vectors: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """The reference beam search on the artifact's own graphs, step by step (beam.trace.* arrays)."""
    if m.pipeline != "captioner" or "beam.tokens" not in vectors:
        return None
    from mmedge.runtime.decode import beam_search
    from mmedge.runtime.pipelines import load

    pipe = load(root, "onnxruntime")
    beam, max_len = (int(v) for v in vectors["beam.settings"])
    feats = pipe.encode(vectors["beam.image"])
    init = pipe.sessions["decoder_init"].run({"features": feats})
    steps: list[Any] = []
    hyps = beam_search(pipe.sessions["decoder_step"], feats, init["att1"], init["h"], init["c"],
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


def _preprocess_vectors(m: Manifest) -> dict[str, Any] | None:
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


README = """# {title}

Built by mmedge {version} from: {sources}.

## What is here

{layout}

* `manifest.json`: every file with its sha256; `mmedge package mobile --verify <this zip>`
  re-checks them and replays the Android test vectors through ONNX Runtime.
* `<model>/preprocessing.json`: what to do to an input before the first graph.
* `<model>/decoding.json` (captioners): the beam-search loop, step by step: which output feeds which
  input, start/end tokens, max length. Graph and tensor names are a stable interface.
* `<model>/test_vectors/`: `index.json` describes raw little-endian arrays (`*.bin`): the inputs of
  every graph, the expected outputs, and the expected beam-search tokens. Run them through your app's
  own code on the device and compare with `index.json`'s criterion.

## iOS (Core ML)

Add `ios/<model>/*.mlpackage` to the Xcode project (Xcode compiles them to `.mlmodelc`). Inputs and
outputs carry descriptions; `user_defined_metadata` holds the preprocessing and the vocabulary.
The captioner's encoder takes a pixel buffer (RGB, the model's size) unless it was exported with
`encoder_input=tensor`; `prev_word` is int32 on iOS. Batch axes are flexible.

## Android (ONNX Runtime)

`android/<model>/<graph>.ort` are ONNX Runtime mobile-format models with fixed optimisations for
ARM baked in (FusedConv/FusedGemm contrib ops): use them with the CPU execution provider.
`android/<model>/<graph>.with_runtime_opt.ort` (ORT's "Runtime" optimisation style: basic
optimisations only, the rest replayed at load time on what the EP leaves to the CPU) are for the
NNAPI, XNNPACK and CoreML execution providers; set the session option
`session.enable_saved_runtime_optimizations=1` for them (`manifest.json`:
`models.<model>.android.runtime_optimized`).

Runtime versions (`manifest.json` `requirements.android.ort`): the files are ORT format version N
(their header), written by the onnxruntime release named there; releases older than
`format_readable_from` cannot read them, and only the writing release has run them. Use
`onnxruntime-android` of that release or newer, or build a smaller runtime from that same release
that contains only the operators they use:

    ./build.sh --android --minimal_build --include_ops_by_config android/{ort_config} \\
        --enable_reduced_operator_type_support ...

(runtime-optimised models: `required_operators_and_types.with_runtime_opt.config`).

## The captioner's feeds on each platform (the same as decoding.json)

| graph | input | shape | dtype (Android / iOS) |
| --- | --- | --- | --- |
| encoder | image | [B, 3, S, S] (iOS pixel-buffer builds: an S x S RGB image) | float32 |
| decoder_init | features | [B, P, C] = encoder.features [B, s, s, C] reshaped | float32 |
| decoder_step | features, att1 | [rows, P, C], [rows, P, A]: the row's image | float32 |
| decoder_step | prev_word | [rows] | int64 / int32 |
| decoder_step | h, c | [rows, D] | float32 |

Outputs of decoder_step: log_probs [rows, V], h_next, c_next [rows, D], alpha [rows, P]. Running
scores are float32 sums; ties go to the lower index (decoding.json: tie_breaking).

Kotlin (onnxruntime-android), one decoder_step:

```kotlin
val env = OrtEnvironment.getEnvironment()
val step = env.createSession(File(dir, "android/captioner/decoder_step.ort").readBytes())
val feeds = mapOf(
    "features" to OnnxTensor.createTensor(env, FloatBuffer.wrap(features), longArrayOf(rows, P, C)),
    "att1" to OnnxTensor.createTensor(env, FloatBuffer.wrap(att1), longArrayOf(rows, P, A)),
    "prev_word" to OnnxTensor.createTensor(env, LongBuffer.wrap(prevWords), longArrayOf(rows)),
    "h" to OnnxTensor.createTensor(env, FloatBuffer.wrap(h), longArrayOf(rows, D)),
    "c" to OnnxTensor.createTensor(env, FloatBuffer.wrap(c), longArrayOf(rows, D)))
step.run(feeds).use {{ out ->
    val logProbs = (out.get("log_probs").get() as OnnxTensor).floatBuffer  // [rows, V]
    val hNext = (out.get("h_next").get() as OnnxTensor).floatBuffer
    val cNext = (out.get("c_next").get() as OnnxTensor).floatBuffer
}}
```

Swift (onnxruntime-objc with the same .ort files; Core ML packages take the same names with
prev_word as Int32):

```swift
let env = try ORTEnv(loggingLevel: .warning)
let step = try ORTSession(env: env, modelPath: dir + "/android/captioner/decoder_step.ort", sessionOptions: nil)
func tensor(_ data: NSMutableData, _ type: ORTTensorElementDataType, _ shape: [NSNumber]) throws -> ORTValue {{
    try ORTValue(tensorData: data, elementType: type, shape: shape)
}}
let out = try step.run(withInputs: [
    "features": tensor(features, .float, [rows, P, C]), "att1": tensor(att1, .float, [rows, P, A]),
    "prev_word": tensor(prevWords, .int64, [rows]),  // Int64 values
    "h": tensor(h, .float, [rows, D]), "c": tensor(c, .float, [rows, D])],
    outputNames: ["log_probs", "h_next", "c_next", "alpha"], runOptions: nil)
let logProbs = try out["log_probs"]!.tensorData()  // Float32, [rows, V]
```

With Vision and Core ML on iOS: `request.imageCropAndScaleOption = .scaleFill` (the default
`.centerCrop` changes every caption of a non-square photo; see preprocessing.json).

A complete second implementation of the beam search, in JavaScript on onnxruntime-node (the API of
onnxruntime-web and onnxruntime-react-native), is `ports/js/decoder.mjs` in the mmedge
repository; `node ports/js/replay.mjs <unzipped bundle>` replays every test vector and the
per-step beam trace (`test_vectors/beam.trace.*`) with nothing but this bundle's files.

## Versions and what has run where

`manifest.json` `requirements` and `MODEL_CARD.md` give the minimum versions read from the files
(Core ML specification version, ORT format version and the onnxruntime release that wrote them),
`sizes` the bytes of every file. Checked while packaging and in mmedge's CI: the ONNX Runtime
test vectors (Python, and the JavaScript port on onnxruntime-node). Not run on any phone: Android,
iOS, NNAPI, Core ML on the Neural Engine.
"""


def _readme(models: dict[str, dict[str, tuple[Path, Manifest]]], ort_config: str | None) -> str:
    from mmedge.export.artifact import tool_versions

    lines = []
    for model, per in sorted(models.items()):
        m = next(iter(per.values()))[1]
        for platform, (_, pm) in sorted(per.items()):
            where = "ios" if platform == "ios" else "android"
            graphs = ", ".join(g.name + (".mlpackage" if platform == "ios" else ".ort") for g in pm.graphs)
            lines.append(f"* `{where}/{model}/`: {graphs} ({pm.format}, {pm.precision})")
        extra = ["preprocessing.json", "test_vectors/"]
        if m.vocabulary is not None:
            extra += ["vocabulary.json", "decoding.json"]
        if m.labels:
            extra.append("labels.json")
        lines.append(f"* `{model}/`: {', '.join(extra)}")
    sources = ", ".join(f"{model} ({next(iter(per.values()))[1].config})" for model, per in sorted(models.items()))
    return README.format(title="mmedge mobile bundle", version=tool_versions()["mmedge"], sources=sources,
                         layout="\n".join(lines), ort_config=ort_config or ORT_CONFIG)


def _stage(models: dict[str, dict[str, tuple[Path, Manifest]]], stage: Path, type_reduction: bool
           ) -> dict[str, Any]:
    """Lay out every file of the bundle under `stage`; returns the bundle manifest's `models`."""
    doc: dict[str, Any] = {}
    onnx_src = stage.parent / (stage.name + "-onnx")
    has_android = any("android" in per for per in models.values())
    for model, per in sorted(models.items()):
        entry: dict[str, Any] = {}
        files: dict[str, dict[str, str]] = {}
        for platform, (root, m) in sorted(per.items()):
            graphs = []
            for g in m.graphs:
                if platform == "ios":
                    from mmedge.runtime.backends.coreml import package_dir

                    pkg = package_dir(root / g.file)
                    rel = f"ios/{model}/{g.name}.mlpackage"
                    shutil.copytree(pkg, stage / rel)
                else:
                    src = root / g.file
                    (onnx_src / model).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, onnx_src / model / f"{g.name}.onnx")
                    rel = f"android/{model}/{g.name}.ort"
                files.setdefault(g.name, {})[platform] = rel
                graphs.append({**asdict(GraphEntry(g.name, rel, g.inputs, g.outputs))})
            entry[platform] = {"format": m.format, "precision": m.precision, "graphs": graphs}
            if platform == "ios" and (root / "image_vectors.npz").is_file():
                entry[platform]["image_input"] = True
        base = next(iter(per.values()))
        m = base[1]
        d = stage / model
        d.mkdir(parents=True)
        (d / "preprocessing.json").write_text(json.dumps(_preprocessing_doc(m, per), indent=2, sort_keys=True)
                                              + "\n", encoding="utf-8")
        entry.update({"config": m.config, "pipeline": m.pipeline, "preprocessing": f"{model}/preprocessing.json",
                      "test_vectors": f"{model}/test_vectors", "model_config": m.model_config,
                      # extra.test_vectors names the artifact's npz, which is not in the zip
                      "extra": {k: v for k, v in m.extra.items() if k != "test_vectors"}})
        if m.vocabulary is not None:
            (d / "vocabulary.json").write_text(json.dumps(m.vocabulary, indent=1, sort_keys=True, ensure_ascii=False)
                                               + "\n", encoding="utf-8")
            entry["vocabulary"] = f"{model}/vocabulary.json"
        if m.labels:
            (d / "labels.json").write_text(json.dumps(m.labels, indent=1) + "\n", encoding="utf-8")
            entry["labels"] = f"{model}/labels.json"
        heads = _head_labels(m)
        if heads:
            entry["head_labels"] = {}
            for head, (labels, named) in heads.items():
                rel = f"{model}/labels.{head}.json"
                (d / f"labels.{head}.json").write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
                entry["head_labels"][head] = {"file": rel, "named": named}
        if m.pipeline == "captioner":
            (d / "decoding.json").write_text(json.dumps(_decoding(model, m, files), indent=2) + "\n",
                                             encoding="utf-8")
            entry["decoding"] = f"{model}/decoding.json"
        image = None
        if "ios" in per and (per["ios"][0] / "image_vectors.npz").is_file():
            image = load_npz(artifact_file(per["ios"][0], "image_vectors.npz", "test vectors"))
        vectors = _vectors(*base)
        trace = _beam_trace(*per["android"], vectors) if "android" in per else None
        _write_vectors(d / "test_vectors", vectors, m, image, m.vocabulary,
                       {p: pm.precision for p, (_, pm) in per.items()}, trace, _preprocess_vectors(m))
        doc[model] = entry
    if has_android:
        config = convert_to_ort(onnx_src, stage / "android", type_reduction)
        shutil.rmtree(onnx_src, ignore_errors=True)
        for model, entry in doc.items():
            if "android" in entry:
                entry["android"]["ort_config"] = f"android/{config.name}"
    return doc


def _head_labels(m: Manifest) -> dict[str, tuple[list[str], bool]]:
    """A label list per classifier head (an output `X` with `n_X` classes in the model config):
    the manifest's labels for the class output, index labels (`X_0`, ...) where the model has no names."""
    out: dict[str, tuple[list[str], bool]] = {}
    class_output = m.extra.get("class_output")
    for g in m.graphs:
        for t in g.outputs:
            n = m.model_config.get(f"n_{t.name}")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                continue
            if t.name == class_output and m.labels and len(m.labels) == n:
                out[t.name] = (list(m.labels), True)
            else:
                out[t.name] = ([f"{t.name}_{i}" for i in range(n)], False)
    return out


def _preprocessing_doc(m: Manifest, per: dict[str, tuple[Path, Manifest]]) -> dict[str, Any]:
    pre = dict(m.preprocessing)
    doc: dict[str, Any] = {"parameters": pre}
    kind = pre.get("kind")
    if kind == "image":
        size = pre["image_size"]
        doc["steps"] = ["decode to 8-bit RGB: grayscale is repeated to 3 channels; transparency (RGBA, LA, "
                        "palette with transparency) is composited onto opaque white; 16-bit grayscale is "
                        "stretched min..max to 0..255",
                        "EXIF orientation is NOT applied: the pixels are used as stored in the file (a phone "
                        "photo whose EXIF says 'rotate 90' is captioned sideways, as mmedge captions it); an app "
                        "that shows the photo upright should pass the pixels as stored to match mmedge, or "
                        "rotate deliberately (and accept captions that differ from the test vectors)",
                        f"resize to {size}x{size} ignoring the aspect ratio (stretch, no crop) with Pillow's "
                        f"Image.resize(..., Image.BILINEAR): antialiased bilinear (a triangle filter whose support "
                        f"grows with the downscale factor), rounded to 8 bits; not done when the image is already "
                        f"{size}x{size}. JPEGs at least 4x the size on both sides are first decoded at reduced "
                        f"size by libjpeg (DCT scaling, never below 2x the size)",
                        f"x = pixel * {pre.get('scale', 1 / 255)}; x = (x - mean) / std per channel "
                        f"(mean {pre['mean']}, std {pre['std']}), float32 arithmetic",
                        "layout NCHW float32: [1, 3, H, W]"]
        doc["resize_on_devices"] = {
            "expected": "Pillow's antialiased bilinear (test_vectors: preprocess.* shows one image through every "
                        "step)",
            "android": "Bitmap.createScaledBitmap(filter=true) is plain bilinear (2x2 taps, no antialiasing) and "
                       "does not reproduce it when downscaling by more than 2x; scale in steps of at most 2x or "
                       "port Pillow's resample, and check against preprocess.resized_rgb",
            "ios": "vImageScale_ARGB8888 (Lanczos) does not reproduce it either. With Vision "
                   "(VNCoreMLRequest) set imageCropAndScaleOption = .scaleFill: the default .centerCrop crops "
                   "the middle square and silently changes every caption of a non-square photo",
            "measured": "the test vectors are the only check; nothing here ran on a phone"}
        if "ios" in per and (per["ios"][0] / "image_vectors.npz").is_file():
            doc["ios"] = (f"the Core ML encoder takes the {size}x{size} RGB pixel buffer itself; scale, mean and std "
                          f"are inside the model (only resize)")
    elif kind == "waveform":
        doc["steps"] = [f"mono float32 in [-1, 1] at {pre['sample_rate']} Hz (average stereo, resample)",
                        "shape [1, samples]"]
    elif kind == "stft_powerlaw":
        doc["steps"] = [f"mono float32 at {pre['sample_rate']} Hz",
                        f"STFT: n_fft {pre['n_fft']}, win_length {pre['win_length']}, hop {pre['hop_length']}, "
                        f"periodic {pre['window']} window, center={pre['center']} ({pre['pad_mode']} padding)",
                        f"real and imaginary parts each sign(x) * |x|^{pre['power']}; shape [1, 2, n_fft/2+1, frames]",
                        "reference: mmedge.runtime.audio.spectrogram_from_params"]
    elif kind == "image_depth":
        doc["steps"] = ["image: RGB float32 in [0, 1], NCHW [1, 3, H, W]; depth: metres [1, 1, H, W]",
                        "near, far: [1] float32 metres"]
    if m.extra.get("min_samples"):
        doc["min_samples"] = m.extra["min_samples"]
    return doc


def _zip(stage: Path, out: Path) -> None:
    """Write the staged tree as a zip next to `out`, then rename it into place."""
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(stage.rglob("*"), key=lambda q: q.relative_to(stage).as_posix()):
            if not p.is_file():
                continue
            info = zipfile.ZipInfo(p.relative_to(stage).as_posix(), ZIP_DATE)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(p, "rb") as src, z.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


LICENSE_TEXT = """MIT License

Copyright (c) the mmedge authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
def _requirements(stage: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """Minimum OS / runtime versions, read from the files themselves and the tools that wrote them."""
    from mmedge.export.artifact import tool_versions

    out: dict[str, Any] = {}
    from mmedge.export.mobile_versions import COREML_MIN_OS, coreml_spec_version, ort_format_version

    specs = {coreml_spec_version(stage / g["file"]) for e in doc.values() if "ios" in e for g in e["ios"]["graphs"]}
    if specs:
        spec = max(specs)
        ios = COREML_MIN_OS.get(spec, {}).get("iOS", f"spec {spec}")
        out["ios"] = {"coreml_spec_version": spec, "minimum_ios": ios,
                      "note": "Core ML specification version of the .mlpackage files (7 = iOS 16 / macOS 13)"}
    orts = {str(ort_format_version(stage / g["file"])) for e in doc.values() if "android" in e
            for g in e["android"]["graphs"]}
    if any("android" in e for e in doc.values()):
        ort = tool_versions("onnxruntime").get("onnxruntime", "")
        out["android"] = {
            "ort_format_version": ",".join(sorted(orts)) or None, "written_by_onnxruntime": ort or None,
            "minimum_onnxruntime_android": ort or None,
            "note": f"the .ort files were written by onnxruntime {ort or '?'} (ORT format version "
                    f"{','.join(sorted(orts)) or '?'}): use onnxruntime-android / onnxruntime-objc / "
                    f"onnxruntime-react-native {ort or '?'} or newer; a reduced-operator build "
                    f"(required_operators_and_types.config) must be built from that same release. Older "
                    f"releases may read them (onnxruntime-node 1.30 does, in mmedge's CI) but are not "
                    f"guaranteed to. Android API level: the minSdkVersion of that onnxruntime-android release"}
    return out


def _model_card(models: dict[str, dict[str, tuple[Path, Manifest]]], doc: dict[str, Any],
                requirements: dict[str, Any]) -> str:
    """MODEL_CARD.md: what each model is, its data, vocabulary, metrics and precision per platform,
    from the artifacts' manifests and a parity run of the ONNX graphs at packaging time."""
    from mmedge.export.artifact import tool_versions

    lines = ["# Model card", "", f"Bundle written by mmedge {tool_versions()['mmedge']}. Everything below comes "
             "from the artifacts' manifests and from checks run while packaging; nothing here ran on a phone.", ""]
    for model, per in sorted(models.items()):
        m = next(iter(per.values()))[1]
        lines += [f"## {model} ({m.config})", "", f"* pipeline: {m.pipeline}"]
        cal = m.extra.get("calibration")
        lines.append("* training data: not recorded in the artifact's manifest (see the model's own documentation)"
                     + (f"; int8 calibration data: {json.dumps(cal)[:300]}" if cal else ""))
        if m.vocabulary is not None:
            lines.append(f"* vocabulary: {len(m.vocabulary)} words (`{model}/vocabulary.json`, word -> id)")
        for head, info in sorted(doc[model].get("head_labels", {}).items()):
            lines.append(f"* output `{head}`: labels in `{info['file']}`"
                         + ("" if info["named"] else " (index labels: the model config names no classes for it)"))
        rep = m.extra.get("int8_report")
        lines.append(f"* metrics: int8 report of the export: {json.dumps(rep)[:600]}" if rep else
                     "* metrics: none recorded in the manifest (no evaluation was run on real data by the export)")
        for platform, (root, pm) in sorted(per.items()):
            effect = "not measured here (Core ML predictions need macOS)"
            if platform == "android":
                try:
                    from mmedge.runtime.parity import check
                    from mmedge.runtime.pipelines import load

                    r = check(load(root, "onnxruntime"))
                    worst = max((x.max_rel for x in r.outputs), default=0.0)
                    effect = (f"on the test vectors (random inputs) vs the PyTorch fp32 reference: max relative "
                              f"error {worst:.2e}" + (f", beam tokens equal {r.beam['tokens_equal']}" if r.beam else ""))
                except Exception as e:  # noqa: BLE001 - the card states the failure rather than hiding the bundle
                    effect = f"parity run failed while packaging ({e.__class__.__name__})"
            lines.append(f"* {platform}: {pm.format} {pm.precision}; measured effect: {effect}")
        lines.append("")
    lines += ["## Minimum versions", ""]
    for platform, req in sorted(requirements.items()):
        lines.append(f"* {platform}: " + "; ".join(f"{k} {v}" for k, v in req.items() if k != "note" and v))
        lines.append(f"  ({req['note']})")
    lines += ["", "License: MIT (`LICENSE`).", ""]
    return "\n".join(lines)


def build(req: PackageRequest) -> Path:
    out = Path(req.out)
    if out.suffix.lower() != ".zip":
        raise InputError(f"{out}: a mobile bundle is a .zip file")
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give the zip file to write")
    models = _artifacts([Path(a) for a in req.artifacts])
    type_reduction = bool(req.options.get("type_reduction", True))
    with tempfile.TemporaryDirectory(prefix="mmedge-mobile-") as work:
        stage = Path(work) / "bundle"
        stage.mkdir()
        doc = _stage(models, stage, type_reduction)
        ort_config = next((e["android"]["ort_config"].split("/")[-1] for e in doc.values() if "android" in e), None)
        (stage / "README.md").write_text(_readme(models, ort_config), encoding="utf-8")
        from mmedge.export.artifact import tool_versions

        requirements = _requirements(stage, doc)
        add_ort_requirements(stage, doc, requirements)  # ORT format floor, runtime-optimised models, min iOS
        (stage / "MODEL_CARD.md").write_text(_model_card(models, doc, requirements), encoding="utf-8")
        (stage / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")
        listed = [p for p in sorted(stage.rglob("*")) if p.is_file()]
        manifest = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
                    "tools": tool_versions("onnxruntime", "coremltools"), "models": doc,
                    "requirements": requirements,
                    "sizes": {p.relative_to(stage).as_posix(): p.stat().st_size for p in listed},
                    "files": {p.relative_to(stage).as_posix(): sha256_file(p) for p in listed}}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _zip(stage, out)
    return out


# ============================================================================ verifying
MAX_RATIO = 100  # a whole zip: unpacked bytes per archive byte (+ 64 MiB); honest bundles: ~1-3
MAX_MEMBER_RATIO = 200  # one member over 1 MiB: inflated / compressed (deflate's own limit is ~1032)


def _safe_members(z: zipfile.ZipFile, where: Path) -> list[zipfile.ZipInfo]:
    """Every entry checked before anything is written: no absolute path, no `..`, no links, and
    declared sizes that a zip of this size can honestly hold."""
    infos = z.infolist()
    if len(infos) > MAX_ENTRIES:
        raise InputError(f"{where}: {len(infos)} entries; refusing more than {MAX_ENTRIES}")
    budget = min(MAX_UNPACKED, MAX_RATIO * where.stat().st_size + (64 << 20))
    total = 0
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if (name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts
                or "\x00" in name or not parts):
            raise InputError(f"{where}: entry {name!r} points outside the bundle (absolute path or '..'); "
                             f"refusing to extract it")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (plain file)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise InputError(f"{where}: entry {name!r} is a link or special file; refusing to extract it")
        if not info.is_dir() and path_problem(name) is not None:
            raise InputError(f"{where}: entry {name[:200]!r} is not a plain relative path: {path_problem(name)}")
        key = PurePosixPath(*parts).as_posix().rstrip("/")
        if key in seen:
            raise InputError(f"{where}: entry {name!r} appears twice")
        seen.add(key)
        if info.file_size > (1 << 20) and info.file_size > MAX_MEMBER_RATIO * max(info.compress_size, 1):
            raise InputError(f"{where}: entry {name[:200]!r} would inflate from {info.compress_size} to "
                             f"{info.file_size} bytes (more than {MAX_MEMBER_RATIO}x; a zip bomb?); refusing it")
        total += info.file_size
        if total > budget:
            raise InputError(f"{where}: declares more than {budget} unpacked bytes for a "
                             f"{where.stat().st_size}-byte zip (a zip bomb?); refusing to extract it")
    return infos


def _open_zip(bundle: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise InputError(f"{bundle}: not a zip file ({str(e).splitlines()[0][:120] if str(e) else e})") from None


def _read_descriptor(z: zipfile.ZipFile, infos: list[zipfile.ZipInfo], bundle: Path) -> dict[str, Any]:
    """The bundle's manifest.json, first and bounded, validated against schemas/mobile-bundle.schema.json."""
    info = next((i for i in infos if i.filename == MANIFEST), None)
    if info is None:
        raise ArtifactError(f"{bundle}: no {MANIFEST}; not an mmedge mobile bundle")
    where = f"{bundle}: {MANIFEST}"
    if info.file_size > MAX_JSON_BYTES:
        raise ArtifactError(f"{where}: {info.file_size} bytes, over the {MAX_JSON_BYTES >> 20} MiB limit")
    try:
        with z.open(info) as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ArtifactError(f"{bundle}: {MANIFEST}: corrupt in the zip ({e})") from None
    doc = parse_json(data, str(bundle), ArtifactError, f"{MANIFEST} is not valid JSON")
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise ArtifactError(f"{bundle}: {MANIFEST} is not an mmedge mobile bundle manifest")
    version = newer_format(doc, BUNDLE_VERSION)
    if version is not None:
        raise ArtifactError(f"{bundle}: bundle format_version {version} is newer than this mmedge reads "
                            f"({BUNDLE_VERSION}); upgrade mmedge")
    validate(doc, BUNDLE_SCHEMA, where, "bundle manifest")
    return doc


def extract(bundle: Path, dest: Path) -> dict[str, Any]:
    """Check the zip's entries, read and validate its manifest, check the listing, then extract
    the listed files (streamed, hashed as they are written). Returns the manifest."""
    with _open_zip(bundle) as z:
        infos = _safe_members(z, bundle)
        doc = _read_descriptor(z, infos, bundle)
        files: dict[str, str] = doc["files"]
        present = {i.filename for i in infos if not i.is_dir()} - {MANIFEST}
        for rel in sorted(files):
            if rel not in present:
                raise CheckFailedError(f"{bundle}: {rel}: missing (listed in {MANIFEST})")
        extra = sorted(present - set(files))
        if extra:
            raise CheckFailedError(f"{bundle}: {extra[0]}: not listed in {MANIFEST} (file added after packaging)")
        for info in infos:
            if info.is_dir() or info.filename == MANIFEST:
                continue
            target = dest.joinpath(*info.filename.split("/"))
            h = hashlib.sha256()
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a file where an entry needs a folder
                raise ArtifactError(f"{bundle}: {info.filename}: cannot extract it ({e.strerror})") from None
            try:
                with z.open(info) as src, open(target, "xb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        dst.write(block)
            except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as e:  # CRC mismatch, truncation
                raise ArtifactError(f"{bundle}: {info.filename}: corrupt in the zip ({e})") from None
            except (FileExistsError, IsADirectoryError, NotADirectoryError) as e:
                raise ArtifactError(f"{bundle}: {info.filename}: cannot extract it ({e.strerror})") from None
            if h.hexdigest() != files[info.filename]:
                raise CheckFailedError(f"{bundle}: {info.filename}: sha256 does not match {MANIFEST} (file changed "
                                       f"or truncated)")
    return doc


def check_files(root: Path, bundle: Path) -> dict[str, Any]:
    """An extracted bundle's manifest: sha256 of every file, and no unlisted file."""
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{bundle}: no {MANIFEST}; not an mmedge mobile bundle")
    doc = read_json(path, "bundle manifest", ArtifactError, "is not valid JSON", follow_links=False)
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise ArtifactError(f"{bundle}: {MANIFEST} is not an mmedge mobile bundle manifest")
    validate(doc, BUNDLE_SCHEMA, f"{bundle}: {MANIFEST}", "bundle manifest")
    files = doc["files"]
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()} - {MANIFEST}
    for rel, digest in sorted(files.items()):
        if rel not in present:
            raise CheckFailedError(f"{bundle}: {rel}: missing (listed in {MANIFEST})")
        if sha256_file(inside(root, rel, MANIFEST)) != digest:
            raise CheckFailedError(f"{bundle}: {rel}: sha256 does not match {MANIFEST} (file changed or truncated)")
    extra = sorted(present - set(files))
    if extra:
        raise CheckFailedError(f"{bundle}: {extra[0]}: not listed in {MANIFEST} (file added after packaging)")
    return doc


def _pipeline(root: Path, model: str, entry: dict[str, Any], platform: str, vectors_file: str,
              files: dict[str, str] | None = None, bundle: Path | None = None) -> Any:
    from mmedge.runtime.pipelines import PIPELINES

    plat = entry[platform]
    where = f"{bundle or root}: {MANIFEST}: models.{model}"

    def listed(rel: str, what: str) -> Path:
        if files is not None and rel not in files and not any(f.startswith(rel + "/") for f in files):
            raise ArtifactError(f"{where}: {what} {rel!r} is not a file of the bundle")
        return root / check_relpath(rel, where, what)

    def doc(key: str) -> Any:
        return read_json(inside(root, entry[key], where, key), key, ArtifactError, "is not valid JSON",
                         follow_links=False)

    for g in plat["graphs"]:
        listed(g["file"], "graph file")
    pre = doc("preprocessing")
    if not isinstance(pre, dict) or not isinstance(pre.get("parameters"), dict):
        raise ArtifactError(f"{where}: {entry['preprocessing']}: expected an object with 'parameters'")
    d = {"format_version": 1, "model": model, "config": entry["config"], "pipeline": entry["pipeline"],
         "format": plat["format"], "precision": plat["precision"], "graphs": plat["graphs"],
         "preprocessing": pre["parameters"], "model_config": entry.get("model_config", {}),
         "vocabulary": doc("vocabulary") if "vocabulary" in entry else None,
         "labels": doc("labels") if "labels" in entry else None,
         "extra": {**entry.get("extra", {}), "test_vectors": vectors_file}}
    m = Manifest.from_dict(d, f"{where} ({platform})")
    cls = PIPELINES.get(m.pipeline)
    if cls is None:
        raise ArtifactError(f"{model}: unknown pipeline {m.pipeline!r} in {MANIFEST}")
    return cls(root, m, "onnxruntime" if platform == "android" else "coreml")


def verify(bundle: Path) -> list[Any]:
    """Safe extraction, sha256 of every file, then the test vectors through mmedge.runtime."""
    from mmedge.runtime.parity import check

    bundle = Path(bundle)
    if not bundle.is_file():
        raise InputError(f"{bundle}: bundle not found")
    reports = []
    with tempfile.TemporaryDirectory(prefix="mmedge-verify-") as work:
        root = Path(work) / "bundle"
        root.mkdir()
        doc = extract(bundle, root)
        check_ort_versions(root, doc, str(bundle))  # each .ort's header: the format version the manifest states
        for model, entry in sorted(doc["models"].items()):
            try:
                plain, image = read_vectors(root, entry["test_vectors"])
            except ArtifactError as e:
                raise ArtifactError(f"{bundle}: {model}: {e}") from None
            except (ValueError, OSError) as e:
                raise ArtifactError(f"{bundle}: {model}: malformed test vectors in the bundle "
                                    f"({e.__class__.__name__}: {e})") from None
            np.savez(root / f".{model}-vectors.npz", **plain)  # model: a name (schema), not a path
            platforms = ["android"] if "android" in entry else []
            if "ios" in entry and sys.platform == "darwin":
                import importlib.util

                if importlib.util.find_spec("coremltools") is not None:
                    np.savez(root / f".{model}-ios-vectors.npz", **{**plain, **image})
                    platforms.append("ios")
            for platform in platforms:
                vec = f".{model}-vectors.npz" if platform == "android" else f".{model}-ios-vectors.npz"
                rep = check(_pipeline(root, model, entry, platform, vec, doc["files"], bundle))
                rep.artifact = f"{bundle}:{platform}/{model}"
                reports.append(rep)
                if not rep.ok:
                    bad = list(rep.outputs)
                    if not rep.beam.get("ok", True):
                        from mmedge.errors import Mismatch

                        bad.append(Mismatch("beam tokens", float(rep.beam.get("max_rel_score_error", 0)), 0.0, 0.0))
                    raise ParityError(f"{bundle}: {platform}/{model}", bad)
    return reports


@register_packager("mobile")
def package_mobile(req: PackageRequest) -> Path:
    verify_path = req.options.get("verify")
    if verify_path is not None:
        last_reports[:] = verify(Path(verify_path))
        for r in last_reports:  # a line per platform and model on stderr (stdout stays for --json)
            worst = max((m.max_rel for m in r.outputs), default=0.0)
            beam = f", beam tokens equal {r.beam['tokens_equal']}" if r.beam else ""
            print(f"{r.artifact}: parity ok ({r.precision}, max rel error {worst:.2e}{beam})", file=sys.stderr)
        return Path(verify_path)
    return build(req)
