"""The captioner reference model: shapes, tutorial compatibility, decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import make_golden
from mmedge.models import captioner
from mmedge.models.captioner import AdaptivePool, CaptionModel, LSTMCell
from mmedge.models.decoding import beam_search_features, caption_images, greedy_features

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("hw", [(8, 8), (2, 2), (7, 9), (14, 14), (16, 16), (30, 5)])
def test_pool_matrix_equals_adaptive_avg_pool(hw: tuple[int, int]) -> None:
    x = torch.randn(2, 6, *hw, dtype=torch.float64)
    ref = nn.AdaptiveAvgPool2d((14, 14))(x).permute(0, 2, 3, 1)
    assert torch.allclose(AdaptivePool(14)(x), ref, atol=1e-12)


def test_lstm_cell_equals_nn_lstmcell() -> None:
    ref = nn.LSTMCell(7, 5)
    ours = LSTMCell(7, 5)
    ours.load_state_dict(ref.state_dict())  # same parameter names
    x, h, c = torch.randn(3, 7), torch.randn(3, 5), torch.randn(3, 5)
    for a, b in zip(ours(x, (h, c)), ref(x, (h, c))):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("config", ["tiny", "full"])
def test_graph_shapes_and_dtypes(config: str) -> None:
    spec = captioner.SPEC
    model = spec.create(config)
    cfg = spec.config(config)
    P, C, D, A, V = cfg.num_pixels, cfg.encoder_dim, cfg.decoder_dim, cfg.attention_dim, cfg.vocab_size
    expected = {
        "encoder": [(1, 14, 14, C)],
        "decoder_init": [(1, D), (1, D), (1, P, A)],
        "decoder_step": [(1, V), (1, D), (1, D), (1, P)],
    }
    for graph in spec.graphs:
        feeds = graph.example(model, cfg, 1, torch.Generator().manual_seed(0))
        with torch.no_grad():
            outs = graph.wrap(model)(*feeds.values())
        outs = outs if isinstance(outs, tuple) else (outs,)
        assert [tuple(o.shape) for o in outs] == expected[graph.name]
        assert all(o.dtype == torch.float32 for o in outs)
        assert list(feeds) == list(graph.inputs)
    if config == "full":
        assert (C, D, A, cfg.embed_dim, V) == (2048, 512, 512, 512, 9490)


def test_full_state_dict_keys_equal_the_tutorials() -> None:
    lines = (FIXTURES / "tutorial_captioner_state_dict_keys.txt").read_text().splitlines()
    expected = [ln for ln in lines if ln and not ln.startswith("#")]
    model = CaptionModel(captioner.CONFIGS["full"])
    assert list(model.state_dict()) == expected
    assert len(expected) == 643


def test_step_equals_teacher_forced_forward() -> None:
    """`step` reproduces the tutorial's training pass word by word (eval mode, no dropout)."""
    model = make_golden.reference_model("captioner")
    feats = model.encode(torch.randn(2, 3, 64, 64))
    caps = torch.tensor([[21, 3, 4, 5, 22, 0], [21, 6, 7, 22, 0, 0]])
    preds, _, lengths, alphas, sort_ind = model.decoder(feats, caps, torch.tensor([[5], [4]]))
    assert lengths == [4, 3] and sort_ind.tolist() == [0, 1]
    h, c, att1 = model.decoder.init_state(feats)
    for t in range(4):
        log_probs, h, c, alpha = model.decoder.step(feats, att1, caps[:, t], h, c)
        n = sum(length > t for length in lengths)
        assert torch.allclose(log_probs[:n], torch.log_softmax(preds[:n, t], dim=1), atol=1e-5)
        assert torch.allclose(alpha[:n], alphas[:n, t], atol=1e-6)


def test_beam_one_equals_greedy() -> None:
    model = make_golden.reference_model("captioner")
    gen = torch.Generator().manual_seed(0)
    feats = model.encode(torch.randn(4, 3, 64, 64, generator=gen))
    for f in feats:
        b, g = beam_search_features(model, f, beam=1, max_len=12), greedy_features(model, f, max_len=12)
        assert b.tokens == g.tokens and b.finished == g.finished
        assert b.score == pytest.approx(g.score, abs=1e-5)
        np.testing.assert_allclose(b.alphas, g.alphas, atol=1e-6)


def test_beam_search_without_end_returns_best_unfinished() -> None:
    model = make_golden.reference_model("captioner")
    with torch.no_grad():
        model.decoder.fc.bias[model.vocab.end] = -1e4  # <end> can never win
    hyp = caption_images(model, torch.randn(1, 3, 64, 64), beam=3, max_len=7)[0]
    assert not hyp.finished and len(hyp.tokens) == 7 and hyp.alphas.shape == (7, 196)
    assert model.vocab.end not in hyp.tokens


def test_wider_beam_never_scores_worse_on_goldens() -> None:
    """Beam search keeps the best complete hypothesis: k=5 >= k=1 when both finish."""
    gold = np.load(make_golden.golden_path("captioner"))
    s1, s5 = gold["beam1.scores"], gold["beam5.scores"]
    both = gold["beam1.finished"] & gold["beam5.finished"]
    assert np.all(s5[both] >= s1[both] - 1e-6)
    assert gold["beam5.finished"].any() and not gold["beam1.finished"].all()  # goldens cover both cases
