"""A device install (`pip install 'mmedge[onnxruntime]'`): no torch, onnx, OpenVINO, Core ML or Ray.

Every command runs in a subprocess where those packages cannot be found, exactly as if
they were not installed: the runner replaces Python's path finder by one that finds
nothing under their names (`sys.modules[name] = None` would not do: scipy and others
look a module up in sys.modules and break on the None). The runtime commands must work;
every command that needs a missing package must print one line naming the extra to
install and exit 2. Nothing may print a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmedge.models import zoo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "data" / "examples"
DEVICE_MISSING = ("torch", "torchvision", "torchaudio", "onnx", "onnxscript", "onnxslim", "openvino", "nncf",
                  "coremltools", "ray", "tensorrt")
COMMANDS = ("models", "demo", "export", "caption", "embed", "refocus", "parity", "eval", "profile", "package")

# argv: missing packages (comma-separated), the module to run as __main__, its arguments
RUNNER = r"""
import importlib.util, runpy, sys
from importlib.machinery import PathFinder

MISSING = set(sys.argv[1].split(","))


class NotInstalled(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in MISSING else super().find_spec(name, path, target)


sys.meta_path[sys.meta_path.index(PathFinder)] = NotInstalled
for name in [m for m in sys.modules if m.partition(".")[0] in MISSING]:  # imported at startup (.pth)
    del sys.modules[name]
assert all(importlib.util.find_spec(m) is None for m in MISSING), "the runner failed to hide a package"
module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
if module == "--help-of-every-command":
    from mmedge.cli import run
    sys.exit(max(run([*cmd.split(), "--help"]) for cmd in sys.argv[1:]))
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def mmedge(*args: str | Path, missing: tuple[str, ...] = DEVICE_MISSING, module: str = "mmedge",
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUNNER, ",".join(missing), module, *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr


def assert_missing(res: subprocess.CompletedProcess[str], package: str, extra: str) -> str:
    """Exit 2 and exactly one stderr line: `mmedge: error: PACKAGE is not installed (...); install ...`."""
    assert_no_traceback(res)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"mmedge: error: {package} is not installed (needed for "), lines[0]
    assert lines[0].endswith(f"; install it with: pip install 'mmedge[{extra}]'"), lines[0]
    assert res.stdout == ""
    return lines[0]


def assert_ok(res: subprocess.CompletedProcess[str]) -> None:
    assert_no_traceback(res)
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def artifacts(cli_onnx: dict[str, Path]) -> dict[str, Path]:
    """Tiny ONNX artifacts, exported with torch (tests/conftest.py) for the device to run."""
    return cli_onnx


# --- what needs no torch: listing, help, and everything that runs an artifact ---------------------

def test_models_lists_the_catalog_without_torch() -> None:
    res = mmedge("models", "--json")
    assert_ok(res)
    doc = json.loads(res.stdout)["models"]
    assert [m["name"] for m in doc] == zoo.names()
    cap = next(m for m in doc if m["name"] == "captioner")
    assert cap["graphs"]["decoder_step"]["outputs"] == ["log_probs", "h_next", "c_next", "alpha"]
    text = mmedge("models")
    assert_ok(text)
    assert all(name in text.stdout for name in zoo.names()) and text.stderr == ""


def test_catalog_matches_the_models_built_with_torch() -> None:
    """The torch-free catalog and the spec each model module registers describe the same model."""
    for info in zoo.catalog():
        spec = zoo.get(info.name)
        assert (spec.name, spec.pipeline, tuple(spec.configs), spec.description) == \
            (info.name, info.pipeline, info.configs, info.description)
        assert [(g.name, g.inputs, g.outputs, dict(g.dynamic_axes)) for g in spec.graphs] == \
            [(g.name, g.inputs, g.outputs, dict(g.dynamic_axes)) for g in info.graphs]
        for config in info.configs:
            spec.config(config)


def test_every_command_has_help_without_torch() -> None:
    res = mmedge(*COMMANDS, module="--help-of-every-command")
    assert_ok(res)
    top = mmedge("--help")
    assert_ok(top)
    assert all(cmd in top.stdout for cmd in COMMANDS)


def test_runtime_commands_run_an_onnx_artifact_without_torch(artifacts: dict[str, Path], tmp_path: Path) -> None:
    res = mmedge("caption", EXAMPLES / "scenes" / "scene0.png", "-a", artifacts["captioner"], "--beam", "2",
                 "--max-len", "5", "--json")
    assert_ok(res)
    assert len(json.loads(res.stdout)["results"]) == 1

    res = mmedge("embed", EXAMPLES / "sounds" / "tone.wav", "-a", artifacts["soundnet"], "--json")
    assert_ok(res)
    assert len(json.loads(res.stdout)["results"]) == 1

    png = tmp_path / "refocused.png"
    res = mmedge("refocus", EXAMPLES / "refocus" / "photo.png", "--depth", EXAMPLES / "refocus" / "depth_mm.png",
                 "-a", artifacts["refocus"], "--near", "1", "--far", "2", "--out", png)
    assert_ok(res)
    assert png.is_file()

    res = mmedge("parity", "-a", artifacts["soundnet"], "--json")
    assert_ok(res)
    assert json.loads(res.stdout)["ok"] is True

    res = mmedge("profile", "-a", artifacts["soundnet"], "--runs", "1", "--warmup", "0", "--json")
    assert_ok(res)
    json.loads(res.stdout)


def test_eval_of_an_artifact_runs_without_torch(artifacts: dict[str, Path]) -> None:
    pytest.importorskip("nltk", reason="BLEU needs nltk (the eval extra)")
    res = mmedge("eval", "captioner", "-a", artifacts["captioner"], "--limit", "2", "--beam", "1", "--json")
    assert_ok(res)
    assert json.loads(res.stdout)["results"][0]["samples"] == 2


def test_package_verify_runs_without_torch_or_onnx(tmp_path: Path) -> None:
    """Checking a bundle needs neither; a file that is not a bundle is one line too."""
    bogus = tmp_path / "bundle.tar.gz"
    bogus.write_bytes(b"not a tar file")
    res = mmedge("package", "jetson", "--verify", bogus)
    assert_no_traceback(res)
    assert res.returncode in (1, 2) and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("mmedge: error: ")


# --- what needs a missing package: one line naming the extra, exit 2 -------------------------------

@pytest.mark.parametrize("args", [
    ("export", "captioner", "--format", "onnx"),
    ("export", "soundnet", "--format", "openvino", "--precision", "int8"),
    ("demo",),
    ("eval", "captioner"),
    ("eval", "soundnet", "--config", "tiny"),
], ids=lambda a: " ".join(a))
def test_commands_that_need_torch_say_so(args: tuple[str, ...], tmp_path: Path) -> None:
    line = assert_missing(mmedge(*args, "--out", tmp_path / "out") if args[0] in ("export", "demo")
                          else mmedge(*args), "torch", "torch")
    if args[0] == "eval":
        assert "--artifact" in line  # says what works without torch
    assert not (tmp_path / "out").exists()


def test_only_a_missing_optional_package_becomes_the_one_line() -> None:
    """An ImportError of a package that IS installed (a broken install), or of a package mmedge
    does not know, is a bug: the CLI keeps its traceback."""
    from mmedge.errors import missing_dependency

    pytest.importorskip("torch", reason="needs an installed torch (the floors job, .ci/floors.sh, has none)")
    assert missing_dependency(ModuleNotFoundError("No module named 'torch'", name="torch")) is None  # installed
    assert missing_dependency(ModuleNotFoundError("No module named 'torch._C'", name="torch._C")) is None
    assert missing_dependency(ModuleNotFoundError("No module named 'nosuchpkg'", name="nosuchpkg")) is None


def test_training_needs_torch_and_says_so() -> None:
    assert_missing(mmedge("soundnet", module="mmedge.models.train"), "torch", "torch")


@pytest.mark.parametrize("target, out", [("mobile", "app.zip"), ("jetson", "bundle.tar.gz")])
def test_packaging_needs_onnx_and_says_so(target: str, out: str, artifacts: dict[str, Path], tmp_path: Path) -> None:
    line = assert_missing(mmedge("package", target, "-a", artifacts["captioner"], "--out", tmp_path / out),
                          "onnx", "onnx")
    assert f"package {target}" in line
    assert not (tmp_path / out).exists()


def test_a_missing_backend_or_ray_says_so(artifacts: dict[str, Path], tmp_path: Path) -> None:
    image = EXAMPLES / "scenes" / "scene0.png"
    assert_missing(mmedge("caption", image, "-a", artifacts["captioner"], "--backend", "openvino"),
                   "openvino", "openvino")
    assert_missing(mmedge("caption", image, "-a", artifacts["captioner"], "--out", tmp_path / "c.jsonl", "--ray"),
                   "ray", "ray")


@pytest.mark.slow
def test_packaging_works_with_onnx_but_without_torch(artifacts: dict[str, Path], tmp_path: Path) -> None:
    """`pip install 'mmedge[onnx]'`: packaging for a phone or a Jetson board needs no torch."""
    no_torch = tuple(m for m in DEVICE_MISSING if m != "onnx")
    for target, out in (("mobile", "app.zip"), ("jetson", "bundle.tar.gz")):
        res = mmedge("package", target, "-a", artifacts["soundnet"], "--out", tmp_path / out, missing=no_torch)
        assert_ok(res)
        assert (tmp_path / out).is_file()
        assert_ok(mmedge("package", target, "--verify", tmp_path / out))  # on the device: no onnx either
