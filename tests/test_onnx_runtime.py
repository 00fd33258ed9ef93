"""ONNX export + the torch-free runtime against the PyTorch goldens."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import make_golden
from mmedge.errors import ArtifactError, InputError
from mmedge.export.registry import ExportContext, export_context
from mmedge.models import zoo
from mmedge.models.decoding import caption_images
from mmedge.runtime import Captioner
from mmedge.runtime import load as _load
from mmedge.runtime.parity import TOLERANCE, check, compare

pytest.importorskip("onnxruntime")

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
    return export_context(ctx, ["onnx"], out)[0]


@pytest.fixture(scope="module")
def artifacts(golden_onnx: dict[str, Path]) -> dict[str, Path]:
    return golden_onnx


@pytest.mark.parametrize("name", zoo.names())
def test_every_graph_matches_goldens_fp32(name: str, artifacts: dict[str, Path]) -> None:
    gold = np.load(make_golden.golden_path(name))
    pipe = load(artifacts[name])
    for g in pipe.manifest.graphs:
        feeds = {t.name: gold[f"{g.name}.{t.name}"] for t in g.inputs}
        outs = pipe.sessions[g.name].run(feeds)
        for t in g.outputs:
            m = compare(t.name, outs[t.name], gold[f"{g.name}.{t.name}"], TOLERANCE["fp32"])
            assert m.ok, m


@pytest.mark.parametrize("name", zoo.names())
def test_parity_command_logic_passes(name: str, artifacts: dict[str, Path]) -> None:
    report = check(load(artifacts[name]))
    assert report.ok and report.outputs
    assert max(m.max_rel for m in report.outputs) < 1e-4


@pytest.mark.parametrize("k", [1, 3, 5])
def test_runtime_beam_search_equals_reference_on_goldens(k: int, artifacts: dict[str, Path]) -> None:
    gold = np.load(make_golden.golden_path("captioner"))
    cap = load(artifacts["captioner"])
    assert isinstance(cap, Captioner)
    results = cap.caption_features(cap.encode(gold["beam.image"]), ["x"] * 4, beam=k, max_len=make_golden.MAX_LEN)
    for i, r in enumerate(results):
        assert r.tokens == [t for t in gold[f"beam{k}.tokens"][i] if t >= 0]
        assert r.finished == bool(gold[f"beam{k}.finished"][i])
        assert r.score == pytest.approx(gold[f"beam{k}.scores"][i], abs=1e-4)


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


def test_length_norm_changes_ranking_consistently(artifacts: dict[str, Path]) -> None:
    gold = np.load(make_golden.golden_path("captioner"))
    cap = load(artifacts["captioner"])
    model = make_golden.reference_model("captioner")
    images = torch.from_numpy(gold["beam.image"])
    ref = caption_images(model, images, beam=5, max_len=make_golden.MAX_LEN, length_norm=True)
    got = cap.caption_features(cap.encode(gold["beam.image"]), ["x"] * 4, 5, make_golden.MAX_LEN, length_norm=True)
    assert [r.tokens for r in got] == [h.tokens for h in ref]


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 3, 5])
def test_full_captioner_beam_search_equals_reference(k: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = full_model()
    art = full_artifact(tmp_path_factory)
    cap = load(art)
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(k))
    ref = caption_images(model, images, beam=k, max_len=15)
    got = cap.caption_features(cap.encode(images.numpy()), ["x"] * 2, beam=k, max_len=15)
    assert [r.tokens for r in got] == [h.tokens for h in ref]
    assert [r.score for r in got] == pytest.approx([h.score for h in ref], rel=1e-4)


_FULL: dict[str, object] = {}


def full_model() -> torch.nn.Module:
    """The full captioner (ResNet-101, 9,490 words), random weights made decisive."""
    if "model" not in _FULL:
        model = zoo.get("captioner").create("full", seed=0)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            model.decoder.fc.weight.copy_(torch.randn(model.decoder.fc.weight.shape, generator=gen) * 0.1)
        _FULL["model"] = model
    return _FULL["model"]  # type: ignore[return-value]


def full_artifact(factory: pytest.TempPathFactory) -> Path:
    if "artifact" not in _FULL:
        _FULL["artifact"] = export_reference("captioner", factory.mktemp("full"), full_model(), "full")
    return _FULL["artifact"]  # type: ignore[return-value]


def test_reexport_is_byte_identical(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    again = export_reference("captioner", tmp_path)
    for f in sorted(artifacts["captioner"].iterdir()):
        assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256((again / f.name).read_bytes()).digest(), f.name


def test_manifest_records_interface(artifacts: dict[str, Path]) -> None:
    m = load(artifacts["captioner"]).manifest
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


def test_runtime_works_without_torch(artifacts: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(img)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from mmedge.runtime import load\n"
        f"r = load({str(artifacts['captioner'])!r}).caption([{str(img)!r}], beam=3, max_len=5)[0]\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(len(r.tokens), r.score)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    n, score = res.stdout.split()
    assert 0 <= int(n) <= 5 and float(score) < 0


# ------------------------------------------------------------------ bad input
def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_tampered_model_file_is_refused(artifacts: dict[str, Path], tmp_path: Path) -> None:
    art = _copy(artifacts["captioner"], tmp_path / "a")
    data = (art / "decoder_step.onnx").read_bytes()
    (art / "decoder_step.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"decoder_step.onnx: sha256 does not match"):
        load(art)


def test_missing_model_file_is_named(artifacts: dict[str, Path], tmp_path: Path) -> None:
    art = _copy(artifacts["captioner"], tmp_path / "a")
    (art / "encoder.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"encoder.onnx: missing"):
        load(art)


def test_corrupt_model_with_matching_manifest_gives_one_line(artifacts: dict[str, Path], tmp_path: Path) -> None:
    from mmedge.export.artifact import finish
    from mmedge.runtime.manifest import read_manifest

    art = _copy(artifacts["captioner"], tmp_path / "a")
    (art / "encoder.onnx").write_bytes(b"not an onnx file")
    finish(art, read_manifest(art, verify=False))  # re-hash: the file itself is bad
    with pytest.raises(ArtifactError, match=r"encoder.onnx: ONNX Runtime cannot load it"):
        load(art)


def test_session_checks_shape_and_dtype(artifacts: dict[str, Path]) -> None:
    cap = load(artifacts["captioner"])
    enc = cap.sessions["encoder"]
    with pytest.raises(InputError, match=r"expected \['batch', 3, 64, 64\].*axis 2 is fixed at 64"):
        enc.run({"image": np.zeros((1, 3, 32, 32), np.float32)})
    with pytest.raises(InputError, match="dtype float64, expected float32"):
        enc.run({"image": np.zeros((1, 3, 64, 64))})
    with pytest.raises(InputError, match="unknown input 'img'"):
        enc.run({"img": np.zeros((1, 3, 64, 64), np.float32)})


def test_unreadable_image_names_file(artifacts: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match="bad.jpg"):
        load(artifacts["captioner"]).caption([bad])


def test_ort_optimization_levels_agree_and_are_checked(artifacts: dict[str, Path]) -> None:
    gold = np.load(make_golden.golden_path("voice-encoder"))
    outs = {}
    for level in ("all", "disable"):
        pipe = _load(artifacts["voice-encoder"], optimization=level)
        outs[level] = pipe.sessions["model"].run({"spectrogram": gold["model.spectrogram"]})["embedding"]
    assert compare("embedding", outs["disable"], outs["all"], TOLERANCE["fp32"]).ok
    with pytest.raises(InputError, match="optimization='fastest': expected one of all, extended, basic, disable"):
        _load(artifacts["voice-encoder"], optimization="fastest")
