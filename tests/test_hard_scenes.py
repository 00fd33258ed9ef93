"""--focus: the training scenes a captioner got wrong, read from an eval items file, and the epoch order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import InputError
from mmedge.models.hard_scenes import wrong_scenes

SEEDS = [100, 101, 102, 103]


def _write(path: Path, items: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    return path


def _item(seed: int, caption: str, objects: list[list[str]]) -> dict:
    return {"index": 0, "seed": seed, "caption": caption, "references": [caption], "objects": objects}


def test_items_naming_other_objects_are_the_wrong_ones(tmp_path: Path) -> None:
    items = [
        _item(100, "a large red circle in the center", [["red", "circle"]]),  # right
        _item(101, "two red squares side by side", [["red", "square"], ["red", "triangle"]]),  # collapsed
        _item(102, "a small blue square above a small green square", [["blue", "circle"], ["green", "square"]]),
        _item(103, "a small red circle to the left of a large blue square", [["blue", "square"], ["red", "circle"]]),
    ]
    assert wrong_scenes(_write(tmp_path / "items.jsonl", items), SEEDS) == [1, 2]


@pytest.mark.parametrize("line, why", [
    ('{"seed": 5, "caption": "a red circle", "objects": [["red", "circle"]]}', "not a training scene"),
    ('{"seed": 100, "caption": 3, "objects": []}', "'caption' must be a string"),
    ('{"seed": 100, "caption": "a red circle", "objects": [["red"]]}', "'objects' must be a list"),
    ('{"seed": true, "caption": "a red circle", "objects": []}', "not a training scene"),
    ("[1, 2]", "expected a JSON object per line"),
    ("{not json", "not a JSON item"),
])
def test_a_bad_line_is_one_error_naming_the_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(_item(100, "a red circle", [["red", "circle"]])) + "\n" + line + "\n")
    with pytest.raises(InputError, match=f"items.jsonl:2: .*{why}"):
        wrong_scenes(path, SEEDS)


def test_a_missing_file_or_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        wrong_scenes(tmp_path / "absent.jsonl", SEEDS)
    with pytest.raises(InputError):
        wrong_scenes(tmp_path, SEEDS)


def test_the_epoch_keeps_its_length_and_draws_the_asked_share_from_the_focus() -> None:
    pytest.importorskip("torch")
    from mmedge.models.train_captioner import epoch_order

    rng = np.random.default_rng(0)
    plain = epoch_order(rng, 1000, None, 0.15)
    assert sorted(plain.tolist()) == list(range(1000))
    focus = np.array([3, 500, 999])
    order = epoch_order(np.random.default_rng(1), 1000, focus, 0.15)
    assert order.shape == (1000,) and order.min() >= 0 and order.max() < 1000
    # 150 draws from the focus scenes on top of whatever the other 850 drew of them
    assert np.isin(order, focus).sum() >= 150
    assert np.isin(order, focus).sum() <= 153
    rest = order[~np.isin(order, focus)]
    assert len(set(rest.tolist())) == rest.size  # the other scenes are drawn without replacement
    assert sorted(epoch_order(np.random.default_rng(2), 10, focus[:1], 0.0).tolist()) == list(range(10))
