"""The training style of the shapes scenes: PIL drawing with the variety a user's drawing has.

`data/shapes.py` decides what is in a scene (objects, layout, captions) in a 256x256 frame;
this module decides how it looks, so that a captioner trained on it sees what users draw:

* canvas: 256x256 or another size and aspect (the runtime stretches it to the model's input);
* objects: rotated squares and triangles, filled or outline-only, anti-aliased (4x supersampled
  coverage) or hard-edged, colours jittered in HSV around each named colour;
* background: solid, gradient, stripes, checker, blotches or coarse noise, kept far enough from
  every object's colour that the object stays visible;
* camera: Gaussian noise, slight blur, JPEG compression at quality 30-95.

`object_mask(o, size)` rasterises an object exactly as the plain style draws it (hard edges,
filled), which the depth scenes use so depth edges coincide with the photo's edges.
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFilter



class ShapeObject(Protocol):
    """What this module needs of `data.shapes.ShapeObject` (a frozen dataclass; no import: no cycle)."""

    shape: str
    colour: str
    x: float
    y: float
    radius: float
    angle: float
    filled: bool

FRAME = 256  # the layout frame of data/shapes.py
SUPERSAMPLE = 4

# named colour -> (hue degrees, saturation, value) centre; jitter keeps hues >= 12 degrees apart
HSV: dict[str, tuple[float, float, float]] = {
    "red": (358.0, 0.85, 0.86),
    "orange": (28.0, 0.9, 0.96),
    "yellow": (53.0, 0.86, 0.95),
    "green": (128.0, 0.78, 0.66),
    "blue": (226.0, 0.82, 0.86),
    "purple": (283.0, 0.72, 0.70),
}
HUE_JITTER = {"red": 7.0, "orange": 5.0, "yellow": 5.0, "green": 14.0, "blue": 10.0, "purple": 9.0}


@dataclass(frozen=True)
class Style:
    """How one scene is drawn (all drawn from the scene's generator, so a seed fixes it)."""

    width: int = FRAME
    height: int = FRAME
    antialias: bool = False
    blur: float = 0.0  # Gaussian radius in pixels; 0: none
    jpeg_quality: int | None = None
    noise: float = 0.0  # Gaussian sigma in levels


PLAIN = Style()


def jittered_colour(name: str, rng: np.random.Generator) -> tuple[int, int, int]:
    h, s, v = HSV[name]
    h = (h + rng.uniform(-HUE_JITTER[name], HUE_JITTER[name])) % 360.0
    s = float(np.clip(s * rng.uniform(0.8, 1.12), 0.45, 1.0))
    v = float(np.clip(v * rng.uniform(0.82, 1.08), 0.5, 1.0))
    r, g, b = colorsys.hsv_to_rgb(h / 360.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def vertices(o: ShapeObject, sx: float = 1.0, sy: float = 1.0, sr: float = 1.0) -> list[tuple[float, float]] | None:
    """Polygon vertices of a square or triangle in canvas pixels (None for a circle)."""
    x, y, r = o.x * sx, o.y * sy, o.radius * sr
    if o.shape == "square":
        rr, start = r * 0.75 * math.sqrt(2.0), math.pi / 4  # half side 0.75 r: areas similar to the others
        n = 4
    elif o.shape == "triangle":
        rr, start, n = r, -math.pi / 2, 3  # pointing up at angle 0, centroid at (x, y)
    else:
        return None
    a0 = start + math.radians(o.angle)
    return [(x + rr * math.cos(a0 + 2 * math.pi * k / n), y + rr * math.sin(a0 + 2 * math.pi * k / n))
            for k in range(n)]


def _draw_shape(draw: ImageDraw.ImageDraw, o: ShapeObject, scale: float, dx: float, dy: float, fill: int,
                filled: bool, width: int) -> None:
    """Draw `o` (canvas coordinates / scale, shifted by dx, dy) into an L-mode mask."""
    s = replace(o, x=(o.x - dx) * scale, y=(o.y - dy) * scale, radius=o.radius * scale)
    if o.shape == "circle":
        r = s.radius * 0.9
        box = [s.x - r, s.y - r, s.x + r, s.y + r]
        if filled:
            draw.ellipse(box, fill=fill)
        else:
            draw.ellipse(box, outline=fill, width=width)
        return
    pts = vertices(s)
    if filled:
        draw.polygon(pts, fill=fill)
    else:
        draw.line([*pts, pts[0], pts[1]], fill=fill, width=width, joint="curve")


def coverage(o: ShapeObject, width: int, height: int, antialias: bool, filled: bool = True,
             stroke: float = 0.0) -> tuple[np.ndarray, int, int]:
    """Object coverage in [0, 1] over its bounding box: (alpha [h, w] float32, left, top).

    `o` is in canvas pixels already. Anti-aliased: drawn at 4x and box-filtered to coverage."""
    pad = int(math.ceil(o.radius * 1.1 + stroke + 2))
    left, top = max(0, int(o.x) - pad), max(0, int(o.y) - pad)
    right, bottom = min(width, int(o.x) + pad + 1), min(height, int(o.y) + pad + 1)
    k = SUPERSAMPLE if antialias else 1
    w, h = max(1, right - left), max(1, bottom - top)
    mask = Image.new("L", (w * k, h * k), 0)
    _draw_shape(ImageDraw.Draw(mask), o, k, left, top, 255, filled, max(1, int(round(stroke * k))))
    if k > 1:
        mask = mask.resize((w, h), Image.BOX)
    return np.asarray(mask, dtype=np.float32) / 255.0, left, top


def object_mask(o: ShapeObject, size: int = FRAME) -> np.ndarray:
    """[size, size] bool: the pixels the plain style paints with `o` (hard edges, filled)."""
    placed = _in_canvas(o, size / FRAME, size / FRAME)
    alpha, left, top = coverage(placed, size, size, antialias=False)
    out = np.zeros((size, size), bool)
    out[top:top + alpha.shape[0], left:left + alpha.shape[1]] = alpha > 0.5
    return out


def _in_canvas(o: ShapeObject, sx: float, sy: float) -> ShapeObject:
    return replace(o, x=o.x * sx, y=o.y * sy, radius=o.radius * min(sx, sy))


# ------------------------------------------------------------------ backgrounds
def _tone(rng: np.random.Generator) -> np.ndarray:
    level = rng.uniform(20, 240)
    return np.clip(level + rng.uniform(-24, 24, 3), 0, 255).astype(np.float32)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """[H, W, 3] float32: a desaturated solid colour or gradient, maybe a texture or coarse noise."""
    c0 = _tone(rng)
    if rng.random() < 0.35:
        bg = np.broadcast_to(c0, (height, width, 3)).copy()
    else:
        c1 = _tone(rng)
        theta = rng.uniform(0, 2 * np.pi)
        u = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
        v = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
        t = (np.float32(np.cos(theta)) * u + np.float32(np.sin(theta)) * v) / np.float32(np.sqrt(2)) * 0.5 + 0.5
        bg = c0 + t[..., None] * (c1 - c0)
    kind = rng.random()
    if kind < 0.18:  # stripes
        period = rng.uniform(5, 30)
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = (np.float32(np.sin(theta)) * yy + np.float32(np.cos(theta)) * xx) * np.float32(2 * np.pi / period)
        bg += (np.sin(phase) * np.float32(rng.uniform(3, 14)))[..., None]
    elif kind < 0.33:  # checker
        cell = int(rng.integers(6, 40))
        sign = np.where(((np.arange(height)[:, None] // cell) + (np.arange(width)[None, :] // cell)) % 2 == 0,
                        np.float32(1), np.float32(-1))
        bg += (sign * np.float32(rng.uniform(3, 12)))[..., None]
    elif kind < 0.5:  # blotches: smooth low-frequency noise, per channel
        small = rng.normal(0, 1, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3)).astype(np.float32)
        up = np.stack([np.asarray(Image.fromarray(small[..., c], mode="F").resize((width, height), Image.BICUBIC))
                       for c in range(3)], axis=-1)
        bg += up * np.float32(rng.uniform(4, 16))
    elif kind < 0.62:  # coarse noise (paper grain, sensor noise at low resolution)
        cell = int(rng.integers(2, 6))
        small = rng.normal(0, 1, (height // cell + 1, width // cell + 1)).astype(np.float32)
        grain = np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)[:height, :width]
        bg += (grain * np.float32(rng.uniform(4, 14)))[..., None]
    return bg


def _separated(colour: tuple[int, int, int], bg_mean: np.ndarray) -> bool:
    return float(np.abs(np.asarray(colour, np.float32) - bg_mean).sum()) >= 110.0


# ------------------------------------------------------------------ the scene
def draw_style(rng: np.random.Generator) -> Style:
    if rng.random() < 0.4:
        width = height = FRAME
    else:
        long = int(rng.integers(160, 641))
        aspect = float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
        width, height = (long, max(96, int(long / aspect))) if aspect >= 1 else (max(96, int(long * aspect)), long)
    return Style(width=width, height=height, antialias=bool(rng.random() < 0.6),
                 blur=float(rng.uniform(0.3, 1.3)) if rng.random() < 0.35 else 0.0,
                 jpeg_quality=int(rng.integers(30, 96)) if rng.random() < 0.6 else None,
                 noise=float(rng.uniform(0, 10)) if rng.random() < 0.7 else 0.0)


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Standard normal samples drawn once; scenes take a window at a random offset (fast, deterministic)."""
    return np.random.default_rng(0x4015E).standard_normal(4 * 640 * 640 * 3, dtype=np.float32)


def render(objs: list[ShapeObject], rng: np.random.Generator, style: Style = PLAIN) -> np.ndarray:
    """[H, W, 3] uint8: the objects (256-frame coordinates) drawn on a background in `style`."""
    width, height = style.width, style.height
    sx, sy = width / FRAME, height / FRAME
    img = background(rng, width, height)
    bg_mean = img.reshape(-1, 3).mean(axis=0)
    for o in objs:
        colour = jittered_colour(o.colour, rng)
        for _ in range(20):
            if _separated(colour, bg_mean):
                break
            colour = jittered_colour(o.colour, rng)
        else:  # the background is too close to this colour: move the background away
            img = img * np.float32(0.5) + np.float32(255 if bg_mean.mean() < 128 else 0) * np.float32(0.5)
            bg_mean = img.reshape(-1, 3).mean(axis=0)
        placed = _in_canvas(o, sx, sy)
        stroke = 0.0 if o.filled else max(2.0, placed.radius * float(rng.uniform(0.12, 0.25)))
        alpha, left, top = coverage(placed, width, height, style.antialias, o.filled, stroke)
        region = img[top:top + alpha.shape[0], left:left + alpha.shape[1]]
        region += alpha[..., None] * (np.asarray(colour, np.float32) - region)
    if style.noise > 0.5:
        bank = _noise_bank()
        offset = int(rng.integers(bank.size - img.size))
        img = img + bank[offset:offset + img.size].reshape(img.shape) * np.float32(style.noise)
    out = Image.fromarray(np.clip(img + np.float32(0.5), 0, 255).astype(np.uint8))
    if style.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(style.blur))
    if style.jpeg_quality is not None:
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=style.jpeg_quality)
        buf.seek(0)
        out = Image.open(buf).convert("RGB")
    return np.asarray(out)
