"""benchmarks/openvino_latency.py leaves no work folder (~800 MB) behind: SIGTERM and Ctrl-C remove
it, and a run killed with SIGKILL has its folder removed by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
CHILD = """
import sys, time
sys.path.insert(0, {bench!r})
import openvino_latency as o
with o.workdir(None) as wd:
    (wd / "big.bin").write_bytes(b"x" * 1000)
    print(wd, flush=True)
    time.sleep(60)
"""


def _interruptible() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background (`cmd &`, nohup) has
    SIGINT ignored, the child would inherit that, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(bench=str(BENCH))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_interruptible)
    line = proc.stdout.readline().strip()
    assert line, proc.stderr.read()
    wd = Path(line)
    assert wd.parent == tmp_path and wd.name.startswith(f"openvino_latency_{proc.pid}_") and wd.is_dir()
    return proc, wd


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_the_work_folder(tmp_path: Path, sig: int) -> None:
    proc, wd = _start(tmp_path)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not wd.exists(), f"{wd} left behind after signal {sig}"


def test_next_run_removes_a_killed_runs_folder(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    import openvino_latency as o

    proc, wd = _start(tmp_path)
    proc.kill()  # SIGKILL: nothing runs in the child
    proc.wait(timeout=60)
    assert wd.is_dir()
    other = tmp_path / f"openvino_latency_{os.getpid()}_live"  # a running process's folder is kept
    other.mkdir()
    unrelated = tmp_path / "openvino_latency_notes"
    unrelated.mkdir()
    assert o.remove_stale_workdirs(tmp_path) == [wd]
    assert not wd.exists() and other.is_dir() and unrelated.is_dir()
