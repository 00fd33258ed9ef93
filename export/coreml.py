"""Core ML export: one ML Program package (`<graph>.mlpackage`) per graph.

Each graph is traced from the PyTorch model (`torch.jit.trace`) and converted
with `coremltools.convert(convert_to="mlprogram")` for a minimum deployment
target (iOS 16 / macOS 13 by default, `--export-option deployment_target=iOS17`).

* The captioner's encoder takes an image (`ct.ImageType`, RGB): Core ML applies
  scale 1/255 and bias -mean, the graph divides by the ImageNet std, so an app
  passes a pixel buffer of the model's size and nothing else.
  `--export-option encoder_input=tensor` exports the normalised float tensor instead.
* Batch axes are flexible: a range (`shapes=range`, 1..`max_batch`) or an
  enumerated set (`shapes=enumerated`, `batches=1,2,4`; one flexible input per
  graph below iOS 18, as Core ML requires). Other dynamic axes (audio
  length, refocus image size) are ranges from the model's shortest input up to
  `max_samples`, `max_frames`, `max_height`, `max_width`.
* The captioner's decoder rows (N = images x live beams) are sized for the beam
  widths offered (`beams=1,3,5`, `max_images=2`, `default_beam=3`): every row
  count a beam search can reach, 1..max_images x max(beams) (beams shrink as
  hypotheses complete), default = `default_beam` rows. With a range the Neural
  Engine runs only the default shape (other shapes fall back to CPU/GPU); with
  enumerated shapes each listed shape can run there (coremltools' "Flexible
  Input Shapes" guide; Apple's answer in developer forum thread 724930). So
  `decoder_shapes=auto` (default) enumerates wherever Core ML allows it:
  decoder_init (one flexible input) always, decoder_step (five) from iOS 18 on
  (below iOS 18 Core ML takes enumerated shapes on a single input only); below
  iOS 18 decoder_step keeps a range whose default is the common beam's rows.
* Output names differ from input names (Core ML requires it; checked first).
* Precision: fp16 (the ML Program default), fp32, int8 (weights only:
  `coremltools.optimize.coreml.linear_quantize_weights`, fp16 compute). W8A8
  with calibrated activations is the `coreml` INT8 recipe
  (`mmedge.calibration.coreml`, `mmedge export --precision int8`).
* Metadata: author, version, description, license, per-input/output
  descriptions; `user_defined_metadata` holds the preprocessing (JSON), the
  vocabulary (JSON, decoder graphs) and the mmedge model/graph/precision.

Every package is checked after conversion without running it (Core ML predicts
only on macOS): inputs and outputs, and every op against the deployment
target's op set (`check_package`, `describe_package`).

In the artifact manifest a graph's file is `<graph>.mlpackage/Manifest.json`:
the manifest lists files and a package is a folder; the Core ML session opens
the folder around it. Captioner artifacts with an image input also carry
`image_vectors.npz`: test vectors on 8-bit images (the pixel-buffer input
cannot take the random float test vectors), with the reference beam search on
them.

One job per module: coreml_options (the option schema, ModelInfo and the input
shapes), coreml_tools (the coremltools import, its quirks, deployment targets),
coreml_inspect (the package checks); this one converts, writes metadata, saves and
registers the exporter, and every name stays importable from here.
"""

from __future__ import annotations

import json
import re
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmedge.errors import ExportError
from mmedge.export.artifact import tensor_spec
from mmedge.export.coreml_inspect import PackageInfo, check_package, describe_package  # noqa: F401
from mmedge.export.coreml_options import (  # noqa: F401 - re-exported
    AXIS_MAX,
    DECODER_GRAPHS,
    DEFAULT_BATCHES,
    DEFAULT_BEAM,
    DEFAULT_BEAMS,
    DEFAULT_IMAGES,
    DEFAULT_LICENSE,
    DEFAULT_TARGET,
    MAX_ENUMERATED,
    MULTI_ENUMERATED_TARGET,
    OPTIONS,
    TARGET_NAMES,
    W8A8_MIN_TARGET,
    CoreMLOptions,
    ModelInfo,
    _input_types,
    decoder_flexibility,
    decoder_rows,
    takes_image,
)
from mmedge.export.coreml_tools import coremltools, minimum_os, quiet, target_value  # noqa: F401
from mmedge.export.registry import BEAM_VECTORS, EXAMPLE_BATCH, SEED, ExportContext, register_exporter
from mmedge.models.zoo import GraphSpec
from mmedge.runtime.backends.coreml import PACKAGE_MANIFEST, PREPROCESSING_KEY
from mmedge.runtime.manifest import GraphEntry
from mmedge.runtime.roles import ENCODER

ROWS_KEY = "mmedge.decoder_rows"
IMAGE_VECTORS = "image_vectors.npz"
VOCABULARY_KEY = "mmedge.vocabulary"
_FILE = "{}.mlpackage/" + PACKAGE_MANIFEST

DESCRIPTIONS = {
    "image": "RGB image, the model's size, normalised with the ImageNet mean/std",
    "features": "encoder feature grid",
    "h": "LSTM hidden state",
    "c": "LSTM cell state",
    "att1": "attention projection of the features (computed once per image)",
    "prev_word": "previous word id (<start> at the first step)",
    "log_probs": "log-probabilities of the next word",
    "h_next": "LSTM hidden state after this step",
    "c_next": "LSTM cell state after this step",
    "alpha": "attention weights over the feature grid",
    "waveform": "mono waveform in [-1, 1] at the model's sample rate",
    "spectrogram": "power-law compressed STFT (real, imag)",
    "objects": "object class logits",
    "scenes": "scene class logits",
    "embedding": "embedding",
    "logits": "class logits",
    "depth": "depth map in metres",
    "near": "near end of the in-focus depth range (metres)",
    "far": "far end of the in-focus depth range (metres)",
    "refocused": "refocused RGB image in [0, 1]",
}


# ----------------------------------------------------------------------------- conversion
class ImageInput(nn.Module):
    """The encoder behind a `ct.ImageType`: Core ML applies x/255 - mean, this divides by std."""

    def __init__(self, encoder: nn.Module, std: list[float]) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("inv_std", (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image * self.inv_std)



_UNSUPPORTED = re.compile(r"convert function for op '([^']+)' not implemented")


def convert_graph(module: nn.Module, graph: GraphSpec, feeds: dict[str, torch.Tensor], info: ModelInfo,
                  precision: str, opts: CoreMLOptions, min_target: str | None = None) -> Any:
    """Trace `module` (the graph's wrapper) and convert it to an ML Program MLModel (not saved)."""
    ct = coremltools()
    clash = sorted(set(graph.inputs) & set(graph.outputs))
    if clash:
        raise ExportError(f"{info.name} graph {graph.name!r}: output name(s) {', '.join(clash)} equal input names; "
                          f"Core ML needs distinct names (rename the outputs, e.g. h -> h_next)")
    target = opts.deployment_target
    if min_target and target_value(target) < target_value(min_target):
        raise ExportError(f"{info.name} graph {graph.name!r}: needs deployment target {min_target} or later "
                          f"(Core ML's activation quantization), got --export-option deployment_target={target}")
    image = takes_image(info, graph, opts)
    if image:
        module = ImageInput(module, list(info.preprocessing["std"]))
        std = torch.tensor(info.preprocessing["std"], dtype=torch.float32).view(1, 3, 1, 1)
        example: tuple[torch.Tensor, ...] = (feeds["image"][:1] * std,)  # one pixel buffer, after /255 - mean
    else:
        example = tuple(feeds.values())
    inputs = _input_types(ct, info, graph, feeds, opts, image)
    outputs = [ct.TensorType(name=o, dtype=np.float32) for o in graph.outputs]
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    with quiet() as log:
        try:
            traced = torch.jit.trace(module.eval(), example, check_trace=False)
            mlmodel = ct.convert(traced, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                                 minimum_deployment_target=getattr(ct.target, target), compute_precision=compute,
                                 skip_model_load=True)
        except Exception as e:  # converter internals: one line naming the graph and, if known, the op
            text = str(e).strip()
            m = _UNSUPPORTED.search(text)
            where = re.search(r"converting '([^']+)' op \(located at: '([^']*)'\)", log.getvalue())
            if m:
                loc = f" at {where.group(2)!r}" if where else ""
                raise ExportError(f"{info.name} graph {graph.name!r}: Core ML cannot convert the PyTorch op "
                                  f"{m.group(1)!r}{loc} (coremltools {ct.__version__}); write it with supported "
                                  f"ops (as mmedge's captioner writes out its LSTM cell)") from None
            first = text.splitlines()[0] if text else e.__class__.__name__
            raise ExportError(f"{info.name} graph {graph.name!r}: Core ML conversion failed: {first[:300]}") from e
    return mlmodel


def quantize_weights(mlmodel: Any, opts: CoreMLOptions, per_channel: bool = True) -> Any:
    """int8 weights: `linear_quantize_weights` (symmetric, per output channel); weights with
    fewer than `weight_threshold` elements stay float."""
    coremltools()
    import coremltools.optimize as cto

    cfg = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel" if per_channel else "per_tensor",
        weight_threshold=opts.weight_threshold))
    with quiet():
        return cto.coreml.linear_quantize_weights(mlmodel, config=cfg)


def set_metadata(mlmodel: Any, info: ModelInfo, graph: GraphSpec, precision: str, opts: CoreMLOptions,
                 image: bool) -> None:
    mlmodel.author = opts.author
    mlmodel.version = opts.version or _version()
    mlmodel.short_description = opts.description or (f"{info.name} ({info.config}) graph '{graph.name}', "
                                                     f"{precision}: {info.description}")
    mlmodel.license = opts.license or DEFAULT_LICENSE
    for name in graph.inputs:
        text = DESCRIPTIONS.get(name, name)
        if image and name == "image":
            text = (f"RGB pixel buffer, {info.preprocessing['image_size']}x{info.preprocessing['image_size']}, "
                    f"resized bilinearly; the model applies /255 and the ImageNet mean/std")
        mlmodel.input_description[name] = text
    for name in graph.outputs:
        mlmodel.output_description[name] = DESCRIPTIONS.get(name, name)
    meta = mlmodel.user_defined_metadata
    meta.pop("com.github.apple.coremltools.conversion_date", None)  # byte-identical re-exports
    meta["mmedge.model"] = info.name
    meta["mmedge.config"] = info.config
    meta["mmedge.graph"] = graph.name
    meta["mmedge.precision"] = precision
    meta[PREPROCESSING_KEY] = json.dumps(info.preprocessing, sort_keys=True)
    if info.vocabulary is not None and graph.hints.decoder:
        meta[VOCABULARY_KEY] = json.dumps(info.vocabulary, sort_keys=True, ensure_ascii=False)
    mode = decoder_flexibility(info, graph, opts)
    if mode:
        rows, default = decoder_rows(graph.name, opts)
        top = max(rows[-1], opts.axis_max.get("batch", AXIS_MAX["batch"]))
        meta[ROWS_KEY] = json.dumps({"flexibility": mode, "rows": rows if mode == "enumerated" else [1, top],
                                     "default": default, "beams": list(opts.beams), "max_images": opts.max_images},
                                    sort_keys=True)


def _version() -> str:
    try:
        return metadata.version("mmedge")
    except metadata.PackageNotFoundError:
        return "0"


def save_package(mlmodel: Any, dest: Path) -> Path:
    """Save and make the package's index deterministic (coremltools writes random item ids)."""
    with quiet():
        mlmodel.save(str(dest))
    index = dest / PACKAGE_MANIFEST
    doc = json.loads(index.read_text(encoding="utf-8"))
    ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, "mmedge:" + entry["path"]))
           for old, entry in doc["itemInfoEntries"].items()}
    doc["itemInfoEntries"] = {ids[k]: v for k, v in sorted(doc["itemInfoEntries"].items(), key=lambda kv: ids[kv[0]])}
    doc["rootModelIdentifier"] = ids[doc["rootModelIdentifier"]]
    index.write_text(json.dumps(doc, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    _deterministic_spec(dest / "Data" / doc["itemInfoEntries"][doc["rootModelIdentifier"]]["path"])
    return dest


def _deterministic_spec(path: Path) -> None:
    """Rewrite the model spec with protobuf's deterministic serialisation: coremltools writes map
    fields (metadata) in an order that differs from one process to the next."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    path.write_bytes(spec.SerializeToString(deterministic=True))


# ----------------------------------------------------------------------------- the exporter
def graph_entry(graph: GraphSpec, feeds: dict[str, torch.Tensor], ref: dict[str, np.ndarray]) -> GraphEntry:
    """The runtime interface (as for ONNX): int64 ids and normalised float images; the session adapts."""
    return GraphEntry(
        name=graph.name, file=_FILE.format(graph.name),
        inputs=[tensor_spec(k, v.numpy(), graph.dynamic_axes.get(k)) for k, v in feeds.items()],
        outputs=[tensor_spec(k, v, graph.dynamic_axes.get(k)) for k, v in ref.items()],
    )


def export_graph(ctx: ExportContext, graph: GraphSpec, dest: Path, opts: CoreMLOptions,
                 info: ModelInfo | None = None) -> GraphEntry:
    info = info or ModelInfo.from_context(ctx)
    feeds = ctx.examples(graph)
    ref = ctx.reference(graph, feeds)
    mlmodel = convert_graph(graph.wrap(ctx.model), graph, feeds, info, ctx.precision, opts)
    if ctx.precision == "int8":
        mlmodel = quantize_weights(mlmodel, opts)
    set_metadata(mlmodel, info, graph, ctx.precision, opts, takes_image(info, graph, opts))
    path = save_package(mlmodel, dest / f"{graph.name}.mlpackage")
    check_package(path, opts.deployment_target)
    return graph_entry(graph, feeds, ref)


def normalise_pixels(pixels: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """[B, H, W, 3] uint8 -> [B, 3, H, W] float32, exactly as the runtime's preprocess_image."""
    x = pixels.astype(np.float32) * np.float32(pre.get("scale", 1.0 / 255.0))
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@torch.no_grad()
def image_vectors(ctx: ExportContext) -> dict[str, np.ndarray]:
    """Test vectors on 8-bit images for a pixel-buffer encoder (same keys as test_vectors.npz)."""
    from mmedge.models.decoding import caption_images

    pre = ctx.spec.preprocessing(ctx.config)
    size = int(pre["image_size"])
    rng = np.random.default_rng(SEED)
    pixels = rng.integers(0, 256, (EXAMPLE_BATCH, size, size, 3), dtype=np.uint8)
    beam_pixels = rng.integers(0, 256, (BEAM_VECTORS["images"], size, size, 3), dtype=np.uint8)
    enc = ctx.spec.graph(ENCODER)
    image = normalise_pixels(pixels, pre)
    out = {"encoder.pixels": pixels, "encoder.image": image,
           "encoder.features": ctx.reference(enc, {"image": torch.from_numpy(image)})["features"]}
    beam_image = normalise_pixels(beam_pixels, pre)
    hyps = caption_images(ctx.model, torch.from_numpy(beam_image), BEAM_VECTORS["beam"], BEAM_VECTORS["max_len"])
    tokens = np.full((len(hyps), BEAM_VECTORS["max_len"]), -1, np.int64)
    for i, h in enumerate(hyps):
        tokens[i, : len(h.tokens)] = h.tokens
    out.update({"beam.pixels": beam_pixels, "beam.image": beam_image, "beam.tokens": tokens,
                "beam.scores": np.array([h.score for h in hyps]),
                "beam.settings": np.array([BEAM_VECTORS["beam"], BEAM_VECTORS["max_len"]])})
    return out


@register_exporter("coreml", packages=("coremltools",), extra="coreml", precisions=("fp32", "fp16", "int8"),
                   file_ext=".mlpackage", options=OPTIONS)
def export_coreml(ctx: ExportContext, dest: Path) -> list[GraphEntry]:
    """fp32 / fp16 ML Programs; int8 here is weight-only (the calibrated W8A8 build is the int8 recipe)."""
    opts = CoreMLOptions.from_options(ctx.options)
    info = ModelInfo.from_context(ctx)
    entries = [export_graph(ctx, g, dest, opts, info) for g in ctx.spec.graphs]
    if any(takes_image(info, g, opts) for g in ctx.spec.graphs) and ctx.spec.pipeline == "captioner":
        np.savez_compressed(dest / IMAGE_VECTORS, **image_vectors(ctx))
    return entries
