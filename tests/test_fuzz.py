"""Property tests (hypothesis): beam search on random step functions, image
preprocessing of any size and mode, manifest parsing of arbitrary JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmedge.errors import ArtifactError, InputError, NumericsError
from mmedge.runtime.decode import _topk_desc, beam_search
from mmedge.runtime.image import preprocess_image
from mmedge.runtime.manifest import MANIFEST, read_manifest

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class FakeStep:
    """A decoder_step stand-in whose log-probs depend only on the decoded prefix.

    h carries a hash of the prefix, so replaying a token sequence gives the same
    log-probs: the beam search's score can be checked independently.
    """

    def __init__(self, table: np.ndarray, pixels: int = 4) -> None:
        self.table, self.pixels = table, pixels

    def bind(self, name: str, array: np.ndarray) -> None:
        pass

    def unbind(self, name: str) -> None:
        pass

    def next_h(self, h: np.ndarray, words: np.ndarray) -> np.ndarray:
        return ((h[:, 0].astype(np.int64) * 31 + words + 7) % 1009).astype(np.float32)[:, None]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h = self.next_h(feeds["h"], feeds["prev_word"])
        rows = self.table[h[:, 0].astype(np.int64) % len(self.table)]
        n = len(h)
        return {"log_probs": rows.astype(np.float32), "h_next": h, "c_next": feeds["c"],
                "alpha": np.full((n, self.pixels), 1.0 / self.pixels, np.float32)}

    def replay(self, h0: float, start: int, tokens: list[int]) -> list[np.ndarray]:
        h = np.array([[h0]], np.float32)
        rows = []
        for t in [start] + tokens:
            h = self.next_h(h, np.array([t]))
            rows.append(self.table[int(h[0, 0]) % len(self.table)])
        return rows


@FUZZ
@given(values=st.lists(st.sampled_from([-np.inf, -3.0, -1.0, -1.0, 0.0, 2.0]), min_size=1, max_size=40),
       k=st.integers(1, 45))
def test_topk_breaks_ties_by_lowest_index(values: list[float], k: int) -> None:
    """Hypothesis found argpartition keeping an arbitrary member of a tie at the k-th place
    (greedy picked token 3 over an equal token 2); the top-k must equal a stable sort's prefix."""
    x = np.array(values, np.float32)
    assert _topk_desc(x, k).tolist() == np.argsort(-x, kind="stable")[:k].tolist()


def test_topk_tie_at_the_boundary() -> None:
    x = np.array([-3.35, -2.35, -1.35, -1.35, -2.35, -1.35], np.float32)
    assert _topk_desc(x, 1).tolist() == [2] and _topk_desc(x, 2).tolist() == [2, 3]


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


@st.composite
def step_tables(draw: st.DrawFn) -> np.ndarray:
    vocab = draw(st.integers(3, 12))
    rows = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, draw(st.sampled_from([0.01, 1.0, 5.0])), (rows, vocab))
    if draw(st.booleans()):  # exact ties
        logits = np.round(logits)
    table = log_softmax_rows(logits)
    if draw(st.booleans()):  # forbidden words: -inf log-probs (never all of a row)
        mask = rng.random((rows, vocab)) < 0.3
        mask[:, 0] = False
        table[mask] = -np.inf
    return table


@FUZZ
@given(table=step_tables(), images=st.integers(1, 3), beam=st.integers(1, 14), max_len=st.integers(1, 8))
def test_beam_search_on_random_steps(table: np.ndarray, images: int, beam: int, max_len: int) -> None:
    vocab = table.shape[1]
    start, end = vocab - 2, vocab - 1
    step = FakeStep(table)
    h0 = np.arange(images, dtype=np.float32)[:, None] * 17
    feats, att1 = np.zeros((images, 4, 2), np.float32), np.zeros((images, 4, 3), np.float32)
    hyps = beam_search(step, feats, att1, h0, np.zeros((images, 1), np.float32), start, end, beam, max_len)
    assert len(hyps) == images
    for i, h in enumerate(hyps):
        assert len(h.tokens) <= max_len and all(0 <= t < vocab for t in h.tokens)
        assert end not in h.tokens
        steps = len(h.tokens) + int(h.finished)
        assert h.alphas.shape == (steps, 4)
        if not h.finished:
            assert len(h.tokens) == max_len
        # the reported score is the replayed path's sum of log-probs
        path = h.tokens + ([end] if h.finished else [])
        rows = step.replay(float(h0[i, 0]), start, path[:-1] if path else [])
        expected = sum(float(r[t]) for r, t in zip(rows, path))
        assert np.isfinite(h.score) == np.isfinite(expected)
        if np.isfinite(expected):
            assert h.score == pytest.approx(expected, abs=1e-3)
        if beam == 1:  # greedy: arg-max (lowest index on ties) at every step
            rows = step.replay(float(h0[i, 0]), start, h.tokens)
            assert [int(np.argmax(r)) for r in rows[: len(path)]] == path


def test_nan_log_probs_are_reported_not_decoded() -> None:
    table = np.full((1, 5), np.nan)
    with pytest.raises(NumericsError, match="NaN"):
        beam_search(FakeStep(table), np.zeros((1, 4, 2), np.float32), np.zeros((1, 4, 3), np.float32),
                    np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), 3, 4, beam=2, max_len=3)


PARAMS = {"image_size": 32, "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@FUZZ
@given(w=st.integers(1, 300), h=st.integers(1, 300), mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "I;16",
                                                                           "I", "F", "1", "CMYK"]),
       seed=st.integers(0, 1000))
def test_preprocess_any_size_and_mode(w: int, h: int, mode: str, seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
    img = rgb.convert("L").convert(mode) if mode == "I;16" else rgb.convert(mode)  # Pillow < 10.1: no RGB -> I;16
    path = tmp_path / f"x-{w}-{h}.{'tiff' if mode in ('I;16', 'I', 'F', 'CMYK') else 'png'}"
    img.save(path)
    x = preprocess_image(path, PARAMS)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all()
    lo = (0 - np.array(PARAMS["mean"])) / np.array(PARAMS["std"])
    hi = (1 - np.array(PARAMS["mean"])) / np.array(PARAMS["std"])
    assert (x.min(axis=(1, 2)) >= lo - 1e-5).all() and (x.max(axis=(1, 2)) <= hi + 1e-5).all()


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)
manifest_keys = st.sampled_from(["model", "config", "pipeline", "format", "precision", "graphs", "preprocessing",
                                 "files", "format_version", "extra", "vocabulary"])


@FUZZ
@given(doc=st.dictionaries(manifest_keys | st.text(max_size=6), json_values, max_size=10) | json_values)
def test_manifest_parsing_never_crashes(doc: object, tmp_path: Path) -> None:
    d = tmp_path / "art"
    d.mkdir(exist_ok=True)
    (d / MANIFEST).write_text(json.dumps(doc))
    try:
        read_manifest(d)
    except (ArtifactError, InputError):
        pass


@FUZZ
@given(sr=st.sampled_from([8000, 16000, 22050, 44100]), n_fft=st.sampled_from([256, 400, 512, 1024, 2048]),
       n_mels=st.integers(8, 128), fmin=st.floats(0, 500), htk=st.booleans(), norm=st.sampled_from(["slaney", None]))
def test_mel_filters_match_librosa(sr: int, n_fft: int, n_mels: int, fmin: float, htk: bool, norm: str | None) -> None:
    librosa = pytest.importorskip("librosa")
    from mmedge.runtime.audio import mel_filters

    ours = mel_filters(sr, n_fft, n_mels, fmin=fmin, htk=htk, norm=norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, htk=htk, norm=norm)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-6 * max(1.0, float(np.abs(ref).max())), rtol=1e-5)


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "mmedge-jetson/../../evil"])
def test_jetson_bundle_with_path_traversal_is_refused(name: str, tmp_path: Path) -> None:
    import io
    import tarfile

    from mmedge.export.jetson import verify_bundle

    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(ArtifactError, match="unsafe member"):
        verify_bundle(bad)
    assert not (tmp_path.parent / "evil.txt").exists()
