"""Training-only supervision of the captioner's feature grid: which object covers each cell.

Trained through the caption loss alone, a small encoder learns colour quickly and shape slowly:
the words that name a shape are a few tokens of a sentence, and the gradient reaching one
cell's feature is diluted by the attention over all cells. A dense target per cell (as a
detector is trained) tells the encoder directly what lies under each cell: objectness at the
cell of an object's centre, its colour, shape and size on every cell the object covers, and
the cell's own position (so the attended feature carries "top left" to the decoder).

The head is a single linear map on the encoder's output grid; it is not part of the model's
`state_dict()`, so the exported graphs and the shipped weights are exactly the captioner's.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmedge.data import shapes

IGNORE = -1
COVER = 0.8  # a cell belongs to an object when its centre lies within this fraction of the circumradius
# channel layout of the head's output: objectness, colours, shapes, sizes, (row, col)
_SLICES = {"obj": slice(0, 1)}
_n = 1
for _name, _k in (("colour", len(shapes.COLOURS)), ("shape", len(shapes.SHAPES)), ("size", len(shapes.SIZES)),
                  ("pos", 2)):
    _SLICES[_name] = slice(_n, _n + _k)
    _n += _k
CHANNELS = _n


def grid_targets(objects: Sequence[Iterable[shapes.ShapeObject]], cells: int) -> np.ndarray:
    """[N, cells, cells, 4] int8: objectness (0/1), colour, shape, size index (IGNORE on empty cells).

    Objects are in the 256 frame; the image is stretched to a square, so a cell's centre in
    normalised coordinates maps straight back to the frame."""
    out = np.full((len(objects), cells, cells, 4), IGNORE, np.int8)
    out[..., 0] = 0
    centres = (np.arange(cells) + 0.5) * shapes.SIZE / cells
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    for n, objs in enumerate(objects):
        for o in objs:
            inside = np.hypot(cx - o.x, cy - o.y) <= COVER * o.radius
            row = min(cells - 1, int(o.y * cells / shapes.SIZE))
            col = min(cells - 1, int(o.x * cells / shapes.SIZE))
            inside[row, col] = True
            out[n, inside, 1] = shapes.COLOURS.index(o.colour)
            out[n, inside, 2] = shapes.SHAPES.index(o.shape)
            out[n, inside, 3] = shapes.SIZES.index(o.size)
            out[n, row, col, 0] = 1
    return out


class GridHead(nn.Module):
    """One linear map from an encoder cell's feature to the targets of `grid_targets` (+ position)."""

    def __init__(self, encoder_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(encoder_dim, CHANNELS)

    def forward(self, grid: Tensor) -> Tensor:
        """grid [B, S, S, C] -> [B, S, S, CHANNELS]."""
        return self.proj(grid)


def grid_loss(head: GridHead, grid: Tensor, targets: Tensor) -> Tensor:
    """Objectness BCE + colour/shape/size cross-entropy on covered cells + position MSE.

    grid [B, S, S, C]; targets [B, S, S, 4] (int, as `grid_targets`)."""
    out = head(grid)
    s = grid.shape[1]
    targets = targets.long()
    loss = F.binary_cross_entropy_with_logits(out[..., _SLICES["obj"]].squeeze(-1), targets[..., 0].float(),
                                              pos_weight=torch.tensor(float(s)))
    for k, name in enumerate(("colour", "shape", "size"), start=1):
        logits = out[..., _SLICES[name]].reshape(-1, _SLICES[name].stop - _SLICES[name].start)
        labels = targets[..., k].reshape(-1)
        if bool((labels != IGNORE).any()):
            loss = loss + F.cross_entropy(logits, labels, ignore_index=IGNORE)
    coords = (torch.arange(s, dtype=grid.dtype) + 0.5) / s
    where = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1)  # [S, S, 2] (row, col)
    return loss + F.mse_loss(out[..., _SLICES["pos"]], where.expand_as(out[..., _SLICES["pos"]])) * 10.0
