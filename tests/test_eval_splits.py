"""`mmedge eval captioner` scores the held-out split and the out-of-style split by default, with the
object metrics; audio models keep their one split, and a split a model lacks is refused up front."""

from __future__ import annotations

import json

import pytest

from mmedge.cli import run

pytest.importorskip("torch")


def test_captioner_default_is_test_and_oos_with_object_metrics(capsys: pytest.CaptureFixture) -> None:
    assert run(["eval", "captioner", "--limit", "3", "--beam", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["details"]["split"] for r in doc["results"]] == ["test", "oos"]
    for r in doc["results"]:
        assert r["samples"] == 3
        assert {"bleu4", "exact_match", "object_accuracy", "hallucination_rate"} <= set(r["metrics"])
        assert 0.0 <= r["metrics"]["object_accuracy"] <= 1.0


def test_split_list_and_plain_output(capsys: pytest.CaptureFixture) -> None:
    assert run(["eval", "captioner", "--limit", "2", "--beam", "1", "--split", "oos"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and " oos beam 1, 2 samples: " in out[0] and "object_accuracy" in out[0]
    # 2 clean captions of 2: a hallucination rate of 0 that could be 66 % by chance
    assert out[1] == "  95 % intervals (Wilson): objects 34.2-100.0 %  hallucinations 0.0-65.8 %"


@pytest.mark.parametrize("args, message", [
    (["eval", "soundnet", "--split", "oos"], "unknown split 'oos'; expected one of train, val, test"),
    (["eval", "captioner", "--split", "test,dev"], "unknown split 'dev'; expected one of train, val, test, oos"),
])
def test_unknown_split_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_held_out_splits_grow_past_their_300_scenes() -> None:
    from mmedge.data import shapes

    for name in shapes.HELD_OUT:
        fixed, more = shapes.split(name), shapes.split(name, 1000)
        assert len(fixed) == 300 and more[:300] == fixed and more == list(range(fixed[0], fixed[0] + 1000))
    assert shapes.split("train", 40000) == shapes.split("train")  # never past the scenes trained on
    blocks = [range(first, first + shapes.SEED_BLOCK) for first, _ in [*shapes.SPLITS.values(),
                                                                      *shapes.OOS_SPLITS.values()]]
    assert all(a.stop <= b.start for a, b in zip(sorted(blocks, key=lambda r: r.start),
                                                 sorted(blocks, key=lambda r: r.start)[1:]))  # disjoint
    with pytest.raises(ValueError, match="1 to 1,000,000 scenes"):
        shapes.split("test", shapes.SEED_BLOCK + 1)


def test_both_eval_paths_score_more_than_300_scenes(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedge.calibration import eval_caption
    from mmedge.scale import evaluate

    monkeypatch.setattr(eval_caption.shapes_oos, "scene", lambda seed: seed)  # the seeds, not the pictures
    assert eval_caption.scenes("oos", 302)[-2:] == [3_000_300, 3_000_301]
    assert eval_caption.scenes("test", 2) == [2_000_000, 2_000_001] and len(eval_caption.scenes("val")) == 300

    class Seeds(Exception):
        pass

    def capture(job, seeds, **_run):
        raise Seeds(seeds)

    monkeypatch.setattr(evaluate, "run_job", capture)
    with pytest.raises(Seeds) as got:
        evaluate.eval_captioner(None, "artifact", "test", 1000)
    assert got.value.args[0] == list(range(2_000_000, 2_001_000))


def test_a_limit_past_the_seed_block_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert run(["eval", "captioner", "--limit", "1000001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--limit 1000001: a captioner split has at most 1,000,000 scenes" in err[0]
