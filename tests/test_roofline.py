"""Roofline: graph costs counted exactly, efficiency arithmetic, peak microbenchmarks, the profile section."""

from __future__ import annotations

import copy
import inspect
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmedge.cli import app
from mmedge.errors import ArtifactError, InputError
from mmedge.runtime import profiler as P
from mmedge.runtime import roofline as R
from mmedge.runtime.graph_cost import GraphCost
from mmedge.runtime.manifest import MANIFEST, GraphEntry, Manifest, TensorSpec, read_manifest
from mmedge.runtime.peaks import MachinePeaks, Peak, PeakOptions, measure_peaks

runner = CliRunner(mix_stderr=False) if "mix_stderr" in inspect.signature(CliRunner).parameters else CliRunner()
SMALL = PeakOptions(gemm_n=128, runs=2, warmup=1, stream_bytes=4 << 20)  # fast; numbers not asserted


# ============================================================================ counting
def _synthetic_model():  # type: ignore[no-untyped-def]
    """x [1,3,H,W] -> Conv -> ConvTranspose -> flatten -> MatMul -> Gemm; an embedding Gather;
    MatMulInteger on int8 weights; a QDQ Conv; an LSTM. Every expected number is written out below."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)

    def init(name: str, arr: np.ndarray) -> object:
        return nh.from_array(arr, name)

    inits = [
        init("conv_w", rng.standard_normal((8, 3, 3, 3)).astype(np.float32)),  # M=8, C=3, k=3x3
        init("conv_b", np.zeros(8, np.float32)),
        init("deconv_w", rng.standard_normal((8, 4, 2, 2)).astype(np.float32)),  # C_in=8, M/group=4, k=2x2
        init("shape", np.array([1, -1], np.int64)),
        init("mm_w", rng.standard_normal((4 * 16 * 16, 10)).astype(np.float32)),  # K=1024, N=10
        init("gemm_w", rng.standard_normal((6, 10)).astype(np.float32)),  # transB: N=6, K=10
        init("gemm_b", np.zeros(6, np.float32)),
        init("table", rng.standard_normal((100, 5)).astype(np.float32)),  # 100 words x 5
        init("q_w", rng.integers(-127, 128, (5, 7), dtype=np.int8)),
        init("qdq_w", rng.integers(-127, 128, (2, 3, 1, 1), dtype=np.int8)),
        init("qdq_scale", np.float32(0.1)), init("qdq_zp", np.int8(0)),
        init("lstm_w", rng.standard_normal((1, 4 * 6, 5)).astype(np.float32)),  # H=6, input=5
        init("lstm_r", rng.standard_normal((1, 4 * 6, 6)).astype(np.float32)),
    ]
    nodes = [
        h.make_node("Conv", ["x", "conv_w", "conv_b"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),  # -> [1,8,8,8]
        h.make_node("ConvTranspose", ["c1", "deconv_w"], ["c2"], strides=[2, 2]),  # -> [1,4,16,16]
        h.make_node("Reshape", ["c2", "shape"], ["flat"]),  # [1, 1024]
        h.make_node("MatMul", ["flat", "mm_w"], ["m1"]),  # [1, 10]
        h.make_node("Gemm", ["m1", "gemm_w", "gemm_b"], ["y"], transB=1),  # [1, 6]
        h.make_node("Gather", ["table", "words"], ["emb"]),  # words [1, 3] -> [1, 3, 5]
        h.make_node("MatMulInteger", ["qa", "q_w"], ["qy"]),  # qa [4, 5] u8 -> [4, 7]
        h.make_node("DequantizeLinear", ["qdq_w", "qdq_scale", "qdq_zp"], ["dq_w"]),
        h.make_node("Conv", ["x", "dq_w"], ["c3"]),  # 1x1, M=2 -> [1,2,16,16]
        h.make_node("LSTM", ["seq", "lstm_w", "lstm_r"], ["", "lstm_h"], hidden_size=6),  # seq [7, 1, 5]
    ]
    graph = h.make_graph(
        nodes, "synthetic",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 3, "height", "width"]),
         h.make_tensor_value_info("words", T.INT64, ["batch", 3]),
         h.make_tensor_value_info("qa", T.UINT8, [4, 5]),
         h.make_tensor_value_info("seq", T.FLOAT, [7, "batch", 5])],
        [h.make_tensor_value_info(n, t, s) for n, t, s in
         (("y", T.FLOAT, ["batch", 6]), ("emb", T.FLOAT, ["batch", 3, 5]), ("qy", T.INT32, [4, 7]),
          ("c3", T.FLOAT, ["batch", 2, "height", "width"]), ("lstm_h", T.FLOAT, [1, "batch", 6]))],
        inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


SHAPES = {"x": [1, 3, 16, 16], "words": [1, 3], "qa": [4, 5], "seq": [7, 1, 5]}
EXPECTED_MACS = {
    "Conv": 1 * 8 * (8 * 8) * 3 * (3 * 3) + 1 * 2 * (16 * 16) * 3 * 1,  # N M HoWo C k*k (+ the QDQ 1x1 conv)
    "ConvTranspose": 1 * 8 * (8 * 8) * 4 * (2 * 2),  # N C_in HiWi M/group k*k
    "MatMul": 1 * 10 * 1024,  # M N K
    "Gemm": 1 * 6 * 10,
    "MatMulInteger": 4 * 7 * 5,
    "LSTM": 7 * 1 * 1 * (4 * 6) * (5 + 6),  # seq batch dirs gates*H (input + H)
}
EXPECTED_WEIGHT_BYTES = (
    8 * 3 * 3 * 3 * 4 + 8 * 4 + 8 * 4 * 2 * 2 * 4 + 2 * 8 + 1024 * 10 * 4 + 6 * 10 * 4 + 6 * 4
    + 3 * 5 * 4  # the table: 3 gathered rows of 5 floats, not 100
    + 5 * 7 + 2 * 3 + 4 + 1  # int8 weights, the QDQ scale and zero point
    + 4 * 6 * 5 * 4 + 4 * 6 * 6 * 4)


def test_counted_cost_equals_the_formulas_exactly() -> None:
    from mmedge.runtime.graph_cost import count_onnx

    cost = count_onnx(_synthetic_model(), SHAPES)
    assert cost.by_op == {op: 2 * macs for op, macs in EXPECTED_MACS.items()}
    assert cost.flops == 2 * sum(EXPECTED_MACS.values())
    assert cost.weight_bytes == EXPECTED_WEIGHT_BYTES
    assert cost.elementwise > 0 and cost.batch == 1 and cost.inputs == SHAPES
    assert GraphCost.from_json(json.loads(json.dumps(cost.to_json()))) == cost


def test_flops_scale_with_the_input_and_bad_shapes_are_named() -> None:
    from mmedge.runtime.graph_cost import count_onnx

    model = _synthetic_model()
    small, long = count_onnx(model, SHAPES), count_onnx(model, {**SHAPES, "seq": [14, 1, 5]})
    assert long.by_op["LSTM"] == 2 * small.by_op["LSTM"] and long.by_op["Conv"] == small.by_op["Conv"]
    with pytest.raises(ArtifactError, match="no shape given for input 'seq'"):
        count_onnx(model, {k: v for k, v in SHAPES.items() if k != "seq"})
    with pytest.raises(ArtifactError, match="rank 4"):
        count_onnx(model, {**SHAPES, "x": [1, 3, 16]})


def test_openvino_ir_counts_the_same_flops(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    onnx = pytest.importorskip("onnx")
    from mmedge.runtime.graph_cost import count_onnx, count_openvino

    model = _synthetic_model()
    onnx.save(model, str(tmp_path / "m.onnx"))
    ours = count_openvino(ov.convert_model(str(tmp_path / "m.onnx")), SHAPES)  # Gemm, MatMulInteger -> MatMul
    assert ours.flops == count_onnx(model, SHAPES).flops == 2 * sum(EXPECTED_MACS.values())
    assert ours.by_op["LSTMSequence"] == 2 * EXPECTED_MACS["LSTM"]
    assert ours.by_op["ConvolutionBackpropData"] == 2 * EXPECTED_MACS["ConvTranspose"]
    # the weights as OpenVINO stores them (its converter folds the QDQ pair and keeps the shape constants)
    assert ours.weight_bytes == pytest.approx(EXPECTED_WEIGHT_BYTES, rel=0.02)


def test_counting_shapes_fix_the_batch_and_size_other_axes_from_the_vectors() -> None:
    from mmedge.runtime.graph_cost import counting_shapes

    g = GraphEntry("model", "m.onnx", [TensorSpec("wave", ["batch", "samples"], "float32"),
                                       TensorSpec("gain", [2], "float32")], [TensorSpec("y", ["batch"], "float32")])
    vectors = {"model.wave": np.zeros((3, 4000), np.float32)}
    assert counting_shapes(g, vectors) == {"wave": [1, 4000], "gain": [2]}
    with pytest.raises(ArtifactError, match="'samples'"):
        counting_shapes(g, None)


def test_the_writer_builds_what_onnx_helper_builds() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from mmedge.runtime.onnx_writer import Graph, Node, Value

    b = np.arange(12, dtype=np.int8).reshape(3, 4)
    ours = Graph([Node("MatMulInteger", ["a", "b"], ["y"])], [Value("a", np.uint8, ["n", 3])],
                 [Value("y", np.int32, ["n", 4])], {"b": b}).model_bytes()
    theirs = h.make_model(h.make_graph([h.make_node("MatMulInteger", ["a", "b"], ["y"])], "mmedge_bench",
                                       [h.make_tensor_value_info("a", onnx.TensorProto.UINT8, ["n", 3])],
                                       [h.make_tensor_value_info("y", onnx.TensorProto.INT32, ["n", 4])],
                                       [nh.from_array(b, "b")]),
                          opset_imports=[h.make_opsetid("", 17)], ir_version=8, producer_name="mmedge")
    assert ours == theirs.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(ours), full_check=True)


# ============================================================================ arithmetic
def test_efficiency_arithmetic_is_exact() -> None:
    e = R.efficiency("r", "encoder", "fp32", seconds=0.5, flops=2.0e9, nbytes=1.0e8, peak_flops=8.0e9,
                     bandwidth=1.0e9)
    assert e.compute == 2.0e9 / (0.5 * 8.0e9) == 0.5
    assert e.memory == 1.0e8 / (0.5 * 1.0e9) == 0.2
    assert e.roofline == 0.5 and e.bound == "compute" and e.note is None
    m = R.efficiency("r", "step", "int8", seconds=0.25, flops=1.0e6, nbytes=4.0e9, peak_flops=1.0e10,
                     bandwidth=2.0e10)
    assert m.memory == 0.8 and m.compute == 0.0004 and m.roofline == 0.8 and m.bound == "memory"
    # a missing peak: that efficiency is None, and no roofline claim is made
    n = R.efficiency("r", "s", "bf16", 1.0, 1.0e9, 1.0e9, None, 1.0e9, note="n/a (backend): no bf16")
    assert n.compute is None and n.memory == 1.0 and n.roofline is None and n.bound is None
    assert R.efficiency("r", "s", "fp32", 0.0, 1.0, 1.0, 1.0, 1.0).note == "n/a: no time measured"


def test_peak_precision_follows_the_artifact_and_the_openvino_hint() -> None:
    assert R.peak_precision("int8", "onnxruntime", {}) == "int8"
    assert R.peak_precision("fp32", "openvino", {"precision": "bf16"}) == "bf16"
    assert R.peak_precision("fp32", "openvino", {"precision": "f16"}) == "fp16"
    assert R.peak_precision("fp32", "onnxruntime", {"precision": "bf16"}) == "fp32"


# ============================================================================ microbenchmarks
def _check_peaks(p: MachinePeaks) -> None:
    assert set(p.compute) == {"fp32", "fp16", "bf16", "int8"} and set(p.memory) == {"stream_add", "weights_read"}
    assert p.bandwidth.value == max(m.value for m in p.memory.values() if m.value is not None)
    for name, peak in [*p.compute.items(), *p.memory.items()]:
        if peak.value is None:
            assert peak.note and peak.note.startswith("n/a"), (name, peak)
        else:
            assert math.isfinite(peak.value) and peak.value > 0 and peak.how, (name, peak)
    assert p.bandwidth.unit == "B/s" and p.compute["fp32"].unit == "FLOP/s"
    assert MachinePeaks.from_json(json.loads(json.dumps(p.to_json()))).to_json() == p.to_json()


def test_onnxruntime_peaks_are_positive_and_finite() -> None:
    pytest.importorskip("onnxruntime")
    p = measure_peaks("onnxruntime", SMALL)
    _check_peaks(p)
    assert p.compute["fp32"].value and p.compute["int8"].value and p.bandwidth.value  # every CPU build has them


def test_openvino_peaks_are_positive_and_finite() -> None:
    pytest.importorskip("openvino")
    p = measure_peaks("openvino", SMALL)
    _check_peaks(p)
    assert p.compute["fp32"].value and p.bandwidth.value and "runs in f32" in p.compute["fp32"].how


def test_a_backend_without_microbenchmarks_says_so() -> None:
    p = measure_peaks("coreml", SMALL)
    assert all(v.value is None and "no microbenchmark for coreml" in v.note
               for v in [*p.compute.values(), *p.memory.values(), p.bandwidth])


# ============================================================================ the manifest's cost
def test_manifest_carries_the_cost_inside_the_graph_entry(tmp_path: Path) -> None:
    g = GraphEntry("model", "m.onnx", [TensorSpec("x", ["batch", 3], "float32")],
                   [TensorSpec("y", ["batch", 2], "float32")])
    m = Manifest("m", "tiny", "generic", "onnx", "fp32", [g], {"kind": "none"})
    plain = json.loads(m.to_json())
    assert "cost" not in plain["graphs"][0] and "costs" not in plain  # no cost: the manifest is as before
    cost = GraphCost(12, 24, 3, {"x": [1, 3]}, {"MatMul": 12})
    m.costs["model"] = cost.to_json()
    doc = json.loads(m.to_json())
    assert doc["graphs"][0]["cost"] == cost.to_json() and "costs" not in doc
    back = Manifest.from_dict(doc)
    assert back.costs == {"model": cost.to_json()} and back.graphs == [g]
    bad = copy.deepcopy(doc)
    bad["graphs"][0]["cost"]["flops"] = -1
    with pytest.raises(ArtifactError, match=r"graphs\[0\].cost.flops"):
        Manifest.from_dict(bad)
    bad["graphs"][0]["cost"] = {"flops": 1, "weight_bytes": 1, "batch": 1, "surprise": 2}
    with pytest.raises(ArtifactError, match="surprise"):
        Manifest.from_dict(bad)


# ============================================================================ on an exported captioner
@pytest.fixture(scope="module")
def captioner(cli_onnx: dict[str, Path]) -> Path:
    pytest.importorskip("onnxruntime")
    return cli_onnx["captioner"]


def test_export_records_each_graphs_cost(captioner: Path) -> None:
    from mmedge.runtime.graph_cost import onnx_file_cost
    from mmedge.runtime.manifest import load_test_vectors

    m = read_manifest(captioner)
    assert set(m.costs) == {"encoder", "decoder_init", "decoder_step"}
    vectors = load_test_vectors(captioner, m)
    for g in m.graphs:
        assert m.costs[g.name] == onnx_file_cost(captioner / g.file, g, vectors).to_json()
        assert m.costs[g.name]["flops"] > 0 and m.costs[g.name]["weight_bytes"] > 0
        assert m.costs[g.name]["inputs"][g.inputs[0].name][0] == 1  # batch 1


def test_a_derived_manifests_stale_costs_are_recounted(captioner: Path, tmp_path: Path) -> None:
    """An int8 build's manifest starts as a copy of the fp32 one: its costs must come from its own files."""
    import dataclasses
    import shutil

    from mmedge.export.artifact import add_costs

    art = tmp_path / "copy"
    shutil.copytree(captioner, art)
    base = read_manifest(art)
    stale = {name: {**c, "weight_bytes": 1} for name, c in base.costs.items()}
    derived = dataclasses.replace(base, costs=stale)
    add_costs(art, derived)
    assert derived.costs == base.costs
    assert all(c["weight_bytes"] == 1 for c in stale.values())  # the shared dict was not modified


def test_openvino_export_records_the_onnx_graphs_flops(captioner: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from mmedge.export.openvino import convert_onnx_artifact

    ir = read_manifest(convert_onnx_artifact(captioner, tmp_path / "ov"))
    assert {k: v["flops"] for k, v in ir.costs.items()} == {k: v["flops"] for k, v in read_manifest(captioner).costs.items()}


FAKE_PEAKS = MachinePeaks("onnxruntime", None, {"fp32": Peak(1.0e11, "FLOP/s", "fake"),
                                                 "fp16": Peak(None, "FLOP/s", "", "n/a (backend): fake"),
                                                 "bf16": Peak(None, "FLOP/s", "", "n/a (backend): fake"),
                                                 "int8": Peak(4.0e11, "FLOP/s", "fake")},
                          {"stream_add": Peak(1.0e10, "B/s", "fake"), "weights_read": Peak(2.0e10, "B/s", "fake")})


def test_profile_section_holds_rows_to_the_peaks(captioner: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "measure_peaks", lambda backend, opts: FAKE_PEAKS)
    res = P.profile([captioner], P.ProfileOptions(runs=2, warmup=0, max_len=4, image_hw=(64, 64), roofline=True))
    sec = res.roofline
    assert sec["peaks"] == [FAKE_PEAKS.to_json()] and sec["machine"]["cpu"]
    costs = read_manifest(captioner).costs
    assert sec["costs"][res.artifacts[0].id] == costs
    by = {(e["row"], e["stage"]): e for e in sec["efficiency"]}
    for row in res.rows:
        if row.kind == "graph":
            e, c = by[(row.id, row.graph)], costs[row.graph]
            s = row.latency.p50 / 1e3
            assert e["compute"] == pytest.approx(c["flops"] * row.batch / (s * 1.0e11), rel=1e-5)  # 6 digits
            assert e["memory"] == pytest.approx(c["weight_bytes"] / (s * 2.0e10), rel=1e-5)
            assert e["roofline"] == max(e["compute"], e["memory"])
    (e2e,) = [r for r in res.rows if r.kind == "e2e"]
    enc = by[(e2e.id, "encoder")]
    assert enc["seconds"] == pytest.approx(e2e.stages["encoder"]["mean_ms"] / 1e3, rel=1e-5)
    assert enc["compute"] == pytest.approx(costs["encoder"]["flops"] / (enc["seconds"] * 1.0e11), rel=1e-5)
    step = by[(e2e.id, "decoder_step (per step)")]
    assert step["flops"] is None and step["memory"] == pytest.approx(
        costs["decoder_step"]["weight_bytes"] / (e2e.extra["per_step_ms"] / 1e3 * 2.0e10), rel=1e-5)
    (o,) = sec["overheads"]
    inside = sum(e2e.stages[s]["mean_ms"] for s in ("encoder", "decoder_init", "decoder_steps"))
    assert o["outside_sessions_ms"] == pytest.approx(e2e.latency.mean - inside, rel=1e-5)
    assert o["decode_ms"] > 0
    assert o["preprocess_over_decode"] == pytest.approx(o["preprocess_ms"] / o["decode_ms"], rel=1e-5)
    doc = json.loads(json.dumps(res.to_json()))
    assert P.validate_json(doc)["roofline"] == json.loads(json.dumps(sec))
    again = P.result_from_json(doc)
    from mmedge.runtime.profile_render import to_markdown, to_text

    for text in (to_text(again), to_markdown(again)):
        assert "Machine peaks through the backend" in text and "Efficiency per stage" in text
        assert "decoder_step (per step)" in text and "preprocessing vs image decode" in text


def test_costs_are_counted_at_profile_time_for_older_artifacts(captioner: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(captioner, old)
    doc = json.loads((old / MANIFEST).read_text())
    want = {g["name"]: g.pop("cost") for g in doc["graphs"]}
    (old / MANIFEST).write_text(json.dumps(doc))  # the manifest is not among the hashed files
    got = R.artifact_costs(old)
    assert {k: v.to_json() for k, v in got.items()} == want
    monkeypatch.setitem(sys.modules, "onnx", None)  # a device install: no onnx package
    notes = R.artifact_costs(old)
    assert all(isinstance(v, str) and "install onnx" in v for v in notes.values())
    monkeypatch.setattr(R, "measure_peaks", lambda backend, opts: FAKE_PEAKS)
    res = P.profile([old], P.ProfileOptions(runs=1, warmup=0, max_len=2, image_hw=(32, 32), roofline=True,
                                            end_to_end=False))
    effs = res.roofline["efficiency"]
    assert effs and all(e["compute"] is None and "install onnx" in e["note"] for e in effs)


def test_cli_roofline_is_on_by_default_and_json_stays_readable(captioner: Path, tmp_path: Path) -> None:
    base = ["profile", "-a", str(captioner), "--runs", "1", "--warmup", "0", "--max-len", "2", "--batch", "1"]
    res = runner.invoke(app, base + ["--json"])
    assert res.exit_code == 0, res.stderr
    doc = P.validate_json(json.loads(res.stdout))
    (peaks,) = doc["roofline"]["peaks"]
    assert peaks["backend"] == "onnxruntime" and peaks["compute"]["fp32"]["value"] > 0
    assert peaks["bandwidth"]["value"] > 0 and doc["options"]["roofline"] is True
    res = runner.invoke(app, base + ["--json", "--no-roofline"])
    plain = P.validate_json(json.loads(res.stdout))
    assert res.exit_code == 0 and "roofline" not in plain
    # compare reads one profile with the section and one without
    (tmp_path / "a.json").write_text(json.dumps(doc))
    (tmp_path / "b.json").write_text(json.dumps(plain))
    res = runner.invoke(app, ["profile", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                              "--threshold", "100"])
    assert res.exit_code == 0, res.stderr
    bad = copy.deepcopy(doc)
    bad["roofline"]["peaks"][0].pop("bandwidth")
    with pytest.raises(InputError, match=r"roofline.peaks\[0\].bandwidth"):
        P.validate_json(bad)
