"""Synthetic captioning scenes: coloured shapes on varied backgrounds, 5 captions each.

numpy + PIL + stdlib only (the torch-free runtime's eval and calibration use it).
Everything is a pure function of an integer seed: `make_scene(seed)` draws a
256x256 RGB scene with 1-3 objects (circle / square / triangle, six colours,
small / large) on a solid, gradient or lightly textured background with noise,
and writes five paraphrased reference captions from a small grammar that are
all true of the scene:

    1 object   "a large red circle in the top left", "there is a large red circle in the top left", ...
    2 objects  "a red circle to the left of a small blue square", "a small blue square to the right of a
               red circle", "a large yellow square above a purple circle", "two green triangles", ...
    3 objects  listed left to right: "a red circle a blue square and a small green triangle",
               "from left to right ...", "... from right to left", "two red circles and a blue square", ...

Layouts are sampled so that every statement is unambiguous: a single object
sits near the centre of one cell of a 3x3 grid (its region phrase); two objects
are displaced clearly more along one axis than the other (left/right or
above/below); three objects have clearly separated x positions.

`split("train" | "val" | "test")` gives fixed, disjoint seed lists and
`vocabulary_words()` every word the grammar can produce, so a captioner's
vocabulary is known in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SIZE = 256
SHAPES = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 70, 220),
    "yellow": (240, 215, 35),
    "purple": (135, 45, 175),
    "orange": (245, 135, 25),
}
SIZES = ("small", "large")
SIZE_SYNONYM = {"small": "little", "large": "big"}
RADIUS = {"small": (15.0, 20.0), "large": (30.0, 38.0)}  # circumradius range in pixels (at 256x256)

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
    "train": (0, 8000),
    "val": (1_000_000, 300),
    "test": (2_000_000, 300),
}


@dataclass(frozen=True)
class ShapeObject:
    shape: str  # circle | square | triangle
    colour: str
    size: str  # small | large
    x: float  # centre, pixels
    y: float
    radius: float  # circumradius, pixels


@dataclass
class Scene:
    seed: int
    image: np.ndarray  # [256, 256, 3] uint8 RGB
    captions: list[str]  # 5 references: lowercase, space-separated, no punctuation
    objects: list[ShapeObject]
    layout: str  # "single" | "horizontal" | "vertical" | "row"


def split(name: str) -> list[int]:
    """The fixed seeds of a split: train, val or test (disjoint)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    first, count = SPLITS[name]
    return list(range(first, first + count))


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
def _background(rng: np.random.Generator) -> np.ndarray:
    """[S, S, 3] float32: a desaturated solid colour or gradient, maybe a light texture."""
    def tone() -> np.ndarray:
        level = rng.uniform(25, 235)
        return np.clip(level + rng.uniform(-22, 22, 3), 0, 255).astype(np.float32)

    kind = rng.choice(["solid", "gradient", "gradient"]) if rng.random() < 0.9 else "solid"
    c0 = tone()
    if kind == "solid":
        bg = np.broadcast_to(c0, (SIZE, SIZE, 3)).copy()
    else:
        c1 = tone()
        theta = rng.uniform(0, 2 * np.pi)
        u = np.linspace(-1, 1, SIZE, dtype=np.float32)
        t = (np.cos(theta) * u[None, :] + np.sin(theta) * u[:, None]) / np.float32(np.sqrt(2)) * 0.5 + 0.5
        bg = c0 + t[..., None] * (c1 - c0)
    texture = rng.random()
    if texture < 0.25:  # stripes
        period = rng.uniform(6, 24)
        theta = rng.uniform(0, np.pi)
        u = np.arange(SIZE, dtype=np.float32) * np.float32(2 * np.pi / period)
        phase = np.float32(np.sin(theta)) * u[:, None] + np.float32(np.cos(theta)) * u[None, :]
        bg += (np.sin(phase) * np.float32(rng.uniform(4, 12)))[..., None]
    elif texture < 0.45:  # checker
        cell = int(rng.integers(8, 33))
        k = np.arange(SIZE) // cell
        sign = np.where((k[:, None] + k[None, :]) % 2 == 0, np.float32(1), np.float32(-1))
        bg += (sign * np.float32(rng.uniform(3, 9)))[..., None]
    elif texture < 0.6:  # blotches: smooth low-frequency noise
        small = rng.normal(0, 1, (8, 8)).astype(np.float32)
        up = np.asarray(Image.fromarray(small, mode="F").resize((SIZE, SIZE), Image.BILINEAR))
        bg += (up * np.float32(rng.uniform(4, 10)))[..., None]
    return bg


def _draw(draw: ImageDraw.ImageDraw, o: ShapeObject, fill: tuple[int, int, int] | int) -> None:
    x, y, r = o.x, o.y, o.radius
    if o.shape == "circle":
        r = r * 0.9
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif o.shape == "square":
        h = r * 0.75  # half side (a square inscribed in a slightly smaller circle: similar area to the others)
        draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
    else:  # upward equilateral triangle with circumradius r, centroid at (x, y)
        pts = [(x, y - r), (x - r * 0.866, y + r * 0.5), (x + r * 0.866, y + r * 0.5)]
        draw.polygon(pts, fill=fill)


def object_mask(o: ShapeObject, size: int = SIZE) -> np.ndarray:
    """[size, size] bool: the pixels `_render` paints with object `o` (same rasteriser, same geometry),
    so anything drawn from it (the depth maps of `depth_scenes`) has the photo's exact object edges."""
    canvas = Image.new("L", (size, size), 0)
    _draw(ImageDraw.Draw(canvas), o, 255)
    return np.asarray(canvas) > 0


_NOISE_BANK = 4 * SIZE * SIZE * 3


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Standard normal samples drawn once from a fixed seed; scenes take a window at a random offset
    (several times faster than drawing fresh noise for every image, and just as deterministic)."""
    return np.random.default_rng(0x4015E).standard_normal(_NOISE_BANK, dtype=np.float32)


def _render(objs: list[ShapeObject], rng: np.random.Generator) -> np.ndarray:
    bg = _background(rng)
    canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for o in objs:
        base = np.asarray(COLOURS[o.colour], np.float64)
        fill = tuple(int(v) for v in np.clip(base + rng.uniform(-18, 18, 3), 0, 255))
        _draw(draw, o, fill)
    img = np.asarray(canvas, dtype=np.float32)
    sigma = rng.uniform(0, 10)
    if sigma > 0.5:
        offset = int(rng.integers(_NOISE_BANK - img.size))
        img = img + _noise_bank()[offset:offset + img.size].reshape(img.shape) * np.float32(sigma)
    return np.clip(img + np.float32(0.5), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ layouts
def _random_object(rng: np.random.Generator, like: ShapeObject | None = None) -> ShapeObject:
    shape = like.shape if like else SHAPES[int(rng.integers(len(SHAPES)))]
    colour = like.colour if like else list(COLOURS)[int(rng.integers(len(COLOURS)))]
    size = SIZES[int(rng.integers(2))]
    return ShapeObject(shape, colour, size, 0.0, 0.0, float(rng.uniform(*RADIUS[size])))


def _place(o: ShapeObject, x: float, y: float) -> ShapeObject:
    return ShapeObject(o.shape, o.colour, o.size, float(x), float(y), o.radius)


def _fits(o: ShapeObject, x: float, y: float) -> bool:
    m = o.radius + 3
    return m <= x <= SIZE - m and m <= y <= SIZE - m


def _apart(a: ShapeObject, b: ShapeObject, gap: float = 16.0) -> bool:
    return float(np.hypot(a.x - b.x, a.y - b.y)) >= a.radius + b.radius + gap


def _layout_single(rng: np.random.Generator) -> tuple[list[ShapeObject], tuple[int, int]]:
    o = _random_object(rng)
    cell = (int(rng.integers(3)), int(rng.integers(3)))
    centre = SIZE / 6.0
    while True:
        x = (2 * cell[1] + 1) * centre + rng.uniform(-14, 14)
        y = (2 * cell[0] + 1) * centre + rng.uniform(-14, 14)
        # clamp into the image, staying within the cell's third
        x = float(np.clip(x, o.radius + 3, SIZE - o.radius - 3))
        y = float(np.clip(y, o.radius + 3, SIZE - o.radius - 3))
        if int(x // (SIZE / 3)) == cell[1] and int(y // (SIZE / 3)) == cell[0]:
            return [_place(o, x, y)], cell


def _layout_pair(rng: np.random.Generator, same: bool) -> tuple[list[ShapeObject], str]:
    a = _random_object(rng)
    b = _random_object(rng, like=a if same else None)
    while not same and _key(a) == _key(b):
        b = _random_object(rng)
    layout = "horizontal" if rng.random() < 0.5 else "vertical"
    for _ in range(1000):
        ax, ay, bx, by = rng.uniform(0, SIZE, 4)
        along, across = (bx - ax, by - ay) if layout == "horizontal" else (by - ay, bx - ax)
        if along <= 0 or abs(across) > 0.5 * along:  # clearly displaced along the layout's axis
            continue
        pa, pb = _place(a, ax, ay), _place(b, bx, by)
        if _fits(pa, ax, ay) and _fits(pb, bx, by) and _apart(pa, pb):
            return [pa, pb], layout
    raise RuntimeError("no pair layout found")  # pragma: no cover (never happens with these sizes)


def _layout_row(rng: np.random.Generator, repeats: int) -> list[ShapeObject]:
    first = _random_object(rng)
    objs = [first]
    while len(objs) < 3:
        like = first if len(objs) < repeats else None
        o = _random_object(rng, like)
        if like is None and any(_key(o) == _key(p) for p in objs):
            continue
        objs.append(o)
    order = rng.permutation(3)
    objs = [objs[i] for i in order]
    for _ in range(5000):
        xs = np.sort(rng.uniform(0, SIZE, 3))
        if np.diff(xs).min() < 52:  # clearly separated left to right
            continue
        ys = rng.uniform(0, SIZE, 3)
        placed = [_place(o, x, y) for o, x, y in zip(objs, xs, ys)]
        if all(_fits(p, p.x, p.y) for p in placed) and all(
                _apart(placed[i], placed[j]) for i in range(3) for j in range(i + 1, 3)):
            return placed
    raise RuntimeError("no row layout found")  # pragma: no cover


def make_scene(seed: int) -> Scene:
    """The scene of `seed` (deterministic: same seed, same pixels and captions)."""
    rng = np.random.default_rng([int(seed), 0x5BA9E5])
    n = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30]))
    if n == 1:
        objs, cell = _layout_single(rng)
        layout, captions = "single", _captions_single(objs[0], cell)
    elif n == 2:
        objs, layout = _layout_pair(rng, same=rng.random() < 0.2)
        captions = _captions_pair(objs[0], objs[1], layout)
    else:
        u = rng.random()
        objs = _layout_row(rng, repeats=3 if u < 0.1 else 2 if u < 0.35 else 1)
        layout, captions = "row", _captions_row(objs)
    return Scene(int(seed), _render(objs, rng), captions, objs, layout)
