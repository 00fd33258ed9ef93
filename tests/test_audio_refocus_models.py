"""The audio encoders (SoundNet-8, voice encoder) and the refocus network: shapes, the
STFT front-end against an independent numpy STFT, the refocus focus/blur rules, and
their registry entries."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mmedge.models import refocus, soundnet, voice_encoder, zoo

SPECS = {"soundnet": soundnet.SPEC, "voice-encoder": voice_encoder.SPEC, "refocus": refocus.SPEC}
INF = float("inf")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], torch.nn.Module]:
    return {(n, c): spec.create(c) for n, spec in SPECS.items() for c in ("tiny", "full")}


def _run(model: torch.nn.Module, spec: zoo.ModelSpec, feeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = spec.graphs[0].wrap(model)(*feeds.values())
    return out if isinstance(out, tuple) else (out,)


# ------------------------------------------------------------------------ registry
def test_registry_lists_the_three_models_with_tiny_and_full() -> None:
    for name, spec in SPECS.items():
        assert zoo.get(name) is spec
        assert {"tiny", "full"} <= set(spec.configs)
        assert [g.name for g in spec.graphs] == ["model"]
    assert (soundnet.SPEC.pipeline, voice_encoder.SPEC.pipeline, refocus.SPEC.pipeline) == ("audio", "audio", "refocus")
    g = {n: s.graphs[0] for n, s in SPECS.items()}
    assert (g["soundnet"].inputs, g["soundnet"].outputs) == (("waveform",), ("objects", "scenes", "embedding"))
    assert (g["voice-encoder"].inputs, g["voice-encoder"].outputs) == (("spectrogram",), ("embedding", "logits"))
    assert (g["refocus"].inputs, g["refocus"].outputs) == (("image", "depth", "near", "far"), ("refocused",))
    assert g["soundnet"].dynamic_axes["waveform"] == {0: "batch", 1: "samples"}
    assert g["voice-encoder"].dynamic_axes["spectrogram"] == {0: "batch", 3: "frames"}
    assert g["refocus"].dynamic_axes["image"] == {0: "batch", 2: "height", 3: "width"}
    for graph in g.values():  # every input and output has at least its batch axis dynamic
        assert set(graph.dynamic_axes) == set(graph.inputs) | set(graph.outputs)
        assert all(axes[0] == "batch" for axes in graph.dynamic_axes.values())


def test_preprocessing_dicts() -> None:
    assert soundnet.SPEC.preprocessing(soundnet.CONFIGS["full"]) == {"kind": "waveform", "sample_rate": 22050}
    assert soundnet.SPEC.preprocessing(soundnet.CONFIGS["tiny"]) == {"kind": "waveform", "sample_rate": 8000}
    want = {"kind": "stft_powerlaw", "sample_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160,
            "window": "hann", "center": True, "pad_mode": "reflect", "power": 0.3}
    for cfg in voice_encoder.CONFIGS.values():
        assert voice_encoder.SPEC.preprocessing(cfg) == want
    assert refocus.SPEC.preprocessing(refocus.CONFIGS["tiny"]) == {"kind": "image_depth", "value_range": [0, 1]}


def test_configs_are_frozen_and_validated() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        soundnet.CONFIGS["full"].n_objects = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        soundnet.SoundNetConfig(widths=(1, 2, 3))
    with pytest.raises(ValueError):
        voice_encoder.VoiceEncoderConfig(window="kaiser")
    with pytest.raises(ValueError):
        refocus.RefocusConfig(blur_sigmas=(4.0, 2.0))
    with pytest.raises(ValueError):
        refocus.RefocusConfig(depth_scale=0.0)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_examples_are_deterministic_in_the_generator(name: str, models) -> None:
    spec = SPECS[name]
    model, cfg, graph = models[name, "tiny"], spec.config("tiny"), spec.graphs[0]
    a, b, c = (graph.example(model, cfg, 2, _gen(s)) for s in (0, 0, 1))
    assert list(a) == list(graph.inputs)
    for k in a:
        assert a[k].dtype == torch.float32 and a[k].shape[0] == 2
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a[graph.inputs[0]], c[graph.inputs[0]])


# ------------------------------------------------------------------------ SoundNet
@pytest.mark.parametrize("config", ["tiny", "full"])
def test_soundnet_shapes(config: str, models) -> None:
    cfg = soundnet.CONFIGS[config]
    feeds = soundnet.SPEC.graphs[0].example(models["soundnet", config], cfg, 2, _gen())
    assert feeds["waveform"].shape[1] >= cfg.min_samples
    assert float(feeds["waveform"].abs().max()) <= 1.0
    objects, scenes, emb = _run(models["soundnet", config], soundnet.SPEC, feeds)
    assert objects.shape == (2, cfg.n_objects) and scenes.shape == (2, cfg.n_scenes)
    assert emb.shape == (2, cfg.widths[-1])
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in (objects, scenes, emb))
    assert float(emb.abs().max()) > 0  # not a dead network


def test_soundnet_full_is_soundnet8() -> None:
    cfg = soundnet.CONFIGS["full"]
    assert (cfg.sample_rate, cfg.widths, cfg.n_objects, cfg.n_scenes, cfg.pools) == (
        22050, (16, 32, 64, 128, 256, 512, 1024), 1000, 401, (8, 8, 4))
    model = soundnet.SoundNet8(cfg)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv1d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0], c.out_channels) for c in convs] == [
        (64, 2, 32, 16), (32, 2, 16, 32), (16, 2, 8, 64), (8, 2, 4, 128), (4, 2, 2, 256), (4, 2, 2, 512),
        (4, 2, 2, 1024)]
    assert [m.kernel_size for m in model.features if isinstance(m, torch.nn.MaxPool1d)] == [8, 8, 4]
    assert model.conv8_objs.kernel_size == (8,) and model.conv8_objs.stride == (2,)


@pytest.mark.parametrize("config", ["tiny", "full"])
def test_soundnet_min_samples_is_exact(config: str, models) -> None:
    cfg = soundnet.CONFIGS[config]
    assert cfg.min_samples == {"tiny": 6422, "full": 209374}[config]
    assert soundnet.frames_out(cfg.min_samples, cfg.pools) == 1
    assert soundnet.frames_out(cfg.min_samples - 1, cfg.pools) == 0
    model = models["soundnet", config]
    with torch.no_grad():
        objects, _, _ = model(torch.zeros(1, cfg.min_samples))
        assert objects.shape == (1, cfg.n_objects)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, cfg.min_samples - 1))


def test_soundnet_any_length_and_internal_scale(models) -> None:
    cfg = soundnet.CONFIGS["tiny"]
    model = models["soundnet", "tiny"]
    outs = []
    for n in (cfg.min_samples, cfg.min_samples + 3001, 3 * cfg.sample_rate):
        w = torch.rand(2, n, generator=_gen(n)) * 2 - 1
        with torch.no_grad():
            outs.append(model(w))
        assert [t.shape for t in outs[-1]] == [(2, 10), (2, 5), (2, 128)]
    assert not torch.allclose(outs[0][0], outs[1][0])
    # The graph takes [-1, 1] and scales by 256 itself: an unscaled copy fed 256 * w agrees.
    unscaled = soundnet.SoundNet8(dataclasses.replace(cfg, input_scale=1.0)).eval()
    unscaled.load_state_dict(model.state_dict())
    w = torch.rand(1, 8000, generator=_gen(5)) * 2 - 1
    with torch.no_grad():
        for a, b in zip(model(w), unscaled(256.0 * w)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        # Outputs are time averages: a long input's embedding is the mean of its conv7 frames.
        feats = model.features(256.0 * w.unsqueeze(1))
        torch.testing.assert_close(model(w)[2], feats.mean(dim=2))
        assert feats.shape[2] > 1


# ------------------------------------------------------------------------ voice encoder
def _numpy_powerlaw_stft(x: np.ndarray, n_fft: int = 512, win: int = 400, hop: int = 160,
                         power: float = 0.3) -> np.ndarray:
    """Independent float64 reference: reflect pad, frame, periodic Hann centred in n_fft, rfft."""
    window = np.zeros(n_fft)
    n = np.arange(win)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)
    padded = np.pad(x.astype(np.float64), [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    n_frames = 1 + (padded.shape[1] - n_fft) // hop
    frames = np.stack([padded[:, i * hop:i * hop + n_fft] for i in range(n_frames)], axis=-1)  # [B, n_fft, F]
    spec = np.fft.rfft(frames * window[None, :, None], axis=1)  # [B, 257, F]
    parts = np.stack([spec.real, spec.imag], axis=1)
    return np.sign(parts) * np.abs(parts) ** power


def test_spectrogram_matches_independent_stft() -> None:
    cfg = voice_encoder.CONFIGS["full"]
    w = torch.rand(2, 4321, generator=_gen(3)) - 0.5
    spec = voice_encoder.spectrogram(w, cfg)
    assert spec.shape == (2, 2, 257, 1 + 4321 // 160) and spec.dtype == torch.float32
    ref = _numpy_powerlaw_stft(w.numpy(), power=1.0)  # the plain STFT parts, float64
    assert ref.shape == spec.shape
    # |x|^0.3 has an infinite slope at 0, so float32 round-off of ~1e-7 in a part that is
    # exactly 0 in float64 (e.g. the imaginary part of the reflect-padded first frame)
    # becomes ~1e-2 after compression. Compare where that cannot happen: undo the power law
    # (float64) and check the STFT to float32 precision, then the compressed values away from 0.
    spec64 = spec.double().numpy()
    uncompressed = np.sign(spec64) * np.abs(spec64) ** (1.0 / 0.3)
    scale = np.abs(ref).max()
    assert scale > 1.0
    np.testing.assert_allclose(uncompressed, ref, atol=2e-6 * scale, rtol=0)
    big = np.abs(ref) > 1e-3 * scale
    assert big.mean() > 0.9
    compressed = np.sign(ref) * np.abs(ref) ** 0.3
    np.testing.assert_allclose(spec64[big], compressed[big], rtol=1e-4, atol=0)
    # Compression really is applied to each part with its sign (not to the magnitude).
    assert (spec < 0).float().mean() > 0.3
    # One unbatched waveform gives the same thing without the batch axis.
    torch.testing.assert_close(voice_encoder.spectrogram(w[1], cfg), spec[1])


@pytest.mark.parametrize("config", ["tiny", "full"])
def test_voice_encoder_shapes(config: str, models) -> None:
    cfg = voice_encoder.CONFIGS[config]
    model = models["voice-encoder", config]
    if config == "tiny":
        feeds = voice_encoder.SPEC.graphs[0].example(model, cfg, 2, _gen())
        assert feeds["spectrogram"].shape == (2, 2, 257, 101)  # 1 s
    else:  # 0.3 s keeps the full model fast
        feeds = {"spectrogram": voice_encoder.spectrogram(torch.rand(2, 4800, generator=_gen()) - 0.5, cfg)}
    emb, logits = _run(model, voice_encoder.SPEC, feeds)
    assert emb.shape == (2, cfg.embed_dim) and logits.shape == (2, cfg.n_classes)
    assert emb.dtype == logits.dtype == torch.float32
    assert torch.isfinite(emb).all() and float(emb.abs().max()) > 0
    assert cfg.embed_dim == {"tiny": 32, "full": 4096}[config]


def test_voice_encoder_any_duration_down_to_min_samples(models) -> None:
    cfg = voice_encoder.CONFIGS["tiny"]
    model = models["voice-encoder", "tiny"]
    assert cfg.min_frames == 8 and cfg.min_samples == 7 * 160
    results = []
    with torch.no_grad():
        for n in (cfg.min_samples, 12345, 48000):
            spec = voice_encoder.spectrogram(torch.rand(1, n, generator=_gen(n)) - 0.5, cfg)
            assert spec.shape[3] == 1 + n // 160
            emb, logits = model(spec)
            assert emb.shape == (1, 32) and logits.shape == (1, 10)
            results.append(emb)
        with pytest.raises(RuntimeError):
            model(voice_encoder.spectrogram(torch.zeros(1, cfg.min_samples - 1), cfg))
        # logits are the classifier applied to the embedding; embed_waveform chains the front-end.
        w = torch.rand(1, 16000, generator=_gen(9)) - 0.5
        emb, logits = model.embed_waveform(w)
        torch.testing.assert_close(logits, model.classifier(emb))
        torch.testing.assert_close(emb, model(voice_encoder.spectrogram(w, cfg))[0])
    assert not torch.allclose(results[0], results[1])


# ------------------------------------------------------------------------ refocus
def _refocus_inputs(size: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.rand(batch, 3, size, size, generator=g), 10.0 * torch.rand(batch, 1, size, size, generator=g)


@pytest.mark.parametrize("config", ["tiny", "full"])
def test_refocus_shapes_and_example(config: str, models) -> None:
    cfg = refocus.CONFIGS[config]
    feeds = refocus.SPEC.graphs[0].example(models["refocus", config], cfg, 2, _gen())
    s = cfg.image_size
    assert [tuple(v.shape) for v in feeds.values()] == [(2, 3, s, s), (2, 1, s, s), (2,), (2,)]
    assert float(feeds["depth"].min()) >= 0 and bool((feeds["far"] > feeds["near"]).all())
    (out,) = _run(models["refocus", config], refocus.SPEC, feeds)
    assert out.shape == (2, 3, s, s) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6  # a convex blend of [0, 1] images
    assert float((out - feeds["image"]).abs().max()) > 0.05  # the example really defocuses something
    # Dynamic, non-square size.
    img, depth = torch.rand(1, 3, 40, 28), 10 * torch.rand(1, 1, 40, 28)
    assert models["refocus", config](img, depth, torch.tensor([1.0]), torch.tensor([2.0])).shape == (1, 3, 40, 28)


@pytest.mark.parametrize("config", ["tiny", "full"])
def test_refocus_everything_in_focus_is_identity(config: str, models) -> None:
    model = models["refocus", config]
    image, depth = _refocus_inputs(48)
    depth[0, 0, :4] = 0.0
    depth[1, 0, :4] = INF  # sky: infinite depth, still in [0, inf]
    with torch.no_grad():
        out = model(image, depth, torch.zeros(2), torch.full((2,), INF))
    assert not torch.isnan(out).any()
    assert float((out - image).abs().max()) < 1e-6


def test_refocus_sharp_inside_blurred_far_outside(models) -> None:
    model = models["refocus", "tiny"]
    image, _ = _refocus_inputs(32, batch=1)
    depth = torch.full((1, 1, 32, 32), 2.0)
    depth[..., 16:, :] = 9.0  # bottom half far behind the focus range
    near, far = torch.tensor([1.0]), torch.tensor([3.0])
    with torch.no_grad():
        mask, level = model.focus(depth, near, far)
        out = model(image, depth, near, far)
    assert bool((mask[..., :16, :] == 1).all()) and float(mask[..., 16:, :].max()) < 1e-6
    assert torch.equal(out[..., :16, :], image[..., :16, :])  # mask exactly 1: the input, bit for bit
    assert float(level[..., 16:, :].min()) == 1.0  # 6 m out at 1 level/m: clamped to the last level
    diff = (out - image)[..., 20:, :].abs()
    assert float(diff.mean()) > 0.05
    torch.testing.assert_close(out[..., 20:, 4:-4], model.blurs[-1](image)[..., 20:, 4:-4], rtol=0, atol=1e-5)


def test_refocus_soft_mask_and_blur_level_follow_the_distance(models) -> None:
    cfg = refocus.RefocusConfig(blur_sigmas=(0.0, 1.0, 2.0, 4.0), softness=0.5, depth_scale=2.0)
    model = refocus.Refocus(cfg)
    depth = torch.tensor([0.5, 1.0, 2.0, 3.0, 3.25, 4.0, 100.0, INF]).view(1, 1, 1, -1)
    mask, level = model.focus(depth, torch.tensor([1.0]), torch.tensor([3.0]))
    distance = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.25, 1.0, 97.0, INF])
    torch.testing.assert_close(mask.flatten(), 2.0 / (1.0 + torch.exp(distance / 0.5)))
    torch.testing.assert_close(level.flatten(), torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 2.0, 3.0, 3.0]))
    # Half-way between levels 0 and 1 the blend is the mean of the two blurred copies.
    image = torch.rand(1, 3, 16, 16, generator=_gen(4))
    d = torch.full((1, 1, 16, 16), 3.25)
    out = model(image, d, torch.tensor([1.0]), torch.tensor([3.0]))
    m = 2.0 / (1.0 + math.exp(0.5))
    want = m * image + (1 - m) * 0.5 * (model.blurs[0](image) + model.blurs[1](image))
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)


def test_refocus_hard_threshold_is_a_step_with_one_blur() -> None:
    cfg = refocus.RefocusConfig(blur_sigmas=(2.0,), softness=0.0, depth_scale=1.0, image_size=32)
    model = refocus.Refocus(cfg)
    image, _ = _refocus_inputs(32, batch=1, seed=7)
    depth = torch.linspace(0.0, 6.0, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32).contiguous()
    depth[..., 0, 10] = 3.0 + 1e-3  # just outside: already fully blurred
    near, far = torch.tensor([2.0]), torch.tensor([3.0])
    with torch.no_grad():
        mask, level = model.focus(depth, near, far)
        out = model(image, depth, near, far)
    inside = (depth >= 2.0) & (depth <= 3.0)
    assert 0 < int(inside.sum()) < inside.numel()
    assert torch.equal(mask, inside.float()) and bool((level == 0).all())
    blurred = model.blurs[0](image)
    sel = inside.expand_as(image)
    assert torch.equal(out[sel], image[sel])
    torch.testing.assert_close(out[~sel], blurred[~sel], rtol=0, atol=1e-6)
    assert float((out - image)[~sel].abs().mean()) > 0.05


def test_gaussian_blur_is_a_normalised_separable_gaussian() -> None:
    k = refocus.gaussian_kernel(2.0)
    assert k.numel() == 13 and abs(float(k.sum()) - 1.0) < 1e-6
    x = torch.arange(-6, 7, dtype=torch.float32)
    assert abs(math.sqrt(float((k * x**2).sum())) - 2.0) < 0.05  # std ~ sigma (truncated at 3 sigma)
    blur = refocus.GaussianBlur(2.0)
    impulse = torch.zeros(1, 3, 21, 21)
    impulse[..., 10, 10] = 1.0
    torch.testing.assert_close(blur(impulse)[0, 1, 4:17, 4:17], torch.outer(k, k))
    const = torch.full((1, 3, 9, 9), 0.3)  # replicate padding: constants stay constant up to the border
    torch.testing.assert_close(blur(const), const)
    assert torch.equal(refocus.GaussianBlur(0.0)(impulse), impulse)
