"""Reference decoding in PyTorch: the tutorial's beam search, without its bugs.

This is the yardstick the runtime's numpy beam search is checked against, so it
stays close to `caption_image_beam_search` in the tutorial's caption.py. Fixed:
beam indices use integer division (the tutorial's `/` yields floats on recent
torch), a search where no beam reaches `<end>` within `max_len` returns the best
unfinished beam instead of crashing, and several images are decoded (one after
the other, each with its own beams).

`max_len` counts decoding steps (generated tokens, `<end>` included); the
default, `DEFAULT_MAX_LEN` = 51, is the tutorial's bound (its loop breaks
`if step > 50` after setting aside the step's `<end>` candidates: 50 words +
`<end>`, and an `<end>` at step 51 completes its hypothesis). The score
is the sum of the tokens' log-probabilities, `<end>` included; with
`length_norm` the ranking (not the reported score) divides it by the length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mmedge.models.captioner import CaptionModel
from mmedge.runtime.decode import DEFAULT_MAX_LEN


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids without <start> and without <end>
    score: float  # sum of log-probs of the generated tokens, <end> included when reached
    alphas: np.ndarray  # [len(steps), P] attention weights, one row per generated token
    finished: bool  # reached <end>


def _rank_key(score: float, length: int, length_norm: bool) -> float:
    return score / max(length, 1) if length_norm else score


@torch.no_grad()
def beam_search_features(model: CaptionModel, features: Tensor, beam: int = 3, max_len: int = DEFAULT_MAX_LEN,
                         length_norm: bool = False) -> Hypothesis:
    """Beam search for one image's features [P, C] (or [S, S, C])."""
    if beam < 1 or max_len < 1:
        raise ValueError("beam and max_len must be >= 1")
    dec = model.decoder
    start, end = model.vocab.start, model.vocab.end
    enc = features.reshape(1, -1, features.shape[-1])
    k = beam
    h, c, att1 = dec.init_state(enc)
    enc, att1 = enc.expand(k, -1, -1), att1.expand(k, -1, -1)
    h, c = h.expand(k, -1), c.expand(k, -1)
    prev = torch.full((k,), start, dtype=torch.long)
    seqs = torch.full((k, 1), start, dtype=torch.long)
    seq_alphas = enc.new_zeros(k, 0, enc.shape[1])
    top_scores = enc.new_zeros(k, 1)
    complete: list[tuple[list[int], float, np.ndarray, bool]] = []
    vocab_size = dec.vocab_size
    for step in range(1, max_len + 1):
        log_probs, h, c, alpha = dec.step(enc, att1, prev, h, c)
        scores = top_scores.expand_as(log_probs) + log_probs
        if step == 1:  # all beams are the same: take the k best words of the first
            top_scores_flat, top_words = scores[0].topk(k, 0, True, True)
        else:
            top_scores_flat, top_words = scores.view(-1).topk(k, 0, True, True)
        prev_inds = torch.div(top_words, vocab_size, rounding_mode="floor")
        next_words = top_words % vocab_size
        seqs = torch.cat([seqs[prev_inds], next_words.unsqueeze(1)], dim=1)
        seq_alphas = torch.cat([seq_alphas[prev_inds], alpha[prev_inds].unsqueeze(1)], dim=1)
        is_end = next_words == end
        for i in torch.nonzero(is_end).flatten().tolist():
            complete.append((seqs[i, 1:-1].tolist(), float(top_scores_flat[i]), seq_alphas[i].numpy(), True))
        keep = torch.nonzero(~is_end).flatten()
        k = int(keep.numel())
        if k == 0:
            break
        seqs, seq_alphas = seqs[keep], seq_alphas[keep]
        src = prev_inds[keep]
        h, c, enc, att1 = h[src], c[src], enc[src], att1[src]
        top_scores = top_scores_flat[keep].unsqueeze(1)
        prev = next_words[keep]
    if not complete:  # no beam ended within max_len: rank the unfinished ones
        complete = [(seqs[i, 1:].tolist(), float(top_scores[i]), seq_alphas[i].numpy(), False) for i in range(k)]
    best = max(complete, key=lambda t: _rank_key(t[1], len(t[0]) + int(t[3]), length_norm))
    return Hypothesis(tokens=best[0], score=best[1], alphas=best[2], finished=best[3])


@torch.no_grad()
def greedy_features(model: CaptionModel, features: Tensor, max_len: int = DEFAULT_MAX_LEN) -> Hypothesis:
    """Greedy decoding: the arg-max word at every step."""
    dec = model.decoder
    enc = features.reshape(1, -1, features.shape[-1])
    h, c, att1 = dec.init_state(enc)
    prev = torch.tensor([model.vocab.start])
    tokens: list[int] = []
    alphas: list[np.ndarray] = []
    score = 0.0
    for _ in range(max_len):
        log_probs, h, c, alpha = dec.step(enc, att1, prev, h, c)
        word = int(log_probs[0].argmax())
        score += float(log_probs[0, word])
        alphas.append(alpha[0].numpy())
        if word == model.vocab.end:
            return Hypothesis(tokens, score, np.stack(alphas), True)
        tokens.append(word)
        prev = torch.tensor([word])
    return Hypothesis(tokens, score, np.stack(alphas), False)


@torch.no_grad()
def caption_images(model: CaptionModel, images: Tensor, beam: int = 3, max_len: int = DEFAULT_MAX_LEN,
                   length_norm: bool = False) -> list[Hypothesis]:
    """Preprocessed images [B, 3, H, W] -> one best hypothesis per image."""
    feats = model.encode(images)
    return [beam_search_features(model, f, beam, max_len, length_norm) for f in feats]
