"""The fast paths of the captioner's fixed per-image overhead (issue #19) give exactly what the
simple algorithms give.

- Beam search (back-pointer history, arg-max top-k, in-place feature compaction, alternating
  h/c buffers, backends' reused outputs) against a plain-Python transcription of the tutorial's
  algorithm written here: same tokens, scores, attention and step-by-step choices, bit for bit,
  on random log-prob tables with ties, -inf words and early <end>, several images per batch.
- The top-k against a stable sort.
- The ONNX Runtime and OpenVINO reuse modes against plain `run()` on a small hand-built graph.
- Image preprocessing against the previous formula (float temporaries, transposing copy).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from mmedge.errors import NumericsError
from mmedge.runtime.decode import ARGMAX_TOPK, _topk, _topk_desc, beam_search
from mmedge.runtime.image import normalize, preprocess_image, read_image

PIXELS = 4


# ===================================================================== a decoder_step stand-in
class TableStep:
    """A `decoder_step` whose row outputs depend only on the row's state and previous word.

    h = [hash of the prefix, image]; the hash picks a row of random tables (log-probs, attention).
    c_next is the fed c itself (an output aliasing an input). Every run checks that the bound
    features/att1 rows are those of each row's image (the step model's gather and compaction).
    """

    def __init__(self, table: np.ndarray, alphas: np.ndarray, features: np.ndarray, att1: np.ndarray) -> None:
        self.table, self.alphas, self.features, self.att1 = table, alphas, features, att1
        self.bound: dict[str, np.ndarray] = {}
        self.rows_fed: list[int] = []

    def bind(self, name: str, array: np.ndarray) -> None:
        self.bound[name] = array

    def unbind(self, name: str) -> None:
        self.bound.pop(name, None)

    def key(self, state: np.ndarray, words: np.ndarray) -> np.ndarray:
        return (state.astype(np.int64) * 31 + words.astype(np.int64) + 7) % len(self.table)

    def one(self, state: float, word: int) -> tuple[np.ndarray, float, np.ndarray]:
        k = int(self.key(np.array([state]), np.array([word]))[0])
        return self.table[k], float(k), self.alphas[k]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h, words = feeds["h"], feeds["prev_word"]
        assert words.dtype == np.int64 and h.shape[0] == words.shape[0] == feeds["c"].shape[0]
        images = h[:, 1].astype(np.int64)
        np.testing.assert_array_equal(self.bound["features"], self.features[images])
        np.testing.assert_array_equal(self.bound["att1"], self.att1[images])
        keys = self.key(h[:, 0], words)
        self.rows_fed.append(len(words))
        return {"log_probs": self.table[keys], "h_next": np.stack([keys.astype(np.float32), h[:, 1]], axis=1),
                "c_next": feeds["c"], "alpha": self.alphas[keys]}


class ReusingTableStep(TableStep):
    """The same, with a backend's reuse mode: outputs live in buffers per row count, and every run
    first poisons all of them (NaN), so anything the decoder kept or fed back from an earlier
    output instead of copying it shows up."""

    def __init__(self, *args: np.ndarray) -> None:
        super().__init__(*args)
        self.reusing, self.entered = False, 0
        self.buffers: dict[int, dict[str, np.ndarray]] = {}

    @contextmanager
    def reuse_outputs(self) -> Iterator[None]:
        self.reusing, self.entered = True, self.entered + 1
        try:
            yield
        finally:
            self.reusing = False

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.reusing:
            return super().run(feeds)
        for bufs in self.buffers.values():
            for b in bufs.values():
                b.fill(np.nan)
        out = super().run(feeds)
        bufs = self.buffers.setdefault(len(feeds["h"]), {k: np.empty_like(v) for k, v in out.items()})
        for k, v in out.items():
            bufs[k][...] = v
        return bufs


def random_case(seed: int, vocab: int = 9, n_images: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                            np.ndarray]:
    """(log-prob table, attention table, features, att1): ties, -inf words, an <end> (last word) that
    is likely in some rows and impossible in others."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, rng.choice([0.3, 1.0, 3.0]), (257, vocab))
    if rng.random() < 0.6:
        logits = np.round(logits)  # exact ties
    logits[rng.random(257) < 0.25, -1] += 4.0  # early <end>
    logits[rng.random(257) < 0.3, -1] = -np.inf
    table = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    mask = rng.random(table.shape) < 0.15
    mask[:, 0] = False
    table[mask] = -np.inf
    alphas = rng.random((257, PIXELS)).astype(np.float32)
    features = rng.normal(size=(n_images, PIXELS, 2)).astype(np.float32)
    att1 = rng.normal(size=(n_images, PIXELS, 3)).astype(np.float32)
    return table.astype(np.float32), alphas, features, att1


# ===================================================================== the reference
@dataclass
class RefHyp:
    tokens: list[int]
    score: np.float32
    alphas: list[np.ndarray]
    state: float
    last: int


def reference(step: TableStep, h0: np.ndarray, start: int, end: int, beam: int, max_len: int,
              length_norm: bool = False) -> tuple[list[tuple[list[int], float, np.ndarray, bool]], list]:
    """The tutorial's algorithm per image over Python lists; returns the best (tokens, score,
    attention, finished) per image and the step trace in beam_search's format."""
    vocab = step.table.shape[1]
    results, per_image = [], []
    for i in range(h0.shape[0]):
        live = [RefHyp([], np.float32(0.0), [], float(h0[i, 0]), start)]
        k, complete, steps = beam, [], []
        for t in range(max_len):
            cands = []
            for r, hyp in enumerate(live):
                lp, state, alpha = step.one(hyp.state, hyp.last)
                for w in range(vocab):
                    cands.append((hyp.score + lp[w], r * vocab + w, r, w, state, alpha))
            cands.sort(key=lambda c: (-c[0], c[1]))  # score descending, then flat index: a stable sort
            chosen = cands[:k]
            steps.append((len(live), [(r, w, s) for s, _, r, w, _, _ in chosen]))
            new = []
            for s, _, r, w, state, alpha in chosen:
                hyp = live[r]
                if w == end:
                    complete.append((hyp.tokens, float(s), np.array(hyp.alphas + [alpha]), True))
                else:
                    new.append(RefHyp(hyp.tokens + [w], s, hyp.alphas + [alpha], state, w))
            live, k = new, len(new)
            if k == 0:
                break
        per_image.append(steps)
        hyps = complete or [(h.tokens, float(h.score), np.array(h.alphas), False) for h in live]

        def key(hy: tuple) -> float:
            return hy[1] / max(len(hy[0]) + int(hy[3]), 1) if length_norm else hy[1]
        results.append(max(hyps, key=key))
    trace = []
    for t in range(max(len(s) for s in per_image)):
        offset, entries = 0, []
        for i, steps in enumerate(per_image):
            if t < len(steps):
                n_live, chosen = steps[t]
                entries.append((i, [offset + r for r, _, _ in chosen], [w for _, w, _ in chosen],
                                [float(s) for _, _, s in chosen]))
                offset += n_live
        trace.append((offset, entries))
    return results, trace


def run_both(seed: int, beam: int, max_len: int, n_images: int = 3, vocab: int = 9, reuse: bool = False,
             length_norm: bool = False) -> None:
    table, alphas, features, att1 = random_case(seed, vocab, n_images)
    step_cls = ReusingTableStep if reuse else TableStep
    step = step_cls(table, alphas, features, att1)
    start, end = vocab - 2, vocab - 1
    h0 = np.stack([np.arange(n_images) * 17.0 + seed % 5, np.arange(n_images)], axis=1).astype(np.float32)
    trace: list = []
    got = beam_search(step, features, att1, h0, np.zeros((n_images, 1), np.float32), start, end, beam, max_len,
                      length_norm=length_norm, trace=trace)
    want, want_trace = reference(step_cls(table, alphas, features, att1), h0, start, end, beam, max_len, length_norm)
    for g, (tokens, score, att, finished) in zip(got, want):
        assert g.tokens == tokens and g.finished == finished
        assert g.score == score or (np.isneginf(g.score) and np.isneginf(score))
        assert g.alphas.dtype == np.float32 and g.alphas.shape == att.shape
        np.testing.assert_array_equal(g.alphas, att)
    assert [rows for rows, _ in trace] == [rows for rows, _ in want_trace] == step.rows_fed
    for (_, per_image), (_, want_per_image) in zip(trace, want_trace):
        assert len(per_image) == len(want_per_image)
        for (i, src, words, scores), (wi, wsrc, wwords, wscores) in zip(per_image, want_per_image):
            assert i == wi and src.tolist() == wsrc and words.tolist() == wwords
            assert scores.dtype == np.float32 and scores.tolist() == wscores
    if reuse:
        assert step.entered == 1 and not step.reusing


# ===================================================================== beam search
@pytest.mark.parametrize("seed", range(40))
def test_beam_search_equals_the_reference(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    run_both(seed, beam=int(rng.integers(1, 7)), max_len=int(rng.integers(1, 12)), n_images=int(rng.integers(1, 5)),
             length_norm=bool(seed % 3 == 0))


@pytest.mark.parametrize("seed", range(12))
def test_reused_outputs_are_copied_not_kept(seed: int) -> None:
    """A backend's reuse mode (outputs overwritten by the next run) changes nothing."""
    run_both(seed, beam=1 + seed % 5, max_len=9, n_images=1 + seed % 4, reuse=True)


@pytest.mark.parametrize("beam", [ARGMAX_TOPK, ARGMAX_TOPK + 1, 25])
def test_wide_beams_take_the_partition_path_identically(beam: int) -> None:
    run_both(7, beam=beam, max_len=6, n_images=2, vocab=13)


def test_history_grows_past_its_first_capacity() -> None:
    """max_len above the 64 steps allocated first (and no <end>): the history doubles, nothing lost."""
    table, alphas, features, att1 = random_case(3)
    table[:, -1] = -np.inf
    step = TableStep(table, alphas, features, att1)
    h0 = np.stack([np.arange(3) * 5.0, np.arange(3)], axis=1).astype(np.float32)
    got = beam_search(step, features, att1, h0, np.zeros((3, 1), np.float32), 7, 8, beam=3, max_len=150)
    want, _ = reference(TableStep(table, alphas, features, att1), h0, 7, 8, 3, 150)
    for g, (tokens, score, att, finished) in zip(got, want):
        assert len(g.tokens) == 150 and not g.finished
        assert g.tokens == tokens and g.score == score
        np.testing.assert_array_equal(g.alphas, att)


def test_beams_finishing_in_one_image_compact_the_features() -> None:
    """Image 0 ends early while image 2 goes on: the feature rows are compacted in place (checked by
    the step at every run) and the result equals the reference."""
    vocab = 6
    table = np.full((257, vocab), -3.0, np.float32)
    table[:, 0] = -0.5
    table[::2, -1] = -0.1  # <end> is the best word after every other prefix
    rng = np.random.default_rng(0)
    table += rng.normal(0, 0.2, table.shape).astype(np.float32)
    alphas = rng.random((257, PIXELS)).astype(np.float32)
    features = rng.normal(size=(3, PIXELS, 2)).astype(np.float32)
    att1 = rng.normal(size=(3, PIXELS, 3)).astype(np.float32)
    step = TableStep(table, alphas, features, att1)
    h0 = np.array([[0, 0], [1, 1], [4, 2]], np.float32)
    trace: list = []
    got = beam_search(step, features, att1, h0, np.zeros((3, 1), np.float32), 4, 5, beam=4, max_len=10, trace=trace)
    want, want_trace = reference(TableStep(table, alphas, features, att1), h0, 4, 5, 4, 10)
    assert [g.tokens for g in got] == [w[0] for w in want]
    assert len(set(step.rows_fed)) > 2  # the layout changed more than once
    assert [r for r, _ in trace] == [r for r, _ in want_trace]


@pytest.mark.parametrize("image", [0, 2])
@pytest.mark.parametrize("col", [0, 4, 8])
def test_nan_is_reported(image: int, col: int) -> None:
    """NaN in the row one image reads at step 1 (any column): a NumericsError, not a caption."""
    table, alphas, features, att1 = random_case(1)
    h0 = np.stack([np.arange(3) * 17.0, np.arange(3)], axis=1).astype(np.float32)
    start = 7
    table[(int(h0[image, 0]) * 31 + start + 7) % 257, col] = np.nan
    step = TableStep(table, alphas, features, att1)
    with pytest.raises(NumericsError, match="NaN"):
        beam_search(step, features, att1, h0, np.zeros((3, 1), np.float32), start, 8, beam=3, max_len=5)


# ===================================================================== top-k
@pytest.mark.parametrize("seed", range(30))
def test_topk_equals_a_stable_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    values = rng.choice(np.array([-np.inf, np.inf, -3.0, -1.0, -0.0, 0.0, 2.0, -1.5], np.float32), n)
    if seed % 2:
        values = values + rng.normal(size=n).astype(np.float32) * (rng.random(n) < 0.5)
    for k in range(1, n + 3):
        want = np.argsort(-values, kind="stable")[:k]
        assert _topk_desc(values, k).tolist() == want.tolist()
        picks, vals = _topk(values.copy(), k)
        assert picks == want.tolist()[:k] and vals == values[want].tolist()


@pytest.mark.parametrize("k", [1, 3, ARGMAX_TOPK + 2])
def test_topk_refuses_nan(k: int) -> None:
    for at in (0, 7, 39):
        x = np.zeros(40, np.float32)
        x[at] = np.nan
        with pytest.raises(NumericsError):
            _topk(x, k)


# ===================================================================== backends' reuse mode
def _step_graph(path: Path, vocab: int = 11, pixels: int = 5, enc: int = 6, att: int = 4, dim: int = 7) -> None:
    """A small graph with decoder_step's interface (names, dtypes, dynamic batch)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {"Wh": (dim, dim), "Wc": (enc, dim), "E": (vocab, dim), "Wo": (dim, vocab), "Wa": (dim, pixels)}
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in w.items()]
    nodes = [
        helper.make_node("ReduceMean", ["features"], ["ctx"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["h", "Wh"], ["a"]), helper.make_node("MatMul", ["ctx", "Wc"], ["b"]),
        helper.make_node("Gather", ["E", "prev_word"], ["e"], axis=0),
        helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Add", ["ab", "e"], ["abe"]),
        helper.make_node("Tanh", ["abe"], ["h_next"]), helper.make_node("Add", ["c", "h_next"], ["c_next"]),
        helper.make_node("MatMul", ["h_next", "Wo"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=1),
        helper.make_node("ReduceMean", ["att1"], ["am"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["h_next", "Wa"], ["al"]), helper.make_node("Add", ["am", "al"], ["att"]),
        helper.make_node("Softmax", ["att"], ["alpha"], axis=1),
    ]
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("features", f, ["batch", pixels, enc]),
              helper.make_tensor_value_info("att1", f, ["batch", pixels, att]),
              helper.make_tensor_value_info("prev_word", TensorProto.INT64, ["batch"]),
              helper.make_tensor_value_info("h", f, ["batch", dim]), helper.make_tensor_value_info("c", f, ["batch", dim])]
    outputs = [helper.make_tensor_value_info("log_probs", f, ["batch", vocab]),
               helper.make_tensor_value_info("h_next", f, ["batch", dim]),
               helper.make_tensor_value_info("c_next", f, ["batch", dim]),
               helper.make_tensor_value_info("alpha", f, ["batch", pixels])]
    model = helper.make_model(helper.make_graph(nodes, "step", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _specs(alpha_dims: list | None = None) -> tuple[list, list]:
    from mmedge.runtime.manifest import TensorSpec

    ins = [TensorSpec("features", ["batch", 5, 6], "float32"), TensorSpec("att1", ["batch", 5, 4], "float32"),
           TensorSpec("prev_word", ["batch"], "int64"), TensorSpec("h", ["batch", 7], "float32"),
           TensorSpec("c", ["batch", 7], "float32")]
    outs = [TensorSpec("log_probs", ["batch", 11], "float32"), TensorSpec("h_next", ["batch", 7], "float32"),
            TensorSpec("c_next", ["batch", 7], "float32"), TensorSpec("alpha", alpha_dims or ["batch", 5], "float32")]
    return ins, outs


@pytest.fixture(scope="module")
def step_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("step") / "decoder_step.onnx"
    _step_graph(path)
    return path


def _feeds(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"features": rng.normal(size=(n, 5, 6)).astype(np.float32),
            "att1": rng.normal(size=(n, 5, 4)).astype(np.float32),
            "prev_word": rng.integers(0, 11, n).astype(np.int64),
            "h": rng.normal(size=(n, 7)).astype(np.float32), "c": rng.normal(size=(n, 7)).astype(np.float32)}


BACKENDS = [pytest.param("onnxruntime", id="ort"), pytest.param("openvino", id="openvino")]


def _session(backend: str, path: Path, alpha_dims: list | None = None):  # noqa: ANN202
    pytest.importorskip(backend)
    from mmedge.runtime.session import open_session

    ins, outs = _specs(alpha_dims)
    return open_session(backend, path, ins, outs, threads=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha_dims", [None, ["batch", "pixels"], ["batch", 3]], ids=["dims", "unknown-dim",
                                                                                      "wrong-dim"])
def test_reuse_mode_gives_what_run_gives(backend: str, alpha_dims: list | None, step_graph: Path) -> None:
    """Same values as a plain run() for every batch size, bound or fed features, a feed overriding a
    binding; same buffers for the same shapes (ORT); an output whose size the manifest does not give
    (or gives wrong) is allocated by the runtime instead."""
    s = _session(backend, step_graph, alpha_dims)
    plain, reused = [], []
    cases = [(3, 0), (3, 1), (2, 2), (1, 3), (3, 4)]
    for n, seed in cases:
        plain.append({k: v.copy() for k, v in s.run(_feeds(n, seed)).items()})
    with s.reuse_outputs():
        for i, (n, seed) in enumerate(cases):
            feeds = _feeds(n, seed)
            if i % 2:
                s.bind("features", feeds.pop("features"))
                s.bind("att1", feeds.pop("att1"))
            out = s.run(feeds)
            reused.append({k: v.copy() for k, v in out.items()})
            if backend == "onnxruntime" and i == 1 and alpha_dims is None:
                again = s.run(feeds)
                assert all(np.shares_memory(again[k], out[k]) for k in out)  # written in place
            if i % 2:
                override = s.run({**feeds, "features": _feeds(n, 99)["features"]})
                assert not np.array_equal(override["log_probs"], reused[-1]["log_probs"])
                s.unbind("features")
                s.unbind("att1")
    for p, r in zip(plain, reused):
        assert p.keys() == r.keys()
        for k in p:
            np.testing.assert_array_equal(r[k], p[k])
    after = s.run(_feeds(3, 0))  # plain again: fresh arrays
    for k in after:
        np.testing.assert_array_equal(after[k], plain[0][k])
    feeds = _feeds(3, 0)
    with s.reuse_outputs():  # bound inside the mode, used after it
        s.bind("features", feeds.pop("features"))
        s.bind("att1", feeds.pop("att1"))
        s.run(_feeds(2, 7))  # every input fed: the request/binding holds other arrays now
    after = s.run(feeds)
    for k in after:
        np.testing.assert_array_equal(after[k], plain[0][k])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reuse_mode_reads_an_array_fed_again_anew(backend: str, step_graph: Path) -> None:
    """The same array object fed again after being rewritten in place (what beam search does with
    its h/c buffers): the backend must read the new contents, not a copy made at the first run."""
    s = _session(backend, step_graph)
    a, b = _feeds(3, 0), _feeds(3, 1)
    want = {k: v.copy() for k, v in s.run(b).items()}
    feeds = {k: v.copy() for k, v in a.items()}
    with s.reuse_outputs():
        first = {k: v.copy() for k, v in s.run(feeds).items()}
        for k in feeds:
            feeds[k][...] = b[k]
        second = s.run(feeds)
        for k in want:
            np.testing.assert_array_equal(second[k], want[k])
            assert not np.array_equal(first[k], want[k])


class _Plain:
    """A session without a reuse mode (what beam search falls back to)."""

    def __init__(self, session: object) -> None:
        self.session = session

    def bind(self, name: str, array: np.ndarray) -> None:
        self.session.bind(name, array)  # type: ignore[attr-defined]

    def unbind(self, name: str) -> None:
        self.session.unbind(name)  # type: ignore[attr-defined]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.session.run(feeds)  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", BACKENDS)
def test_beam_search_on_a_backend_in_reuse_mode_equals_plain_runs(backend: str, step_graph: Path) -> None:
    s = _session(backend, step_graph)
    f = _feeds(3, 5)
    args = (f["features"], f["att1"], f["h"], f["c"], 0, 10)
    for beam in (1, 3, 6):
        plain = beam_search(_Plain(s), *args, beam=beam, max_len=12)
        fast = beam_search(s, *args, beam=beam, max_len=12)
        for p, q in zip(plain, fast):
            assert p.tokens == q.tokens and p.score == q.score and p.finished == q.finished
            np.testing.assert_array_equal(p.alphas, q.alphas)


# ===================================================================== preprocessing
PARAMS = {"image_size": 32, "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def previous_normalize(rgb: np.ndarray, params: dict) -> np.ndarray:
    """The previous formula: float32 temporaries of the whole image and a transposing copy."""
    x = rgb.astype(np.float32) * np.float32(params.get("scale", 1.0 / 255.0))
    mean, std = np.asarray(params["mean"], np.float32), np.asarray(params["std"], np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def previous_preprocess(rgb: np.ndarray, params: dict) -> np.ndarray:
    """The previous preprocessing of a decoded RGB array: resize through PIL, then the formula."""
    size = int(params["image_size"])
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    return previous_normalize(rgb, params)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32),
                                                                                      b.view(np.uint32))


@pytest.mark.parametrize("params", [PARAMS, {"image_size": 8, "scale": 0.5, "mean": [1.0, -2.0, 0.1],
                                             "std": [3.0, 0.7, 1e-3]}, {"image_size": 5, "mean": [0, 0, 0],
                                                                        "std": [1, 1, 1]}])
def test_normalize_is_bit_identical(params: dict) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    rgb[0, :3] = [[0, 255, 128], [255, 0, 1], [7, 7, 7]]
    got = normalize(rgb, params)
    assert got.flags.c_contiguous and _same_bits(got, previous_normalize(rgb, params))
    every_level = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=1)[None]  # all 256 levels per channel
    assert _same_bits(normalize(every_level, params), previous_normalize(every_level, params))


@pytest.mark.parametrize("mode,ext", [("RGB", "png"), ("RGBA", "png"), ("L", "png"), ("P", "png"), ("I;16", "png"),
                                      ("RGB", "jpg"), ("RGB", "bmp"), ("LA", "png")])
@pytest.mark.parametrize("size", [(64, 48), (32, 32), (200, 150)])
def test_preprocess_from_a_path_gives_the_previous_pixels(mode: str, ext: str, size: tuple[int, int],
                                                          tmp_path: Path) -> None:
    rng = np.random.default_rng(size[0])
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (size[1], size[0])).astype(np.uint16))
    elif mode == "P":
        img = rgb.convert("P")
        img.info["transparency"] = 3
    else:
        img = rgb.convert(mode)
    path = tmp_path / f"x.{ext}"
    img.save(path, **({"transparency": 3} if mode == "P" else {}))
    want = previous_preprocess(read_image(path, min_size=int(PARAMS["image_size"])), PARAMS)
    assert _same_bits(preprocess_image(path, PARAMS), want)
    assert _same_bits(preprocess_image(str(path), PARAMS), want)


def test_preprocess_of_arrays_and_pil_images_is_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for shape in [(40, 30, 3), (40, 30), (40, 30, 4), (40, 30, 1), (32, 32, 3)]:
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        from mmedge.runtime.image import as_rgb_array

        want = previous_preprocess(as_rgb_array(arr), PARAMS)
        assert _same_bits(preprocess_image(arr, PARAMS), want)
        if len(shape) == 3 and shape[2] in (3, 4):
            pil = Image.fromarray(arr)
            assert _same_bits(preprocess_image(pil, PARAMS), want)
            assert pil.mode == ("RGB" if shape[2] == 3 else "RGBA")  # the caller's image is left alone


def test_big_jpeg_draft_path_is_unchanged(tmp_path: Path) -> None:
    """A JPEG >= 4x the model size is still decoded at reduced size, then resized as before."""
    rng = np.random.default_rng(5)
    path = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path, quality=90)
    want = previous_preprocess(read_image(path, min_size=32), PARAMS)
    assert read_image(path, min_size=32).shape[0] < 300  # draft mode decoded it smaller
    assert _same_bits(preprocess_image(path, PARAMS), want)
