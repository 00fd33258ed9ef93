"""benchmarks/stft_speed.py times mmedge in a child process that never imports torch, and counts
that child's CPU time as the benchmark's own, not as other processes' load.  No timing is
asserted: the mechanics are (the process split, the protocol, the result it checks)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import stft_speed  # noqa: E402

from mmedge.runtime.audio import stft  # noqa: E402


@pytest.fixture
def worker():
    w = stft_speed.Worker()
    yield w
    w.close()


def test_worker_is_torch_free_and_returns_mmedge_result(worker, tmp_path):
    assert worker.info["torch_loaded"] is False and worker.info["workers"] >= 1
    assert worker.info["fft"] in ("mkl_fft", "scipy.fft", "numpy.fft")
    x = np.random.default_rng(3).standard_normal(24000).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    worker.ask(op="load", path=str(tmp_path / "x.npy"), n_fft=512, hop=160, win=400)
    reply = worker.ask(op="time", workers=1, n=3)
    assert len(reply["times"]) == 3 and all(t > 0 for t in reply["times"]) and reply["cpu_s"] >= 0
    assert worker.ask(op="result", workers=2, path=str(tmp_path / "y.npy"))["torch_loaded"] is False
    got, want = np.load(tmp_path / "y.npy"), stft(x, 512, 160, 400, "hann", workers=1)
    assert got.shape == want.shape == (257, 151)
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-5  # the worker's route may be another library


def test_worker_errors_reach_the_parent(worker):
    with pytest.raises(RuntimeError, match="unknown op 'bogus'"):
        worker.ask(op="bogus")
    with pytest.raises(RuntimeError, match="the mmedge worker failed: .*No such file"):
        worker.ask(op="load", path="/nonexistent/x.npy", n_fft=512, hop=160, win=400)


def test_time_pair_does_not_count_the_worker_as_other_load(monkeypatch):
    """A runner's reported CPU seconds are added to this process's: a worker that kept one CPU
    busy for the whole pair must leave the other load near zero, not near 1."""
    snaps = iter([(100.0, 10.0, 0.0), (102.0, 11.0, 1.0)])  # 2 busy CPU-seconds in 1 s, 1 of them ours
    monkeypatch.setattr(stft_speed.profiler, "cpu_snapshot", lambda: next(snaps))
    monkeypatch.setattr(stft_speed, "SETTLE_S", 0.0)
    calls = {"ours": 0}

    def ours(n: int):
        calls["ours"] += 1
        return [2e-3] * n, 1.0 / 3  # three blocks of a repeat of 25 in blocks of 10: 1 CPU-second in all

    result = stft_speed.time_pair(ours, lambda n: ([1e-3] * n, 0.0), 25)
    assert calls["ours"] == 3 and result["ratio"] == 2.0
    assert result["other_cpu_load"] == pytest.approx(0.0, abs=1e-9)
