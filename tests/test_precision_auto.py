"""`mmedge export --precision auto`: the precision mix chosen for each real CPU (tests/fixtures/cpuinfo),
the requests it becomes, and the export recording its choice in the manifest."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from mmedge.errors import InputError
from mmedge.export.precision_policy import (CAPTIONER, DEVICE, MODEL_FP32, MODEL_INT8, SMALL, choose, cpu_family,
                                            plan)
from mmedge.runtime.cpu_features import FAMILIES, CpuFeatures, from_cpuinfo

CPUINFO = Path(__file__).parent / "fixtures" / "cpuinfo"
ORIN_BOARD = "NVIDIA Jetson AGX Orin Developer Kit"

ORT_INT8 = ("int8", "int8", "int8", ())
OV_INT8_WO = ("int8", "int8", "int8-weights", ())
ORT_INT8_WO = ("int8", "int8", "int8-weights", ())  # measured fastest ONNX Runtime build on AVX2, AVX-512 VNNI, AMX
OV_F16 = ("fp16", "fp16", "fp16", (("precision", "f16"),))
FP32 = ("fp32", "fp32", "fp32", ())

# fixture -> (family for the CPU formats, onnx mix, openvino mix) for the full captioner;
# a mix is (--precision, encoder, decoder, session options)
EXPECTED = {
    "amd-epyc-zen3-kvm": ("x86-avx2", ORT_INT8_WO, OV_INT8_WO),
    "intel-xeon-e5-2680v3-haswell": ("x86-avx2", ORT_INT8_WO, OV_INT8_WO),
    "intel-xeon-8480-sapphire-rapids": ("x86-amx", ORT_INT8_WO, OV_INT8_WO),
    "amd-epyc-9654-zen4": ("x86-avx512-bf16", ORT_INT8_WO, OV_INT8_WO),
    "intel-xeon-8260m-cascade-lake": ("x86-avx512-vnni", ORT_INT8_WO, OV_INT8_WO),
    "intel-core-ultra9-285-arrow-lake": ("x86-avx2-vnni", ORT_INT8_WO, OV_INT8_WO),
    "intel-xeon-6132-skylake": ("x86-avx512", ORT_INT8_WO, OV_INT8_WO),
    "aws-graviton3-neoverse-v1": ("arm64-i8mm", ORT_INT8, OV_F16),
    "arm-neoverse-v2": ("arm64-i8mm", ORT_INT8, OV_F16),
    "aws-graviton2-neoverse-n1": ("arm64-dotprod", ORT_INT8, OV_F16),
    "aws-graviton1-cortex-a72": ("arm64", FP32, FP32),  # no dot products, no fp16 arithmetic
    "jetson-agx-orin-cortex-a78ae": ("arm64-dotprod", ORT_INT8, OV_F16),  # its Arm cores run the CPU formats
}


def cpu(name: str) -> CpuFeatures:
    text = (CPUINFO / f"{name}.txt").read_text()
    return from_cpuinfo(text, board=ORIN_BOARD if name.startswith("jetson") else None)


def mix(choice) -> tuple:
    r = choice.rule
    return (r.precision, r.encoder, r.decoder, r.session)


def test_every_fixture_cpu_has_an_expected_choice() -> None:
    assert {p.stem for p in CPUINFO.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_full_captioner_choice_per_cpu(name: str) -> None:
    family, onnx, openvino = EXPECTED[name]
    c = cpu(name)
    assert cpu_family(c) == family
    got = {fmt: choose(c, fmt, "captioner", "full") for fmt in ("onnx", "openvino", "coreml", "tensorrt")}
    assert (mix(got["onnx"]), mix(got["openvino"])) == (onnx, openvino)
    assert mix(got["coreml"])[0] == mix(got["tensorrt"])[0] == "fp16"  # the device's precision, not the CPU's
    assert got["onnx"].family == family and got["tensorrt"].family == c.family
    # a tutorial checkpoint is the full-size model: the same choice
    assert mix(choose(c, "onnx", "captioner", "checkpoint")) == onnx
    line = got["openvino"].line()
    assert line.startswith(f"--precision auto for openvino on {family}: {openvino[0]}") and "\n" not in line
    assert ("-O precision=f16" in line) == (openvino == OV_F16)


def test_jetson_is_recognised_and_keeps_its_gpu_rules() -> None:
    c = cpu("jetson-agx-orin-cortex-a78ae")
    assert c.family == "jetson"
    trt = choose(c, "tensorrt")
    assert (trt.family, trt.rule) == ("jetson", DEVICE["tensorrt"])


@pytest.mark.parametrize("config", ["tiny", "demo"])
def test_small_captioners_stay_fp32_even_with_amx(config: str) -> None:
    amx = cpu("intel-xeon-8480-sapphire-rapids")
    for fmt in ("onnx", "openvino"):
        c = choose(amx, fmt, "captioner", config)
        assert (c.rule, c.source) == (SMALL, "small model")


@pytest.mark.parametrize("model, fixture, onnx, openvino", [
    ("soundnet", "intel-xeon-8260m-cascade-lake", "int8", "int8"),
    ("soundnet", "amd-epyc-zen3-kvm", "fp32", "fp32"),  # its gain was measured with VNNI only
    ("voice-encoder", "intel-xeon-8480-sapphire-rapids", "fp32", "fp32"),
    ("refocus", "amd-epyc-9654-zen4", "fp32", "int8"),
    ("refocus", "aws-graviton2-neoverse-n1", "fp32", "fp16"),
    ("soundnet", "aws-graviton1-cortex-a72", "fp32", "fp32"),
])
def test_single_graph_models(model: str, fixture: str, onnx: str, openvino: str) -> None:
    c = cpu(fixture)
    got = (choose(c, "onnx", model, "demo"), choose(c, "openvino", model, "demo"))
    assert tuple(x.precision for x in got) == (onnx, openvino)
    assert all(x.rule.decoder is None for x in got)
    assert "decoder" not in got[0].line()
    for x in got:  # fp32 says why: no measured gain, or a gain measured with instructions this CPU lacks
        if x.format == "openvino" and c.is_arm64:  # the Arm OpenVINO rule, as for the captioner
            assert x.rule.reason == CAPTIONER[x.family]["openvino"].reason or "asimdhp" in x.rule.reason
        elif x.precision == "fp32" and x.format in MODEL_INT8.get(model, {}):
            assert x.rule.reason.startswith("no int8 dot products on this CPU")
        elif x.precision == "fp32":
            assert x.rule.reason == MODEL_FP32[model]


def test_the_table_is_complete_and_every_row_says_why() -> None:
    for family in FAMILIES:
        if family == "jetson":  # a board, not a CPU family: its cores' family is looked up
            continue
        for fmt in ("onnx", "openvino"):
            rule = CAPTIONER[family][fmt]
            assert rule.reason and "\n" not in rule.reason
            assert rule.precision in ("fp32", "fp16", "int8")
            assert rule.decoder in ("fp32", "fp16", "int8", "int8-weights")
            assert rule.dynamic_decoder == (rule.decoder == "int8-weights")


def test_a_format_without_a_rule_is_refused() -> None:
    with pytest.raises(InputError, match="no rule for --format tflite"):
        choose(cpu("amd-epyc-zen3-kvm"), "tflite")


def test_plan_groups_what_one_export_can_carry() -> None:
    groups = plan(cpu("intel-xeon-8480-sapphire-rapids"), ["onnx", "openvino", "coreml", "tensorrt", "onnx"])
    assert [(key, [c.format for c in cs]) for key, cs in groups] == [
        (("int8", True), ["onnx", "openvino"]), (("fp16", False), ["coreml", "tensorrt"])]
    arm = plan(cpu("aws-graviton3-neoverse-v1"), ["onnx", "openvino"])  # static int8 and fp16: two exports
    assert [(key, [c.format for c in cs]) for key, cs in arm] == [(("int8", False), ["onnx"]),
                                                                 (("fp16", False), ["openvino"])]


def test_auto_requests_carry_quant_settings_and_the_manifest_record() -> None:
    pytest.importorskip("torch")
    from mmedge.calibration.data import CalibSource
    from mmedge.calibration.recipes import QuantConfig
    from mmedge.export.precision_policy import auto_requests
    from mmedge.export.registry import ExportRequest

    amx = cpu("intel-xeon-8480-sapphire-rapids")
    req = ExportRequest("captioner", ["onnx", "openvino", "tensorrt"], "auto", "full",
                        calib=CalibSource(None, 8), quant=QuantConfig(method="entropy"))
    subs = auto_requests(req, amx)
    assert [(s.formats, s.precision) for s, _ in subs] == [(["onnx", "openvino"], "int8"), (["tensorrt"], "fp16")]
    ov, trt = (s for s, _ in subs)  # one int8 export carries both formats: the same mix
    assert ov.quant.dynamic_decoder is True
    assert ov.quant.method == "entropy" and ov.calib == req.calib  # the user's settings are kept
    assert trt.calib is None and trt.quant is None
    rec = ov.manifest_extra["openvino"]["precision_policy"]
    assert (rec["requested"], rec["family"], rec["decoder"], rec["cpu"]["model"]) == (
        "auto", "x86-amx", "int8-weights", "Intel(R) Xeon(R) Platinum 8480+")
    assert set(ov.manifest_extra) == {"onnx", "openvino"}  # each format's artifact records its own rule
    # a user's --dynamic-decoder stays on where the policy would not ask for it
    arm = cpu("aws-graviton3-neoverse-v1")  # static int8 decoder by the policy there
    user = auto_requests(ExportRequest("captioner", ["onnx"], "auto", "full", calib=CalibSource(None, 8),
                                       quant=QuantConfig(dynamic_decoder=True)), arm)
    assert user[0][0].quant.dynamic_decoder is True


# ------------------------------------------------------------------ the command
def _cli():
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from mmedge.cli import app

    runner = CliRunner(mix_stderr=False) if "mix_stderr" in inspect.signature(CliRunner).parameters else CliRunner()
    return runner, app


def test_cli_auto_exports_and_records_the_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the machine running the tests: the export follows choose(detect()) and records it."""
    runner, app = _cli()
    from mmedge.runtime.cpu_features import detect

    want = choose(detect(), "onnx", "soundnet", "tiny")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = runner.invoke(app, ["export", "soundnet", "--config", "tiny", "--format", "onnx", "--precision", "auto",
                              "--calib-size", "8", "--no-report", "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    (art,) = doc["artifacts"]
    assert art.endswith(f"soundnet-tiny-onnx-{want.precision}")
    (choice,) = doc["precision_auto"]
    assert (choice["format"], choice["precision"], choice["reason"]) == ("onnx", want.precision, want.rule.reason)
    assert choice["cpu"]["model"] == detect().model
    assert want.line() in res.stderr
    manifest = json.loads((Path(art) / "manifest.json").read_text())
    assert manifest["precision"] == want.precision
    assert manifest["extra"]["precision_policy"]["family"] == want.family
    assert manifest["extra"]["test_vectors"] == "test_vectors.npz"  # the usual extras are kept


def test_cli_auto_int8_on_a_vnni_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The detected CPU decides: on a (faked) Cascade Lake the SoundNet ONNX build is int8."""
    runner, app = _cli()
    import mmedge.runtime.cpu_features as cf

    monkeypatch.setattr(cf, "detect", lambda root="/": cpu("intel-xeon-8260m-cascade-lake"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = runner.invoke(app, ["export", "soundnet", "--config", "tiny", "--format", "onnx", "--precision", "auto",
                              "--calib-size", "8", "--no-report", "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    (art,) = doc["artifacts"]
    manifest = json.loads((Path(art) / "manifest.json").read_text())
    assert (manifest["precision"], manifest["extra"]["precision_policy"]["family"]) == ("int8", "x86-avx512-vnni")
    assert manifest["extra"]["calibration"]["method"] == "minmax"
    assert "x86-avx512-vnni" in res.stderr


def test_cli_an_unknown_precision_is_still_refused_before_any_work(tmp_path: Path) -> None:
    runner, app = _cli()
    res = runner.invoke(app, ["export", "captioner", "--config", "tiny", "--format", "onnx", "--precision", "fp8",
                              "--out", str(tmp_path)])
    assert res.exit_code == 2 and "fp8" in res.stderr and not any(tmp_path.iterdir())
