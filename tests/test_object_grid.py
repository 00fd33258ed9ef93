"""The captioner trainer's per-cell object supervision (models/object_grid.py) and a short training run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmedge.data import shapes  # noqa: E402
from mmedge.models.object_grid import CHANNELS, IGNORE, GridHead, grid_loss, grid_targets  # noqa: E402


def _obj(shape: str, colour: str, size: str, x: float, y: float, r: float) -> shapes.ShapeObject:
    return shapes.ShapeObject(shape, colour, size, x, y, r)


def test_targets_mark_the_centre_cell_and_the_covered_cells() -> None:
    small = _obj("triangle", "blue", "small", 40.0, 200.0, 10.0)
    large = _obj("square", "orange", "large", 180.0, 64.0, 60.0)
    t = grid_targets([[small, large]], 10)[0]
    assert t.shape == (10, 10, 5) and t.dtype == np.int8
    assert sorted(map(tuple, np.argwhere(t[..., 0] == 1))) == [(2, 7), (7, 1)]  # (row, col) = (y, x) * 10 / 256
    assert tuple(t[7, 1, 1:]) == (shapes.COLOURS.index("blue"), shapes.SHAPES.index("triangle"), 0, 0)
    covered = np.argwhere(t[..., 2] == shapes.SHAPES.index("square"))
    centres = (covered + 0.5) * 25.6
    assert len(covered) > 9 and np.all(np.hypot(centres[:, 1] - 180, centres[:, 0] - 64) <= 48.0 + 1e-9)
    assert (t[..., 2] == shapes.SHAPES.index("triangle")).sum() == 1  # a small object: its centre cell only
    empty = (t[..., 0] == 0) & (t[..., 1] == IGNORE)
    assert empty.sum() == 100 - 1 - len(covered) and np.all(t[empty][:, 1:] == IGNORE)


def test_targets_of_generated_scenes_name_every_object() -> None:
    for seed in range(40):
        objs, _, _ = shapes.scene_layout(seed)
        t = grid_targets([objs], 10)[0]
        assert int(t[..., 0].sum()) == len(objs)
        assert {shapes.SHAPES[k] for k in t[..., 2][t[..., 0] == 1]} == {o.shape for o in objs}


def test_the_loss_is_low_for_right_answers_and_trains_the_grid() -> None:
    torch.manual_seed(0)
    head = GridHead(8)
    objs = [[_obj("circle", "red", "large", 128.0, 128.0, 40.0)]]
    targets = torch.from_numpy(grid_targets(objs, 4))
    grid = torch.randn(1, 4, 4, 8, requires_grad=True)
    loss = grid_loss(head, grid, targets)
    loss.backward()
    assert torch.isfinite(loss) and grid.grad is not None and float(grid.grad.abs().sum()) > 0
    opt = torch.optim.Adam(list(head.parameters()) + [grid], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        step = grid_loss(head, grid, targets)
        step.backward()
        opt.step()
    assert float(step.detach()) < 0.1 * float(loss.detach())
    out = head(grid).detach()
    assert out.shape == (1, 4, 4, CHANNELS)
    assert int(out[0, ..., 0].argmax()) == 2 * 4 + 2  # the centre (128, 128) lies in cell (2, 2)


def test_balanced_loss_weighs_a_small_object_as_much_as_a_large_one() -> None:
    small = _obj("triangle", "blue", "small", 40.0, 200.0, 10.0)
    large = _obj("square", "orange", "large", 180.0, 64.0, 60.0)
    targets = torch.from_numpy(grid_targets([[small, large]], 10))
    assert tuple(targets[0, 7, 1, 1:].tolist()) == (shapes.COLOURS.index("blue"), shapes.SHAPES.index("triangle"), 0, 0)
    from mmedge.models.object_grid import _object_weights
    w = _object_weights(targets.long()).reshape(10, 10)
    assert float(w[7, 1]) == 1.0  # the small object's single cell
    big = targets[0, ..., 4] == 1
    assert int(big.sum()) > 9 and torch.allclose(w[big].sum(), torch.tensor(1.0))
    assert float(w[targets[0, ..., 4] == IGNORE].abs().sum()) == 0.0
    # a head that gets only the small object's shape wrong: the balanced loss sees it, the plain mean hardly
    head = GridHead(CHANNELS)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(CHANNELS))
        head.proj.bias.zero_()
    from mmedge.models.object_grid import _SLICES
    grid = torch.zeros(1, 10, 10, CHANNELS)
    for cell in zip(*np.nonzero(targets[0, ..., 2].numpy() != IGNORE)):
        shape = int(targets[0, cell[0], cell[1], 2])
        wrong = shape if int(targets[0, cell[0], cell[1], 4]) == 1 else (shape + 1) % len(shapes.SHAPES)
        grid[0, cell[0], cell[1], _SLICES["shape"].start + wrong] = 20.0
    plain = float(grid_loss(head, grid, targets))
    balanced = float(grid_loss(head, grid, targets, balance=True))
    assert balanced > plain + 3.0


def test_a_short_training_run_writes_the_models_weights_only_and_resumes(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedge.models.captioner import CaptionModel, CONFIGS
    from mmedge.models.train_captioner import main

    common = ["--train-size", "8", "--val-size", "2", "--batch-size", "4", "--val-beam", "1", "--no-progress",
              "--out", str(tmp_path / "c.pt"), "--checkpoint", str(tmp_path / "c.ckpt")]
    # the trainer sets torch's threads and seed for its process: put them back for the tests after this one
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    rng = torch.get_rng_state()
    try:
        main(["captioner", "--epochs", "1", *common])
    finally:
        torch.set_rng_state(rng)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(state) == set(CaptionModel(CONFIGS["demo"]).state_dict())
    ckpt = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert "proj.weight" in ckpt["grid_head"] and ckpt["epoch"] == 0
    assert {"object_accuracy", "hallucination_rate", "bleu4"} <= set(ckpt["history"][0])
    try:
        main(["captioner", "--epochs", "2", "--resume", str(tmp_path / "c.ckpt"), *common])
    finally:
        torch.set_rng_state(rng)
    assert torch.load(tmp_path / "c.ckpt", weights_only=True)["epoch"] == 1
    # a fine-tune starts from those weights with a fresh schedule, the template reference and balanced objects
    first = torch.load(tmp_path / "c.pt", weights_only=True)
    fine = ["--train-size", "8", "--val-size", "2", "--batch-size", "4", "--val-beam", "1", "--no-progress",
            "--out", str(tmp_path / "f.pt"), "--checkpoint", str(tmp_path / "f.ckpt")]
    try:
        main(["captioner", "--epochs", "1", "--lr", "1e-9", "--init", str(tmp_path / "c.ckpt"), "--canonical",
              "--balance-objects", "--attention-loss", "1", "--keep", "last", *fine])
    finally:
        torch.set_rng_state(rng)
    tuned = torch.load(tmp_path / "f.pt", weights_only=True)
    last = torch.load(tmp_path / "f.ckpt", weights_only=True)["model"]
    assert all(torch.equal(tuned[k], last[k]) for k in last)  # --keep last: the last epoch's weights
    assert torch.load(tmp_path / "f.ckpt", weights_only=True)["epoch"] == 0
    best = torch.load(tmp_path / "c.ckpt", weights_only=True)["best_model"]
    # (an lr of 1e-9 moves no weight visibly: the run started from the checkpoint's best model)
    weights = [k for k in best if "running_" not in k and "num_batches" not in k]  # (BatchNorm's statistics move)
    assert weights and all(torch.allclose(tuned[k], best[k], atol=1e-5) for k in weights)
    assert not all(torch.equal(first[k], CaptionModel(CONFIGS["demo"]).state_dict()[k]) for k in first)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="bad.pt: not a readable captioner checkpoint"):
        main(["captioner", "--epochs", "1", "--init", str(tmp_path / "bad.pt"), *fine])


def test_attention_targets_name_each_phrases_objects() -> None:
    from mmedge.models.object_grid import attention_loss, attention_targets

    red = _obj("circle", "red", "large", 40.0, 128.0, 40.0)
    blue = [_obj("square", "blue", "small", 150.0, 60.0, 10.0), _obj("square", "blue", "small", 210.0, 200.0, 10.0)]
    masks = attention_targets("a large red circle to the left of two blue squares", [red, *blue], 10)
    words = "a large red circle to the left of two blue squares".split()
    assert [m is not None for m in masks] == [True] * 4 + [False] * 4 + [True] * 3
    assert all(np.array_equal(masks[0], m) for m in masks[1:4])
    red_cells = masks[0].reshape(10, 10)
    assert red_cells[5, 1] and red_cells.sum() > 1 and not red_cells[:, 5:].any()  # centre (y 128, x 40)
    blue_cells = set(map(tuple, np.argwhere(masks[-1].reshape(10, 10))))
    assert blue_cells == {(2, 5), (7, 8)}  # both squares, one cell each
    assert len(words) == len(masks)
    names = attention_targets("a large red circle to the left of two blue squares", [red, *blue], 10, names_only=True)
    assert [m is not None for m in names] == [False, False, True, True] + [False] * 5 + [True, True]
    # the loss: -log of the attention mass on the named cells, over supervised steps only
    alphas = torch.full((1, 2, 100), 0.01)
    m = torch.zeros(1, 2, 100, dtype=torch.bool)
    m[0, 0, :50] = True
    assert abs(float(attention_loss(alphas, m)) + math.log(0.5 + 1e-6)) < 1e-5
    assert float(attention_loss(alphas, torch.zeros_like(m))) == 0.0
