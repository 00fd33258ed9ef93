"""Synthetic sound clips in ten classes, for training and evaluating the demo audio models.

Every clip is a pure function of its seed (numpy's PCG64 generator): the class is
``seed % len(CLASSES)`` (so every split is balanced), everything else -- pitch,
chord, sweep range, click rate, modulation rate
and depth, length, gain, background noise and its level -- is drawn from the
seed.  Only numpy and the standard library are imported here.

    >>> clip = make_clip(3, 16000)
    >>> clip.name, clip.audio.dtype, clip.audio.shape[0] >= 16000
    ('chirp_down', dtype('float32'), True)

Classes
-------
tone         a steady harmonic tone (1-3 partials), 150-3000 Hz
chord        3-4 simultaneous notes (major, minor, sus4, dominant-7th triads)
chirp_up     an exponential sweep up by 1.5-4 octaves
chirp_down   the same, downwards
white_noise  flat-spectrum Gaussian noise
pink_noise   1/f noise
brown_noise  1/f^2 noise (above ~30 Hz)
click_train  short damped clicks at 4-30 per second
am_tone      a tone whose loudness pulses at 3-14 Hz (depth 60-100 %)
fm_tone      a tone with a wide vibrato: 3-12 Hz, +-5-15 % of the pitch

Every clip gets a short fade in/out, a random peak gain (0.05-0.9) and white
background noise 15-40 dB below the sound (by RMS); lengths are 1.0-2.0 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES: tuple[str, ...] = (
    "tone", "chord", "chirp_up", "chirp_down", "white_noise", "pink_noise", "brown_noise",
    "click_train", "am_tone", "fm_tone",
)
SAMPLE_RATE = 16000
MIN_SECONDS, MAX_SECONDS = 1.0, 2.0
GAIN_RANGE = (0.05, 0.9)  # peak amplitude, drawn log-uniformly
SNR_DB_RANGE = (15.0, 40.0)  # sound RMS over background-noise RMS

# split name -> (first seed, count); the ranges are disjoint
SPLITS: dict[str, tuple[int, int]] = {
    "train": (0, 3000),
    "val": (1_000_000, 200),
    "test": (2_000_000, 300),
}

# chord shapes in semitones above the root
_CHORDS = ((0, 4, 7), (0, 3, 7), (0, 5, 7), (0, 4, 7, 10))


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray  # float32 [T] in [-1, 1]
    label: int  # index into CLASSES
    name: str  # CLASSES[label]
    seed: int
    sample_rate: int


def split(name: str) -> range:
    """The seeds of a split: "train" (3000), "val" (200) or "test" (300); disjoint ranges."""
    if name not in SPLITS:
        raise KeyError(f"unknown split {name!r}; expected one of {sorted(SPLITS)}")
    start, count = SPLITS[name]
    return range(start, start + count)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _harmonic(rng: np.random.Generator, phase: np.ndarray) -> np.ndarray:
    """A periodic waveform with 1-3 partials, given the fundamental's phase (radians)."""
    n_partials = int(rng.integers(1, 4))
    out = np.zeros_like(phase)
    for k in range(1, n_partials + 1):
        amp = 1.0 if k == 1 else float(rng.uniform(0.1, 0.5)) / k
        out += amp * np.sin(k * phase + rng.uniform(0, 2 * math.pi))
    return out


def _coloured_noise(rng: np.random.Generator, n: int, sr: int, alpha: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^alpha (alpha 0: white, 1: pink, 2: brown)."""
    if alpha == 0:
        return rng.standard_normal(n)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    shape = np.zeros_like(f)
    keep = f >= 30.0  # no DC drift
    shape[keep] = (f[keep] / 30.0) ** (-alpha / 2)
    return np.fft.irfft(spec * shape, n)


def _signal(kind: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    dur = n / sr
    if kind == "tone":
        f0 = _log_uniform(rng, 150.0, 3000.0)
        return _harmonic(rng, 2 * math.pi * f0 * t)
    if kind == "chord":
        root = _log_uniform(rng, 130.0, 1000.0)
        shape = _CHORDS[int(rng.integers(len(_CHORDS)))]
        return sum(rng.uniform(0.6, 1.0) * np.sin(2 * math.pi * root * 2 ** (s / 12) * t + rng.uniform(0, 2 * math.pi))
                   for s in shape)
    if kind in ("chirp_up", "chirp_down"):
        octaves = rng.uniform(1.5, 4.0)
        lo = _log_uniform(rng, 100.0, 6000.0 / 2**octaves)
        f1, f2 = (lo, lo * 2**octaves) if kind == "chirp_up" else (lo * 2**octaves, lo)
        k = math.log(f2 / f1) / dur  # exponential sweep f(t) = f1 e^{k t}
        return _harmonic(rng, 2 * math.pi * f1 * np.expm1(k * t) / k)
    if kind in ("white_noise", "pink_noise", "brown_noise"):
        alpha = {"white_noise": 0.0, "pink_noise": 1.0, "brown_noise": 2.0}[kind]
        return _coloured_noise(rng, n, sr, alpha)
    if kind == "click_train":
        rate = _log_uniform(rng, 4.0, 30.0)
        out = np.zeros(n)
        click_len = int(rng.uniform(0.001, 0.004) * sr)
        decay = np.exp(-np.arange(click_len) / (click_len / 4))
        ring = _log_uniform(rng, 500.0, 5000.0)  # a damped resonance, not a single sample
        click = decay * np.sin(2 * math.pi * ring * np.arange(click_len) / sr + rng.uniform(0, 2 * math.pi))
        click += 0.3 * decay * rng.standard_normal(click_len)
        pos = rng.uniform(0, 1.0 / rate)
        while pos < dur:
            i = int(pos * sr)
            m = min(click_len, n - i)
            out[i : i + m] += click[:m]
            pos += (1.0 / rate) * rng.uniform(0.9, 1.1)
        return out
    if kind == "am_tone":
        f0 = _log_uniform(rng, 150.0, 3000.0)
        rate, depth = rng.uniform(3.0, 14.0), rng.uniform(0.6, 1.0)
        env = 1.0 + depth * np.sin(2 * math.pi * rate * t + rng.uniform(0, 2 * math.pi))
        return env * _harmonic(rng, 2 * math.pi * f0 * t)
    if kind == "fm_tone":
        f0 = _log_uniform(rng, 300.0, 3000.0)
        rate, dev = rng.uniform(3.0, 12.0), rng.uniform(0.05, 0.15)
        # instantaneous frequency f0 (1 + dev sin(2 pi rate t + p)); its integral is the phase
        p = rng.uniform(0, 2 * math.pi)
        phase = 2 * math.pi * f0 * t - f0 * dev / rate * (np.cos(2 * math.pi * rate * t + p) - math.cos(p))
        return _harmonic(rng, phase)
    raise KeyError(kind)


def make_clip(seed: int, sample_rate: int = SAMPLE_RATE, min_samples: int = 0) -> Clip:
    """The clip for `seed` at `sample_rate`: class ``seed % len(CLASSES)``, 1.0-2.0 s long
    (never shorter than `min_samples`), float32 in [-1, 1]."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    label = seed % len(CLASSES)
    kind = CLASSES[label]
    # Separate streams for the signal, the background noise and the levels, all from the seed.
    rng = np.random.default_rng([seed, 0x50D5])
    seconds = rng.uniform(MIN_SECONDS, MAX_SECONDS)
    n = max(int(round(seconds * sample_rate)), int(min_samples))
    sig_rng, noise_rng, level_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, size=3))
    x = _signal(kind, sig_rng, n, sample_rate)
    x = x / max(float(np.sqrt(np.mean(x * x))), 1e-12)  # unit RMS
    fade = min(n // 4, int(level_rng.uniform(0.005, 0.03) * sample_rate))
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        x[:fade] *= ramp
        x[n - fade :] *= ramp[::-1]
    snr_db = level_rng.uniform(*SNR_DB_RANGE)
    x = x + noise_rng.standard_normal(n) * 10 ** (-snr_db / 20)
    gain = _log_uniform(level_rng, *GAIN_RANGE)
    x = x * (gain / max(float(np.abs(x).max()), 1e-12))
    return Clip(np.clip(x, -1.0, 1.0).astype(np.float32), label, kind, seed, sample_rate)


def clips(split_name: str, sample_rate: int = SAMPLE_RATE, limit: int | None = None,
          min_samples: int = 0) -> list[Clip]:
    """All clips of a split (the first `limit` of them)."""
    seeds = split(split_name)
    if limit is not None:
        seeds = seeds[:limit]
    return [make_clip(s, sample_rate, min_samples) for s in seeds]


def write_examples(directory: str | Path, sample_rate: int = SAMPLE_RATE, per_class: int = 1,
                   split_name: str = "test") -> list[Path]:
    """Write `per_class` clips of every class from a split as 16-bit WAVs named ``<class>[_<i>].wav``
    (the bundled examples of ``mmedge demo``); returns the paths in class order."""
    from mmedge.runtime.audio import write_wav

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    start, count = SPLITS[split_name]
    paths = []
    for label, name in enumerate(CLASSES):
        for i in range(per_class):
            seed = start + label + i * len(CLASSES)
            if seed >= start + count:
                raise ValueError(f"split {split_name!r} has fewer than {per_class} clips of {name}")
            path = out / (f"{name}.wav" if per_class == 1 else f"{name}_{i}.wav")
            write_wav(path, make_clip(seed, sample_rate).audio, sample_rate)
            paths.append(path)
    return paths
