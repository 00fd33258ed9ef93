"""ONNX Runtime's optimized graphs cached per machine (runtime/ort_cache.py): a hit gives the same
bits as optimizing afresh, a changed source or a broken entry is never used, and a cache folder
another user could write into is not read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmedge.runtime import ort_cache
from mmedge.runtime.manifest import read_manifest

ort = pytest.importorskip("onnxruntime")


@pytest.fixture()
def encoder(golden_onnx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The goldens' captioner encoder (convolutions: ORT rewrites them for the CPU), copied, and an empty cache."""
    art = tmp_path / "art"
    shutil.copytree(golden_onnx["captioner"], art)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    g = next(g for g in read_manifest(art).graphs if g.name == "encoder")
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    return art / g.file, g, {g.inputs[0].name: x}


def _session(path: Path, g, **options):
    from mmedge.runtime.backends.onnxruntime import OrtSession

    return OrtSession(path, g.inputs, g.outputs, **options)


def _entries(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "cache" / "mmedge" / "ort"
    return sorted(folder.glob("*.onnx")) if folder.is_dir() else []


def test_a_hit_loads_the_optimized_graph_with_identical_outputs(encoder, tmp_path: Path) -> None:
    path, g, feeds = encoder
    plain = _session(path, g, cache="off").run(feeds)
    assert _entries(tmp_path) == []
    first = _session(path, g, cache="on")
    assert first.cache_entry is not None and _entries(tmp_path) == [first.cache_entry]
    second = _session(path, g, cache="on")
    assert second.cache_entry == first.cache_entry
    for out in (first.run(feeds), second.run(feeds)):
        for name, ref in plain.items():
            assert np.array_equal(out[name], ref), name
    assert (tmp_path / "cache" / "mmedge" / "ort").stat().st_mode & 0o777 == 0o700


def test_auto_skips_small_graphs_and_disable_skips_the_cache(encoder, tmp_path: Path) -> None:
    path, g, feeds = encoder
    assert path.stat().st_size < ort_cache.MIN_BYTES
    assert _session(path, g).cache_entry is None  # cache=auto
    assert _session(path, g, cache="on", optimization="disable").cache_entry is None
    assert _entries(tmp_path) == []


def test_a_changed_source_gets_a_new_entry(encoder, tmp_path: Path) -> None:
    path, g, feeds = encoder
    a = _session(path, g, cache="on").cache_entry
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    b = _session(path, g, cache="on").cache_entry
    assert a != b and {a, b} <= set(_entries(tmp_path))
    c = _session(path, g, cache="on", optimization="basic").cache_entry
    assert c not in (a, b)
    st = path.stat()
    path.write_bytes(path.read_bytes())  # rewritten, mtime put back: only ctime tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _session(path, g, cache="on").cache_entry not in (a, b)


def test_a_broken_entry_is_replaced(encoder, tmp_path: Path) -> None:
    path, g, feeds = encoder
    ref = _session(path, g, cache="off").run(feeds)
    entry = _session(path, g, cache="on").cache_entry
    entry.write_bytes(b"not an onnx graph")
    again = _session(path, g, cache="on")
    assert again.cache_entry == entry and entry.stat().st_size > 1000
    out = again.run(feeds)
    assert all(np.array_equal(out[k], v) for k, v in ref.items())
    entry.with_suffix(".data").unlink()  # the weights file lost: the entry is rebuilt, not half-loaded
    third = _session(path, g, cache="on")
    assert entry.with_suffix(".data").is_file()
    assert all(np.array_equal(third.run(feeds)[k], v) for k, v in ref.items())


def test_the_weights_are_kept_beside_the_graph(encoder, tmp_path: Path) -> None:
    """The optimized graph's weights go to `<key>.data`, memory-mapped on load: the graph file itself
    holds the structure only, and nothing is left in the cache folder but the entry and its weights."""
    path, g, feeds = encoder
    entry = _session(path, g, cache="on").cache_entry
    data = entry.with_suffix(".data")
    assert data.stat().st_size > 0.5 * path.stat().st_size > entry.stat().st_size  # (small weights stay inline)
    assert sorted(p.name for p in entry.parent.iterdir()) == sorted([entry.name, data.name])


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_folder_others_can_write_is_not_used(encoder, tmp_path: Path) -> None:
    path, g, feeds = encoder
    folder = tmp_path / "cache" / "mmedge" / "ort"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    d = ort_cache.decide(path, "all", "on", True, ort.__version__)
    assert d.entry is None and "accessible to other users" in d.why_not
    s = _session(path, g, cache="on")
    assert s.cache_entry is None and list(folder.iterdir()) == []
    folder.chmod(0o700)
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    folder.symlink_to(tmp_path / "elsewhere")
    assert "symbolic link" in ort_cache.decide(path, "all", "on", True, ort.__version__).why_not


def test_other_providers_and_off_bypass_the_cache(encoder) -> None:
    path, g, feeds = encoder
    assert "provider" in ort_cache.decide(path, "all", "on", False, ort.__version__).why_not
    assert ort_cache.decide(path, "all", "off", True, ort.__version__).why_not == "cache=off"


def test_prune_keeps_the_most_recently_used(tmp_path: Path) -> None:
    from mmedge.runtime.cache_entries import prune

    for k in range(5):
        p = tmp_path / f"{k}.onnx"
        p.write_bytes(b"x" * 100)
        os.utime(p, (1000 + k, 1000 + k))
        p.with_suffix(".data").write_bytes(b"w" * 50)  # its weights: counted and removed with it
    (tmp_path / ".tmp-1-old.onnx").write_bytes(b"x")
    os.utime(tmp_path / ".tmp-1-old.onnx", (1, 1))
    (tmp_path / ".tmp-2-dir").mkdir()  # an interrupted write's staging folder
    (tmp_path / ".tmp-2-dir" / "a.onnx").write_bytes(b"x")
    os.utime(tmp_path / ".tmp-2-dir", (1, 1))
    (tmp_path / "orphan.data").write_bytes(b"w")
    os.utime(tmp_path / "orphan.data", (1, 1))
    (tmp_path / "fresh.data").write_bytes(b"w")  # maybe an entry being written now: kept
    prune(tmp_path, 3, 10_000, suffix=".onnx", companion=".data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.data", "2.onnx", "3.data", "3.onnx", "4.data",
                                                          "4.onnx", "fresh.data"]
    prune(tmp_path, 3, 350, suffix=".onnx", companion=".data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.data", "3.onnx", "4.data", "4.onnx", "fresh.data"]


def test_the_option_is_checked(encoder) -> None:
    from mmedge.errors import InputError

    path, g, feeds = encoder
    with pytest.raises(InputError, match="cache='sometimes'"):
        _session(path, g, cache="sometimes")


def test_a_cache_that_cannot_be_written_only_costs_speed(encoder, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    path, g, feeds = encoder
    ref = _session(path, g, cache="off").run(feeds)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    s = _session(path, g, cache="on")
    assert _entries(tmp_path) == []
    assert all(np.array_equal(s.run(feeds)[k], v) for k, v in ref.items())
