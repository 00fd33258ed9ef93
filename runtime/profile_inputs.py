"""Synthetic end-to-end inputs of the profile: a photo-like scene and an audio clip.

Deterministic (seeded) and free of any data set, so a profile runs anywhere and two runs time
the same work; the roofline's image-decode baseline uses the same scene.
"""

from __future__ import annotations

import numpy as np

from mmedge.runtime.profile_types import IMAGE_HW


def synthetic_image(height: int = IMAGE_HW[0], width: int = IMAGE_HW[1], seed: int = 0) -> np.ndarray:
    """A smooth scene (sky, sun, hills, a box) with sensor noise: HxWx3 uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = y / height
    img = np.stack([90 + 80 * sky, 150 + 60 * sky, 235 - 40 * sky], axis=-1)
    sun = np.exp(-(((x - 0.75 * width) ** 2 + (y - 0.2 * height) ** 2) / (2 * (0.06 * width) ** 2)))
    img += sun[..., None] * np.array([160, 120, 0], np.float32)
    hill = y > height * (0.62 + 0.08 * np.sin(x / width * 2 * np.pi * 1.5))
    img[hill] = np.stack([60 + 40 * sky[hill], 130 + 50 * np.cos(x[hill] / 37.0), 50 + 20 * sky[hill]], 1)
    box = (np.abs(x - 0.3 * width) < 0.08 * width) & (np.abs(y - 0.7 * height) < 0.1 * height)
    img[box] = (200, 40, 35)
    img += np.random.default_rng(seed).normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_clip(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A chirp with harmonics, clicks and noise: float32 in [-1, 1]."""
    t = np.arange(int(round(seconds * sample_rate)), dtype=np.float64) / sample_rate
    f = 220.0 + 660.0 * t / max(seconds, 1e-9)
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    x = 0.4 * np.sin(phase) + 0.15 * np.sin(2 * phase) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    x[:: max(1, sample_rate // 8)] += 0.3
    return np.clip(x, -1, 1).astype(np.float32)
