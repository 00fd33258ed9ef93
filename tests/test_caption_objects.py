"""Reading objects out of captions: every grammar form parses to the scene's exact objects, wrong
captions score wrong, and `mmedge eval captioner`'s object metrics are computed from them."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pytest

from mmedge.data import shapes, shapes_oos
from mmedge.data.caption_objects import (UNKNOWN, ObjectScore, match, object_keys, parse_caption, score_captions,
                                         stated_left_to_right, wilson_interval)

R, B, G = ("red", "circle"), ("blue", "square"), ("green", "triangle")

# one caption of every form in shapes._captions_single / _captions_pair / _captions_row
FORMS = {
    "a large red circle in the top left": [R],
    "a big red circle in the top left corner": [R],
    "a red circle near the top": [R],
    "there is a small red circle in the center": [R],
    "a single little red circle": [R],
    "an orange square on the right side": [("orange", "square")],
    "two small red circles side by side": [R, R],
    "two red circles one above the other": [R, R],
    "two red circles": [R, R],
    "a pair of red circles": [R, R],
    "a large red circle to the left of a small red circle": [R, R],
    "two red circles next to each other": [R, R],
    "two red circles stacked vertically": [R, R],
    "a red circle to the left of a blue square": [R, B],
    "a small blue square to the right of a large red circle": [B, R],
    "a red circle left of a blue square": [R, B],
    "a big red circle next to a little blue square": [R, B],
    "a red circle and a blue square side by side": [R, B],
    "a red circle above a blue square": [R, B],
    "a blue square below a red circle": [B, R],
    "a red circle over a blue square": [R, B],
    "a big blue square under a little red circle": [B, R],
    "a red circle and a blue square one above the other": [R, B],
    "a red circle a blue square and a green triangle": [R, B, G],
    "from left to right a red circle a blue square and a green triangle": [R, B, G],
    "a green triangle a blue square and a red circle from right to left": [G, B, R],
    "three shapes a red circle a blue square and a green triangle": [R, B, G],
    "a large red circle to the left of a small blue square and a green triangle": [R, B, G],
    "three large red circles": [R, R, R],
    "three red circles in a row": [R, R, R],
    "a row of three red circles": [R, R, R],
    "three red circles side by side": [R, R, R],
    "a red circle a small red circle and a red circle": [R, R, R],
    "two small red circles and a blue square": [R, R, B],
    "a blue square and two red circles": [B, R, R],
    "three shapes two red circles and a blue square": [R, R, B],
    "two red circles and a blue square": [R, R, B],
    "a pair of red circles and a blue square": [R, R, B],
}


@pytest.mark.parametrize("caption", sorted(FORMS))
def test_every_grammar_form_parses(caption: str) -> None:
    assert parse_caption(caption) == FORMS[caption]


def test_malformed_captions_name_unknown_objects() -> None:
    assert parse_caption("a red and a blue") == [("red", UNKNOWN), ("blue", UNKNOWN)]
    assert parse_caption("a large circle") == [(UNKNOWN, "circle")]
    assert parse_caption("red circles") == [R, R]  # a bare plural names two
    assert parse_caption("three shapes") == [] and parse_caption("") == []


def _scenes_layouts() -> list[tuple[list[shapes.ShapeObject], str, list[str]]]:
    """2,000 in-style layouts (the training generator's own sampler) and 2,000 out-of-style ones."""
    ins = [shapes.layout_scene(np.random.default_rng(seed)) for seed in range(2000)]
    return ins + [shapes_oos.oos_layout(seed) for seed in range(3_000_000, 3_002_000)]


@pytest.fixture(scope="module")
def layouts() -> list[tuple[list[shapes.ShapeObject], str, list[str]]]:
    return _scenes_layouts()


def test_references_parse_to_the_true_objects(layouts) -> None:
    """The grammar's guarantee: every reference caption names exactly the scene's objects."""
    seen_layouts = Counter()
    for objs, layout, captions in layouts:
        truth = Counter(object_keys(objs))
        for c in captions:
            assert Counter(parse_caption(c)) == truth, (c, objs)
            assert match(c, objs) == (len(objs), len(objs), True)
        seen_layouts[layout] += 1
    assert set(seen_layouts) == {"single", "horizontal", "vertical", "row"}


def test_rendered_scenes_parse_too() -> None:
    """The same through make_scene / make_oos_scene (the images the evaluator captions)."""
    for seed in [*shapes.split("test")[:25], *shapes.split("oos")[:25]]:
        s = shapes_oos.scene(seed)
        assert all(Counter(parse_caption(c)) == Counter(object_keys(s.objects)) for c in s.captions)


def test_stated_order_is_the_true_left_to_right_order(layouts) -> None:
    stated = 0
    for objs, layout, captions in layouts:
        truth = object_keys(sorted(objs, key=lambda o: o.x))
        for c in captions:
            order = stated_left_to_right(c)
            if order is None:
                continue
            stated += 1
            if layout == "vertical":
                assert len(set(truth)) == 1, c
            assert order == truth, (c, objs)
    assert stated > 5000
    assert stated_left_to_right("a blue square to the right of a red circle") == [R, B]
    assert stated_left_to_right("a red circle above a blue square") is None


def _wrong(caption: str, objs: Sequence[shapes.ShapeObject], rng: np.random.Generator) -> list[str]:
    """Captions that get the scene wrong: a shape or colour changed, an object dropped or added."""
    words = caption.split()
    out = []
    i = next(k for k, w in enumerate(words) if w in shapes.PLURAL or w in shapes.PLURAL.values())
    singular = words[i] in shapes.PLURAL
    other = [s for s in shapes.SHAPES if s != words[i] and shapes.PLURAL[s] != words[i]][int(rng.integers(2))]
    out.append(" ".join(words[:i] + [other if singular else shapes.PLURAL[other]] + words[i + 1:]))
    j = next(k for k, w in enumerate(words) if w in shapes.COLOURS)
    colour = [c for c in shapes.COLOURS if c != words[j]][int(rng.integers(5))]
    out.append(" ".join(words[:j] + [colour] + words[j + 1:]))
    extra = objs[0]
    out.append(f"{caption} and a {extra.colour} {extra.shape}")  # one too many (a duplicate)
    return out


def test_wrong_captions_score_wrong(layouts) -> None:
    rng = np.random.default_rng(7)
    for objs, layout, captions in layouts[::10]:
        changed_shape, changed_colour, duplicated = _wrong(captions[0], objs, rng)
        for c in (changed_shape, changed_colour):
            matched, total, clean = match(c, objs)
            assert matched < total and not clean, c
        matched, total, clean = match(duplicated, objs)
        assert matched == total and not clean, duplicated
        words = captions[0].split()
        last = max(k for k, w in enumerate(words) if w in shapes.COLOURS)
        matched, total, clean = match(" ".join(words[:last]), objs)  # the last object left out
        assert matched < total and clean, words[:last]


def test_scores_count_objects_and_clean_captions() -> None:
    objects = [[R], [R, B], [G, G, B]]
    captions = ["a large red circle in the center",  # right
                "two red circles",  # one right, one duplicated
                "two green triangles and a blue circle"]  # two of three right, one hallucinated
    score = score_captions(captions, objects)
    assert score.counts() == {"captions": 3, "clean": 1, "true_objects": 6, "matched": 4}
    assert score.object_accuracy == pytest.approx(4 / 6)
    assert score.clean_rate == pytest.approx(1 / 3) and score.hallucination_rate == pytest.approx(2 / 3)
    assert score_captions([], []).metrics() == {"object_accuracy": 0.0, "hallucination_rate": 0.0}
    with pytest.raises(ValueError, match="2 captions for 1 scenes"):
        score_captions(["a", "b"], [[R]])


def test_wilson_intervals_of_the_rates() -> None:
    # 10 of 300 (the demo captioner's test hallucinations), against scipy's Wilson interval
    from scipy.stats import binomtest

    lo, hi = wilson_interval(10, 300)
    ref = binomtest(10, 300).proportion_ci(method="wilson")
    assert (lo, hi) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    assert (round(lo, 4), round(hi, 4)) == (0.0182, 0.0603)
    assert wilson_interval(0, 50)[0] == 0.0 and 0.07 < wilson_interval(0, 50)[1] < 0.072  # no "0 +- 0"
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)
    score = ObjectScore(captions=300, clean=290, true_objects=600, matched=590)
    spans = score.intervals()
    clean_lo, clean_hi = wilson_interval(290, 300)
    assert spans["hallucination_rate"] == pytest.approx((1 - clean_hi, 1 - clean_lo))
    assert spans["hallucination_rate"] == pytest.approx((lo, hi))  # the same count, seen from either side
    assert spans["object_accuracy"] == pytest.approx(wilson_interval(590, 600))
    assert spans["object_accuracy"][0] < score.object_accuracy < spans["object_accuracy"][1]


# ------------------------------------------------------------------ the evaluator
@dataclass
class _Result:
    tokens: list[int]


class _Oracle:
    """A predictor answering with a fixed caption per image (by its pixels)."""

    source = "oracle"

    def __init__(self, answers: dict[str, str]) -> None:
        from mmedge.runtime.vocab import Vocabulary

        self.vocab = Vocabulary.from_words(shapes.vocabulary_words())
        self.answers = answers

    def caption(self, images, beam: int = 3, max_len: int = 30) -> list[_Result]:
        return [_Result(self.vocab.encode(self.answers[hashlib.sha1(im.tobytes()).hexdigest()])) for im in images]


@pytest.mark.parametrize("split", ["test", "oos"])
def test_evaluator_reports_object_metrics(split: str) -> None:
    from mmedge.calibration.eval_caption import captioner_result, evaluate_captioner, scenes

    data = scenes(split, limit=12)
    answers = {hashlib.sha1(s.image.tobytes()).hexdigest(): s.captions[0] for s in data}
    result = evaluate_captioner(_Oracle(answers), split=split, limit=12, progress=False)
    assert result.metrics["exact_match"] == 1.0 and result.metrics["bleu4"] > 0.99
    assert result.metrics["object_accuracy"] == 1.0 and result.metrics["hallucination_rate"] == 0.0
    assert result.details["split"] == split and result.details["objects"]["captions"] == 12
    assert result.details["intervals"]["hallucination_rate"] == pytest.approx([0.0, wilson_interval(0, 12)[1]])
    assert result.details["examples"][0]["objects"] == [list(k) for k in object_keys(data[0].objects)]

    wrong = {k: "two red circles and a red circle" for k in answers}  # what the old demo model says
    bad = evaluate_captioner(_Oracle(wrong), split=split, limit=12, progress=False)
    assert bad.metrics["object_accuracy"] < 0.5 and bad.metrics["hallucination_rate"] > 0.5
    # sharded callers pass [colour, shape] pairs, or nothing (the objects are regenerated from the seeds)
    seeds, caps, refs = [s.seed for s in data], [s.captions[0] for s in data], [s.captions for s in data]
    pairs = [[[o.colour, o.shape] for o in s.objects] for s in data]
    for objs in (pairs, None):
        again = captioner_result("oracle", split, 3, 30, seeds, caps, refs, objs)
        assert again.metrics == result.metrics and again.details["examples"] == result.details["examples"]


def test_unknown_split_is_refused() -> None:
    from mmedge.calibration.eval_caption import scenes
    from mmedge.errors import InputError

    with pytest.raises(InputError, match="unknown split 'dev'; expected one of train, val, test, oos"):
        scenes("dev")
