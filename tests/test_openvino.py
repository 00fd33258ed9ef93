"""OpenVINO: IR export, the OpenVINO runtime session and its options, bf16/fp16, NNCF int8.

fp32 parity with the goldens, beam search against the reference decoder, running without
torch and the error contract run for every backend in tests/test_conformance.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

# every test here exports or runs OpenVINO IR (the exporter itself needs openvino): the whole module
pytest.importorskip("openvino", reason="openvino is not installed (pip install 'mmedge[openvino]')")

import make_golden  # noqa: E402
from mmedge.errors import ArtifactError, ExportError, InputError  # noqa: E402
from mmedge.export.registry import ExportContext, ExportResult, export_context  # noqa: E402
from mmedge.models import zoo  # noqa: E402
from mmedge.runtime import load  # noqa: E402
from mmedge.runtime.parity import TOLERANCE, check, compare  # noqa: E402

THREADS = {"threads": 1}  # the test machines are shared


def export_reference(name: str, out: Path, fmt: str = "openvino", precision: str = "fp32",
                     model: torch.nn.Module | None = None, **options: object) -> Path:
    spec = zoo.get(name)
    model = model if model is not None else make_golden.reference_model(name)
    ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, precision, getattr(model, "vocab", None),
                        dict(options))
    return export_context(ctx, [fmt], out).artifacts[0]


@pytest.fixture(scope="module")
def artifacts(golden_artifact: Callable[[str, str], Path]) -> dict[str, Path]:
    """The goldens' fp32 IR (tests/conftest.py: exported once per session, shared with test_conformance)."""
    return {name: golden_artifact("openvino", name) for name in zoo.names()}


@pytest.fixture(scope="module")
def onnx_captioner(golden_onnx: dict[str, Path]) -> Path:
    return golden_onnx["captioner"]


def golden_feeds(gold: np.lib.npyio.NpzFile, graph) -> dict[str, np.ndarray]:
    return {t.name: gold[f"{graph.name}.{t.name}"] for t in graph.inputs}


# ------------------------------------------------------------------ fp32: what only OpenVINO does
def test_beam_dimension_changes_without_recompiling(artifacts: dict[str, Path]) -> None:
    """decoder_step runs for any N on one compiled model (beams finish, images differ)."""
    from mmedge.models.decoding import caption_images

    cap = load(artifacts["captioner"], **THREADS)
    step = cap.sessions["decoder_step"]
    compiled, request = step.compiled, step.request
    model = make_golden.reference_model("captioner")
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    ref = caption_images(model, images, beam=5, max_len=10)
    got = cap.caption_features(cap.encode(images.numpy()), ["x"] * 3, beam=5, max_len=10)
    assert [r.tokens for r in got] == [h.tokens for h in ref]
    assert step.compiled is compiled and step.request is request
    assert len(step.timing.calls) >= 2


def test_dynamic_axes_lengths_and_sizes(artifacts: dict[str, Path]) -> None:
    """Clip length (voice encoder frames, SoundNet samples) and image size (refocus) stay dynamic."""
    gen = torch.Generator().manual_seed(5)
    for name, make in (("voice-encoder", lambda: {"spectrogram": torch.randn(1, 2, 257, 37, generator=gen)}),
                       ("soundnet", lambda: {"waveform": torch.randn(3, 9000, generator=gen)}),
                       ("refocus", lambda: {"image": torch.rand(1, 3, 40, 56, generator=gen),
                                            "depth": torch.rand(1, 1, 40, 56, generator=gen) * 5,
                                            "near": torch.tensor([1.0]), "far": torch.tensor([2.0])})):
        spec = zoo.get(name)
        model = make_golden.reference_model(name)
        feeds = make()
        with torch.no_grad():
            ref = spec.graphs[0].wrap(model)(*feeds.values())
        ref = ref if isinstance(ref, tuple) else (ref,)
        out = load(artifacts[name], **THREADS).sessions["model"].run({k: v.numpy() for k, v in feeds.items()})
        for k, r in zip(spec.graphs[0].outputs, ref):
            assert compare(k, out[k], r.numpy(), TOLERANCE["fp32"]).ok, (name, k)


def test_manifest_and_ir_interface(artifacts: dict[str, Path]) -> None:
    import openvino as ov

    art = artifacts["captioner"]
    m = load(art, **THREADS).manifest
    assert m.format == "openvino" and m.precision == "fp32"
    assert set(m.files) == {f"{g}.{ext}" for g in ("encoder", "decoder_init", "decoder_step")
                            for ext in ("xml", "bin")} | {"test_vectors.npz"}
    assert {"openvino", "torch"} <= set(m.tools)
    step = m.graph("decoder_step")
    assert [t.name for t in step.inputs] == ["features", "att1", "prev_word", "h", "c"]
    assert step.inputs[0].shape[0] == "batch"
    for g in m.graphs:  # the IR carries exactly the names of the ONNX interface
        model = ov.Core().read_model(str(art / g.file))
        spec = zoo.get("captioner").graph(g.name)
        assert [p.get_any_name() for p in model.inputs] == list(spec.inputs)
        assert [p.get_any_name() for p in model.outputs] == list(spec.outputs)
        assert model.input(0).get_partial_shape()[0].is_dynamic


def test_reexport_is_byte_identical(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    again = export_reference("voice-encoder", tmp_path)
    for f in sorted(artifacts["voice-encoder"].iterdir()):
        assert f.read_bytes() == (again / f.name).read_bytes(), f.name


# ------------------------------------------------------------------ fp16 / bf16
@pytest.mark.parametrize("name", ["captioner", "voice-encoder"])
def test_fp16_ir_within_tolerance(name: str, tmp_path: Path, artifacts: dict[str, Path]) -> None:
    art = export_reference(name, tmp_path, precision="fp16")
    pipe = load(art, **THREADS)
    assert pipe.manifest.precision == "fp16"
    report = check(pipe)  # fp16 criterion: 2e-2 x max |reference|
    assert report.ok, [m for m in report.outputs if not m.ok]
    fp16 = sum(p.stat().st_size for p in art.glob("*.bin"))
    fp32 = sum(p.stat().st_size for p in artifacts[name].glob("*.bin"))
    assert fp16 < 0.6 * fp32  # the weights really are stored in half precision


def _has_bf16() -> bool:
    from mmedge.runtime.backends.openvino import core

    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# Measured on a Xeon with AMX, OpenVINO 2026.4: two goldens are outside DESIGN.md's bf16 bound.
BF16_KNOWN = {
    # the tiny golden decoder's weights are N(0, 0.8) (so that beams make real decisions): its LSTM
    # gates saturate and bf16 inputs/weights (8 mantissa bits) move h_next by 2.2e-2, alpha by 2.7e-2
    "captioner": "bf16 decoder_step of the tiny golden captioner: h_next 2.2e-2, alpha 2.7e-2 of max |ref|",
    # OpenVINO's CPU plugin computes bf16 1-D convolutions with few (2-8) input channels and kernels
    # of 8 or more wrongly here (error ~ the output itself); the tiny SoundNet has such layers
    "soundnet": "OpenVINO CPU bf16 convolutions with 2-8 input channels and kernels >= 8 are wrong here",
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=BF16_KNOWN[n], strict=False))
                                  if n in BF16_KNOWN else n for n in zoo.names()])
def test_bf16_session_within_tolerance(name: str, artifacts: dict[str, Path]) -> None:
    if not _has_bf16():
        pytest.skip("this CPU has no bf16 support (AMX or AVX512-BF16)")
    gold = np.load(make_golden.golden_path(name))
    pipe = load(artifacts[name], precision="bf16", **THREADS)
    for g in pipe.manifest.graphs:
        assert str(pipe.sessions[g.name].get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
        outs = pipe.sessions[g.name].run(golden_feeds(gold, g))
        for t in g.outputs:
            m = compare(t.name, outs[t.name], gold[f"{g.name}.{t.name}"], TOLERANCE["bf16"])
            assert m.ok, m


@pytest.mark.parametrize("model", ["soundnet", "voice-encoder"])
def test_bf16_keeps_task_accuracy(model: str, tmp_path: Path) -> None:
    """bf16 judged by the task metric: the trained demo models lose at most 1 point of top-1."""
    if not _has_bf16():
        pytest.skip("this CPU has no bf16 support (AMX or AVX512-BF16)")
    from mmedge.calibration.evaluate import evaluator
    from mmedge.export import registry

    art = registry.export(registry.ExportRequest(model, ["openvino"], "fp32", "demo", out=tmp_path)).artifacts[0]
    ev = evaluator(model)
    f32 = ev(load(art, **THREADS), split="test", limit=100, progress=False).metrics["top1"]
    bf16 = ev(load(art, precision="bf16", **THREADS), split="test", limit=100, progress=False).metrics["top1"]
    assert f32 >= 0.9 and f32 - bf16 <= 0.01


def test_precision_hint_is_really_f32(artifacts: dict[str, Path]) -> None:
    """f32 is the default and is what runs; bf16 (where the CPU has it) really computes differently."""
    gold = np.load(make_golden.golden_path("captioner"))
    g = load(artifacts["captioner"], **THREADS).manifest.graph("encoder")
    f32 = load(artifacts["captioner"], **THREADS).sessions["encoder"]
    assert f32.precision == "f32" and f32.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert str(f32.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    a = f32.run(golden_feeds(gold, g))["features"]
    assert compare("features", a, gold["encoder.features"], 1e-5).ok
    if _has_bf16():
        b = load(artifacts["captioner"], precision="bf16", **THREADS).sessions["encoder"].run(
            golden_feeds(gold, g))["features"]
        rel = np.abs(b - gold["encoder.features"]).max() / np.abs(gold["encoder.features"]).max()
        assert rel > 1e-4  # bf16 has 8 mantissa bits: without the f32 hint, parity would fail here


# ------------------------------------------------------------------ session options and errors
def test_session_options_are_applied(artifacts: dict[str, Path]) -> None:
    s = load(artifacts["voice-encoder"], hint="throughput", streams=1, threads=1).sessions["model"]
    assert str(s.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    assert int(s.get_property("NUM_STREAMS")) == 1 and int(s.get_property("INFERENCE_NUM_THREADS")) == 1


def test_session_options_from_the_command_line(artifacts: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    from mmedge.cli import run
    from mmedge.runtime.session import session_options

    assert session_options("openvino", ["hint=throughput", "streams=2", "device=GPU.0", "precision=BF16"]) == \
        {"hint": "throughput", "streams": 2, "device": "GPU.0", "precision": "bf16"}
    with pytest.raises(InputError, match=r"unknown openvino session option\(s\) x; valid: device, precision"):
        session_options("openvino", ["x=true"])
    art = str(artifacts["captioner"])
    assert run(["parity", "-a", art, "-O", "hint=throughput", "--backend-option", "streams=1"]) == 0
    assert run(["parity", "-a", art, "-O", "device=XPU"]) == 2
    assert "OpenVINO device 'XPU' is not available" in capsys.readouterr().err


@pytest.mark.parametrize("options, error, message", [
    ({"device": "XPU"}, InputError, r"OpenVINO device 'XPU' is not available here \(available: CPU"),
    ({"precision": "fp8"}, InputError, r"openvino session option precision='fp8': expected one of fp32, f32, bf16, fp16, f16"),
    ({"precision": "fp32"}, None, None),
    ({"hint": "fast"}, InputError, r"openvino session option hint='fast': expected one of latency, throughput"),
    ({"providers": ["CPUExecutionProvider"]}, InputError, r"unknown openvino session option\(s\) providers; valid: device"),
    ({"threads": 0}, InputError, r"openvino session option threads=0: expected an integer from 1 to 1024"),
    ({"streams": "auto", "threads": 1}, None, None),
])
def test_bad_session_options_are_refused(options: dict, error: type | None, message: str | None,
                                         artifacts: dict[str, Path]) -> None:
    if error is None:
        load(artifacts["voice-encoder"], **options)
        return
    with pytest.raises(error, match=message):
        load(artifacts["voice-encoder"], **options)


def test_bound_inputs_equal_fed_inputs(artifacts: dict[str, Path]) -> None:
    gold = np.load(make_golden.golden_path("captioner"))
    step = load(artifacts["captioner"], **THREADS).sessions["decoder_step"]
    feeds = {k: gold[f"decoder_step.{k}"] for k in ("features", "att1", "prev_word", "h", "c")}
    want = step.run(feeds)
    step.bind("features", feeds["features"])
    step.bind("att1", feeds["att1"])
    small = {k: feeds[k] for k in ("prev_word", "h", "c")}
    got = step.run(small)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    other = step.run({**small, "features": np.zeros_like(feeds["features"])})  # a feed overrides the binding
    assert not np.array_equal(other["log_probs"], want["log_probs"])
    again = step.run(small)  # ... for that call only
    np.testing.assert_array_equal(again["log_probs"], want["log_probs"])
    step.unbind("features")
    with pytest.raises(InputError, match="missing input"):
        step.run(small)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rehash(art: Path) -> None:
    from mmedge.export.artifact import finish
    from mmedge.runtime.manifest import read_manifest

    finish(art, read_manifest(art, verify=False))


def test_truncated_bin_gives_one_line_error(artifacts: dict[str, Path], tmp_path: Path) -> None:
    art = _copy(artifacts["captioner"], tmp_path / "a")
    data = (art / "decoder_step.bin").read_bytes()
    (art / "decoder_step.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"decoder_step.bin: sha256 does not match"):
        load(art)
    _rehash(art)  # the manifest agrees: the file itself is bad, OpenVINO must say so in one line
    with pytest.raises(ArtifactError, match=r"decoder_step.xml: OpenVINO cannot read it \(") as e:
        load(art)
    assert "\n" not in str(e.value)


def test_missing_bin_gives_one_line_error(artifacts: dict[str, Path], tmp_path: Path) -> None:
    art = _copy(artifacts["captioner"], tmp_path / "a")
    (art / "encoder.bin").unlink()
    with pytest.raises(ArtifactError, match=r"encoder.bin: missing"):
        load(art)
    _rehash(art)
    with pytest.raises(ArtifactError, match=r"encoder.xml: OpenVINO cannot read it \(") as e:
        load(art)
    assert "\n" not in str(e.value)


def test_ir_of_another_model_is_refused(artifacts: dict[str, Path], tmp_path: Path) -> None:
    art = _copy(artifacts["captioner"], tmp_path / "a")
    for ext in ("xml", "bin"):
        shutil.copyfile(art / f"decoder_init.{ext}", art / f"encoder.{ext}")
    _rehash(art)
    with pytest.raises(ArtifactError, match=r"encoder.xml: graph inputs \['features'\].*belongs to another model"):
        load(art)


# ------------------------------------------------------------------ from an ONNX artifact
def test_convert_onnx_artifact(onnx_captioner: Path, tmp_path: Path) -> None:
    from mmedge.export.openvino import convert_onnx_artifact, main

    out = convert_onnx_artifact(onnx_captioner, tmp_path / "ov")
    pipe = load(out, **THREADS)
    assert pipe.manifest.format == "openvino" and pipe.manifest.extra["converted_from"]["format"] == "onnx"
    report = check(pipe)
    assert report.ok and report.beam["ok"]
    assert main([str(onnx_captioner), str(tmp_path / "ov16"), "--precision", "fp16"]) == 0
    assert check(load(tmp_path / "ov16", **THREADS)).ok
    assert main([str(tmp_path / "ov"), str(tmp_path / "x")]) == 2  # not an ONNX artifact
    assert not (tmp_path / "x").exists()


def test_from_onnx_option(onnx_captioner: Path, tmp_path: Path) -> None:
    art = export_reference("captioner", tmp_path / "a", from_onnx=str(onnx_captioner))
    assert check(load(art, **THREADS)).ok
    other = zoo.get("captioner").create("tiny", seed=3)  # other weights than the ONNX artifact's
    with pytest.raises(ExportError, match="holds other weights than captioner"):
        export_reference("captioner", tmp_path / "b", model=other, from_onnx=str(onnx_captioner))
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


# ------------------------------------------------------------------ int8 (NNCF)
@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ov-calib-cache")


def export_int8(model: str, config: str, out: Path, cache: Path, size: int = 16, report: bool = True,
                **quant: object) -> ExportResult:
    from mmedge.calibration import int8_export
    from mmedge.calibration.data import CalibSource
    from mmedge.calibration.recipes import QuantConfig
    from mmedge.export import registry

    req = registry.ExportRequest(model, ["openvino"], "int8", config, out=out, calib=CalibSource(None, size),
                                 quant=QuantConfig(cache_dir=cache, **quant), report=report)  # type: ignore[arg-type]
    return int8_export.export(req)


def _op_types(xml: Path) -> dict[str, int]:
    import collections

    import openvino as ov

    return dict(collections.Counter(op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()))


@pytest.mark.parametrize("model", ["soundnet", "voice-encoder"])
def test_audio_int8_keeps_accuracy(model: str, tmp_path: Path, cache: Path) -> None:
    res = export_int8(model, "demo", tmp_path, cache)
    (art,), (rep,) = res.artifacts, res.reports
    top1 = rep.task["top1"]
    assert top1["fp32"] >= 0.9 and top1["fp32"] - top1["int8"] <= 0.01  # <= 1 point on 100 test clips
    assert all(o.cosine > 0.99 for o in rep.outputs)
    pipe = load(art, **THREADS)
    assert pipe.manifest.format == "openvino" and pipe.manifest.precision == "int8"
    assert _op_types(art / "model.xml").get("FakeQuantize", 0) > 0
    assert check(pipe).ok


def test_demo_captioner_int8_bleu(tmp_path: Path, cache: Path) -> None:
    """The issue's accuracy bound: OpenVINO int8 loses at most 1 BLEU-4 point on the demo test split."""
    if not (zoo.WEIGHTS_DIR / zoo.get("captioner").weights["demo"]).is_file():
        pytest.skip("models/weights/captioner-demo.pt is not trained yet")
    (rep,) = export_int8("captioner", "demo", tmp_path, cache, size=64).reports
    bleu = rep.task["bleu4@beam3"]
    assert bleu["fp32"] > 0.3 and bleu["fp32"] - bleu["int8"] <= 0.01
    assert all(o.cosine > 0.99 for o in rep.outputs)


@pytest.mark.slow
def test_refocus_full_int8_survives_openvino_hang(tmp_path: Path, cache: Path) -> None:
    """The full refocus network's int8 blur convolutions hung OpenVINO's CPU plugin here; the recipe's
    check (child process with a timeout) keeps those in float, and the rest stays int8."""
    res = export_int8("refocus", "full", tmp_path, cache, size=8)
    (art,), (rep,) = res.artifacts, res.reports
    assert rep.task["psnr_vs_fp32_db"]["int8"] >= 35.0
    assert _op_types(art / "model.xml").get("FakeQuantize", 0) > 0


def test_captioner_int8_static_and_weight_only(tmp_path: Path, cache: Path) -> None:
    (art,) = export_int8("captioner", "tiny", tmp_path / "s", cache, report=False).artifacts
    assert check(load(art, **THREADS)).ok
    step = _op_types(art / "decoder_step.xml")
    assert step.get("FakeQuantize", 0) > 0 and step.get("Softmax") == 1 and step.get("LogSoftmax") == 1
    assert _op_types(art / "encoder.xml").get("FakeQuantize", 0) > 0
    (wo,) = export_int8("captioner", "tiny", tmp_path / "w", cache, report=False, dynamic_decoder=True).artifacts
    assert check(load(wo, **THREADS)).ok
    import openvino as ov

    for g in ("decoder_init", "decoder_step"):
        model = ov.Core().read_model(str(wo / f"{g}.xml"))
        types = {op.get_type_name() for op in model.get_ordered_ops()}
        int8_weights = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"
                        and str(op.get_element_type()) in ("<Type: 'uint8_t'>", "<Type: 'int8_t'>")]
        assert "FakeQuantize" not in types and int8_weights, g  # weight-only: int8 weights, float activations


def test_int8_quantized_ir_is_cached(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    export_int8("voice-encoder", "demo", tmp_path / "a", cache, size=8, report=False)
    files = sorted(cache.glob("ov-*.xml"))
    assert len(files) == 1 and files[0].with_suffix(".bin").is_file()
    stamp = files[0].stat().st_mtime_ns
    (b,) = export_int8("voice-encoder", "demo", tmp_path / "b", cache, size=8, report=False).artifacts
    assert sorted(cache.glob("ov-*.xml")) == files and files[0].stat().st_mtime_ns == stamp
    assert (b / "model.bin").read_bytes() == (tmp_path / "a" / "voice-encoder-demo-openvino-int8" / "model.bin").read_bytes()
    export_int8("voice-encoder", "demo", tmp_path / "c", cache, size=8, report=False, per_channel=False)
    assert len(list(cache.glob("ov-*.xml"))) == 2  # another setting: another entry


def test_broken_int8_layers_are_kept_in_float() -> None:
    """A conv shape that OpenVINO's CPU plugin computed wrongly in int8 here (16->32 channels, kernel 8):
    the recipe's layer check keeps such layers in float, so the result is right on any CPU."""
    import openvino as ov

    from mmedge.calibration import openvino as recipe
    from mmedge.calibration.recipes import QuantConfig

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv1d(16, 32, 8, padding=4), torch.nn.ReLU(),
                              torch.nn.Conv1d(32, 8, 3, padding=1)).eval()
    xs = [{"x": torch.randn(1, 16, 500).numpy()} for _ in range(4)]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.from_numpy(xs[0]["x"]),), str(path), input_names=["x"],
                              output_names=["y"], dynamo=False)
        q = recipe.quantize_checked(path, xs, QuantConfig(), False, None, "test")
    out = ov.Core().compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})(
        xs[1]["x"])[0].ravel()
    ref = net(torch.from_numpy(xs[1]["x"])).detach().numpy().ravel()
    assert float(out @ ref / np.linalg.norm(out) / np.linalg.norm(ref)) > 0.99


def test_unknown_keep_float_and_ops_map_to_ignored_scope() -> None:
    import openvino as ov
    from openvino import opset13 as ops

    from mmedge.calibration.openvino import ignored_scope
    from mmedge.calibration.recipes import QuantConfig

    x = ops.parameter([1, 4], np.float32, name="x")
    mm = ops.matmul(x, ops.constant(np.ones((4, 4), np.float32)), False, False)
    sm = ops.softmax(ops.add(mm, ops.constant(np.ones((1, 4), np.float32))), 1)
    model = ov.Model([sm], [x])
    scope = ignored_scope(model, QuantConfig(), ["MatMul", "Gemm"])
    assert "Softmax" in scope.types and "Add" in scope.types and "MatMul" not in scope.types
    assert "Softmax" in ignored_scope(model, QuantConfig(), None).types


def test_accuracy_control(tmp_path: Path) -> None:
    """nncf.quantize_with_accuracy_control with the task metric computed on an mmedge Pipeline."""
    from mmedge.calibration.data import CalibSource
    from mmedge.calibration.openvino import quantize_with_accuracy_control
    from mmedge.data import sounds
    from mmedge.export import registry

    fp32 = registry.export(registry.ExportRequest("voice-encoder", ["onnx"], "fp32", "demo",
                                                  out=tmp_path)).artifacts[0]
    m = load(fp32).manifest
    sr, min_samples = int(m.preprocessing["sample_rate"]), int(m.extra["min_samples"])
    clips = [sounds.make_clip(s, sr, min_samples) for s in list(sounds.split("val"))[:12]]
    items = [(c.audio, m.labels[c.label]) for c in clips]

    def top1(pipe, items):  # the task metric, on whatever pipeline NNCF is validating
        return float(np.mean([pipe.embed(a)[0].label == y for a, y in items]))

    out = quantize_with_accuracy_control(fp32, tmp_path / "ac", items, top1, max_drop=0.01,
                                         calib=CalibSource(None, 8))
    pipe = load(out, **THREADS)
    ac = pipe.manifest.extra["calibration"]["accuracy_control"]
    assert pipe.manifest.precision == "int8" and ac["max_drop"] == 0.01
    assert ac["fp32_metric"] - ac["int8_metric"] <= 0.01 + 1e-9
    assert _op_types(out / "model.xml").get("FakeQuantize", 0) > 0
    assert check(pipe).ok
    with pytest.raises(InputError, match="no validation items"):
        quantize_with_accuracy_control(fp32, tmp_path / "x", [], top1)
