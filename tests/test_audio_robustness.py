"""Out-of-style variants of the test sounds (mmedge.data.sound_variants) do what their conditions
claim, measured from the output alone, and the robustness evaluation runs the shipped SoundNet demo
through the same machinery as `evaluate_audio`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmedge.data import sound_variants as sv
from mmedge.data import sounds
from mmedge.errors import InputError

SR = 16000
ONE_PER_CLASS = list(sounds.split("test")[: len(sounds.CLASSES)])


def _clean(seed: int, condition: sv.Condition, **kw) -> np.ndarray:
    """The same variant without background: the reference its SNR is measured against."""
    return sv.variant(seed, sv.replace(condition, snr_db=math.inf, noise="white"), **kw).audio


def _spectral_slope(x: np.ndarray, sr: int, lo: float = 100.0, hi: float = 4000.0) -> float:
    """Slope of log power vs log frequency (Welch average of Hann-windowed 1024-sample frames)."""
    n = 1024
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n)[:: n // 2] * np.hanning(n)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    keep = (f >= lo) & (f <= hi)
    return float(np.polyfit(np.log(f[keep]), np.log(power[keep]), 1)[0])


# ------------------------------------------------------------------------ the transforms
def test_the_default_condition_is_make_clip_exactly() -> None:
    for seed in ONE_PER_CLASS:
        np.testing.assert_array_equal(sv.variant(seed, sv.Condition()).audio, sounds.make_clip(seed).audio)
        assert sv.variant(seed, sv.CONDITIONS["in-style"]).name == sounds.make_clip(seed).name
    ours = sv.variant(3, sv.Condition(), 8000, min_samples=20000)
    np.testing.assert_array_equal(ours.audio, sounds.make_clip(3, 8000, min_samples=20000).audio)


def test_variants_are_deterministic_and_keep_the_class() -> None:
    for name in ("snr-5", "pink-snr-5", "len-0.5s", "loop-5s", "overdrive-6dB", "rate-8k"):
        a = sv.variant(2_000_007, sv.CONDITIONS[name])
        b = sv.variant(2_000_007, sv.CONDITIONS[name])
        np.testing.assert_array_equal(a.audio, b.audio)
        assert (a.label, a.name, a.seed, a.sample_rate) == (7, sounds.CLASSES[7], 2_000_007, SR)
        assert a.audio.dtype == np.float32 and np.isfinite(a.audio).all()
    assert not np.array_equal(sv.variant(2_000_000, sv.CONDITIONS["snr-5"]).audio[:8000],
                              sv.variant(2_000_010, sv.CONDITIONS["snr-5"]).audio[:8000])


@pytest.mark.parametrize("noise", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr_db", [40.0, 20.0, 5.0, 0.0])
def test_background_is_at_the_asked_snr(noise: str, snr_db: float) -> None:
    cond = sv.Condition(snr_db=snr_db, noise=noise)
    for seed in ONE_PER_CLASS[::3]:
        noisy = sv.variant(seed, cond).audio
        assert abs(sv.measured_snr_db(noisy, _clean(seed, cond)) - snr_db) <= 0.5, (seed, noise, snr_db)


def test_background_has_the_asked_colour() -> None:
    seed = ONE_PER_CLASS[0]  # a tone: the residual after removing it is the background alone
    slopes = {}
    for noise in ("white", "pink", "brown"):
        cond = sv.Condition(snr_db=0.0, noise=noise, seconds=5.0)
        noisy, clean = sv.variant(seed, cond).audio.astype(np.float64), _clean(seed, cond).astype(np.float64)
        rest = noisy - clean * (noisy @ clean) / (clean @ clean)
        slopes[noise] = _spectral_slope(rest, SR)
    assert abs(slopes["white"]) < 0.2 and abs(slopes["pink"] + 1) < 0.2 and abs(slopes["brown"] + 2) < 0.2, slopes


def test_no_noise_has_no_background_and_own_snr_is_the_clips() -> None:
    seed = ONE_PER_CLASS[1]
    assert sv.measured_snr_db(sv.variant(seed, sv.CONDITIONS["no-noise"]).audio,
                              sv.variant(seed, sv.CONDITIONS["no-noise"]).audio) > 100
    own = sv.measured_snr_db(sounds.make_clip(seed).audio, sv.variant(seed, sv.CONDITIONS["no-noise"]).audio)
    assert sounds.SNR_DB_RANGE[0] - 0.5 <= own <= sounds.SNR_DB_RANGE[1] + 0.5


@pytest.mark.parametrize("gain", [0.005, 0.3, 0.99])
def test_peak_gain_is_exact(gain: float) -> None:
    for seed in ONE_PER_CLASS[::2]:
        for cond in (sv.Condition(gain=gain), sv.Condition(gain=gain, snr_db=10.0, noise="pink")):
            assert float(np.abs(sv.variant(seed, cond).audio).max()) == float(np.float32(gain))


def test_overdrive_clips_at_full_scale() -> None:
    seed = ONE_PER_CLASS[0]
    clipped = {}
    for name in ("overdrive-6dB", "overdrive-20dB"):
        x = sv.variant(seed, sv.CONDITIONS[name]).audio
        assert float(np.abs(x).max()) == 1.0
        clipped[name] = float(np.mean(np.abs(x) == 1.0))
    assert 0 < clipped["overdrive-6dB"] < clipped["overdrive-20dB"]
    assert float(np.mean(np.abs(sv.variant(seed, sv.CONDITIONS["gain-0.99"]).audio) == 1.0)) == 0.0


def test_lengths_are_exact() -> None:
    for seed in ONE_PER_CLASS[::3]:
        for seconds in (0.5, 1.0, 3.0, 5.0):
            for extend in ("render", "loop"):
                x = sv.variant(seed, sv.Condition(seconds=seconds, extend=extend)).audio
                assert x.shape == (int(round(seconds * SR)),)
        assert sv.variant(seed, sv.CONDITIONS["len-min"], min_samples=6422).audio.shape == (6422,)
        assert sv.variant(seed, sv.CONDITIONS["len-min"], min_samples=2400).audio.shape == (2400,)


def test_a_shorter_clip_is_the_centre_and_a_loop_repeats() -> None:
    seed = ONE_PER_CLASS[4]
    full = sounds.make_clip(seed).audio.astype(np.float64)
    part = sv.variant(seed, sv.CONDITIONS["len-0.5s"]).audio.astype(np.float64)
    start = (full.shape[0] - part.shape[0]) // 2
    centre = full[start : start + part.shape[0]]
    np.testing.assert_allclose(part, centre * (np.abs(part).max() / np.abs(centre).max()), atol=1e-6)
    looped = sv.variant(seed, sv.CONDITIONS["loop-5s"]).audio
    n = full.shape[0]
    np.testing.assert_array_equal(looped[n : 2 * n], looped[:n])


def test_recording_rate_band_limits_and_keeps_the_length() -> None:
    seed = ONE_PER_CLASS[4]  # white noise: energy up to the Nyquist frequency
    def high_share(x: np.ndarray) -> float:
        p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        return float(p[np.fft.rfftfreq(x.shape[0], 1 / SR) > 4500].sum() / p.sum())
    own = sounds.make_clip(seed).audio
    low = sv.variant(seed, sv.CONDITIONS["rate-8k"]).audio
    assert low.shape == own.shape and high_share(own) > 0.3 and high_share(low) < 1e-3
    high = sv.variant(seed, sv.CONDITIONS["rate-44.1k"]).audio
    assert abs(high.shape[0] - own.shape[0]) <= 1 and high_share(high) > 0.3


def test_conditions_parse_and_refuse_nonsense() -> None:
    assert sv.parse_condition("snr-5") is sv.CONDITIONS["snr-5"]
    assert sv.parse_condition("snr_db=12,noise=pink") == sv.Condition(snr_db=12.0, noise="pink")
    assert sv.parse_condition("seconds=min").seconds == sv.MIN_LENGTH
    for bad in ("snr-7", "volume=3", "noise=blue,snr_db=3"):
        with pytest.raises(ValueError):
            sv.parse_condition(bad)
    for kwargs in ({"noise": "pink"}, {"gain": 0.0}, {"seconds": -1.0}, {"seconds": "max"},
                   {"extend": "mirror"}, {"record_rate": 8000, "seconds": 1.0}):
        with pytest.raises(ValueError):
            sv.Condition(**kwargs)
    assert sv.Condition().describe() == "the test clip as is"
    assert sv.CONDITIONS["pink-snr-5"].describe() == "pink background at SNR 5 dB"


# ------------------------------------------------------------------------ the evaluation
SAMPLE = 20  # two clips of every class


@pytest.fixture(scope="module")
def soundnet_reference():
    pytest.importorskip("torch")
    from mmedge.calibration.eval_audio import TorchAudioPredictor

    return TorchAudioPredictor("soundnet", "demo")


def test_shipped_soundnet_in_style_through_the_robustness_path(soundnet_reference) -> None:
    from mmedge.calibration.eval_audio_robustness import evaluate_audio_robustness

    # "in-style" clips are make_clip's (test_the_default_condition_is_make_clip_exactly), run by
    # evaluate_audio's predictor and result code: this is the figure test_demo_audio.py checks
    results = evaluate_audio_robustness(soundnet_reference, ["in-style"], limit=SAMPLE)
    ours = results["in-style"]
    assert (ours.model, ours.source, ours.samples) == ("soundnet", "pytorch", SAMPLE)
    assert ours.metrics["top1"] >= 0.9, ours.details
    assert ours.details["condition"] == "in-style" and ours.details["changes"] == "the test clip as is"
    assert sum(map(sum, ours.details["confusion"]["matrix"])) == SAMPLE


def test_clips_of_exactly_min_samples_are_accepted(soundnet_reference) -> None:
    from mmedge.calibration.eval_audio_robustness import evaluate_audio_robustness, model_min_samples

    assert model_min_samples(soundnet_reference) == 6422
    result = evaluate_audio_robustness(soundnet_reference, {"shortest": sv.CONDITIONS["len-min"]}, limit=10)
    assert list(result) == ["shortest"] and result["shortest"].samples == 10


def test_robustness_refuses_unknown_conditions_and_bad_limits(soundnet_reference) -> None:
    from mmedge.calibration.eval_audio_robustness import evaluate_audio_robustness

    with pytest.raises(InputError, match="condition"):
        evaluate_audio_robustness(soundnet_reference, ["snr-7"], limit=2)
    with pytest.raises(InputError, match="limit"):
        evaluate_audio_robustness(soundnet_reference, ["in-style"], limit=0)
    with pytest.raises(InputError, match="no conditions"):
        evaluate_audio_robustness(soundnet_reference, [], limit=2)
