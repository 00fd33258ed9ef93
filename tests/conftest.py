"""Shared fixtures; puts tests/golden on sys.path for `make_golden`.

The tiny ONNX artifacts that many modules need are exported once per test session here
(exporting the four models takes ~15 s on 2 cores). They are shared: a test that changes
an artifact copies it first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))


@pytest.fixture(scope="session")
def golden_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 ONNX artifacts of the goldens' reference models (`make_golden.reference_model`)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import make_golden
    from mmedge.export.registry import ExportContext, export_context
    from mmedge.models import zoo

    out = tmp_path_factory.mktemp("golden-onnx")
    arts = {}
    for name in zoo.names():
        spec, model = zoo.get(name), make_golden.reference_model(name)
        ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, "fp32", getattr(model, "vocab", None))
        arts[name] = export_context(ctx, ["onnx"], out)[0]
    return arts


@pytest.fixture(scope="session")
def cli_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What `mmedge export NAME --format onnx --out DIR` writes (tiny config, seeded weights)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from mmedge.cli import run
    from mmedge.models import zoo

    out = tmp_path_factory.mktemp("cli-onnx")
    arts = {}
    for name in zoo.names():
        assert run(["export", name, "--format", "onnx", "--config", "tiny", "--out", str(out)]) == 0
        arts[name] = out / f"{name}-tiny-onnx-fp32"
    return arts
