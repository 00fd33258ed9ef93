"""The exporter registry and the fp32/fp16 `export()` entry point.

An exporter is a plain function registered under a format name; it writes the
model files of one artifact into a directory and returns their graph entries.
Everything shared by all formats (building the reference model, the example
inputs and reference outputs, test vectors, the manifest, atomic writing) lives
here once, so a backend module holds only what is specific to its format.
int8 needs calibration, a layer above: calibration/int8_export.py starts from
the fp32 ONNX artifact written here. Exports return an ExportResult (artifacts
and, for int8, accuracy reports).
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Mapping

import numpy as np

from mmedge.errors import ExportError, InputError, MissingDependencyError, UnknownNameError, require
from mmedge.export.artifact import atomic_dir, config_dict, finish, tool_versions
from mmedge.models import zoo
from mmedge.registry import Registry
from mmedge.runtime.manifest import TEST_VECTORS, GraphEntry, Manifest, ManifestExtra
from mmedge.runtime.options import OptionSchema
from mmedge.runtime.roles import ENCODER
from mmedge.runtime.vocab import Vocabulary

if TYPE_CHECKING:  # torch is imported where a model is built or run, so the packagers work without it
    import torch

PRECISIONS = ("fp32", "fp16", "int8")
EXAMPLE_BATCH = 2
SEED = 0
BEAM_VECTORS = {"images": 2, "beam": 3, "max_len": 20}  # beam.settings; max_len: decoding steps, <end> included


@dataclass
class ExportContext:
    """What an exporter gets: the reference model and how to feed it."""

    spec: zoo.ModelSpec
    config_name: str
    config: Any
    model: torch.nn.Module
    precision: str
    vocab: Vocabulary | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # format -> fields of the manifest's extra for that format's artifact (a ManifestExtra or its JSON)
    manifest_extra: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def model_extra(self) -> ManifestExtra:
        """The extra fields the model's runtime needs (class output, shortest input), typed."""
        return ManifestExtra.from_json(self.spec.manifest_extra(self.config))

    def examples(self, graph: zoo.GraphSpec, batch: int = EXAMPLE_BATCH, seed: int = SEED) -> dict[str, torch.Tensor]:
        import torch

        return graph.example(self.model, self.config, batch, torch.Generator().manual_seed(seed))

    def reference(self, graph: zoo.GraphSpec, feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out = graph.wrap(self.model)(*feeds.values())
        out = out if isinstance(out, tuple) else (out,)
        return {k: v.numpy() for k, v in zip(graph.outputs, out)}


Exporter = Callable[[ExportContext, Path], List[GraphEntry]]  # typing.List: evaluated on Python 3.8 too


@dataclass(frozen=True)
class ExporterInfo:
    name: str
    fn: Exporter
    packages: tuple[str, ...]  # import names checked before any work starts
    extra: str
    precisions: tuple[str, ...]
    file_ext: str
    options: OptionSchema  # its `-o KEY=VALUE` options, typed; the one place they are declared


# Format modules register themselves on import; each imports its heavy package lazily,
# so a missing package only disables its own format.
EXPORTERS: Registry[ExporterInfo] = Registry(
    "format", modules=tuple(f"mmedge.export.{m}" for m in ("onnx", "openvino", "coreml", "tensorrt")))


def register_exporter(name: str, packages: tuple[str, ...], extra: str, precisions: tuple[str, ...],
                      file_ext: str, options: OptionSchema) -> Callable[[Exporter], Exporter]:
    def deco(fn: Exporter) -> Exporter:
        EXPORTERS.add(name, ExporterInfo(name, fn, packages, extra, precisions, file_ext, options))
        return fn

    return deco


def option_schema(names: list[str]) -> OptionSchema:
    """The `-o` options of an export to these formats: the union of their schemas (a key that none of
    them takes is an error; each exporter then gets the keys it declares)."""
    infos = [EXPORTERS.get(n) for n in dict.fromkeys(names)]
    if len(infos) == 1:
        return infos[0].options
    return OptionSchema.union(f"--format {','.join(i.name for i in infos)} export", [i.options for i in infos])


def parse_options(names: list[str], pairs: list[str]) -> dict[str, Any]:
    """`-o KEY=VALUE` pairs of an export to these formats -> typed options (before any work)."""
    return option_schema(names).parse(pairs)


def own_options(ctx: ExportContext, info: ExporterInfo) -> ExportContext:
    """The context an exporter gets: only the options it declares (the dict is shared by the formats)."""
    return replace(ctx, options=info.options.select(ctx.options))


def exporter(name: str) -> ExporterInfo:
    """The exporter of a format; fails naming the extra when its package is missing."""
    info = EXPORTERS.get(name)
    for pkg in info.packages:
        if importlib.util.find_spec(pkg) is None:
            raise MissingDependencyError(pkg, info.extra, f"--format {name}")
    return info


def rewriters(fmt: str) -> tuple[str, ...]:
    """Optional packages that change a format's exported bytes when installed (recorded in the manifest)."""
    return ("onnxslim",) if fmt == "onnx" else ()  # export/onnx.py `_slim`


def formats() -> list[str]:
    return EXPORTERS.names()


@dataclass
class ExportRequest:
    model: str
    formats: list[str]
    precision: str = "fp32"
    config: str = "demo"  # the trained, shipped weights: what a user exporting without --config expects
    checkpoint: Path | None = None
    word_map: Path | None = None
    out: Path = Path("artifacts")
    options: dict[str, Any] = field(default_factory=dict)
    calib: Any = None  # calibration.data.CalibSource (int8)
    quant: Any = None  # calibration.recipes.QuantConfig (int8)
    report: bool = True  # int8: build the accuracy report
    report_scenes: int = 100  # int8: test items its task metrics are measured on
    manifest_extra: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # format -> extra (--precision auto)


def build_context(req: ExportRequest) -> ExportContext:
    spec = zoo.get(req.model)
    if req.precision not in PRECISIONS:
        raise UnknownNameError("precision", req.precision, PRECISIONS)
    if req.checkpoint is not None:
        if spec.pipeline != "captioner":
            raise InputError(f"--checkpoint is supported for the captioner (tutorial checkpoints), not {req.model}")
        if req.word_map is None:
            raise InputError("--checkpoint needs --word-map (the tutorial's WORDMAP_*.json)")
        from mmedge.models.checkpoint import load_captioner

        model = load_captioner(req.checkpoint, req.word_map).eval()
        return ExportContext(spec, "checkpoint", model.config, model, req.precision, model.vocab, dict(req.options),
                             req.manifest_extra)
    if req.word_map is not None:
        raise InputError("--word-map is only used with --checkpoint")
    model = spec.create(req.config)
    return ExportContext(spec, req.config, spec.config(req.config), model, req.precision,
                         getattr(model, "vocab", None), dict(req.options), req.manifest_extra)


def artifact_name(ctx: ExportContext, fmt: str) -> str:
    return f"{ctx.spec.name}-{ctx.config_name}-{fmt}-{ctx.precision}"


def with_hints(spec: zoo.ModelSpec, graphs: list[GraphEntry]) -> list[GraphEntry]:
    """The graphs with the hints the model catalog gives them (what the manifest records)."""
    hints = {g.name: g.hints for g in spec.graphs}
    return [replace(g, hints=hints.get(g.name, g.hints)) for g in graphs]


def build_manifest(ctx: ExportContext, fmt: str, graphs: list[GraphEntry], tools: dict[str, str] | None = None,
                   extra: ManifestExtra | None = None) -> Manifest:
    """The manifest of `ctx`'s model exported to `fmt`: the one place an export describes its model
    (fp32/fp16 artifacts here, and the TensorRT exporter's build settings; int8 artifacts derive
    theirs from the fp32 one). `extra` defaults to the model's own fields and the test vectors; the
    format's section of `ctx.manifest_extra` goes over it; graphs get the catalog's hints."""
    if extra is None:
        extra = ctx.model_extra().merged({"test_vectors": TEST_VECTORS})
    return Manifest(
        model=ctx.spec.name, config=ctx.config_name, pipeline=ctx.spec.pipeline, format=fmt,
        precision=ctx.precision, graphs=with_hints(ctx.spec, graphs), preprocessing=ctx.spec.preprocessing(ctx.config),
        model_config=config_dict(ctx.config), vocabulary=dict(ctx.vocab.word_map) if ctx.vocab is not None else None,
        labels=ctx.spec.labels(ctx.config), tools=dict(tools or {}), extra=extra.merged(ctx.manifest_extra.get(fmt)))


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch at one thread, put back after: a reduction split over N threads sums in another order,
    so references recorded at the caller's thread count would differ in their last bits from one
    run (or a test that changed the count) to the next, and a re-export would not be byte-identical."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_vectors(ctx: ExportContext) -> dict[str, np.ndarray]:
    """Inputs and reference outputs of every graph (and beam-search tokens for captioners)."""
    with _one_torch_thread():
        return _test_vectors(ctx)


def _test_vectors(ctx: ExportContext) -> dict[str, np.ndarray]:
    vectors: dict[str, np.ndarray] = {}
    for graph in ctx.spec.graphs:
        feeds = ctx.examples(graph)
        for k, v in feeds.items():
            vectors[f"{graph.name}.{k}"] = v.numpy()
        for k, v in ctx.reference(graph, feeds).items():
            vectors[f"{graph.name}.{k}"] = v
    if ctx.spec.pipeline == "captioner":
        from mmedge.models.decoding import caption_images

        images = ctx.examples(ctx.spec.graph(ENCODER), BEAM_VECTORS["images"], SEED + 1)["image"]
        hyps = caption_images(ctx.model, images, BEAM_VECTORS["beam"], BEAM_VECTORS["max_len"])
        tokens = np.full((len(hyps), BEAM_VECTORS["max_len"]), -1, np.int64)
        for i, h in enumerate(hyps):
            tokens[i, : len(h.tokens)] = h.tokens
        vectors.update({"beam.image": images.numpy(), "beam.tokens": tokens,
                        "beam.scores": np.array([h.score for h in hyps]),
                        "beam.settings": np.array([BEAM_VECTORS["beam"], BEAM_VECTORS["max_len"]])})
    return vectors


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the artifact directories, and the int8 accuracy reports
    (calibration.report.Int8Report, one per measured int8 artifact; none for fp32/fp16)."""

    artifacts: list[Path]
    reports: list[Any] = field(default_factory=list)


def prepare(req: ExportRequest) -> ExportContext:
    """Check a request (formats, precision, --target, -o options) before any work, then build its model."""
    require("torch", "export: the PyTorch reference model")
    check_formats(req.formats, req.precision)  # fail before any work
    target = (req.options or {}).get("target")
    if target and any(f != "onnx" for f in req.formats):
        raise ExportError(f"--target {target} checks ONNX graphs: use it with --format onnx only")
    req.options = option_schema(req.formats).validate(req.options or {})
    return build_context(req)


def export(req: ExportRequest, log: Callable[[str], None] = lambda s: None) -> ExportResult:
    """Export one model to every requested format in fp32 or fp16.

    int8 needs calibration, a layer above: `mmedge.calibration.int8_export.export` takes
    every precision and calls this one for fp32/fp16."""
    if req.precision == "int8":
        raise ExportError("--precision int8 calibrates: export with mmedge.calibration.int8_export.export(req)")
    ctx = prepare(req)
    return export_context(ctx, req.formats, Path(req.out), log)


def check_formats(names: list[str], precision: str) -> list[ExporterInfo]:
    infos = [exporter(f) for f in names]
    for info in infos:
        if precision not in info.precisions:
            raise ExportError(f"--format {info.name} does not support --precision {precision} "
                              f"(supported: {', '.join(info.precisions)})")
    return infos


def check_target(ctx: ExportContext, fmt: str, folder: Path, graphs: list[GraphEntry],
                  log: Callable[[str], None]) -> None:
    """--target NAME: lint the ONNX graphs just written (before anything is published)."""
    target = ctx.options.get("target")
    if not target:
        return
    if fmt != "onnx":
        raise ExportError(f"--target {target} checks ONNX graphs; it does not apply to --format {fmt}")
    from mmedge.export.targets import check_graphs

    check_graphs(str(target), folder, [g.file for g in graphs], log)


def export_context(ctx: ExportContext, names: list[str], out: Path,
                   log: Callable[[str], None] = lambda s: None) -> ExportResult:
    """Export an already-built model (tests use it with their own seeded models)."""
    infos = check_formats(names, ctx.precision)
    ctx.options = option_schema(names).validate(ctx.options)  # before any work
    vectors = test_vectors(ctx)
    written = []
    for info in infos:
        dest = out / artifact_name(ctx, info.name)
        log(f"exporting {ctx.spec.name} ({ctx.config_name}) to {info.name} {ctx.precision} -> {dest}")
        with atomic_dir(dest) as tmp:
            graphs = info.fn(own_options(ctx, info), tmp)
            check_target(ctx, info.name, tmp, graphs, log)
            np.savez_compressed(tmp / TEST_VECTORS, **vectors)
            tools = tool_versions("torch", *info.packages, *rewriters(info.name))
            finish(tmp, build_manifest(ctx, info.name, graphs, tools))
        written.append(dest)
    return ExportResult(written)
