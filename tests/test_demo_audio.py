"""The demo audio models: the synthetic sound generator, the shipped `demo` weights of SoundNet-8
and the voice encoder, and their top-1 accuracy on a fixed sample of held-out clips -- for the
PyTorch reference and through exported ONNX artifacts run by the torch-free runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmedge.calibration.eval_audio import TorchAudioPredictor, evaluate_audio
from mmedge.calibration.evaluate import evaluator
from mmedge.data import sounds
from mmedge.errors import InputError
from mmedge.models import soundnet, voice_encoder, zoo

AUDIO_MODELS = ("soundnet", "voice-encoder")
SAMPLE = 20  # the first 20 test clips: two of every class
MIN_ACCURACY = 0.9


# ------------------------------------------------------------------------ generator
def test_clips_are_deterministic_in_the_seed() -> None:
    for seed in (0, 5, 2_000_013):
        a, b = sounds.make_clip(seed, 16000), sounds.make_clip(seed, 16000)
        assert a.label == b.label and a.name == b.name
        np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.array_equal(sounds.make_clip(0, 16000).audio[:16000], sounds.make_clip(10, 16000).audio[:16000])


def test_clip_format_length_gain_and_min_samples() -> None:
    for seed in sounds.split("val")[:30]:
        clip = sounds.make_clip(seed, 16000)
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        assert 16000 <= clip.audio.shape[0] <= 32000
        peak = float(np.abs(clip.audio).max())
        assert np.isfinite(clip.audio).all() and 0.04 <= peak <= 0.91
        assert clip.name == sounds.CLASSES[clip.label] and clip.sample_rate == 16000
    assert sounds.make_clip(3, 8000, min_samples=20000).audio.shape[0] == 20000


def test_splits_are_disjoint_and_balanced() -> None:
    parts = {name: set(sounds.split(name)) for name in ("train", "val", "test")}
    assert [len(parts[n]) for n in ("train", "val", "test")] == [3000, 200, 300]
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"] or parts["val"] & parts["test"])
    for name in parts:
        counts = np.bincount([s % len(sounds.CLASSES) for s in parts[name]], minlength=len(sounds.CLASSES))
        assert counts.min() == counts.max()
    with pytest.raises(KeyError):
        sounds.split("holdout")


def test_every_class_is_generated() -> None:
    assert len(sounds.CLASSES) == 10 and len(set(sounds.CLASSES)) == 10
    clips = sounds.clips("test", 16000, limit=len(sounds.CLASSES))
    assert [c.name for c in clips] == list(sounds.CLASSES)
    # the classes differ in what they are, not only in their label: e.g. chirps sweep, noise is broadband
    spectra = [np.abs(np.fft.rfft(c.audio[:16000])) for c in clips]
    assert all(float(np.std(c.audio)) > 1e-3 for c in clips)
    assert len({int(np.argmax(s)) for s in spectra}) > 5


def test_write_examples(tmp_path) -> None:
    from mmedge.runtime.audio import read_wav

    paths = sounds.write_examples(tmp_path)
    assert [p.name for p in paths] == [f"{n}.wav" for n in sounds.CLASSES]
    x, rate = read_wav(paths[0])
    assert rate == 16000
    np.testing.assert_allclose(x, sounds.make_clip(sounds.split("test")[0]).audio, atol=1 / 32768)


# ------------------------------------------------------------------------ shipped weights
def test_demo_configs_name_the_sound_classes() -> None:
    for spec in (soundnet.SPEC, voice_encoder.SPEC):
        cfg = spec.config("demo")
        assert spec.labels(cfg) == list(sounds.CLASSES)
        assert spec.labels(spec.config("tiny")) is None
        assert spec.weights == {"demo": f"{spec.name}-demo.pt"}
        assert cfg.min_samples < cfg.sample_rate  # every clip (>= 1 s) is long enough
    assert soundnet.CONFIGS["demo"].n_objects == len(sounds.CLASSES)
    assert voice_encoder.CONFIGS["demo"].n_classes == len(sounds.CLASSES)


@pytest.mark.parametrize("name", AUDIO_MODELS)
def test_shipped_weights_load(name: str) -> None:
    spec = zoo.get(name)
    path = zoo.WEIGHTS_DIR / spec.weights["demo"]
    assert path.is_file() and path.stat().st_size <= 2_500_000
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = spec.create("demo")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert not model.training


# ------------------------------------------------------------------------ accuracy
@pytest.fixture(scope="module")
def reference() -> dict[str, TorchAudioPredictor]:
    return {name: TorchAudioPredictor(name, "demo") for name in AUDIO_MODELS}


@pytest.fixture(scope="module")
def onnx_artifacts(tmp_path_factory) -> dict[str, object]:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mmedge import runtime
    from mmedge.export.registry import ExportRequest, export

    out = tmp_path_factory.mktemp("demo-audio")
    return {name: runtime.load(export(ExportRequest(name, ["onnx"], config="demo", out=out)).artifacts[0])
            for name in AUDIO_MODELS}


def test_evaluators_are_registered() -> None:
    assert evaluator("soundnet") is evaluate_audio and evaluator("voice-encoder") is evaluate_audio


@pytest.mark.parametrize("name", AUDIO_MODELS)
def test_pytorch_reference_accuracy(name: str, reference) -> None:
    result = evaluate_audio(reference[name], "test", limit=SAMPLE, progress=False)
    assert (result.model, result.source, result.samples) == (name, "pytorch", SAMPLE)
    assert result.metrics["top1"] >= MIN_ACCURACY, result.details
    assert set(result.details["per_class_accuracy"]) == set(sounds.CLASSES)


@pytest.mark.parametrize("name", AUDIO_MODELS)
def test_onnx_artifact_accuracy_and_agreement(name: str, reference, onnx_artifacts) -> None:
    predictor = onnx_artifacts[name]
    assert predictor.manifest.labels == list(sounds.CLASSES)
    result = evaluate_audio(predictor, "test", limit=SAMPLE, progress=False)
    assert result.model == name and result.samples == SAMPLE
    assert result.metrics["top1"] >= MIN_ACCURACY, result.details
    # the runtime (numpy front-end + ONNX Runtime) and PyTorch predict the same classes
    clips = sounds.clips("test", int(predictor.preprocessing["sample_rate"]), limit=SAMPLE)
    ours = [r.label for r in predictor.embed([c.audio for c in clips])]
    theirs = [r.label for r in reference[name].embed([c.audio for c in clips])]
    assert sum(a == b for a, b in zip(ours, theirs)) >= SAMPLE - 1


def test_evaluator_refuses_models_not_trained_on_the_sounds() -> None:
    with pytest.raises(InputError, match="demo"):
        evaluate_audio(TorchAudioPredictor("soundnet", "tiny"), limit=2, progress=False)
