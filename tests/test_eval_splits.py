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
    assert out[1] == "  95 % intervals (Wilson): object_accuracy 0.3424-1.0000  hallucination_rate 0.0000-0.6576"


@pytest.mark.parametrize("args, message", [
    (["eval", "soundnet", "--split", "oos"], "unknown split 'oos'; expected one of train, val, test"),
    (["eval", "captioner", "--split", "test,dev"], "unknown split 'dev'; expected one of train, val, test, oos"),
])
def test_unknown_split_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
