"""The audio front-end's split into modules: the facade and the spectrogram-kind table stay true.

`mmedge.runtime.audio` is the public name space; the code lives in runtime/wav.py, resample.py,
stft.py, mel.py, spectrogram.py and audio_checks.py. These tests catch a name that a module adds
but the facade forgets, and a front-end whose manifest keys drift from its function's parameters.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

from mmedge.errors import InputError
from mmedge.runtime import audio, spectrogram

SUBMODULES = ("audio_checks", "wav", "resample", "stft", "mel", "spectrogram")
NOT_REEXPORTED = {"as_int"}  # the submodules' shared argument check, not front-end API


def _public_names(module) -> set[str]:
    """Names a module defines itself (not imports) and does not mark private."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", module.__name__) == module.__name__
            and not inspect.ismodule(value) and name not in {"annotations"}}


@pytest.mark.parametrize("name", SUBMODULES)
def test_facade_reexports_every_public_name(name):
    module = importlib.import_module(f"mmedge.runtime.{name}")
    public = _public_names(module) - NOT_REEXPORTED
    assert public, f"runtime/{name}.py defines no public name"
    missing = sorted(public - set(audio.__all__))
    assert not missing, f"mmedge.runtime.audio does not re-export {missing} from runtime/{name}.py"
    for n in public:
        assert getattr(audio, n) is getattr(module, n), n


def test_facade_all_resolves():
    for n in audio.__all__:
        assert hasattr(audio, n), n


@pytest.mark.parametrize("kind", sorted(spectrogram.FRONT_ENDS))
def test_front_end_keys_match_the_function(kind):
    front_end = spectrogram.FRONT_ENDS[kind]
    params = list(inspect.signature(front_end.fn).parameters.values())[1:]  # the first is the audio
    assert front_end.required == {p.name for p in params if p.default is inspect.Parameter.empty}
    assert front_end.optional == {p.name for p in params if p.default is not inspect.Parameter.empty}
    assert not front_end.informational & (front_end.required | front_end.optional)


def test_informational_keys_are_accepted_not_passed():
    x = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    out = audio.spectrogram_from_params(x, {"kind": "stft_powerlaw", "sample_rate": 8000, "hop_length": 80})
    np.testing.assert_array_equal(out, audio.powerlaw_spectrogram(x, hop_length=80))
    with pytest.raises(InputError, match=r"unknown keys \['sample_rat'\]; accepted: \["):
        audio.spectrogram_from_params(x, {"kind": "waveform", "sample_rat": 8000})
