"""ONNX export and what only ONNX Runtime does.

Parity with the goldens, beam search against the reference decoder and the error contract
(bad inputs, corrupt or tampered graph files) run for every backend in tests/test_conformance.py.
Here: ONNX-specific export (byte-identical re-export, the manifest's ONNX interface), a
captioner whose beams never end, the full-size captioner (slow) and ORT's session options.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import make_golden
from mmedge.errors import InputError
from mmedge.export.registry import ExportContext, export_context
from mmedge.models import zoo
from mmedge.models.decoding import caption_images
from mmedge.runtime import load as _load
from mmedge.runtime.manifest import read_manifest
from mmedge.runtime.parity import TOLERANCE, compare

# export and the manifest need no runtime; what loads a pipeline does
requires_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                  reason="onnxruntime is not installed (pip install 'mmedge[onnxruntime]')")

# .ci/run replays the goldens with ONNX Runtime's graph rewrites off as well (other kernels,
# other rounding): a golden that only passes with one kernel choice is a wrong test.
ORT_OPTIMIZATION = os.environ.get("MMEDGE_TEST_ORT_OPTIMIZATION", "all")


def load(path: Path, backend: str | None = None, **options: object):
    """runtime.load with the optimization level this run tests."""
    return _load(path, backend, optimization=ORT_OPTIMIZATION, **options)


def export_reference(name: str, out: Path, model: torch.nn.Module | None = None, config: str = "tiny") -> Path:
    spec = zoo.get(name)
    model = model if model is not None else make_golden.reference_model(name, config)
    ctx = ExportContext(spec, config, spec.config(config), model, "fp32", getattr(model, "vocab", None))
    return export_context(ctx, ["onnx"], out).artifacts[0]


@pytest.fixture(scope="module")
def artifacts(golden_onnx: dict[str, Path]) -> dict[str, Path]:
    return golden_onnx


@requires_ort
def test_beam_search_when_no_beam_ends(tmp_path: Path) -> None:
    model = make_golden.reference_model("captioner")
    with torch.no_grad():
        model.decoder.fc.bias[model.vocab.end] = -1e4
    cap = load(export_reference("captioner", tmp_path, model))
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ref = caption_images(model, images, beam=3, max_len=9)
    got = cap.caption_features(cap.encode(images.numpy()), ["x"] * 3, beam=3, max_len=9)
    for r, h in zip(got, ref):
        assert not r.finished and len(r.tokens) == 9
        assert r.tokens == h.tokens and r.score == pytest.approx(h.score, abs=1e-4)
        np.testing.assert_allclose(r.attention.reshape(9, -1), h.alphas, atol=1e-5)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """The full captioner (ResNet-101, 9,490 words), random weights made decisive, and its artifact."""
    model = zoo.get("captioner").create("full", seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.decoder.fc.weight.copy_(torch.randn(model.decoder.fc.weight.shape, generator=gen) * 0.1)
    return model, export_reference("captioner", tmp_path_factory.mktemp("full"), model, "full")


@requires_ort
@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 3, 5])
def test_full_captioner_beam_search_equals_reference(k: int, full: tuple[torch.nn.Module, Path]) -> None:
    model, art = full
    cap = load(art)
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(k))
    ref = caption_images(model, images, beam=k, max_len=15)
    got = cap.caption_features(cap.encode(images.numpy()), ["x"] * 2, beam=k, max_len=15)
    assert [r.tokens for r in got] == [h.tokens for h in ref]
    assert [r.score for r in got] == pytest.approx([h.score for h in ref], rel=1e-4)


def test_reexport_is_byte_identical(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    again = export_reference("captioner", tmp_path)
    for f in sorted(artifacts["captioner"].iterdir()):
        assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256((again / f.name).read_bytes()).digest(), f.name


def test_manifest_records_interface(artifacts: dict[str, Path]) -> None:
    m = read_manifest(artifacts["captioner"])
    step = m.graph("decoder_step")
    assert [t.name for t in step.inputs] == ["features", "att1", "prev_word", "h", "c"]
    assert [t.name for t in step.outputs] == ["log_probs", "h_next", "c_next", "alpha"]
    assert step.inputs[2].dtype == "int64" and step.inputs[0].shape[0] == "batch"
    assert m.graph("encoder").inputs[0].shape == ["batch", 3, 64, 64]
    assert m.graph("encoder").outputs[0].shape == ["batch", 14, 14, 64]
    assert m.preprocessing["image_size"] == 64 and m.vocabulary["<end>"] == 22
    assert set(m.files) == {"encoder.onnx", "decoder_init.onnx", "decoder_step.onnx", "test_vectors.npz"}
    assert {"torch", "onnx", "python", "mmedge"} <= set(m.tools)
    from importlib.metadata import PackageNotFoundError, version

    try:  # onnxslim rewrites the graph, so the manifest names its version whenever it ran
        assert m.tools["onnxslim"] == version("onnxslim")
    except PackageNotFoundError:
        assert "onnxslim" not in m.tools


# ------------------------------------------------------------------ bad input
@requires_ort
def test_unreadable_image_names_file(artifacts: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match="bad.jpg"):
        load(artifacts["captioner"]).caption([bad])


@requires_ort
def test_ort_optimization_levels_agree_and_are_checked(artifacts: dict[str, Path]) -> None:
    gold = np.load(make_golden.golden_path("voice-encoder"))
    outs = {}
    for level in ("all", "disable"):
        pipe = _load(artifacts["voice-encoder"], optimization=level)
        outs[level] = pipe.sessions["model"].run({"spectrogram": gold["model.spectrogram"]})["embedding"]
    assert compare("embedding", outs["disable"], outs["all"], TOLERANCE["fp32"]).ok
    with pytest.raises(InputError, match="optimization='fastest': expected one of all, extended, basic, disable"):
        _load(artifacts["voice-encoder"], optimization="fastest")


def test_spinning_auto_spins_between_runs_only_for_the_step_graph(golden_onnx, monkeypatch):
    """-O spinning=auto (the default): decoder_step's workers keep spinning between its runs; the
    encoder's and decoder_init's stop when their run returns (session.force_spinning_stop), so they
    do not take the cores from the next graph. Read back from the SessionOptions each graph got."""
    import onnxruntime as ort

    from mmedge.runtime.pipelines import load

    seen: dict[str, dict[str, str]] = {}
    real = ort.InferenceSession

    def spy(model, opts=None, **kw):
        keys = ("session.intra_op.allow_spinning", "session.force_spinning_stop")
        entries = {}
        for k in keys:
            try:
                entries[k] = opts.get_session_config_entry(k)
            except Exception:  # noqa: BLE001 - not set
                pass
        seen[Path(str(model)).stem] = entries
        return real(model, opts, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    for spinning, step, other in (({}, {"session.intra_op.allow_spinning": "1"},
                                   {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}),
                                  ({"spinning": "on"}, {"session.intra_op.allow_spinning": "1"},
                                   {"session.intra_op.allow_spinning": "1"}),
                                  ({"spinning": "off"}, {"session.intra_op.allow_spinning": "0"},
                                   {"session.intra_op.allow_spinning": "0"})):
        seen.clear()
        load(golden_onnx["captioner"], "onnxruntime", cache="off", **spinning).close()
        assert seen == {"encoder": other, "decoder_init": other, "decoder_step": step}, spinning
