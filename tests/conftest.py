"""Shared fixtures; puts tests/golden on sys.path for `make_golden`.

The tiny ONNX artifacts that many modules need are exported once per test session here
(exporting the four models takes ~15 s on 2 cores), and so are the goldens' artifacts of the
other formats (`golden_artifact`, on first use). They are shared: a test that changes an
artifact copies it first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))

# mmedge's caches (calibration ranges, ONNX Runtime's optimized graphs, TensorRT timing) go to a
# folder of this test run, not the user's ~/.cache (subprocesses inherit it)
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mmedge-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)


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
        arts[name] = export_context(ctx, ["onnx"], out).artifacts[0]
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


# Export options that make a format's artifact take the goldens' inputs as they are stored.
GOLDEN_EXPORT_OPTIONS: dict[str, dict[str, Any]] = {
    # Core ML: a float tensor encoder input (the goldens' images are random floats, not 8-bit
    # pictures a pixel buffer could hold) and 4 images per decoder call (the goldens' beam batch)
    "coreml": {"encoder_input": "tensor", "max_images": 4},
}


@pytest.fixture(scope="session")
def golden_artifact(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """`golden_artifact(fmt, name)`: the fp32 artifact of the goldens' reference model `name` in export
    format `fmt` (GOLDEN_EXPORT_OPTIONS), exported on first use and shared by every module of the
    session; "onnx" is `golden_onnx`'s. Lazy: a module that needs one model in one format (Core ML
    on Linux) exports only that one."""
    root = tmp_path_factory.mktemp("golden-artifacts")
    made: dict[tuple[str, str], Path] = {}

    def get(fmt: str, name: str) -> Path:
        if fmt == "onnx":
            return request.getfixturevalue("golden_onnx")[name]
        if (fmt, name) not in made:
            pytest.importorskip("torch")
            import make_golden
            from mmedge.export.registry import ExportContext, export_context
            from mmedge.models import zoo

            spec, model = zoo.get(name), make_golden.reference_model(name)
            ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, "fp32", getattr(model, "vocab", None),
                                dict(GOLDEN_EXPORT_OPTIONS.get(fmt, {})))
            made[fmt, name] = export_context(ctx, [fmt], root / fmt).artifacts[0]
        return made[fmt, name]

    return get
