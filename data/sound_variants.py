"""Out-of-style variants of the synthetic test sounds (`mmedge.data.sounds`), for robustness figures.

The demo audio models are trained on clips of 1.0-2.0 s, peak gain 0.05-0.9 and white
background noise 15-40 dB below the sound.  A `Condition` names what a variant changes
instead -- the background's level and colour, the peak gain (above 1: overdriven and
hard-clipped), the length, or the rate the clip was recorded at -- and `variant(seed,
condition, ...)` derives that clip from the test clip of `seed`, deterministically: the
sound itself (class, pitch, sweep, clicks ...) and the random draws of its background
are the ones `sounds.make_clip(seed)` makes, so a condition changes only what it names
and the default `Condition()` reproduces `make_clip`'s clip sample for sample.

Order of the transform: render the clean sound (long enough for the asked length) ->
cut the centre or loop to the length -> add the background (the clip's own, or its white
draws coloured, decorrelated from the sound and scaled to exactly the asked SNR over the
final clip) -> pass through the recording rate -> set the peak gain -> clip to [-1, 1] ->
float32.

    >>> v = variant(2_000_003, CONDITIONS["snr-5"])
    >>> v.name, v.audio.dtype
    ('chirp_down', dtype('float32'))

numpy only; the recording-rate condition resamples with the runtime's own resampler
(`mmedge.runtime.resample`, what `read_wav` applies to a file at another rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from mmedge.data import sounds

NOISE_COLOURS: dict[str, float] = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1/f^alpha
MIN_LENGTH = "min"  # `Condition.seconds`: the shortest clip the model's manifest allows (min_samples)


@dataclass(frozen=True)
class Condition:
    """What a variant changes; None keeps the test clip's own value.

    snr_db: sound RMS over background RMS, measured over the final clip (math.inf: no background);
        the background is made uncorrelated with the sound, so this is also the clip's SI-SNR.
    noise: the background's colour (white/pink/brown); coloured backgrounds are the clip's own
        white draws shaped like `sounds`' pink/brown noise classes (nothing below 30 Hz).
    gain: peak amplitude after mixing; above 1 the clip is overdriven and hard-clipped at +-1.
    seconds: exact length (or MIN_LENGTH); a shorter clip is the centre of the clip, a longer one
        the same sound rendered longer (`extend="render"`, e.g. a slower sweep) or the clip looped.
    record_rate: the clip was recorded at this rate (rendered there, or band-limited to it) and is
        resampled to the model's rate, as the runtime does with a WAV file at another rate.
    """

    snr_db: float | None = None
    noise: str = "white"
    gain: float | None = None
    seconds: float | str | None = None
    extend: str = "render"  # "render" | "loop"
    record_rate: int | None = None

    def __post_init__(self) -> None:
        if self.noise not in NOISE_COLOURS:
            raise ValueError(f"noise must be one of {sorted(NOISE_COLOURS)}, got {self.noise!r}")
        if self.noise != "white" and self.snr_db is None:
            raise ValueError("a coloured background needs snr_db (the clip's own background is white)")
        if self.snr_db is not None and math.isnan(self.snr_db):
            raise ValueError("snr_db must be a number (math.inf: no background)")
        if self.gain is not None and not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"gain must be a positive peak amplitude, got {self.gain}")
        if isinstance(self.seconds, str) and self.seconds != MIN_LENGTH:
            raise ValueError(f"seconds must be a number or {MIN_LENGTH!r}, got {self.seconds!r}")
        if isinstance(self.seconds, (int, float)) and not self.seconds > 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")
        if self.extend not in ("render", "loop"):
            raise ValueError(f"extend must be 'render' or 'loop', got {self.extend!r}")
        if self.record_rate is not None and (self.record_rate < 1000 or self.seconds is not None):
            raise ValueError("record_rate must be >= 1000 Hz and is not combined with seconds")

    def describe(self) -> str:
        """What differs from the test clips, in words, e.g. "pink background at SNR 5 dB"."""
        parts = []
        if self.snr_db is not None:
            parts.append("no background" if math.isinf(self.snr_db) else
                         f"{self.noise} background at SNR {self.snr_db:g} dB")
        if self.gain is not None:
            parts.append(f"peak {self.gain:.3g}" + (" (overdriven, clipped at 1)" if self.gain > 1 else ""))
        if self.seconds is not None:
            if self.seconds == MIN_LENGTH:
                parts.append("centre cut to the model's min_samples")
            else:
                longer = "looped" if self.extend == "loop" else "rendered longer"
                how = ("centre cut" if self.seconds <= sounds.MIN_SECONDS else
                       longer if self.seconds >= sounds.MAX_SECONDS else f"centre cut or {longer}")
                parts.append(f"{self.seconds:g} s ({how})")
        if self.record_rate is not None:
            parts.append(f"recorded at {self.record_rate / 1000:g} kHz, resampled by the runtime")
        return ", ".join(parts) or "the test clip as is"


# The conditions of the robustness table, in its order.  In style: white background 15-40 dB,
# gain 0.05-0.9, 1.0-2.0 s at 16 kHz.
CONDITIONS: dict[str, Condition] = {
    "in-style": Condition(),
    "no-noise": Condition(snr_db=math.inf),
    "snr-40": Condition(snr_db=40.0),
    "snr-20": Condition(snr_db=20.0),
    "snr-10": Condition(snr_db=10.0),
    "snr-5": Condition(snr_db=5.0),
    "snr-0": Condition(snr_db=0.0),
    "pink-snr-20": Condition(snr_db=20.0, noise="pink"),
    "pink-snr-5": Condition(snr_db=5.0, noise="pink"),
    "brown-snr-20": Condition(snr_db=20.0, noise="brown"),
    "brown-snr-5": Condition(snr_db=5.0, noise="brown"),
    "gain-0.02": Condition(gain=0.02),
    "gain-0.005": Condition(gain=0.005),
    "gain-0.99": Condition(gain=0.99),
    "overdrive-6dB": Condition(gain=10 ** (6 / 20)),
    "overdrive-20dB": Condition(gain=10.0),
    "len-min": Condition(seconds=MIN_LENGTH),
    "len-0.5s": Condition(seconds=0.5),
    "len-1s": Condition(seconds=1.0),
    "len-3s": Condition(seconds=3.0),
    "len-5s": Condition(seconds=5.0),
    "loop-5s": Condition(seconds=5.0, extend="loop"),
    "rate-8k": Condition(record_rate=8000),
    "rate-44.1k": Condition(record_rate=44100),
}

_FIELD_TYPES = {"snr_db": float, "gain": float, "noise": str, "extend": str, "record_rate": int}


def parse_condition(text: str) -> Condition:
    """A named condition (`CONDITIONS`) or ``key=value[,key=value...]`` of `Condition`'s fields,
    e.g. ``snr_db=12,noise=pink`` or ``seconds=min``."""
    if text in CONDITIONS:
        return CONDITIONS[text]
    kwargs: dict[str, object] = {}
    for item in text.split(","):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in {f.name for f in fields(Condition)}:
            raise ValueError(f"{text!r}: expected a condition name ({', '.join(CONDITIONS)}) or key=value "
                             f"pairs of {[f.name for f in fields(Condition)]}")
        if key == "seconds":
            kwargs[key] = value if value == MIN_LENGTH else float(value)
        else:
            kwargs[key] = _FIELD_TYPES[key](value)
    return replace(Condition(), **kwargs)


@dataclass(frozen=True)
class _Parts:
    """What `sounds.make_clip` mixes: the clean sound (unit RMS, faded), its white background draws
    (unit variance) and the levels it drew."""

    sound: np.ndarray
    white: np.ndarray
    snr_db: float
    gain: float
    label: int


def _parts(seed: int, sample_rate: int, min_samples: int) -> _Parts:
    """`sounds.make_clip`'s steps up to the mix, with the same random streams.

    A copy of make_clip's first half (sounds.py exposes no hook for its unmixed parts);
    tests/test_audio_robustness.py checks that mixing these gives make_clip's clip exactly.
    """
    seed = int(seed)
    label = seed % len(sounds.CLASSES)
    rng = np.random.default_rng([seed, 0x50D5])
    seconds = rng.uniform(sounds.MIN_SECONDS, sounds.MAX_SECONDS)
    n = max(int(round(seconds * sample_rate)), int(min_samples))
    sig_rng, noise_rng, level_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, size=3))
    x = sounds._signal(sounds.CLASSES[label], sig_rng, n, sample_rate)
    x = x / max(float(np.sqrt(np.mean(x * x))), 1e-12)
    fade = min(n // 4, int(level_rng.uniform(0.005, 0.03) * sample_rate))
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        x[:fade] *= ramp
        x[n - fade :] *= ramp[::-1]
    snr_db = level_rng.uniform(*sounds.SNR_DB_RANGE)
    white = noise_rng.standard_normal(n)
    gain = sounds._log_uniform(level_rng, *sounds.GAIN_RANGE)
    return _Parts(x, white, float(snr_db), gain, label)


def _fit(x: np.ndarray, n: int, extend: str) -> np.ndarray:
    """x cut to its centre n samples, or (extend "loop") tiled up to n."""
    if x.shape[0] >= n:
        start = (x.shape[0] - n) // 2
        return x[start : start + n]
    if extend != "loop":
        raise AssertionError("a rendered clip is never shorter than the asked length")
    return np.tile(x, -(-n // x.shape[0]))[:n]


def _colour(white: np.ndarray, sample_rate: int, alpha: float) -> np.ndarray:
    """White draws shaped to a 1/f^alpha power spectrum above 30 Hz, as sounds' noise classes are."""
    if alpha == 0:
        return white
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(white.shape[0], 1.0 / sample_rate)
    shape = np.zeros_like(f)
    keep = f >= 30.0
    shape[keep] = (f[keep] / 30.0) ** (-alpha / 2)
    return np.fft.irfft(spec * shape, white.shape[0])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


def _through_rate(x: np.ndarray, rendered: int, record: int, target: int) -> np.ndarray:
    from mmedge.runtime.resample import resample

    if record < target:  # a recorder at a lower rate band-limits the sound; the runtime resamples up
        return resample(resample(x, rendered, record), record, target).astype(np.float64)[: x.shape[0]]
    return resample(x, rendered, target).astype(np.float64)


def length_samples(condition: Condition, sample_rate: int, min_samples: int = 0) -> int | None:
    """The exact length a condition asks for at `sample_rate` (None: the clip's own)."""
    if condition.seconds is None:
        return None
    if condition.seconds == MIN_LENGTH:
        return max(1, int(min_samples))
    return max(1, int(round(float(condition.seconds) * sample_rate)))


def variant(seed: int, condition: Condition, sample_rate: int = sounds.SAMPLE_RATE,
            min_samples: int = 0) -> sounds.Clip:
    """The test clip of `seed` under `condition`, at `sample_rate` (float32, peak <= 1).

    `min_samples` is the model's shortest input (the manifest's `min_samples`): clips are never
    shorter, except that `seconds` sets the length exactly (MIN_LENGTH: exactly `min_samples`).
    """
    c = condition
    target = length_samples(c, sample_rate, min_samples)
    render_rate = max(sample_rate, c.record_rate or 0)
    if target is None:
        floor = -(-int(min_samples) * render_rate // sample_rate)
    else:
        floor = target if c.extend == "render" else 0
    p = _parts(seed, render_rate, floor)
    sound, white = p.sound, p.white
    if target is not None:
        sound, white = _fit(sound, target, c.extend), _fit(white, target, c.extend)
    if c.snr_db is None:  # the clip's own background, mixed exactly as make_clip mixes it
        x = sound + white * 10 ** (-p.snr_db / 20)
    elif math.isinf(c.snr_db):
        x = sound.copy()
    else:
        background = _colour(white, render_rate, NOISE_COLOURS[c.noise])
        # without its chance correlation with the sound, so that the powers add and the SI-SNR of the
        # result (measured_snr_db) is the asked SNR: two low-frequency noises of 2 s correlate by ~0.1
        background = background - sound * (float(background @ sound) / max(float(sound @ sound), 1e-300))
        x = sound + background * (_rms(sound) / max(_rms(background), 1e-12) * 10 ** (-c.snr_db / 20))
    if c.record_rate is not None:
        x = _through_rate(x, render_rate, c.record_rate, sample_rate)
    gain = p.gain if c.gain is None else float(c.gain)
    x = x * (gain / max(float(np.abs(x).max()), 1e-12))
    label = p.label
    return sounds.Clip(np.clip(x, -1.0, 1.0).astype(np.float32), label, sounds.CLASSES[label], int(seed),
                       sample_rate)


def measured_snr_db(noisy: np.ndarray, clean: np.ndarray) -> float:
    """Scale-invariant SNR (SI-SNR) of `noisy` against the same sound without background (`clean`,
    any scale): the part of `noisy` along `clean` is the sound, the rest the background.  Computed
    from the outputs alone, so tests can check a condition's SNR without the transform's internals."""
    a, b = noisy.astype(np.float64), clean.astype(np.float64)
    sound = b * (float(a @ b) / float(b @ b))
    rest = a - sound
    return 10.0 * math.log10(float(sound @ sound) / max(float(rest @ rest), 1e-300))
