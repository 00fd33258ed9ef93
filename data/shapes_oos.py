"""The out-of-style test split: shapes scenes drawn by code the training data never comes from.

A captioner trained on `data/shapes.py` + `data/shape_render.py` is scored here on scenes
that share only the caption grammar (`shapes._captions_*`, so references are worded the
same and equally true) and the size classes; everything else is independent:

* layout: its own sampler (uniform radii, constructive pair placement, its own margins);
* geometry: a numpy rasteriser of signed-distance functions with analytic coverage
  anti-aliasing. A circle has exactly the circumradius, a square is sized by its inradius
  (circumradius r: half side r/sqrt 2), the triangle is an exact equilateral SDF, rotation is
  counter-clockwise on screen, and outlines are strokes centred on the edge (|sdf| < w/2);
* colour: a palette of named shades per colour word (crimson, firebrick, royal blue, ...);
* look: paper with grain, radial gradients, dark slate, faint grid lines, vignettes, soft
  shadows under objects; canvases 200-500 px at aspect 0.8-1.25; box blur, sensor noise and
  JPEG (PIL as an encoder only).

`make_oos_scene(seed)` is deterministic per seed; `oos_layout(seed)` gives the same
objects and captions without drawing (cheap: for scoring and tests).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from mmedge.data import shapes
from mmedge.data.shapes import ShapeObject

FRAME = shapes.SIZE  # layouts live in the 256 frame, like the training data's
MARGIN = 4.0  # an object keeps this far from the frame's edge
CELL = FRAME / 3.0
SMALL = (8.0, 22.0)  # circumradius ranges of the size classes (the grammar's "small" / "large")
LARGE = (30.0, 95.0)
LARGE_CAP = {1: 95.0, 2: 52.0, 3: 40.0}  # room a layout of n objects leaves for a large object
ROW_GAP = 56.0  # x centres of a row at least this far apart (>= 52: "left to right" is clear)
LAYOUT_SEED, DRAW_SEED = 0x0C5_1A7, 0x0C5_D2A  # the two generators of a seed: layout and look

# shades a person would call by the colour's name (no borderline hues); RGB
PALETTE: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((220, 20, 60), (178, 34, 34), (226, 44, 38), (215, 30, 40)),  # crimson, firebrick, tomato-ish
    "green": ((34, 139, 34), (46, 160, 80), (30, 150, 50), (60, 179, 60)),  # forest, sea-ish, pure, lime-ish
    "blue": ((65, 105, 225), (30, 110, 240), (45, 80, 215), (50, 100, 200)),  # royal, dodger-ish, cobalt
    "yellow": ((255, 215, 0), (250, 225, 40), (245, 200, 10), (255, 235, 70)),  # gold, lemon
    "purple": ((150, 50, 170), (138, 43, 200), (160, 60, 220), (130, 60, 180)),  # purple, violets, orchid-ish
    "orange": ((255, 140, 0), (245, 120, 30), (255, 155, 20), (235, 105, 15)),  # dark orange, pumpkin
}


# ------------------------------------------------------------------ layout
def _object(rng: np.random.Generator, n: int, like: ShapeObject | None = None, cap: float = LARGE[1]
            ) -> ShapeObject:
    """An unplaced object of a scene of n objects; radii uniform within the size class (large ones <= cap)."""
    shape = like.shape if like else str(rng.choice(shapes.SHAPES))
    colour = like.colour if like else str(rng.choice(sorted(PALETTE)))
    size = "large" if rng.random() < 0.5 else "small"
    lo, hi = (LARGE[0], min(cap, LARGE_CAP[n])) if size == "large" else SMALL
    radius = float(rng.uniform(lo, hi))
    angle = {"circle": 0.0, "square": float(rng.uniform(0, 90)), "triangle": float(rng.uniform(0, 120))}[shape]
    filled = radius < 14.0 or rng.random() < 0.7
    return ShapeObject(shape, colour, size, 0.0, 0.0, radius, angle, filled)


def _moved(o: ShapeObject, x: float, y: float, radius: float | None = None) -> ShapeObject:
    return ShapeObject(o.shape, o.colour, o.size, float(x), float(y), o.radius if radius is None else radius,
                       o.angle, o.filled)


def _cut(o: ShapeObject, factor: float = 0.9) -> ShapeObject:
    """A large object made smaller (never below its class), for a layout without room."""
    return _moved(o, o.x, o.y, max(LARGE[0], o.radius * factor)) if o.size == "large" else o


def _single(rng: np.random.Generator) -> tuple[ShapeObject, tuple[int, int]]:
    row, col = int(rng.integers(3)), int(rng.integers(3))
    bounds = [(k * CELL + 4.0, (k + 1) * CELL - 4.0) for k in (col, row)]  # the centre stays inside its cell
    o = _object(rng, 1, cap=min(min(hi - MARGIN, FRAME - MARGIN - lo) for lo, hi in bounds))
    pos = []
    for k, (lo, hi) in zip((col, row), bounds):
        c = (k + 0.5) * CELL + rng.uniform(-0.2, 0.2) * CELL
        pos.append(float(np.clip(c, max(lo, o.radius + MARGIN), min(hi, FRAME - MARGIN - o.radius))))
    return _moved(o, pos[0], pos[1]), (row, col)


def _pair(rng: np.random.Generator, same: bool) -> tuple[list[ShapeObject], str]:
    a = _object(rng, 2)
    b = _object(rng, 2, like=a if same else None)
    while not same and (a.colour, a.shape) == (b.colour, b.shape):
        b = _object(rng, 2)
    layout = "horizontal" if rng.random() < 0.5 else "vertical"
    for attempt in range(2000):
        if attempt and attempt % 200 == 0:
            a, b = _cut(a), _cut(b)
        ra, rb = a.radius, b.radius
        # along >= ra + rb + gap: apart whatever `across` is; |across| <= 0.45 along
        along_lo, along_hi = ra + rb + rng.uniform(10, 40), FRAME - 2 * MARGIN - ra - rb
        if along_lo > along_hi:
            continue
        along = rng.uniform(along_lo, along_hi)
        across = rng.uniform(-0.45, 0.45) * along
        u_lo = max(MARGIN + ra, MARGIN + rb - across)
        u_hi = min(FRAME - MARGIN - ra, FRAME - MARGIN - rb - across)
        if u_lo > u_hi:
            continue
        u = rng.uniform(u_lo, u_hi)  # a's across coordinate
        v = rng.uniform(MARGIN + ra, FRAME - MARGIN - rb - along)  # a's along coordinate
        pa, pb = ((v, u), (v + along, u + across)) if layout == "horizontal" else ((u, v), (u + across, v + along))
        return [_moved(a, *pa), _moved(b, *pb)], layout
    raise RuntimeError("no pair layout found")  # pragma: no cover (sizes always fit after cuts)


def _row(rng: np.random.Generator) -> list[ShapeObject]:
    u = rng.random()
    repeats = 3 if u < 0.12 else 2 if u < 0.4 else 1
    objs = [_object(rng, 3)]
    while len(objs) < 3:
        o = _object(rng, 3, like=objs[0] if len(objs) < repeats else None)
        if len(objs) >= repeats and any((o.colour, o.shape) == (p.colour, p.shape) for p in objs):
            continue
        objs.append(o)
    objs = [objs[i] for i in rng.permutation(3)]
    for attempt in range(20000):
        if attempt and attempt % 2000 == 0:
            objs = [_cut(o) for o in objs]
        xs = [rng.uniform(MARGIN + o.radius, FRAME - MARGIN - o.radius) for o in objs]
        if np.diff(np.sort(xs)).min() < ROW_GAP:
            continue
        ys = [rng.uniform(MARGIN + o.radius, FRAME - MARGIN - o.radius) for o in objs]
        placed = sorted((_moved(o, x, y) for o, x, y in zip(objs, xs, ys)), key=lambda o: o.x)
        if all(math.hypot(p.x - q.x, p.y - q.y) >= p.radius + q.radius + 8.0
               for i, p in enumerate(placed) for q in placed[i + 1:]):
            return placed
    raise RuntimeError("no row layout found")  # pragma: no cover


def oos_layout(seed: int) -> tuple[list[ShapeObject], str, list[str]]:
    """Objects (256 frame), layout name and five reference captions of an out-of-style scene."""
    rng = np.random.default_rng([int(seed), LAYOUT_SEED])
    n = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    if n == 1:
        o, cell = _single(rng)
        return [o], "single", shapes._captions_single(o, cell)
    if n == 2:
        (a, b), layout = _pair(rng, rng.random() < 0.2)
        return [a, b], layout, shapes._captions_pair(a, b, layout)
    objs = _row(rng)
    return objs, "row", shapes._captions_row(objs)


# ------------------------------------------------------------------ signed distances (pixels, y down)
def _sdf(shape: str, px: np.ndarray, py: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Signed distance to the outline of a shape centred at the origin, circumradius r."""
    t = math.radians(angle)  # counter-clockwise on screen: rotate the sample points clockwise
    qx = math.cos(t) * px - math.sin(t) * py
    qy = math.sin(t) * px + math.cos(t) * py
    if shape == "circle":
        return np.hypot(qx, qy) - r
    if shape == "square":  # inradius r / sqrt 2
        dx, dy = np.abs(qx) - r / math.sqrt(2), np.abs(qy) - r / math.sqrt(2)
        return np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)
    # equilateral triangle, apex up, centroid at the origin (exact SDF; half side h = r sqrt 3 / 2)
    k, h = math.sqrt(3.0), r * math.sqrt(3.0) / 2
    x, y = np.abs(qx) - h, -qy + h / k
    fold = x + k * y > 0
    x, y = np.where(fold, (x - k * y) / 2, x), np.where(fold, (-k * x - y) / 2, y)
    x = x - np.clip(x, -2 * h, 0)
    return -np.hypot(x, y) * np.sign(y)


def coverage(o: ShapeObject, width: int, height: int, soft: float = 1.0, stroke: float = 0.0,
             filled: bool = True) -> np.ndarray:
    """[height, width] float32 in [0, 1]: `o` (canvas pixels) with a `soft`-pixel anti-aliased edge."""
    out = np.zeros((height, width), np.float32)
    reach = o.radius + stroke + soft + 2  # distances are only evaluated near the object
    x0, x1 = max(0, int(o.x - reach)), min(width, int(math.ceil(o.x + reach)) + 1)
    y0, y1 = max(0, int(o.y - reach)), min(height, int(math.ceil(o.y + reach)) + 1)
    if x0 >= x1 or y0 >= y1:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = _sdf(o.shape, xx + 0.5 - o.x, yy + 0.5 - o.y, o.radius, o.angle)
    if not filled:
        d = np.abs(d) - stroke / 2
    out[y0:y1, x0:x1] = np.clip(0.5 - d / soft, 0.0, 1.0)
    return out


def box_blur(img: np.ndarray, k: int) -> np.ndarray:
    """Separable k x k mean filter (edge-replicated), over the first two axes."""
    if k <= 1:
        return img
    p = k // 2
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (p + 1, k - p - 1)
        c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float64)
        n = img.shape[axis]
        img = ((np.take(c, range(k, k + n), axis=axis) - np.take(c, range(0, n), axis=axis)) / k).astype(np.float32)
    return img


# ------------------------------------------------------------------ backgrounds
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return (xx + 0.5) / w - 0.5, (yy + 0.5) / h - 0.5


def background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, bool]:
    """([H, W, 3] float32, light?): paper, radial gradient, dark slate or grid paper, maybe vignetted."""
    u, v = _grid(height, width)
    kind = str(rng.choice(["paper", "radial", "slate", "grid"]))
    if kind == "slate":
        base = np.array([47, 62, 72], np.float32) + rng.uniform(-12, 12, 3).astype(np.float32)
        img = base + (v * np.float32(rng.uniform(-30, 30)))[..., None]
    elif kind == "radial":
        inner = np.float32(rng.uniform(200, 250)) + rng.uniform(-10, 10, 3).astype(np.float32)
        outer = inner - np.float32(rng.uniform(40, 110))
        cx, cy = rng.uniform(-0.25, 0.25, 2)
        t = np.clip(np.hypot(u - cx, v - cy) / 0.75, 0, 1)[..., None]
        img = inner + t * (outer - inner)
    else:  # paper (cream, grey or white) with grain; "grid": the same with faint ruled lines
        tone = np.array([[246, 241, 226], [236, 236, 232], [250, 250, 248]], np.float32)[int(rng.integers(3))]
        grain = rng.normal(0, rng.uniform(2, 7), (height, width)).astype(np.float32)
        img = tone + box_blur(grain, int(rng.integers(1, 3)))[..., None]
        if kind == "grid":
            step = int(rng.integers(14, 40))
            lines = (np.arange(height)[:, None] % step == 0) | (np.arange(width)[None, :] % step == 0)
            img = img - lines[..., None] * np.array([40, 25, 5], np.float32) * np.float32(rng.uniform(0.4, 1))
    if rng.random() < 0.5:  # vignette
        img = img * (1 - np.float32(rng.uniform(0.15, 0.4)) * (u * u + v * v) * 2)[..., None]
    return img.astype(np.float32), kind != "slate"


def _shade(rng: np.random.Generator, name: str) -> np.ndarray:
    base = np.asarray(PALETTE[name][int(rng.integers(len(PALETTE[name])))], np.float32)
    return np.clip(base + rng.uniform(-8, 8, 3).astype(np.float32), 0, 255)


def _visible(colour: np.ndarray, under: np.ndarray) -> bool:
    """Far enough in RGB, and in luminance unless far more saturated (yellow on light grey is visible,
    a dark violet on dark slate is not)."""
    lum = np.array([0.299, 0.587, 0.114], np.float32)
    chroma = float(np.ptp(colour) - np.ptp(under))
    return float(np.abs(colour - under).sum()) >= 120 and (abs(float((colour - under) @ lum)) >= 20 or chroma >= 150)


# ------------------------------------------------------------------ drawing
def _colour_for(rng: np.random.Generator, name: str, under: np.ndarray) -> np.ndarray | None:
    """A shade of `name` that stands out from `under` (None if ten shades do not)."""
    for _ in range(10):
        colour = _shade(rng, name)
        if _visible(colour, under):
            return colour
    return None


def render_oos(objs: list[ShapeObject], rng: np.random.Generator) -> np.ndarray:
    """[H, W, 3] uint8: the objects (256-frame coordinates) drawn in the out-of-style look."""
    width = int(rng.integers(200, 501))
    height = int(np.clip(round(width / rng.uniform(0.8, 1.25)), 200, 500))
    img, light = background(rng, width, height)
    scale = min(width, height) / FRAME
    soft = float(rng.uniform(0.7, 1.6))
    shadows = light and rng.random() < 0.5
    drawn = []
    for o in objs:  # colours first: a background no shade stands out from is moved before anything is drawn
        placed = ShapeObject(o.shape, o.colour, o.size, o.x * width / FRAME, o.y * height / FRAME,
                             o.radius * scale, o.angle, o.filled)
        stroke = max(2.0, placed.radius * float(rng.uniform(0.1, 0.2)))
        alpha = coverage(placed, width, height, soft, stroke, o.filled)
        under = img[alpha > 0.5].mean(axis=0) if (alpha > 0.5).any() else img.mean(axis=(0, 1))
        colour = _colour_for(rng, o.colour, under)
        if colour is None:  # move the background's brightness away from the colour's
            dark = float(np.mean(PALETTE[o.colour], axis=0) @ np.array([0.299, 0.587, 0.114])) > 128
            img = img * np.float32(0.5) + np.float32(0 if dark else 128)
            colour = _shade(rng, o.colour)
        drawn.append((placed, stroke, alpha, colour))
    for placed, stroke, alpha, colour in drawn:
        if shadows:  # a soft dark copy, offset down and right
            off = placed.radius * 0.12 + 2
            ghost = ShapeObject(placed.shape, placed.colour, placed.size, placed.x + off, placed.y + off,
                                placed.radius, placed.angle)
            a = box_blur(box_blur(coverage(ghost, width, height, soft, stroke, placed.filled), 5), 5)
            img = img * (1 - np.float32(0.3) * a)[..., None]
        img = img + alpha[..., None] * (colour - img)
    if rng.random() < 0.3:
        img = box_blur(img, 3)
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(40, 91)))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def make_oos_scene(seed: int) -> shapes.Scene:
    """The out-of-style scene of `seed` (same seed, same pixels and captions)."""
    objs, layout, captions = oos_layout(seed)
    image = render_oos(objs, np.random.default_rng([int(seed), DRAW_SEED]))
    return shapes.Scene(int(seed), image, captions, objs, layout)


def is_oos_seed(seed: int) -> bool:
    """In an out-of-style split's block of seeds (its fixed scenes and the ones after them)."""
    return any(first <= seed < first + shapes.SEED_BLOCK for first, _count in shapes.OOS_SPLITS.values())


def scene(seed: int) -> shapes.Scene:
    """The scene of any split's seed (the ranges are disjoint): out-of-style or the training style."""
    return make_oos_scene(seed) if is_oos_seed(seed) else shapes.make_scene(seed)
