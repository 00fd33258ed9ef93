"""The STFT's frame loop: windowed frames transformed block by block, on one or more threads.

:func:`mmedge.runtime.audio.stft` keeps torch.stft's semantics (argument checks, padding,
the window); this module windows the frames into a reused buffer and hands them to the FFT,
deciding how many threads each FFT call may use.

FFT routes (one registry, ``FFT_ROUTES``, in order of preference; ``MMEDGE_FFT`` forces one):
Intel MKL through ``mkl_fft`` where installed (the ``mkl`` extra, x86-64: the FFT torch.stft
uses, 1.5-2.3x faster than pocketfft here), scipy.fft (pocketfft in the input's precision),
numpy.fft (float64, no threads).

Threads: scipy's route hands a long block to pocketfft's own C++ pool (``workers=`` of
scipy.fft).  MKL runs each call on one thread, and a long block is split between Python threads
(:func:`run_blocks`; mkl_fft releases the GIL): MKL's OpenMP team would keep spinning for 200 ms
after each call and take a core from the model that runs next.  Python threads gained little on
short clips: each hand-over of the GIL between two threads can cost a thread wake-up, which is
slow on an idle virtual CPU.

Same bits for any worker count: pocketfft gives each thread a contiguous share of the rows and
transforms them several at a time in SIMD lanes, leftovers one by one.  Every FFT call here
starts on a multiple of ``GRANULE`` rows, and a threaded call has ``GRANULE`` x threads x m rows
(m >= 16), so pocketfft grants every thread and every share is whole SIMD batches and every row goes down the same code path
(lane-wise SIMD, or the same one-by-one tail of the last call) for 1 worker or 16.  On MKL's
route the blocks also start on multiples of GRANULE (shared_rows), and MKL transforms a row to
the same bits whichever rows share its call.  tests/test_stft_threads.py checks the bytes for
each FFT route.

Workers: ``MMEDGE_STFT_WORKERS`` (an integer >= 1) overrides the default, the number of CPUs
this process may run on (``os.sched_getaffinity``).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from mmedge.errors import InputError

WORKERS_ENV = "MMEDGE_STFT_WORKERS"
FFT_ENV = "MMEDGE_FFT"  # a route's key ("mkl", "scipy", "numpy"): use that FFT, else the first installed
NUMPY_FFT_ENV = "MMEDGE_NUMPY_FFT"  # set (non-empty): same as MMEDGE_FFT=numpy (kept for old scripts)

# Every FFT call starts on a multiple of GRANULE rows: a multiple of every SIMD batch pocketfft
# uses (4, 8 or 16 float32 rows for SSE, AVX, AVX-512).
GRANULE = 16
# A threaded call gives each thread whole GRANULEs, and at least MIN_ROWS_PER_THREAD rows: far
# more than pocketfft's own thread heuristic needs to grant every thread asked for (rows / SIMD
# width / 4 per thread for short transforms), and enough that waking a thread and waiting for it
# pays (benchmarks/stft_speed.py; a 3 s clip at hop 160 stays on one thread).  The same floor holds
# when Python threads share the blocks (shared_rows): 180 or 128 rows made 3 s clips slower there.
MIN_ROWS_PER_THREAD = 16 * GRANULE
# Most bytes of windowed frames per block: enough rows to share among threads (512 rows of
# float64 at n_fft 1024).  The buffer is kept per calling thread (see _Scratch).
_BLOCK_BYTES = 1 << 22
# Elements per chunk of an elementwise pass (map_chunks): 256 KB of float32.
_CHUNK = 1 << 16
# numpy.fft takes out= from numpy 2.0; before (JetPack 5/6's numpy 1.x), the result is copied instead
_FFT_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


# ----------------------------------------------------------------------------- workers


def default_workers() -> int:
    """``MMEDGE_STFT_WORKERS`` if set, else the CPUs this process may use (at least 1)."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise InputError(f"{WORKERS_ENV}={env!r}: expected an integer >= 1 (the STFT's worker threads)")
        return value
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None, where: str = "stft") -> int:
    """The worker count to use: ``workers`` checked, or :func:`default_workers` when None."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"{where}: workers must be an integer >= 1 or None, got {workers!r}")
    return int(workers)


# ----------------------------------------------------------------------------- elementwise passes


@lru_cache(maxsize=4)
def _pool(pid: int, threads: int) -> ThreadPoolExecutor:
    # Keyed by pid: a forked child inherits the executor object but not its threads.
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mmedge-stft")


def run_blocks(n_blocks: int, fn: Callable[[int], None], threads: int) -> None:
    """Call ``fn(k)`` for every block ``k`` in ``range(n_blocks)`` on ``threads`` threads.

    The caller's thread and ``threads - 1`` pool threads take the next block from a shared
    counter until none is left.  Meant for a few long, GIL-releasing blocks (each hand-over of
    the GIL can cost a thread wake-up).  ``fn`` must write disjoint outputs per block; an
    exception in any block propagates to the caller (after every thread has stopped).
    """
    threads = max(1, min(threads, n_blocks))
    blocks = iter(range(n_blocks))  # next() on a range iterator is atomic under the GIL
    if threads == 1:
        for k in blocks:
            fn(k)
        return
    failed: list[BaseException] = []

    def drain() -> None:
        try:
            for k in blocks:
                if failed:
                    return
                fn(k)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failed.append(e)
            raise

    pool = _pool(os.getpid(), threads - 1)
    futures: list[Future] = [pool.submit(drain) for _ in range(threads - 1)]
    try:
        drain()
    finally:
        for f in futures:  # a task still queued behind another caller's finds nothing left: drop it
            if not f.cancel():
                f.exception()  # wait; the first failure is raised below (or the caller's own)
    if failed:
        raise failed[0]


def map_chunks(flat: np.ndarray, fn: Callable[[np.ndarray], None], workers: int) -> None:
    """Apply the in-place elementwise ``fn`` to the fixed chunks of the 1-D array ``flat``, on up
    to ``workers`` threads (e.g. the power-law compression, whose ``pow`` costs more than the STFT).
    Fixed chunks: numpy may treat a chunk's last elements apart (SIMD tails), so the split must
    not depend on the worker count for the bytes not to."""
    n = flat.shape[0]
    n_chunks = -(-n // _CHUNK)
    run_blocks(n_chunks, lambda k: fn(flat[k * _CHUNK : (k + 1) * _CHUNK]), workers)


# ----------------------------------------------------------------------------- FFT backends


@lru_cache(maxsize=1)
def scipy_fft() -> Any:
    """scipy.fft when installed (the `onnxruntime`/`openvino` extras install scipy), else None."""
    try:
        import scipy.fft as sfft
    except ImportError:
        return None
    return sfft


@lru_cache(maxsize=1)
def mkl_fft() -> Any:
    """``(mkl_fft, mkl)`` when both import and mkl_fft's numpy-style transforms write into ``out=``
    with numpy's results (mkl_fft 1.x's ``rfft`` is FFTPACK's packed format), else None."""
    try:
        import mkl
        import mkl_fft as mfft

        x = np.random.default_rng(0).standard_normal((9, 24))
        prev = mkl.set_num_threads_local(1)
        try:
            for real, cplx in ((np.float32, np.complex64), (np.float64, np.complex128)):
                for fft, ref in ((mfft.rfft, np.fft.rfft(x, axis=-1)), (mfft.fft, np.fft.fft(x, axis=-1))):
                    out = np.empty(ref.shape, dtype=cplx)
                    fft(x.astype(real), axis=-1, out=out)
                    if not np.allclose(out, ref, rtol=0, atol=1e-4):
                        return None
        finally:
            mkl.set_num_threads_local(prev)
    except Exception:  # noqa: BLE001 - not installed, or an API this route does not know: use the next
        return None
    return mfft, mkl


FftRows = Callable[[np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class FftRoute:
    """One FFT library: whether it is installed, its working precision, its row transform."""

    key: str  # what MMEDGE_FFT names it
    name: str  # what the benchmarks and `mmedge profile` print
    installed: Callable[[], bool]
    native: bool  # transforms float32 in float32 (else in float64)
    # True: the blocks (window and FFT) are shared between Python threads, each FFT call on one
    # thread; False: the blocks run one by one, and ``rows`` may thread inside an FFT call
    python_threads: bool
    # (onesided, complex dtype, n_freq, workers) -> fft(x, out) for rows x [R, n_fft], out [R, n_freq]
    rows: Callable[[bool, Any, int, int], FftRows]


def _mkl_rows(onesided: bool, complex_dtype: Any, n_freq: int, workers: int) -> FftRows:
    mfft, mkl = mkl_fft()
    fft = mfft.rfft if onesided else mfft.fft

    def run(x: np.ndarray, out: np.ndarray) -> None:  # threads: transform_frames shares the blocks
        prev = mkl.set_num_threads_local(1)  # per thread: no OpenMP team, nothing left spinning
        try:
            fft(x, axis=-1, out=out)
        finally:
            mkl.set_num_threads_local(prev)

    return run


def _scipy_rows(onesided: bool, complex_dtype: Any, n_freq: int, workers: int) -> FftRows:
    sfft = scipy_fft()
    r2c = _pocketfft_r2c() if onesided else None
    fft = sfft.rfft if onesided else sfft.fft

    def run(x: np.ndarray, out: np.ndarray) -> None:
        for start, stop, threads in fft_calls(x.shape[0], workers):
            if r2c is not None:
                r2c(x[start:stop], (1,), True, 0, out[start:stop], threads)
            else:
                out[start:stop] = fft(x[start:stop], axis=-1, workers=threads)

    return run


FFT_ROUTES: dict[str, FftRoute] = {
    "mkl": FftRoute("mkl", "mkl_fft", lambda: mkl_fft() is not None, True, True, _mkl_rows),
    "scipy": FftRoute("scipy", "scipy.fft", lambda: scipy_fft() is not None, True, False, _scipy_rows),
    "numpy": FftRoute("numpy", "numpy.fft", lambda: True, False, False,
                      lambda onesided, cd, n_freq, workers: _numpy_fft_rows(onesided, cd, n_freq)),
}


def fft_route() -> FftRoute:
    """The route :func:`transform_frames` uses: ``MMEDGE_FFT``'s, else the first installed.

    Read at every call (an environment lookup), so a test or a caller can switch routes.
    """
    key = os.environ.get(FFT_ENV, "").strip().lower() or ("numpy" if os.environ.get(NUMPY_FFT_ENV) else "")
    if not key:
        return next(r for r in FFT_ROUTES.values() if r.installed())
    route = FFT_ROUTES.get(key)
    if route is None:
        raise InputError(f"{FFT_ENV}={key!r}: expected one of {', '.join(FFT_ROUTES)}")
    if not route.installed():
        extra = {"mkl": "pip install 'mmedge[mkl]'", "scipy": "pip install scipy"}[key]
        raise InputError(f"{FFT_ENV}={key}: {route.name} is not installed here ({extra})")
    return route


def backend_name() -> str:
    """The FFT library :func:`transform_frames` uses here: "mkl_fft", "scipy.fft" or "numpy.fft"."""
    return fft_route().name


def block_rows(n_fft: int, itemsize: int) -> int:
    """Most frames per block: whole GRANULEs whose samples fit in ``_BLOCK_BYTES``."""
    return max(GRANULE, _BLOCK_BYTES // (n_fft * itemsize) // GRANULE * GRANULE)


def shared_rows(n_frames: int, workers: int, most: int) -> int:
    """Rows per block when Python threads share the blocks: ``n_frames`` over as many threads as
    get MIN_ROWS_PER_THREAD rows each, in whole GRANULEs, at most ``most``.  A clip too short
    for two threads is one block, on the calling thread, with no thread to wake."""
    threads = max(1, min(workers, n_frames // MIN_ROWS_PER_THREAD))
    share = -(-n_frames // threads)
    return min(most, max(GRANULE, -(-share // GRANULE) * GRANULE))


def fft_calls(n_rows: int, workers: int) -> list[tuple[int, int, int]]:
    """How a block of ``n_rows`` rows is transformed: ``(start, stop, threads)`` per FFT call.

    Each threaded call takes as many whole ``GRANULE x threads`` runs as fit, with as many
    threads as the rows left allow (``MIN_ROWS_PER_THREAD`` each); the few rows left go to one
    call on the calling thread.  Every call starts on a multiple of GRANULE.
    """
    calls, start = [], 0
    while (threads := min(workers, (n_rows - start) // MIN_ROWS_PER_THREAD)) >= 2:
        stop = start + (n_rows - start) // (GRANULE * threads) * (GRANULE * threads)
        calls.append((start, stop, threads))
        start = stop
    return calls + ([(start, n_rows, 1)] if start < n_rows else [])


def transform_frames(frames: np.ndarray, w_span: np.ndarray, span: slice, n_fft: int, onesided: bool,
                     complex_dtype: Any, workers: int) -> np.ndarray:
    """``fft(frames * window)`` for the frame view ``[B, F, n_fft]``: ``[B, F, n_freq]`` complex.

    Only the window's non-zero ``span`` is multiplied; the zero-padded sides stay zero.  With
    mkl_fft or scipy.fft the input's precision is kept (float32 stays float32); numpy.fft works in
    float64.
    """
    batch, n_frames = frames.shape[0], frames.shape[1]
    n_freq = n_fft // 2 + 1 if onesided else n_fft
    out = np.empty((batch, n_frames, n_freq), dtype=complex_dtype)
    route = fft_route()
    work = frames.dtype if route.native else np.dtype(np.float64)
    rows = block_rows(n_fft, work.itemsize)
    w = w_span if w_span.dtype == work else w_span.astype(work)
    if route.python_threads:
        rows = shared_rows(n_frames, workers, rows)
    fft = route.rows(onesided, complex_dtype, n_freq, 1 if route.python_threads else workers)
    jobs = [(b, f0, min(f0 + rows, n_frames)) for b in range(batch) for f0 in range(0, n_frames, rows)]

    def job(k: int) -> None:  # blocks start on multiples of `rows`, itself whole GRANULEs
        b, f0, f1 = jobs[k]
        block = min(rows, n_frames)
        x = _scratch.frames(block, n_fft, work, span)[: f1 - f0]  # this thread's buffer
        # a strided copy, then one multiply of two same-shape contiguous arrays: numpy's broadcast
        # of a window row over the frames ran at half that speed (0.105 against 0.054 ms for 376
        # frames of 512); the same products, so the same bits
        np.copyto(x[:, span], frames[b, f0:f1, span])
        np.multiply(x, _scratch.tiled_window(w, block, n_fft, span)[: f1 - f0], out=x)
        fft(x, out[b, f0:f1])

    run_blocks(len(jobs), job, workers if route.python_threads else 1)
    return out


def _numpy_fft_rows(onesided: bool, complex_dtype: Any, n_freq: int) -> FftRows:
    fft = np.fft.rfft if onesided else np.fft.fft
    direct = _FFT_OUT and complex_dtype == np.complex128

    def run(x: np.ndarray, out: np.ndarray) -> None:
        if direct:
            fft(x, axis=-1, out=out)
        elif _FFT_OUT:
            spec = _scratch.get("spectrum", (x.shape[0], n_freq), np.dtype(np.complex128))
            fft(x, axis=-1, out=spec)
            out[...] = spec
        else:
            out[...] = fft(x, axis=-1)

    return run


class _Scratch(threading.local):
    """Each calling thread's work buffers, kept between calls.

    Why: a fresh buffer of hundreds of KB is fresh pages from the kernel whenever malloc has
    trimmed its heap, and faulting them in can cost more than the window multiply.  At most
    ``3 * _BLOCK_BYTES`` per calling thread stay allocated (the frame block, the window tiled to
    its shape and, on the numpy path, its float64 spectrum), and only as much as the longest input
    so far needed.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}
        self.zeroed: tuple | None = None  # (rows, n_fft, span start, span stop, dtype) zeroed in "frames"
        self.window_key: tuple | None = None  # what the "window" buffer holds (see tiled_window)

    def get(self, name: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        size = shape[0] * shape[1]
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = self.buffers[name] = np.empty(size, dtype=dtype)
            if name == "frames":
                self.zeroed = None
        return buf[:size].reshape(shape)

    def tiled_window(self, w: np.ndarray, rows: int, n_fft: int, span: slice) -> np.ndarray:
        """``w`` at ``span`` of each of ``rows`` rows of ``n_fft``, zero elsewhere (zero times the
        frame buffer's zero sides is zero): kept, and only grown, while the same window comes back."""
        key = (n_fft, span.start, span.stop, w.dtype, w.tobytes())
        tiled = self.buffers.get("window")
        if self.window_key != key or tiled is None or tiled.shape[0] < rows:
            tiled = self.buffers["window"] = np.zeros((rows, n_fft), w.dtype)
            tiled[:, span] = w
            self.window_key = key
        return tiled[:rows]

    def frames(self, rows: int, n_fft: int, dtype: np.dtype, span: slice) -> np.ndarray:
        """The frame buffer, its columns outside the window's span zero (only the span is ever written)."""
        buf = self.get("frames", (rows, n_fft), dtype)
        key = (rows, n_fft, span.start, span.stop, dtype)
        if self.zeroed != key:  # a new buffer, or one last used with another shape or window span
            buf[:, : span.start] = 0
            buf[:, span.stop :] = 0
            self.zeroed = key
        return buf


_scratch = _Scratch()


@lru_cache(maxsize=1)
def _pocketfft_r2c() -> Callable[..., Any] | None:
    """scipy's pocketfft binding, whose r2c writes into a given array: the public rfft returns a
    new array, and copying it into the output costs as much as the windowing.  A private API, so
    it is used only if it is there and gives scipy.fft.rfft's result bitwise on a small case."""
    sfft = scipy_fft()
    try:
        from scipy.fft._pocketfft.pypocketfft import r2c

        ok = True
        for real, cplx in ((np.float32, np.complex64), (np.float64, np.complex128)):
            x = np.random.default_rng(0).standard_normal((9, 24)).astype(real)
            out = np.empty((9, 13), dtype=cplx)
            r2c(x, (1,), True, 0, out, 1)
            ok = ok and np.array_equal(out.view(real), sfft.rfft(x, axis=-1, workers=1).view(real))
    except Exception:  # noqa: BLE001 - any change in the private binding: use the public API
        return None
    return r2c if ok else None
