"""Mel scales (HTK and Slaney's) and the triangular mel filterbank, equal to librosa's.

Computed in float64 and cached: a filterbank costs more than the matrix product that applies it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from functools import lru_cache

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.audio_checks import as_int

# Slaney's "auditory toolbox" mel scale, as librosa implements it: linear below
# 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(frequencies, htk: bool = False):
    """Hz to mels, HTK (``2595 log10(1 + f / 700)``) or Slaney's scale (librosa's default)."""
    f = np.asarray(frequencies, dtype=np.float64)
    if htk:
        mels = 2595.0 * np.log10(1.0 + f / 700.0)
    else:
        linear = f / _SLANEY_F_SP
        log_part = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
        mels = np.where(f >= _SLANEY_MIN_LOG_HZ, log_part, linear)
    return mels[()] if mels.ndim == 0 else mels


def mel_to_hz(mels, htk: bool = False):
    """Mels to Hz, the inverse of :func:`hz_to_mel`."""
    m = np.asarray(mels, dtype=np.float64)
    if htk:
        hz = 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    else:
        linear = _SLANEY_F_SP * m
        log_part = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (np.maximum(m, _SLANEY_MIN_LOG_MEL) - _SLANEY_MIN_LOG_MEL))
        hz = np.where(m >= _SLANEY_MIN_LOG_MEL, log_part, linear)
    return hz[()] if hz.ndim == 0 else hz


@lru_cache(maxsize=32)
def mel_filters(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | float | None = "slaney",
) -> np.ndarray:
    """Triangular mel filterbank ``[n_mels, n_fft // 2 + 1]`` float32, equal to ``librosa.filters.mel``.

    norm: "slaney" (each triangle divided by its width in Hz / 2: constant energy per band),
    None (peak 1), or a number p (each row scaled to unit p-norm, as librosa.util.normalize).
    The result is cached and read-only; copy it before modifying.
    """
    where = "mel_filters"
    sample_rate = as_int("sample_rate", sample_rate, minimum=1, where=where)
    n_fft = as_int("n_fft", n_fft, minimum=1, where=where)
    n_mels = as_int("n_mels", n_mels, minimum=1, where=where)
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fmin = float(fmin)
    if not (0.0 <= fmin < fmax):
        raise InputError(f"{where}: expected 0 <= fmin < fmax, got fmin={fmin}, fmax={fmax}")
    if not (norm is None or norm == "slaney" or (isinstance(norm, numbers.Real) and not isinstance(norm, bool) and norm > 0)):
        raise InputError(f"{where}: norm must be 'slaney', None or a positive number, got {norm!r}")

    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_pts = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    widths = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (mel_pts[2:] - mel_pts[:-2]))[:, None]
    elif norm is not None:  # unit p-norm rows, as librosa.util.normalize (all-zero rows stay zero)
        if math.isinf(norm):
            length = np.max(weights, axis=-1, keepdims=True)
        else:
            length = np.sum(weights**norm, axis=-1, keepdims=True) ** (1.0 / norm)
        weights = weights / np.where(length < np.finfo(np.float32).tiny, 1.0, length)
    if not np.all((mel_pts[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn(
            f"{where}: some of the {n_mels} mel filters are empty; n_mels is too high for n_fft={n_fft}", stacklevel=2
        )
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights

