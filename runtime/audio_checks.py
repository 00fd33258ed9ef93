"""Checks shared by the audio front-end modules: integer arguments and decoded samples.

Bad input raises :class:`mmedge.errors.InputError` with one line naming the file (or the
function) and what was expected, the same wording whichever audio module found it.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from mmedge.errors import InputError


class SilentAudioWarning(UserWarning):
    """Audio that is all zeros: the model will see silence."""


def as_int(what: str, value: Any, minimum: int, where: str) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are refused (``where``: the caller, for the message)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{where}: {what} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{where}: {what} must be >= {minimum}, got {value}")
    return int(value)


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
