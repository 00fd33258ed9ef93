"""What an app implements, as data: a mobile bundle's `decoding.json` (the beam-search loop of
mmedge.runtime.decode spelled out), `preprocessing.json` (the steps before the first graph)
and the label list of each classifier head. Written by `mmedge package mobile`
(export/mobile.py); the test vectors that check an implementation are export/mobile_vectors.py.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmedge.runtime.decode import DEFAULT_MAX_LEN
from mmedge.runtime.manifest import Manifest
from mmedge.runtime.parity import SCORE_TOLERANCE
from mmedge.runtime.roles import CAPTIONER_GRAPHS, DECODER_STEP


def decoding_doc(model: str, m: Manifest, files: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The beam-search loop of mmedge.runtime.decode, as data for an app developer."""
    vocab = m.vocabulary or {}
    step = m.graph(DECODER_STEP)
    return {
        "model": model,
        "graphs": {g: files[g] for g in CAPTIONER_GRAPHS},
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


def head_labels(m: Manifest) -> dict[str, tuple[list[str], bool]]:
    """A label list per classifier head (an output `X` with `n_X` classes in the model config):
    the manifest's labels for the class output, index labels (`X_0`, ...) where the model has no names."""
    out: dict[str, tuple[list[str], bool]] = {}
    class_output = m.extra.class_output
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


def preprocessing_doc(m: Manifest, per: dict[str, tuple[Path, Manifest]]) -> dict[str, Any]:
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
    if m.extra.min_samples:
        doc["min_samples"] = m.extra.min_samples
    return doc
