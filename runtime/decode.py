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

The per-step cost does not grow with the caption (the runtime's fixed overhead per image, issue
#19): hypotheses are back-pointers (each step writes its chosen words, the slots they extend and
their attention rows into preallocated [steps, images, beam(, P)] arrays, grown by doubling), and
only the candidates of `finalize()` are traced back; the top-k over an image's flattened scores is
k arg-max passes (the first index on ties, as a stable sort) instead of a partition plus a sort;
h/c are gathered into two alternating buffers; features are gathered once when the beam expands
and compacted in place when beams finish. Where the backend has a reuse mode
(`session.reuse_outputs()`), the step's outputs are the backend's own buffers, overwritten by the
next step: the decoder copies what it keeps (the chosen attention rows) and nothing else.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import ContextManager

import numpy as np

from mmedge.errors import InputError, NumericsError
from mmedge.runtime.session import Session

DEFAULT_MAX_LEN = 51  # decoding steps, <end> included: the tutorial's 50 words + <end>
ARGMAX_TOPK = 16  # up to this k, k arg-max passes over an image's scores beat a partition and a sort
_FIRST_CAPACITY = 64  # history steps allocated first; doubled as needed, so a huge max_len costs nothing upfront


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


def _gather(src: np.ndarray, rows: np.ndarray | list[int], out: np.ndarray) -> None:
    """out[:] = src[rows] without a temporary (rows are valid by construction; out never aliases src)."""
    if src.dtype == out.dtype:
        src.take(rows, axis=0, out=out, mode="clip")  # "clip": unbuffered (mode="raise" copies first)
    else:
        out[...] = src[rows]


def reuse_outputs(session: Session) -> ContextManager[object]:
    """The backend's reuse mode (outputs written into buffers that its next run overwrites), if it has one."""
    mode = getattr(session, "reuse_outputs", None)
    return mode() if callable(mode) else nullcontext()


class StepModel:
    """Runs `decoder_step` and owns h/c; features/att1 are bound per row layout.

    Rows belong to images (`rows[i]` = image of row i), grouped by image in image order. Features
    and att1 depend only on the image, so they are re-bound to the session only when the row layout
    changes: step 1 binds the caller's arrays as they are, the expansion to k rows per image
    gathers them once into buffers of this model, and a finished beam compacts those buffers in
    place (for one image, a shorter view of the same rows: no copy). h/c are gathered by source row
    into two alternating buffers, so a step's inputs are never the buffers its outputs live in.
    """

    def __init__(self, session: Session, features: np.ndarray, att1: np.ndarray,
                 h: np.ndarray, c: np.ndarray, max_rows: int | None = None) -> None:
        self.session, self.features, self.att1 = session, features, att1
        self.rows = np.arange(features.shape[0])
        self.h, self.c = h, c
        n = max(max_rows or 0, features.shape[0])
        self._hc = [(np.empty((n,) + h.shape[1:], h.dtype), np.empty((n,) + c.shape[1:], c.dtype)) for _ in range(2)]
        self._flip = 0
        self._views: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._laid_out: dict[str, np.ndarray] = {}  # name -> buffer holding the rows of `self.rows`, in order
        self.session.bind("features", np.ascontiguousarray(features))
        self.session.bind("att1", np.ascontiguousarray(att1))

    def step(self, prev_words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        words = prev_words if prev_words.dtype == np.int64 else prev_words.astype(np.int64)
        out = self.session.run({"prev_word": words, "h": self.h, "c": self.c})
        self.h, self.c = out["h_next"], out["c_next"]
        return out["log_probs"], out["alpha"]

    def reorder(self, source_rows: np.ndarray) -> None:
        n = source_rows.shape[0]
        if n > self._hc[0][0].shape[0]:
            self._hc = [(np.empty((n,) + self.h.shape[1:], self.h.dtype), np.empty((n,) + self.c.shape[1:],
                                                                                  self.c.dtype)) for _ in range(2)]
            self._views.clear()
        self._flip ^= 1
        h, c = self._hc_views(self._flip, n)
        _gather(self.h, source_rows, h)
        _gather(self.c, source_rows, c)
        self.h, self.c = h, c
        rows = self.rows.take(source_rows)
        if n != self.rows.shape[0] or rows.tobytes() != self.rows.tobytes():  # (cheapest test for a few rows)
            self._lay_out(rows)
        self.rows = rows

    def _hc_views(self, flip: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n rows of one h/c buffer pair, the same view objects every time: a backend in
        reuse mode wraps an array it was fed before only once."""
        views = self._views.get((flip, n))
        if views is None:
            h_buf, c_buf = self._hc[flip]
            views = self._views[(flip, n)] = (h_buf[:n], c_buf[:n])
        return views

    def _lay_out(self, rows: np.ndarray) -> None:
        """Bind features/att1 for the row layout `rows`: compact in place when every image only lost rows."""
        n_images = self.features.shape[0]
        old_counts = np.bincount(self.rows, minlength=n_images)
        new_counts = np.bincount(rows, minlength=n_images)
        grouped = bool((np.diff(rows) >= 0).all() and (np.diff(self.rows) >= 0).all())
        shrink = grouped and bool((new_counts <= old_counts).all())
        for name, src in (("features", self.features), ("att1", self.att1)):
            buf = self._laid_out.get(name)
            if buf is not None and shrink:
                _compact(buf, old_counts, new_counts)
            else:
                if buf is None or buf.shape[0] < rows.size:
                    buf = self._laid_out[name] = np.empty((rows.size,) + src.shape[1:], src.dtype)
                _gather(src, rows, buf[:rows.size])
            self.session.bind(name, buf[:rows.size])

    def close(self) -> None:
        self.session.unbind("features")
        self.session.unbind("att1")


def _compact(buf: np.ndarray, old_counts: np.ndarray, new_counts: np.ndarray) -> None:
    """Move each image's first new_counts[i] rows to their place in the shorter layout, in place.

    Images are visited in order and every block moves towards the start (counts only shrank), so
    a block never overwrites rows still to be moved; numpy copies overlapping slices correctly.
    """
    old_start = np.concatenate([[0], np.cumsum(old_counts)[:-1]]).tolist()
    new_start = np.concatenate([[0], np.cumsum(new_counts)[:-1]]).tolist()
    for i, k in enumerate(new_counts.tolist()):
        s, d = old_start[i], new_start[i]
        if k and s != d:
            buf[d:d + k] = buf[s:s + k]


def _topk_partition(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first, ties lower index first (for large k)."""
    if k >= x.size:
        return np.argsort(-x, kind="stable")
    # argpartition picks an arbitrary member of a tie at the k-th place: take the values above
    # the k-th one, then the lowest indices among those equal to it
    kth = x[np.argpartition(-x, k - 1)[k - 1]]
    above = np.flatnonzero(x > kth)
    idx = np.concatenate([above, np.flatnonzero(x == kth)[: k - above.size]])
    return idx[np.lexsort((idx, -x[idx]))]


def _nan_error() -> NumericsError:
    return NumericsError("decoder_step produced NaN log-probabilities (check the inputs and the model)")


def _topk(x: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """The min(k, x.size) largest values of a 1-D float array and their indices, largest first, ties
    lower index first (the order of a stable sort of -x). `x` is scratch: it is overwritten.
    NaN anywhere in `x` raises NumericsError (arg-max finds a NaN first). Values are exact (Python
    floats hold every float32 and float64)."""
    if k > ARGMAX_TOPK or k >= x.size:
        if np.isnan(x).any():
            raise _nan_error()
        top = _topk_partition(x, k)
        return top.tolist(), x[top].tolist()
    picks: list[int] = []
    values: list[float] = []
    for _ in range(k):
        j = int(x.argmax())  # the first index of the maximum: ties go to the lower index
        v = x.item(j)
        if v != v:
            raise _nan_error()
        if v == -np.inf:  # all that is left is -inf: the lowest indices not taken yet, in order
            rest = [r for r in np.flatnonzero(x == -np.inf)[: k + len(picks)].tolist() if r not in picks]
            n = k - len(picks)
            return picks + rest[:n], values + [v] * n
        picks.append(j)
        values.append(v)
        x[j] = -np.inf
    return picks, values


def _topk_desc(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (ties: lower index first)."""
    if k >= x.size:
        return np.argsort(-x, kind="stable")
    return np.array(_topk(np.array(x, dtype=np.result_type(x.dtype, np.float32)), k)[0], np.intp)


@dataclass
class _ImageBeams:
    k: int  # live hypotheses: candidates to choose at the next step
    rows: int = 1  # rows of this image in the next step's input (1 before step 1)
    slots: list[int] = field(default_factory=lambda: [-1])  # each row's slot in the last step's history
    scores: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))  # [beam] cumulative log-probs
    complete: list[tuple[int, int, float]] = field(default_factory=list)  # (step, slot, score) that chose <end>


class BeamSearchDecoder:
    """Hypothesis bookkeeping for a batch of images; `update()` once per step.

    Step t of image i writes, per chosen candidate (its slot j < beam), the word, the slot of step
    t-1 it extends and its attention row into `_words[t, i, j]`, `_parents[t, i, j]` and
    `_alphas[t, i, j]`; a hypothesis is the chain of slots back to step 0, traced in `finalize()`.
    """

    def __init__(self, n_images: int, beam: int, end: int, n_pixels: int, max_len: int | None = None) -> None:
        self.end, self.beam, self.n_pixels = end, beam, n_pixels
        self.trace: list | None = None  # a list: update() appends each step's choices (see beam_search)
        self.beams = [_ImageBeams(beam) for _ in range(n_images)]
        self.t = 0  # steps done
        cap = _FIRST_CAPACITY if max_len is None else max(1, min(max_len, _FIRST_CAPACITY))
        self._words = np.zeros((cap, n_images, beam), np.int64)
        self._parents = np.zeros((cap, n_images, beam), np.intp)
        self._alphas: np.ndarray | None = None  # [cap, images, beam, P], dtype of the first alpha (>= float32)
        self._sums: np.ndarray | None = None  # scratch: one image's flattened scores
        self._vocab = -1
        self._src = np.empty(n_images * beam, np.intp)
        self._next = np.empty(n_images * beam, np.int64)
        self._out_views: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def done(self) -> bool:
        return all(b.k == 0 for b in self.beams)

    def _prepare(self, log_probs: np.ndarray, alpha: np.ndarray) -> None:
        """Buffers whose size or dtype the first step's outputs decide (dtypes as numpy promotes them)."""
        n_images, beam, vocab = len(self.beams), self.beam, log_probs.shape[1]
        score_dtype = np.result_type(np.float32, log_probs.dtype)
        if self._alphas is None:  # the first step
            self._alphas = np.zeros((self._words.shape[0], n_images, beam, alpha.shape[1]),
                                    np.result_type(np.float32, alpha.dtype))
            for b in self.beams:  # step 1's single row scores 0
                b.scores = np.zeros(beam, score_dtype)
        if self._sums is None or self._sums.size < beam * vocab:
            self._sums = np.empty(beam * vocab, score_dtype)
        self._vocab = vocab

    def _grow(self) -> None:
        """Double the history's capacity (amortised: no per-step allocation)."""
        assert self._alphas is not None
        self._words, self._parents, self._alphas = (
            np.concatenate([a, np.zeros_like(a)]) for a in (self._words, self._parents, self._alphas))

    def update(self, log_probs: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Extend every image's beams; return (source row, next word) of the live rows.

        The returned arrays are this decoder's buffers, valid until the next update()."""
        vocab = log_probs.shape[1]
        if vocab != self._vocab:
            self._prepare(log_probs, alpha)
        t = self.t
        if t == self._words.shape[0]:
            self._grow()
        assert self._sums is not None and self._alphas is not None
        words_t, parents_t, alphas_t = self._words[t], self._parents[t], self._alphas[t]
        end, src, nxt = self.end, self._src, self._next
        offset = n_out = 0
        step_trace = None if self.trace is None else []
        for i, b in enumerate(self.beams):
            if b.k == 0:
                continue
            live = b.rows
            sums = self._sums[: live * vocab]
            np.add(b.scores[:live, None], log_probs[offset:offset + live], out=sums.reshape(live, vocab))
            picks, values = _topk(sums, b.k)
            m, n, slots, scores = len(picks), 0, b.slots, b.scores
            word_row, parent_row, rows, kept = words_t[i], parents_t[i], [], []
            for j, flat in enumerate(picks):  # a few candidates: scalar writes beat building arrays
                p, w = divmod(flat, vocab)
                rows.append(offset + p)
                word_row[j], parent_row[j] = w, slots[p]
                if w == end:
                    b.complete.append((t, j, values[j]))
                else:
                    scores[n], src[n_out + n], nxt[n_out + n] = values[j], offset + p, w
                    kept.append(j)
                    n += 1
            _gather(alpha, rows, alphas_t[i, :m])
            if step_trace is not None:
                step_trace.append((i, np.array(rows, np.intp), words_t[i, :m].astype(np.intp),
                                   np.array(values, self._sums.dtype)))
            b.k = b.rows = n
            b.slots = kept
            n_out += n
            offset += live
        if self.trace is not None:
            self.trace.append((log_probs.shape[0], step_trace))
        self.t = t + 1
        views = self._out_views.get(n_out)
        if views is None:  # the same view objects for the same row count (see StepModel._hc_views)
            views = self._out_views[n_out] = (src[:n_out], nxt[:n_out])
        return views

    def _hypothesis(self, image: int, step: int, slot: int, score: float, finished: bool) -> Hypothesis:
        """Trace a slot of `step` back to step 0: its words (without <end>) and attention rows."""
        assert self._alphas is not None
        path = [0] * (step + 1)
        parents = self._parents[:step + 1, image]
        for u in range(step, -1, -1):
            path[u] = slot
            slot = int(parents[u, slot])
        steps = np.arange(step + 1)
        tokens = self._words[steps, image, path].tolist()
        alphas = self._alphas[steps, image, path]
        return Hypothesis(tokens[:-1] if finished else tokens, score, alphas, finished)

    def finalize(self, ranker: Ranker) -> list[Hypothesis]:
        """Best hypothesis per image; unfinished beams count only when none finished."""
        out = []
        for i, b in enumerate(self.beams):
            if b.complete:
                hyps = [self._hypothesis(i, t, slot, score, True) for t, slot, score in b.complete]
            else:
                hyps = [self._hypothesis(i, self.t - 1, slot, float(b.scores[r]), False)
                        for r, slot in enumerate(b.slots)]
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
    n = features.shape[0]
    decoder = BeamSearchDecoder(n, beam, end, features.shape[1], max_len)
    decoder.trace = trace
    prev = np.full(n, start, dtype=np.int64)
    with reuse_outputs(step_session):
        model = StepModel(step_session, features, att1, h, c, max_rows=n * beam)
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
