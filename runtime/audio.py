"""The torch-free audio front-end: WAV I/O, resampling, STFT, mel and power-law spectrograms.

Modelled on openai/whisper's ``whisper/audio.py``: a handful of pure functions,
the defaults named at the top, the mel filters computed once and cached.  Only
numpy and the standard library are imported here (this module runs on devices
without PyTorch); the tests check every function against ``torch.stft``,
``librosa`` and ``scipy.signal.resample_poly``.

Conventions
-----------
* Audio arrays are ``[..., T]`` with time on the last axis; a multichannel WAV
  read with ``mono=False`` is ``[channels, T]``.
* :func:`stft` mirrors ``torch.stft(..., return_complex=True)``: periodic
  windows built like ``torch.hann_window``, a window shorter than ``n_fft``
  zero-padded on both sides (left pad ``(n_fft - win_length) // 2``),
  ``center=True`` pads ``n_fft // 2`` samples on both sides, ``normalized=True``
  scales by ``n_fft ** -0.5`` (torch's "frame_length" normalization), output
  ``[..., freq, frames]`` (a transposed view, like torch's).  float32 input
  gives complex64, float64 input complex128.  With scipy installed the FFT is
  scipy.fft's in the input's precision; without it, numpy.fft in float64 (numpy
  2.x's float32 FFT is slower than its float64 one).  Either way the error against
  ``torch.stft`` stays below 1e-5 x max |X| (typically 2e-7).  Long inputs are
  transformed on several threads (``workers``, ``MMEDGE_STFT_WORKERS``), with
  bitwise the same result for any worker count.
* Bad arguments raise :class:`mmedge.errors.InputError` with a one-line message
  that names the file (or the function) and what was expected.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import stat
import struct
import warnings
import wave
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mmedge.atomic import atomic_path
from mmedge.errors import InputError, UnknownNameError
from mmedge.runtime import stft_blocks

# Defaults: the Speech2Face voice-encoder front-end (16 kHz, 25 ms Hann window,
# 10 ms hop, 512-point FFT, power-law compression 0.3).
SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
POWER_LAW = 0.3

# Slaney's "auditory toolbox" mel scale, as librosa implements it: linear below
# 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


class SilentAudioWarning(UserWarning):
    """Audio that is all zeros: the model will see silence."""


# ----------------------------------------------------------------------------- windows


def _cosine_window(n: int, periodic: bool, alpha: float, beta: float, dtype) -> np.ndarray:
    # Torch's recipe, step by step in the target dtype (so float32 windows agree with torch's to
    # an ulp): k * (2 pi / (N - 1)) over N = n + 1 points when periodic, cos, * -beta, + alpha.
    n = _as_int("window length", n, minimum=0, where="window")
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


def _as_int(what: str, value: Any, minimum: int, where: str = "stft") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{where}: {what} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{where}: {what} must be >= {minimum}, got {value}")
    return int(value)


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
    and transformed block by block (:mod:`mmedge.runtime.stft_blocks`), with scipy.fft in the
    input's precision when installed, else numpy.fft in float64.  workers: the FFT's threads
    for a long input (None: ``MMEDGE_STFT_WORKERS``, else the CPUs this process may use;
    numpy.fft uses one); the result is bitwise the same for any worker count.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise InputError(f"stft: expected a float32 or float64 array, got dtype {x.dtype}")
    if x.ndim < 1:
        raise InputError("stft: expected an array shaped [..., T], got a scalar")
    n_fft = _as_int("n_fft", n_fft, minimum=1)
    if hop_length is None:
        hop_length = n_fft // 4
        if hop_length < 1:
            raise InputError(f"stft: the default hop_length n_fft // 4 is 0 for n_fft={n_fft}; pass hop_length >= 1")
    hop_length = _as_int("hop_length", hop_length, minimum=1)
    win_length = n_fft if win_length is None else _as_int("win_length", win_length, minimum=1)
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
    # The padded signal in the input's dtype, built by hand (np.pad is ~4x slower for this).
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


# ----------------------------------------------------------------------------- mel


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
    sample_rate = _as_int("sample_rate", sample_rate, minimum=1, where=where)
    n_fft = _as_int("n_fft", n_fft, minimum=1, where=where)
    n_mels = _as_int("n_mels", n_mels, minimum=1, where=where)
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


def power_to_db(s: np.ndarray, amin: float = 1e-10, top_db: float | None = None) -> np.ndarray:
    """``librosa.power_to_db(s, ref=1.0, amin, top_db)``, with the top_db floor taken per
    spectrogram (over the last two axes) rather than over the whole batch."""
    s = np.asarray(s)
    db = 10.0 * np.log10(np.maximum(s, s.dtype.type(amin)))
    if top_db is not None:
        per_item = tuple(range(max(db.ndim - 2, 0), db.ndim))
        db = np.maximum(db, db.max(axis=per_item, keepdims=True) - db.dtype.type(top_db))
    return db


def _log_compress(s: np.ndarray, log: str | None, amin: float, top_db: float | None) -> np.ndarray:
    if log is None:
        return s
    if log == "db":
        return power_to_db(s, amin=amin, top_db=top_db)
    if log == "ln":
        out = np.log(np.maximum(s, s.dtype.type(amin)))
        if top_db is not None:  # the same dynamic range, in nepers
            floor = out.max(axis=(-2, -1), keepdims=True) - top_db * math.log(10.0) / 10.0
            out = np.maximum(out, floor.astype(out.dtype))
        return out
    raise InputError(f"log_mel_spectrogram: log must be 'db', 'ln' or None, got {log!r}")


def log_mel_spectrogram(
    x: np.ndarray,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    win_length: int | None = None,
    window: str | np.ndarray | None = "hann",
    center: bool = True,
    pad_mode: str = "reflect",
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | float | None = "slaney",
    power: float = 2.0,
    log: str | None = "db",
    top_db: float | None = None,
    amin: float = 1e-10,
) -> np.ndarray:
    """Log-mel spectrogram ``[..., n_mels, frames]`` (float32 for float32 input).

    ``mel_filters(...) @ |stft(x)| ** power``, then
    log="db": ``10 log10(max(S, amin))`` (librosa.power_to_db with ref=1.0; with power=2.0 and
    pad_mode="constant" this is ``power_to_db(librosa.feature.melspectrogram(...))``),
    log="ln": ``ln(max(S, amin))``, log=None: no compression.  top_db clamps each spectrogram
    to ``max - top_db`` dB (the same range in nepers for "ln"); None (the default, unlike
    librosa.power_to_db's 80) keeps everything above amin.  The padding default is torch's
    "reflect"; librosa >= 0.10 defaults to "constant", so pass it to match librosa.
    """
    if not (isinstance(power, numbers.Real) and power > 0):
        raise InputError(f"log_mel_spectrogram: power must be a positive number, got {power!r}")
    spec = stft(x, n_fft, hop_length, win_length, window, center, pad_mode)
    if power == 2.0:
        mag = _squared_magnitude(spec)
    elif power == 1.0:
        mag = np.abs(spec)
    else:
        mag = np.abs(spec) ** power
    basis = mel_filters(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm).astype(mag.dtype, copy=False)
    return _log_compress(np.matmul(basis, mag), log, amin, top_db)


# ----------------------------------------------------------------------------- power-law spectrogram


def powerlaw_spectrogram(
    x: np.ndarray,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    win_length: int = WIN_LENGTH,
    window: str | np.ndarray | None = "hann",
    center: bool = True,
    pad_mode: str = "reflect",
    power: float = POWER_LAW,
) -> np.ndarray:
    """Speech2Face voice-encoder input: ``[..., 2, n_fft // 2 + 1, frames]`` float32.

    Channel 0 is the real part of the STFT, channel 1 the imaginary part, each compressed
    as ``sign(v) * |v| ** power``.
    """
    spec = stft(np.asarray(x, dtype=np.float32), n_fft, hop_length, win_length, window, center, pad_mode)
    out = np.empty((*spec.shape[:-2], 2, *spec.shape[-2:]), dtype=np.float32)
    out[..., 0, :, :] = spec.real
    out[..., 1, :, :] = spec.imag
    p = np.float32(power)

    def compress(v: np.ndarray) -> None:  # sign(v) * |v| ** p, in place, in the order torch writes it
        mag = np.abs(v)
        np.power(mag, p, out=mag)
        np.sign(v, out=v)
        np.multiply(v, mag, out=v)

    stft_blocks.map_chunks(out.reshape(-1), compress, stft_blocks.default_workers())
    return out


def _squared_magnitude(spec: np.ndarray) -> np.ndarray:
    """``spec.real ** 2 + spec.imag ** 2`` for :func:`stft`'s result, squaring its (fresh) buffer in place."""
    base = spec.swapaxes(-1, -2)  # the C-contiguous [..., frames, freq] array stft allocated
    if not base.flags.c_contiguous:
        return spec.real**2 + spec.imag**2
    parts = base.view(base.real.dtype).reshape(*base.shape, 2)
    np.square(parts, out=parts)
    return np.add(parts[..., 0], parts[..., 1]).swapaxes(-1, -2)


def _waveform(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# kind -> (function, keys accepted besides the function's own parameters)
_SPECTROGRAM_KINDS: dict[str, tuple[Callable[..., np.ndarray], tuple[str, ...]]] = {
    "stft_powerlaw": (powerlaw_spectrogram, ("sample_rate",)),
    "log_mel": (log_mel_spectrogram, ()),
    "waveform": (_waveform, ("sample_rate",)),
}


def linear_view(y: np.ndarray, params: dict) -> np.ndarray:
    """A front-end's output mapped back before its compression, in float64.

    Power-law and log compression multiply float32 rounding near zero (d/dv |v|^0.3 is
    unbounded at 0), so two correct STFTs on different CPUs can differ by 0.03 after
    ``sign(v)|v|^0.3`` while agreeing to 1e-7 of the peak before it. Comparisons of
    front-end outputs (goldens, ports) are well conditioned in this view.
    """
    kind = params.get("kind") if isinstance(params, dict) else None
    y = np.asarray(y, dtype=np.float64)
    if kind == "stft_powerlaw":
        return np.sign(y) * np.abs(y) ** (1.0 / float(params.get("power", POWER_LAW)))
    if kind == "log_mel":
        log = params.get("log", "db")
        return 10.0 ** (y / 10.0) if log == "db" else np.exp(y) if log == "ln" else y
    if kind == "waveform":
        return y
    raise UnknownNameError("spectrogram kind", str(kind), list(_SPECTROGRAM_KINDS))


def spectrogram_from_params(x: np.ndarray, params: dict) -> np.ndarray:
    """The model input for ``x`` as an artifact's manifest describes it.

    ``params["kind"]`` picks the front-end ("stft_powerlaw", "log_mel" or "waveform"); the other
    keys are that function's arguments.  "sample_rate" is informational for "stft_powerlaw" and
    "waveform" (the caller resamples to it).  Missing required keys and unknown keys are errors.
    """
    if not isinstance(params, dict) or "kind" not in params:
        raise InputError(f"spectrogram params: expected a dict with a 'kind' key, got {params!r}")
    kind = params["kind"]
    if kind not in _SPECTROGRAM_KINDS:
        raise UnknownNameError("spectrogram kind", str(kind), list(_SPECTROGRAM_KINDS))
    fn, informational = _SPECTROGRAM_KINDS[kind]
    sig = list(inspect.signature(fn).parameters.values())[1:]
    accepted = {p.name for p in sig} | set(informational)
    required = {p.name for p in sig if p.default is inspect.Parameter.empty}
    args = {k: v for k, v in params.items() if k != "kind"}
    unknown = sorted(set(args) - accepted)
    missing = sorted(required - set(args))
    if unknown or missing:
        problems = ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])
        raise InputError(f"spectrogram params for kind {kind!r}: {'; '.join(problems)}; accepted: {sorted(accepted)}")
    own = {p.name for p in sig}
    return fn(x, **{k: v for k, v in args.items() if k in own})


# ----------------------------------------------------------------------------- resampling

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
    orig_sr = _as_int("orig_sr", orig_sr, minimum=1, where="resample")
    target_sr = _as_int("target_sr", target_sr, minimum=1, where="resample")
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
    from fractions import Fraction

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


# ----------------------------------------------------------------------------- WAV I/O

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x0161: "WMA",
    0x1610: "AAC",
    0xF1AC: "FLAC",
}


MIN_SAMPLE_RATE = 1_000  # the sample rates read_wav accepts, in Hz (checked before any decoding)
MAX_SAMPLE_RATE = 384_000
_MAX_FMT_CHUNK = 1 << 16  # a fmt chunk is 16..40 bytes; anything this large is not a WAV header


def _parse_riff(f: Any, file_size: int, name: str) -> tuple[dict, int, int]:
    """The fmt fields and (offset, size) of the data chunk of a RIFF/WAVE file, reading only the
    chunk headers (the data chunk's size is checked against the file's real size, not trusted)."""
    if file_size == 0:
        raise InputError(f"{name}: empty file, expected a RIFF/WAVE file")
    head = f.read(12)
    if head[:4] in (b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        raise InputError(f"{name}: {head[:4].decode()} WAV files are not supported; expected a little-endian RIFF/WAVE file")
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise InputError(f"{name}: not a RIFF/WAVE file")
    fmt = None
    pos = 12
    while pos + 8 <= file_size:
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            break
        chunk_id, size = chunk[:4], struct.unpack_from("<I", chunk, 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or size > _MAX_FMT_CHUNK or body + size > file_size:
                raise InputError(f"{name}: truncated or malformed fmt chunk")
            raw = f.read(size)
            if len(raw) < size:
                raise InputError(f"{name}: truncated or malformed fmt chunk")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", raw, 0)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                tag = struct.unpack_from("<H", raw, 24)[0]  # first two bytes of the sub-format GUID
            fmt = {"tag": tag, "channels": channels, "rate": rate, "block_align": block_align, "bits": bits}
        elif chunk_id == b"data":
            if fmt is None:
                raise InputError(f"{name}: data chunk before the fmt chunk; not a valid WAV file")
            available = file_size - body
            if size > available:
                raise InputError(f"{name}: truncated data chunk (header says {size} bytes, file has {available})")
            return fmt, body, size
        pos = body + size + (size & 1)
    if fmt is None:
        raise InputError(f"{name}: no fmt chunk; not a valid WAV file")
    raise InputError(f"{name}: no data chunk; the file is truncated or not a valid WAV file")


def _check_format(fmt: dict, size: int, name: str, max_seconds: float | None) -> str:
    """The sample encoding; refuses a malformed or out-of-range header before any sample is read."""
    tag, channels, block_align, rate = fmt["tag"], fmt["channels"], fmt["block_align"], fmt["rate"]
    if channels < 1 or rate < 1 or block_align < 1 or block_align % channels:
        raise InputError(f"{name}: malformed fmt chunk (channels={channels}, rate={rate}, block_align={block_align})")
    width = block_align // channels
    if tag == _WAVE_FORMAT_PCM and width in (1, 2, 3, 4):
        encoding = f"pcm{8 * width}"
    elif tag == _WAVE_FORMAT_IEEE_FLOAT and width in (4, 8):
        encoding = f"float{8 * width}"
    else:
        kind = _FORMAT_NAMES.get(tag) or {1: "PCM", 3: "IEEE float"}.get(tag, f"format tag 0x{tag:04x}")
        raise InputError(
            f"{name}: unsupported WAV encoding {kind} ({8 * width}-bit); "
            "expected PCM 8/16/24/32-bit or IEEE float 32/64-bit"
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(f"{name}: sample rate {rate} Hz is outside the supported range "
                         f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    seconds = (size // block_align) / rate
    if max_seconds is not None and seconds > max_seconds:
        raise InputError(f"{name}: {seconds:.0f} s is longer than the {max_seconds:.0f} s this pipeline accepts; "
                         "cut it into clips")
    return encoding


def _decode_samples(data: bytes, fmt: dict, offset: int, size: int, name: str, encoding: str) -> np.ndarray:
    channels, block_align = fmt["channels"], fmt["block_align"]
    n_frames = size // block_align
    if n_frames == 0:
        raise InputError(f"{name}: no audio samples")
    count = n_frames * channels
    if encoding == "pcm8":
        x = (np.frombuffer(data, np.uint8, count, offset).astype(np.float32) - 128.0) * (1.0 / 128.0)
    elif encoding == "pcm16":
        x = np.frombuffer(data, "<i2", count, offset).astype(np.float32) * (1.0 / 32768.0)
    elif encoding == "pcm24":
        raw = np.frombuffer(data, np.uint8, 3 * count, offset).reshape(count, 3)
        wide = np.zeros((count, 4), dtype=np.uint8)
        wide[:, 1:] = raw  # sample << 8 as little-endian int32: the sign comes for free
        x = wide.view("<i4").reshape(count).astype(np.float32) * (1.0 / 2**31)
    elif encoding == "pcm32":
        x = np.frombuffer(data, "<i4", count, offset).astype(np.float32) * (1.0 / 2**31)
    else:
        x = np.frombuffer(data, "<f4" if encoding == "float32" else "<f8", count, offset).astype(np.float32)
        if not np.isfinite(x).all():
            raise InputError(f"{name}: contains NaN or Inf samples")
    return x.reshape(n_frames, channels).T


def read_wav(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True,
             max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read a WAV file as float32 in [-1, 1]: ``([T], rate)`` when mono, else ``([channels, T], rate)``.

    Encodings: PCM unsigned 8-bit, signed 16/24/32-bit, IEEE float 32/64-bit, plain or
    WAVE_FORMAT_EXTENSIBLE (float samples are kept as stored, not clipped).  Channels are
    averaged when ``mono``.  With ``sample_rate`` set and different from the file's, the audio is
    resampled (:func:`resample`) and that rate is returned.

    The RIFF chunks are parsed here rather than with the ``wave`` module, which rejects IEEE
    float files (and, before Python 3.12, WAVE_FORMAT_EXTENSIBLE) and silently shortens a
    truncated data chunk.

    Limits, checked from the header before any sample is read or resampled: the file's rate must
    be ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE`` (1,000..384,000 Hz), the data chunk must fit in the
    file, and with ``max_seconds`` a longer clip is refused.  Only the data chunk is read.
    """
    name = os.fspath(path)
    if sample_rate is not None:
        sample_rate = _as_int("sample_rate", sample_rate, minimum=1, where=name)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(name)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{name}: not a regular file, expected a WAV file")
            fmt, offset, size = _parse_riff(f, st.st_size, name)
            encoding = _check_format(fmt, size, name, max_seconds)
            f.seek(offset)
            data = f.read(size)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, expected a WAV file") from None
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror or e})") from None
    if len(data) < size:
        raise InputError(f"{name}: truncated data chunk (header says {size} bytes, read {len(data)})")
    x = _decode_samples(data, fmt, 0, size, name, encoding)
    rate = fmt["rate"]
    x = x.mean(axis=0, dtype=np.float32) if mono else np.ascontiguousarray(x)
    if sample_rate is not None and sample_rate != rate:
        x, rate = resample(x, rate, sample_rate), sample_rate
    return x, rate


def write_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int) -> None:
    """Write ``[T]`` or ``[channels, T]`` audio as 16-bit PCM, atomically (temp file + os.replace).

    Float input is clipped to [-1, 1] and scaled by 32768 (1.0 becomes 32767), so a 16-bit file
    read by :func:`read_wav` and written back is bit-identical; int16 input is written as is.
    """
    name = os.fspath(path)
    sample_rate = _as_int("sample_rate", sample_rate, minimum=1, where=name)
    a = np.asarray(x)
    if a.ndim not in (1, 2):
        raise InputError(f"{name}: expected audio shaped [T] or [channels, T], got shape {a.shape}")
    if a.dtype == np.int16:
        pcm = a
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise InputError(f"{name}: cannot write NaN or Inf samples")
        pcm = np.clip(np.rint(a.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    else:
        raise InputError(f"{name}: expected float or int16 samples, got dtype {a.dtype}")
    pcm = pcm.reshape(1, -1) if pcm.ndim == 1 else pcm
    with atomic_path(os.path.abspath(name), fsync=True) as tmp, open(tmp, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(pcm.shape[0])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(pcm.T).astype("<i2").tobytes())


def check_audio(x: np.ndarray, name: str = "audio") -> np.ndarray:
    """Reject empty, non-numeric or non-finite audio (InputError); warn on all-zero audio.

    Returns ``np.asarray(x)`` so a pipeline can write ``x = check_audio(x, path)``.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise InputError(f"{name}: expected real-valued audio samples, got dtype {a.dtype}")
    if a.size == 0:
        raise InputError(f"{name}: no audio samples")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError(f"{name}: contains NaN or Inf samples")
    if not a.any():
        warnings.warn(f"{name}: audio is silent (all samples are zero)", SilentAudioWarning, stacklevel=2)
    return a
