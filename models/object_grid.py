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
    """[N, cells, cells, 5] int8: objectness (0/1), colour, shape, size index and the object's index in
    its scene (IGNORE on empty cells; the index lets the loss weigh every object alike).

    Objects are in the 256 frame; the image is stretched to a square, so a cell's centre in
    normalised coordinates maps straight back to the frame."""
    out = np.full((len(objects), cells, cells, 5), IGNORE, np.int8)
    out[..., 0] = 0
    cy, cx = _cell_centres(cells)
    for n, objs in enumerate(objects):
        for k, o in enumerate(objs):
            inside, (row, col) = _cover(o, cy, cx, cells)
            out[n, inside, 1] = shapes.COLOURS.index(o.colour)
            out[n, inside, 2] = shapes.SHAPES.index(o.shape)
            out[n, inside, 3] = shapes.SIZES.index(o.size)
            out[n, inside, 4] = k
            out[n, row, col, 0] = 1
    return out


def _cell_centres(cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of every cell's centre in the 256 frame, [cells, cells] each (row-major, as the grid)."""
    centres = (np.arange(cells) + 0.5) * shapes.SIZE / cells
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    return cy, cx


def _cover(o: shapes.ShapeObject, cy: np.ndarray, cx: np.ndarray, cells: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The cells `o` covers (centre within COVER x its radius, and always its centre's cell), and that cell."""
    inside = np.hypot(cx - o.x, cy - o.y) <= COVER * o.radius
    row = min(cells - 1, int(o.y * cells / shapes.SIZE))
    col = min(cells - 1, int(o.x * cells / shapes.SIZE))
    inside[row, col] = True
    return inside, (row, col)


_NP_START = frozenset({"a", "an", "two", "three"})
_SHAPE_WORDS = {**{s: s for s in shapes.SHAPES}, **{p: s for s, p in shapes.PLURAL.items()}}


def attention_targets(caption: str, objects: Sequence[shapes.ShapeObject], cells: int,
                      names_only: bool = False) -> list[np.ndarray | None]:
    """Per word of `caption`, the cells ([cells * cells] bool, row-major as the encoder's flattened
    grid) of the objects its noun phrase names, or None for words outside noun phrases ("to the
    left of", "and", regions). A phrase ("a large red circle", "two blue squares") names the scene's
    objects of its colour and shape. For the template reference, whose phrases name objects
    unambiguously; used to teach the decoder where to look while it names an object. `names_only`:
    only the colour and shape words (not the article, count or size)."""
    words = caption.split()
    out: list[np.ndarray | None] = [None] * len(words)
    cy, cx = _cell_centres(cells)
    start = None
    for i, w in enumerate(words):
        if w in _NP_START:
            start = i
        elif w in _SHAPE_WORDS and start is not None:
            colours = [c for c in words[start:i] if c in shapes.COLOURS]
            named = [o for o in objects if colours and o.colour == colours[0] and o.shape == _SHAPE_WORDS[w]]
            if named:
                mask = np.zeros((cells, cells), bool)
                for o in named:
                    mask |= _cover(o, cy, cx, cells)[0]
                for j in range(start, i + 1):
                    if not names_only or words[j] in shapes.COLOURS or j == i:
                        out[j] = mask.reshape(-1)
            start = None
    return out


def attention_loss(alphas: Tensor, masks: Tensor) -> Tensor:
    """-log of the attention mass on the named objects' cells, averaged over the supervised steps.
    alphas [R, T, P]; masks [R, T, P] bool (all False where a step is not supervised)."""
    supervised = masks.any(dim=-1)
    if not bool(supervised.any()):
        return alphas.new_zeros(())
    mass = (alphas * masks).sum(dim=-1)[supervised]
    return -(mass + 1e-6).log().mean()


class GridHead(nn.Module):
    """One linear map from an encoder cell's feature to the targets of `grid_targets` (+ position)."""

    def __init__(self, encoder_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(encoder_dim, CHANNELS)

    def forward(self, grid: Tensor) -> Tensor:
        """grid [B, S, S, C] -> [B, S, S, CHANNELS]."""
        return self.proj(grid)


def grid_loss(head: GridHead, grid: Tensor, targets: Tensor, balance: bool = False) -> Tensor:
    """Objectness BCE + colour/shape/size cross-entropy on covered cells + position MSE.
    grid [B, S, S, C]; targets [B, S, S, 5] (int, as `grid_targets`). With `balance`, every
    object weighs the same whatever its size: a large object covers a dozen cells and a small
    one a single cell, so a plain mean over cells all but ignores the small objects, where the
    captioner's remaining shape errors are."""
    out = head(grid)
    s = grid.shape[1]
    targets = targets.long()
    loss = F.binary_cross_entropy_with_logits(out[..., _SLICES["obj"]].squeeze(-1), targets[..., 0].float(),
                                              pos_weight=torch.tensor(float(s)))
    weights = _object_weights(targets) if balance and targets.shape[-1] > 4 else None
    for k, name in enumerate(("colour", "shape", "size"), start=1):
        logits = out[..., _SLICES[name]].reshape(-1, _SLICES[name].stop - _SLICES[name].start)
        labels = targets[..., k].reshape(-1)
        if not bool((labels != IGNORE).any()):
            continue
        if weights is None:
            loss = loss + F.cross_entropy(logits, labels, ignore_index=IGNORE)
        else:
            per_cell = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
            loss = loss + (per_cell * weights).sum() / weights.sum()
    coords = (torch.arange(s, dtype=grid.dtype) + 0.5) / s
    where = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1)  # [S, S, 2] (row, col)
    return loss + F.mse_loss(out[..., _SLICES["pos"]], where.expand_as(out[..., _SLICES["pos"]])) * 10.0


def _object_weights(targets: Tensor) -> Tensor:
    """[B*S*S] weight of each covered cell: 1 / (cells its object covers); 0 on empty cells."""
    b = targets.shape[0]
    ids = targets[..., 4].reshape(b, -1)  # object index per cell, IGNORE where none
    covered = ids != IGNORE
    onehot = F.one_hot(ids.clamp(min=0), num_classes=int(ids.max().clamp(min=0)) + 1) * covered[..., None]
    counts = onehot.sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1, K] cells per object
    per_cell = (onehot / counts).sum(dim=-1)  # [B, S*S]
    return per_cell.reshape(-1).float()
