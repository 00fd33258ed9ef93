"""The trained demo captioner: shapes data, BLEU helper, shipped weights, real captions on PyTorch and ONNX."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mmedge.calibration.eval_caption import TorchCaptioner, caption_scores
from mmedge.calibration.metrics import corpus_bleu, top1_accuracy
from mmedge.data import shapes
from mmedge.data.caption_objects import object_keys, parse_caption
from mmedge.data.shapes_oos import make_oos_scene
from mmedge.models import zoo

# Scenes captioned in the tests below, one tuple of seeds per style: the test split (the varied
# generator the shipped weights were trained on), the out-of-style split (data/shapes_oos.py, never
# trained on) and the plain style (the first generator's look, which the refocus examples use). The
# criterion, per scene: the beam-3 caption names exactly the scene's objects, colour and shape
# (data/caption_objects.py). SEEDS_NOTE says how these seeds were chosen.
TEST_SEEDS = (2_000_000, 2_000_001, 2_000_002, 2_000_003, 2_000_004)
OOS_SEEDS = (3_000_000, 3_000_001, 3_000_002)
PLAIN_SEEDS = (2_000_000, 2_000_001)
SEEDS_NOTE = "the first seeds of each split"


def scenes() -> list[shapes.Scene]:
    return ([shapes.make_scene(s) for s in TEST_SEEDS] + [make_oos_scene(s) for s in OOS_SEEDS]
            + [shapes.make_scene(s, plain=True) for s in PLAIN_SEEDS])


def names_exactly(caption: str, scene: shapes.Scene) -> bool:
    return Counter(parse_caption(caption)) == Counter(object_keys(scene.objects))


def names_every_object(caption: str, scene: shapes.Scene) -> bool:
    words = set(caption.split())
    return all(o.colour in words and (o.shape in words or shapes.PLURAL[o.shape] in words) for o in scene.objects)


# ------------------------------------------------------------------ data
def test_scenes_are_deterministic() -> None:
    for seed in (0, 17, 2_000_003):
        a, b = shapes.make_scene(seed), shapes.make_scene(seed)
        assert a.image.dtype == np.uint8 and a.image.ndim == 3 and a.image.shape[2] == 3
        assert 96 <= min(a.image.shape[:2]) and max(a.image.shape[:2]) <= 640
        assert a.image.tobytes() == b.image.tobytes()
        assert a.captions == b.captions and a.objects == b.objects
    assert shapes.make_scene(1).image.tobytes() != shapes.make_scene(2).image.tobytes()


def test_splits_are_fixed_and_disjoint() -> None:
    train, val, test = (shapes.split(n) for n in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (32000, 300, 300)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert shapes.split("test") == test
    with pytest.raises(ValueError, match="unknown split"):
        shapes.split("dev")


def test_captions_use_the_vocabulary_and_describe_the_scene() -> None:
    vocab = shapes.vocabulary_words()
    assert list(vocab) == sorted(set(vocab))
    used: set[str] = set()
    for seed in range(150):
        scene = shapes.make_scene(seed)
        assert 1 <= len(scene.objects) <= 3
        assert len(scene.captions) == 5 and len(set(scene.captions)) == 5
        for c in scene.captions:
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", c), c
            assert set(c.split()) <= set(vocab), c
            assert names_every_object(c, scene), (c, scene.objects)
            used |= set(c.split())
        if scene.layout in ("horizontal", "vertical"):
            a, b = scene.objects
            along, across = (b.x - a.x, b.y - a.y) if scene.layout == "horizontal" else (b.y - a.y, b.x - a.x)
            assert along > 2 * abs(across)
            same = (a.colour, a.shape) == (b.colour, b.shape)
            phrase = {("horizontal", False): " to the left of ", ("vertical", False): " above ",
                      ("horizontal", True): " side by side", ("vertical", True): " one above the other"}
            assert phrase[scene.layout, same] in scene.captions[0]
        if scene.layout == "row":
            assert [o.x for o in scene.objects] == sorted(o.x for o in scene.objects)
    assert len(used) > 0.8 * len(vocab)


# ------------------------------------------------------------------ metrics
def test_bleu_of_identical_captions_is_one() -> None:
    refs = [[["a", "red", "circle", "above", "a", "blue", "square"]], [["two", "green", "triangles", "side", "by"]]]
    hyps = [r[0] for r in refs]
    assert corpus_bleu(refs, hyps) == pytest.approx({f"bleu{n}": 1.0 for n in range(1, 5)})


def test_bleu_hand_computed() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat": clipped n-gram precisions
    # 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
    bleu = corpus_bleu([[["the", "cat", "sat", "on", "a", "mat"]]], [["the", "cat", "sat", "on", "the", "mat"]])
    p = [5 / 6, 3 / 5, 2 / 4, 1 / 3]
    for n in range(1, 5):
        assert bleu[f"bleu{n}"] == pytest.approx(math.prod(p[:n]) ** (1 / n), abs=1e-12)
    assert bleu["bleu4"] == pytest.approx(0.537284965911771, abs=1e-12)
    # brevity penalty: a 3-word hypothesis against a 6-word reference, all n-grams (n <= 3) match
    short = corpus_bleu([[["a", "b", "c", "d", "e", "f"]]], [["a", "b", "c"]])
    assert short["bleu1"] == pytest.approx(math.exp(1 - 6 / 3))


def test_top1_accuracy() -> None:
    assert top1_accuracy([1, 2, 3, 4], [1, 0, 3, 0]) == 0.5
    with pytest.raises(ValueError):
        top1_accuracy([1], [1, 2])


# ------------------------------------------------------------------ the shipped model
@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return zoo.get("captioner").create("demo")


def test_shipped_weights_load(model: torch.nn.Module) -> None:
    spec = zoo.get("captioner")
    path = zoo.WEIGHTS_DIR / spec.weights["demo"]
    assert path.stat().st_size < 5_000_000
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert not model.training and model.vocab.words[1:-3] == list(shapes.vocabulary_words())
    # not the seeded random init: the shipped weights replaced it
    random_init = spec.build(spec.config("demo"))
    assert not torch.equal(random_init.decoder.fc.weight, model.decoder.fc.weight)


@pytest.fixture(scope="module")
def onnx_captioner(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("onnxruntime")
    from mmedge.export.registry import ExportContext, export_context
    from mmedge.runtime import load

    spec = zoo.get("captioner")
    ctx = ExportContext(spec, "demo", spec.config("demo"), model, "fp32", model.vocab)
    return load(export_context(ctx, ["onnx"], tmp_path_factory.mktemp("demo")).artifacts[0])


def test_pytorch_reference_names_the_objects(model: torch.nn.Module) -> None:
    drawn = scenes()
    results = TorchCaptioner(model).caption([s.image for s in drawn], beam=3, max_len=30)
    for scene, r in zip(drawn, results):
        assert r.finished and names_exactly(r.caption, scene), (scene.seed, r.caption, scene.captions, SEEDS_NOTE)


def test_onnx_artifact_names_the_objects_like_the_reference(model: torch.nn.Module, onnx_captioner) -> None:
    drawn = scenes()
    images = [s.image for s in drawn]
    got = onnx_captioner.caption(images, beam=3, max_len=30)
    ref = TorchCaptioner(model).caption(images, beam=3, max_len=30)
    for scene, r, h in zip(drawn, got, ref):
        assert names_exactly(r.caption, scene), (scene.seed, r.caption, scene.captions)
        assert r.tokens == h.tokens and r.score == pytest.approx(h.score, abs=1e-4)
    metrics, _ = caption_scores(onnx_captioner, images, [s.captions for s in drawn], beam=3)
    assert metrics["bleu4"] > 0.7


def test_runtime_takes_scene_files(onnx_captioner, tmp_path: Path) -> None:
    from PIL import Image

    scene = shapes.make_scene(TEST_SEEDS[0])
    path = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(path)
    [from_file] = onnx_captioner.caption([path], beam=3, max_len=30)
    [from_array] = onnx_captioner.caption([scene.image], beam=3, max_len=30)
    assert from_file.tokens == from_array.tokens
