"""ONNX export: one `.onnx` file per graph, checked, optionally slimmed.

Uses the TorchScript-based exporter (`dynamo=False`): with the captioner's
matrix pooling it exports every model, it is much faster than the dynamo
exporter, and its output is byte-identical from run to run (the dynamo
exporter's is not), which the artifact hashes rely on. `--export-option exporter=dynamo`
selects the other one.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path


from mmedge.errors import ExportError
from mmedge.export.artifact import tensor_spec
from mmedge.export.registry import ExportContext, register_exporter
from mmedge.models.zoo import GraphSpec
from mmedge.runtime.manifest import GraphEntry
from mmedge.runtime.options import Option, OptionSchema

OPSET = 17
# torch is imported where a graph is exported: the options below are read without it
# (export/tensorrt.py takes them too, and `mmedge package jetson` runs without torch).
OPTIONS = OptionSchema("onnx export", (
    Option("opset", int, OPSET, "ONNX opset of the exported graphs (the dynamo exporter uses >= 18)",
           minimum=7, maximum=23),
    Option("exporter", str, "torchscript", "torch.onnx exporter: torchscript (byte-stable) or dynamo",
           choices=("torchscript", "dynamo")),
    Option("simplify", bool, True, "fold constants with onnxslim when it is installed"),
    Option("target", str, None, "check the graphs against a deployment target (same as --target)",
           choices=("tensorrt",)),
))


def export_graph(ctx: ExportContext, graph: GraphSpec, path: Path) -> GraphEntry:
    """Export one graph to `path` and describe it for the manifest."""
    import onnx
    import torch

    opts = OPTIONS.resolve(OPTIONS.select(ctx.options))  # checked before any export work
    opset = opts["opset"]
    feeds = ctx.examples(graph)
    ref = ctx.reference(graph, feeds)
    module = graph.wrap(ctx.model).eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if opts["exporter"] == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                shapes = tuple({0: batch} if 0 in graph.dynamic_axes.get(k, {}) else {} for k in graph.inputs)
                torch.onnx.export(module, tuple(feeds.values()), str(path), input_names=list(graph.inputs),
                                  output_names=list(graph.outputs), dynamic_shapes=shapes, dynamo=True,
                                  opset_version=max(opset, 18), external_data=False)
            else:
                torch.onnx.export(module, tuple(feeds.values()), str(path), input_names=list(graph.inputs),
                                  output_names=list(graph.outputs),
                                  dynamic_axes={k: dict(v) for k, v in graph.dynamic_axes.items()},
                                  opset_version=opset, do_constant_folding=True, dynamo=False)
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # exporter internals: one line naming the graph
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise ExportError(f"{ctx.spec.name} graph {graph.name!r}: ONNX export failed: {msg[:300]}") from e
    if opts["simplify"]:
        _slim(path)
    return GraphEntry(
        name=graph.name, file=path.name,
        inputs=[tensor_spec(k, v.numpy(), graph.dynamic_axes.get(k)) for k, v in feeds.items()],
        outputs=[tensor_spec(k, v, graph.dynamic_axes.get(k)) for k, v in ref.items()],
    )


def _slim(path: Path) -> None:
    """Fold constants and drop dead nodes with onnxslim when it is installed."""
    try:
        import onnxslim
    except ImportError:
        return
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        slim = onnxslim.slim(str(path))
    if slim is not None:
        import onnx

        onnx.save(slim, str(path))


@register_exporter("onnx", packages=("onnx",), extra="torch", precisions=("fp32", "int8"), file_ext=".onnx",
                   options=OPTIONS)
def export_onnx(ctx: ExportContext, dest: Path) -> list[GraphEntry]:
    return [export_graph(ctx, g, dest / f"{g.name}.onnx") for g in ctx.spec.graphs]
