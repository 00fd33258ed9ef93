"""Batched captioning: the live beams of a batch in one decoder_step call, images read and encoded
`batch_size` at a time, results equal to captioning each image alone; the automatic batch size."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.cli import run
from mmedge.errors import InputError
from mmedge.runtime import load
from mmedge.runtime.batching import (FALLBACK_DIMS, MAX_BATCH, MEMORY_FRACTION, MIN_BATCH, ROWS_PER_CORE,
                                     CaptionerSizes, Machine, auto_batch_size, available_memory, usable_cores)

BEAM, MAX_LEN = 3, 14


SEEDS = (18, 0, 33, 2, 1, 34, 3, 11, 4)  # on the golden captioner some end early (0-7 words), some run to MAX_LEN


def images(n: int) -> list[np.ndarray]:
    """Different scenes: noise of seeded brightness and contrast."""
    out = []
    for seed in SEEDS[:n]:
        rng = np.random.default_rng(seed)
        out.append(np.clip(rng.normal(rng.uniform(60, 200), rng.uniform(30, 90), (64, 64, 3)), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def cap(golden_onnx: dict[str, Path]):
    return load(golden_onnx["captioner"])


class Spy:
    """Records the leading dimension of every feed of one Session's runs."""

    def __init__(self, session, monkeypatch: pytest.MonkeyPatch, feed: str) -> None:
        self.rows: list[int] = []
        real = session.run

        def run_(feeds):
            self.rows.append(feeds[feed].shape[0])
            return real(feeds)

        monkeypatch.setattr(session, "run", run_)


def test_batched_equals_each_image_alone(cap) -> None:
    ims = images(9)
    batched = cap.caption(ims, beam=BEAM, max_len=MAX_LEN, batch_size=4)
    alone = [cap.caption([im], beam=BEAM, max_len=MAX_LEN, batch_size=1)[0] for im in ims]
    assert [r.image for r in batched] == [f"<array {i}>" for i in range(9)]
    assert len({tuple(r.tokens) for r in alone}) > 3  # the scenes really differ
    assert {r.finished for r in alone} == {True, False}  # beams end at different steps within a batch
    for b, a in zip(batched, alone):
        assert b.tokens == a.tokens and b.finished == a.finished and b.caption == a.caption
        assert b.score == pytest.approx(a.score, abs=1e-4)
        np.testing.assert_allclose(b.attention, a.attention, atol=1e-5)


def test_one_decoder_call_per_step_for_all_live_beams(cap, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step's call holds exactly the rows the images would have alone, summed: one call for all."""
    ims = images(7)
    steps = Spy(cap.sessions["decoder_step"], monkeypatch, "prev_word")
    expected = np.zeros(MAX_LEN, int)
    for im in ims:
        steps.rows.clear()
        cap.caption([im], beam=BEAM, max_len=MAX_LEN, batch_size=1)
        expected[:len(steps.rows)] += steps.rows
    steps.rows.clear()
    enc = Spy(cap.sessions["encoder"], monkeypatch, "image")
    cap.caption(ims, beam=BEAM, max_len=MAX_LEN, batch_size=7)
    assert enc.rows == [7]
    assert steps.rows == [int(n) for n in expected if n]
    assert steps.rows[0] == 7 and steps.rows[1] > BEAM  # step 1: one row per image; then several images' beams


def test_images_are_read_and_encoded_in_chunks_in_order(cap, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    ims = images(7)
    paths = []
    for i, im in enumerate(ims):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(im).save(paths[-1])
    whole = cap.caption(paths, beam=BEAM, max_len=MAX_LEN, batch_size=7)
    enc = Spy(cap.sessions["encoder"], monkeypatch, "image")
    chunked = cap.caption(paths, beam=BEAM, max_len=MAX_LEN, batch_size=3)
    assert enc.rows == [3, 3, 1]
    assert [r.image for r in chunked] == paths
    assert [r.tokens for r in chunked] == [r.tokens for r in whole]


def test_default_batch_size_is_the_automatic_one(cap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(cap), "auto_batch_size", lambda self, beam, max_len: 2)
    enc = Spy(cap.sessions["encoder"], monkeypatch, "image")
    cap.caption(images(5), beam=BEAM, max_len=3)
    assert enc.rows == [2, 2, 1]


@pytest.mark.parametrize("bad", [0, -2, 2.0, True, "4"])
def test_bad_batch_size_is_an_input_error(cap, bad) -> None:
    with pytest.raises(InputError, match="batch size must be"):
        cap.caption(images(1), batch_size=bad)


# ----------------------------------------------------------------------------- the automatic batch size
FULL = CaptionerSizes(side=256, pixels=196, encoder_dim=2048, attention_dim=512, decoder_dim=512, vocab=9490)


def test_sizes_come_from_the_manifest(cap) -> None:
    from mmedge.models.captioner import CONFIGS

    c = CONFIGS["tiny"]
    assert CaptionerSizes.from_manifest(cap.manifest) == CaptionerSizes(
        c.image_size, c.num_pixels, c.encoder_dim, c.attention_dim, c.decoder_dim, c.vocab_size)


def test_dynamic_dims_fall_back_to_the_full_captioners(cap) -> None:
    m = copy.deepcopy(cap.manifest)
    for g in m.graphs:
        for t in [*g.inputs, *g.outputs]:
            t.shape = [d if i == 0 else f"d{i}" for i, d in enumerate(t.shape)]
    m.vocabulary = None
    sizes = CaptionerSizes.from_manifest(m)
    assert sizes.side == m.preprocessing["image_size"] == 64  # from the preprocessing
    assert (sizes.pixels, sizes.encoder_dim, sizes.attention_dim, sizes.decoder_dim, sizes.vocab) == (
        FALLBACK_DIMS["pixels"], FALLBACK_DIMS["encoder_dim"], FALLBACK_DIMS["attention_dim"],
        FALLBACK_DIMS["decoder_dim"], FALLBACK_DIMS["vocab"])


def test_bytes_per_image_of_the_full_captioner() -> None:
    image, grid = 3 * 256 * 256 * 4, 196 * (2048 + 512) * 4
    row = (2 * 196 * 512 + 2048 + 9490 + 4 * 512 + 196) * 4
    assert FULL.bytes_per_image(3, 51) == image * 17 + grid + 3 * (2 * grid + row) + 2 * 3 * 51 * 196 * 4


def test_auto_batch_size_follows_cores_within_bounds() -> None:
    plenty = 1 << 40
    assert auto_batch_size(FULL, 3, 51, Machine(plenty, 2)) == -(-ROWS_PER_CORE * 2 // 3)
    assert auto_batch_size(FULL, 3, 51, Machine(plenty, 16)) == -(-ROWS_PER_CORE * 16 // 3)
    assert auto_batch_size(FULL, 20, 51, Machine(plenty, 1)) == MIN_BATCH
    assert auto_batch_size(FULL, 1, 51, Machine(plenty, 512)) == MAX_BATCH


def test_auto_batch_size_fits_the_memory() -> None:
    per = FULL.bytes_per_image(3, 51)
    assert auto_batch_size(FULL, 3, 51, Machine(int(5 * per / MEMORY_FRACTION), 64)) == 5
    assert auto_batch_size(FULL, 3, 51, Machine(per, 64)) == 1  # never 0, however little memory


def test_machine_readings(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 3000000 kB\n")
    cg = tmp_path / "cg"
    cg.mkdir()
    assert available_memory(tmp_path / "meminfo", cg) == 3000000 * 1024
    (cg / "memory.max").write_text("2000000000\n")
    (cg / "memory.current").write_text("500000000\n")
    assert available_memory(tmp_path / "meminfo", cg) == 1500000000  # a container's limit wins
    (cg / "memory.max").write_text("max\n")
    assert available_memory(tmp_path / "meminfo", cg) == 3000000 * 1024
    assert available_memory(tmp_path / "none", tmp_path / "none") > 0  # sysconf, else the fallback
    assert 1 <= usable_cores()


# ----------------------------------------------------------------------------- the command line
def test_cli_batch_size_streams_batches_with_equal_results(cap, golden_onnx: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from mmedge.runtime.pipelines import Captioner

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, im in enumerate(images(5)):
        Image.fromarray(im).save(folder / f"p{i}.png")
    art = str(golden_onnx["captioner"])
    sizes: list[int] = []
    real = Captioner.caption

    def spy(self, ims, *a, **k):
        sizes.append(len(ims))
        assert k["batch_size"] == 2
        return real(self, ims, *a, **k)

    monkeypatch.setattr(Captioner, "caption", spy)
    assert run(["caption", str(folder), "-a", art, "--batch-size", "2", "--max-len", "8", "--json"]) == 0
    small = json.loads(capsys.readouterr().out)["results"]
    assert sizes == [2, 2, 1]
    monkeypatch.setattr(Captioner, "caption", real)
    assert run(["caption", str(folder), "-a", art, "--batch-size", "5", "--max-len", "8", "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)["results"]
    assert [r["image"] for r in small] == sorted(str(p) for p in folder.iterdir())
    assert [(r["tokens"], r["finished"]) for r in small] == [(r["tokens"], r["finished"]) for r in whole]
    assert [r["score"] for r in small] == pytest.approx([r["score"] for r in whole], abs=1e-4)


def test_cli_batch_size_with_out_is_refused(golden_onnx: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(images(1)[0]).save(path)
    code = run(["caption", str(path), "-a", str(golden_onnx["captioner"]), "--batch-size", "2",
                "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code != 0 and "--batch-size is for a run without --out or --ray" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()
