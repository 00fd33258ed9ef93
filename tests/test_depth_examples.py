"""The refocus examples' depth maps have the photo's object edges (no disc around a square).

The object mask read from the depth map (objects stand at 0.8-4 m, the background at
6-10 m) must be the set of pixels that look like the object in the photo: pixels are
classified by colour, nearest to the object's colour (median inside the mask) or to
the local background's (median of a ring around it), after a 3x3 mean against the
sensor noise. Only a 1-pixel band along the mask's border (anti-aliasing, the mean's
reach) is left out; an object too close in colour to its background is not judged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mmedge.data import depth_scenes, shapes

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples" / "refocus"
OBJECT_MAX_DEPTH = 5.0  # metres: objects 0.8-4 m, background 6-10 m
MIN_CONTRAST = 40.0  # RGB distance between object and background colours below which an object is not judged
BAND = 1  # pixels either side of the mask's border left out
MAX_DISAGREE = 0.003  # share of the judged pixels whose photo class differs from the depth mask


def _object_masks(depth: np.ndarray) -> list[np.ndarray]:
    """One mask per object: every object stands at its own distance."""
    near = depth < OBJECT_MAX_DEPTH
    return [(depth == d) & near for d in np.unique(depth[near])]


def _check_edges(photo: np.ndarray, depth: np.ndarray, where: str) -> int:
    """Asserts the depth mask of every judged object equals its photo pixels; returns the number judged."""
    smooth = ndimage.uniform_filter(photo.astype(np.float32), size=(3, 3, 1), mode="nearest")
    masks = _object_masks(depth)
    assert masks, f"{where}: no object in the depth map"
    everything = np.any(masks, axis=0)
    judged = 0
    for mask in masks:
        inner = ndimage.binary_erosion(mask, iterations=BAND + 1)
        ring = ndimage.binary_dilation(mask, iterations=8) & ~ndimage.binary_dilation(mask, iterations=4) & ~everything
        if inner.sum() < 20 or ring.sum() < 20:
            continue
        obj = np.median(smooth[inner], axis=0)
        bg = np.median(smooth[ring], axis=0)
        if np.linalg.norm(obj - bg) < MIN_CONTRAST:
            continue
        region = ndimage.binary_dilation(mask, iterations=6)
        border = ndimage.binary_dilation(mask, iterations=BAND) & ~ndimage.binary_erosion(mask, iterations=BAND)
        judge = region & ~border & ~(everything & ~mask)
        looks_like_object = (np.linalg.norm(smooth - obj, axis=-1) < np.linalg.norm(smooth - bg, axis=-1))
        wrong = (looks_like_object != mask) & judge
        share = wrong.sum() / judge.sum()
        assert share <= MAX_DISAGREE, (
            f"{where}: object at {depth[mask][0]:.2f} m: {wrong.sum()} of {judge.sum()} pixels near its edge "
            f"({share:.1%}) are {'background' if (wrong & mask).sum() >= (wrong & ~mask).sum() else 'object'} "
            "in the photo but not in the depth map's object mask")
        judged += 1
    return judged


def test_bundled_example_depth_matches_photo() -> None:
    photo = np.asarray(Image.open(EXAMPLES / "photo.png").convert("RGB"))
    depth = np.asarray(Image.open(EXAMPLES / "depth_mm.png")).astype(np.float32) / 1000.0
    assert photo.shape[:2] == depth.shape
    assert _check_edges(photo, depth, "data/examples/refocus") >= 1
    focus = json.loads((EXAMPLES / "focus.json").read_text())
    in_focus = (depth >= focus["near"]) & (depth <= focus["far"])
    assert in_focus.any(), "the bundled focus range contains no object"


def test_bundled_example_is_what_make_examples_writes() -> None:
    """data/examples/refocus is regenerated from the generator (python -m mmedge.data.make_examples)."""
    d = depth_scenes.make_depth_scene(shapes.split("test")[10])
    assert np.array_equal(np.asarray(Image.open(EXAMPLES / "photo.png").convert("RGB")), d.image)
    assert np.array_equal(np.asarray(Image.open(EXAMPLES / "depth_mm.png")),
                          np.round(d.depth * 1000).astype(np.uint16))


@pytest.mark.parametrize("seed", [*shapes.split("test")[:6], *shapes.split("train")[:6], 12345])
def test_generated_scene_depth_matches_photo(seed: int) -> None:
    d = depth_scenes.make_depth_scene(seed)
    n_objects = len(shapes.make_scene(seed, plain=True).objects)
    assert len(_object_masks(d.depth)) == n_objects
    _check_edges(d.image, d.depth, f"seed {seed}")


def test_depth_edges_judged_on_enough_objects() -> None:
    """The colour test above skips low-contrast objects; most objects must still be judged."""
    seeds = [*shapes.split("test")[:6], *shapes.split("train")[:6]]
    judged = sum(_check_edges(depth_scenes.make_depth_scene(s).image, depth_scenes.make_depth_scene(s).depth,
                              f"seed {s}") for s in seeds)
    total = sum(len(shapes.make_scene(s, plain=True).objects) for s in seeds)
    assert judged >= 0.7 * total, f"only {judged} of {total} objects could be judged"


def test_square_depth_is_not_a_disc() -> None:
    """The reported bug: a square object's depth region is a square (its corners in, no disc around it)."""
    for seed in range(2_000_000, 2_000_300):
        scene = shapes.make_scene(seed, plain=True)
        squares = [o for o in scene.objects if o.shape == "square"]
        if squares:
            break
    o = squares[0]
    d = depth_scenes.make_depth_scene(seed)
    mask = shapes.object_mask(o)
    assert np.unique(d.depth[mask]).size == 1 and d.depth[mask][0] < OBJECT_MAX_DEPTH
    h = o.radius * 0.75
    x, y = int(round(o.x)), int(round(o.y))
    corner = (int(round(o.y - h + 1)), int(round(o.x - h + 1)))
    assert d.depth[corner] < OBJECT_MAX_DEPTH  # inside the square's corner: object depth
    outside_disc_side = (y, int(round(o.x + h + 2)))  # just right of the square's side, inside the old disc
    assert d.depth[outside_disc_side] > OBJECT_MAX_DEPTH
    assert d.depth[y, x] < OBJECT_MAX_DEPTH
