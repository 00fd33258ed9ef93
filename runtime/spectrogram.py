"""The model inputs built from audio: log-mel and power-law spectrograms, picked by a manifest's kind.

An artifact's manifest names the front-end (``kind``) and its arguments; :func:`spectrogram_from_params`
checks those keys against the table :data:`FRONT_ENDS` and computes the input, and
:func:`linear_view` maps an output back before its compression for well-conditioned comparisons.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mmedge.errors import InputError, UnknownNameError
from mmedge.runtime import stft_blocks
from mmedge.runtime.mel import mel_filters
from mmedge.runtime.stft import stft

# Defaults: the Speech2Face voice-encoder front-end (16 kHz, 25 ms Hann window,
# 10 ms hop, 512-point FFT, power-law compression 0.3).
SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
POWER_LAW = 0.3


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


@dataclass(frozen=True)
class FrontEnd:
    """One spectrogram kind: its function and the manifest keys it takes, named here rather than
    read from the function's signature (tests/test_audio_modules.py checks they agree)."""

    fn: Callable[..., np.ndarray]
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    informational: frozenset[str] = frozenset()  # accepted and not passed on (the caller resamples to it)

    @property
    def accepted(self) -> frozenset[str]:
        return self.required | self.optional | self.informational


_STFT_KEYS = frozenset({"win_length", "window", "center", "pad_mode"})

FRONT_ENDS: dict[str, FrontEnd] = {
    "stft_powerlaw": FrontEnd(powerlaw_spectrogram,
                              optional=_STFT_KEYS | {"n_fft", "hop_length", "power"},
                              informational=frozenset({"sample_rate"})),
    "log_mel": FrontEnd(log_mel_spectrogram,
                        required=frozenset({"sample_rate", "n_fft", "hop_length", "n_mels"}),
                        optional=_STFT_KEYS | {"fmin", "fmax", "htk", "norm", "power", "log", "top_db", "amin"}),
    "waveform": FrontEnd(_waveform, informational=frozenset({"sample_rate"})),
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
    raise UnknownNameError("spectrogram kind", str(kind), list(FRONT_ENDS))


def spectrogram_from_params(x: np.ndarray, params: dict) -> np.ndarray:
    """The model input for ``x`` as an artifact's manifest describes it.

    ``params["kind"]`` picks the front-end ("stft_powerlaw", "log_mel" or "waveform"); the other
    keys are that function's arguments.  "sample_rate" is informational for "stft_powerlaw" and
    "waveform" (the caller resamples to it).  Missing required keys and unknown keys are errors.
    """
    if not isinstance(params, dict) or "kind" not in params:
        raise InputError(f"spectrogram params: expected a dict with a 'kind' key, got {params!r}")
    kind = params["kind"]
    if kind not in FRONT_ENDS:
        raise UnknownNameError("spectrogram kind", str(kind), list(FRONT_ENDS))
    front_end = FRONT_ENDS[kind]
    args = {k: v for k, v in params.items() if k != "kind"}
    unknown = sorted(set(args) - front_end.accepted)
    missing = sorted(front_end.required - set(args))
    if unknown or missing:
        problems = ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])
        raise InputError(f"spectrogram params for kind {kind!r}: {'; '.join(problems)}; "
                         f"accepted: {sorted(front_end.accepted)}")
    own = front_end.required | front_end.optional
    return front_end.fn(x, **{k: v for k, v in args.items() if k in own})
