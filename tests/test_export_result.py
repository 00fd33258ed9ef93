"""Results travel as return values (DESIGN.md, "Layers"): exports return an ExportResult, int8
(calibration's job) is reached through mmedge.calibration.int8_export, every recipe takes one
QuantizeRequest, and the Jetson packager's int8 step is passed in from the calibration layer."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from mmedge.calibration.data import CalibSource
from mmedge.calibration.recipes import QuantConfig, QuantizeRequest
from mmedge.errors import ExportError, InputError
from mmedge.export import registry
from mmedge.export.package import PackageRequest, packager
from mmedge.export.registry import ExportRequest, ExportResult

CPUINFO = Path(__file__).parent / "fixtures" / "cpuinfo"


def test_the_registry_exports_fp32_and_fp16_only(tmp_path: Path) -> None:
    req = ExportRequest("soundnet", ["onnx"], "int8", "tiny", out=tmp_path / "out")
    with pytest.raises(ExportError, match=r"mmedge\.calibration\.int8_export\.export"):
        registry.export(req)
    assert not (tmp_path / "out").exists()


def test_int8_export_returns_its_reports_and_gives_recipes_one_request(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from mmedge.calibration import int8_export
    from mmedge.calibration.recipes import recipe

    seen: list[QuantizeRequest] = []

    def recording(fmt: str) -> Any:
        real = recipe(fmt)
        return lambda req: seen.append(req) or real(req)

    monkeypatch.setattr(int8_export, "recipe", recording)
    req = ExportRequest("soundnet", ["onnx"], "int8", "tiny", out=tmp_path, calib=CalibSource(None, 4),
                        quant=QuantConfig(cache_dir=tmp_path / "cache"), options={"opset": 17})
    res = int8_export.export(req)
    assert isinstance(res, ExportResult) and res.artifacts == [tmp_path / "soundnet-tiny-onnx-int8"]
    (rep,) = res.reports
    assert rep.int8 == str(res.artifacts[0])
    (q,) = seen
    assert isinstance(q, QuantizeRequest) and dict(q.options) == {"opset": 17} and q.ctx is not None
    assert q.manifest.precision == "fp32" and q.cfg.cache_dir == tmp_path / "cache"
    again = int8_export.export(ExportRequest("soundnet", ["onnx"], "int8", "tiny", out=tmp_path / "b",
                                             calib=CalibSource(None, 4), quant=QuantConfig(cache_dir=tmp_path / "c"),
                                             report=False))
    assert again.reports == [] and len(res.reports) == 1  # each call owns its result


@pytest.mark.parametrize("module, name", [("onnxruntime", "quantize_onnx_artifact"),
                                          ("openvino", "quantize_openvino_artifact"),
                                          ("coreml", "quantize_coreml"), ("tensorrt", "tensorrt_recipe")])
def test_every_recipe_takes_one_quantize_request(module: str, name: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(f"mmedge.calibration.{module}")
    except ImportError as e:
        pytest.skip(f"mmedge.calibration.{module} needs {e.name}")
    params = list(inspect.signature(getattr(mod, name)).parameters.values())
    assert [p.annotation for p in params] == ["QuantizeRequest"], name


def test_auto_takes_reports_from_the_export_it_is_given() -> None:
    from mmedge.export.precision_policy import export_auto
    from mmedge.runtime.cpu_features import from_cpuinfo

    vnni = from_cpuinfo((CPUINFO / "intel-xeon-8260m-cascade-lake.txt").read_text())
    got: list[ExportRequest] = []

    def fake(req: ExportRequest, log: Any = None) -> ExportResult:
        got.append(req)
        return ExportResult([Path(f"art-{req.precision}")], [f"report-{req.precision}"])

    res = export_auto(ExportRequest("soundnet", ["onnx"], "auto", "tiny", calib=CalibSource(None, 8),
                                    quant=QuantConfig()), vnni, fake)
    assert [r.precision for r in got] == ["int8"]
    assert res.dirs == [Path("art-int8")] and res.reports == ["report-int8"]


def test_jetson_packager_without_a_quantize_step_refuses_before_any_work(cli_onnx: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    with pytest.raises(InputError, match=r"mmedge\.calibration\.packaging\.package"):
        packager("jetson")(PackageRequest([cli_onnx["soundnet"]], out, {"log": lambda s: None}))
    assert not any(tmp_path.iterdir())


def test_calibration_packaging_passes_the_quantize_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mmedge.calibration import packaging

    calls: list[tuple[str, PackageRequest]] = []
    monkeypatch.setattr(packaging, "packager", lambda target: lambda req: calls.append((target, req)) or req.out)
    calib = CalibSource(None, 8)
    packaging.package("jetson", PackageRequest([], tmp_path / "b.tar.gz", {"calib": calib}))
    packaging.package("jetson", PackageRequest([], tmp_path / "b.tar.gz", {"verify": tmp_path / "b.tar.gz"}))
    packaging.package("mobile", PackageRequest([], tmp_path / "a.zip", {}))
    assert callable(calls[0][1].options["quantize"]) and calls[0][1].options["calib"] is calib
    assert "quantize" not in calls[1][1].options and "quantize" not in calls[2][1].options
