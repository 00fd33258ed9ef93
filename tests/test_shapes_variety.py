"""The training generator varies what a user's drawing varies, and its captions stay true.

The layouts are checked on `layout_scene` (no drawing: fast); the looks on a few drawn scenes."""

from __future__ import annotations

import numpy as np
import pytest

from mmedge.data import shape_render, shapes

N = 1500


@pytest.fixture(scope="module")
def layouts() -> list[tuple[list[shapes.ShapeObject], str, list[str]]]:
    return [shapes.layout_scene(np.random.default_rng([s, 7])) for s in range(N)]


def test_sizes_are_absolute_classes_spanning_half_to_two_and_a_half_times(layouts) -> None:
    radii = {"small": [], "large": []}
    for objs, _, _ in layouts:
        for o in objs:
            radii[o.size].append(o.radius)
    small, large = np.array(radii["small"]), np.array(radii["large"])
    assert small.min() >= 8.0 and small.max() <= 22.0 and large.min() >= 30.0 and large.max() <= 95.0
    # the range is used, not just allowed: 0.5x of the first generator's small, 2x+ of its large
    assert small.min() < 9.0 and large.max() > 75.0
    assert small.max() < large.min()  # a gap between the classes: "small" and "large" never overlap


def test_rotation_and_outline_vary(layouts) -> None:
    objs = [o for scene, _, _ in layouts for o in scene]
    rotated = [o for o in objs if o.angle != 0.0]
    outline = [o for o in objs if not o.filled]
    assert 0.4 < len(rotated) / len(objs) < 0.8
    assert 0.1 < len(outline) / len(objs) < 0.4
    assert all(o.radius >= 12.0 for o in outline)  # thin outlines of tiny objects would be illegible


def test_layouts_keep_every_statement_true(layouts) -> None:
    for objs, layout, captions in layouts:
        for o in objs:
            assert o.radius + 3 <= o.x <= shapes.SIZE - o.radius - 3 + 1e-9
            assert o.radius + 3 <= o.y <= shapes.SIZE - o.radius - 3 + 1e-9
        if layout in ("horizontal", "vertical"):
            a, b = objs
            along, across = (b.x - a.x, b.y - a.y) if layout == "horizontal" else (b.y - a.y, b.x - a.x)
            assert along > 0 and abs(across) <= 0.5 * along
        if layout == "row":
            xs = [o.x for o in objs]
            assert xs == sorted(xs) and min(np.diff(xs)) >= 52
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                assert np.hypot(objs[i].x - objs[j].x, objs[i].y - objs[j].y) >= objs[i].radius + objs[j].radius


def test_drawn_scenes_vary_canvas_and_stay_deterministic() -> None:
    scenes = [shapes.make_scene(s) for s in range(40)]
    sizes = {s.image.shape[:2] for s in scenes}
    assert (256, 256) in sizes and len(sizes) > 10
    again = shapes.make_scene(7)
    assert again.image.tobytes() == scenes[7].image.tobytes() and again.captions == scenes[7].captions


def test_plain_scenes_are_the_exact_masks() -> None:
    """The plain style (refocus examples) paints exactly `object_mask`'s pixels with each object."""
    for seed in range(6):
        scene = shapes.make_scene(seed, plain=True)
        assert scene.image.shape == (256, 256, 3)
        for o in scene.objects:
            assert o.angle == 0.0 and o.filled
            mask = shapes.object_mask(o, 256)
            colour = scene.image[mask].astype(int)
            # every object pixel has one colour (no noise, no anti-aliasing in the plain style)
            assert (colour == colour[0]).all()


def test_jittered_colours_keep_their_names_apart() -> None:
    rng = np.random.default_rng(0)
    import colorsys

    hues = {name: [] for name in shape_render.HSV}
    for name in hues:
        for _ in range(300):
            r, g, b = shape_render.jittered_colour(name, rng)
            hues[name].append(colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0] * 360)
    def spread(h: list[float]) -> tuple[float, float]:
        a = np.unwrap(np.radians(h))
        return float(np.degrees(a.min())) % 360, float(np.degrees(a.max())) % 360
    lo, hi = spread(hues["orange"])
    assert 20 <= lo and hi <= 36
    lo, hi = spread(hues["yellow"])
    assert 45 <= lo and hi <= 60
