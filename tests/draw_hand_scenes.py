"""Draw the hand-drawn fixtures: scenes as a user would make them with PIL, outside mmedge's generators.

    python tests/draw_hand_scenes.py [OUT_DIR]     (default: tests/fixtures/hand_drawn)

Nothing here calls mmedge: these are the pictures a new user draws to try the demo
captioner (issue 18), with a user's conventions, not the generators': plain light
backgrounds, objects sized by their bounding box (a circle by its box, a square by its side,
a triangle as the isosceles triangle in a box, apex up), somewhat larger than the training
data's typical large object, `ImageDraw` hard edges or a 4x-supersampled drawing, one rotated
square, one outline triangle, a 640x480 canvas and a JPEG. Writes one image per scene and
`expected.json`: per image, the objects as [colour, shape] and, for scenes laid out left to
right, their order.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "fixtures" / "hand_drawn"
RGB = {"red": (230, 30, 30), "green": (30, 160, 50), "blue": (30, 60, 230), "yellow": (245, 210, 20),
       "purple": (140, 40, 180), "orange": (250, 140, 20)}


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str  # circle | square | triangle
    cx: float
    cy: float
    box: float  # side of the bounding box (before rotation)
    angle: float = 0.0  # degrees, squares only
    outline: int = 0  # stroke width; 0: filled


@dataclass(frozen=True)
class Drawing:
    name: str  # file name
    size: tuple[int, int]
    things: tuple[Thing, ...]
    background: tuple[int, int, int] = (245, 245, 240)
    smooth: bool = False  # draw at 4x and downsample (anti-aliased edges)
    left_to_right: bool = False  # the objects are laid out left to right (order recorded)
    jpeg_quality: int = 0
    notes: str = field(default="", compare=False)


SCENES = (
    Drawing("red_circle_blue_square.png", (256, 256),
            (Thing("red", "circle", 70, 128, 96), Thing("blue", "square", 190, 128, 84)),
            left_to_right=True, notes="the issue's first example: a red circle next to a blue square"),
    Drawing("green_triangle.png", (256, 256), (Thing("green", "triangle", 128, 132, 150),),
            notes="the issue's second example: one green triangle"),
    Drawing("rotated_square.png", (300, 300), (Thing("orange", "square", 150, 150, 130, angle=30),),
            background=(235, 235, 235), smooth=True, notes="a square turned by 30 degrees"),
    Drawing("outline_triangle.png", (256, 256), (Thing("purple", "triangle", 128, 130, 150, outline=7),),
            background=(255, 255, 255), notes="a triangle drawn as an outline"),
    Drawing("row_640x480.png", (640, 480),
            (Thing("red", "square", 120, 240, 130), Thing("green", "circle", 320, 240, 140),
             Thing("blue", "triangle", 520, 245, 140)),
            background=(250, 248, 240), smooth=True, left_to_right=True,
            notes="three objects in a row on a 640x480 canvas"),
    Drawing("blue_triangle_above_orange_circle.jpg", (400, 400),
            (Thing("blue", "triangle", 200, 105, 150), Thing("orange", "circle", 200, 295, 150)),
            jpeg_quality=70, notes="one above the other, saved as a JPEG"),
    Drawing("two_red_circles.png", (256, 256),
            (Thing("red", "circle", 66, 120, 90), Thing("red", "circle", 190, 136, 90)),
            left_to_right=True, notes="two objects of the same kind"),
    Drawing("yellow_square_purple_circle.png", (320, 256),
            (Thing("yellow", "square", 90, 130, 110), Thing("purple", "circle", 235, 120, 110)),
            background=(238, 240, 245), smooth=True, left_to_right=True,
            notes="a yellow square left of a purple circle on a wide canvas"),
)


def _points(t: Thing, k: float) -> list[tuple[float, float]]:
    """Polygon corners (canvas pixels x k) of a square or triangle."""
    cx, cy, h = t.cx * k, t.cy * k, t.box * k / 2
    if t.shape == "triangle":  # isosceles in its box, apex up
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    a = math.radians(t.angle)
    corners = [(-h, -h), (h, -h), (h, h), (-h, h)]
    return [(cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)) for x, y in corners]


def _draw(draw: ImageDraw.ImageDraw, t: Thing, k: float) -> None:
    colour, width = RGB[t.colour], int(round(t.outline * k))
    if t.shape == "circle":
        h = t.box * k / 2
        box = (t.cx * k - h, t.cy * k - h, t.cx * k + h, t.cy * k + h)
        draw.ellipse(box, fill=None if width else colour, outline=colour if width else None, width=width or 1)
        return
    pts = _points(t, k)
    if width:
        draw.line([*pts, pts[0], pts[1]], fill=colour, width=width, joint="curve")
    else:
        draw.polygon(pts, fill=colour)


def render(d: Drawing) -> Image.Image:
    k = 4 if d.smooth else 1
    img = Image.new("RGB", (d.size[0] * k, d.size[1] * k), d.background)
    draw = ImageDraw.Draw(img)
    for t in d.things:
        _draw(draw, t, k)
    return img.resize(d.size, Image.LANCZOS) if k > 1 else img


def expected(d: Drawing) -> dict:
    things = sorted(d.things, key=lambda t: t.cx) if d.left_to_right else list(d.things)
    entry: dict = {"objects": [[t.colour, t.shape] for t in things], "notes": d.notes}
    if d.left_to_right:
        entry["left_to_right"] = [f"{t.colour} {t.shape}" for t in things]
    return entry


def write(out: Path = OUT) -> dict[str, dict]:
    out.mkdir(parents=True, exist_ok=True)
    table = {}
    for d in SCENES:
        img = render(d)
        if d.jpeg_quality:
            img.save(out / d.name, format="JPEG", quality=d.jpeg_quality)
        else:
            img.save(out / d.name, format="PNG")
        table[d.name] = expected(d)
    (out / "expected.json").write_text(json.dumps(table, indent=2) + "\n")
    return table


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    print(f"wrote {len(write(target))} scenes to {target}")
