"""The course's attention visualisation: one panel per generated word, the
attention map upsampled over the image, with PIL alone (no matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmedge.atomic import atomic_path

PANEL = 224
LABEL_H = 18


def attention_grid(image: np.ndarray, words: list[str], alphas: np.ndarray, columns: int = 5) -> Image.Image:
    """image HxWx3 uint8, alphas [steps, S, S] (one per word) -> a grid image."""
    base = Image.fromarray(image).resize((PANEL, PANEL), Image.BILINEAR)
    font = ImageFont.load_default()
    n = len(words)
    rows = (n + columns - 1) // columns
    grid = Image.new("RGB", (columns * PANEL, rows * (PANEL + LABEL_H)), "white")
    for i, (word, alpha) in enumerate(zip(words, alphas)):
        a = np.asarray(alpha, np.float32)
        a = (a - a.min()) / (a.max() - a.min() + 1e-12)
        heat = Image.fromarray((a * 255).astype(np.uint8)).resize((PANEL, PANEL), Image.BICUBIC)
        overlay = Image.merge("RGB", (heat, Image.new("L", heat.size, 0), Image.new("L", heat.size, 0)))
        panel = Image.blend(base, overlay, 0.45)
        x, y = (i % columns) * PANEL, (i // columns) * (PANEL + LABEL_H)
        grid.paste(panel, (x, y + LABEL_H))
        ImageDraw.Draw(grid).text((x + 4, y + 3), word, fill="black", font=font)
    return grid


def save_png(img: Image.Image, path: str | Path) -> None:
    """Write atomically: a temp file in the same folder, then rename."""
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
