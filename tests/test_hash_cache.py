"""Artifact file digests remembered per machine (runtime/hash_cache.py): an unchanged file is not
rehashed, any change to it (even with its mtime put back) is, and a folder others can write is
not trusted."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from mmedge.errors import ArtifactError
from mmedge.runtime import hash_cache
from mmedge.runtime.manifest import read_manifest

pytestmark = pytest.mark.skipif(os.name == "nt", reason="st_ctime is the creation time on Windows")


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """Every real hashing, recorded; caches in tmp_path; every file size cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(hash_cache, "MIN_BYTES", 0)
    calls: list[Path] = []
    real = hash_cache.sha256_file

    def spy(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(hash_cache, "sha256_file", spy)
    return calls


def test_an_unchanged_file_is_hashed_once(counted: list[Path], tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(os.urandom(1 << 16))
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert hash_cache.file_sha256(f) == want and hash_cache.file_sha256(f) == want
    assert counted == [f]
    assert (tmp_path / "cache" / "mmedge" / "sha256").stat().st_mode & 0o777 == 0o700


def test_a_change_with_the_mtime_put_back_is_rehashed(counted: list[Path], tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a" * 4096)
    first = hash_cache.file_sha256(f)
    st = f.stat()
    with open(f, "r+b") as h:  # same size, other bytes, mtime restored: only ctime tells
        h.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = hash_cache.file_sha256(f)
    assert second != first and second == hashlib.sha256(f.read_bytes()).hexdigest()
    assert counted == [f, f]


def test_a_tampered_artifact_still_fails_verification(counted: list[Path], golden_onnx: dict[str, Path],
                                                      tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(golden_onnx["soundnet"], art)
    m = read_manifest(art)
    read_manifest(art)
    n = len(counted)
    assert n == len(m.files)  # the second read hashed nothing
    graph = art / m.graphs[0].file
    st = graph.stat()
    data = bytearray(graph.read_bytes())
    data[-1] ^= 1
    graph.write_bytes(bytes(data))
    os.utime(graph, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        read_manifest(art)


def test_a_folder_others_can_write_is_not_used(counted: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "mmedge" / "sha256"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    f = tmp_path / "model.onnx"
    f.write_bytes(b"x" * 100)
    (folder / "planted").write_text("0" * 64)
    hash_cache.file_sha256(f)
    hash_cache.file_sha256(f)
    assert counted == [f, f] and sorted(p.name for p in folder.iterdir()) == ["planted"]


def test_a_garbled_entry_is_ignored(counted: list[Path], tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"x" * 100)
    hash_cache.file_sha256(f)
    [entry] = (tmp_path / "cache" / "mmedge" / "sha256").iterdir()
    entry.write_text("not a digest")
    assert hash_cache.file_sha256(f) == hashlib.sha256(b"x" * 100).hexdigest() and len(counted) == 2
