"""benchmarks/_common.py: the set-up the benchmarks share (issue #17), with the words each benchmark
printed before it was shared: the load line, the usage errors, the failure and inconclusive lines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common as common  # noqa: E402


def test_load_line_words() -> None:
    assert common.load_line(None, 2, 0.25) == "Competing load: unknown (no /proc/stat)."
    assert common.load_line(0.1, 2, 0.25) == (
        "Competing load: other processes kept 0.10 of 2 CPUs busy on average during the timed runs.")
    assert common.load_line(1.5, 2, 0.25, " (figure: the busiest row)") == (
        "Competing load: other processes kept 1.50 of 2 CPUs busy on average during the timed runs - above the "
        "0.25 limit: the CPUs were shared with other work, latencies are inflated and the ratios distorted "
        "(oversubscribed multi-threaded PyTorch slows down far more than the runtimes, which inflates the "
        "speed-ups) (figure: the busiest row); rerun on an idle machine.")
    assert common.load_line(1.5, None, 0.25, why="LOADED RUN, figures inflated") == (  # overhead.py's
        "Competing load: other processes kept 1.50 CPUs busy on average during the timed runs - above the 0.25 "
        "limit: LOADED RUN, figures inflated; rerun on an idle machine.")


def test_options_and_minimums() -> None:
    p = common.parser("x.py", "what it does")
    p.add_argument("--repeat", type=int, default=5)
    common.add_common(p, threads="t", check="c", max_other_load="m", keep="k")
    args = p.parse_args(["--threads", "2", "--json", "o.json", "--keep", "d"])
    assert (args.threads, args.json, args.check, args.max_other_load, args.keep) == (2, Path("o.json"), False,
                                                                                      0.25, Path("d"))
    common.at_least(p, args, repeat=1, threads=1)
    with pytest.raises(SystemExit) as e:
        common.at_least(p, p.parse_args(["--repeat", "0"]), repeat=1, threads=1)
    assert e.value.code == 2
    bare = common.parser("y.py", "d")
    common.add_common(bare)
    assert vars(bare.parse_args([])) == {"json": None}  # only what a benchmark asks for


def test_at_least_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    p = common.parser("x.py", "d")
    with pytest.raises(SystemExit):
        common.at_least(p, argparse.Namespace(calib_size=3, threads=None), threads=1, calib_size=4)
    assert "error: --calib-size must be >= 4" in capsys.readouterr().err


def test_tokens() -> None:
    assert common.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert common.first_difference([1, 2], [1, 2, 3]) == 2
    assert common.agreement([1, 2, 3], [1, 5, 3]) == {"equal": False, "first_difference": 1, "same_positions": 2}
    assert common.agreement([1], [1]) == {"equal": True, "first_difference": None, "same_positions": 1}


def test_run_and_publish(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    args = argparse.Namespace(json=out, keep=None)
    logged: list[str] = []

    def render(res: dict) -> str:
        assert json.loads(out.read_text()) == res  # written before the table is rendered
        return "| table |"

    res = common.run_and_publish("bench", "", args, lambda a, wd: {"wd": wd.is_dir()},
                                 common.workdir(None, "bench_"), render, logged.append)
    assert res == {"wd": True} and capsys.readouterr().out == "| table |\n" and logged == [f"wrote {out}"]

    def mismatch(a: argparse.Namespace, wd: Path) -> dict:
        raise common.TokenMismatch("tokens differ at position 3")

    assert common.run_and_publish("bench", "eager and mmedge captions differ: ", args, mismatch,
                                  common.workdir(tmp_path / "keep", "bench_"), render, logged.append) is None
    assert capsys.readouterr().err == "bench: FAILED: eager and mmedge captions differ: tokens differ at position 3\n"
    assert (tmp_path / "keep").is_dir()  # --keep DIR is created and kept


def test_inconclusive_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert common.inconclusive("overhead", 1.234) == 3
    assert common.inconclusive("caption_latency", 1.234, 0.25) == 3
    assert capsys.readouterr().err.splitlines() == [
        "overhead: inconclusive: other processes kept 1.23 CPUs busy",
        "caption_latency: inconclusive: other processes kept 1.23 CPUs busy (limit 0.25); rerun on an idle machine"]
