"""Beam search in numpy over any `decoder_step` Session.

Split by role as in whisper's decoding.py: `StepModel` runs the step graph and
owns the recurrent state (h, c), reordering it by source beam; `BeamSearchDecoder`
keeps the hypotheses (`update()` per step, `finalize()` at the end); `Ranker`
picks the final hypothesis. `beam_search()` composes them. Nothing here knows
which backend runs the step.

The algorithm is the tutorial's, as in `mmedge.models.decoding` (the PyTorch
reference it is tested against): the beam of an image shrinks as hypotheses
reach `<end>`, step 1 expands from a single row, `max_len` counts decoding
steps (generated tokens, `<end>` included), scores are sums of
log-probabilities. Several images are decoded in one batch (rows = live beams
of all images, grouped by image).

`DEFAULT_MAX_LEN` (51) is the tutorial's bound: caption.py starts at `step = 1`
and breaks `if step > 50` after a step's `<end>` candidates are set aside, so it
runs up to 51 decoding steps (50 words + `<end>`), and a hypothesis whose
`<end>` comes at step 51 is complete. With `max_len` steps, a finished caption
has at most `max_len - 1` words, an unfinished one exactly `max_len`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmedge.errors import InputError, NumericsError
from mmedge.runtime.session import Session

DEFAULT_MAX_LEN = 51  # decoding steps, <end> included: the tutorial's 50 words + <end>


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, without <start> and <end>
    score: float  # sum of log-probs, <end> included when reached
    alphas: np.ndarray  # [steps, P], one attention map per generated token
    finished: bool  # reached <end> within max_len


@dataclass(frozen=True)
class Ranker:
    """Chooses among an image's hypotheses: by score, or by score / length."""

    length_norm: bool = False

    def key(self, h: Hypothesis) -> float:
        if not self.length_norm:
            return h.score
        return h.score / max(len(h.tokens) + int(h.finished), 1)

    def best(self, hyps: list[Hypothesis]) -> Hypothesis:
        return max(hyps, key=self.key)


class StepModel:
    """Runs `decoder_step` and owns h/c; features/att1 are bound per row layout.

    Rows belong to images (`rows[i]` = image of row i). Features and att1 depend
    only on the image, so they are re-bound to the session only when the row
    layout changes (a beam finished, or the step-1 expansion), not every step.
    """

    def __init__(self, session: Session, features: np.ndarray, att1: np.ndarray,
                 h: np.ndarray, c: np.ndarray) -> None:
        self.session, self.features, self.att1 = session, features, att1
        self.rows = np.arange(features.shape[0])
        self.h, self.c = h, c
        self._bind()

    def _bind(self) -> None:
        self.session.bind("features", np.ascontiguousarray(self.features[self.rows]))
        self.session.bind("att1", np.ascontiguousarray(self.att1[self.rows]))

    def step(self, prev_words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.session.run({"prev_word": prev_words.astype(np.int64), "h": self.h, "c": self.c})
        self.h, self.c = out["h_next"], out["c_next"]
        return out["log_probs"], out["alpha"]

    def reorder(self, source_rows: np.ndarray) -> None:
        self.h, self.c = self.h[source_rows], self.c[source_rows]
        rows = self.rows[source_rows]
        if not np.array_equal(rows, self.rows):
            self.rows = rows
            self._bind()

    def close(self) -> None:
        self.session.unbind("features")
        self.session.unbind("att1")


@dataclass
class _ImageBeams:
    k: int
    seqs: np.ndarray  # [live, t] int64
    alphas: np.ndarray  # [live, t, P]
    scores: np.ndarray  # [live] float32 cumulative log-prob
    complete: list[Hypothesis] = field(default_factory=list)


def _topk_desc(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (ties: lower index first)."""
    if k >= x.size:
        return np.argsort(-x, kind="stable")
    # argpartition picks an arbitrary member of a tie at the k-th place: take the values above
    # the k-th one, then the lowest indices among those equal to it
    kth = x[np.argpartition(-x, k - 1)[k - 1]]
    above = np.flatnonzero(x > kth)
    idx = np.concatenate([above, np.flatnonzero(x == kth)[: k - above.size]])
    return idx[np.lexsort((idx, -x[idx]))]


class BeamSearchDecoder:
    """Hypothesis bookkeeping for a batch of images; `update()` once per step."""

    def __init__(self, n_images: int, beam: int, end: int, n_pixels: int) -> None:
        self.end = end
        self.trace: list | None = None  # a list: update() appends each step's choices (see beam_search)
        self.beams = [_ImageBeams(beam, np.zeros((1, 0), np.int64), np.zeros((1, 0, n_pixels), np.float32),
                                  np.zeros(1, np.float32)) for _ in range(n_images)]

    @property
    def done(self) -> bool:
        return all(b.k == 0 for b in self.beams)

    def update(self, log_probs: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Extend every image's beams; return (source row, next word) of the live rows."""
        if np.isnan(log_probs).any():
            raise NumericsError("decoder_step produced NaN log-probabilities (check the inputs and the model)")
        vocab = log_probs.shape[1]
        src: list[np.ndarray] = []
        words: list[np.ndarray] = []
        offset = 0
        step_trace = None if self.trace is None else []
        for i, b in enumerate(self.beams):
            if b.k == 0:
                continue
            live = b.seqs.shape[0]
            scores = (b.scores[:, None] + log_probs[offset:offset + live]).ravel()
            top = _topk_desc(scores, b.k)
            prev, nxt = top // vocab, top % vocab
            seqs = np.concatenate([b.seqs[prev], nxt[:, None]], axis=1)
            alphas = np.concatenate([b.alphas[prev], alpha[offset + prev][:, None]], axis=1)
            top_scores = scores[top]
            if step_trace is not None:
                step_trace.append((i, offset + prev, nxt, top_scores))
            ended = nxt == self.end
            for j in np.flatnonzero(ended):
                b.complete.append(Hypothesis(seqs[j, :-1].tolist(), float(top_scores[j]), alphas[j], True))
            keep = ~ended
            b.k = int(keep.sum())
            b.seqs, b.alphas, b.scores = seqs[keep], alphas[keep], top_scores[keep]
            src.append(offset + prev[keep])
            words.append(nxt[keep])
            offset += live
        if step_trace is not None:
            self.trace.append((log_probs.shape[0], step_trace))
        if not src:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(src), np.concatenate(words)

    def finalize(self, ranker: Ranker) -> list[Hypothesis]:
        """Best hypothesis per image; unfinished beams count only when none finished."""
        out = []
        for b in self.beams:
            hyps = b.complete or [Hypothesis(b.seqs[i].tolist(), float(b.scores[i]), b.alphas[i], False)
                                  for i in range(b.seqs.shape[0])]
            out.append(ranker.best(hyps))
        return out


def beam_search(step_session: Session, features: np.ndarray, att1: np.ndarray, h: np.ndarray, c: np.ndarray,
                start: int, end: int, beam: int = 3, max_len: int = DEFAULT_MAX_LEN, length_norm: bool = False,
                trace: list | None = None) -> list[Hypothesis]:
    """Decode a batch: features [B, P, C], att1 [B, P, A], h/c [B, D] from decoder_init.

    `max_len`: decoding steps at most (generated tokens, `<end>` included); `<end>` chosen at the
    last step still finishes its hypothesis, as in the tutorial.

    `trace` (optional, for checking other implementations step by step): a list to which every
    step appends `(rows, [(image, source_rows, words, scores), ...])`: the rows fed to
    decoder_step, then per image with live beams its k chosen candidates, best first (ties: lower
    flat index first), `<end>` candidates included; source rows index that step's input rows,
    scores are the float32 sums. Without it nothing is recorded.
    """
    if beam < 1:
        raise InputError(f"beam must be >= 1, got {beam}")
    if max_len < 1:
        raise InputError(f"max_len must be >= 1, got {max_len}")
    model = StepModel(step_session, features, att1, h, c)
    decoder = BeamSearchDecoder(features.shape[0], beam, end, features.shape[1])
    decoder.trace = trace
    prev = np.full(features.shape[0], start, dtype=np.int64)
    try:
        for t in range(max_len):
            log_probs, alpha = model.step(prev)
            src, prev = decoder.update(log_probs, alpha)
            if decoder.done or t == max_len - 1:
                break
            model.reorder(src)
    finally:
        model.close()
    return decoder.finalize(Ranker(length_norm))
