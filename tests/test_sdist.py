"""The sdist carries what the test suite reads, so `pytest` runs from an unpacked sdist as from a clone.

The fast test reads the folders outside the package that test modules open (`ROOT / "x"`,
`parents[1] / "x"`) and checks MANIFEST.in grafts each one; the slow one builds the sdist and
compares it with the tracked files of those folders.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a test module naming a top-level path: ROOT / "x", REPO / "x", parents[1] / "x", ROOT.glob("x/*")
REFERENCE = re.compile(r"""(?:\bROOT|\bREPO|parents\[1\])\s*(?:/\s*|\.r?glob\(\s*)["']([^"'/*]+)""")
ALWAYS = {"pyproject.toml", "setup.cfg", "PKG-INFO", "MANIFEST.in"}  # setuptools puts these in every sdist
OUTPUTS = {".cache"}  # folders tests write to (tests/test_mobile_js_port.py's npm cache), not read


def _manifest() -> tuple[set[str], set[str]]:
    grafts, includes = set(), set()
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == "graft":
            grafts.update(w.rstrip("/") for w in words[1:])
        elif words and words[0] == "include":
            includes.update(words[1:])
    return grafts, includes


def _referenced() -> dict[str, str]:
    """Top-level name -> a test module that reads it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for name in REFERENCE.findall(path.read_text(errors="replace")):
            found.setdefault(name, path.name)
    return found


def _outside_the_package() -> dict[str, str]:
    """What tests read that is neither a package folder nor put in every sdist: name -> a reader."""
    return {name: module for name, module in _referenced().items()
            if (ROOT / name).exists() and name not in ALWAYS | OUTPUTS and not (ROOT / name / "__init__.py").is_file()}


def test_what_tests_read_outside_the_package_is_in_the_sdist() -> None:
    grafts, includes = _manifest()
    assert "tests" in grafts
    outside = _outside_the_package()
    assert "benchmarks" in outside  # the scan itself works (tests/test_benchmark_workdir.py)
    missing = {name: module for name, module in outside.items() if name not in grafts | includes}
    assert not missing, f"read by tests but not in MANIFEST.in (graft/include): {missing}"


@pytest.mark.slow
def test_built_sdist_has_every_tracked_file_the_tests_need(tmp_path: Path) -> None:
    if importlib.util.find_spec("build") is None or shutil.which("git") is None:
        pytest.skip("needs the `build` package and git")
    folders = {"tests", *(name for name in _outside_the_package() if (ROOT / name).is_dir())}
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [f for f in tracked.decode().split("\0") if f]
    if not files:
        pytest.skip("not a git checkout")
    src = tmp_path / "src"
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path / "dist")],
                   cwd=src, capture_output=True, check=True)
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        shipped = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {f for f in files if f.split("/", 1)[0] in folders and "__pycache__" not in f}
    assert "tests/conftest.py" in needed and any(f.startswith("tests/golden/") for f in needed)
    assert not needed - shipped, sorted(needed - shipped)[:20]
