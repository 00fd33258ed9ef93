"""Write the bundled examples of `mmedge demo` into data/examples/:
`python -m mmedge.data.make_examples`.

Scenes and clips come from the test splits of the generators (never trained on):
four shapes scenes of the training generator's test split and two of the out-of-style
split (`data/shapes_oos.py`, drawn by other code) with their reference captions, one clip
per sound class, and one photo with its depth map (16-bit PNG, millimetres) for refocusing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mmedge.data import depth_scenes, shapes, shapes_oos, sounds

HERE = Path(__file__).resolve().parent / "examples"
SCENE_SEEDS = (0, 1, 2, 3)  # offsets into the test split
OOS_SEEDS = (2, 6)  # offsets into the out-of-style split


def main() -> None:
    (HERE / "scenes").mkdir(parents=True, exist_ok=True)
    refs = {}
    test = shapes.split("test")
    drawn = [(f"scene{i}.png", shapes.make_scene(test[i])) for i in SCENE_SEEDS]
    drawn += [(f"oos{i}.png", shapes_oos.make_oos_scene(shapes.split("oos")[i])) for i in OOS_SEEDS]
    for name, scene in drawn:
        Image.fromarray(scene.image).save(HERE / "scenes" / name, optimize=True)
        refs[name] = scene.captions
    (HERE / "scenes" / "captions.json").write_text(json.dumps(refs, indent=1) + "\n")
    sounds.write_examples(HERE / "sounds")
    d = depth_scenes.make_depth_scene(test[10])
    (HERE / "refocus").mkdir(exist_ok=True)
    Image.fromarray(d.image).save(HERE / "refocus" / "photo.png", optimize=True)
    Image.fromarray(np.round(d.depth * 1000).astype(np.uint16)).save(HERE / "refocus" / "depth_mm.png")
    (HERE / "refocus" / "focus.json").write_text(json.dumps({"near": d.near, "far": d.far}) + "\n")
    print(f"wrote examples under {HERE}")


if __name__ == "__main__":
    main()
