"""Ctrl-C while an artifact's temp folder and lock file come into being leaves neither behind."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from mmedge import atomic
from mmedge.export import artifact


@pytest.fixture
def raising_handler():
    old = signal.signal(signal.SIGINT, atomic.on_sigint)
    yield
    signal.signal(signal.SIGINT, old)
    atomic._interrupted = False


def test_sigint_inside_the_deferred_block_is_raised_after_it(raising_handler) -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with atomic.sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("after the signal")  # still runs: the signal is recorded, raised at the end
    assert steps == ["after the signal"]


def test_sigint_while_the_temp_dir_is_made_leaves_nothing(raising_handler, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The signal lands after the lock file is created and before it is locked: before the fix
    the lock file stayed beside the destination."""
    real = atomic.FileLock.try_acquire

    def interrupted_acquire(self):
        if ".tmp-" in self.path.name:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self)

    monkeypatch.setattr(atomic.FileLock, "try_acquire", interrupted_acquire)
    dest = tmp_path / "out" / "model"
    with pytest.raises(KeyboardInterrupt):
        with artifact.atomic_dir(dest) as tmp:
            (tmp / "x").write_text("never published")
    monkeypatch.undo()
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_sigint_during_the_work_leaves_nothing(raising_handler, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "model"
    with pytest.raises(KeyboardInterrupt):
        with artifact.atomic_dir(dest) as tmp:
            (tmp / "x").write_text("half")
            os.kill(os.getpid(), signal.SIGINT)
    assert list(dest.parent.iterdir()) == []


def test_outside_the_main_thread_nothing_changes() -> None:
    seen = []

    def work() -> None:
        with atomic.sigint_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [before] and signal.getsignal(signal.SIGINT) is before
