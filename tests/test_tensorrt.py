"""TensorRT and Jetson: what can be checked without a GPU, and real engines where one is.

Here (no GPU): TensorRT compatibility of every exported graph; the Q/DQ graphs and
TensorRT calibration caches built from the shared calibration statistics; build plans
and optimization profiles per TensorRT release; the Jetson bundle and its
build_engines.sh (shellcheck, and a fake trtexec recording the commands for TensorRT
8.5, 10.3 and 11); the runtime session against fake TensorRT/CUDA modules (bind-once
uploads, int64 -> int32 inputs, profiles, the rebuild message). With a GPU and
TensorRT: engines built and compared with the PyTorch reference (`requires_cuda`).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmedge.calibration import int8_export
from mmedge.calibration import tensorrt as trtcal
from mmedge.calibration.data import CalibSource
from mmedge.calibration.packaging import package
from mmedge.calibration.recipes import QuantConfig
from mmedge.errors import ArtifactError, CheckFailedError, ExportError, InputError, MissingDependencyError
from mmedge.export import registry
from mmedge.export import tensorrt as trtexp
from mmedge.export.jetson import BUNDLE_DIR, SCRIPT, verify_bundle
from mmedge.export.package import PackageRequest, packager
from mmedge.export.tensorrt_compat import check, inspect
from mmedge.runtime import load
from mmedge.runtime.backends import tensorrt as trtrt
from mmedge.runtime.manifest import GraphEntry, read_manifest
from mmedge.runtime.parity import check as parity

requires_cuda = pytest.mark.skipif(not trtrt.cuda_available(), reason="needs an NVIDIA GPU with TensorRT")
# only what quantizes (ORT's calibration), converts to fp16 (ORT's converter) or loads a pipeline needs
# onnxruntime: the compatibility checks, build plans, profiles, caches and fakes run without it
requires_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                  reason="onnxruntime is not installed (pip install 'mmedge[onnxruntime]')")
MODELS = ("captioner", "soundnet", "voice-encoder", "refocus")


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trt")


@pytest.fixture(scope="module")
def fp32(cli_onnx: dict[str, Path]) -> dict[str, Path]:
    """The tiny fp32 ONNX artifacts (tests/conftest.py, exported once per session)."""
    return {m: cli_onnx[m] for m in MODELS}


@pytest.fixture(scope="module")
def cache(work: Path) -> Path:
    return work / "calib-cache"


@pytest.fixture(scope="module")
def int8(fp32: dict[str, Path], work: Path, cache: Path) -> Path:
    """The captioner quantized for TensorRT (Q/DQ graphs + calibration caches), no GPU."""
    pytest.importorskip("onnxruntime", reason="TensorRT's Q/DQ graphs are calibrated with ONNX Runtime")
    return trtcal.quantize_artifact(fp32["captioner"], work / "captioner-tiny-onnx-int8", CalibSource(size=8),
                                    QuantConfig(cache_dir=cache))


@pytest.fixture(scope="module")
def bundle(fp32: dict[str, Path], int8: Path, work: Path, cache: Path) -> Path:
    out = work / "bundle" / "jetson.tar.gz"
    opts = {"calib": CalibSource(size=8), "quant": QuantConfig(cache_dir=cache)}
    return package("jetson", PackageRequest([fp32["captioner"], int8, fp32["soundnet"]], out, opts))


@pytest.fixture(scope="module")
def unpacked(bundle: Path, work: Path) -> Path:
    dest = work / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    return dest / BUNDLE_DIR


# ------------------------------------------------------------------ compatibility check
@pytest.mark.parametrize("model", MODELS)
def test_exported_graphs_are_tensorrt_compatible(model: str, fp32: dict[str, Path]) -> None:
    for g in read_manifest(fp32[model]).graphs:
        assert check(fp32[model] / g.file) == []


def test_int64_prev_word_is_a_note_for_tensorrt_8_5_only(fp32: dict[str, Path]) -> None:
    found = inspect(fp32["captioner"] / "decoder_step.onnx")
    assert [(f.version, f.severity) for f in found] == [("8.5", "note")]
    assert "prev_word" in found[0].message and "INT32" in found[0].message


def test_export_with_target_tensorrt(work: Path) -> None:
    req = registry.ExportRequest("voice-encoder", ["onnx"], "fp32", "tiny", out=work / "target",
                                 options={"target": "tensorrt"})
    logged: list[str] = []
    assert registry.export(req, log=logged.append).artifacts[0].is_dir()
    assert "--target tensorrt: 1 graph checked, compatible" in logged


@requires_ort
def test_int8_export_with_target_tensorrt_is_in_tensorrt_layout(work: Path, tmp_path: Path) -> None:
    """ONNX Runtime's x86 int8 (uint8 activations) would not build on TensorRT 8.5: --target
    tensorrt makes the int8 export use TensorRT's symmetric int8 Q/DQ layout, and checks it."""
    req = registry.ExportRequest("soundnet", ["onnx"], "int8", "tiny", out=work / "target-int8",
                                 calib=CalibSource(size=4), quant=QuantConfig(cache_dir=tmp_path),
                                 options={"target": "tensorrt"})  # own cache: the module's is counted
    logged: list[str] = []
    (art,) = int8_export.export(req, log=logged.append).artifacts
    m = read_manifest(art)
    assert m.precision == "int8" and trtcal.is_tensorrt_int8(m)
    assert all(check(art / g.file) == [] for g in m.graphs)
    assert "--target tensorrt: 1 graph checked, compatible" in logged
    with pytest.raises(ExportError, match="use it with --format onnx only"):
        registry.export(registry.ExportRequest("soundnet", ["openvino"], "fp32", "tiny", out=work / "x",
                                               options={"target": "tensorrt"}))


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 17,
           domains: tuple = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=ops)


def _f(name: str, shape: list) -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name: str, value: Any, dtype: Any = np.float32) -> Any:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _qdq_conv(zp_dtype: Any = np.int8, zp: int = 0, act_scale: Any = 0.1, w_axis: int = 0) -> onnx.ModelProto:
    w = np.ones((4, 3, 3, 3), np.float32)
    inits = [_const("s", act_scale), _const("zp", zp, zp_dtype), _const("w", w),
             _const("ws", np.full(4, 0.01)), _const("wzp", np.zeros(4), np.int8)]
    if w_axis != 0:
        inits[3] = _const("ws", np.full(3, 0.01))
        inits[4] = _const("wzp", np.zeros(3), np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dqx"),
             helper.make_node("QuantizeLinear", ["w", "ws", "wzp"], ["wq"], name="qw", axis=w_axis),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], name="dqw", axis=w_axis),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv")]
    return _model(nodes, [_f("x", [1, 3, 8, 8])], [_f("y", [1, 4, 6, 6])], inits)


CASES = {
    "layernorm": (_model([helper.make_node("LayerNormalization", ["x", "g"], ["y"], name="ln")],
                         [_f("x", [2, 4])], [_f("y", [2, 4])], [_const("g", np.ones(4))]),
                  {"8.5": "LayerNormalization is listed as unsupported"}),
    "opset18": (_model([helper.make_node("Relu", ["x"], ["y"])], [_f("x", [2])], [_f("y", [2])], opset=18),
                {"8.5": "opset 18 is outside the parser's range 7..17"}),
    "unique": (_model([helper.make_node("Unique", ["x"], ["y"], name="u")], [_f("x", [4])], [_f("y", [4])]),
               {"8.5": "Unique is listed as unsupported", "10.3": "Unique is listed as unsupported"}),
    "contrib": (_model([helper.make_node("FusedGemm", ["x", "x"], ["y"], domain="com.microsoft")],
                       [_f("x", [2, 2])], [_f("y", [2, 2])], domains=("com.microsoft",)),
                {"8.5": "domain 'com.microsoft'", "10.3": "domain 'com.microsoft'"}),
    "dynamic_slice_axes": (_model([helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"], name="sl")],
                                  [_f("x", [4, 4]), helper.make_tensor_value_info("ax", TensorProto.INT64, [1])],
                                  [_f("y", [2, 4])], [_const("st", [0], np.int64), _const("en", [2], np.int64)]),
                           {"8.5": "input axes must be a build-time constant"}),
    "pad_wrap": (_model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad", mode="wrap")],
                        [_f("x", [4])], [_f("y", [6])], [_const("p", [1, 1], np.int64)]),
                 {"8.5": "pad mode 'wrap'", "10.3": "pad mode 'wrap'"}),
    "uint8_input": (_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                           [helper.make_tensor_value_info("x", TensorProto.UINT8, [4])], [_f("y", [4])]),
                    {"8.5": "graph input 'x' has type UINT8"}),
    "uint8_qdq": (_qdq_conv(np.uint8, 128), {"8.5": "quantized type UINT8", "10.3": "zero point must be 0"}),
    "nonzero_zero_point": (_qdq_conv(np.int8, 3), {"8.5": "zero point must be 0", "10.3": "zero point must be 0"}),
    "per_channel_activations": (_qdq_conv(act_scale=[0.1, 0.1, 0.1]),
                                {"8.5": "activations must be quantized per tensor"}),
    "weights_wrong_axis": (_qdq_conv(w_axis=1), {"8.5": "must be quantized along axis 0 (output channels), not 1"}),
    "q_without_dq": (_model([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
                             helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)],
                            [_f("x", [4])], [_f("y", [4])], [_const("s", 0.1), _const("zp", 0, np.int8)]),
                     {"8.5": "every QuantizeLinear must be followed by DequantizeLinear"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compat_check_flags_what_tensorrt_refuses(case: str, tmp_path: Path) -> None:
    model, expected = CASES[case]
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, str(path))
    problems = check(path)
    for version, text in expected.items():
        assert any(p.startswith("TensorRT ") and version in p.split(":")[0] and text in p for p in problems), \
            (version, text, problems)
    if case in ("layernorm", "opset18", "dynamic_slice_axes", "uint8_input"):  # fine on 10.3
        assert not any("10.3" in p.split(":")[0] for p in problems), problems


def test_good_qdq_passes_and_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    onnx.save(_qdq_conv(), str(tmp_path / "ok.onnx"))
    assert check(tmp_path / "ok.onnx") == []
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    (problem,) = check(tmp_path / "bad.onnx")
    assert "not a readable ONNX file" in problem


# ------------------------------------------------------------------ Q/DQ + calibration caches
def test_qdq_graphs_are_in_tensorrt_layout(int8: Path) -> None:
    m = read_manifest(int8)
    assert m.format == "onnx" and m.precision == "int8" and m.extra["int8_layout"] == "tensorrt"
    for g in m.graphs:
        assert check(int8 / g.file) == []
        model = onnx.load(str(int8 / g.file))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert qdq, g.name
        for n in qdq:
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any()  # symmetric int8
        weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        per_channel = [n for n in qdq if inits[n.input[1]].size > 1]
        assert per_channel and len(per_channel) <= 2 * len(weighted)  # weights only
        assert not any(i.data_type == TensorProto.INT32 for i in model.graph.initializer)  # float biases


def test_qdq_artifact_runs_on_onnxruntime_within_int8_parity(int8: Path) -> None:
    report = parity(load(int8))
    assert report.ok, [m for m in report.outputs if not m.ok]


def test_calibration_cache_equals_ranges_over_127_and_the_qdq_scales(fp32: dict[str, Path], int8: Path,
                                                                    cache: Path) -> None:
    from mmedge.calibration.onnxruntime import ranges

    m = read_manifest(int8)
    json_caches = sorted(cache.glob("ort-*.json"))
    assert len(json_caches) == len(m.graphs)  # one shared ORT range cache per graph
    for g in m.graphs:
        version, calibrator, scales = trtcal.read_calibration_cache(int8 / f"{g.name}.calib")
        assert (version, calibrator) == ("8.5.2", "EntropyCalibration2")
        header = (int8 / f"{g.name}.calib").read_text().splitlines()[0]
        assert header == "TRT-8502-EntropyCalibration2"
        src = next(p for p in json_caches if scales.keys() <= ranges(p).keys())
        rng = ranges(src)
        for name, scale in scales.items():
            lo, hi = rng[name]
            assert scale == np.float32(max(abs(lo), abs(hi))) / np.float32(127)
        model = onnx.load(str(int8 / g.file))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        # ORT gives a tensor that feeds a ReLU the ReLU's output range (the fused Conv+ReLU
        # TensorRT builds too); every other activation scale is the cache's value exactly
        reference = onnx.load(str(fp32["captioner"] / g.file)).graph
        relu_inputs = {n.input[0] for n in reference.node if n.op_type in ("Relu", "Clip")}
        checked = 0
        for n in model.graph.node:
            if n.op_type == "QuantizeLinear" and n.input[0] in scales and n.input[0] not in relu_inputs:
                assert inits[n.input[1]].item() == np.float32(scales[n.input[0]])
                checked += 1
        assert checked, g.name


def test_ranges_are_shared_with_the_onnxruntime_recipe(fp32: dict[str, Path], int8: Path, cache: Path,
                                                       tmp_path: Path) -> None:
    from mmedge.calibration.onnxruntime import quantize_graph, ranges

    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("ort-*.json")}
    again = trtcal.quantize_artifact(fp32["captioner"], tmp_path / "again", CalibSource(size=8),
                                     QuantConfig(cache_dir=cache))
    assert {p: p.stat().st_mtime_ns for p in cache.glob("ort-*.json")} == stamps  # read, not recalibrated
    assert (again / "encoder.calib").read_bytes() == (int8 / "encoder.calib").read_bytes()
    # ONNX Runtime's own (x86) recipe reads the same entry; TensorRT refuses that layout
    scales = trtcal.read_calibration_cache(int8 / "decoder_init.calib")[2]
    entry = next(p for p in stamps if scales.keys() <= ranges(p).keys())
    x86 = tmp_path / "x86.onnx"
    quantize_graph(fp32["captioner"] / "decoder_init.onnx", x86, [], QuantConfig(cache_dir=cache), entry, True,
                   QuantConfig().ops_for("captioner", "decoder_init"))
    assert entry.stat().st_mtime_ns == stamps[entry]
    problems = check(x86)
    assert problems and any("UINT8" in p for p in problems)


def test_calibration_cache_format_and_reader(tmp_path: Path) -> None:
    path = trtcal.write_calibration_cache({"a": (-1.27, 0.5), "b/c:0": (0.0, 2.54), "zero": (0.0, 0.0)},
                                          tmp_path / "x.calib", "10.3")
    assert path.read_text() == "TRT-100300-EntropyCalibration2\na: 3c23d70a\nb/c:0: 3ca3d70a\n"
    assert struct.pack(">f", 0.01).hex() == "3c23d70a"
    version, calibrator, scales = trtcal.read_calibration_cache(path)
    assert version == "10.3.0" and calibrator == "EntropyCalibration2"
    assert scales == {"a": pytest.approx(0.01, rel=1e-7), "b/c:0": pytest.approx(0.02, rel=1e-7)}
    retargeted = trtcal.retarget_cache(path, tmp_path / "y.calib", "8.5.2")
    assert retargeted.read_text().splitlines()[0] == "TRT-8502-EntropyCalibration2"
    assert trtcal.read_calibration_cache(retargeted)[2] == scales
    (tmp_path / "bad.calib").write_text("TRT-8502-EntropyCalibration2\na: zz\n")
    with pytest.raises(InputError, match=r"bad.calib:2: expected 'tensor: <8 hex digits>'"):
        trtcal.read_calibration_cache(tmp_path / "bad.calib")
    (tmp_path / "nohead.calib").write_text("a: 3c23d70a\n")
    with pytest.raises(InputError, match="not a TensorRT calibration cache"):
        trtcal.read_calibration_cache(tmp_path / "nohead.calib")


@pytest.mark.parametrize("version, number", [("8.5.2", 8502), ("8.6.1", 8601), ("10.3", 100300),
                                             ("10.3.0.30", 100300), ("11.0.0", 110000)])
def test_tensorrt_version_numbers(version: str, number: int) -> None:
    assert trtcal.trt_version_int(version) == number
    assert trtcal.trt_version_str(number) == ".".join((version.split(".") + ["0", "0"])[:3])


@requires_ort
def test_dynamic_decoder_is_refused_not_dropped(fp32: dict[str, Path], tmp_path: Path, cache: Path) -> None:
    with pytest.raises(ExportError, match="ONNX Runtime option"):
        trtcal.quantize_artifact(fp32["soundnet"], tmp_path / "x", CalibSource(size=4),
                                 QuantConfig(cache_dir=cache, dynamic_decoder=True))
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ build plans and profiles
@pytest.mark.parametrize("version, precision, opts, expected", [
    ("8.5.2", "fp32", {}, ("fp32", False, (), False)),
    ("8.5.2", "fp16", {}, ("fp32", False, ("FP16",), False)),
    ("8.5.2", "int8", {}, ("qdq", False, ("INT8", "FP16"), False)),
    ("8.5.2", "int8", {"dla_core": 0}, ("fp32", False, ("INT8", "FP16", "GPU_FALLBACK"), True)),
    ("10.3.0", "int8", {"dla_core": 1, "int8_source": "qdq"}, ("qdq", False, ("INT8", "FP16", "GPU_FALLBACK"), False)),
    ("10.3.0", "fp16", {"version_compatible": "true"}, ("fp32", False, ("FP16", "VERSION_COMPATIBLE"), False)),
    ("10.3.0", "int8", {"strongly_typed": "true"}, ("qdq", True, (), False)),
    ("11.0.0", "fp32", {}, ("fp32", True, (), False)),
    ("11.0.0", "fp16", {}, ("fp16", True, (), False)),
    ("11.0.0", "int8", {}, ("qdq", True, (), False)),
    ("11.0.0", "fp16", {"version_compatible": "true"}, ("fp16", True, ("VERSION_COMPATIBLE",), False)),
])
def test_build_plans(version: str, precision: str, opts: dict, expected: tuple) -> None:
    plan = trtexp.plan_build(version, trtexp.settings_from_options(opts, precision))
    assert (plan.source, plan.strongly_typed, plan.flags, plan.calibrator) == expected


@pytest.mark.parametrize("version, precision, opts, message", [
    ("8.4.3", "fp32", {}, "too old"),
    ("8.5.2", "fp16", {"version_compatible": "true"}, "need TensorRT >= 8.6"),
    ("10.3.0", "fp32", {"dla_core": 0}, "DLA runs fp16 or int8 only"),
    ("11.0.0", "fp16", {"dla_core": 0}, "does not support DLA"),
    ("11.0.0", "int8", {"int8_source": "calib"}, "no INT8 calibrators"),
])
def test_impossible_builds_are_refused(version: str, precision: str, opts: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        trtexp.plan_build(version, trtexp.settings_from_options(opts, precision))


def test_options_are_parsed_and_unknown_ones_refused() -> None:
    s = trtexp.settings_from_options({"batch": "1,2,4", "beam": "1,5,5", "profile.samples": "8000,16000,32000",
                                      "workspace": 512, "timing_cache": "false", "opset": 17}, "fp16")
    assert (s.batch, s.beam, s.axes["samples"], s.workspace_mib, s.timing_cache) == \
        ((1, 2, 4), (1, 5, 5), (8000, 16000, 32000), 512, False)
    with pytest.raises(InputError, match=r"unknown tensorrt export option\(s\) dla; valid: workspace"):
        trtexp.settings_from_options({"dla": 0}, "fp16")
    with pytest.raises(InputError, match="MIN,OPT,MAX"):
        trtexp.settings_from_options({"batch": "4,2,8"}, "fp16")


def test_profiles_rows_are_images_times_beams_and_dla_pins_shapes(fp32: dict[str, Path]) -> None:
    m = read_manifest(fp32["captioner"])
    ex = trtexp.example_shapes_from_vectors(fp32["captioner"] / "test_vectors.npz")
    s = trtexp.BuildSettings(batch=(1, 2, 4), beam=(1, 3, 5))
    step = trtexp.profile_shapes(m.pipeline, m.graph("decoder_step"), ex["decoder_step"], s)
    assert step["features"] == ((1, 196, 64), (6, 196, 64), (20, 196, 64)) and step["prev_word"][2] == (20,)
    enc = trtexp.profile_shapes(m.pipeline, m.graph("encoder"), ex["encoder"], s)
    assert enc["image"] == ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))
    s.dla_core = 0
    pinned = trtexp.profile_shapes(m.pipeline, m.graph("encoder"), ex["encoder"], s)
    assert pinned["image"] == ((2, 3, 64, 64),) * 3
    assert trtexp.trtexec_shapes(step)[0] == "features:1x196x64,att1:1x196x16,prev_word:1,h:1x24,c:1x24"
    sm = read_manifest(fp32["soundnet"])
    wave = trtexp.profile_shapes(sm.pipeline, sm.graphs[0], {"waveform": (2, 8000)}, trtexp.BuildSettings(),
                                 sm.preprocessing, sm.extra)["waveform"]
    assert wave[0] == (1, sm.extra["min_samples"]) and wave[1] == (1, 8000) and wave[2][1] >= 30 * 8000


# ------------------------------------------------------------------ exporter without TensorRT / GPU
def test_export_tensorrt_without_tensorrt_is_one_clear_error(tmp_path: Path) -> None:
    if trtrt.cuda_available():
        pytest.skip("TensorRT is installed here")
    req = registry.ExportRequest("soundnet", ["tensorrt"], "fp16", "tiny", out=tmp_path)
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmedge\[tensorrt\]'"):
        registry.export(req)
    assert not any(tmp_path.iterdir())


def test_export_tensorrt_without_a_gpu_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0"
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trtrt, "cuda_runtime", lambda *a: FakeCudart(devices=0))
    req = registry.ExportRequest("soundnet", ["tensorrt"], "fp16", "tiny", out=tmp_path)
    with pytest.raises(ExportError, match=r"no CUDA GPU found .*`mmedge package jetson"):
        registry.export(req)
    assert not any(tmp_path.iterdir())


def fake_builder_tensorrt(version: str, calls: list) -> types.ModuleType:
    """TensorRT's builder API, recording what mmedge asks of it (no GPU)."""
    ns = types.SimpleNamespace

    class TimingCache:
        def serialize(self) -> bytes:
            return b"timing-cache"

    class Config:
        int8_calibrator = None
        default_device_type = None
        DLA_core = None
        hardware_compatibility_level = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(("workspace", pool, size))

        def add_optimization_profile(self, profile: Any) -> None:
            calls.append(("profile",))

        def set_flag(self, flag: str) -> None:
            calls.append(("flag", flag))

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache()

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> None:
            calls.append(("timing_cache",))

        def get_timing_cache(self) -> TimingCache:
            return TimingCache()

        def set_calibration_profile(self, profile: Any) -> None:
            calls.append(("calibration_profile",))

    class Profile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            calls.append(("shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Parser:
        num_errors = 0

        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse", Path(path).name))
            return True

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Any:
            calls.append(("network", flags))
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Any, config: Config) -> bytes:
            calls.append(("build", config.default_device_type, config.DLA_core, config.int8_calibrator is not None))
            return b"fake-engine"

    class Calibrator:
        def __init__(self) -> None:
            pass

    class Logger:
        WARNING, ERROR = 2, 1

        def __init__(self, level: int) -> None:
            pass

    mod = types.ModuleType("tensorrt")
    mod.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    mod.__version__ = version
    mod.__dict__.update(
        Logger=Logger, Builder=Builder, OnnxParser=Parser, IInt8EntropyCalibrator2=Calibrator,
        NetworkDefinitionCreationFlag=ns(EXPLICIT_BATCH=0, STRONGLY_TYPED=5),
        BuilderFlag=ns(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK", VERSION_COMPATIBLE="VERSION_COMPATIBLE"),
        MemoryPoolType=ns(WORKSPACE="WORKSPACE"), DeviceType=ns(DLA="DLA"),
        HardwareCompatibilityLevel=ns(AMPERE_PLUS="AMPERE_PLUS"))
    return mod


def test_python_builder_export_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_builder_tensorrt("8.5.2.2", calls))
    monkeypatch.setattr(trtrt, "cuda_runtime", lambda *a: FakeCudart())
    opts = {"workspace": 256, "timing_cache": str(tmp_path / "timing.cache"), "batch": "1,2,4"}
    art = registry.export(registry.ExportRequest("captioner", ["tensorrt"], "fp16", "tiny", out=tmp_path,
                                                 options=opts)).artifacts[0]
    m = read_manifest(art)
    assert m.format == "tensorrt" and [g.file for g in m.graphs] == ["encoder.engine", "decoder_init.engine",
                                                                     "decoder_step.engine"]
    assert (art / "decoder_step.engine").read_bytes() == b"fake-engine"
    assert (tmp_path / "timing.cache").read_bytes() == b"timing-cache"
    record = json.loads((art / "tensorrt.json").read_text())
    assert record["tensorrt"] == "8.5.2.2" and record["gpu"] == {"name": "Fake Orin", "compute_capability": "8.7"}
    assert ("network", 1) in calls and ("parse", "decoder_step.onnx") in calls  # EXPLICIT_BATCH on 8.x
    assert ("workspace", "WORKSPACE", 256 << 20) in calls
    assert sorted({c[1] for c in calls if c[0] == "flag"}) == ["FP16"]
    assert ("shape", "prev_word", (1,), (6,), (20,)) in calls  # rows = batch x beam (1,3,5)
    assert check(art / "onnx" / "decoder_step.onnx") == []


@pytest.mark.parametrize("version, precision, network_flags, parsed, flags", [
    ("10.3.0.30", "fp32", 0, "decoder_step.onnx", []),
    ("10.3.0.30", "int8", 0, "decoder_step.onnx", ["FP16", "INT8"]),
    # strongly typed, fp16 graph (converted by ONNX Runtime's float16 tool)
    pytest.param("11.0.0.1", "fp16", 1 << 5, "decoder_step.fp16.onnx", [], marks=requires_ort),
])
def test_python_builder_calls_per_release(version: str, precision: str, network_flags: int, parsed: str,
                                          flags: list, fp32: dict[str, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_builder_tensorrt(version, calls))
    monkeypatch.setattr(trtrt, "cuda_runtime", lambda *a: FakeCudart())
    src = fp32["captioner"]
    m = read_manifest(src)
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for g in m.graphs:
        shutil.copyfile(src / g.file, onnx_dir / g.file)
    settings = trtexp.settings_from_options({"timing_cache": "false"}, precision)
    entries = trtexp.build_artifact_engines(m.graphs, onnx_dir, tmp_path, m,
                                            trtexp.example_shapes_from_vectors(src / "test_vectors.npz"), settings)
    assert [e.file for e in entries] == ["encoder.engine", "decoder_init.engine", "decoder_step.engine"]
    assert ("network", network_flags) in calls and ("parse", parsed) in calls
    assert sorted({c[1] for c in calls if c[0] == "flag"}) == flags
    assert json.loads((tmp_path / "tensorrt.json").read_text())["tensorrt"] == version


@requires_ort
def test_python_builder_int8_with_dla(fp32: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedge.calibration.data import gather
    from mmedge.calibration.recipes import QuantizeRequest, recipe

    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_builder_tensorrt("8.5.2.2", calls))
    monkeypatch.setattr(trtrt, "cuda_runtime", lambda *a: FakeCudart())
    pipe = load(fp32["captioner"])
    dest = tmp_path / "int8"
    dest.mkdir()
    entries = recipe("tensorrt")(QuantizeRequest(fp32["captioner"], pipe.manifest, gather(pipe, CalibSource(size=4)),
                                                 dest, QuantConfig(cache_dir=tmp_path / "c"),
                                                 options={"dla_core": 0, "timing_cache": "0"}))
    assert [e.file for e in entries] == ["encoder.engine", "decoder_init.engine", "decoder_step.engine"]
    parsed = [c[1] for c in calls if c[0] == "parse"]
    assert parsed == ["encoder.fp32.onnx", "decoder_init.onnx", "decoder_step.onnx"]  # DLA: cache; GPU: Q/DQ
    builds = [c for c in calls if c[0] == "build"]
    assert builds[0] == ("build", "DLA", 0, True) and builds[1][1:] == (None, None, False)
    assert trtcal.read_calibration_cache(dest / "onnx" / "encoder.trt.calib")[0] == "8.5.2"
    record = json.loads((dest / "tensorrt.json").read_text())
    assert record["graphs"]["encoder"]["dla_core"] == 0 and record["graphs"]["decoder_step"]["dla_core"] is None
    assert record["graphs"]["encoder"]["int8_source"] == "calib"


# ------------------------------------------------------------------ the Jetson bundle
def test_bundle_contents_and_manifest(bundle: Path, unpacked: Path) -> None:
    doc = json.loads((unpacked / "bundle.json").read_text())
    files = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert set(doc["files"]) == files - {"bundle.json"}
    assert {SCRIPT, "README.md", "artifacts/captioner-tiny-onnx-fp32/decoder_step.onnx",
            "artifacts/captioner-tiny-onnx-int8/decoder_step.calib", "artifacts/soundnet-tiny-onnx-int8/model.onnx",
            "artifacts/soundnet-tiny-onnx-fp32/test_vectors.npz"} <= files
    assert os.access(unpacked / SCRIPT, os.X_OK)
    names = [g["name"] for g in doc["groups"]]
    assert names == ["captioner-tiny", "soundnet-tiny"]
    assert doc["groups"][0]["graphs"]["decoder_step"]["opt"].startswith("features:3x196x64")
    assert any("prev_word" in n for n in doc["groups"][0]["notes"])
    for rel in ("artifacts/captioner-tiny-onnx-int8", "artifacts/soundnet-tiny-onnx-int8"):
        assert read_manifest(unpacked / rel).extra["int8_layout"] == "tensorrt"
    readme = (unpacked / "README.md").read_text()
    assert "pip install mmedge" in readme and "mmedge parity --artifact engines/" in readme
    assert verify_bundle(bundle) == bundle


def test_bundle_is_reproducible_and_written_atomically(fp32: dict[str, Path], int8: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    outs = [tmp_path / f"{i}.tar.gz" for i in range(2)]
    for out in outs:
        packager("jetson")(PackageRequest([fp32["captioner"], int8], out, {}))
    assert outs[0].read_bytes() == outs[1].read_bytes()
    real_open = tarfile.open

    def failing_open(*a: Any, **k: Any) -> Any:
        if k.get("mode") == "w":
            raise OSError("disk full")
        return real_open(*a, **k)

    monkeypatch.setattr(tarfile, "open", failing_open)
    with pytest.raises(OSError, match="disk full"):
        packager("jetson")(PackageRequest([fp32["captioner"], int8], tmp_path / "y.tar.gz", {}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.tar.gz", "1.tar.gz"]  # no partial file


def test_verify_catches_a_changed_file(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bundle) as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name.endswith("encoder.onnx"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    with pytest.raises(CheckFailedError, match="changed or missing"):
        verify_bundle(bad)


def test_bundle_refuses_what_tensorrt_cannot_use(fp32: dict[str, Path], int8: Path, work: Path,
                                                 tmp_path: Path) -> None:
    x86 = int8_export.export(registry.ExportRequest("soundnet", ["onnx"], "int8", "tiny", out=work / "x86",
                                                    calib=CalibSource(size=4),
                                                    quant=QuantConfig(cache_dir=work / "x86-cache"),
                                                    report=False)).artifacts[0]
    with pytest.raises(InputError, match="x86 layout"):
        packager("jetson")(PackageRequest([fp32["soundnet"], x86], tmp_path / "b.tar.gz", {}))
    with pytest.raises(InputError, match="without its fp32 artifact"):
        packager("jetson")(PackageRequest([int8], tmp_path / "b.tar.gz", {}))
    with pytest.raises(InputError, match=r"\.tar\.gz archive"):
        packager("jetson")(PackageRequest([fp32["soundnet"]], tmp_path / "b.zip", {}))
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ build_engines.sh
def test_build_script_passes_shellcheck(unpacked: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    res = subprocess.run(["shellcheck", "--severity=style", str(unpacked / SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


FAKE_TRTEXEC = """#!/usr/bin/env bash
if [[ "${1:-}" == --help ]]; then
  echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_TRT_INT:-8502}] # trtexec --help"
  exit 0
fi
printf '%s\\x1f' "$@" >>"$FAKE_LOG"
printf '\\n' >>"$FAKE_LOG"
for a in "$@"; do
  case "$a" in --saveEngine=*) echo fake-engine >"${a#--saveEngine=}" ;; esac
done
"""


def run_script(unpacked: Path, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    full = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "FAKE_LOG": str(log), "OUT": str(tmp_path / "engines"),
            "PYTHON": "false", "HOME": str(tmp_path), **env}
    res = subprocess.run(["bash", str(unpacked / SCRIPT)], capture_output=True, text=True, env=full, timeout=60)
    calls = [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]
    return res, calls


def _flags(call: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) if "=" in a else (a, "") for a in call)


def test_script_for_tensorrt_8_5_detected_from_trtexec(unpacked: Path, tmp_path: Path) -> None:
    res, calls = run_script(unpacked, tmp_path, FAKE_TRT_INT="8502")
    assert res.returncode == 0, res.stderr
    assert "TensorRT 8.5.2" in res.stderr
    assert len(calls) == 3 * 4  # fp32, fp16, int8 x (3 captioner graphs + soundnet)
    by = {(Path(_flags(c)["--saveEngine"]).parent.name, Path(_flags(c)["--saveEngine"]).stem): _flags(c)
          for c in calls}
    fp16 = by[("captioner-tiny-tensorrt-fp16", "decoder_step")]
    assert "--fp16" in fp16 and "--int8" not in fp16 and "--buildOnly" in fp16 and "--stronglyTyped" not in fp16
    assert fp16["--onnx"].endswith("artifacts/captioner-tiny-onnx-fp32/decoder_step.onnx")
    assert fp16["--optShapes"] == "features:3x196x64,att1:3x196x16,prev_word:3,h:3x24,c:3x24"
    assert fp16["--memPoolSize"] == "workspace:1024" and fp16["--timingCacheFile"].endswith("timing.cache")
    i8 = by[("soundnet-tiny-tensorrt-int8", "model")]
    assert "--int8" in i8 and "--fp16" in i8 and "--calib" not in i8
    assert i8["--onnx"].endswith("artifacts/soundnet-tiny-onnx-int8/model.onnx")
    assert "--fp16" not in by[("captioner-tiny-tensorrt-fp32", "encoder")]
    assert "install the mmedge runtime" in res.stderr  # PYTHON=false: engines only, no artifact


def test_script_for_tensorrt_10_3_writes_artifacts(unpacked: Path, tmp_path: Path) -> None:
    res, calls = run_script(unpacked, tmp_path, TRT_VERSION="10.3", FAKE_TRT_INT="999", PRECISIONS="fp16 int8",
                            PYTHON=sys.executable, PYTHONPATH=os.pathsep.join(sys.path))
    assert res.returncode == 0, res.stderr
    assert "TensorRT 10.3" in res.stderr and len(calls) == 2 * 4
    assert all("--skipInference" in c and "--buildOnly" not in c for c in calls)
    art = tmp_path / "engines" / "captioner-tiny-tensorrt-int8"
    m = read_manifest(art)
    assert m.format == "tensorrt" and m.precision == "int8" and [g.file for g in m.graphs] == \
        ["encoder.engine", "decoder_init.engine", "decoder_step.engine"]
    record = json.loads((art / "tensorrt.json").read_text())
    assert record["tensorrt"] == "10.3" and record["int8_source"] == "qdq" and record["built_with"] == "trtexec"
    assert (art / "test_vectors.npz").is_file() and "int8_layout" not in m.extra
    assert "mmedge parity --artifact" in res.stderr


def test_script_for_dla_uses_the_calibration_cache_and_static_shapes(unpacked: Path, tmp_path: Path) -> None:
    res, calls = run_script(unpacked, tmp_path, TRT_VERSION="10.3.0", DLA_CORE="1", DLA_COUNT="2",
                            PRECISIONS="fp32 int8", PYTHON=sys.executable, PYTHONPATH=os.pathsep.join(sys.path))
    assert res.returncode == 0, res.stderr
    by = {Path(_flags(c)["--saveEngine"]).parent.name + "/" + Path(_flags(c)["--saveEngine"]).stem: _flags(c)
          for c in calls}
    i8 = by["captioner-tiny-tensorrt-int8-dla1/encoder"]
    assert i8["--useDLACore"] == "1" and "--allowGPUFallback" in i8
    assert i8["--minShapes"] == i8["--optShapes"] == i8["--maxShapes"] == "image:1x3x64x64"
    assert i8["--onnx"].endswith("captioner-tiny-onnx-fp32/encoder.onnx")  # implicit quantization
    cache = Path(i8["--calib"])
    assert cache.read_text().splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert trtcal.read_calibration_cache(cache)[2] == trtcal.read_calibration_cache(
        unpacked / "artifacts/captioner-tiny-onnx-int8/encoder.calib")[2]
    fp32 = by["captioner-tiny-tensorrt-fp32/encoder"]  # DLA has no fp32: GPU build, dynamic shapes
    assert "--useDLACore" not in fp32 and fp32["--maxShapes"] == "image:8x3x64x64"
    step = by["captioner-tiny-tensorrt-int8-dla1/decoder_step"]  # rows change every step: GPU, Q/DQ
    assert "--useDLACore" not in step and "--calib" not in step and step["--maxShapes"].startswith("features:40x")
    assert step["--onnx"].endswith("captioner-tiny-onnx-int8/decoder_step.onnx")
    record = json.loads((tmp_path / "engines/captioner-tiny-tensorrt-int8-dla1/tensorrt.json").read_text())
    assert record["dla_core"] == 1 and record["graphs"] == {"encoder": {"dla_core": 1},
                                                            "decoder_init": {"dla_core": None},
                                                            "decoder_step": {"dla_core": None}}


def test_script_for_tensorrt_11_is_strongly_typed(unpacked: Path, tmp_path: Path) -> None:
    res, calls = run_script(unpacked, tmp_path, FAKE_TRT_INT="110000")
    assert res.returncode == 0, res.stderr
    assert "TensorRT 11.0.0" in res.stderr
    assert len(calls) == 3 * 4  # fp16 from the bundle's strongly typed fp16 graphs
    for c in calls:
        f = _flags(c)
        assert "--stronglyTyped" in f and not {"--int8", "--fp16", "--calib"} & set(f)
    int8 = [_flags(c) for c in calls if "-int8" in _flags(c)["--saveEngine"]]
    assert int8 and all("-onnx-int8/" in f["--onnx"] for f in int8)
    fp16 = [_flags(c) for c in calls if "-fp16" in _flags(c)["--saveEngine"]]
    assert len(fp16) == 4 and all(Path(f["--onnx"]).is_file() and "/fp16/" in f["--onnx"] for f in fp16)
    model = onnx.load(fp16[0]["--onnx"])
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # fp32 I/O, Casts inside
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    res, _ = run_script(unpacked, tmp_path, TRT_VERSION="11.0", DLA_CORE="0")
    assert res.returncode != 0 and "does not support DLA" in res.stderr


def test_script_refuses_old_or_unknown_tensorrt(unpacked: Path, tmp_path: Path) -> None:
    res, calls = run_script(unpacked, tmp_path, TRT_VERSION="8.2")
    assert res.returncode != 0 and "too old" in res.stderr and not calls
    res, _ = run_script(unpacked, tmp_path, TRT_VERSION="ten")
    assert res.returncode != 0 and "not a version" in res.stderr


# ------------------------------------------------------------------ runtime session (fake TensorRT / CUDA)
# FakeCudart, fake_tensorrt (its `nptype` raises as TensorRT 8.5's does under numpy >= 1.24), the
# fake_gpu fixture and the specs are shared with the torch-free tests/test_tensorrt_session.py
from trt_fakes import SPECS_IN, SPECS_OUT, FakeCudart, fake_gpu, fake_tensorrt  # noqa: E402,F401 - fake_gpu: a fixture


def test_session_binds_once_casts_int64_and_checks_profiles(fake_gpu: tuple[FakeCudart, Path]) -> None:
    cudart, engine = fake_gpu
    sess = trtrt.TrtSession(engine, SPECS_IN, SPECS_OUT)
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)
    sess.bind("feats", feats)
    bound_ptr = cudart.h2d[-1]
    for step in range(3):
        word = np.array([1, 2, step], np.int64)
        h = np.full((3, 2), step, np.float32)
        out = sess.run({"prev_word": word, "h": h})
        np.testing.assert_array_equal(out["out"], feats * word[:, None] + 2 * step)
        assert out["word"].dtype == np.int64 and out["word"].tolist() == (word + 1).tolist()
    assert cudart.h2d.count(bound_ptr) == 1  # features uploaded once, not per step
    with pytest.raises(InputError, match="values outside int32"):
        sess.run({"prev_word": np.array([2**40, 0, 0], np.int64), "h": np.zeros((3, 2), np.float32)})
    with pytest.raises(InputError, match=r"outside the engine's optimization profile \(min \[1, 4\], max \[6, 4\]\)"):
        sess.bind("feats", np.zeros((7, 4), np.float32))
    sess.unbind("feats")
    with pytest.raises(InputError, match="missing input"):
        sess.run({"prev_word": np.zeros(3, np.int64), "h": np.zeros((3, 2), np.float32)})
    sess.close()
    assert not cudart.mem


@pytest.mark.parametrize("record, message", [
    ({"tensorrt": "10.3.0", "gpu": {"name": "Fake Orin", "compute_capability": "8.7"}},
     "built with TensorRT 10.3.0 on Fake Orin .* cannot run with TensorRT 8.5.2.2 .* rebuild the engine on this device"),
    ({"tensorrt": "8.5.2", "gpu": {"name": "Xavier", "compute_capability": "7.2"}},
     "do not move across GPU architectures; rebuild the engine on this device"),
])
def test_engine_from_elsewhere_says_rebuild(record: dict, message: str, fake_gpu: tuple[FakeCudart, Path]) -> None:
    _, engine = fake_gpu
    (engine.parent / "tensorrt.json").write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match=message):
        trtrt.TrtSession(engine, SPECS_IN, SPECS_OUT)


def test_undeserializable_engine_says_rebuild(fake_gpu: tuple[FakeCudart, Path]) -> None:
    _, engine = fake_gpu
    engine.write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="cannot deserialize this engine .* rebuild the engine on this device"):
        trtrt.TrtSession(engine, SPECS_IN, SPECS_OUT)


def test_compatibility_rules() -> None:
    gpu = trtrt.GpuInfo("NVIDIA H100", "9.0")
    rec = {"tensorrt": "10.1.0", "gpu": {"name": "NVIDIA A100", "compute_capability": "8.0"}}
    assert "GPU architectures" in trtrt.compatibility_problem(rec, "10.1.0.27", gpu)
    assert trtrt.compatibility_problem({**rec, "hardware_compatibility": "ampere+"}, "10.1.0", gpu) is None
    assert trtrt.compatibility_problem({**rec, "hardware_compatibility": "ampere+", "version_compatible": True},
                                       "10.4.0", gpu) is None
    assert "TensorRT 10.x >= 10.1.0" in trtrt.compatibility_problem(
        {**rec, "hardware_compatibility": "ampere+", "version_compatible": True}, "10.0.1", gpu)
    assert trtrt.compatibility_problem({"tensorrt": "10.3", "gpu": {"compute_capability": "unknown"}},
                                       "10.3.0.30", gpu) is None


# ------------------------------------------------------------------ real engines (GPU + TensorRT)
# fp32 engine parity, beam search and the error contract on engines: tests/test_conformance.py
@requires_cuda
@pytest.mark.requires_cuda
@pytest.mark.parametrize("model, precision", [("soundnet", "fp16"), ("captioner", "fp16"), ("refocus", "fp16")])
def test_engine_parity(model: str, precision: str, tmp_path: Path) -> None:
    art = registry.export(registry.ExportRequest(model, ["tensorrt"], precision, "tiny", out=tmp_path,
                                                 options={"timing_cache": str(tmp_path / "t.cache")})).artifacts[0]
    m = read_manifest(art)
    rec = json.loads((art / "tensorrt.json").read_text())
    assert m.format == "tensorrt" and rec["gpu"]["compute_capability"] and rec["tensorrt"]
    report = parity(load(art))
    assert report.ok, [o for o in report.outputs if not o.ok]


@requires_cuda
@pytest.mark.requires_cuda
def test_int8_engine_parity_and_caption(tmp_path: Path) -> None:
    req = registry.ExportRequest("captioner", ["tensorrt"], "int8", "tiny", out=tmp_path, calib=CalibSource(size=8),
                                 quant=QuantConfig(cache_dir=tmp_path / "cache"), report=False)
    art = int8_export.export(req).artifacts[0]
    assert (art / "onnx" / "encoder.calib").is_file()
    assert parity(load(art)).ok
    image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    assert load(art).caption([image], beam=3, max_len=10)[0].tokens is not None


@requires_cuda
@pytest.mark.requires_cuda
def test_engine_record_mismatch_fails_clearly_on_a_real_gpu(tmp_path: Path) -> None:
    art = registry.export(registry.ExportRequest("voice-encoder", ["tensorrt"], "fp32", "tiny",
                                                 out=tmp_path)).artifacts[0]
    rec = json.loads((art / "tensorrt.json").read_text())
    rec["tensorrt"] = "8.5.2"
    (art / "tensorrt.json").write_text(json.dumps(rec))
    m = read_manifest(art, verify=False)
    g: GraphEntry = m.graphs[0]
    with pytest.raises(ArtifactError, match="rebuild the engine on this device"):
        trtrt.TrtSession(art / g.file, g.inputs, g.outputs)
