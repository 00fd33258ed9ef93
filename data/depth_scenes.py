"""Photos with depth maps for the refocus network: a shapes scene whose objects
stand at different distances in front of a receding background (numpy + PIL).

Every object's depth is drawn from the same geometry and rasteriser as its pixels
in the photo (`shapes.object_mask`): a square is a square in the depth map too, so
the depth edges coincide with the photo's object edges (no halo when refocusing)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmedge.data import shapes


@dataclass
class DepthScene:
    seed: int
    image: np.ndarray  # HxWx3 uint8
    depth: np.ndarray  # HxW float32, metres
    near: float  # a focus range that contains one object
    far: float


def make_depth_scene(seed: int) -> DepthScene:
    scene = shapes.make_scene(seed, plain=True)  # 256x256, hard-edged filled shapes: exact masks
    rng = np.random.default_rng([seed, 0xDE97])
    h, w = scene.image.shape[:2]
    yy = np.mgrid[0:h, 0:w][0].astype(np.float32)
    depth = 6.0 + 4.0 * (1.0 - yy / h)  # floor-like background: 10 m at the top, 6 m at the bottom
    distances = []
    for o in scene.objects:
        d = float(rng.uniform(0.8, 4.0))
        distances.append(d)
        depth[shapes.object_mask(o, w)] = d  # the photo's own object pixels: edges coincide
    target = distances[int(rng.integers(len(distances)))]
    return DepthScene(seed, scene.image, depth.astype(np.float32), max(target - 0.25, 0.0), target + 0.25)
