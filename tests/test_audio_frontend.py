"""The torch-free audio front-end (mmedge.runtime.audio) against torch.stft, librosa and scipy.

References: torch (CPU) for stft/windows/power-law; librosa for mel filters and log-mel;
scipy.signal.resample_poly and the analytic sine for resampling; hand-built WAV bytes and
the standard `wave` module for file reading.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmedge.errors import InputError, UnknownNameError
from mmedge.runtime import audio

try:  # the references; the WAV and resampling tests run without them
    import torch
except ImportError:  # pragma: no cover
    torch = None
try:
    import librosa
except ImportError:  # pragma: no cover
    librosa = None
try:
    import scipy.signal as scipy_signal
except ImportError:  # pragma: no cover
    scipy_signal = None

requires_torch = pytest.mark.skipif(torch is None, reason="torch is not installed: pip install 'mmedge[torch]'")
requires_librosa = pytest.mark.skipif(librosa is None, reason="librosa is not installed: pip install librosa")
requires_scipy = pytest.mark.skipif(scipy_signal is None, reason="scipy is not installed: pip install scipy")

STFT_RTOL = {np.float32: 1e-5, np.float64: 1e-10}


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|, with a tiny floor for an all-zero reference."""
    return float(np.max(np.abs(ours - ref), initial=0.0) / max(float(np.max(np.abs(ref), initial=0.0)), 1e-30))


def torch_stft(x, n_fft, hop_length=None, win_length=None, window="hann", center=True, pad_mode="reflect",
               normalized=False, onesided=True):
    """torch.stft on [..., T] (torch takes only 1-D or 2-D input, so fold the batch dims)."""
    xt = torch.from_numpy(np.ascontiguousarray(x))
    wl = n_fft if win_length is None else win_length
    if window is None:
        wt = torch.ones(wl, dtype=xt.dtype)
    elif isinstance(window, str):
        wt = getattr(torch, f"{window}_window")(wl, periodic=True, dtype=xt.dtype)
    else:
        wt = torch.from_numpy(np.asarray(window).astype(x.dtype))
    flat = xt.reshape(-1, x.shape[-1]) if x.ndim > 1 else xt
    y = torch.stft(flat, n_fft, hop_length, win_length, wt, center, pad_mode, normalized, onesided,
                   return_complex=True).numpy()
    return y.reshape(*x.shape[:-1], *y.shape[-2:]) if x.ndim > 1 else y


# --------------------------------------------------------------------------- windows


@requires_torch
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 16, 400, 511, 512, 1024, 2048])
@pytest.mark.parametrize("periodic", [True, False])
def test_windows_match_torch(n, periodic):
    for ours, ref in ((audio.hann_window, torch.hann_window), (audio.hamming_window, torch.hamming_window)):
        w = ours(n, periodic)
        r = ref(n, periodic=periodic).numpy()
        assert w.dtype == np.float32 and w.shape == r.shape
        np.testing.assert_allclose(w, r, rtol=0, atol=1.2e-7)  # within one float32 ulp of 1.0
        w64 = ours(n, periodic, dtype=np.float64)
        np.testing.assert_allclose(w64, ref(n, periodic=periodic, dtype=torch.float64).numpy(), rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- stft


@st.composite
def stft_cases(draw):
    n_fft = draw(st.one_of(st.integers(16, 1024), st.sampled_from([16, 17, 400, 511, 512, 1023, 1024])))
    win_length = draw(st.one_of(st.none(), st.integers(1, n_fft)))
    hop_length = draw(st.one_of(st.none(), st.integers(1, n_fft)))
    window = draw(st.sampled_from(["hann", "hamming", "array", None]))
    center = draw(st.booleans())
    pad_mode = draw(st.sampled_from(["reflect", "constant"]))
    normalized = draw(st.booleans())
    onesided = draw(st.booleans())
    if not center:
        min_len = n_fft
    elif pad_mode == "reflect":
        min_len = n_fft // 2 + 1  # the shortest input torch accepts for reflect padding
    else:
        min_len = n_fft % 2 or 1
    length = draw(st.one_of(st.just(min_len), st.integers(min_len, min_len + 3 * n_fft)))
    batch = draw(st.sampled_from([(), (1,), (3,), (2, 2)]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window, center=center,
                pad_mode=pad_mode, normalized=normalized, onesided=onesided), (*batch, length), dtype, seed


@requires_torch
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stft_cases())
def test_stft_matches_torch(case):
    kwargs, shape, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e3])).astype(dtype)
    if kwargs["window"] == "array":
        kwargs["window"] = rng.uniform(0.1, 1.0, kwargs["win_length"] or kwargs["n_fft"]).astype(dtype)
    ours = audio.stft(x, **kwargs)
    ref = torch_stft(x, **kwargs)
    assert ours.shape == ref.shape
    assert ours.dtype == ref.dtype
    assert rel_err(ours, ref) <= STFT_RTOL[dtype]


@requires_torch
@pytest.mark.parametrize("pad_mode", ["replicate", "circular", "edge"])
def test_stft_other_pad_modes(pad_mode):
    x = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    ours = audio.stft(x, 256, 64, pad_mode=pad_mode)
    ref = torch_stft(x, 256, 64, pad_mode="replicate" if pad_mode == "edge" else pad_mode)
    assert ours.shape == ref.shape and rel_err(ours, ref) <= 1e-5


@requires_torch
def test_stft_realistic_sizes_and_defaults():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(160000).astype(np.float32)
    ours = audio.stft(x, 512, 160, 400)
    ref = torch_stft(x, 512, 160, 400)
    assert ours.shape == (257, 1001) and ours.dtype == np.complex64
    assert rel_err(ours, ref) <= 1e-5
    # hop_length defaults to n_fft // 4, win_length to n_fft
    np.testing.assert_array_equal(audio.stft(x[:4000], 256), audio.stft(x[:4000], 256, 64, 256))
    xb = rng.standard_normal((2, 3, 5000)).astype(np.float32)
    yb = audio.stft(xb, 400, 160)
    assert yb.shape == (2, 3, 201, 32)
    assert rel_err(yb, torch_stft(xb, 400, 160)) <= 1e-5


@pytest.mark.parametrize(
    "kwargs, length, match",
    [
        (dict(n_fft=512), 256, "too short for reflect padding"),
        (dict(n_fft=512, center=False), 511, "shorter than n_fft"),
        (dict(n_fft=0), 1000, "n_fft must be >= 1"),
        (dict(n_fft=64, hop_length=0), 1000, "hop_length must be >= 1"),
        (dict(n_fft=2), 1000, "default hop_length"),
        (dict(n_fft=64, win_length=65), 1000, "win_length=65 must be <= n_fft=64"),
        (dict(n_fft=64, win_length=32, window=np.ones(64)), 1000, "window must be a 1-D array of win_length=32"),
        (dict(n_fft=64, window="blackman"), 1000, "unknown window"),
        (dict(n_fft=64, pad_mode="mirror"), 1000, "unknown pad_mode"),
        (dict(n_fft=64.0), 1000, "n_fft must be an integer"),
        (dict(n_fft=64), 0, "no samples"),
    ],
)
def test_stft_errors(kwargs, length, match):
    with pytest.raises(InputError, match=match):
        audio.stft(np.zeros(length, np.float32), **kwargs)


def test_stft_rejects_integer_input():
    with pytest.raises(InputError, match="float32 or float64"):
        audio.stft(np.zeros(1000, np.int16), 64)


# --------------------------------------------------------------------------- mel


@requires_librosa
@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None, 1.0, 2.0, np.inf])
@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax",
    [(16000, 512, 40, 0.0, None), (16000, 400, 80, 0.0, 8000.0), (22050, 1024, 128, 20.0, None),
     (44100, 2048, 64, 50.0, 14000.0), (8000, 255, 24, 100.0, 3800.0)],
)
def test_mel_filters_match_librosa(htk, norm, sr, n_fft, n_mels, fmin, fmax):
    ours = audio.mel_filters(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_mel_filters_cached_and_read_only():
    a = audio.mel_filters(16000, 512, 40)
    assert audio.mel_filters(16000, 512, 40) is a
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_mel_filters_errors_and_empty_warning():
    with pytest.raises(InputError, match="fmin < fmax"):
        audio.mel_filters(16000, 512, 40, fmin=9000.0)
    with pytest.raises(InputError, match="norm"):
        audio.mel_filters(16000, 512, 40, norm="l2")
    with pytest.warns(UserWarning, match="empty"):
        audio.mel_filters(16000, 64, 128)


@requires_librosa
@pytest.mark.parametrize("htk", [False, True])
def test_hz_mel_conversions_match_librosa(htk):
    f = np.array([0.0, 20.0, 440.0, 999.9, 1000.0, 1000.1, 4000.0, 11025.0, 22050.0])
    np.testing.assert_allclose(audio.hz_to_mel(f, htk), librosa.hz_to_mel(f, htk=htk), rtol=1e-12)
    m = audio.hz_to_mel(f, htk)
    np.testing.assert_allclose(audio.mel_to_hz(m, htk), librosa.mel_to_hz(m, htk=htk), rtol=1e-12)
    np.testing.assert_allclose(audio.mel_to_hz(m, htk), f, rtol=1e-12, atol=1e-9)
    assert np.ndim(audio.hz_to_mel(440.0, htk)) == 0
    assert audio.hz_to_mel(440.0, htk) == pytest.approx(librosa.hz_to_mel(440.0, htk=htk), rel=1e-12)


def chirp(sr: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    f0, f1 = 50.0, 0.4 * sr  # logarithmic sweep f0 -> f1
    k = math.log(f1 / f0) / seconds
    return (0.5 * np.cos(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)).astype(np.float32)


@requires_librosa
@pytest.mark.parametrize("htk, norm", [(False, "slaney"), (True, None)])
@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_log_mel_matches_librosa(htk, norm, pad_mode):
    sr = 22050
    y = chirp(sr)
    kw = dict(n_fft=1024, hop_length=256, n_mels=64, htk=htk, norm=norm, pad_mode=pad_mode)
    mel_ref = librosa.feature.melspectrogram(y=y, sr=sr, power=2.0, **kw)
    mel = audio.log_mel_spectrogram(y, sr, log=None, **kw)
    assert mel.shape == mel_ref.shape and mel.dtype == np.float32
    assert rel_err(mel, mel_ref) <= 1e-5
    db_ref = librosa.power_to_db(mel_ref, ref=1.0, amin=1e-10, top_db=80.0)
    db = audio.log_mel_spectrogram(y, sr, top_db=80.0, **kw)
    # relative power error e shows as 10 log10(1 + e) dB; 5e-3 dB allows e ~ 1e-3 on the quietest bins kept
    np.testing.assert_allclose(db, db_ref, rtol=0, atol=5e-3)
    assert db.max() - db.min() <= 80.0 + 1e-4
    ln = audio.log_mel_spectrogram(y, sr, log="ln", top_db=80.0, **kw)
    np.testing.assert_allclose(ln, db_ref * (math.log(10) / 10), rtol=0, atol=5e-3 * math.log(10) / 10)


@requires_torch
def test_log_mel_options():
    y = chirp(16000, 1.0)
    common = (16000, 512, 160, 40)
    db = audio.log_mel_spectrogram(y, *common)
    np.testing.assert_allclose(audio.log_mel_spectrogram(y, *common, log=None), 10 ** (db / 10), rtol=1e-4, atol=1e-10)
    mag = audio.log_mel_spectrogram(y, *common, power=1.0, log=None)
    spec = np.abs(torch_stft(y, 512, 160))
    np.testing.assert_allclose(mag, audio.mel_filters(16000, 512, 40) @ spec, rtol=1e-4, atol=1e-6)
    # top_db for "ln" keeps the same dynamic range, in nepers
    ln = audio.log_mel_spectrogram(y, *common, log="ln", top_db=40.0)
    assert ln.max() - ln.min() == pytest.approx(40.0 * math.log(10) / 10, rel=1e-5)
    # batched: top_db applies per spectrogram, so an item does not depend on its batch mates
    batch = np.stack([y, 0.01 * y])
    b = audio.log_mel_spectrogram(batch, *common, top_db=60.0)
    np.testing.assert_allclose(b[1], audio.log_mel_spectrogram(0.01 * y, *common, top_db=60.0), atol=1e-4)
    with pytest.raises(InputError, match="log must be"):
        audio.log_mel_spectrogram(y, *common, log="log10")
    with pytest.raises(InputError, match="power must be a positive number"):
        audio.log_mel_spectrogram(y, *common, power=0)


@requires_librosa
def test_power_to_db_matches_librosa():
    s = np.random.default_rng(6).exponential(size=(40, 100)).astype(np.float32) ** 8
    for top_db in (None, 80.0, 20.0):
        np.testing.assert_allclose(audio.power_to_db(s, top_db=top_db),
                                   librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=top_db), rtol=0, atol=1e-5)
    one_d = s[0]
    np.testing.assert_allclose(audio.power_to_db(one_d, top_db=30.0), librosa.power_to_db(one_d, top_db=30.0), atol=1e-5)


# --------------------------------------------------------------------------- power-law / dispatch


@requires_torch
def test_powerlaw_matches_independent_torch():
    x = np.random.default_rng(2).standard_normal((2, 16000)).astype(np.float32)
    ours = audio.powerlaw_spectrogram(x)
    spec = torch.stft(torch.from_numpy(x), 512, 160, 400, torch.hann_window(400), center=True,
                      pad_mode="reflect", return_complex=True)
    parts = torch.stack([spec.real, spec.imag], dim=-3)
    ref = (torch.sign(parts) * parts.abs().pow(0.3)).numpy()
    assert ours.shape == ref.shape == (2, 2, 257, 101) and ours.dtype == np.float32
    # v -> sign(v)|v|^p is p-Hoelder with constant 2^(1-p): the stft's 1e-5 parity bounds this
    bound = 2**0.7 * (1e-5 * float(spec.abs().max())) ** 0.3
    assert np.abs(ours - ref).max() <= bound
    # Near zero the compression amplifies float32 rounding (frame 0's imaginary part is 0 in exact
    # arithmetic and ~1e-6 in both torch and numpy, i.e. +-0.02 after compression); away from it:
    big = np.abs(parts.numpy()) > 1e-3 * float(parts.abs().max())
    assert np.max(np.abs(ours - ref)[big] / np.abs(ref)[big]) <= 1e-4  # measured 1.4e-5


def test_spectrogram_from_params_dispatch():
    x = np.random.default_rng(3).standard_normal(8000).astype(np.float32)
    p = dict(kind="stft_powerlaw", sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
             window="hann", center=True, pad_mode="reflect", power=0.3)
    np.testing.assert_array_equal(audio.spectrogram_from_params(x, p), audio.powerlaw_spectrogram(x))
    m = dict(kind="log_mel", sample_rate=16000, n_fft=400, hop_length=160, n_mels=80, top_db=80.0)
    np.testing.assert_array_equal(audio.spectrogram_from_params(x, m),
                                  audio.log_mel_spectrogram(x, 16000, 400, 160, 80, top_db=80.0))
    w = audio.spectrogram_from_params(x.astype(np.float64), {"kind": "waveform", "sample_rate": 16000})
    assert w.dtype == np.float32 and np.array_equal(w, x)
    with pytest.raises(UnknownNameError, match="stft_powerlaw"):
        audio.spectrogram_from_params(x, {"kind": "mfcc"})
    with pytest.raises(InputError, match="missing keys .'n_mels'."):
        audio.spectrogram_from_params(x, {"kind": "log_mel", "sample_rate": 16000, "n_fft": 400, "hop_length": 160})
    with pytest.raises(InputError, match="unknown keys .'nfft'."):
        audio.spectrogram_from_params(x, {**p, "nfft": 512})
    with pytest.raises(InputError, match="'kind'"):
        audio.spectrogram_from_params(x, {"n_fft": 512})


# --------------------------------------------------------------------------- WAV files


def wav_bytes(samples: np.ndarray, rate: int, tag: int, bits: int, extensible: bool = False,
              extra_chunks: bytes = b"", data_size: int | None = None) -> bytes:
    """A RIFF/WAVE file by hand. samples: [frames, channels] already in the on-disk dtype."""
    frames = np.asarray(samples)
    channels = frames.shape[1]
    if bits == 24:
        raw = (frames.astype("<i4").reshape(-1, 1).view(np.uint8)[:, :3]).tobytes()
    else:
        raw = frames.tobytes()
    block = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks
    body += b"data" + struct.pack("<I", len(raw) if data_size is None else data_size) + raw
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_with_wave(path: Path, ints: np.ndarray, width: int, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(ints.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 3:
            w.writeframes(ints.astype("<i4").reshape(-1, 1).view(np.uint8)[:, :3].tobytes())
        else:
            w.writeframes(ints.astype({1: np.uint8, 2: "<i2", 4: "<i4"}[width]).tobytes())


PCM_CASES = {  # width -> (integer samples, expected floats)
    1: (np.array([0, 64, 128, 192, 255]), np.array([-1.0, -0.5, 0.0, 0.5, 127 / 128])),
    2: (np.array([-32768, -16384, 0, 16384, 32767]), np.array([-1.0, -0.5, 0.0, 0.5, 32767 / 32768])),
    3: (np.array([-(2**23), -(2**22), 0, 2**22, 2**23 - 1]), np.array([-1.0, -0.5, 0.0, 0.5, (2**23 - 1) / 2**23])),
    4: (np.array([-(2**31), -(2**30), 0, 2**30, 2**31 - 1]), np.array([-1.0, -0.5, 0.0, 0.5, 1.0])),
}


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_pcm_written_by_wave_module(tmp_path, width):
    ints, expected = PCM_CASES[width]
    path = tmp_path / f"pcm{8 * width}.wav"
    write_with_wave(path, ints[:, None], width, 16000)
    x, sr = audio.read_wav(path)
    assert sr == 16000 and x.dtype == np.float32 and x.shape == (5,)
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("width", [2, 3])
def test_read_pcm_extensible(tmp_path, width):
    ints, expected = PCM_CASES[width]
    path = tmp_path / "ext.wav"
    path.write_bytes(wav_bytes(ints[:, None].astype("<i2" if width == 2 else "<i4"), 8000, 1, 8 * width, extensible=True))
    x, sr = audio.read_wav(path)
    assert sr == 8000
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype, bits", [("<f4", 32), ("<f8", 64)])
@pytest.mark.parametrize("extensible", [False, True])
def test_read_float_wav(tmp_path, dtype, bits, extensible):
    samples = np.array([[-1.0, 0.25], [0.5, -0.125], [1.5, 0.0]], dtype=dtype)  # floats are not clipped
    path = tmp_path / "float.wav"
    # a LIST chunk (odd size, padded) before data must be skipped
    extra = b"LIST" + struct.pack("<I", 5) + b"abcde\x00"
    path.write_bytes(wav_bytes(samples, 44100, 3, bits, extensible, extra_chunks=extra))
    x, sr = audio.read_wav(path, mono=False)
    assert sr == 44100 and x.shape == (2, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, samples.T.astype(np.float32))
    mono, _ = audio.read_wav(path)
    np.testing.assert_allclose(mono, samples.mean(axis=1), rtol=1e-7)


def test_stereo_to_mono(tmp_path):
    left = np.array([1000, -2000, 3000, 0], np.int16)
    right = np.array([3000, 2000, -3000, 32767], np.int16)
    path = tmp_path / "stereo.wav"
    write_with_wave(path, np.stack([left, right], axis=1), 2, 22050)
    mono, _ = audio.read_wav(path)
    np.testing.assert_allclose(mono, (left.astype(float) + right) / 2 / 32768, atol=1e-7)
    both, _ = audio.read_wav(path, mono=False)
    np.testing.assert_allclose(both, np.stack([left, right]) / 32768, atol=1e-7)


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    x = np.clip(rng.standard_normal(4000) * 0.3, -1.2, 1.2).astype(np.float32)
    path = tmp_path / "out.wav"
    audio.write_wav(path, x, 16000)
    y, sr = audio.read_wav(path)
    assert sr == 16000 and y.shape == x.shape
    np.testing.assert_allclose(y, np.clip(x, -1.0, 32767 / 32768), rtol=0, atol=0.5 / 32768 + 1e-7)
    with wave.open(str(path)) as w:  # a plain 16-bit PCM file for any reader
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 4000)
    # read -> write -> read is bit-identical; stereo round-trips as [channels, T]
    audio.write_wav(tmp_path / "again.wav", y, 16000)
    assert (tmp_path / "again.wav").read_bytes() == path.read_bytes()
    st2 = np.stack([y, -y])
    audio.write_wav(tmp_path / "st.wav", st2, 8000)
    z, _ = audio.read_wav(tmp_path / "st.wav", mono=False)
    np.testing.assert_array_equal(z, np.clip(st2, -1.0, 32767 / 32768))
    audio.write_wav(tmp_path / "i16.wav", np.array([1, -2, 3], np.int16), 8000)
    np.testing.assert_array_equal(audio.read_wav(tmp_path / "i16.wav")[0] * 32768, [1, -2, 3])


def test_write_wav_is_atomic(tmp_path):
    path = tmp_path / "keep.wav"
    audio.write_wav(path, np.zeros(10, np.float32) + 0.5, 16000)
    before = path.read_bytes()
    with pytest.raises(InputError, match="keep.wav"):
        audio.write_wav(path, np.array([0.1, np.nan], np.float32), 16000)
    audio.write_wav(path, np.full(10, 0.25), 16000)  # overwrite in place
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]  # no temp files left behind
    with pytest.raises(InputError, match=r"\[T\] or \[channels, T\]"):
        audio.write_wav(path, np.zeros((1, 2, 3)), 16000)


SINE_RESAMPLE_BOUND = 2e-3  # the passband ripple of resample_poly's Kaiser(5) filter, below 0.4 x Nyquist


@requires_scipy
@pytest.mark.parametrize("sr_in, sr_out", [(8000, 16000), (44100, 22050), (44100, 16000)])
def test_read_wav_resamples(tmp_path, sr_in, sr_out):
    t = np.arange(sr_in) / sr_in
    x = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    path = tmp_path / "sine.wav"
    path.write_bytes(wav_bytes(x.astype("<f4")[:, None], sr_in, 3, 32))
    y, sr = audio.read_wav(path, sample_rate=sr_out)
    assert sr == sr_out and y.dtype == np.float32 and y.shape == (sr_out,)
    g = math.gcd(sr_in, sr_out)
    ref = scipy_signal.resample_poly(x.astype(np.float32).astype(np.float64), sr_out // g, sr_in // g)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
    analytic = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(sr_out) / sr_out)
    edge = sr_out // 50
    assert np.abs(y - analytic)[edge:-edge].max() <= SINE_RESAMPLE_BOUND * 0.5


@requires_scipy
def test_resample_matches_scipy_random_batched():
    x = np.random.default_rng(5).standard_normal((2, 3, 1001))
    for a, b in [(16000, 8000), (22050, 44100), (48000, 44100), (3, 7)]:
        ref = scipy_signal.resample_poly(x, b // math.gcd(a, b), a // math.gcd(a, b), axis=-1)
        ours = audio.resample(x, a, b)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(audio.resample(x, 16000, 16000), x.astype(np.float32))


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("zero.wav", b"", "empty file"),
        ("text.wav", b"hello, this is not a wave file at all", "not a RIFF/WAVE file"),
        ("riff_avi.wav", b"RIFF\x10\x00\x00\x00AVI LIST\x00\x00\x00\x00", "not a RIFF/WAVE file"),
        ("big.wav", b"RIFX\x10\x00\x00\x00WAVE", "RIFX"),
        ("trunc.wav", wav_bytes(np.zeros((100, 1), "<i2"), 16000, 1, 16, data_size=400), "truncated data chunk"),
        ("nodata.wav", wav_bytes(np.zeros((4, 1), "<i2"), 16000, 1, 16)[:36], "no data chunk"),
        ("empty_data.wav", wav_bytes(np.zeros((0, 1), "<i2"), 16000, 1, 16), "no audio samples"),
        ("nan.wav", wav_bytes(np.array([[0.0], [np.nan]], "<f4"), 16000, 3, 32), "NaN or Inf"),
        ("inf.wav", wav_bytes(np.array([[np.inf], [0.0]], "<f8"), 16000, 3, 64), "NaN or Inf"),
        ("alaw.wav", wav_bytes(np.zeros((4, 1), np.uint8), 8000, 6, 8), "unsupported WAV encoding A-law"),
        ("mulaw.wav", wav_bytes(np.zeros((4, 1), np.uint8), 8000, 7, 8), "mu-law"),
        ("f16.wav", wav_bytes(np.zeros((4, 1), "<f2"), 8000, 3, 16), "IEEE float .16-bit"),
        ("adpcm.wav", wav_bytes(np.zeros((4, 1), "<i2"), 8000, 2, 16), "Microsoft ADPCM"),
    ],
)
def test_read_wav_errors_name_the_file(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        audio.read_wav(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_wav_missing_and_directory(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(InputError, match="no such file") as info:
        audio.read_wav(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(InputError, match="is a directory"):
        audio.read_wav(tmp_path)


def test_check_audio():
    x = np.array([0.1, -0.2], np.float32)
    assert audio.check_audio(x, "a.wav") is x
    with pytest.raises(InputError, match="a.wav: no audio samples"):
        audio.check_audio(np.zeros(0, np.float32), "a.wav")
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(InputError, match="b.wav: contains NaN or Inf"):
            audio.check_audio(np.array([0.0, bad]), "b.wav")
    with pytest.raises(InputError, match="c.wav: expected real-valued"):
        audio.check_audio(np.array(["x"]), "c.wav")
    with pytest.warns(audio.SilentAudioWarning, match="d.wav: audio is silent"):
        audio.check_audio(np.zeros((2, 100), np.float32), "d.wav")


def test_runtime_audio_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import mmedge.runtime.audio as a; a.stft(a.np.ones(1000, 'float32'), 64)"
    subprocess.run([sys.executable, "-c", code], check=True)
