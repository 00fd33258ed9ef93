"""Core ML export: converts and is inspected on every OS; predicts only on macOS.

On Linux every package's spec is checked (input/output names, types, shapes and
ranges, metadata, int8 weights and sizes, the op set against the deployment
target); the `requires_macos` tests run what only Core ML builds have (pixel-buffer
encoders, fp16 packages) and skip elsewhere with the reason. fp32 parity with the goldens, beam
search against the reference decoder and the error contract run for every backend in
tests/test_conformance.py (on macOS; elsewhere they skip there with the reason).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import make_golden
from mmedge.calibration.data import CalibrationSet, CalibSource, gather
from mmedge.calibration.recipes import QuantConfig, QuantizeRequest
from mmedge.errors import ArtifactError, ExportError, InputError, MissingDependencyError
from mmedge.export.registry import ExportContext, export_context, exporter
from mmedge.models import zoo
from mmedge.models.zoo import GraphSpec, ModelSpec
from mmedge.runtime.manifest import read_manifest

# every test here converts or inspects a package, and the exporter itself needs coremltools: the whole module
pytest.importorskip("coremltools")

from mmedge.calibration.coreml import SIMULATION, quantize_coreml  # noqa: E402
from mmedge.export.coreml import IMAGE_VECTORS, check_package, describe_package  # noqa: E402

requires_macos = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions need macOS")
GRAPHS = {name: [g.name for g in zoo.get(name).graphs] for name in zoo.names()}


def export(name: str, out: Path, precision: str = "fp16", model: torch.nn.Module | None = None,
           fmt: str = "coreml", **options: object) -> Path:
    spec = zoo.get(name)
    model = model if model is not None else make_golden.reference_model(name)
    ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, precision, getattr(model, "vocab", None),
                        dict(options))
    return export_context(ctx, [fmt], out).artifacts[0]


def pkg(art: Path, graph: str) -> Path:
    return art / f"{graph}.mlpackage"


def weight_bin(art: Path, graph: str) -> int:
    return (pkg(art, graph) / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").stat().st_size


@pytest.fixture(scope="module")
def fp16(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("coreml-fp16")
    return {name: export(name, out, weight_threshold=0) for name in zoo.names()}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, golden_artifact: Callable[[str, str], Path]) -> dict[str, Path]:
    """int8 (weights) and fp32 builds of the captioner and SoundNet; the captioner's fp32 build has
    the tensor-input encoder (the option): the goldens' Core ML artifact (tests/conftest.py, shared
    with test_conformance, which runs its parity and beam search on macOS)."""
    out = tmp_path_factory.mktemp("coreml-more")
    res = {f"{name}-int8": export(name, out / "int8", "int8", weight_threshold=0) for name in ("captioner", "soundnet")}
    res["captioner-fp32"] = res["captioner-tensor"] = golden_artifact("coreml", "captioner")
    return res


# ----------------------------------------------------------------------------- conversion (every OS)
def test_exporter_is_registered_with_its_precisions() -> None:
    info = exporter("coreml")
    assert info.precisions == ("fp32", "fp16", "int8") and info.extra == "coreml"
    assert info.file_ext == ".mlpackage" and info.packages == ("coremltools",)


@pytest.mark.parametrize("name", zoo.names())
def test_every_model_converts_to_an_ml_program(name: str, fp16: dict[str, Path]) -> None:
    art = fp16[name]
    m = read_manifest(art)  # every file of every package hashed and verified
    assert m.format == "coreml" and m.precision == "fp16"
    assert [g.file for g in m.graphs] == [f"{g}.mlpackage/Manifest.json" for g in GRAPHS[name]]
    for g, spec_graph in zip(m.graphs, zoo.get(name).graphs):
        info = check_package(art / g.file, "iOS16")  # op set of iOS 16, names distinct
        assert info.deployment_target == "iOS16" and info.spec_version == 7
        assert [i["name"] for i in info.inputs] == list(spec_graph.inputs)
        assert [o["name"] for o in info.outputs] == list(spec_graph.outputs)
        assert not {i["name"] for i in info.inputs} & {o["name"] for o in info.outputs}
        assert all(o["kind"] == "tensor" and o["dtype"] == "float32" for o in info.outputs)
        assert info.weights.get("float16", 0) > 0 and not info.weights.get("float32")  # fp16 weights
        assert [t.name for t in g.inputs] == list(spec_graph.inputs)  # manifest: the runtime interface


def test_captioner_encoder_takes_a_pixel_buffer(fp16: dict[str, Path]) -> None:
    info = describe_package(pkg(fp16["captioner"], "encoder"))
    image = info.input("image")
    assert image["kind"] == "image" and image["color_space"] == "RGB"
    assert (image["width"], image["height"]) == (64, 64)
    assert "pixel buffer" in image["description"]
    pre = json.loads(info.metadata["user_defined"]["mmedge.preprocessing"])
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406]) and pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert info.output("features")["shape"] == [1, 14, 14, 64]
    vectors = np.load(fp16["captioner"] / IMAGE_VECTORS)  # test vectors an 8-bit image input can take
    assert vectors["encoder.pixels"].dtype == np.uint8 and vectors["encoder.pixels"].shape == (2, 64, 64, 3)
    assert vectors["beam.tokens"].shape == (2, 20)


def test_tensor_encoder_is_an_option(builds: dict[str, Path]) -> None:
    art = builds["captioner-tensor"]
    image = describe_package(pkg(art, "encoder")).input("image")
    assert image["kind"] == "tensor" and image["dtype"] == "float32"
    assert image["ranges"] == [(1, 256), (3, 3), (64, 64), (64, 64)]
    assert not (art / IMAGE_VECTORS).exists()


def test_decoder_graphs_take_flexible_batches(fp16: dict[str, Path]) -> None:
    step = describe_package(pkg(fp16["captioner"], "decoder_step"))
    for name, rest in {"features": [(196, 196), (64, 64)], "att1": [(196, 196), (16, 16)],
                       "h": [(24, 24)], "c": [(24, 24)], "prev_word": []}.items():
        assert step.input(name)["ranges"] == [(1, 256)] + rest, name
        assert step.input(name)["shape"][0] == 3, name  # default: beam 3, the shape the Neural Engine runs
    assert step.input("prev_word")["dtype"] == "int32"  # Core ML has no int64; the session casts
    # one flexible input: enumerated on every target (1..max_images rows, default 1)
    init = describe_package(pkg(fp16["captioner"], "decoder_init")).input("features")
    assert init["enumerated"] == [[1, 196, 64], [2, 196, 64]] and init["shape"] == [1, 196, 64]


def _input_spec(package: Path, name: str) -> Any:
    """An input's feature description, read with coremltools itself (skip_model_load: works on Linux)."""
    import coremltools as ct

    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    return next(f for f in spec.description.input if f.name == name), spec


def test_decoder_rows_are_enumerated_for_the_beams_offered(tmp_path: Path) -> None:
    """iOS 18 takes enumerated shapes on every decoder_step input: each row count a beam search of
    the offered widths reaches (beams shrink as hypotheses complete), default = beam 3."""
    from mmedge.export.coreml import CoreMLOptions, export_graph

    spec = zoo.get("captioner")
    model = make_golden.reference_model("captioner")
    ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, "fp16", model.vocab,
                        {"deployment_target": "iOS18", "beams": "1,3,5", "max_images": 1})
    opts = CoreMLOptions.from_options(ctx.options)
    assert (opts.beams, opts.default_beam, opts.max_images) == ((1, 3, 5), 3, 1)
    export_graph(ctx, spec.graph("decoder_step"), tmp_path, opts)
    package = tmp_path / "decoder_step.mlpackage"
    for name, rest in {"features": [196, 64], "att1": [196, 16], "h": [24], "c": [24], "prev_word": []}.items():
        feature, mlspec = _input_spec(package, name)
        t = feature.type.multiArrayType
        assert t.WhichOneof("ShapeFlexibility") == "enumeratedShapes", name
        assert sorted(list(s.shape) for s in t.enumeratedShapes.shapes) == [[n] + rest for n in range(1, 6)], name
        assert list(t.shape) == [3] + rest, name  # the default shape
    assert mlspec.specificationVersion == 9  # iOS 18
    rows = json.loads(describe_package(package).metadata["user_defined"]["mmedge.decoder_rows"])
    assert rows == {"flexibility": "enumerated", "rows": [1, 2, 3, 4, 5], "default": 3, "beams": [1, 3, 5],
                    "max_images": 1}
    # below iOS 18 Core ML takes one enumerated input: asked for explicitly, refused with the way out
    ctx16 = dataclasses.replace(ctx, options={"decoder_shapes": "enumerated", "max_images": 1})
    with pytest.raises(ExportError, match="decoder_step.*below iOS18 Core ML allows enumerated shapes on one input "
                                          "only.*deployment_target=iOS18"):
        export_graph(ctx16, spec.graph("decoder_step"), tmp_path / "x", CoreMLOptions.from_options(ctx16.options))
    with pytest.raises(ExportError, match="default_beam=7: more rows than the decoders take"):
        export_graph(ctx, spec.graph("decoder_step"), tmp_path / "y",
                     CoreMLOptions.from_options({"beams": "1,3", "max_images": 1, "default_beam": 7}))
    # decoder_shapes=range: a range everywhere, still defaulting to the common beam
    ranged = CoreMLOptions.from_options({"decoder_shapes": "range"})
    export_graph(ctx, spec.graph("decoder_init"), tmp_path / "r", ranged)
    feature, _ = _input_spec(tmp_path / "r" / "decoder_init.mlpackage", "features")
    assert feature.type.multiArrayType.WhichOneof("ShapeFlexibility") == "shapeRange"


def test_audio_and_refocus_axes_are_ranges(fp16: dict[str, Path]) -> None:
    wave = describe_package(pkg(fp16["soundnet"], "model")).input("waveform")
    assert wave["ranges"] == [(1, 256), (zoo.get("soundnet").config("tiny").min_samples, 1 << 22)]
    spec = describe_package(pkg(fp16["voice-encoder"], "model")).input("spectrogram")
    frames = zoo.get("voice-encoder").config("tiny").min_frames
    assert spec["ranges"] == [(1, 256), (2, 2), (257, 257), (frames, 1 << 15)]
    image = describe_package(pkg(fp16["refocus"], "model")).input("image")
    assert image["ranges"] == [(1, 256), (3, 3), (1, 4096), (1, 4096)]


def test_enumerated_batches(tmp_path: Path) -> None:
    spec = zoo.get("captioner")
    model = make_golden.reference_model("captioner")
    ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, "fp16", model.vocab,
                        {"shapes": "enumerated", "batches": "1,3,6"})
    from mmedge.export.coreml import CoreMLOptions, export_graph

    opts = CoreMLOptions.from_options(ctx.options)
    export_graph(ctx, spec.graph("decoder_init"), tmp_path, opts)
    shapes = describe_package(tmp_path / "decoder_init.mlpackage").input("features")["enumerated"]
    assert sorted(s[0] for s in shapes) == [1, 2, 3, 6] and all(s[1:] == [196, 64] for s in shapes)
    with pytest.raises(ExportError, match="decoder_step.*one input only.*shapes=range"):
        export_graph(ctx, spec.graph("decoder_step"), tmp_path, opts)


def test_metadata(tmp_path: Path, fp16: dict[str, Path]) -> None:
    step = describe_package(pkg(fp16["captioner"], "decoder_step"))
    meta = step.metadata
    assert meta["author"] == "mmedge" and meta["version"]
    assert meta["license"] == "MIT"  # mmedge's license unless --option license=... (issue 20: it was empty)
    for name in GRAPHS["captioner"]:  # in the spec itself, as Xcode shows it
        _, mlspec = _input_spec(pkg(fp16["captioner"], name), "features" if name != "encoder" else "image")
        assert mlspec.description.metadata.license == "MIT" and mlspec.description.metadata.shortDescription
    assert "captioner (tiny) graph 'decoder_step', fp16" in meta["description"]
    user = meta["user_defined"]
    assert json.loads(user["mmedge.vocabulary"]) == make_golden.reference_model("captioner").vocab.word_map
    assert user["mmedge.graph"] == "decoder_step" and user["mmedge.precision"] == "fp16"
    assert step.input("prev_word")["description"].startswith("previous word id")
    assert step.output("log_probs")["description"].startswith("log-probabilities")
    art = export("refocus", tmp_path, author="ACME Vision", version="2.1", license="Apache-2.0",
                 description="Portrait refocus")
    meta = describe_package(pkg(art, "model")).metadata
    assert (meta["author"], meta["version"], meta["license"]) == ("ACME Vision", "2.1", "Apache-2.0")
    assert meta["description"] == "Portrait refocus"
    assert json.loads(meta["user_defined"]["mmedge.preprocessing"]) == read_manifest(art).preprocessing


@pytest.mark.parametrize("name", ["captioner", "soundnet"])
def test_int8_weights_are_int8_and_the_package_shrinks(name: str, fp16: dict[str, Path],
                                                       builds: dict[str, Path]) -> None:
    int8, fp32 = builds[f"{name}-int8"], builds.get(f"{name}-fp32")
    assert read_manifest(int8).precision == "int8"
    for graph in GRAPHS[name]:
        w = describe_package(pkg(int8, graph)).weights
        assert w["int8"] > 0.9 * sum(w.values()), (graph, w)  # float left: per-channel scales and biases
        assert "constexpr_affine_dequantize" in describe_package(pkg(int8, graph)).ops
        assert weight_bin(int8, graph) < 0.65 * weight_bin(fp16[name], graph), graph
        if fp32 is not None:
            assert weight_bin(fp32, graph) > 1.9 * weight_bin(fp16[name], graph), graph
            assert describe_package(pkg(fp32, graph)).weights.get("float32", 0) > 0


def test_reexport_is_byte_identical(tmp_path: Path) -> None:
    a, b = export("refocus", tmp_path / "a"), export("refocus", tmp_path / "b")
    assert read_manifest(a).files == read_manifest(b).files


def test_op_set_is_checked_against_the_target(fp16: dict[str, Path]) -> None:
    check_package(pkg(fp16["refocus"], "model"), "macOS13")  # the same op set as iOS 16
    with pytest.raises(ExportError, match="newer than deployment target iOS15"):
        check_package(pkg(fp16["refocus"], "model"), "iOS15")
    with pytest.raises(InputError, match="coreml export option deployment_target='iOS12': expected one of iOS15"):
        export("refocus", Path("/nonexistent"), deployment_target="iOS12")


# ----------------------------------------------------------------------------- W8A8 on Linux
@pytest.fixture(scope="module")
def w8a8(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The coreml int8 recipe from the fp32 ONNX artifact and its calibration set: the captioner with
    the export context, SoundNet rebuilt from the manifest (both with the zoo's seeded weights: the
    goldens' redrawn decoder is an extreme case for int8)."""
    from mmedge.runtime import load

    out = tmp_path_factory.mktemp("w8a8")
    res = {}
    for name in ("captioner", "soundnet"):
        spec = zoo.get(name)
        model = spec.create("tiny")
        ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, "fp32", getattr(model, "vocab", None),
                            {"weight_threshold": 0})
        # Core ML's options are not ONNX's
        fp32 = export_context(dataclasses.replace(ctx, options={}), ["onnx"], out).artifacts[0]
        pipe = load(fp32)
        dest = out / f"{name}-coreml-int8"
        dest.mkdir()
        own = ctx if name == "captioner" else None
        quantize_coreml(QuantizeRequest(fp32, pipe.manifest, gather(pipe, CalibSource(size=4)), dest, QuantConfig(),
                                        own.options if own else {}, own))
        res[name] = dest
    return res


@pytest.mark.parametrize("name", ["captioner", "soundnet"])
def test_w8a8_recipe_runs_on_linux(name: str, w8a8: dict[str, Path]) -> None:
    for graph in GRAPHS[name]:
        info = check_package(pkg(w8a8[name], graph), "iOS17")
        assert info.deployment_target == "iOS17"  # activation quantization needs iOS 17
        assert info.ops.get("quantize", 0) > 0 and info.ops.get("dequantize", 0) > 0, graph  # int8 activations
        assert info.weights["int8"] > 0.9 * sum(info.weights.values()), graph
    sim = json.loads((w8a8[name] / SIMULATION).read_text())
    assert set(sim["graphs"]) == set(GRAPHS[name]) and all(v.startswith("W8A8") for v in sim["graphs"].values())
    assert sim["fake_quant_cosine"] and min(sim["fake_quant_cosine"].values()) > 0.9, sim["fake_quant_cosine"]
    if name == "captioner":
        assert describe_package(pkg(w8a8[name], "encoder")).input("image")["kind"] == "image"
        assert (w8a8[name] / IMAGE_VECTORS).is_file()


def test_w8a8_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    empty = CalibrationSet({}, "none")
    with pytest.raises(ExportError, match="calib-method entropy is not available"):
        quantize_coreml(QuantizeRequest(tmp_path, None, empty, tmp_path,  # type: ignore[arg-type]
                                        QuantConfig(method="entropy")))
    # weights the zoo cannot rebuild (a checkpoint, fine-tuned weights): refused, not guessed
    tuned = zoo.get("voice-encoder").create("tiny")
    with torch.no_grad():
        tuned.classifier.bias += 0.5
    art = export("voice-encoder", tmp_path, "fp32", model=tuned, fmt="onnx")
    with pytest.raises(ExportError, match="does not reproduce the artifact's reference outputs"):
        quantize_coreml(QuantizeRequest(art, read_manifest(art), empty, tmp_path / "q", QuantConfig()))
    spec = zoo.get("refocus")
    ctx = ExportContext(spec, "tiny", spec.config("tiny"), spec.create("tiny"), "int8", None,
                        {"deployment_target": "iOS16"})
    art = export("refocus", tmp_path / "r", "fp32", fmt="onnx")
    calib = CalibrationSet({"model": [{k: v.numpy() for k, v in ctx.examples(spec.graphs[0]).items()}]}, "x")
    with pytest.raises(ExportError, match="needs deployment target iOS17"):
        quantize_coreml(QuantizeRequest(art, read_manifest(art), calib, tmp_path / "r", QuantConfig(), ctx.options,
                                        ctx))
    with pytest.raises(ExportError, match="keep-float MyNode"):
        quantize_coreml(QuantizeRequest(art, read_manifest(art), calib, tmp_path / "r",
                                        QuantConfig(keep_float=("MyNode",)), ctx.options, ctx))


# ----------------------------------------------------------------------------- bad input
class _StdLSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.LSTMCell(4, 5)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cell(x, (h, c))


def _toy_spec(outputs: tuple[str, ...]) -> ModelSpec:
    def example(m: torch.nn.Module, cfg: object, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"x": torch.randn(batch, 4, generator=gen), "h": torch.randn(batch, 5, generator=gen),
                "c": torch.randn(batch, 5, generator=gen)}

    graph = GraphSpec("step", ("x", "h", "c"), outputs, lambda m: m, example, {})
    return ModelSpec("toy", "audio", {"tiny": {}}, lambda cfg: _StdLSTM(), (graph,), lambda cfg: {"kind": "none"})


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    spec = _toy_spec(("h_next", "c_next"))
    ctx = ExportContext(spec, "tiny", {}, _StdLSTM().eval(), "fp16")
    with pytest.raises(ExportError, match=r"toy graph 'step': Core ML cannot convert the PyTorch op 'unsafe_chunk'"):
        export_context(ctx, ["coreml"], tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_output_named_like_an_input_is_refused(tmp_path: Path) -> None:
    spec = _toy_spec(("h", "c"))
    ctx = ExportContext(spec, "tiny", {}, _StdLSTM().eval(), "fp16")
    with pytest.raises(ExportError, match="output name.*h.*equal input names"):
        export_context(ctx, ["coreml"], tmp_path)


def test_not_a_core_ml_package(tmp_path: Path, fp16: dict[str, Path]) -> None:
    from mmedge.runtime.session import open_session

    f = tmp_path / "model.mlpackage"
    f.write_text("hello")
    with pytest.raises(ArtifactError, match=r"model\.mlpackage: not a Core ML package \(a file"):
        describe_package(f)
    d = tmp_path / "empty.mlpackage"
    d.mkdir()
    with pytest.raises(ArtifactError, match=r"empty\.mlpackage: not a Core ML package \(no Manifest\.json"):
        open_session("coreml", d / "Manifest.json", [], [])
    broken = tmp_path / "broken.mlpackage"
    shutil.copytree(pkg(fp16["refocus"], "model"), broken)
    (broken / "Data" / "com.apple.CoreML" / "model.mlmodel").unlink()
    with pytest.raises(ArtifactError, match=r"broken\.mlpackage: not a Core ML package \(its root model"):
        open_session("coreml", broken, [], [])
    (broken / "Manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"Manifest\.json: not a Core ML package index"):
        describe_package(broken)
    garbage = tmp_path / "garbage.mlpackage"
    shutil.copytree(pkg(fp16["refocus"], "model"), garbage)
    (garbage / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ArtifactError, match=r"garbage\.mlpackage: not a readable Core ML package"):
        describe_package(garbage)


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the error on machines without Core ML")
def test_loading_elsewhere_says_core_ml_needs_macos(fp16: dict[str, Path]) -> None:
    from mmedge.runtime import load

    with pytest.raises(MissingDependencyError, match=r"encoder\.mlpackage: Core ML predictions need macOS"):
        load(fp16["captioner"])


# ----------------------------------------------------------------------------- macOS: parity
def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@requires_macos
@pytest.mark.requires_macos
def test_pixel_buffer_encoder_on_core_ml(tmp_path: Path) -> None:
    """The default (image input) build: encoder and beam tokens on 8-bit images."""
    from mmedge.runtime import load
    from mmedge.runtime.parity import compare

    art = export("captioner", tmp_path, "fp32")
    vec = np.load(art / IMAGE_VECTORS)
    cap = load(art, compute_units="CPU_ONLY")
    feats = cap.sessions["encoder"].run({"image": vec["encoder.image"]})["features"]
    m = compare("features", feats, vec["encoder.features"], 1e-4)
    assert m.ok, m
    results = cap.caption_features(cap.encode(vec["beam.image"]), ["x", "y"], 3, int(vec["beam.settings"][1]))
    assert [r.tokens for r in results] == [[int(t) for t in row if t >= 0] for row in vec["beam.tokens"]]


@requires_macos
@pytest.mark.requires_macos
@pytest.mark.parametrize("name", zoo.names())
def test_fp16_parity_on_core_ml(name: str, fp16: dict[str, Path], tmp_path: Path) -> None:
    from mmedge.runtime import load
    from mmedge.runtime.parity import check

    art = tmp_path / fp16[name].name
    shutil.copytree(fp16[name], art)
    if (art / IMAGE_VECTORS).is_file():  # the pixel-buffer encoder takes 8-bit images only
        merged = {**np.load(art / "test_vectors.npz"), **np.load(art / IMAGE_VECTORS)}
        np.savez(art / "test_vectors.npz", **merged)
        m = read_manifest(art, verify=False)
        m.files["test_vectors.npz"] = _sha(art / "test_vectors.npz")
        (art / "manifest.json").write_text(m.to_json())
    report = check(load(art))
    assert report.ok, report.to_json()
