"""The out-of-style split: deterministic, its captions true of its layouts, and drawn unlike the training data."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest

from mmedge.data import shape_render, shapes, shapes_oos
from mmedge.data.shapes import ShapeObject

OOS = shapes.split("oos")


@pytest.fixture(scope="module")
def layouts() -> list[tuple[int, list[ShapeObject], str, list[str]]]:
    """The split's 300 layouts and 1,700 more from seeds past it (same sampler)."""
    return [(s, *shapes_oos.oos_layout(s)) for s in range(OOS[0], OOS[0] + 2000)]


def test_scenes_are_deterministic_and_varied() -> None:
    a, b = shapes_oos.make_oos_scene(OOS[0]), shapes_oos.make_oos_scene(OOS[0])
    assert a.image.dtype == np.uint8 and a.image.tobytes() == b.image.tobytes()
    assert (a.captions, a.objects, a.layout, a.seed) == (b.captions, b.objects, b.layout, OOS[0])
    sizes = set()
    for seed in OOS[:20]:
        s = shapes_oos.make_oos_scene(seed)
        h, w, c = s.image.shape
        assert c == 3 and 200 <= w <= 500 and 200 <= h <= 500 and 0.79 <= w / h <= 1.26
        assert (s.objects, s.layout, s.captions) == shapes_oos.oos_layout(seed)  # layout without drawing
        sizes.add((h, w))
    assert len(sizes) > 15
    assert shapes_oos.make_oos_scene(OOS[1]).image.tobytes() != a.image.tobytes()


def test_scene_dispatches_by_seed() -> None:
    assert shapes_oos.is_oos_seed(OOS[0]) and shapes_oos.is_oos_seed(OOS[-1])
    assert not shapes_oos.is_oos_seed(OOS[0] - 1) and not shapes_oos.is_oos_seed(shapes.split("test")[0])
    # the seeds after the 300 (`split("oos", count)`) are out of style too, up to the block's end
    assert shapes_oos.is_oos_seed(OOS[-1] + 1) and not shapes_oos.is_oos_seed(OOS[0] + shapes.SEED_BLOCK)
    more = shapes.split("oos", 302)[-1]
    assert shapes_oos.scene(more).image.tobytes() == shapes_oos.make_oos_scene(more).image.tobytes()
    test_seed = shapes.split("test")[0]
    assert shapes_oos.scene(test_seed).image.tobytes() == shapes.make_scene(test_seed).image.tobytes()
    assert shapes_oos.scene(OOS[3]).captions == shapes_oos.make_oos_scene(OOS[3]).captions


def _inside(o: ShapeObject) -> bool:
    return o.radius + 3 <= min(o.x, o.y, shapes.SIZE - o.x, shapes.SIZE - o.y)


def test_captions_are_true_of_the_layouts(layouts) -> None:
    cap = shapes_oos.LARGE_CAP
    kinds: dict[str, int] = {}
    for seed, objs, layout, captions in layouts:
        kinds[layout] = kinds.get(layout, 0) + 1
        assert len(captions) == 5 and len(set(captions)) == 5
        for o in objs:
            lo, hi = (8.0, 22.0) if o.size == "small" else (30.0, cap[len(objs)])
            assert lo <= o.radius <= hi and _inside(o), (seed, o)
        if layout == "single":
            (o,) = objs
            cell = (int(o.y // (shapes.SIZE / 3)), int(o.x // (shapes.SIZE / 3)))
            region = shapes.REGIONS[cell][0]
            assert captions[0].endswith(region), (seed, o, captions[0])
            # centred inside the cell, not on its border
            assert all(4 <= v % (shapes.SIZE / 3) <= shapes.SIZE / 3 - 4 for v in (o.x, o.y)), (seed, o)
        elif layout in ("horizontal", "vertical"):
            a, b = objs
            along, across = (b.x - a.x, b.y - a.y) if layout == "horizontal" else (b.y - a.y, b.x - a.x)
            assert along > 0 and abs(across) <= 0.5 * along, (seed, objs)
            assert math.hypot(b.x - a.x, b.y - a.y) >= a.radius + b.radius + 8, (seed, objs)
        else:
            assert layout == "row" and len(objs) == 3
            xs = [o.x for o in objs]
            assert xs == sorted(xs) and min(np.diff(xs)) >= 52, (seed, xs)
            assert all(math.hypot(p.x - q.x, p.y - q.y) >= p.radius + q.radius
                       for i, p in enumerate(objs) for q in objs[i + 1:]), (seed, objs)
    assert min(kinds.values()) > 200, kinds


def test_layouts_cover_the_grammar(layouts) -> None:
    objs = [o for _, os, _, _ in layouts for o in os]
    assert {o.shape for o in objs} == set(shapes.SHAPES) and {o.colour for o in objs} == set(shapes.COLOURS)
    assert {o.size for o in objs} == {"small", "large"} and {o.filled for o in objs} == {True, False}
    assert max(o.radius for o in objs) > 85 and min(o.radius for o in objs) < 9
    same_pairs = sum(1 for _, os, lay, _ in layouts if len(os) == 2 and os[0].colour == os[1].colour
                     and os[0].shape == os[1].shape)
    assert same_pairs > 50


def test_palette_shades_have_their_names() -> None:
    """Each shade's hue is nearest its own name's hue centre (the training renderer's table)."""
    def hue_distance(c: tuple[int, int, int], name: str) -> float:
        h = colorsys.rgb_to_hsv(*(np.asarray(c) / 255.0))[0] * 360
        d = abs(h - shape_render.HSV[name][0])
        return min(d, 360 - d)

    assert set(shapes_oos.PALETTE) == set(shapes.COLOURS)
    for name, shades in shapes_oos.PALETTE.items():
        for c in shades:
            assert min(shape_render.HSV, key=lambda n: hue_distance(c, n)) == name, (name, c)


def test_filled_objects_show_their_colour() -> None:
    """After blur, noise and JPEG, a filled object's centre pixel still has its colour's hue."""
    def nearest(c: np.ndarray) -> str:
        h = colorsys.rgb_to_hsv(*(c / 255.0))[0] * 360
        return min(shape_render.HSV, key=lambda n: min(abs(h - shape_render.HSV[n][0]),
                                                          360 - abs(h - shape_render.HSV[n][0])))

    checked = 0
    for seed in OOS[:40]:
        s = shapes_oos.make_oos_scene(seed)
        h, w = s.image.shape[:2]
        for o in s.objects:
            if o.filled:
                pixel = s.image[int(o.y * h / shapes.SIZE), int(o.x * w / shapes.SIZE)].astype(np.float64)
                assert nearest(pixel) == o.colour, (seed, o, pixel)
                checked += 1
    assert checked > 40


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_geometry_is_exact_and_unlike_the_training_renderer() -> None:
    r = 60.0
    analytic = {"circle": math.pi * r * r, "square": 2 * r * r, "triangle": 3 * math.sqrt(3) / 4 * r * r}
    for shape, area in analytic.items():
        o = ShapeObject(shape, "red", "large", 128, 128, r, angle=0.0)
        cov = shapes_oos.coverage(o, 256, 256)
        assert cov.sum() == pytest.approx(area, rel=0.01), shape
        ys = np.nonzero(cov.max(axis=1) > 0.5)[0]
        if shape == "triangle":  # apex up, centroid at the centre: apex r above, base r/2 below
            assert (ys.min(), ys.max()) == pytest.approx((128 - r, 128 + r / 2 - 1), abs=1.5)
        mine = cov > 0.5
        theirs = shape_render.object_mask(o, 256)
        if shape != "triangle":  # a circle of radius r (not 0.9 r), a square of half side r/sqrt 2 (not 0.75 r)
            assert 0.5 < _iou(mine, theirs) < 0.93, shape
    sq = ShapeObject("square", "red", "large", 128, 128, r, angle=20.0)
    turned = shapes_oos.coverage(sq, 256, 256) > 0.5
    assert _iou(turned, shape_render.object_mask(sq, 256)) < 0.8  # rotated the other way round
    ring = shapes_oos.coverage(ShapeObject("circle", "red", "large", 128, 128, r), 256, 256, stroke=6.0,
                               filled=False)
    assert ring[128, 128] == 0 and ring[128, int(128 + r)] == 1.0  # the stroke straddles the edge
    assert ring.sum() == pytest.approx(2 * math.pi * r * 6.0, rel=0.02)


def test_pixels_differ_from_the_training_renderer() -> None:
    """The same objects drawn by the training style at the same canvas size look different."""
    for seed in OOS[:10]:
        s = shapes_oos.make_oos_scene(seed)
        h, w = s.image.shape[:2]
        style = shape_render.Style(width=w, height=h, antialias=True)
        theirs = shape_render.render(s.objects, np.random.default_rng(seed), style)
        diff = np.abs(theirs.astype(np.int16) - s.image.astype(np.int16))
        assert diff.mean() > 10, seed


def test_box_blur_is_a_mean_filter() -> None:
    img = np.zeros((9, 9), np.float32)
    img[4, 4] = 9.0
    out = shapes_oos.box_blur(img, 3)
    assert out[3:6, 3:6] == pytest.approx(np.ones((3, 3))) and out.sum() == pytest.approx(9.0)
    assert shapes_oos.box_blur(img, 1) is img
