"""OpenVINO export: one IR (`.xml` + `.bin`) per graph.

Converted with `ov.convert_model` straight from the PyTorch graph module (traced
with the graph's example inputs), with the dimensions the GraphSpec marks
dynamic left dynamic (`ov.PartialShape`, -1), so one IR serves every batch,
beam count, clip length or image size. Input and output tensors carry the
same names as the ONNX artifact's (the stable interface of DESIGN.md).
`--precision fp16` stores the weights in fp16 (`compress_to_fp16=True`;
OpenVINO computes in the precision the runtime asks for). INT8 goes through
calibration/openvino.py (NNCF), from the fp32 ONNX artifact like every recipe.

Users who only have an ONNX artifact convert it with `convert_onnx_artifact`
(`python -m mmedge.export.openvino ONNX_DIR OUT_DIR`), which keeps that
artifact's manifest fields and test vectors. `--export-option from_onnx=DIR` does the
same inside `mmedge export`, for an ONNX artifact of the model being exported
(checked: its test vectors must be this model's).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mmedge.errors import ExportError, MmedgeError
from mmedge.export.artifact import atomic_dir, finish, tensor_spec, tool_versions
from mmedge.export.registry import ExportContext, register_exporter, test_vectors
from mmedge.runtime.manifest import GraphEntry, Manifest, read_manifest
from mmedge.runtime.options import Option, OptionSchema

OPTIONS = OptionSchema("openvino export", (
    Option("from_onnx", str, None, "convert this fp32 ONNX artifact of the same model instead of tracing",
           metavar="DIR"),
))
PRECISION_ON_SAVE = {"fp32": False, "fp16": True}  # compress_to_fp16


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The tracer's warnings and the converter's prints are not for the user."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    return (lines[0] if lines else e.__class__.__name__)[:300]


def name_ports(model: Any, inputs: list[str], outputs: list[str]) -> None:
    """Give the model's i-th input/output tensor exactly the name inputs[i]/outputs[i]."""
    if len(model.inputs) != len(inputs) or len(model.outputs) != len(outputs):
        raise ExportError(f"converted model has {len(model.inputs)} inputs / {len(model.outputs)} outputs, "
                          f"expected {inputs} / {outputs}")
    for port, name in zip(model.inputs, inputs):
        port.get_tensor().set_names({name})
        port.get_node().set_friendly_name(name)
    for port, name in zip(model.outputs, outputs):
        port.get_tensor().set_names({name})


def convert_graph(ctx: ExportContext, graph: Any) -> Any:
    """ov.convert_model of one graph module, dynamic where the GraphSpec says, ports named."""
    import openvino as ov
    import torch

    feeds = ctx.examples(graph)
    shapes = []
    for name, t in feeds.items():
        dims = list(t.shape)
        for axis in graph.dynamic_axes.get(name, {}):
            dims[axis] = -1
        dtype = {torch.float32: ov.Type.f32, torch.int64: ov.Type.i64, torch.int32: ov.Type.i32}.get(t.dtype)
        if dtype is None:
            raise ExportError(f"{ctx.spec.name} graph {graph.name!r}: input {name!r} has dtype {t.dtype}")
        shapes.append((ov.PartialShape(dims), dtype))
    module = graph.wrap(ctx.model).eval()
    try:
        with _quiet(), torch.no_grad():
            model = ov.convert_model(module, example_input=tuple(feeds.values()), input=shapes)
    except Exception as e:  # converter internals: one line naming the graph
        raise ExportError(f"{ctx.spec.name} graph {graph.name!r}: OpenVINO conversion failed: {_one_line(e)}") from e
    name_ports(model, list(graph.inputs), list(graph.outputs))
    return model


_AUTO_NAME = re.compile(r"^([A-Za-z0-9]+)_\d+$")  # OpenVINO's process-wide counter: Multiply_23225


def canonical_names(model: Any, name: str) -> None:
    """Replace OpenVINO's auto-generated node names (a process-wide counter) by the node's position,
    so that exporting the same model twice writes byte-identical IR files."""
    model.set_friendly_name(name)
    for i, op in enumerate(model.get_ordered_ops()):
        m = _AUTO_NAME.match(op.get_friendly_name())
        if m:
            op.set_friendly_name(f"{m.group(1)}_{i}")


def save(model: Any, path: Path, precision: str) -> None:
    import openvino as ov

    canonical_names(model, path.stem)
    if precision not in PRECISION_ON_SAVE:
        raise ExportError(f"OpenVINO IR precision {precision!r} is written by the int8 recipe, not by save()")
    # compress_to_fp16 defaults to True in ov.save_model: fp32 must say False
    ov.save_model(model, str(path), compress_to_fp16=PRECISION_ON_SAVE[precision])


def export_graph(ctx: ExportContext, graph: Any, dest: Path) -> GraphEntry:
    feeds = ctx.examples(graph)
    ref = ctx.reference(graph, feeds)
    save(convert_graph(ctx, graph), dest / f"{graph.name}.xml", ctx.precision)
    return GraphEntry(
        name=graph.name, file=f"{graph.name}.xml",
        inputs=[tensor_spec(k, v.numpy(), graph.dynamic_axes.get(k)) for k, v in feeds.items()],
        outputs=[tensor_spec(k, v, graph.dynamic_axes.get(k)) for k, v in ref.items()],
    )


@register_exporter("openvino", packages=("openvino",), extra="openvino", precisions=("fp32", "fp16", "int8"),
                   file_ext=".xml", options=OPTIONS)
def export_openvino(ctx: ExportContext, dest: Path) -> list[GraphEntry]:
    src = OPTIONS.validate(ctx.options).get("from_onnx")
    if src:
        return _from_onnx_option(ctx, Path(str(src)), dest)
    return [export_graph(ctx, g, dest) for g in ctx.spec.graphs]


# ----------------------------------------------------------------------------- from an ONNX artifact
def convert_onnx_graphs(onnx_dir: Path, manifest: Manifest, dest: Path, precision: str) -> list[GraphEntry]:
    """Convert every graph of an ONNX artifact to IR in `dest`; names are kept from the ONNX files."""
    import openvino as ov

    entries = []
    for g in manifest.graphs:
        src = Path(onnx_dir) / g.file
        try:
            with _quiet():
                model = ov.convert_model(str(src))
        except Exception as e:
            raise ExportError(f"{src}: OpenVINO cannot convert it: {_one_line(e)}") from e
        got_in = {n for p in model.inputs for n in p.get_names()}
        got_out = {n for p in model.outputs for n in p.get_names()}
        want_in, want_out = [t.name for t in g.inputs], [t.name for t in g.outputs]
        if not set(want_in) <= got_in or not set(want_out) <= got_out:
            raise ExportError(f"{src}: inputs {sorted(got_in)} / outputs {sorted(got_out)} do not match its "
                              f"manifest ({want_in} / {want_out})")
        save(model, dest / f"{g.name}.xml", "fp16" if precision == "fp16" else "fp32")
        entries.append(replace(g, file=f"{g.name}.xml"))
    return entries


def convert_onnx_artifact(onnx_dir: str | Path, out: str | Path, precision: str | None = None) -> Path:
    """Write an OpenVINO artifact at `out` from an ONNX artifact directory alone (no torch, no checkpoint).

    The manifest (model, config, interface, preprocessing, vocabulary, labels) and the test vectors
    are the ONNX artifact's, so `mmedge parity` checks the IR against the same PyTorch reference.
    `precision`: None keeps the ONNX artifact's (an int8 QDQ graph stays int8: OpenVINO runs QDQ
    models as int8); "fp16" compresses an fp32 artifact's weights to fp16.
    """
    onnx_dir, out = Path(onnx_dir), Path(out)
    src = read_manifest(onnx_dir)  # verifies every file's sha256
    if src.format != "onnx":
        raise ExportError(f"{onnx_dir}: is a {src.format} artifact, not an ONNX one")
    precision = precision or src.precision
    if precision != src.precision and not (src.precision == "fp32" and precision == "fp16"):
        raise ExportError(f"{onnx_dir}: cannot convert a {src.precision} artifact to {precision} "
                          f"(only fp32 -> fp16, or keep the precision)")
    with atomic_dir(out) as tmp:
        graphs = convert_onnx_graphs(onnx_dir, src, tmp, precision)
        vectors = src.extra.test_vectors
        if vectors and (onnx_dir / vectors).is_file():
            shutil.copyfile(onnx_dir / vectors, tmp / vectors)
        converted_from = {"format": "onnx", "artifact": onnx_dir.name,
                          "files": {g.file: src.files[g.file] for g in src.graphs}}
        finish(tmp, src.derive(format="openvino", precision=precision, graphs=graphs,
                               tools={**src.tools, **tool_versions("openvino")},
                               extra=replace(src.extra, converted_from=converted_from)))
    return out


def _from_onnx_option(ctx: ExportContext, onnx_dir: Path, dest: Path) -> list[GraphEntry]:
    """`--export-option from_onnx=DIR` inside `mmedge export`: the registry writes this model's manifest and
    test vectors next to the converted graphs, so the ONNX artifact must hold this very model."""
    src = read_manifest(onnx_dir)
    if src.format != "onnx" or src.model != ctx.spec.name:
        raise ExportError(f"from_onnx={onnx_dir}: is a {src.format} artifact of {src.model!r}; expected an ONNX "
                          f"artifact of {ctx.spec.name!r}")
    if src.precision != "fp32":
        raise ExportError(f"from_onnx={onnx_dir}: is {src.precision}; use convert_onnx_artifact() for it")
    theirs = np.load(onnx_dir / src.extra.vectors_file)
    ours = test_vectors(ctx)
    same = set(theirs.files) == set(ours) and all(
        theirs[k].shape == ours[k].shape and np.allclose(theirs[k], ours[k], rtol=1e-5, atol=1e-6) for k in ours)
    if not same:
        raise ExportError(f"from_onnx={onnx_dir}: holds other weights than {ctx.spec.name} --config "
                          f"{ctx.config_name}; convert it on its own with `python -m mmedge.export.openvino "
                          f"{onnx_dir} OUT_DIR` (keeps its manifest and test vectors)")
    return convert_onnx_graphs(onnx_dir, src, dest, ctx.precision)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmedge.export.openvino",
                                description="Convert an mmedge ONNX artifact directory to an OpenVINO one "
                                            "(no torch needed).")
    p.add_argument("onnx_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="default: the ONNX artifact's; fp16 compresses fp32 weights")
    args = p.parse_args(argv)
    try:
        print(convert_onnx_artifact(args.onnx_dir, args.out, args.precision))
    except MmedgeError as e:
        print(f"mmedge: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
