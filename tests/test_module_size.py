"""No package module is longer than 600 lines (issue 17: big files are split along their jobs).

A module past the limit is split into modules with one job each, not trimmed of comments; the
limit counts every line. Only the package's own folders (those with an __init__.py) are held to
it: tests/ and benchmarks/ are scripts, not the package.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root is the package `mmedge`
MAX_LINES = 600


def package_files(root: Path) -> list[Path]:
    """Every .py file of the package rooted at `root` (folders with __init__.py, recursively)."""
    found: list[Path] = []

    def walk(folder: Path) -> None:
        found.extend(sorted(folder.glob("*.py")))
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
            walk(sub)

    walk(root)
    return found


def test_every_package_module_is_at_most_600_lines() -> None:
    files = package_files(ROOT)
    assert ROOT / "runtime" / "audio.py" in files  # the walk sees the subpackages
    too_long = {f.relative_to(ROOT).as_posix(): n for f in files
                if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them along their jobs): {too_long}"


def test_the_walk_skips_scripts(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in package_files(tmp_path)] == [
        "__init__.py", "pkg/__init__.py", "pkg/big.py"]
