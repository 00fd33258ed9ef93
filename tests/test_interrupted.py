"""Interrupted and concurrent work: no partial artifact, ever."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmedge import atomic
from mmedge.atomic import write_atomic
from mmedge.export.artifact import atomic_dir
from mmedge.runtime.manifest import read_manifest

# these run `mmedge export` in a subprocess: torch builds the reference model
requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="export needs torch")


def _export_cmd(out: Path, config: str = "full") -> list[str]:
    return [sys.executable, "-m", "mmedge", "export", "captioner", "--config", config, "--out", str(out)]


def _wait_for_tmp(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if out.exists() and any(p.name.startswith(".captioner-full-onnx-fp32.tmp-") for p in out.iterdir()):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("export never started writing")


@pytest.mark.slow
@requires_torch
def test_sigint_during_export_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(_export_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_tmp(out, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not list(out.iterdir()), list(out.iterdir())


@pytest.mark.slow
@requires_torch
def test_crash_leftovers_are_cleaned_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(_export_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_tmp(out, proc)
    proc.kill()  # SIGKILL: no cleanup can run
    proc.wait()
    assert not (out / "captioner-full-onnx-fp32").exists()
    assert any(p.name.startswith(".captioner-full-onnx-fp32.tmp-") for p in out.iterdir())
    with atomic_dir(out / "captioner-full-onnx-fp32") as tmp:
        (tmp / "x").write_text("ok")
    left = sorted(p.name for p in out.iterdir())
    assert left == ["captioner-full-onnx-fp32"]


@requires_torch
def test_concurrent_exports_to_one_destination(tmp_path: Path) -> None:
    out = tmp_path / "out"
    procs = [subprocess.Popen(_export_cmd(out, "tiny"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    art = out / "captioner-tiny-onnx-fp32"
    read_manifest(art)  # verifies every sha256: one whole artifact, not a mix
    assert sorted(p.name for p in out.iterdir()) == [art.name]


@requires_torch
def test_written_files_are_not_world_writable(tmp_path: Path) -> None:
    subprocess.run(_export_cmd(tmp_path, "tiny"), check=True, capture_output=True, timeout=300)
    art = tmp_path / "captioner-tiny-onnx-fp32"
    for p in [art, *art.rglob("*")]:
        assert not os.stat(p).st_mode & 0o002, p


def test_a_swallowed_ctrl_c_still_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library that swallows KeyboardInterrupt (onnxslim guards an import with a bare except)
    must not let the interrupted work be renamed into place: CI once saw an export exit 0 after Ctrl-C."""
    monkeypatch.setattr(atomic, "_interrupted", False)
    try:
        atomic.on_sigint(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass  # swallowed, as the library does
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "artifact") as tmp:
            (tmp / "model.onnx").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "cache.json", "{}")
    assert list(tmp_path.iterdir()) == []
