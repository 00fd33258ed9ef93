"""Synthetic captioning scenes: coloured shapes on varied backgrounds, 5 captions each.

numpy + PIL + stdlib only (the torch-free runtime's eval and calibration use it).
Everything is a pure function of an integer seed: `make_scene(seed)` lays out
1-3 objects (circle / square / triangle, six colours, small / large) in a 256x256
frame, draws them in a varied style (`data/shape_render.py`: other canvas sizes,
rotation, filled or outline-only, anti-aliased or hard edges, textured or noisy
backgrounds, blur, JPEG) and writes five paraphrased reference captions from a
small grammar that are all true of the scene:

    1 object   "a large red circle in the top left", "there is a large red circle in the top left", ...
    2 objects  "a red circle to the left of a small blue square", "a small blue square to the right of a
               red circle", "a large yellow square above a purple circle", "two green triangles", ...
    3 objects  listed left to right: "a red circle a blue square and a small green triangle",
               "from left to right ...", "... from right to left", "two red circles and a blue square", ...

Sizes are absolute (fractions of the image's shorter side), with a gap between the two
classes, so "small" and "large" are true whatever else varies: a small object's circumradius
is 8-22 and a large one's 30-95 in the 256 frame (0.5x-2.5x of the first generator's 15-20
and 30-38), large objects capped by the room a layout leaves. Layouts are sampled so that
every statement is unambiguous: a single object
sits near the centre of one cell of a 3x3 grid (its region phrase); two objects
are displaced clearly more along one axis than the other (left/right or
above/below); three objects have clearly separated x positions.

`split("train" | "val" | "test")` gives fixed, disjoint seed lists and
`vocabulary_words()` every word the grammar can produce, so a captioner's
vocabulary is known in code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from mmedge.data import shape_render

SIZE = 256
SHAPES = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")  # the names; how each looks: shape_render.HSV
SIZES = ("small", "large")
SIZE_SYNONYM = {"small": "little", "large": "big"}
PLAIN_RADIUS = {"small": (15.0, 20.0), "large": (30.0, 38.0)}  # the plain style: the first generator's sizes
RADIUS = {"small": (8.0, 22.0), "large": (30.0, 95.0)}  # circumradius range in the 256 frame
LARGE_CAP = {1: 95.0, 2: 52.0, 3: 40.0}  # the largest large object a layout of n objects has room for

# single objects: 3x3 grid cell -> (phrase, alternative phrase)
REGIONS: dict[tuple[int, int], tuple[str, str]] = {
    (0, 0): ("in the top left", "in the top left corner"),
    (0, 1): ("at the top", "near the top"),
    (0, 2): ("in the top right", "in the top right corner"),
    (1, 0): ("on the left", "on the left side"),
    (1, 1): ("in the center", "in the middle"),
    (1, 2): ("on the right", "on the right side"),
    (2, 0): ("in the bottom left", "in the bottom left corner"),
    (2, 1): ("at the bottom", "near the bottom"),
    (2, 2): ("in the bottom right", "in the bottom right corner"),
}

SPLITS: dict[str, tuple[int, int]] = {  # name -> (first seed, count); ranges never overlap
    "train": (0, 32000),
    "val": (1_000_000, 300),
    "test": (2_000_000, 300),
}
# drawn by the independent renderer in data/shapes_oos.py, never trained on
OOS_SPLITS: dict[str, tuple[int, int]] = {"oos": (3_000_000, 300)}
# Each split owns the million seeds from its first one: a held-out split (val, test, oos) can be
# scored on more scenes than its fixed count (`split(name, count)`), all from its own generator and
# never trained on, to narrow the intervals of its rates.
SEED_BLOCK = 1_000_000
HELD_OUT = ("val", "test", "oos")


@dataclass(frozen=True)
class ShapeObject:
    shape: str  # circle | square | triangle
    colour: str
    size: str  # small | large
    x: float  # centre, pixels
    y: float
    radius: float  # circumradius, pixels of the 256 frame
    angle: float = 0.0  # rotation in degrees (squares and triangles)
    filled: bool = True  # False: outline only


@dataclass
class Scene:
    seed: int
    image: np.ndarray  # [H, W, 3] uint8 RGB (256x256 in the plain style; other sizes otherwise)
    captions: list[str]  # 5 references: lowercase, space-separated, no punctuation
    objects: list[ShapeObject]
    layout: str  # "single" | "horizontal" | "vertical" | "row"


def split(name: str, count: int | None = None) -> list[int]:
    """The seeds of a split: train, val, test or oos (disjoint). Its fixed seeds by default; with
    `count`, its first `count` seeds: past a held-out split's fixed count, the seeds after it in
    its block (up to SEED_BLOCK). The training split never grows past the scenes trained on."""
    table = {**SPLITS, **OOS_SPLITS}
    if name not in table:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(table)}")
    first, fixed = table[name]
    if count is not None and not 1 <= count <= SEED_BLOCK:
        raise ValueError(f"a split has 1 to {SEED_BLOCK:,} scenes, got {count}")
    n = fixed if count is None else count if name in HELD_OUT else min(count, fixed)
    return list(range(first, first + n))


# ------------------------------------------------------------------ the grammar
def _np(o: ShapeObject, size: bool = True, synonym: bool = False) -> str:
    """Noun phrase: "a large red circle", "an orange square", "a big blue triangle"."""
    adj = ([SIZE_SYNONYM[o.size] if synonym else o.size] if size else []) + [o.colour]
    return f"{'an' if adj[0][0] in 'aeiou' else 'a'} {' '.join(adj)} {o.shape}"


def _plural(o: ShapeObject, count: str, size: str | None = None) -> str:
    return " ".join([count] + ([size] if size else []) + [o.colour, PLURAL[o.shape]])


def _key(o: ShapeObject) -> tuple[str, str]:
    return (o.colour, o.shape)


def _captions_single(o: ShapeObject, cell: tuple[int, int]) -> list[str]:
    region, alt = REGIONS[cell]
    return [
        f"{_np(o)} {region}",
        f"{_np(o, synonym=True)} {alt}",
        f"{_np(o, size=False)} {region}",
        f"there is {_np(o)} {region}",
        f"a single {o.size} {o.colour} {o.shape}",
    ]


def _captions_pair(a: ShapeObject, b: ShapeObject, layout: str) -> list[str]:
    """a is left of (horizontal) or above (vertical) b."""
    if _key(a) == _key(b):
        size = a.size if a.size == b.size else None
        arrangement = "side by side" if layout == "horizontal" else "one above the other"
        relation = "to the left of" if layout == "horizontal" else "above"
        return [
            f"{_plural(a, 'two', size)} {arrangement}",
            _plural(a, "two"),
            _plural(a, "a pair of"),
            f"{_np(a)} {relation} {_np(b)}",
            f"{_plural(a, 'two')} next to each other" if layout == "horizontal"
            else f"{_plural(a, 'two')} stacked vertically",
        ]
    if layout == "horizontal":
        return [
            f"{_np(a)} to the left of {_np(b)}",
            f"{_np(b)} to the right of {_np(a)}",
            f"{_np(a, size=False)} left of {_np(b, size=False)}",
            f"{_np(a, synonym=True)} next to {_np(b, synonym=True)}",
            f"{_np(a)} and {_np(b)} side by side",
        ]
    return [
        f"{_np(a)} above {_np(b)}",
        f"{_np(b)} below {_np(a)}",
        f"{_np(a, size=False)} over {_np(b, size=False)}",
        f"{_np(b, synonym=True)} under {_np(a, synonym=True)}",
        f"{_np(a)} and {_np(b)} one above the other",
    ]


def _captions_row(objs: list[ShapeObject]) -> list[str]:
    """Three objects sorted left to right."""
    a, b, c = objs
    keys = [_key(o) for o in objs]
    if len(set(keys)) == 3:
        return [
            f"{_np(a)} {_np(b)} and {_np(c)}",
            f"from left to right {_np(a, size=False)} {_np(b, size=False)} and {_np(c, size=False)}",
            f"{_np(c, size=False)} {_np(b, size=False)} and {_np(a, size=False)} from right to left",
            f"three shapes {_np(a, size=False)} {_np(b, size=False)} and {_np(c, size=False)}",
            f"{_np(a)} to the left of {_np(b)} and {_np(c)}",
        ]
    if len(set(keys)) == 1:
        size = a.size if a.size == b.size == c.size else None
        return [
            _plural(a, "three", size),
            f"{_plural(a, 'three')} in a row",
            f"a row of {_plural(a, 'three')}",
            f"{_plural(a, 'three')} side by side",
            f"{_np(a)} {_np(b)} and {_np(c)}",
        ]
    pair = [o for o in objs if keys.count(_key(o)) == 2]
    odd = next(o for o in objs if keys.count(_key(o)) == 1)
    size = pair[0].size if pair[0].size == pair[1].size else None
    p = pair[0]
    return [
        f"{_plural(p, 'two', size)} and {_np(odd)}",
        f"{_np(odd)} and {_plural(p, 'two', size)}",
        f"three shapes {_plural(p, 'two')} and {_np(odd, size=False)}",
        f"{_plural(p, 'two')} and {_np(odd, size=False)}",
        f"{_plural(p, 'a pair of')} and {_np(odd, size=False)}",
    ]


@lru_cache(maxsize=1)
def vocabulary_words() -> tuple[str, ...]:
    """Every word the grammar can produce, sorted."""
    words = {"a", "an", "and", "there", "is", "single", "two", "three", "pair", "of", "row", "shapes",
             "to", "the", "left", "right", "above", "below", "over", "under", "next", "side", "by",
             "one", "other", "each", "stacked", "vertically", "in", "from"}
    words |= set(SHAPES) | set(PLURAL.values()) | set(COLOURS) | set(SIZES) | set(SIZE_SYNONYM.values())
    for region, alt in REGIONS.values():
        words |= set(region.split()) | set(alt.split())
    return tuple(sorted(words))


# ------------------------------------------------------------------ drawing
def object_mask(o: ShapeObject, size: int = SIZE) -> np.ndarray:
    """[size, size] bool: the pixels the plain style paints with object `o` (same rasteriser, same
    geometry), so anything drawn from it (the depth maps of `depth_scenes`) has the photo's exact edges."""
    return shape_render.object_mask(o, size)


# ------------------------------------------------------------------ layouts
def _random_object(rng: np.random.Generator, n: int, like: ShapeObject | None = None,
                   varied: bool = True) -> ShapeObject:
    """An unplaced object; `n` objects share the scene. Radii are log-uniform within their class."""
    shape = like.shape if like else SHAPES[int(rng.integers(len(SHAPES)))]
    colour = like.colour if like else list(COLOURS)[int(rng.integers(len(COLOURS)))]
    size = SIZES[int(rng.integers(2))]
    lo, hi = RADIUS[size] if varied else PLAIN_RADIUS[size]
    if size == "large":
        hi = min(hi, LARGE_CAP[n])
    radius = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    angle = float(rng.uniform(0, 360)) if varied and rng.random() < 0.6 else 0.0
    filled = not (varied and radius >= 12.0 and rng.random() < 0.3)
    return ShapeObject(shape, colour, size, 0.0, 0.0, radius, angle, filled)


def _place(o: ShapeObject, x: float, y: float) -> ShapeObject:
    return replace(o, x=float(x), y=float(y))


def _fits(o: ShapeObject, x: float, y: float) -> bool:
    m = o.radius + 3
    return m <= x <= SIZE - m and m <= y <= SIZE - m


def _apart(a: ShapeObject, b: ShapeObject, gap: float = 16.0) -> bool:
    return float(np.hypot(a.x - b.x, a.y - b.y)) >= a.radius + b.radius + gap


def _shrunk(objs: list[ShapeObject]) -> list[ShapeObject]:
    """Large objects 15% smaller (never below their class): for a layout that found no room."""
    return [replace(o, radius=max(RADIUS["large"][0], o.radius * 0.85)) if o.size == "large" else o for o in objs]


def _layout_single(rng: np.random.Generator, varied: bool) -> tuple[list[ShapeObject], tuple[int, int]]:
    cell = (int(rng.integers(3)), int(rng.integers(3)))
    o = _random_object(rng, 1, varied=varied)
    if cell != (1, 1):  # the centre must stay inside its third of the frame
        o = replace(o, radius=min(o.radius, 80.0))
    centre = SIZE / 6.0
    while True:
        x = (2 * cell[1] + 1) * centre + rng.uniform(-14, 14)
        y = (2 * cell[0] + 1) * centre + rng.uniform(-14, 14)
        # clamp into the image, staying within the cell's third
        x = float(np.clip(x, o.radius + 3, SIZE - o.radius - 3))
        y = float(np.clip(y, o.radius + 3, SIZE - o.radius - 3))
        if int(x // (SIZE / 3)) == cell[1] and int(y // (SIZE / 3)) == cell[0]:
            return [_place(o, x, y)], cell


def _layout_pair(rng: np.random.Generator, same: bool, varied: bool) -> tuple[list[ShapeObject], str]:
    a = _random_object(rng, 2, varied=varied)
    b = _random_object(rng, 2, like=a if same else None, varied=varied)
    while not same and _key(a) == _key(b):
        b = _random_object(rng, 2, varied=varied)
    layout = "horizontal" if rng.random() < 0.5 else "vertical"
    objs = [a, b]
    for attempt in range(8000):
        if attempt and attempt % 1000 == 0:
            objs = _shrunk(objs)
        ax, ay, bx, by = rng.uniform(0, SIZE, 4)
        along, across = (bx - ax, by - ay) if layout == "horizontal" else (by - ay, bx - ax)
        if along <= 0 or abs(across) > 0.5 * along:  # clearly displaced along the layout's axis
            continue
        pa, pb = _place(objs[0], ax, ay), _place(objs[1], bx, by)
        if _fits(pa, ax, ay) and _fits(pb, bx, by) and _apart(pa, pb):
            return [pa, pb], layout
    raise RuntimeError("no pair layout found")  # pragma: no cover (never happens with these sizes)


def _layout_row(rng: np.random.Generator, repeats: int, varied: bool) -> list[ShapeObject]:
    first = _random_object(rng, 3, varied=varied)
    objs = [first]
    while len(objs) < 3:
        like = first if len(objs) < repeats else None
        o = _random_object(rng, 3, like, varied=varied)
        if like is None and any(_key(o) == _key(p) for p in objs):
            continue
        objs.append(o)
    order = rng.permutation(3)
    objs = [objs[i] for i in order]
    for attempt in range(20000):
        if attempt and attempt % 4000 == 0:
            objs = _shrunk(objs)
        xs = np.sort(rng.uniform(0, SIZE, 3))
        if np.diff(xs).min() < 52:  # clearly separated left to right
            continue
        ys = rng.uniform(0, SIZE, 3)
        placed = [_place(o, x, y) for o, x, y in zip(objs, xs, ys)]
        if all(_fits(p, p.x, p.y) for p in placed) and all(
                _apart(placed[i], placed[j]) for i in range(3) for j in range(i + 1, 3)):
            return placed
    raise RuntimeError("no row layout found")  # pragma: no cover


def layout_scene(rng: np.random.Generator, varied: bool = True) -> tuple[list[ShapeObject], str, list[str]]:
    """Objects (256 frame), layout name and the five reference captions of one scene."""
    n = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30]))
    if n == 1:
        objs, cell = _layout_single(rng, varied)
        return objs, "single", _captions_single(objs[0], cell)
    if n == 2:
        objs, layout = _layout_pair(rng, rng.random() < 0.2, varied)
        return objs, layout, _captions_pair(objs[0], objs[1], layout)
    u = rng.random()
    objs = _layout_row(rng, 3 if u < 0.1 else 2 if u < 0.35 else 1, varied)
    return objs, "row", _captions_row(objs)


def _scene_rng(seed: int, plain: bool) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0x5BA9E5 if not plain else 0x91A1])


def scene_layout(seed: int, plain: bool = False) -> tuple[list[ShapeObject], str, list[str]]:
    """What `make_scene(seed, plain)` holds (objects, layout, captions) without drawing it: the
    layout is drawn from the scene's generator before its look."""
    return layout_scene(_scene_rng(seed, plain), varied=not plain)


def make_scene(seed: int, plain: bool = False) -> Scene:
    """The scene of `seed` (deterministic: same seed, same pixels and captions).

    `plain=True`: the first generator's look (256x256, filled upright shapes with hard edges, the
    old size ranges, no blur or JPEG), which the refocus examples use for pixel-exact depth edges."""
    rng = _scene_rng(seed, plain)
    objs, layout, captions = layout_scene(rng, varied=not plain)
    style = shape_render.PLAIN if plain else shape_render.draw_style(rng)
    return Scene(int(seed), shape_render.render(objs, rng, style), captions, objs, layout)
