"""Core ML export: one ML Program package (`<graph>.mlpackage`) per graph.

Each graph is traced from the PyTorch model (`torch.jit.trace`) and converted
with `coremltools.convert(convert_to="mlprogram")` for a minimum deployment
target (iOS 16 / macOS 13 by default, `--option deployment_target=iOS17`).

* The captioner's encoder takes an image (`ct.ImageType`, RGB): Core ML applies
  scale 1/255 and bias -mean, the graph divides by the ImageNet std, so an app
  passes a pixel buffer of the model's size and nothing else.
  `--option encoder_input=tensor` exports the normalised float tensor instead.
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
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import uuid
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from mmedge.errors import ArtifactError, ExportError
from mmedge.export.artifact import tensor_spec
from mmedge.export.registry import BEAM_VECTORS, EXAMPLE_BATCH, SEED, ExportContext, register_exporter
from mmedge.models.zoo import GraphSpec, ModelSpec
from mmedge.runtime.backends.coreml import PACKAGE_MANIFEST, PREPROCESSING_KEY, package_dir
from mmedge.runtime.manifest import GraphEntry
from mmedge.runtime.options import Option, OptionSchema

DEFAULT_TARGET = "iOS16"
W8A8_MIN_TARGET = "iOS17"  # Core ML's activation quantize/dequantize ops
TARGET_NAMES = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
# upper bounds of flexible axes (Core ML ML Programs need finite ranges), by dynamic-axis name
AXIS_MAX = {"batch": 256, "samples": 1 << 22, "frames": 1 << 15, "height": 4096, "width": 4096}
DEFAULT_BATCHES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 16, 20, 25, 32)
DEFAULT_BEAMS = (1, 3, 5)  # beam widths the decoders are sized for
DEFAULT_BEAM = 3  # the most common one: the decoders' default shape (the one a range runs on the Neural Engine)
DEFAULT_IMAGES = 2  # images per beam-search call (the bundle's test vectors decode 2)
MAX_ENUMERATED = 128  # Core ML's limit on enumerated shapes per input
MULTI_ENUMERATED_TARGET = "iOS18"  # enumerated shapes on more than one input
DEFAULT_LICENSE = "MIT"  # mmedge's license (pyproject.toml)
ROWS_KEY = "mmedge.decoder_rows"
IMAGE_VECTORS = "image_vectors.npz"
VOCABULARY_KEY = "mmedge.vocabulary"
DECODER_GRAPHS = ("decoder_init", "decoder_step")
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


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class CoreMLOptions:
    """This exporter's `-o` options as typed fields (`from_options` reads them through OPTIONS, below)."""

    deployment_target: str = DEFAULT_TARGET
    encoder_input: str = "image"  # image | tensor
    shapes: str = "range"  # range | enumerated
    batches: tuple[int, ...] = DEFAULT_BATCHES
    axis_max: dict[str, int] = field(default_factory=lambda: dict(AXIS_MAX))
    weight_threshold: int = 2048  # coremltools' default: smaller weights stay float
    author: str = "mmedge"
    version: str = ""
    license: str = DEFAULT_LICENSE
    int8: str = "w8a8"  # the int8 recipe: w8a8 | weights
    decoder_shapes: str = "auto"  # auto | enumerated | range (the decoders' row axis)
    beams: tuple[int, ...] = DEFAULT_BEAMS
    default_beam: int = DEFAULT_BEAM
    max_images: int = DEFAULT_IMAGES
    description: str = ""

    @classmethod
    def from_options(cls, options: dict[str, Any], default_target: str = DEFAULT_TARGET) -> "CoreMLOptions":
        """From the `-o` options of this exporter (checked against OPTIONS, the one parser)."""
        o = OPTIONS.resolve(options)
        return cls(deployment_target=o["deployment_target"] if "deployment_target" in options else default_target,
                   encoder_input=o["encoder_input"], shapes=o["shapes"], batches=tuple(sorted(set(o["batches"]))),
                   axis_max={axis: o[f"max_{axis}"] for axis in AXIS_MAX}, weight_threshold=o["weight_threshold"],
                   author=o["author"], version=o["version"] or "", license=o["license"] or DEFAULT_LICENSE,
                   int8=o["int8"], decoder_shapes=o["decoder_shapes"], beams=tuple(sorted(set(o["beams"]))),
                   default_beam=o["default_beam"], max_images=o["max_images"], description=o["description"] or "")


OPTIONS = OptionSchema("coreml export", (
    Option("deployment_target", str, DEFAULT_TARGET, f"minimum OS of the ML Programs (int8 w8a8: {W8A8_MIN_TARGET})",
           choices=TARGET_NAMES),
    Option("encoder_input", str, "image", "the captioner's encoder takes a Core ML image or a tensor",
           choices=("image", "tensor")),
    Option("shapes", str, "range", "flexible axes as ranges or as enumerated batch sizes",
           choices=("range", "enumerated")),
    Option("batches", list, DEFAULT_BATCHES, "batch sizes of shapes=enumerated", item=int, minimum=1,
           maximum=AXIS_MAX["batch"]),
    *(Option(f"max_{axis}", int, hi, f"upper bound of the flexible {axis} axis", minimum=1, maximum=1 << 24)
      for axis, hi in AXIS_MAX.items()),
    Option("weight_threshold", int, 2048, "weights with fewer elements stay float (fp16/int8)", minimum=0),
    Option("int8", str, "w8a8", "the int8 recipe: weights and activations, or weights only",
           choices=("w8a8", "weights")),
    Option("author", str, "mmedge", "model metadata: author"),
    Option("version", str, None, "model metadata: version (default: mmedge's)"),
    Option("license", str, None, f"model metadata: license (default: mmedge's, {DEFAULT_LICENSE})"),
    Option("description", str, None, "model metadata: short description (default: model, graph, precision)"),
    Option("decoder_shapes", str, "auto", "the captioner decoders' row axis: enumerated where Core ML allows it "
           "(auto), enumerated (or fail), or a range", choices=("auto", "enumerated", "range")),
    Option("beams", list, DEFAULT_BEAMS, "beam widths the decoders are sized for", item=int, minimum=1, maximum=32),
    Option("default_beam", int, DEFAULT_BEAM, "the decoders' default shape: rows of one image at this beam",
           minimum=1, maximum=32),
    Option("max_images", int, DEFAULT_IMAGES, "images per beam-search call the decoders take", minimum=1,
           maximum=32),
))


def decoder_rows(graph_name: str, opts: CoreMLOptions) -> tuple[list[int], int]:
    """Row counts of a decoder graph and its default: decoder_init takes one row per image,
    decoder_step one per live beam (1..images x beam: beams shrink as hypotheses complete)."""
    if graph_name == "decoder_init":
        return list(range(1, opts.max_images + 1)), 1
    top = opts.max_images * max(opts.beams)
    if opts.default_beam > top:
        raise ExportError(f"coreml export option default_beam={opts.default_beam}: more rows than the decoders "
                          f"take ({top} = max_images x max(beams)); raise beams or max_images")
    if top > MAX_ENUMERATED and opts.decoder_shapes == "enumerated":
        raise ExportError(f"coreml export: {top} decoder row counts (max_images x max(beams)); Core ML enumerates "
                          f"at most {MAX_ENUMERATED} shapes; lower beams/max_images or use decoder_shapes=range")
    return list(range(1, top + 1)), opts.default_beam


def decoder_flexibility(info: "ModelInfo", graph: GraphSpec, opts: CoreMLOptions) -> str | None:
    """'enumerated' or 'range' for a captioner decoder graph's row axis; None for the other graphs
    (and when `shapes=enumerated` names the batch sizes of every graph)."""
    if info.pipeline != "captioner" or graph.name not in DECODER_GRAPHS or opts.shapes == "enumerated":
        return None
    if opts.decoder_shapes == "range":
        return "range"
    flexible = [k for k in graph.inputs if graph.dynamic_axes.get(k)]
    top = decoder_rows(graph.name, opts)[0][-1]
    allowed = ((len(flexible) <= 1 or target_value(opts.deployment_target) >= target_value(MULTI_ENUMERATED_TARGET))
               and top <= MAX_ENUMERATED)
    if allowed:
        return "enumerated"
    if opts.decoder_shapes == "enumerated":
        raise ExportError(f"{info.name} graph {graph.name!r}: {len(flexible)} inputs have a flexible row axis "
                          f"({', '.join(flexible)}); below {MULTI_ENUMERATED_TARGET} Core ML allows enumerated "
                          f"shapes on one input only; use --option deployment_target={MULTI_ENUMERATED_TARGET} or "
                          f"decoder_shapes=auto (a range whose default, {opts.default_beam} rows, runs on the "
                          f"Neural Engine)")
    return "range"


def minimum_os(spec_version: int) -> dict[str, str]:
    """The OS versions that run a Core ML specification version (7: iOS 16 / macOS 13)."""
    from mmedge.export.mobile_versions import coreml_minimum_os

    return coreml_minimum_os(spec_version)


def target_value(name: str) -> int:
    """Core ML specification version of a deployment target (iOS16 == macOS13 == 7)."""
    ct = coremltools()
    return int(getattr(ct.target, name).value)


# ----------------------------------------------------------------------------- coremltools quirks
_PATCHED = False


def coremltools() -> Any:
    """Import coremltools quietly, once made compatible with this NumPy."""
    global _PATCHED
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
    if not _PATCHED:
        _patch_int_cast()
        _PATCHED = True
    return ct


def _patch_int_cast() -> None:
    """coremltools 9.0 folds `aten::Int(size)` with `int(array)`; NumPy >= 2.4 refuses
    `int()` of a 1-element array (the captioner's `reshape(x.shape[0], -1, C)` hits it).
    Same conversion, with `.item()` for constants."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    def cast(context: Any, node: Any, dtype: type, dtype_name: str) -> None:
        x = _get_inputs(context, node, expected=1)[0]
        if not (len(x.shape) == 0 or all(d == 1 for d in x.shape)):
            raise ValueError("input to cast must be either a scalar or a length 1 tensor")
        if x.can_be_folded_to_const():
            val = x.val.reshape(()).item() if isinstance(x.val, np.ndarray) else x.val
            res = x if isinstance(x.val, dtype) else mb.const(val=dtype(val), name=node.name)
        elif len(x.shape) > 0:
            res = mb.cast(x=mb.squeeze(x=x, name=node.name + "_item"), dtype=dtype_name, name=node.name)
        else:
            res = mb.cast(x=x, dtype=dtype_name, name=node.name)
        context.add(res, node.name)

    def mmedge_int(context: Any, node: Any) -> None:
        cast(context, node, int, "int32")

    def mmedge_bool(context: Any, node: Any) -> None:
        cast(context, node, bool, "bool")

    register_torch_op(mmedge_int, torch_alias=["int"], override=True)
    register_torch_op(mmedge_bool, torch_alias=["bool"], override=True)


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """coremltools prints progress bars and warnings; keep stdout/stderr clean (--json)."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        warnings.simplefilter("ignore")
        yield buf


# ----------------------------------------------------------------------------- what is converted
@dataclass
class ModelInfo:
    """What conversion needs to know about the model, from an ExportContext or a manifest."""

    name: str
    config: str
    pipeline: str
    description: str
    preprocessing: dict[str, Any]
    vocabulary: dict[str, int] | None = None
    axis_min: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_context(cls, ctx: ExportContext) -> "ModelInfo":
        return cls.build(ctx.spec, ctx.config_name, ctx.config,
                         dict(ctx.vocab.word_map) if ctx.vocab is not None else None)

    @classmethod
    def build(cls, spec: ModelSpec, config_name: str, config: Any, vocabulary: dict[str, int] | None) -> "ModelInfo":
        extra = spec.manifest_extra(config)
        axis_min = {"samples": int(extra.get("min_samples", 1)), "frames": int(getattr(config, "min_frames", 1))}
        return cls(spec.name, config_name, spec.pipeline, spec.description, spec.preprocessing(config),
                   vocabulary, axis_min)


class ImageInput(nn.Module):
    """The encoder behind a `ct.ImageType`: Core ML applies x/255 - mean, this divides by std."""

    def __init__(self, encoder: nn.Module, std: list[float]) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("inv_std", (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image * self.inv_std)


def takes_image(info: ModelInfo, graph: GraphSpec, opts: CoreMLOptions) -> bool:
    return (opts.encoder_input == "image" and info.preprocessing.get("kind") == "image"
            and graph.inputs == ("image",))


def _input_types(ct: Any, info: ModelInfo, graph: GraphSpec, feeds: dict[str, torch.Tensor],
                 opts: CoreMLOptions, image: bool) -> list[Any]:
    flexible = [k for k in graph.inputs if graph.dynamic_axes.get(k)]
    if opts.shapes == "enumerated":
        other = {label for k in flexible for label in graph.dynamic_axes[k].values() if label != "batch"}
        if other:
            raise ExportError(f"{info.name} graph {graph.name!r}: enumerated shapes cover the batch axis only and "
                              f"this graph has dynamic {', '.join(sorted(other))}; use --option shapes=range")
        if len(flexible) > 1 and target_value(opts.deployment_target) < target_value("iOS18"):
            raise ExportError(f"{info.name} graph {graph.name!r}: {len(flexible)} inputs have a flexible batch "
                              f"({', '.join(flexible)}); below iOS 18 Core ML allows enumerated shapes on one "
                              f"input only; use --option shapes=range or deployment_target=iOS18")
    rows_mode = decoder_flexibility(info, graph, opts)
    rows, default_rows = decoder_rows(graph.name, opts) if rows_mode else ([], 0)
    types = []
    for name, t in feeds.items():
        if image and name == "image":
            pre = info.preprocessing
            size = int(pre["image_size"])
            types.append(ct.ImageType(name=name, shape=(1, 3, size, size), scale=float(pre.get("scale", 1 / 255)),
                                      bias=[-float(m) for m in pre["mean"]], color_layout=ct.colorlayout.RGB))
            continue
        dtype = np.int32 if t.dtype in (torch.int64, torch.int32) else np.float32
        axes = graph.dynamic_axes.get(name, {})
        if not axes:
            shape: Any = tuple(int(d) for d in t.shape)
        elif rows_mode == "enumerated":
            shape = ct.EnumeratedShapes(shapes=[[n if i in axes else int(d) for i, d in enumerate(t.shape)]
                                                for n in rows],
                                        default=[default_rows if i in axes else int(d) for i, d in enumerate(t.shape)])
        elif rows_mode == "range":
            hi = max(rows[-1], opts.axis_max.get("batch", AXIS_MAX["batch"]))
            shape = ct.Shape([ct.RangeDim(lower_bound=1, upper_bound=hi, default=default_rows) if i in axes
                              else int(d) for i, d in enumerate(t.shape)])
        elif opts.shapes == "enumerated":
            shapes = [[b if i in axes else int(d) for i, d in enumerate(t.shape)] for b in opts.batches]
            default = [int(d) for d in t.shape]
            shapes = shapes if default in shapes else shapes + [default]
            shape = ct.EnumeratedShapes(shapes=shapes, default=default)
        else:
            dims = []
            for i, d in enumerate(t.shape):
                if i not in axes:
                    dims.append(int(d))
                    continue
                label = axes[i]
                lo = max(1, info.axis_min.get(label, 1))
                hi = opts.axis_max.get(label, AXIS_MAX["batch"])
                if not lo <= int(d) <= hi:
                    raise ExportError(f"{info.name} graph {graph.name!r}: example {name} has {label} {int(d)}, "
                                      f"outside the exported range {lo}..{hi}; raise --option max_{label}")
                dims.append(ct.RangeDim(lower_bound=lo, upper_bound=hi, default=int(d)))
            shape = ct.Shape(dims)
        types.append(ct.TensorType(name=name, shape=shape, dtype=dtype))
    return types


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
                          f"(Core ML's activation quantization), got --option deployment_target={target}")
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
    if info.vocabulary is not None and graph.name in DECODER_GRAPHS:
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
    return dest


# ----------------------------------------------------------------------------- checks without running
@dataclass
class PackageInfo:
    """A package as Core ML would see it: interface, metadata, ops, weights (from the spec)."""

    path: str
    spec_version: int
    deployment_target: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    metadata: dict[str, Any]
    ops: dict[str, int]
    weights: dict[str, int]  # stored weight elements by dtype (int8, fp16, fp32)
    size_bytes: int

    def input(self, name: str) -> dict[str, Any]:
        return next(i for i in self.inputs if i["name"] == name)

    def output(self, name: str) -> dict[str, Any]:
        return next(o for o in self.outputs if o["name"] == name)


def _feature(f: Any) -> dict[str, Any]:
    kind = f.type.WhichOneof("Type")
    d: dict[str, Any] = {"name": f.name, "kind": kind, "description": f.shortDescription}
    if kind == "imageType":
        t = f.type.imageType
        d.update({"kind": "image", "width": int(t.width), "height": int(t.height),
                  "color_space": t.ColorSpace.Name(t.colorSpace)})
    elif kind == "multiArrayType":
        t = f.type.multiArrayType
        d.update({"kind": "tensor", "dtype": t.ArrayDataType.Name(t.dataType).lower(), "shape": list(t.shape)})
        which = t.WhichOneof("ShapeFlexibility")
        if which == "shapeRange":
            d["ranges"] = [(int(r.lowerBound), int(r.upperBound)) for r in t.shapeRange.sizeRanges]
        elif which == "enumeratedShapes":
            d["enumerated"] = [list(s.shape) for s in t.enumeratedShapes.shapes]
    return d


def _ops(block: Any, counts: dict[str, int], weights: dict[str, int]) -> None:
    coremltools()
    from coremltools.proto import MIL_pb2

    for op in block.operations:
        counts[op.type] = counts.get(op.type, 0) + 1
        for value in op.attributes.values():
            if value.WhichOneof("value") == "blobFileValue" and value.type.WhichOneof("type") == "tensorType":
                tt = value.type.tensorType
                n = int(np.prod([dim.constant.size for dim in tt.dimensions])) if tt.dimensions else 1
                dtype = MIL_pb2.DataType.Name(tt.dataType).lower()
                weights[dtype] = weights.get(dtype, 0) + n
        for nested in op.blocks:
            _ops(nested, counts, weights)


def describe_package(path: str | Path) -> PackageInfo:
    """Read a `.mlpackage` (or its Manifest.json) without running it: works on Linux."""
    ct = coremltools()
    pkg = package_dir(path)
    try:
        with quiet():
            spec = ct.utils.load_spec(str(pkg))
    except Exception as e:
        raise ArtifactError(f"{pkg}: not a readable Core ML package ({str(e).strip()[:200] or e.__class__.__name__})"
                            ) from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{pkg}: a Core ML {spec.WhichOneof('Type')} model, not an ML Program")
    ops: dict[str, int] = {}
    weights: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        _ops(fn.block_specializations[fn.opset], ops, weights)
    desc = spec.description
    meta = {"author": desc.metadata.author, "version": desc.metadata.versionString,
            "description": desc.metadata.shortDescription, "license": desc.metadata.license,
            "user_defined": dict(desc.metadata.userDefined)}
    names = {int(t.value): t.name for t in ct.target if t.name.startswith("iOS")}
    size = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file())
    return PackageInfo(str(pkg), int(spec.specificationVersion), names.get(int(spec.specificationVersion), "?"),
                       [_feature(f) for f in desc.input], [_feature(f) for f in desc.output], meta, ops, weights, size)


def check_package(path: str | Path, target: str | None = None) -> PackageInfo:
    """Names distinct, every op available in the deployment target's op set (coremltools' registry)."""
    ct = coremltools()
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    info = describe_package(path)
    want = target_value(target) if target else info.spec_version
    if info.spec_version > want:
        raise ExportError(f"{info.path}: specification version {info.spec_version} is newer than "
                          f"deployment target {target} ({want})")
    tgt = ct.target(want)
    missing = sorted(op for op in info.ops if tgt not in SSAOpRegistry.core_ops.get(op, {}))
    if missing:
        raise ExportError(f"{info.path}: op(s) {', '.join(missing)} are not in the {tgt.name} op set")
    clash = {i["name"] for i in info.inputs} & {o["name"] for o in info.outputs}
    if clash:
        raise ExportError(f"{info.path}: output name(s) {', '.join(sorted(clash))} equal input names")
    return info


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
    enc = ctx.spec.graph("encoder")
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
