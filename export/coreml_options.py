"""The Core ML exporter's `-o` options and the input shapes they decide.

The option schema (OPTIONS, read into CoreMLOptions), what conversion needs to know about
a model (ModelInfo), and the Core ML input types of a graph: fixed, a range, or
enumerated shapes, including the captioner decoders' rows sized for the beam widths
offered (`decoder_rows`, `decoder_flexibility`; see export/coreml.py for why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmedge.errors import ExportError
from mmedge.export.coreml_tools import target_value
from mmedge.export.registry import ExportContext
from mmedge.models.zoo import GraphSpec, ModelSpec
from mmedge.runtime.manifest import ManifestExtra
from mmedge.runtime.options import Option, OptionSchema
from mmedge.runtime.roles import DECODER_GRAPHS, DECODER_INIT  # noqa: F401 - DECODER_GRAPHS re-exported

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
    if graph_name == DECODER_INIT:
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
    if info.pipeline != "captioner" or not graph.hints.decoder or opts.shapes == "enumerated":
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
                          f"shapes on one input only; use --export-option deployment_target={MULTI_ENUMERATED_TARGET} or "
                          f"decoder_shapes=auto (a range whose default, {opts.default_beam} rows, runs on the "
                          f"Neural Engine)")
    return "range"



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
        min_samples = ManifestExtra.from_json(spec.manifest_extra(config)).min_samples
        axis_min = {"samples": 1 if min_samples is None else min_samples,
                    "frames": int(getattr(config, "min_frames", 1))}
        return cls(spec.name, config_name, spec.pipeline, spec.description, spec.preprocessing(config),
                   vocabulary, axis_min)


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
                              f"this graph has dynamic {', '.join(sorted(other))}; use --export-option shapes=range")
        if len(flexible) > 1 and target_value(opts.deployment_target) < target_value("iOS18"):
            raise ExportError(f"{info.name} graph {graph.name!r}: {len(flexible)} inputs have a flexible batch "
                              f"({', '.join(flexible)}); below iOS 18 Core ML allows enumerated shapes on one "
                              f"input only; use --export-option shapes=range or deployment_target=iOS18")
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
                                      f"outside the exported range {lo}..{hi}; raise --export-option max_{label}")
                dims.append(ct.RangeDim(lower_bound=lo, upper_bound=hi, default=int(d)))
            shape = ct.Shape(dims)
        types.append(ct.TensorType(name=name, shape=shape, dtype=dtype))
    return types

