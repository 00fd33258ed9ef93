"""Rational-factor resampling along the last axis, numerically scipy.signal.resample_poly's.

numpy only (the runtime must not need scipy); the work per sample is bounded by capping the
terms of the rate ratio (:data:`MAX_RESAMPLE_TERM`) and refusing extreme ratios.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mmedge.errors import InputError
from mmedge.runtime.audio_checks import as_int

MAX_RESAMPLE_TERM = 4096  # largest up or down of the reduced ratio resampled exactly (filter: 20x taps)
MAX_RESAMPLE_RATIO = 1000  # largest rate change resample() accepts (either way)


@lru_cache(maxsize=16)
def _resample_filter(up: int, down: int) -> np.ndarray:
    """Kaiser-windowed (beta 5) sinc low-pass, cutoff at the lower Nyquist, 20 * max(up, down) + 1
    taps, gain ``up``: the filter ``scipy.signal.resample_poly`` uses by default."""
    max_rate = max(up, down)
    half = 10 * max_rate
    m = np.arange(-half, half + 1, dtype=np.float64)
    h = np.sinc(m / max_rate) * np.kaiser(2 * half + 1, 5.0)
    h *= up / h.sum()
    h.flags.writeable = False
    return h


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis by the rational factor target_sr / orig_sr (float32 out).

    Polyphase windowed-sinc filtering, numerically the same as
    ``scipy.signal.resample_poly(x, up, down, axis=-1)`` with its defaults (zeros beyond the
    ends): it agrees with scipy to ~2e-7 (the float32 rounding of the output).  The filter's
    passband ripple bounds the error on a full-scale sine below 0.4 x the lower Nyquist
    frequency at 2e-3 (measured: 1.5e-3 for 440 Hz and 2.0e-3 for 3 kHz at 8 -> 16 kHz,
    4e-4 for 440 Hz at 44.1 -> 22.05 kHz), away from the first and last ~10 input samples x
    max(up, down) / up, where the zero padding shows.  Output length ``ceil(T * target_sr / orig_sr)``.

    Bounded work: the filter has ``20 * max(up, down) + 1`` taps (``up/down`` the reduced ratio),
    so when a term exceeds ``MAX_RESAMPLE_TERM`` (4096: every common rate pair, e.g. 44100 ->
    16000 = 160/441, stays exact) the ratio is replaced by the closest fraction with terms
    <= 4096 (a relative rate error below 2e-4, i.e. 0.2 cents, for file rates of 1-384 kHz) and
    the output cut or zero-padded to the exact length.  Ratios beyond ``MAX_RESAMPLE_RATIO``
    (1000x) are refused.
    """
    orig_sr = as_int("orig_sr", orig_sr, minimum=1, where="resample")
    target_sr = as_int("target_sr", target_sr, minimum=1, where="resample")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise InputError(f"resample: expected audio shaped [..., T] with T > 0, got shape {x.shape}")
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    if up == down:
        return x.astype(np.float32)
    if target_sr > MAX_RESAMPLE_RATIO * orig_sr or orig_sr > MAX_RESAMPLE_RATIO * target_sr:
        raise InputError(f"resample: {orig_sr} Hz -> {target_sr} Hz changes the rate by more than "
                         f"{MAX_RESAMPLE_RATIO}x; supported: ratios up to {MAX_RESAMPLE_RATIO}")
    n_exact = -(-x.shape[-1] * up // down)
    if max(up, down) > MAX_RESAMPLE_TERM:
        up, down = _approximate_ratio(up, down)
        return _fit_length(_resample_poly(x, up, down), n_exact)
    return _resample_poly(x, up, down)


def _approximate_ratio(up: int, down: int) -> tuple[int, int]:
    """The closest fraction to up/down whose terms are both <= MAX_RESAMPLE_TERM."""
    if up >= down:
        f = Fraction(down, up).limit_denominator(MAX_RESAMPLE_TERM)
        return f.denominator, f.numerator
    f = Fraction(up, down).limit_denominator(MAX_RESAMPLE_TERM)
    return f.numerator, f.denominator


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad the last axis to n samples (an approximated ratio can be one sample off)."""
    if y.shape[-1] >= n:
        return np.ascontiguousarray(y[..., :n])
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])])


def _resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    h = _resample_filter(up, down)
    half = (h.size - 1) // 2
    n_in = x.shape[-1]
    n_out = -(-n_in * up // down)
    # y[n] = sum_k x[k] h[half + n*down - k*up]; outputs n = r + q*up share one set of taps.
    n_taps = 2 * half // up + 1
    starts = [-(-(r * down - half) // up) for r in range(up)]  # first input index for output r
    pad_left = max(0, -min(starts))
    last_start = max(s + (n_out - 1 - r) // up * down for r, s in enumerate(starts) if r < n_out)
    pad_right = max(0, last_start + n_taps - n_in)
    xp = np.pad(x.reshape(-1, n_in), ((0, 0), (pad_left, pad_right)))
    windows = sliding_window_view(xp, n_taps, axis=-1)
    out = np.empty((xp.shape[0], n_out), dtype=np.float64)
    chunk = 1 << 14
    for r in range(min(up, n_out)):
        idx = half + r * down - starts[r] * up - up * np.arange(n_taps)
        taps = np.where(idx >= 0, h[np.clip(idx, 0, None)], 0.0)
        count = (n_out - 1 - r) // up + 1
        rows = windows[:, starts[r] + pad_left :: down][:, :count]
        for c in range(0, count, chunk):
            out[:, r + c * up : r + min(c + chunk, count) * up : up] = rows[:, c : c + chunk] @ taps
    return out.reshape(*x.shape[:-1], n_out).astype(np.float32)

