"""Scenes drawn by hand, outside mmedge's generators, captioned with the right shapes and colours.

The fixtures (tests/fixtures/hand_drawn/, drawn by tests/draw_hand_scenes.py with a user's
PIL conventions) are the pictures of issue 18: a red circle next to a blue square, one green
triangle, objects larger than the training data's typical "large", a rotated square, an
outline triangle, a 640x480 canvas, a JPEG. The shipped demo captioner, through the PyTorch
reference, must name exactly their objects: the caption parsed into (colour, shape) objects
(`mmedge.data.caption_objects`) equals the drawing's multiset, and where the caption states a
left-to-right order for a scene laid out left to right, it is the drawing's.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.data import shapes
from mmedge.data.caption_objects import parse_caption, stated_left_to_right

import draw_hand_scenes  # the fixtures' drawer, a test helper beside this file (like trt_fakes)

FIXTURES = draw_hand_scenes.OUT
EXPECTED: dict[str, dict] = json.loads((FIXTURES / "expected.json").read_text())

def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_fixtures_are_what_the_drawer_draws(tmp_path: Path) -> None:
    """The checked-in files are the drawer's output: regenerate and compare (JPEG: up to the codec)."""
    table = draw_hand_scenes.write(tmp_path)
    assert table == EXPECTED
    assert sorted(p.name for p in FIXTURES.iterdir() if p.name != "expected.json") == sorted(EXPECTED)
    for name in EXPECTED:
        ours, theirs = _pixels(FIXTURES / name), _pixels(tmp_path / name)
        assert ours.shape == theirs.shape, name
        if name.endswith(".png"):
            assert np.array_equal(ours, theirs), name
        else:  # another libjpeg may round differently
            assert np.abs(ours - theirs).mean() < 1.0, name


def test_fixtures_cover_what_the_issue_asks() -> None:
    sizes = {name: Image.open(FIXTURES / name).size for name in EXPECTED}
    assert len(EXPECTED) >= 8 and (640, 480) in sizes.values()
    assert any(n.endswith(".jpg") for n in EXPECTED)
    for entry in EXPECTED.values():
        assert all(c in shapes.COLOURS and s in shapes.SHAPES for c, s in entry["objects"])
        if "left_to_right" in entry:
            assert entry["left_to_right"] == [f"{c} {s}" for c, s in entry["objects"]]
    drawn = {t for d in draw_hand_scenes.SCENES for t in d.things}
    assert any(t.angle for t in drawn) and any(t.outline for t in drawn)
    assert {t.shape for t in drawn} == set(shapes.SHAPES) and {t.colour for t in drawn} == set(shapes.COLOURS)


def _caption_fixtures() -> dict[str, str]:
    pytest.importorskip("torch")
    from mmedge.calibration.eval_caption import MAX_LEN, TorchCaptioner

    captioner = TorchCaptioner.from_zoo("demo")  # models/weights/captioner-demo.pt through the zoo
    names = sorted(EXPECTED)
    results = captioner.caption([FIXTURES / n for n in names], beam=3, max_len=MAX_LEN)
    return {n: r.caption for n, r in zip(names, results)}


def test_captions_name_the_drawn_objects() -> None:
    captions = _caption_fixtures()
    wrong = []
    for name, entry in sorted(EXPECTED.items()):
        caption = captions[name]
        truth = [tuple(o) for o in entry["objects"]]
        if Counter(parse_caption(caption)) != Counter(truth):
            wrong.append(f"{name}: {caption!r} names {parse_caption(caption)}, drawn {truth}")
            continue
        order = stated_left_to_right(caption)
        if "left_to_right" in entry and order is not None and order != truth:
            wrong.append(f"{name}: {caption!r} states the order {order}, drawn {truth}")
    assert not wrong, f"{len(wrong)} of {len(EXPECTED)} hand-drawn scenes captioned wrongly:\n" \
        + "\n".join(wrong)
