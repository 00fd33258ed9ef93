"""benchmarks/caption_targets.py: the issue's targets as caption_latency.py reports them. The verdicts
follow the figures (and the loaded flags), the floors are the stated arithmetic on the manifest's
costs, and the cold start really runs without torch. No timing is asserted."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import caption_targets as ct  # noqa: E402

from mmedge.runtime.peaks import MachinePeaks, Peak  # noqa: E402


def _results(**over: Any) -> dict[str, Any]:
    """A caption_latency result with just what `targets()` reads."""
    build = {"name": "mmedge", "label": "fp32", "summary": {"median_s": 0.4}, "speedup_median": 9.0,
             "e2e_over_floor": 1.2, "floor": {"total_s": 0.4 / 1.2, "note": None,
                                               "terms_s": {"encoder": 0.2, "decoder_init": 0.01, "decoder_steps": 0.1}}}
    res = {"max_other_load": 0.25, "valid": True, "extras_other_cpu_load": 0.0, "steps": 50,
           "mmedge": {"rest_median_s": 0.005, "runs": [{"rest": 0.004}, {"rest": 0.006}]},
           "builds": [build], "fastest": "mmedge", "speedup_median": 9.0, "speedup_min": 8.0, "target_speedup": 6.0,
           "bookkeeping": {"per_step_min_ms": 0.06, "per_step_median_ms": 0.07, "replays": 30},
           "machine": {"cpu_features": {"family": "x86-avx2"}},
           "cold_start": {"first_caption_s": 0.9, "other_cpu_load": 0.0, "interpreter_s": 0.1, "import_s": 0.1,
                          "load_s": 0.3, "caption_s": 0.4, "torch_imported": False, "peak_rss_bytes": 400e6,
                          "model_bytes": 250e6}}
    res.update(over)
    return res


def _by_key(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in ct.targets(res)}


def test_every_target_gets_a_row_and_its_verdict() -> None:
    rows = _by_key(_results())
    assert list(rows) == ["speedup", "rest", "bookkeeping", "floor", "family_speedup", "cold_start", "cold_start_rss"]
    assert rows["speedup"]["met"] is True and rows["rest"]["met"] is True and rows["floor"]["met"] is True
    assert rows["bookkeeping"]["met"] is False and math.isclose(rows["bookkeeping"]["measured"], 0.06)
    assert rows["cold_start"]["met"] is True
    assert rows["cold_start_rss"]["target"] == pytest.approx(350.0) and rows["cold_start_rss"]["met"] is False
    fam = rows["family_speedup"]
    assert fam["target"] is None and fam["met"] is None and fam["note"] == "no target set for x86-avx2"
    assert ct.verdict(fam) == "no target set for x86-avx2"
    assert not any(r["loaded"] for r in rows.values())


def test_family_targets_and_loaded_rows() -> None:
    rows = _by_key(_results(machine={"cpu_features": {"family": "x86-amx"}}, valid=False, extras_other_cpu_load=1.0))
    assert rows["family_speedup"]["target"] == 8.0 and rows["family_speedup"]["met"] is True
    assert rows["speedup"]["loaded"] and rows["rest"]["loaded"] and rows["bookkeeping"]["loaded"]
    assert rows["floor"]["loaded"] and not rows["cold_start"]["loaded"] and not rows["cold_start_rss"]["loaded"]
    assert ct.verdict(rows["speedup"]) == "met (loaded run: inconclusive)"
    assert _by_key(_results(machine={"cpu_features": {"family": "x86-avx512-bf16"}}))["family_speedup"]["met"] is False


def test_skipped_or_failed_cold_start_is_said() -> None:
    rows = _by_key(_results(cold_start=None))
    assert rows["cold_start"]["met"] is None and "skipped" in ct.verdict(rows["cold_start"])
    rows = _by_key(_results(cold_start={"error": "no result (exit 1): boom"}))
    assert ct.verdict(rows["cold_start_rss"]) == "failed: no result (exit 1): boom"
    text = "\n".join(ct.render_targets({**_results(cold_start=None), "targets": list(rows.values())}))
    assert "failed: no result (exit 1): boom" in text


def test_builds_spinning_sets_and_threads(golden_onnx: dict[str, Path]) -> None:
    art = golden_onnx["captioner"]
    builds = ct.make_builds(art, [art], 2, "both")
    assert [(b.name, b.options, b.exact) for b in builds] == [
        ("mmedge", {"threads": 2, "spinning": "on"}, True), ("mmedge_spin_off", {"threads": 2, "spinning": "off"}, True),
        ("artifact_1", {"threads": 2, "spinning": "on"}, False)]
    builds = ct.make_builds(art, [], None, "all")
    assert [(b.name, b.options) for b in builds] == [
        ("mmedge", {"spinning": "auto"}), ("mmedge_spin_on", {"spinning": "on"}), ("mmedge_spin_off", {"spinning": "off"})]
    assert ct.check_same_model(art, "tiny") is None and "not captioner full" in ct.check_same_model(art, "full")


def test_floor_is_the_stated_arithmetic(golden_onnx: dict[str, Path]) -> None:
    from mmedge.runtime.manifest import read_manifest

    art = golden_onnx["captioner"]
    costs = read_manifest(art).costs
    assert {"encoder", "decoder_init", "decoder_step"} <= set(costs)
    peaks = MachinePeaks("onnxruntime", None, {"fp32": Peak(1e11, "FLOP/s"), "int8": Peak(4e11, "FLOP/s")},
                         {"weights_read": Peak(1e10, "B/s"), "stream_add": Peak(5e9, "B/s")})
    build = ct.Build("mmedge", "fp32", art, "onnxruntime")
    fl = ct.floor(build, peaks, 7)
    enc, init, step = costs["encoder"], costs["decoder_init"], costs["decoder_step"]
    want = {"encoder": enc["flops"] / 1e11,
            "decoder_init": max(init["flops"] / 1e11, init["weight_bytes"] / 1e10),
            "decoder_steps": 7 * step["weight_bytes"] / 1e10}
    assert fl["terms_s"] == pytest.approx(want) and fl["total_s"] == pytest.approx(sum(want.values()))
    assert fl["precision"] == {"encoder": "fp32", "decoder": "fp32"} and fl["note"] is None
    no_bw = MachinePeaks("onnxruntime", None, {"fp32": Peak(1e11, "FLOP/s")}, {"stream_add": Peak(None, "B/s", "",
                                                                                                  "n/a: nope")})
    fl = ct.floor(build, no_bw, 7)
    assert fl["total_s"] is None and fl["terms_s"]["encoder"] == pytest.approx(want["encoder"])
    assert "no bandwidth (n/a: nope)" in fl["note"]


def test_cold_start_code_refuses_torch() -> None:
    code = ct.COLD_START_CODE.split("import json")[0] + "import torch\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "blocked: the runtime must not need torch" in p.stderr, p.stderr


def test_cold_start_captions_without_torch(golden_onnx: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    from mmedge.runtime import load
    from mmedge.runtime.manifest import read_manifest

    art = golden_onnx["captioner"]
    img = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(img)
    got = ct.cold_start(art, img, {"threads": 1}, 3, 5)
    assert "error" not in got, got
    assert got["tokens"] == list(load(art, threads=1).caption([str(img)], beam=3, max_len=5)[0].tokens)
    assert got["torch_imported"] is False and got["peak_rss_bytes"] > 0 and got["first_caption_s"] > 0
    assert got["model_bytes"] == sum((art / g.file).stat().st_size for g in read_manifest(art).graphs)
    bad = ct.cold_start(art, img, {"spinning": "sideways"}, 3, 5)
    assert bad["error"].startswith("no result (exit 1)") and "spinning" in bad["error"]


def test_the_cold_start_row_names_the_first_run_that_filled_the_cache() -> None:
    cold = {**_results()["cold_start"], "first_run": {"first_caption_s": 1.6, "peak_rss_bytes": 650e6}}
    row = _by_key(_results(cold_start=cold))["cold_start"]
    assert row["met"] is True and "caches the graphs: 1.60 s, peak 650 MB" in row["detail"]
    assert "first run" not in _by_key(_results())["cold_start"]["detail"]
