"""The torch-free audio front-end: WAV I/O, resampling, STFT, mel and power-law spectrograms.

Modelled on openai/whisper's ``whisper/audio.py``: a handful of pure functions, the defaults
named at the top, the mel filters computed once and cached.  This module is the front-end's one
public name space; the work is split by job into modules that import only numpy and the
standard library (they run on devices without PyTorch):

* :mod:`mmedge.runtime.wav`: reading and validating WAV files, writing 16-bit PCM.
* :mod:`mmedge.runtime.resample`: rational-factor resampling (scipy's resample_poly, in numpy).
* :mod:`mmedge.runtime.stft`: windows and the STFT with torch.stft's semantics; its frame loop
  and threads are :mod:`mmedge.runtime.stft_blocks`.
* :mod:`mmedge.runtime.mel`: mel scales and the mel filterbank (librosa's).
* :mod:`mmedge.runtime.spectrogram`: log-mel and power-law spectrograms, and the model input an
  artifact's manifest describes (:func:`spectrogram_from_params`).
* :mod:`mmedge.runtime.audio_checks`: the argument and sample checks they share.

The tests check every function against ``torch.stft``, ``librosa`` and
``scipy.signal.resample_poly``.

Conventions
-----------
* Audio arrays are ``[..., T]`` with time on the last axis; a multichannel WAV
  read with ``mono=False`` is ``[channels, T]``.
* :func:`stft` mirrors ``torch.stft(..., return_complex=True)`` (details in
  :mod:`mmedge.runtime.stft`): float32 input gives complex64, float64 input
  complex128, and the result is bitwise the same for any worker count.
* Bad arguments raise :class:`mmedge.errors.InputError` with a one-line message
  that names the file (or the function) and what was expected.
"""

from __future__ import annotations

import numpy as np  # noqa: F401  (callers and tests reach numpy as ``audio.np``)

from mmedge.runtime.audio_checks import SilentAudioWarning, check_audio
from mmedge.runtime.mel import hz_to_mel, mel_filters, mel_to_hz
from mmedge.runtime.resample import MAX_RESAMPLE_RATIO, MAX_RESAMPLE_TERM, resample
from mmedge.runtime.spectrogram import (
    FRONT_ENDS,
    HOP_LENGTH,
    N_FFT,
    POWER_LAW,
    SAMPLE_RATE,
    WIN_LENGTH,
    FrontEnd,
    linear_view,
    log_mel_spectrogram,
    power_to_db,
    powerlaw_spectrogram,
    spectrogram_from_params,
)
from mmedge.runtime.stft import hamming_window, hann_window, stft
from mmedge.runtime.wav import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, read_wav, write_wav

__all__ = [
    "FRONT_ENDS",
    "HOP_LENGTH",
    "MAX_RESAMPLE_RATIO",
    "MAX_RESAMPLE_TERM",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "N_FFT",
    "POWER_LAW",
    "SAMPLE_RATE",
    "WIN_LENGTH",
    "FrontEnd",
    "SilentAudioWarning",
    "check_audio",
    "hamming_window",
    "hann_window",
    "hz_to_mel",
    "linear_view",
    "log_mel_spectrogram",
    "mel_filters",
    "mel_to_hz",
    "power_to_db",
    "powerlaw_spectrogram",
    "read_wav",
    "resample",
    "spectrogram_from_params",
    "stft",
    "write_wav",
]
