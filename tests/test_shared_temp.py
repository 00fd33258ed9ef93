"""Shared machines: what another local user (or another container on a shared volume) can plant.

Every attack is simulated under a private TMPDIR (`tempfile.tempdir` patched): folders planted
by another uid (we run as root here, so `os.chown` to uid 12345 stands in for another user),
world-writable folders, lock files that are symbolic links to a victim file, a swapped model in
the Ray artifact cache, two runs writing the same `--out`, and stale-temp cleanup across PID
namespaces. Each asserts the exit code (2, bad input), the exact one line, and that the victim
is unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from PIL import Image

from mmedge.atomic import FileLock, private_dir
from mmedge.errors import ArtifactError, InputError
from mmedge.export.artifact import atomic_dir, clean_stale
from mmedge.scale import Job, run_job
from mmedge.scale.driver import EXECUTORS, manifest_digest
from mmedge.scale.ray_executor import CACHE, MmedgeWorker, pack_artifact, unpack_artifact, verify_unpacked
from mmedge.scale.results import lock_path

OTHER_UID = 12345
UID = os.getuid() if hasattr(os, "getuid") else 0
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX owners, modes and flock")


@pytest.fixture
def tmpdir_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temp dir standing in for the machine's shared /tmp."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: world-writable, sticky
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    monkeypatch.setenv("TMPDIR", str(shared))
    return shared


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A file another user wants emptied; it must come out byte for byte the same."""
    v = tmp_path / "victim.txt"
    v.write_text("precious\n")
    before = (v.read_bytes(), os.stat(v).st_mtime_ns)
    yield v
    assert (v.read_bytes(), os.stat(v).st_mtime_ns) == before


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _fake_artifact(root: Path, weights: bytes = b"the real weights") -> Path:
    """A folder shaped like an artifact: files plus a manifest listing their sha256."""
    root.mkdir(parents=True)
    files = {"encoder.onnx": weights, "decoder_step.onnx": b"decoder " + weights, "sub/vocab.json": b"{}"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    manifest = {"format_version": 1, "model": "captioner", "pipeline": "captioner",
                "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _swap_model(folder: Path) -> None:
    """What an attacker does to a copy: new weights, and a manifest that agrees with them."""
    (folder / "encoder.onnx").write_bytes(b"EVIL weights")
    m = json.loads((folder / "manifest.json").read_text())
    m["files"]["encoder.onnx"] = hashlib.sha256(b"EVIL weights").hexdigest()
    (folder / "manifest.json").write_text(json.dumps(m))


def _plant(folder: Path, uid: int = OTHER_UID, mode: int = 0o755) -> None:
    for p in [folder, *folder.rglob("*")]:
        os.lchown(p, uid, uid)
    os.chmod(folder, mode)


# ------------------------------------------------------------------ private_dir

def test_private_dir_is_created_0700_and_reused(tmpdir_private: Path) -> None:
    d = private_dir("mmedge-test")
    assert d == tmpdir_private / f"mmedge-test-{UID}"
    st = os.lstat(d)
    assert st.st_uid == UID and st.st_mode & 0o777 == 0o700
    assert private_dir("mmedge-test") == d


@pytest.mark.parametrize("attack", ["other-owner", "world-writable", "group-readable", "symlink", "file"])
def test_private_dir_refuses_what_another_user_planted(tmpdir_private: Path, tmp_path: Path, attack: str) -> None:
    d = tmpdir_private / f"mmedge-test-{UID}"
    why = {
        "other-owner": f"is owned by uid {OTHER_UID}, not by this user (uid {UID})",
        "world-writable": "is accessible to other users (mode 777)",
        "group-readable": "is accessible to other users (mode 750)",
        "symlink": "is a symbolic link",
        "file": "is not a folder",
    }[attack]
    if attack == "other-owner":
        d.mkdir(mode=0o700)
        os.chown(d, OTHER_UID, OTHER_UID)
    elif attack in ("world-writable", "group-readable"):
        d.mkdir()
        os.chmod(d, 0o777 if attack == "world-writable" else 0o750)
    elif attack == "symlink":
        target = tmp_path / "theirs"
        target.mkdir(mode=0o700)
        d.symlink_to(target)
    else:
        d.write_text("")
    with pytest.raises(InputError) as e:
        private_dir("mmedge-test")
    assert str(e.value) == (f"{d}: {why}; refusing to use it as a private folder (remove it, or set TMPDIR "
                            f"to a folder of your own)")
    assert e.value.exit_code == 2


# ------------------------------------------------------------------ lock files

def test_lock_file_symlink_to_a_victim_is_refused_and_victim_unchanged(tmp_path: Path, victim: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.symlink_to(victim)
    with pytest.raises(InputError) as e:
        FileLock(lock).acquire()
    assert str(e.value) == f"{lock}: is a symbolic link; refusing to follow it (another user may have planted it)"
    assert lock.is_symlink()  # not removed either: it is not ours


def test_lock_file_is_never_truncated(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text("someone's data\n")
    with FileLock(lock, remove=False):
        pass
    assert lock.read_text() == "someone's data\n"


def test_lock_file_that_is_a_folder_or_fifo_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "d.lock").mkdir()
    with pytest.raises(InputError, match=r"d\.lock: cannot open the lock file \(Is a directory\)$"):
        FileLock(tmp_path / "d.lock").acquire()
    os.mkfifo(tmp_path / "f.lock")
    with pytest.raises(InputError) as e:
        FileLock(tmp_path / "f.lock").acquire()
    assert str(e.value) == f"{tmp_path / 'f.lock'}: is not a regular file; refusing to use it as a lock file"


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding `path` (mmedge's own lock code), until killed."""
    code = ("import sys, time\nfrom mmedge.atomic import FileLock\nlk = FileLock(sys.argv[1]).acquire()\n"
            "print('held', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)


def test_a_held_lock_is_one_line_and_free_once_its_holder_dies(tmp_path: Path) -> None:
    lock = tmp_path / "job.lock"
    proc = _hold_lock(lock)
    try:
        with pytest.raises(InputError) as e:
            FileLock(lock, what="results.jsonl").acquire()
        assert str(e.value) == "results.jsonl: is in use by another mmedge run; wait for it to finish"
        assert e.value.exit_code == 2
    finally:
        _kill(proc)  # SIGKILL: the kernel drops its lock; the file stays
    assert lock.exists()
    with FileLock(lock):
        pass
    assert not lock.exists()  # removed by its last holder: lock files do not accumulate


def test_a_waiter_retries_when_the_holder_removes_the_lock_file(tmp_path: Path) -> None:
    lock = tmp_path / "swap.lock"
    first = FileLock(lock, wait=True).acquire()
    got: list[int] = []

    def waiter() -> None:
        with FileLock(lock, wait=True) as lk:
            assert lk.fd is not None
            got.append(os.fstat(lk.fd).st_ino)
            assert os.lstat(lock).st_ino == got[0]  # it holds the file the path names, not the removed one

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    first.release()
    t.join(10)
    assert got and not lock.exists()


# ------------------------------------------------------------------ exports: swap lock and stale temps

@pytest.mark.parametrize("plant", ["file", "dir-of-links"])
def test_planted_mmedge_locks_neither_breaks_exports_nor_touches_files(tmpdir_private: Path, tmp_path: Path,
                                                                        victim: Path, plant: str) -> None:
    locks = tmpdir_private / "mmedge-locks"  # where mmedge used to keep its export locks
    if plant == "file":
        locks.write_text("")
    else:
        locks.mkdir(mode=0o777)
        for i in range(64):  # any name it might have used
            (locks / f"{i:032x}.lock").symlink_to(victim)
        _plant(locks, mode=0o777)
    dest = tmp_path / "out" / "captioner-tiny-onnx-fp32"
    for _ in range(2):  # a first export, then one replacing it
        with atomic_dir(dest) as tmp:
            (tmp / "model.onnx").write_text("ok")
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no lock files left beside it
    assert (dest / "model.onnx").read_text() == "ok"


def test_symlink_planted_as_the_swap_lock_is_one_line_and_nothing_is_written(tmp_path: Path,
                                                                             victim: Path) -> None:
    dest = tmp_path / "out" / "art"
    dest.parent.mkdir()
    lock = dest.parent / ".art.lock"
    lock.symlink_to(victim)
    with pytest.raises(InputError) as e:
        with atomic_dir(dest) as tmp:
            (tmp / "model.onnx").write_text("ok")
    assert str(e.value) == f"{lock}: is a symbolic link; refusing to follow it (another user may have planted it)"
    assert sorted(p.name for p in dest.parent.iterdir()) == [".art.lock"]


def _live_export(dest: Path) -> tuple[subprocess.Popen, Path]:
    """An export in another process, stopped half-way (its temp dir exists, its lock is held)."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom mmedge.export.artifact import atomic_dir\n"
            "with atomic_dir(Path(sys.argv[1])) as tmp:\n    (tmp / 'half').write_text('x')\n"
            "    print(tmp, flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(dest)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, proc.communicate()
    return proc, Path(line)


def test_stale_cleanup_keeps_a_live_export_of_another_pid_namespace(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out" / "art"
    proc, live = _live_export(dest)
    try:
        # another container: its PIDs mean nothing here (the old check deleted its temp dir)
        def no_such_process(pid: int, sig: int) -> None:
            raise ProcessLookupError(pid)

        monkeypatch.setattr(os, "kill", no_such_process)
        (live.parent / f"{live.name}.pid").write_text("999999")  # what older versions looked at
        clean_stale(dest)
        with atomic_dir(dest) as tmp:  # a concurrent export to the same destination
            (tmp / "model.onnx").write_text("mine")
        assert (live / "half").read_text() == "x"  # still there: its lock is held
    finally:
        monkeypatch.undo()
        _kill(proc)  # SIGKILL: no cleanup of its own runs
    assert live.is_dir()
    clean_stale(dest)  # its owner is gone: its lock is free
    assert not live.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["art"]


def test_stale_cleanup_removes_ownerless_temps_and_orphan_locks(tmp_path: Path) -> None:
    dest = tmp_path / "art"
    legacy = tmp_path / ".art.tmp-legacy1"  # an older mmedge's: a PID file, no lock
    legacy.mkdir()
    (legacy / "x").write_text("x")
    (tmp_path / ".art.tmp-legacy1.pid").write_text(str(os.getpid()))
    dead = tmp_path / ".art.tmp-dead0001"  # a killed export: dir and its (free) lock file
    dead.mkdir()
    (tmp_path / ".art.tmp-dead0001.lock").write_text("")
    (tmp_path / ".art.tmp-gone0001.lock").write_text("")  # killed between its lock and its dir
    other = tmp_path / ".other.tmp-abc"  # another destination's: not ours to judge
    other.mkdir()
    clean_stale(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-abc"]


# ------------------------------------------------------------------ the Ray artifact cache

@pytest.fixture
def shipped(tmp_path: Path) -> tuple[Path, bytes, str]:
    art = _fake_artifact(tmp_path / "artifact")
    return art, pack_artifact(art), manifest_digest(art)


def test_planted_cache_under_the_old_shared_name_is_not_used(tmpdir_private: Path, tmp_path: Path,
                                                             shipped: tuple[Path, bytes, str]) -> None:
    art, blob, digest = shipped
    planted = tmpdir_private / "mmedge-ray-artifacts" / digest
    _fake_artifact(planted)
    _swap_model(planted)
    _plant(planted.parent, mode=0o777)
    got = unpack_artifact(blob, digest)
    assert got == tmpdir_private / f"{CACHE}-{UID}" / digest
    assert _tree(got) == _tree(art)  # the shipped model, byte for byte


@pytest.mark.parametrize("attack", ["other-owner", "world-writable"])
def test_planted_private_cache_is_refused_with_one_line(tmpdir_private: Path, shipped: tuple[Path, bytes, str],
                                                        attack: str) -> None:
    art, blob, digest = shipped
    cache = tmpdir_private / f"{CACHE}-{UID}"
    planted = cache / digest
    _fake_artifact(planted)
    _swap_model(planted)  # the manifest agrees with the swapped weights: load() alone would accept it
    if attack == "other-owner":
        _plant(cache, mode=0o700)
        why = f"is owned by uid {OTHER_UID}, not by this user (uid {UID})"
    else:
        os.chmod(cache, 0o777)
        why = "is accessible to other users (mode 777)"
    line = (f"{cache}: {why}; refusing to use it as a private folder (remove it, or set TMPDIR to a folder of "
            f"your own)")
    with pytest.raises(InputError) as e:
        unpack_artifact(blob, digest)
    assert str(e.value) == line and e.value.exit_code == 2
    # the Ray actor returns the error itself, class and exit code intact (the driver adds "Ray worker (...)
    # could not load the artifact")
    worker = MmedgeWorker(Job("caption", str(art)), blob, digest)
    reported = worker.ready()[1]
    assert isinstance(reported, InputError) and str(reported) == line and worker.pipe is None
    assert worker.run(None)[0] == "error"  # type: ignore[arg-type]


@pytest.mark.parametrize("tamper", ["swapped-model", "swapped-file", "extra-file", "symlink", "missing-file",
                                    "not-a-folder"])
def test_tampered_copy_in_the_private_cache_is_replaced_by_the_shipped_one(
        tmpdir_private: Path, tmp_path: Path, shipped: tuple[Path, bytes, str], victim: Path, tamper: str) -> None:
    art, blob, digest = shipped
    good = unpack_artifact(blob, digest)
    assert verify_unpacked(good, digest) is None
    if tamper == "swapped-model":
        _swap_model(good)
    elif tamper == "swapped-file":
        (good / "decoder_step.onnx").write_bytes(b"EVIL")
    elif tamper == "extra-file":
        (good / "sub" / "evil.onnx").write_bytes(b"EVIL")
    elif tamper == "symlink":
        (good / "encoder.onnx").unlink()
        (good / "encoder.onnx").symlink_to(victim)
    elif tamper == "missing-file":
        (good / "decoder_step.onnx").unlink()
    else:
        import shutil

        shutil.rmtree(good)
        good.write_text("")
    assert verify_unpacked(good, digest) is not None
    again = unpack_artifact(blob, digest)
    assert again == good and _tree(again) == _tree(art)
    assert [p.name for p in again.parent.iterdir()] == [digest]  # no temp or discarded copies left


def test_shipped_blob_that_does_not_match_its_digest_is_refused(tmpdir_private: Path, tmp_path: Path,
                                                               shipped: tuple[Path, bytes, str]) -> None:
    art, blob, digest = shipped
    other = _fake_artifact(tmp_path / "other", b"other weights")
    with pytest.raises(ArtifactError) as e:
        unpack_artifact(pack_artifact(other), digest)
    assert str(e.value) == (f"shipped artifact does not match the driver's manifest digest {digest[:12]}: "
                            f"manifest.json is not the shipped one; was the artifact re-exported during the run?")
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("encoder.onnx")
        info.type, info.linkname = tarfile.SYMTYPE, str(tmp_path / "victim.txt")
        tar.addfile(info)
    with pytest.raises(InputError, match=r"^shipped artifact: refusing member 'encoder.onnx'$"):
        unpack_artifact(evil.getvalue(), digest)
    with pytest.raises(InputError, match=r"^shipped artifact: invalid manifest digest '../x'$"):
        unpack_artifact(blob, "../x")
    assert list((tmpdir_private / f"{CACHE}-{UID}").iterdir()) == []


def test_pack_ships_only_what_the_manifest_lists(tmp_path: Path, shipped: tuple[Path, bytes, str]) -> None:
    art, blob, digest = shipped
    (art / "notes.txt").write_text("not part of the model")
    names = tarfile.open(fileobj=io.BytesIO(pack_artifact(art))).getnames()
    assert sorted(names) == ["decoder_step.onnx", "encoder.onnx", "manifest.json", "sub/vocab.json"]
    m = json.loads((art / "manifest.json").read_text())
    m["files"]["../../etc/passwd"] = "0" * 64
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"lists '../../etc/passwd', which is not a file inside the artifact$"):
        pack_artifact(art)


# ------------------------------------------------------------------ one writer per results file

class _SlowExecutor:
    """Yields each shard's records after a pause, so a second run can start meanwhile."""

    started = threading.Event()

    def __init__(self, job: Job, **_: Any) -> None:
        self.workers, self.retries = 1, 0

    def map(self, shards: Any) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
        for shard in shards:
            _SlowExecutor.started.set()
            time.sleep(0.05)
            yield shard, [{"index": i, "image": x, "caption": f"c{i}"} for i, x in shard.items]

    def close(self) -> None:
        pass


def test_two_runs_with_the_same_out_one_is_refused_the_file_is_whole(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EXECUTORS._entries, "slow-test", _SlowExecutor)
    art = _fake_artifact(tmp_path / "artifact")
    out = tmp_path / "captions.jsonl"
    inputs = [f"img{i}.png" for i in range(40)]
    job = Job("caption", str(art))
    first: dict[str, Any] = {}

    def run_first() -> None:
        first["records"], first["stats"] = run_job(job, inputs, out, executor="slow-test", shard_size=4,
                                                   log=lambda s: None)

    _SlowExecutor.started.clear()
    t = threading.Thread(target=run_first)
    t.start()
    assert _SlowExecutor.started.wait(30)
    with pytest.raises(InputError) as e:
        run_job(job, inputs, out, executor="slow-test", shard_size=4, log=lambda s: None)
    assert str(e.value) == f"{out}: is in use by another mmedge run; wait for it to finish"
    t.join(60)
    assert first["stats"].computed == 40
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["index"] for r in recs] == list(range(40))  # every record once, in order
    assert not lock_path(out).exists()
    records, stats = run_job(job, inputs, out, executor="slow-test", log=lambda s: None)  # and it resumes
    assert stats.resumed == 40 and stats.computed == 0


def test_cli_second_run_on_a_held_out_is_one_line_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture, victim: Path) -> None:
    from mmedge.cli import run

    art = _fake_artifact(tmp_path / "artifact")
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    out = tmp_path / "captions.jsonl"
    out.write_text('{"index":0,"image":"x"}\n{"index":1,"ima')  # a run in progress, mid-line
    (tmp_path / "captions.jsonl.job.json").write_text("{}\n")
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and p.suffix != ".lock"}

    def unchanged() -> bool:
        return {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and p.suffix != ".lock"} \
            == before
    proc = _hold_lock(lock_path(out))  # the first run, in another process
    try:
        capsys.readouterr()
        assert run(["caption", str(img), "-a", str(art), "--out", str(out)]) == 2
        assert _one_line(capsys.readouterr().err) == \
            f"mmedge: error: {out}: is in use by another mmedge run; wait for it to finish"
        assert run(["caption", str(img), "-a", str(art), "--out", str(out), "--overwrite"]) == 2
        capsys.readouterr()
        assert unchanged()  # nothing truncated, no sidecar rewritten
    finally:
        _kill(proc)
    lock_path(out).unlink()
    lock_path(out).symlink_to(victim)  # another user plants the lock as a link to a victim file
    assert run(["caption", str(img), "-a", str(art), "--out", str(out)]) == 2
    assert _one_line(capsys.readouterr().err) == (f"mmedge: error: {lock_path(out)}: is a symbolic link; refusing "
                                                  f"to follow it (another user may have planted it)")
    lock_path(out).unlink()
    assert unchanged()
