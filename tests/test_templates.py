"""The Jetson bundle's templates (export/templates/jetson/): package data, read through the
package's loader (Python 3.8 included), every placeholder filled, and the shell scripts lint
clean with shellcheck for representative values -- without packaging a bundle (no torch, no
ONNX export). tests/test_tensorrt.py, test_jetson_matrix.py and test_jetson_install.py run
the same shellcheck on the scripts of a real bundle.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mmedge.errors import ExportError
from mmedge.export.jetson_script import (INSTALL_SCRIPT, README, SCRIPT, TEMPLATES, build_script, bundle_readme,
                                         install_script, template)
from mmedge.export.jetson_wheel import _wheel_sources

ROOT = Path(__file__).resolve().parents[1]  # the repository root is the package `mmedge`
FOLDER = ROOT / "export" / TEMPLATES
PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")
FILLED = {SCRIPT: {"GRAPHS", "MATRIX", "WORKSPACE_MIB", "DLA_CORE", "VERSION_COMPATIBLE", "MMEDGE"},
          INSTALL_SCRIPT: set(), README: {"ROWS", "NOTES", "MATRIX"}}

# what _stage writes for the tiny captioner (int8 graphs, integer input prev_word) and an audio
# model without int8 graphs or test vectors that fit: every kind of field the script parses
GRAPH_LINES = [
    "captioner-tiny|artifacts/captioner-tiny-onnx-fp32|artifacts/captioner-tiny-onnx-int8|encoder|encoder.onnx|"
    "image:1x3x64x64|image:1x3x64x64|image:8x3x64x64|1|image:2x3x64x64|-",
    "captioner-tiny|artifacts/captioner-tiny-onnx-fp32|artifacts/captioner-tiny-onnx-int8|decoder_step|"
    "decoder_step.onnx|features:1x196x64,att1:1x196x16,prev_word:1,h:1x24,c:1x24|"
    "features:3x196x64,att1:3x196x16,prev_word:3,h:3x24,c:3x24|"
    "features:40x196x64,att1:40x196x16,prev_word:40,h:40x24,c:40x24|0|"
    "features:2x196x64,att1:2x196x16,prev_word:2,h:2x24,c:2x24|prev_word",
    "soundnet-tiny|artifacts/soundnet-tiny-onnx-fp32|-|model|model.onnx|waveform:1x6422|waveform:1x8000|"
    "waveform:8x240000|1|-|-",
]
DEFAULTS = [
    {},  # the template's own defaults: GPU, 1024 MiB, not version-compatible
    {"WORKSPACE_MIB": "4096", "DLA_CORE": "0", "VERSION_COMPATIBLE": "1"},
    {"WORKSPACE_MIB": "512", "DLA_CORE": "", "VERSION_COMPATIBLE": "0"},
]
GROUPS = [{"name": "captioner-tiny", "pipeline": "captioner", "graphs": {"encoder": {}, "decoder_step": {}},
           "int8": "artifacts/captioner-tiny-onnx-int8", "notes": ["decoder_step.onnx: INT64 input prev_word"]},
          {"name": "soundnet-tiny", "pipeline": "audio", "graphs": {"model": {}}, "int8": None, "notes": []}]


def shellcheck(path: Path) -> subprocess.CompletedProcess[str]:
    """The same check as the bundle tests: every finding, style included, fails."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    return subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)


# ------------------------------------------------------------------ package data
def test_the_templates_are_the_files_the_module_names() -> None:
    assert sorted(p.name for p in FOLDER.iterdir()) == sorted(FILLED)


def test_templates_are_package_data_and_go_into_the_bundle_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["mmedge.export"]
    for name in FILLED:
        assert any(fnmatch.fnmatch(f"{TEMPLATES}/{name}", p) for p in patterns), f"{name}: not package data"
    sources = {p.relative_to(ROOT).as_posix() for p in _wheel_sources(ROOT)}  # what build_wheel copies
    assert {f"export/{TEMPLATES}/{name}" for name in FILLED} <= sources


@pytest.mark.parametrize("name", sorted(FILLED))
def test_template_reads_through_the_loader_on_every_python(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    on_disk = (FOLDER / name).read_bytes().decode("utf-8")
    assert template(name) == on_disk
    monkeypatch.delattr(importlib.resources, "files")  # Python 3.8 has no files(): the pkgutil path
    assert template(name) == on_disk


def test_a_missing_template_is_one_error() -> None:
    with pytest.raises(ExportError, match=r"template templates/jetson/nope\.sh is missing"):
        template("nope.sh")


# ------------------------------------------------------------------ placeholders
@pytest.mark.parametrize("name", sorted(FILLED))
def test_every_placeholder_is_one_the_code_fills(name: str) -> None:
    assert set(PLACEHOLDER.findall(template(name))) == FILLED[name]


@pytest.mark.parametrize("defaults", DEFAULTS)
def test_build_script_fills_every_placeholder(defaults: dict[str, str]) -> None:
    text = build_script(GRAPH_LINES, defaults)
    assert not PLACEHOLDER.search(text)
    assert all(f'  "{line}"' in text for line in GRAPH_LINES)
    d = {"WORKSPACE_MIB": "1024", "DLA_CORE": "", "VERSION_COMPATIBLE": "0", **defaults}
    assert f'DLA_CORE="${{DLA_CORE-{d["DLA_CORE"]}}}"' in text
    assert f'WORKSPACE_MIB="${{WORKSPACE_MIB:-{d["WORKSPACE_MIB"]}}}"' in text


def test_readme_fills_every_placeholder() -> None:
    text = bundle_readme(GROUPS)
    assert not PLACEHOLDER.search(text)
    assert "| captioner-tiny | captioner | encoder, decoder_step | yes |" in text
    assert "- captioner-tiny: decoder_step.onnx: INT64 input prev_word" in text


# ------------------------------------------------------------------ shellcheck
@pytest.mark.parametrize("defaults", DEFAULTS)
def test_build_script_passes_shellcheck(defaults: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / SCRIPT
    script.write_text(build_script(GRAPH_LINES, defaults), encoding="utf-8")
    res = shellcheck(script)
    assert res.returncode == 0, res.stdout


def test_install_script_passes_shellcheck(tmp_path: Path) -> None:
    script = tmp_path / INSTALL_SCRIPT
    script.write_text(install_script(), encoding="utf-8")
    res = shellcheck(script)
    assert res.returncode == 0, res.stdout


def test_shellcheck_catches_a_mistake(tmp_path: Path) -> None:
    """The lint above can fail: an unquoted expansion appended to the script is reported."""
    script = tmp_path / SCRIPT
    script.write_text(build_script(GRAPH_LINES) + 'rm -f $OUT/timing.cache\n', encoding="utf-8")
    res = shellcheck(script)
    assert res.returncode != 0 and "SC2086" in res.stdout
