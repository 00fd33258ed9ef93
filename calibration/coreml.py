"""Core ML INT8: W8A8 ML Programs from the calibration set, on Linux.

Core ML's own activation calibration,
`coremltools.optimize.coreml.linear_quantize_activations`, runs the model
(`MLModel.predict`) to record activation ranges, so it needs macOS. The ranges
are recorded in PyTorch instead, with the same calibration feeds every other
INT8 recipe uses:

1. `coremltools.optimize.torch.quantization.LinearQuantizer` inserts
   observers (min/max, symmetric) and fake-quantization into the graph's
   wrapper module (FX);
2. the calibration feeds of that graph run through it (no training, observers
   only, batch norm frozen: the module stays in eval mode);
3. `finalize()` produces the quantized reference model, which traces and
   converts (`coremltools.convert`) to an ML Program with int8
   quantize/dequantize around activations and int8 weights
   (`constexpr_affine_dequantize`); `linear_quantize_weights` then quantizes the
   weights the quantizer left in float (embeddings).

All of it runs on Linux. Activation quantization needs deployment target iOS 17
/ macOS 14 or later (the recipe's default). As in the ONNX recipe, the decoder
graphs quantize only their linear layers and keep softmaxes in float
(`QuantConfig.op_types`, `keep_float`); `--dynamic-decoder` makes them
weight-only, and `--export-option int8=weights` (with an export context) makes every
graph weight-only.

The recipe needs the PyTorch model (Core ML has no ONNX importer). It is given
the export context when the request carries one (`QuantizeRequest.ctx`); otherwise the
model is rebuilt from the manifest's model and config (the zoo's seeded or
shipped weights) and must reproduce the fp32 artifact's reference outputs, which
refuses a checkpoint-based artifact rather than quantizing other weights.
What Linux cannot measure (Core ML's int8 numerics) is approximated by the
fake-quantized PyTorch model on the test vectors, written to
`int8_simulation.json`.
"""

from __future__ import annotations

import copy
import json
import operator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmedge.calibration.recipes import QuantConfig, QuantizeRequest, register_recipe
from mmedge.errors import ExportError
from mmedge.runtime.manifest import GraphEntry, Manifest

SIMULATION = "int8_simulation.json"
# element-wise functions left in float when a graph quantizes only its linear/conv layers
ELEMENTWISE = (operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub, torch.cat, torch.where,
               torch.abs, torch.clamp)
# keep_float op types -> what they are in PyTorch (sigmoid/tanh modules have fixed ranges in torch.ao
# and cannot be kept in float there; their functional forms can)
KEEP_FLOAT = {
    "Softmax": (nn.Softmax, F.softmax, torch.softmax),
    "LogSoftmax": (nn.LogSoftmax, F.log_softmax, torch.log_softmax),
    "Sigmoid": (torch.sigmoid,),
    "Tanh": (torch.tanh,),
    "Add": (operator.add, torch.add),
    "Mul": (operator.mul, torch.mul),
    "Sub": (operator.sub, torch.sub),
    "Concat": (torch.cat,),
}
NON_TRACEABLE = ("AdaptivePool",)  # modules FX cannot trace (int() of a shape); kept whole


def reference_model(fp32_dir: Path, manifest: Manifest) -> nn.Module:
    """The zoo model behind an fp32 artifact, checked against its reference outputs."""
    from mmedge.models import zoo
    from mmedge.runtime.parity import compare

    spec = zoo.get(manifest.model)
    if manifest.config not in spec.configs:
        raise ExportError(f"{fp32_dir}: config {manifest.config!r} is not a registered config of {manifest.model} "
                          f"(a checkpoint); the coreml int8 recipe needs the PyTorch model: export with "
                          f"--format coreml --precision int8 and the checkpoint in one command")
    model = spec.create(manifest.config)
    vectors = np.load(fp32_dir / manifest.extra.vectors_file)
    bad = []
    with torch.no_grad():
        for g in spec.graphs:
            feeds = [torch.from_numpy(vectors[f"{g.name}.{k}"]) for k in g.inputs]
            out = g.wrap(model)(*feeds)
            out = out if isinstance(out, tuple) else (out,)
            for k, v in zip(g.outputs, out):
                m = compare(f"{g.name}.{k}", v.numpy(), vectors[f"{g.name}.{k}"], 1e-4)
                if not m.ok:
                    bad.append(m.name)
    if bad:
        raise ExportError(f"{fp32_dir}: the {manifest.model} ({manifest.config}) model rebuilt here does not "
                          f"reproduce the artifact's reference outputs ({', '.join(bad)}); the coreml int8 recipe "
                          f"needs the PyTorch model the artifact came from")
    return model


def _quantizer_config(cfg: QuantConfig, pipeline: str, graph: str, module: nn.Module, per_channel: bool) -> Any:
    from mmedge.export.coreml import coremltools

    coremltools()
    from coremltools.optimize.torch.quantization import LinearQuantizerConfig, ModuleLinearQuantizerConfig

    off: list[Any] = [f for k in cfg.keep_float for f in KEEP_FLOAT[k]]
    ops = cfg.ops_for(pipeline, graph)
    if ops is not None:  # linear layers / convolutions only: element-wise ops stay float
        off += list(ELEMENTWISE)
    glob = ModuleLinearQuantizerConfig(quantization_scheme="symmetric", activation_observer="min_max",
                                       weight_observer="min_max", weight_per_channel=per_channel)
    names = [n for n, m in module.named_modules() if type(m).__name__ in NON_TRACEABLE]
    return LinearQuantizerConfig(global_config=glob, module_type_configs={t: None for t in dict.fromkeys(off)},
                                 non_traceable_module_names=names)


def _fix_conv1d_scales(module: nn.Module) -> None:
    """coremltools 9.0 expands per-channel scales to rank 4 (Conv2d) only; give Conv1d weights
    rank-3 scales so the converter accepts them."""
    for m in module.modules():
        weight = getattr(m, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
            continue
        bufs = dict(m.named_buffers(recurse=False))
        for key in ("quantization_scale", "zero_point"):
            name = f"_COREML_/weight/{key}"
            if name in bufs and bufs[name].dim() == 2:
                m.register_buffer(name, bufs[name][..., None])


def _tensors(feed: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(feed[k])) for k in names)


def calibrated_module(module: nn.Module, graph: Any, feeds: list[dict[str, np.ndarray]], cfg: QuantConfig,
                      pipeline: str) -> nn.Module:
    """Observers over the calibration feeds -> the finalized (quantized reference) module."""
    import torch.ao.quantization as aoq

    from mmedge.export.coreml import coremltools, quiet

    coremltools()  # quiet import first
    from coremltools.optimize.torch.quantization import LinearQuantizer

    module = copy.deepcopy(module).eval()
    per_channel = cfg.per_channel
    qcfg = _quantizer_config(cfg, pipeline, graph.name, module, per_channel)
    with quiet():
        quantizer = LinearQuantizer(module, qcfg)
        prepared = quantizer.prepare(example_inputs=_tensors(feeds[0], graph.inputs))
        prepared.eval()  # batch norm keeps its statistics; observers run regardless of mode
        prepared.apply(aoq.enable_observer)
        prepared.apply(aoq.enable_fake_quant)
        with torch.no_grad():
            for feed in feeds:
                prepared(*_tensors(feed, graph.inputs))
        prepared.apply(aoq.disable_observer)
        final = quantizer.finalize(inplace=False)
    _fix_conv1d_scales(final)
    return final.eval()


def _cosines(module: nn.Module, graph: Any, vectors: Any) -> dict[str, float]:
    from mmedge.export.coreml import quiet

    feeds = tuple(torch.from_numpy(vectors[f"{graph.name}.{k}"]) for k in graph.inputs)
    with torch.no_grad(), quiet():
        out = module(*feeds)
    out = out if isinstance(out, tuple) else (out,)
    res = {}
    for k, v in zip(graph.outputs, out):
        a = v.double().flatten().numpy()
        b = vectors[f"{graph.name}.{k}"].astype(np.float64).ravel()
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        res[f"{graph.name}.{k}"] = round(float(a @ b / denom) if denom else float(not a.any() and not b.any()), 6)
    return res


@register_recipe("coreml")
def quantize_coreml(req: QuantizeRequest) -> list[GraphEntry]:
    """W8A8 (or weight-only) ML Programs for every graph of the fp32 artifact's model."""
    from mmedge.export.coreml import (W8A8_MIN_TARGET, CoreMLOptions, ModelInfo, check_package, convert_graph,
                                      quantize_weights, save_package, set_metadata, takes_image)
    from mmedge.models import zoo

    fp32_dir, manifest, calib, dest, cfg = req.fp32_dir, req.manifest, req.calib, req.dest, req.cfg
    if cfg.method != "minmax":
        raise ExportError(f"coreml int8: --calib-method {cfg.method} is not available (coremltools' observers "
                          f"are min/max); use --calib-method minmax")
    unknown = [k for k in cfg.keep_float if k not in KEEP_FLOAT]
    if unknown:
        raise ExportError(f"coreml int8: --keep-float {', '.join(unknown)}: the coreml recipe keeps op types "
                          f"in float, one of {', '.join(KEEP_FLOAT)} (node names are ONNX-only)")
    options = dict(req.options)
    model = req.ctx.model if req.ctx is not None else reference_model(fp32_dir, manifest)
    opts = CoreMLOptions.from_options(options, default_target=W8A8_MIN_TARGET)
    spec = zoo.get(manifest.model)
    config = getattr(model, "config", None) or spec.config(manifest.config)
    info = ModelInfo.build(spec, manifest.config, config, manifest.vocabulary)
    vectors = np.load(fp32_dir / manifest.extra.vectors_file)
    sim: dict[str, Any] = {"method": "coremltools.optimize.torch LinearQuantizer (min/max observers, symmetric) "
                                     "-> coremltools.convert -> linear_quantize_weights",
                           "deployment_target": opts.deployment_target, "per_channel": cfg.per_channel,
                           "keep_float": list(cfg.keep_float), "calibration": calib.description,
                           "calibration_digest": calib.digest, "graphs": {}, "fake_quant_cosine": {},
                           "note": "cosines of the fake-quantized PyTorch model against fp32 on the test vectors; "
                                   "Core ML's own int8 outputs need macOS (mmedge parity there)"}
    entries = []
    for g in manifest.graphs:
        graph = spec.graph(g.name)
        feeds = calib.feeds.get(g.name)
        if not feeds:
            raise ExportError(f"no calibration feeds for graph {g.name!r}")
        weights_only = opts.int8 == "weights" or (cfg.dynamic_decoder and g.hints.decoder)
        examples = {k: torch.from_numpy(vectors[f"{g.name}.{k}"]) for k in graph.inputs}
        module = graph.wrap(model)
        if weights_only:
            mlmodel = convert_graph(module, graph, examples, info, "int8", opts)
            sim["graphs"][g.name] = "int8 weights, fp16 activations"
        else:
            try:
                module = calibrated_module(module, graph, feeds, cfg, manifest.pipeline)
            except ExportError:
                raise
            except Exception as e:  # FX tracing / torch.ao internals: one line naming the graph
                msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
                raise ExportError(f"coreml int8 calibration of graph {g.name!r} failed: {msg[:300]}") from e
            sim["fake_quant_cosine"].update(_cosines(module, graph, vectors))
            mlmodel = convert_graph(module, graph, examples, info, "int8", opts, min_target=W8A8_MIN_TARGET)
            sim["graphs"][g.name] = "W8A8: int8 weights, int8 activations (calibrated)"
        mlmodel = quantize_weights(mlmodel, opts, cfg.per_channel)
        set_metadata(mlmodel, info, graph, "int8", opts, takes_image(info, graph, opts))
        path = save_package(mlmodel, dest / f"{g.name}.mlpackage")
        check_package(path, opts.deployment_target)
        entries.append(replace(g, file=f"{g.name}.mlpackage/Manifest.json"))
    if manifest.pipeline == "captioner" and any(takes_image(info, spec.graph(g.name), opts) for g in manifest.graphs):
        from mmedge.export.coreml import IMAGE_VECTORS, image_vectors
        from mmedge.export.registry import ExportContext

        ectx = ExportContext(spec, manifest.config, config, model, "fp32", getattr(model, "vocab", None))
        np.savez_compressed(dest / IMAGE_VECTORS, **image_vectors(ectx))
    (dest / SIMULATION).write_text(json.dumps(sim, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return entries

