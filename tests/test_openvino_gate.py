"""The OpenVINO int8 output check (calibration/openvino.py `repair`) runs only for the OpenVINO
releases known to need it (issue 17, item 8): upstream openvinotoolkit/openvino#37577 names
2026.1-2026.3, 2026.4.1 was measured; other releases skip it. No OpenVINO needed: the quantizer
is replaced by stand-ins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mmedge.calibration import openvino as recipe
from mmedge.calibration.recipes import QuantConfig


@pytest.mark.parametrize("version, release, checked", [
    ("2026.4.1-22982-e213a147257-releases/2026/4", (2026, 4), True),
    ("2026.1.0", (2026, 1), True),
    ("2026.3.0", (2026, 3), True),
    ("2025.4.1", (2025, 4), False),  # before the first release #37577 names: not known to need it
    ("2024.4.0", (2024, 4), False),
    ("2026.5.0", (2026, 5), False),  # newer than measured: re-measure before widening the range
    ("2027.0.0.dev20270101", (2027, 0), False),
    ("nightly", None, False),
])
def test_the_output_check_is_gated_on_the_release(version: str, release: Any, checked: bool) -> None:
    assert recipe.openvino_release(version) == release
    assert recipe.needs_output_check(version) is checked


@pytest.mark.parametrize("version, repaired", [("2026.4.1", True), ("2026.5.0", False), ("2025.4.0", False)])
def test_quantize_checked_repairs_only_where_needed(version: str, repaired: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(recipe, "openvino_release", lambda v=None: _parse(version))  # "installed": `version`
    monkeypatch.setattr(recipe, "read_onnx", lambda path: f"float {Path(path).name}")
    monkeypatch.setattr(recipe, "quantize_model", lambda model, feeds, cfg, decoder, ops: "int8")

    def repair(fp32: Any, int8: Any, feeds: Any, graph: str) -> tuple[Any, list[str]]:
        calls.append(graph)
        return "repaired", []

    monkeypatch.setattr(recipe, "repair", repair)
    out = recipe.quantize_checked(Path("m.onnx"), [], QuantConfig(), False, None, "encoder")
    assert (out, calls) == (("repaired", ["encoder"]) if repaired else ("int8", []))
    # weight-only decoders have no activation quantizers: never checked
    calls.clear()
    assert recipe.quantize_checked(Path("m.onnx"), [], QuantConfig(dynamic_decoder=True), True, None, "d") == "int8"
    assert calls == []


def _parse(version: str) -> Any:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)
