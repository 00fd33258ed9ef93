"""`mmedge demo`'s own parts: per-row export times, progress lines, the refocus demo config."""

from __future__ import annotations

import time
from pathlib import Path

from mmedge import demo


def test_row_timer_gives_each_artifact_its_own_time(tmp_path: Path) -> None:
    lines: list[str] = []
    t = demo._RowTimer(tmp_path, lines.append)
    time.sleep(0.05)  # shared: model, reference outputs
    t.log("exporting m (demo) to onnx fp32 -> /tmp/mmedge-fp32-x/m-demo-onnx-fp32")  # a temp source: shared
    time.sleep(0.05)
    t.log("calibrating on the demo generator (32 samples, minmax)")
    a, b = tmp_path / "m-demo-onnx-int8", tmp_path / "m-demo-openvino-int8"
    t.log(f"quantizing m (demo) to onnx int8 -> {a}")
    time.sleep(0.02)
    t.log(f"quantizing m (demo) to openvino int8 -> {b}")
    time.sleep(0.12)
    t.stop()
    assert len(lines) == 4  # every line is passed on
    assert 0.09 <= t.shared < 0.3
    assert 0.015 <= t.own[a] < 0.1 and 0.1 <= t.own[b] < 0.4
    assert t.own[b] > t.own[a]


def test_progress_lines_carry_the_elapsed_time() -> None:
    lines: list[str] = []
    with demo.DemoProgress(3, lines.append) as p:
        p.note("step one")
        p.advance()
    assert lines and lines[0].startswith("[0:0") and lines[0].endswith("] step one")


def test_demo_builds_every_family_and_the_full_flag_swaps_refocus() -> None:
    from mmedge.models import zoo

    assert {m for m, _ in demo.MODELS} == set(zoo.names())
    assert dict(demo.MODELS)["refocus"] == "demo" and demo.FULL_CONFIGS == {"refocus": "full"}
    small, full = zoo.get("refocus").config("demo"), zoo.get("refocus").config("full")
    assert max(small.blur_sigmas) < max(full.blur_sigmas) and small.image_size < full.image_size
