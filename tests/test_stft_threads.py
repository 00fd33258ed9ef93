"""The STFT front-end on several threads (mmedge.runtime.stft_blocks): same bits for any worker count.

The frames are cut into blocks by the frame count and n_fft alone, and threads only decide
who transforms which block, so 1, 2, 3 or 7 workers must give byte-identical spectrograms,
with MKL (mkl_fft, where the `mkl` extra is installed), scipy.fft (the private out= binding or the
public rfft) and the numpy.fft fallback.
No timing is asserted here (benchmarks/stft_speed.py measures speed).
"""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest

from mmedge.errors import InputError
from mmedge.runtime import audio, stft_blocks

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
try:
    import scipy.fft  # noqa: F401
    HAVE_SCIPY = True
except ImportError:  # pragma: no cover
    HAVE_SCIPY = False
HAVE_MKL = stft_blocks.mkl_fft() is not None

WORKERS = (1, 2, 3, 7)

# (shape, dtype, stft kwargs): each long enough (over 1,000 frames) for threaded FFT calls
CASES = [
    ((160000,), np.float32, dict(n_fft=512, hop_length=160, win_length=400)),  # the voice encoder's, 10 s
    ((96000,), np.float32, dict(n_fft=400, hop_length=80)),
    ((2, 3, 70000), np.float64, dict(n_fft=1024, hop_length=64)),
    ((80000,), np.float32, dict(n_fft=400, hop_length=64, window="hamming", normalized=True, onesided=False)),
    ((2, 140000), np.float32, dict(n_fft=1024, hop_length=128, win_length=700, center=False)),
    ((140000,), np.float64, dict(n_fft=512, hop_length=128, win_length=300, onesided=False, pad_mode="constant")),
]


def signal(shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


ROUTE_OF = {"mkl": "mkl", "scipy-out": "scipy", "scipy-public": "scipy", "numpy": "numpy"}


@pytest.fixture(params=list(ROUTE_OF))
def fft_backend(request, monkeypatch):
    """Each FFT route of stft_blocks: MKL, scipy's pocketfft writing into the output, scipy.fft.rfft, numpy.fft."""
    if request.param == "mkl" and not HAVE_MKL:
        pytest.skip("mkl_fft is not installed: pip install 'mmedge[mkl]' (x86-64)")
    if request.param.startswith("scipy") and not HAVE_SCIPY:
        pytest.skip("scipy is not installed: pip install scipy")
    monkeypatch.setenv(stft_blocks.FFT_ENV, ROUTE_OF[request.param])
    if request.param == "scipy-public":
        monkeypatch.setattr(stft_blocks, "_pocketfft_r2c", lambda: None)
    yield request.param


def test_fft_backend_fixture_switches_the_route(fft_backend):
    assert stft_blocks.backend_name() == {"mkl": "mkl_fft", "numpy": "numpy.fft"}.get(fft_backend, "scipy.fft")


def test_default_route_is_the_first_installed_and_the_env_is_checked(monkeypatch):
    monkeypatch.delenv(stft_blocks.FFT_ENV, raising=False)
    monkeypatch.delenv(stft_blocks.NUMPY_FFT_ENV, raising=False)
    assert stft_blocks.backend_name() == ("mkl_fft" if HAVE_MKL else "scipy.fft" if HAVE_SCIPY else "numpy.fft")
    monkeypatch.setenv(stft_blocks.NUMPY_FFT_ENV, "1")  # the old switch still works
    assert stft_blocks.backend_name() == "numpy.fft"
    monkeypatch.setenv(stft_blocks.FFT_ENV, "fftw")
    with pytest.raises(InputError, match=r"MMEDGE_FFT='fftw': expected one of mkl, scipy, numpy"):
        audio.stft(signal((8000,), np.float32), 256)
    if not HAVE_MKL:
        monkeypatch.setenv(stft_blocks.FFT_ENV, "mkl")
        with pytest.raises(InputError, match=r"mkl_fft is not installed here \(pip install 'mmedge\[mkl\]'\)"):
            audio.stft(signal((8000,), np.float32), 256)


@pytest.mark.parametrize("shape, dtype, kwargs", CASES)
def test_stft_bitwise_identical_for_any_worker_count(fft_backend, shape, dtype, kwargs):
    x = signal(shape, dtype)
    ref = audio.stft(x, workers=1, **kwargs)
    for workers in WORKERS[1:]:
        assert same_bits(audio.stft(x, workers=workers, **kwargs), ref), f"workers={workers}"


@pytest.mark.skipif(torch is None, reason="torch is not installed: pip install 'mmedge[torch]'")
@pytest.mark.parametrize("shape, dtype, kwargs", CASES)
def test_threaded_stft_matches_torch(fft_backend, shape, dtype, kwargs):
    x = signal(shape, dtype)
    n_fft, win = kwargs["n_fft"], kwargs.get("win_length") or kwargs["n_fft"]
    make = torch.hamming_window if kwargs.get("window") == "hamming" else torch.hann_window
    flat = torch.from_numpy(x.reshape(-1, shape[-1]))
    ref = torch.stft(flat, n_fft, kwargs["hop_length"], win, make(win, dtype=flat.dtype),
                     center=kwargs.get("center", True), pad_mode=kwargs.get("pad_mode", "reflect"),
                     normalized=kwargs.get("normalized", False), onesided=kwargs.get("onesided", True),
                     return_complex=True).numpy()
    ours = audio.stft(x, workers=2, **kwargs).reshape(ref.shape)
    assert float(np.abs(ours - ref).max() / np.abs(ref).max()) <= (1e-5 if dtype == np.float32 else 1e-10)


def _spy_fft_threads(monkeypatch) -> list[tuple[int, int]]:
    """Record (rows, threads) of every pocketfft r2c call stft makes (on scipy's route)."""
    if not HAVE_SCIPY:  # pragma: no cover
        pytest.skip("scipy is not installed: pip install scipy")
    monkeypatch.setenv(stft_blocks.FFT_ENV, "scipy")
    real = stft_blocks._pocketfft_r2c()
    if real is None:  # pragma: no cover - scipy missing or its private binding changed
        pytest.skip("scipy's pocketfft r2c binding is not available here")
    calls: list[tuple[int, int]] = []

    def r2c(x, axes, forward, inorm, out, nthreads):
        calls.append((x.shape[0], nthreads))
        return real(x, axes, forward, inorm, out, nthreads)

    monkeypatch.setattr(stft_blocks, "_pocketfft_r2c", lambda: r2c)
    return calls


def test_long_input_asks_the_fft_for_all_workers(monkeypatch):
    calls = _spy_fft_threads(monkeypatch)
    audio.stft(signal((160000,), np.float32), 512, 160, 400, workers=2)  # 1001 frames
    assert calls == [(992, 2), (9, 1)]
    calls.clear()
    audio.stft(signal((2, 480000), np.float32), 512, 160, 400, workers=3)  # 2 x 3001 frames, blocks of 2048
    assert calls == [(2016, 3), (32, 1), (912, 3), (41, 1)] * 2


@pytest.mark.parametrize("shape, dtype, kwargs", [c for c in CASES if c[2].get("onesided", True)])
def test_bitwise_cases_do_run_threaded_fft_calls(monkeypatch, shape, dtype, kwargs):
    """Else the bitwise test above would compare single-threaded runs only."""
    calls = _spy_fft_threads(monkeypatch)
    audio.stft(signal(shape, dtype), workers=3, **kwargs)
    assert max(t for _, t in calls) >= 2


@pytest.mark.skipif(not HAVE_MKL, reason="mkl_fft is not installed: pip install 'mmedge[mkl]' (x86-64)")
def test_mkl_route_shares_blocks_between_threads_each_call_on_one_mkl_thread(monkeypatch):
    """MKL's own OpenMP team would spin after the call: every FFT call runs with one MKL thread,
    and a long input is cut into blocks of whole GRANULEs that Python threads share."""
    mfft, mkl = stft_blocks.mkl_fft()
    ffts: list[tuple[int, int]] = []
    shares: list[tuple[int, int]] = []
    real_rfft, real_run_blocks = mfft.rfft, stft_blocks.run_blocks

    def rfft(x, axis=-1, out=None):
        ffts.append((x.shape[0], mkl.get_max_threads()))
        return real_rfft(x, axis=axis, out=out)

    def run_blocks(n_blocks, fn, threads):
        shares.append((n_blocks, threads))
        return real_run_blocks(n_blocks, fn, threads)

    monkeypatch.setattr(mfft, "rfft", rfft)
    monkeypatch.setattr(stft_blocks, "run_blocks", run_blocks)
    monkeypatch.setenv(stft_blocks.FFT_ENV, "mkl")
    x = signal((160000,), np.float32)
    got = audio.stft(x, 512, 160, 400, workers=2)  # 1001 frames: blocks of 512 and 489 rows, on 2 threads
    assert shares == [(2, 2)] and sorted(r for r, _ in ffts) == [489, 512]
    assert all(n == 1 for _, n in ffts)
    ffts.clear(), shares.clear()
    audio.stft(x[:48000], 512, 160, 400, workers=2)  # 301 frames: one block, no thread to wake
    assert shares == [(1, 2)] and ffts == [(301, 1)]
    monkeypatch.setenv(stft_blocks.FFT_ENV, "scipy")
    ref = audio.stft(x, 512, 160, 400, workers=1)
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) <= 1e-5  # two libraries, one transform


@pytest.mark.parametrize("n_frames, workers, most, want", [
    (301, 2, 2048, 304), (511, 2, 2048, 512), (512, 2, 2048, 256), (1001, 2, 2048, 512),
    (1001, 7, 2048, 336), (30001, 2, 2048, 2048), (5, 4, 2048, 16), (1001, 1, 2048, 1008)])
def test_shared_rows_give_each_thread_enough_whole_granules(n_frames, workers, most, want):
    rows = stft_blocks.shared_rows(n_frames, workers, most)
    assert rows == want and rows % stft_blocks.GRANULE == 0


def test_short_input_stays_on_the_calling_thread(monkeypatch):
    calls = _spy_fft_threads(monkeypatch)
    audio.stft(signal((48000,), np.float32), 512, 160, 400, workers=4)  # 301 frames: a thread would not pay
    assert calls == [(301, 1)]


@pytest.mark.parametrize("n_rows", [0, 1, 15, 63, 64, 127, 128, 301, 512, 513, 1000, 2047, 4096])
@pytest.mark.parametrize("workers", [1, 2, 3, 7, 16])
def test_fft_calls_keep_every_row_on_the_same_code_path(n_rows, workers):
    """The premise of the bitwise claim: calls start on GRANULE boundaries, and a threaded call gives
    each thread whole GRANULEs (at least MIN_ROWS_PER_THREAD), so pocketfft grants every thread and
    no share has a tail."""
    calls = stft_blocks.fft_calls(n_rows, workers)
    assert [r for a, b, _ in calls for r in range(a, b)] == list(range(n_rows))  # every row once, in order
    for start, stop, threads in calls:
        assert start % stft_blocks.GRANULE == 0 and 1 <= threads <= workers
        if threads > 1:
            assert (stop - start) % (stft_blocks.GRANULE * threads) == 0
            assert stop - start >= stft_blocks.MIN_ROWS_PER_THREAD * threads
    assert len(calls) <= 1 + workers  # the thread count only falls from one threaded call to the next


def test_block_rows_are_whole_granules():
    assert stft_blocks.GRANULE % 16 == 0  # pocketfft's widest SIMD batch: 16 float32 rows (AVX-512)
    for n_fft, itemsize in [(400, 4), (512, 4), (1024, 8), (100000, 8)]:
        rows = stft_blocks.block_rows(n_fft, itemsize)
        assert rows % stft_blocks.GRANULE == 0 and rows >= stft_blocks.GRANULE


def test_powerlaw_and_log_mel_bitwise_across_workers_and_formulas(monkeypatch):
    x = signal((2, 40000), np.float32)
    monkeypatch.setenv(stft_blocks.WORKERS_ENV, "1")
    pl1 = audio.powerlaw_spectrogram(x)
    mel1 = audio.log_mel_spectrogram(x, 16000, 512, 160, 80, win_length=400)
    spec = audio.stft(x, 512, 160, 400)
    for workers in ("2", "3"):
        monkeypatch.setenv(stft_blocks.WORKERS_ENV, workers)
        assert same_bits(audio.powerlaw_spectrogram(x), pl1)
        assert same_bits(audio.log_mel_spectrogram(x, 16000, 512, 160, 80, win_length=400), mel1)
    # the in-place versions compute exactly what the plain formulas do
    parts = np.stack([spec.real, spec.imag], axis=-3)
    assert same_bits(pl1, np.sign(parts) * np.abs(parts) ** np.float32(audio.POWER_LAW))
    power = spec.real**2 + spec.imag**2
    basis = audio.mel_filters(16000, 512, 80)
    assert same_bits(mel1, audio.power_to_db(np.matmul(basis, power)))


def test_worker_count_override_and_errors(monkeypatch):
    monkeypatch.setenv(stft_blocks.WORKERS_ENV, "3")
    assert stft_blocks.default_workers() == 3
    monkeypatch.delenv(stft_blocks.WORKERS_ENV)
    if hasattr(stft_blocks.os, "sched_getaffinity"):
        assert stft_blocks.default_workers() == len(stft_blocks.os.sched_getaffinity(0))
    x = signal((8000,), np.float32)
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(stft_blocks.WORKERS_ENV, bad)
        with pytest.raises(InputError, match=stft_blocks.WORKERS_ENV):
            audio.stft(x, 256)
    monkeypatch.delenv(stft_blocks.WORKERS_ENV)
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(InputError, match="workers must be an integer >= 1"):
            audio.stft(x, 256, workers=bad)


def test_a_failing_block_raises_in_the_caller_and_stops_the_others():
    done: list[int] = []

    def fn(k: int) -> None:
        if k == 3:
            raise ValueError("block 3")
        done.append(k)

    with pytest.raises(ValueError, match="block 3"):
        stft_blocks.run_blocks(200, fn, 2)
    assert 3 not in done and len(done) < 199


def _child_front_end(queue) -> None:
    x = signal((48000,), np.float32)
    queue.put(audio.stft(x, 512, 160, 400, workers=2).tobytes() + audio.powerlaw_spectrogram(x).tobytes())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork() on this platform")
def test_forked_child_gets_its_own_pool(monkeypatch):
    """A forked child inherits the parent's executor object but not its threads: it must not hang."""
    x = signal((48000,), np.float32)
    monkeypatch.setenv(stft_blocks.WORKERS_ENV, "2")
    parent = audio.stft(x, 512, 160, 400, workers=2).tobytes() + audio.powerlaw_spectrogram(x).tobytes()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_front_end, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():  # pragma: no cover - the bug this test is for
            child.kill()
    assert got == parent


def test_concurrent_callers_share_the_pool(monkeypatch):
    """Callers in several threads at once: each gets its own result (pools are shared, buffers are not)."""
    monkeypatch.setenv(stft_blocks.WORKERS_ENV, "2")
    xs = [signal((40000 + 1000 * i,), np.float32) for i in range(4)]
    want = [(audio.stft(x, 512, 160, 400, workers=1), audio.powerlaw_spectrogram(x)) for x in xs]
    got: list = [None] * len(xs)

    def call(i: int) -> None:
        for _ in range(3):
            got[i] = (audio.stft(xs[i], 512, 160, 400, workers=2), audio.powerlaw_spectrogram(xs[i]))

    callers = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=120)
    assert all(same_bits(g[0], w[0]) and same_bits(g[1], w[1]) for g, w in zip(got, want))


def _reference_stft(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    """A plain float64 numpy STFT (centre, reflect padding, periodic Hann zero-padded to n_fft)."""
    w = np.zeros(n_fft)
    left = (n_fft - win) // 2
    w[left : left + win] = audio.hann_window(win, dtype=np.float64)
    xp = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop]
    return np.fft.rfft(frames * w, axis=-1).T


@pytest.mark.parametrize("workers", [1, 2])
def test_reused_buffers_follow_window_span_and_n_fft(fft_backend, workers):
    """The per-thread buffers outlive a call: a narrower window or another n_fft must not see stale samples."""
    x = signal((40000,), np.float32)
    for n_fft, win in [(512, 400), (512, 200), (512, 512), (1024, 300), (512, 200), (256, 256)]:
        ours = audio.stft(x, n_fft, 128, win, workers=workers)
        ref = _reference_stft(x, n_fft, 128, win)
        assert float(np.abs(ours - ref).max() / np.abs(ref).max()) <= 1e-5, (n_fft, win)
