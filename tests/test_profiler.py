"""`mmedge profile`: statistics on a fake clock, the JSON schema, compare mode, the captioner split, no torch."""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmedge.cli import app
from mmedge.errors import InputError, MissingDependencyError
from mmedge.runtime import profiler as P
from mmedge.runtime import session as S
from mmedge.runtime.manifest import MANIFEST, GraphEntry, Manifest, TensorSpec, hash_files
from mmedge.runtime.session import Session

# click < 8.2 (under typer < 0.16) mixes stderr into stdout unless told not to; later click has no switch
runner = CliRunner(mix_stderr=False) if "mix_stderr" in inspect.signature(CliRunner).parameters else CliRunner()
FAKE_BACKEND, FAKE_FORMAT = "fake-profiler", "fakefmt"
LOAD_S = 0.25  # what opening a fake session costs on the fake clock
PER_ROW_S = 0.001  # what one batch row costs per fake inference


# ============================================================================ fakes
class FakeClock(P.Clock):
    """Time moves only when a fake session says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeSession(Session):
    """A real Session (input checks and all) whose inference takes known fake time.

    `schedule`: the duration of each call in turn; without it, PER_ROW_S x batch rows.
    """

    backend = FAKE_BACKEND

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], clock: FakeClock,
                 schedule: list[float] | None = None, **options: object) -> None:
        super().__init__(path, inputs, outputs)
        self.clock, self.schedule, self.options = clock, list(schedule or []), options
        self.clock.advance(LOAD_S)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = next(iter(feeds.values())).shape[0]
        self.clock.advance(self.schedule.pop(0) if self.schedule else PER_ROW_S * n)
        return {o.name: np.zeros([n] + [d if isinstance(d, int) else 1 for d in o.shape[1:]], np.float32)
                for o in self.outputs}


WAVE_IN = [TensorSpec("waveform", ["batch", "samples"], "float32")]
EMB_OUT = [TensorSpec("embedding", ["batch", 4], "float32")]


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Register a backend 'fake-profiler' for format 'fakefmt' whose sessions run on a FakeClock."""
    clock = FakeClock()
    opened: list[FakeSession] = []
    module = types.ModuleType("mmedge_test_fake_profiler_backend")

    def create_session(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], **options: object):
        s = FakeSession(path, inputs, outputs, clock, **options)
        opened.append(s)
        return s

    module.create_session = create_session  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(S.BACKENDS._entries, FAKE_BACKEND,  # removed again after the test
                        S.BackendInfo(FAKE_BACKEND, module.__name__, "numpy", "dev", (FAKE_FORMAT,)))
    clock.opened = opened  # type: ignore[attr-defined]
    return clock


def fake_artifact(root: Path) -> Path:
    """An audio artifact of the fake format: one graph 'model', waveform -> embedding, 1,000-byte file."""
    root.mkdir(parents=True)
    (root / "model.fake").write_bytes(b"x" * 1000)
    np.savez(root / "test_vectors.npz", **{"model.waveform": np.ones((2, 50), np.float32),
                                           "model.embedding": np.zeros((2, 4), np.float32)})
    m = Manifest(model="fake-audio", config="tiny", pipeline="audio", format=FAKE_FORMAT, precision="fp32",
                 graphs=[GraphEntry("model", "model.fake", WAVE_IN, EMB_OUT)],
                 preprocessing={"kind": "waveform", "sample_rate": 100}, extra={"test_vectors": "test_vectors.npz"})
    m.files = hash_files(root)
    (root / MANIFEST).write_text(m.to_json())
    return root


def fake_profile(tmp_path: Path, clock: FakeClock, **kw: object) -> P.ProfileResult:
    art = fake_artifact(tmp_path / "fake-audio")
    opts = P.ProfileOptions(**{"runs": 5, "warmup": 2, "batch": (1, 4), **kw})  # type: ignore[arg-type]
    return P.profile([art], opts, clock=clock)


# ============================================================================ arithmetic
def test_stats_on_a_fake_session_are_exact() -> None:
    clock = FakeClock()
    # first call 0.5 s, two warm-up calls of 9 s (must not count), then 5 timed calls, unsorted
    timed_s = [0.030, 0.100, 0.010, 0.040, 0.020]
    sess = FakeSession(Path("m.fake"), WAVE_IN, EMB_OUT, clock, schedule=[0.5, 9.0, 9.0, *timed_s])
    feeds = {"waveform": np.zeros((4, 8), np.float32)}
    timed = P.timed_runs(lambda: sess.run(feeds), runs=5, warmup=2, clock=clock)
    info = P.RowInfo("fake", "fake", "tiny", "audio", FAKE_FORMAT, "fp32", FAKE_BACKEND)
    row = P.make_row(info, "graph", "model", 4, None, timed, load_s=0.25, size_bytes=1000, items=4,
                     unit="items/s", noise_threshold=0.2)
    approx = lambda x: pytest.approx(x, rel=1e-12, abs=1e-9)  # noqa: E731 (float sums of the fake clock)
    lat = row.latency
    assert lat.n == 5
    assert row.first_ms == approx(500.0) and row.load_ms == approx(250.0)
    assert row.samples_ms == [approx(v * 1e3) for v in timed_s]  # in call order
    assert (lat.min, lat.max, lat.mean) == (approx(10.0), approx(100.0), approx(40.0))
    # linear interpolation on the sorted [10, 20, 30, 40, 100]: h = (n - 1) q / 100
    assert lat.p50 == approx(30.0)  # h = 2
    assert lat.p10 == approx(14.0)  # h = 0.4: 10 + 0.4 x 10
    assert lat.p90 == approx(76.0)  # h = 3.6: 40 + 0.6 x 60
    assert lat.p99 == approx(97.6)  # h = 3.96: 40 + 0.96 x 60
    assert lat.std == approx(math.sqrt(5000.0 / 4))  # sample std: squared deviations 900+400+100+0+3600
    assert row.throughput == approx(4 / 0.030)  # batch / p50
    assert lat.spread_minmax == approx(90.0 / 30.0)
    assert lat.spread_p10_p90 == approx(62.0 / 30.0)
    assert row.noisy


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 101])
def test_percentile_is_numpys_linear_method(n: int) -> None:
    xs = np.random.default_rng(n).lognormal(size=n)
    for q in (0, 1, 10, 25, 50, 75, 90, 99, 99.9, 100):
        # numpy's default is method="linear" (a keyword numpy < 1.22 does not take: Python 3.8 floors)
        assert P.percentile(list(xs), q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12)
    with pytest.raises(ValueError):
        P.percentile([], 50)


def test_single_run_has_zero_std_and_steady_rows_are_not_noisy() -> None:
    s = P.LatencyStats.from_seconds([0.002])
    assert (s.n, s.min, s.p50, s.p99, s.max, s.mean, s.std) == (1, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0)
    assert s.spread_minmax == 0.0 and s.spread_p10_p90 == 0.0


def test_batch_feeds_tile_the_vectors_and_respect_fixed_axes() -> None:
    g = GraphEntry("model", "m", WAVE_IN, EMB_OUT)
    vec = {"model.waveform": np.arange(2 * 3, dtype=np.float32).reshape(2, 3)}
    feeds = P.batch_feeds(vec, g, 5)
    assert feeds is not None and feeds["waveform"].shape == (5, 3)
    assert feeds["waveform"][:, 0].tolist() == [0, 3, 0, 3, 0]  # rows 0, 1, 0, 1, 0
    fixed = GraphEntry("model", "m", [TensorSpec("waveform", [2, "samples"], "float32")], EMB_OUT)
    assert P.batch_feeds(vec, fixed, 2) is not None and P.batch_feeds(vec, fixed, 4) is None


# ============================================================================ a whole profile on the fake clock
def test_profile_of_a_fake_artifact(tmp_path: Path, fake_backend: FakeClock) -> None:
    res = fake_profile(tmp_path, fake_backend, threads=2)
    rows = {r.id: r for r in res.rows}
    assert list(rows) == ["fake-audio-tiny-fakefmt-fp32/model/b1", "fake-audio-tiny-fakefmt-fp32/model/b4",
                          "fake-audio-tiny-fakefmt-fp32/end-to-end/b1"]
    for b in (1, 4):
        r = rows[f"fake-audio-tiny-fakefmt-fp32/model/b{b}"]
        assert r.kind == "graph" and r.size_bytes == 1000 and r.load_ms == pytest.approx(250.0)
        assert r.first_ms == pytest.approx(b) and r.latency.p50 == pytest.approx(b)
        assert r.latency.std == pytest.approx(0.0, abs=1e-9) and not r.noisy
        assert r.throughput == pytest.approx(1000.0)  # PER_ROW_S = 1 ms per row
    e2e = rows["fake-audio-tiny-fakefmt-fp32/end-to-end/b1"]
    assert e2e.kind == "e2e" and e2e.latency.mean == pytest.approx(1.0) and e2e.throughput_unit == "clips/s"
    assert e2e.stages["network"]["mean_ms"] == pytest.approx(1.0)
    assert e2e.stages["frontend"]["mean_ms"] == pytest.approx(0.0) and e2e.stages["other"]["mean_ms"] == 0.0
    assert e2e.extra["audio_seconds"] == 2.0 and e2e.extra["realtime_factor"] == pytest.approx(2000.0)
    assert res.artifacts[0].load_ms == pytest.approx(250.0)  # the pipeline's load(): one graph
    assert all(s.options == {"threads": 2} for s in fake_backend.opened)  # --threads reaches the backend
    assert not any(w.startswith("noise") for w in res.warnings)


def test_eval_needs_a_demo_model(tmp_path: Path, fake_backend: FakeClock) -> None:
    res = fake_profile(tmp_path, fake_backend, eval=True)
    assert "demo data" in res.artifacts[0].eval_error and res.artifacts[0].eval is None
    assert any("no task metric" in w for w in res.warnings)
    assert all(r.metrics is None for r in res.rows)


def test_noisy_rows_give_a_warning(tmp_path: Path, fake_backend: FakeClock) -> None:
    res = fake_profile(tmp_path, fake_backend)
    res.rows[0].latency = P.LatencyStats.from_seconds([0.001, 0.001, 0.002, 0.004, 0.001])
    res.rows[0].noisy = res.rows[0].latency.spread_p10_p90 > 0.2
    P.finish(res, 0.2)
    (w,) = [w for w in res.warnings if w.startswith("noise")]
    assert "1 of 3 rows are too noisy" in w and res.rows[0].id in w and "--runs" in w


def test_bad_options_are_refused(tmp_path: Path) -> None:
    for kw in ({"runs": 0}, {"warmup": -1}, {"batch": (0,)}, {"beam": ()}, {"threads": 0}, {"backend": "nope"},
               {"noise_threshold": 0}):
        with pytest.raises(InputError):
            P.profile([tmp_path], P.ProfileOptions(**kw))  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU pinning needs Linux")
def test_pinning_restricts_and_restores_affinity() -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    with P.pinned([cpu]) as cpus:
        assert cpus == [cpu] and os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(InputError, match="--pin"):
        with P.pinned([max(before) + 4096]):
            pass


# ============================================================================ JSON schema
def test_json_schema(tmp_path: Path, fake_backend: FakeClock) -> None:
    doc = json.loads(json.dumps(fake_profile(tmp_path, fake_backend).to_json()))  # survives a JSON round trip
    assert P.validate_json(doc) is doc
    assert doc["schema"] == "mmedge.profile" and doc["schema_version"] == 1
    assert set(doc) == set(P.SCHEMA_TOP)
    assert set(P.SCHEMA_MACHINE) <= set(doc["machine"])
    assert isinstance(doc["machine"]["backends"], dict) and "onnxruntime" in doc["machine"]["backends"]
    assert doc["options"]["batch"] == [1, 4] and doc["options"]["runs"] == 5
    assert set(doc["environment"]) == {"other_cpu_load", "pinned_cpus", "gc_disabled", "tegrastats"}
    assert doc["environment"]["tegrastats"] is None or shutil.which("tegrastats")  # none here: not a Jetson
    assert {"l4t", "power_mode", "power_mode_id", "jetson_clocks"} <= set(doc["machine"])
    (art,) = doc["artifacts"]
    assert set(art) == set(P.SCHEMA_ARTIFACT) and art["size_bytes"] > art["model_bytes"] == 1000
    for row in doc["rows"]:
        assert set(row) == set(P.SCHEMA_ROW)
        assert set(row["latency_ms"]) == set(P.SCHEMA_LATENCY) and row["latency_ms"]["n"] == 5
        assert len(row["samples_ms"]) == 5 and all(isinstance(v, float) for v in row["samples_ms"])
        assert row["id"].startswith(row["artifact"] + "/" + row["graph"] + "/b")
        assert isinstance(row["memory"]["peak_rss_mb"], float) or sys.platform == "win32"
    e2e = doc["rows"][-1]
    assert e2e["kind"] == "e2e" and e2e["beam"] is None and set(e2e["stages"]) == {"frontend", "network", "other"}
    assert set(e2e["stages"]["network"]) == {"mean_ms", "p50_ms", "share"}
    # a profile read back renders the same
    again = P.result_from_json(doc)
    assert json.loads(json.dumps(again.to_json()))["rows"] == doc["rows"]


def test_json_schema_violations_are_named(tmp_path: Path, fake_backend: FakeClock) -> None:
    doc = json.loads(json.dumps(fake_profile(tmp_path, fake_backend).to_json()))
    for mutate, msg in [(lambda d: d.pop("rows"), "no 'rows'"),
                        (lambda d: d.update(schema_version=2), "schema_version 2"),
                        (lambda d: d.update(schema="other"), "not an mmedge profile"),
                        (lambda d: d["rows"][0]["latency_ms"].pop("p50"), r"rows\[0\].latency_ms has no 'p50'"),
                        (lambda d: d["rows"][1].update(batch="4"), r"rows\[1\].batch has type str")]:
        bad = copy.deepcopy(doc)
        mutate(bad)
        with pytest.raises(InputError, match=msg):
            P.validate_json(bad, "x.json")


# ============================================================================ compare
def _docs(tmp_path: Path, clock: FakeClock) -> dict:
    return json.loads(json.dumps(fake_profile(tmp_path, clock).to_json()))


def _set_p50(doc: dict, rid: str, p50: float) -> None:
    (row,) = [r for r in doc["rows"] if r["id"] == rid]
    row["latency_ms"]["p50"] = p50


def test_compare_statuses_and_exit_codes(tmp_path: Path, fake_backend: FakeClock) -> None:
    old = _docs(tmp_path, fake_backend)
    b1, b4, e2e = (r["id"] for r in old["rows"])
    new = copy.deepcopy(old)
    rep = P.compare(old, new, 0.10)
    assert rep.exit_code == 0 and {c.status for c in rep.changes} == {"same"}
    assert rep.summary() == "no regression beyond +10% p50 (3 rows compared)"

    _set_p50(new, b1, 1.25)  # 1 ms -> 1.25 ms: +25%
    _set_p50(new, b4, 4.2)  # +5%: within the threshold
    _set_p50(new, e2e, 0.7)  # -30%
    rep = P.compare(old, new, 0.10)
    status = {c.id: c.status for c in rep.changes}
    assert status == {b1: "regression", b4: "same", e2e: "improvement"}
    assert rep.exit_code == 1 and [c.id for c in rep.regressions] == [b1]
    assert rep.changes[0].change == pytest.approx(0.25)
    assert rep.summary() == f"1 regression beyond +10% p50 (worst {b1}: +25.0%)"
    assert P.compare(old, new, 0.30).exit_code == 0  # a looser threshold passes

    new["rows"] = new["rows"][1:] + [{**new["rows"][0], "id": "other/model/b1"}]
    rep = P.compare(old, new, 0.10)
    assert {c.id: c.status for c in rep.changes}[b1] == "removed"
    assert {c.id: c.status for c in rep.changes}["other/model/b1"] == "added"
    assert rep.exit_code == 0
    with pytest.raises(InputError, match="threshold"):
        P.compare(old, new, 0.0)
    dup = copy.deepcopy(old)
    dup["rows"].append(dup["rows"][0])
    with pytest.raises(InputError, match="appears twice"):
        P.compare(old, dup, 0.1)


def test_compare_command(tmp_path: Path, fake_backend: FakeClock) -> None:
    old = _docs(tmp_path, fake_backend)
    new = copy.deepcopy(old)
    rid = old["rows"][0]["id"]
    _set_p50(new, rid, 1.5)
    new["machine"]["cpu"] = "another CPU"
    po, pn = tmp_path / "old.json", tmp_path / "new.json"
    po.write_text(json.dumps(old))
    pn.write_text(json.dumps(new))

    res = runner.invoke(app, ["profile", "--compare", str(po), str(pn)])
    assert res.exit_code == 1
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(rid))
    assert "+50.0%" in line and "REGRESSION" in line
    assert "note: different CPUs" in res.stdout
    assert res.stderr.strip() == f"mmedge: 1 regression beyond +10% p50 (worst {rid}: +50.0%)"

    res = runner.invoke(app, ["profile", "--compare", str(po), str(pn), "--threshold", "0.6"])
    assert res.exit_code == 0 and "no regression beyond +60% p50" in res.stdout

    res = runner.invoke(app, ["profile", "--compare", str(po), str(pn), "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and doc["exit_code"] == 1 and doc["regressions"] == 1
    assert doc["changes"][0] == {"id": rid, "old_p50_ms": 1.0, "new_p50_ms": 1.5, "change": 0.5,
                                 "status": "regression", "noisy": False}

    (tmp_path / "bad.json").write_text("{}")
    res = runner.invoke(app, ["profile", "--compare", str(po), str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and res.stderr.startswith("mmedge: error: ") and "not an mmedge profile" in res.stderr
    res = runner.invoke(app, ["profile", "--compare", str(po), str(pn), "--artifact", str(tmp_path)])
    assert res.exit_code == 2 and "no --artifact" in res.stderr
    res = runner.invoke(app, ["profile"])
    assert res.exit_code == 2 and "--artifact DIR" in res.stderr


# ============================================================================ a real exported captioner
@pytest.fixture(scope="module")
def captioner(cli_onnx: dict[str, Path]) -> Path:
    pytest.importorskip("onnxruntime")
    return cli_onnx["captioner"]


def test_captioner_end_to_end_split_adds_up(captioner: Path) -> None:
    opts = P.ProfileOptions(runs=3, warmup=1, batch=(1, 2), beam=(1, 3), max_len=12, image_hw=(96, 128))
    res = P.profile([captioner], opts)
    graphs = [(r.graph, r.batch) for r in res.rows if r.kind == "graph"]
    assert graphs == [(g, b) for g in ("encoder", "decoder_init", "decoder_step") for b in (1, 2)]
    e2e = [r for r in res.rows if r.kind == "e2e"]
    assert [(r.batch, r.beam) for r in e2e] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    for r in e2e:
        stages = {k: v["mean_ms"] for k, v in r.stages.items()}
        assert list(stages) == ["preprocess", "encoder", "decoder_init", "decoder_steps", "beam_bookkeeping", "other"]
        parts = sum(v for k, v in stages.items() if k != "other")
        # unattributed time ("other": Python glue) stays small; 25% leaves room for a loaded CI machine
        assert parts == pytest.approx(r.latency.mean, rel=0.25), (r.id, stages, r.latency.mean)
        assert all(v > 0 for k, v in stages.items() if k != "other"), stages
        assert 1 <= r.extra["steps"] <= 12
        assert r.extra["per_step_ms"] * r.extra["steps"] == pytest.approx(stages["decoder_steps"], rel=1e-6)
        assert r.extra["tokens"] >= r.batch and r.extra["tokens_per_s"] > 0
        assert r.throughput_unit == "images/s" and r.size_bytes == res.artifacts[0].model_bytes


def test_instrumentation_is_removed_after_a_row(captioner: Path) -> None:
    from mmedge.runtime import load

    pipe = load(captioner)
    sessions = dict(pipe.sessions)
    info = P.RowInfo("c", "captioner", "tiny", "captioner", "onnx", "fp32", "onnxruntime")
    P.profile_captioner(pipe, info, P.ProfileOptions(runs=1, warmup=0, max_len=3, image_hw=(64, 64)), 0.0, 0)
    assert pipe.sessions == sessions and "preprocess" not in vars(pipe)
    assert pipe.caption([np.zeros((64, 64, 3), np.uint8)], beam=2, max_len=3)[0].tokens is not None


def test_cli_profile_outputs(captioner: Path, tmp_path: Path) -> None:
    base = ["profile", "-a", str(captioner), "--runs", "2", "--warmup", "0", "--max-len", "4"]
    res = runner.invoke(app, base + ["--json"])
    assert res.exit_code == 0, res.stderr
    doc = P.validate_json(json.loads(res.stdout))
    assert [r["graph"] for r in doc["rows"]] == ["encoder", "decoder_init", "decoder_step", "end-to-end"]
    res = runner.invoke(app, base + ["--csv"])
    lines = res.stdout.splitlines()
    assert res.exit_code == 0 and lines[0].startswith("id,artifact,model,") and len(lines) == 5
    res = runner.invoke(app, base + ["--markdown"])
    assert res.exit_code == 0 and "| artifact | graph | batch |" in res.stdout and "| preprocess |" in res.stdout
    res = runner.invoke(app, base)
    assert res.exit_code == 0 and "decoder_step" in res.stdout
    res = runner.invoke(app, base + ["--json", "--csv"])
    assert res.exit_code == 2 and "one of --json" in res.stderr
    res = runner.invoke(app, base + ["--batch", "1,x"])
    assert res.exit_code == 2 and "--batch" in res.stderr


def test_plot_writes_a_png(captioner: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    res = runner.invoke(app, ["profile", "-a", str(captioner), "--runs", "3", "--warmup", "0", "--max-len", "4",
                              "--plot", str(out)])
    assert res.exit_code == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 fake_backend: FakeClock) -> None:
    from mmedge.runtime import profile_render

    res = fake_profile(tmp_path, fake_backend)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmedge\[plot\]'"):
        profile_render.plot(res, tmp_path / "x.png")


def test_profiler_and_cli_run_without_torch(captioner: Path, tmp_path: Path) -> None:
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "import mmedge.runtime.profiler, mmedge.runtime.profile_render\n"
        "from mmedge.cli import main\n"
        f"sys.argv = ['mmedge', 'profile', '-a', {str(captioner)!r}, '--runs', '2', '--warmup', '0',"
        " '--max-len', '3', '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows"][-1]["graph"] == "end-to-end"


def test_eval_puts_the_task_metric_beside_the_speed(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from mmedge.export.registry import ExportRequest, export
    from mmedge.runtime import profile_render

    (art,) = export(ExportRequest("soundnet", ["onnx"], config="demo", out=tmp_path)).artifacts
    from mmedge.calibration.evaluate import evaluator

    res = P.profile([art], P.ProfileOptions(runs=2, warmup=0, eval=True, eval_limit=6, evaluator=evaluator))
    (a,) = res.artifacts
    assert a.eval_error is None and a.eval[0]["samples"] == 6 and 0.0 <= a.eval[0]["metrics"]["top1"] <= 1.0
    e2e = [r for r in res.rows if r.kind == "e2e"]
    assert e2e and all(r.metrics == a.eval[0]["metrics"] for r in e2e)
    assert f"top1 {a.eval[0]['metrics']['top1']:.3f}" in profile_render.summary_table(res).markdown()
