"""The tutorial's length bound: caption.py runs up to 51 decoding steps (50 words + `<end>`).

Its loop starts at `step = 1`, sets aside the step's `<end>` candidates, then
breaks `if step > 50` before `step += 1`: 51 decoder steps, and an `<end>`
chosen at step 51 completes its hypothesis. mmedge's `max_len` counts decoding
steps (`<end>` included) and defaults to `DEFAULT_MAX_LEN` = 51, in the numpy
runtime, the PyTorch reference, the pipelines and the CLI alike.

The decoder here is a tiny fake whose `<end>` becomes likely only at step 51:
the numpy runtime (a fake `decoder_step` Session), the PyTorch reference (a
fake decoder) and a literal transcription of caption.py's loop run the same
step function and must agree on tokens, score and attention.
"""

from __future__ import annotations

import inspect
import types

import numpy as np
import pytest
import torch

from mmedge.models.decoding import beam_search_features
from mmedge.runtime.decode import DEFAULT_MAX_LEN, beam_search

V, START, END, PIXELS = 12, 1, 2, 4
END_STEP = 51  # <end> is likely only at this decoding step
_rng = np.random.default_rng(51)
LOGITS = _rng.normal(0.0, 1.5, (1009, V))
ALPHAS = _rng.random((1009, PIXELS)) + 0.1
ALPHAS /= ALPHAS.sum(axis=1, keepdims=True)


def step_rows(h: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log_probs [N, V], h_next [N, 2], alpha [N, P]); h = (steps done, hash of the prefix)."""
    t = h[:, 0].astype(np.int64) + 1
    key = (h[:, 1].astype(np.int64) * 31 + prev.astype(np.int64) + 7) % 1009
    logits = LOGITS[key].copy()
    logits[:, START] = -40.0
    logits[:, END] = np.where(t == END_STEP, 12.0, -40.0)
    m = logits.max(axis=1, keepdims=True)
    log_probs = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    h_next = np.stack([t, key], axis=1).astype(np.float32)
    return log_probs.astype(np.float32), h_next, ALPHAS[key].astype(np.float32)


class FakeStepSession:
    """A `decoder_step` Session over `step_rows` (numpy, as the runtime sees a backend)."""

    def bind(self, name: str, array: np.ndarray) -> None:
        pass

    def unbind(self, name: str) -> None:
        pass

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        log_probs, h, alpha = step_rows(feeds["h"], feeds["prev_word"])
        return {"log_probs": log_probs, "h_next": h, "c_next": feeds["c"], "alpha": alpha}


class FakeTorchDecoder:
    """The reference's decoder interface (`init_state`, `step`) over `step_rows`; features[0, 0, 0] seeds h."""

    vocab_size = V

    def init_state(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = enc.shape[0]
        h = torch.stack([torch.zeros(n), enc[:, 0, 0]], dim=1)
        return h, torch.zeros(n, 1), torch.zeros(n, enc.shape[1], 3)

    def step(self, enc, att1, prev, h, c):
        log_probs, h_next, alpha = step_rows(h.numpy(), prev.numpy())
        return torch.from_numpy(log_probs), torch.from_numpy(h_next), c, torch.from_numpy(alpha)


def fake_model() -> types.SimpleNamespace:
    return types.SimpleNamespace(decoder=FakeTorchDecoder(), vocab=types.SimpleNamespace(start=START, end=END))


def features(seed: int) -> torch.Tensor:
    f = torch.zeros(PIXELS, 2)
    f[0, 0] = float(seed)
    return f


def tutorial_caption(seed: int, beam_size: int) -> tuple[list[int], float, np.ndarray]:
    """caption.py's `caption_image_beam_search` loop, line for line (only `//` for the beam indices)."""
    dec = FakeTorchDecoder()
    k = beam_size
    vocab_size = V
    encoder_out = features(seed).reshape(1, PIXELS, 2).expand(k, PIXELS, 2)
    k_prev_words = torch.LongTensor([[START]] * k)
    seqs = k_prev_words
    top_k_scores = torch.zeros(k, 1)
    seqs_alpha = torch.ones(k, 1, PIXELS)
    complete_seqs, complete_seqs_alpha, complete_seqs_scores = [], [], []
    step = 1
    h, c, _ = dec.init_state(encoder_out)
    while True:
        scores, h, c, alpha = dec.step(encoder_out, None, k_prev_words.squeeze(1), h, c)
        scores = top_k_scores.expand_as(scores) + scores
        if step == 1:
            top_k_scores, top_k_words = scores[0].topk(k, 0, True, True)
        else:
            top_k_scores, top_k_words = scores.view(-1).topk(k, 0, True, True)
        prev_word_inds = top_k_words // vocab_size
        next_word_inds = top_k_words % vocab_size
        seqs = torch.cat([seqs[prev_word_inds], next_word_inds.unsqueeze(1)], dim=1)
        seqs_alpha = torch.cat([seqs_alpha[prev_word_inds], alpha[prev_word_inds].unsqueeze(1)], dim=1)
        incomplete_inds = [ind for ind, next_word in enumerate(next_word_inds) if next_word != END]
        complete_inds = list(set(range(len(next_word_inds))) - set(incomplete_inds))
        if len(complete_inds) > 0:
            complete_seqs.extend(seqs[complete_inds].tolist())
            complete_seqs_alpha.extend(seqs_alpha[complete_inds].tolist())
            complete_seqs_scores.extend(top_k_scores[complete_inds])
        k -= len(complete_inds)
        if k == 0:
            break
        seqs = seqs[incomplete_inds]
        seqs_alpha = seqs_alpha[incomplete_inds]
        h = h[prev_word_inds[incomplete_inds]]
        c = c[prev_word_inds[incomplete_inds]]
        encoder_out = encoder_out[prev_word_inds[incomplete_inds]]
        top_k_scores = top_k_scores[incomplete_inds].unsqueeze(1)
        k_prev_words = next_word_inds[incomplete_inds].unsqueeze(1)
        if step > 50:
            break
        step += 1
    assert step == END_STEP  # the fake reaches the tutorial's last step
    i = complete_seqs_scores.index(max(complete_seqs_scores))
    seq, alphas = complete_seqs[i], np.array(complete_seqs_alpha[i], np.float32)
    assert seq[0] == START and seq[-1] == END
    return seq[1:-1], float(complete_seqs_scores[i]), alphas[1:]  # without <start>, <end> and the 1s row


def runtime_caption(seeds: list[int], beam: int, **kw):
    h0 = np.stack([np.zeros(len(seeds)), np.array(seeds, np.float64)], axis=1).astype(np.float32)
    n = len(seeds)
    return beam_search(FakeStepSession(), np.zeros((n, PIXELS, 2), np.float32), np.zeros((n, PIXELS, 3), np.float32),
                       h0, np.zeros((n, 1), np.float32), START, END, beam, **kw)


def test_default_max_len_is_the_tutorials_51_steps() -> None:
    from mmedge.calibration.eval_caption import TorchCaptioner
    from mmedge.models.decoding import caption_images, greedy_features
    from mmedge.runtime.pipelines import Captioner
    from mmedge.runtime.profiler import ProfileOptions

    assert DEFAULT_MAX_LEN == 51
    for fn in (beam_search, beam_search_features, caption_images, greedy_features, Captioner.caption,
               Captioner.caption_features, TorchCaptioner.caption):
        assert inspect.signature(fn).parameters["max_len"].default == DEFAULT_MAX_LEN, fn.__qualname__
    assert ProfileOptions().max_len == DEFAULT_MAX_LEN


def test_cli_max_len_default_and_help_say_what_it_counts() -> None:
    import typer.main

    from mmedge.cli import app

    group = typer.main.get_command(app)
    for name in ("caption", "profile"):
        [opt] = [p for p in group.commands[name].params if p.name == "max_len"]
        assert opt.default == DEFAULT_MAX_LEN, name
        assert "<end> included" in opt.help and "51" in opt.help, (name, opt.help)


@pytest.mark.parametrize("beam", [1, 3, 5])
def test_end_at_the_tutorials_last_step_is_finished(beam: int) -> None:
    seeds = [3, 11]
    ours = runtime_caption(seeds, beam)  # the default max_len
    for seed, hyp in zip(seeds, ours):
        tokens, score, alphas = tutorial_caption(seed, beam)
        assert len(tokens) == 50 and hyp.finished
        assert hyp.tokens == tokens
        assert hyp.score == pytest.approx(score, rel=1e-6, abs=1e-4)
        assert hyp.alphas.shape == alphas.shape == (51, PIXELS)  # one map per step, <end>'s included
        np.testing.assert_allclose(hyp.alphas, alphas, atol=1e-6)

        ref = beam_search_features(fake_model(), features(seed), beam=beam)  # the default max_len
        assert ref.finished and ref.tokens == tokens
        assert ref.score == pytest.approx(score, rel=1e-6, abs=1e-4)
        assert ref.score == pytest.approx(hyp.score, rel=1e-6, abs=1e-4)
        np.testing.assert_allclose(ref.alphas, hyp.alphas, atol=1e-6)


@pytest.mark.parametrize("beam", [1, 3])
def test_max_len_counts_steps_with_end(beam: int) -> None:
    """One step fewer than the tutorial: 50 words, unfinished, without <end>'s log-prob (same in both)."""
    [hyp] = runtime_caption([3], beam, max_len=50)
    ref = beam_search_features(fake_model(), features(3), beam=beam, max_len=50)
    assert not hyp.finished and not ref.finished
    assert len(hyp.tokens) == 50 and hyp.tokens == ref.tokens
    assert hyp.score == pytest.approx(ref.score, rel=1e-6, abs=1e-4)
    full = runtime_caption([3], beam, max_len=51)[0]
    assert full.finished and full.score < hyp.score  # <end>'s log-prob is part of the tutorial's score
