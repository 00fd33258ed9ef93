"""The training scenes a captioner still gets wrong, read from `mmedge eval captioner --split train --out`.

Why: the demo captioner's last errors are a few percent of scenes (an object given its
neighbour's shape or colour, two different objects collapsed into a repeat). Fine-tuning with
those scenes drawn more often (`--focus`, `models/train_captioner.py`) spends the epoch where the
model is still wrong instead of on the 96 % it already captions right.

The items file is read as hostile input: a regular file of bounded size, each line strict JSON,
each seed one of the training split's, each caption and object list of bounded length.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mmedge.data.caption_objects import parse_caption
from mmedge.errors import InputError
from mmedge.runtime.schema import parse_json, read_regular

MAX_ITEMS_BYTES = 256 << 20  # 32,000 training items with five references each: ~20 MB
_MAX_LINE = 1 << 16


def _objects(value: object, where: str) -> Counter:
    if not isinstance(value, list) or len(value) > 64 or not all(
            isinstance(o, list) and len(o) == 2 and all(isinstance(w, str) and len(w) < 32 for w in o) for o in value):
        raise InputError(f"{where}: 'objects' must be a list of [colour, shape] pairs")
    return Counter((o[0], o[1]) for o in value)


def wrong_scenes(path: Path, train_seeds: list[int]) -> list[int]:
    """Indices into `train_seeds` of the items whose caption does not name exactly the scene's objects."""
    raw = read_regular(path, "eval items file (mmedge eval captioner --split train --out)", MAX_ITEMS_BYTES,
                       InputError)
    index = {seed: i for i, seed in enumerate(train_seeds)}
    wrong: set[int] = set()
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if len(line) > _MAX_LINE:
            raise InputError(f"{where}: a line of {len(line)} bytes, over {_MAX_LINE}")
        item = parse_json(line, where, InputError, "not a JSON item", _MAX_LINE)
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected a JSON object per line")
        seed, caption = item.get("seed"), item.get("caption")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed not in index:
            raise InputError(f"{where}: seed {seed!r} is not a training scene (expected an item of --split train)")
        if not isinstance(caption, str) or len(caption) > 1000:
            raise InputError(f"{where}: 'caption' must be a string")
        if Counter(parse_caption(caption)) != _objects(item.get("objects"), where):
            wrong.add(index[seed])
    return sorted(wrong)
