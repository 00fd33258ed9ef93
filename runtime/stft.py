"""The short-time Fourier transform with torch.stft's semantics, and the windows it uses.

Conventions (``torch.stft(..., return_complex=True)``): periodic windows built like
``torch.hann_window``, a window shorter than ``n_fft`` zero-padded on both sides (left pad
``(n_fft - win_length) // 2``), ``center=True`` pads ``n_fft // 2`` samples on both sides,
``normalized=True`` scales by ``n_fft ** -0.5`` (torch's "frame_length" normalization), output
``[..., freq, frames]`` (a transposed view, like torch's).  float32 input gives complex64,
float64 input complex128.  The FFT is Intel MKL's (the `mkl` extra, x86-64) or scipy.fft's in
the input's precision where installed, else numpy.fft in float64 (numpy 2.x's float32 FFT is
slower than its float64 one); ``MMEDGE_FFT`` picks one (:data:`stft_blocks.FFT_ROUTES`).
Either way the error against ``torch.stft`` stays below 1e-5 x max |X| (typically 2e-7).  Long
inputs are transformed on several threads (``workers``, ``MMEDGE_STFT_WORKERS``), with bitwise
the same result for any worker count.

This module checks the arguments, pads the signal and builds the window; the frame loop and
its threads are :mod:`mmedge.runtime.stft_blocks`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime import stft_blocks
from mmedge.runtime.audio_checks import as_int

# ----------------------------------------------------------------------------- windows


def _cosine_window(n: int, periodic: bool, alpha: float, beta: float, dtype) -> np.ndarray:
    # Torch's recipe, step by step in the target dtype (so float32 windows agree with torch's to
    # an ulp): k * (2 pi / (N - 1)) over N = n + 1 points when periodic, cos, * -beta, + alpha.
    n = as_int("window length", n, minimum=0, where="window")
    dtype = np.dtype(dtype)
    if n <= 1:
        return np.ones(n, dtype=dtype)
    points = n + 1 if periodic else n
    k = np.arange(points, dtype=dtype)
    w = np.cos(k * dtype.type(2.0 * math.pi / (points - 1))) * dtype.type(-beta) + dtype.type(alpha)
    return w[:n]


def hann_window(n: int, periodic: bool = True, dtype=np.float32) -> np.ndarray:
    """``torch.hann_window(n, periodic)``: ``0.5 - 0.5 cos(2 pi k / N)``, N = n (periodic) or n - 1."""
    return _cosine_window(n, periodic, 0.5, 0.5, dtype)


def hamming_window(n: int, periodic: bool = True, dtype=np.float32) -> np.ndarray:
    """``torch.hamming_window(n, periodic)``: ``0.54 - 0.46 cos(2 pi k / N)``."""
    return _cosine_window(n, periodic, 0.54, 0.46, dtype)


_WINDOWS: dict[str, Callable[..., np.ndarray]] = {"hann": hann_window, "hamming": hamming_window}

# torch.nn.functional.pad modes: [B, T] signal, pad -> (left, right) edges, each broadcastable to [B, pad]
_PAD_MODES: dict[str, Callable[[np.ndarray, int], tuple[Any, Any]]] = {
    "reflect": lambda x, p: (x[:, p:0:-1], x[:, -2 : -p - 2 : -1]),
    "constant": lambda x, p: (0.0, 0.0),
    "replicate": lambda x, p: (x[:, :1], x[:, -1:]),
    "edge": lambda x, p: (x[:, :1], x[:, -1:]),
    "circular": lambda x, p: (x[:, x.shape[1] - p :], x[:, :p]),
}


# ----------------------------------------------------------------------------- STFT


def _stft_window(window: Any, win_length: int, n_fft: int, dtype: Any, normalized: bool) -> np.ndarray:
    """The window's ``win_length`` values as torch.stft applies them (float64, read-only): rounded to
    the input's dtype, times ``n_fft ** -0.5`` when normalized.  torch zero-pads it to n_fft on both
    sides (left pad ``(n_fft - win_length) // 2``); the STFT multiplies only this span."""
    if window is None or isinstance(window, str):
        return _named_window(window, win_length, n_fft, np.dtype(dtype).str, normalized)
    w = np.asarray(window)
    if w.ndim != 1 or w.shape[0] != win_length:
        raise InputError(f"stft: window must be a 1-D array of win_length={win_length} values, got shape {w.shape}")
    if w.dtype.kind not in "fiu":
        raise InputError(f"stft: window must be real-valued, got dtype {w.dtype}")
    return _scaled(w.astype(dtype).astype(np.float64), n_fft, normalized)


@lru_cache(maxsize=32)
def _named_window(window: str | None, win_length: int, n_fft: int, dtype: str, normalized: bool) -> np.ndarray:
    # Cached: building a window costs as much as transforming a few frames.
    if window is None:
        w = np.ones(win_length, dtype=np.float64)
    elif window in _WINDOWS:
        w = _WINDOWS[window](win_length, periodic=True, dtype=np.dtype(dtype)).astype(np.float64)
    else:
        raise InputError(f"stft: unknown window {window!r}; expected one of {sorted(_WINDOWS)}, None or an array")
    return _scaled(w, n_fft, normalized)


def _scaled(w: np.ndarray, n_fft: int, normalized: bool) -> np.ndarray:
    if normalized:
        w = w * (1.0 / math.sqrt(n_fft))
    w.flags.writeable = False
    return w


def stft(
    x: np.ndarray,
    n_fft: int,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: str | np.ndarray | None = "hann",
    center: bool = True,
    pad_mode: str = "reflect",
    normalized: bool = False,
    onesided: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """Short-time Fourier transform with the semantics of ``torch.stft(..., return_complex=True)``.

    x: float32 or float64, ``[T]`` or ``[..., T]``.  Returns ``[..., n_fft // 2 + 1, n_frames]``
    (``[..., n_fft, n_frames]`` when ``onesided=False``), complex64 for float32 input and
    complex128 for float64, with ``n_frames = 1 + (T' - n_fft) // hop_length`` where T' is the
    length after centre padding.  pad_mode: "reflect", "constant" (zeros), "replicate"
    (alias "edge") or "circular", as ``torch.nn.functional.pad`` does them.

    Speed: the frames are strided views of the padded signal, windowed into a reused buffer
    and transformed block by block (:mod:`mmedge.runtime.stft_blocks`), with MKL or scipy.fft in
    the input's precision when installed, else numpy.fft in float64.  workers: the FFT's threads
    for a long input (None: ``MMEDGE_STFT_WORKERS``, else the CPUs this process may use;
    numpy.fft uses one); the result is bitwise the same for any worker count.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise InputError(f"stft: expected a float32 or float64 array, got dtype {x.dtype}")
    if x.ndim < 1:
        raise InputError("stft: expected an array shaped [..., T], got a scalar")
    n_fft = as_int("n_fft", n_fft, minimum=1, where="stft")
    if hop_length is None:
        hop_length = n_fft // 4
        if hop_length < 1:
            raise InputError(f"stft: the default hop_length n_fft // 4 is 0 for n_fft={n_fft}; pass hop_length >= 1")
    hop_length = as_int("hop_length", hop_length, minimum=1, where="stft")
    win_length = n_fft if win_length is None else as_int("win_length", win_length, minimum=1, where="stft")
    if win_length > n_fft:
        raise InputError(f"stft: win_length={win_length} must be <= n_fft={n_fft}")
    if pad_mode not in _PAD_MODES:
        raise InputError(f"stft: unknown pad_mode {pad_mode!r}; expected one of {sorted(_PAD_MODES)}")
    workers = stft_blocks.resolve_workers(workers)

    complex_dtype = np.complex64 if x.dtype == np.float32 else np.complex128
    w = _stft_window(window, win_length, n_fft, x.dtype, normalized)

    batch_shape, n_samples = x.shape[:-1], x.shape[-1]
    if n_samples == 0:
        raise InputError("stft: input has no samples")
    x2 = x.reshape(-1, n_samples)
    pad = n_fft // 2 if center else 0
    if pad_mode == "reflect" and pad >= n_samples:
        raise InputError(
            f"stft: input of {n_samples} samples is too short for reflect padding of {pad} "
            f"(need at least {pad + 1} samples for n_fft={n_fft}; use pad_mode='constant' or a longer input)"
        )
    if pad_mode == "circular" and pad > n_samples:
        raise InputError(f"stft: input of {n_samples} samples is too short for circular padding of {pad}")
    if n_samples + 2 * pad < n_fft:
        raise InputError(
            f"stft: input of {n_samples} samples is shorter than n_fft={n_fft}"
            + (" after centre padding" if center else " (center=False needs at least n_fft samples)")
        )
    # The padded signal in the input's dtype, built by hand (np.pad's general path is slower for this;
    # benchmarks/stft_speed.py times the front-end).
    xb = np.empty((x2.shape[0], n_samples + 2 * pad), dtype=x.dtype)
    xb[:, pad : pad + n_samples] = x2
    if pad:
        xb[:, :pad], xb[:, pad + n_samples :] = _PAD_MODES[pad_mode](x2, pad)
    n_frames = 1 + (xb.shape[-1] - n_fft) // hop_length
    left = (n_fft - win_length) // 2
    # [B, n_frames, n_fft], a read-only strided view of xb (np.ndarray costs less than sliding_window_view)
    frames = np.ndarray((xb.shape[0], n_frames, n_fft), xb.dtype, xb, 0,
                        (xb.strides[0], hop_length * xb.itemsize, xb.itemsize))
    frames.flags.writeable = False
    out = stft_blocks.transform_frames(frames, w, slice(left, left + win_length), n_fft, onesided, complex_dtype,
                                       workers)
    return out.reshape(*batch_shape, n_frames, out.shape[-1]).swapaxes(-1, -2)

