"""INT8 calibration end to end (ONNX Runtime recipe) and its bad-input handling."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.calibration import int8_export
from mmedge.calibration.data import CalibSource
from mmedge.calibration.recipes import QuantConfig
from mmedge.errors import InputError, UnknownNameError
from mmedge.export import registry
from mmedge.runtime import load
from mmedge.runtime.parity import check


def export_int8(model: str, config: str, out: Path, cache: Path, size: int = 16, report: bool = True,
                folder: Path | None = None, **quant: object) -> registry.ExportResult:
    pytest.importorskip("onnxruntime")  # the recipe under test is ONNX Runtime's
    req = registry.ExportRequest(model, ["onnx"], "int8", config, out=out, calib=CalibSource(folder, size),
                                 quant=QuantConfig(cache_dir=cache, **quant), report=report)  # type: ignore[arg-type]
    return int8_export.export(req)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calib-cache")


@pytest.mark.parametrize("model, config, metric, bound", [
    ("soundnet", "demo", "top1", 0.01),
    ("voice-encoder", "demo", "top1", 0.01),
])
def test_audio_int8_keeps_accuracy(model: str, config: str, metric: str, bound: float, tmp_path: Path,
                                   cache: Path) -> None:
    res = export_int8(model, config, tmp_path, cache)
    (art,), (rep,) = res.artifacts, res.reports
    task = rep.task[metric]
    assert task["fp32"] >= 0.9 and task["fp32"] - task["int8"] <= bound  # <= 1 point drop on 100 test clips
    assert all(o.cosine > 0.99 for o in rep.outputs)
    m = load(art).manifest
    assert m.precision == "int8" and m.extra["calibration"]["method"] == "minmax"
    assert check(load(art)).ok


def test_int8_model_really_is_quantized(tmp_path: Path, cache: Path) -> None:
    import onnx

    (art,) = export_int8("soundnet", "demo", tmp_path, cache, report=False).artifacts
    ops = {n.op_type for n in onnx.load(str(art / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [t for t in onnx.load(str(art / "model.onnx")).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights, "weights are not stored as int8"


def test_refocus_int8_psnr(tmp_path: Path, cache: Path) -> None:
    (rep,) = export_int8("refocus", "tiny", tmp_path, cache, size=8).reports
    assert rep.task["psnr_vs_fp32_db"]["int8"] >= 35.0


def test_calibration_cache_is_reused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    export_int8("voice-encoder", "demo", tmp_path / "a", cache, size=8, report=False)
    files = sorted(cache.glob("ort-*.json"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    data = json.loads(files[0].read_text())
    assert data  # ranges stored
    time.sleep(0.01)
    export_int8("voice-encoder", "demo", tmp_path / "b", cache, size=8, report=False)
    assert sorted(cache.glob("ort-*.json")) == files and files[0].stat().st_mtime_ns == stamp
    export_int8("voice-encoder", "demo", tmp_path / "c", cache, size=8, report=False, method="percentile")
    assert len(list(cache.glob("ort-*.json"))) == 2  # another method: another cache entry


def test_calibration_from_a_wav_folder(tmp_path: Path, cache: Path) -> None:
    from mmedge.data import sounds

    folder = tmp_path / "wavs"
    sounds.write_examples(folder)
    (art,) = export_int8("voice-encoder", "demo", tmp_path / "out", cache, size=10, report=False,
                         folder=folder).artifacts
    assert "10 WAV files from" in load(art).manifest.extra["calibration"]["data"]


def _images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("setup, message", [
    ("empty", r"no images \(PNG, JPEG, \.\.\.\) found"),
    ("few", "found 3 calibration samples, need at least 16"),
    ("mixed", "mixes 3 images and 1 audio files"),
    ("corrupt", "broken.png: not an image PIL can read"),
    ("missing", "calibration folder not found"),
])
def test_bad_calibration_folders_fail_before_any_work(setup: str, message: str, tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    if setup in ("few", "mixed"):
        _images(folder, 3)
    if setup == "mixed":
        (folder / "a.wav").write_bytes(b"RIFF")
    if setup == "corrupt":
        _images(folder, 20)
        (folder / "broken.png").write_bytes(b"\x89PNG garbage")
    if setup == "missing":
        folder.rmdir()
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=message):
        export_int8("captioner", "tiny", out, cache, size=16 if setup != "corrupt" else 21, folder=folder)
    assert time.perf_counter() - t0 < 5 and not out.exists()


def test_too_short_wav_in_calibration_folder(tmp_path: Path, cache: Path) -> None:
    from mmedge.runtime.audio import write_wav

    folder = tmp_path / "w"
    folder.mkdir()
    for i in range(4):
        write_wav(folder / f"{i}.wav", np.zeros(100, np.float32) + 0.1, 16000)
    with pytest.raises(InputError, match=r"too short for this model"):
        export_int8("soundnet", "demo", tmp_path / "o", cache, size=4, folder=folder)


def test_unknown_method_is_refused() -> None:
    with pytest.raises(UnknownNameError, match="calibration method 'kl'"):
        QuantConfig(method="kl")


def test_failed_int8_export_leaves_nothing(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from mmedge.calibration import onnxruntime as recipe

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("simulated crash in the quantizer")

    monkeypatch.setattr(recipe, "quantize_graph", boom)
    from mmedge.errors import ExportError

    with pytest.raises(ExportError, match="simulated crash"):
        export_int8("voice-encoder", "demo", tmp_path, cache, size=4, report=False)
    assert os.listdir(tmp_path) == []


def test_weight_only_decoder_keeps_tiny_weights_in_float(tmp_path: Path) -> None:
    """Dynamic (weight-only) int8 quantizes a MatMul/Gemm only when its weight is big enough for the
    saved bytes to pay for quantizing its input at every step; the rest stay float, as do keep_float's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mmedge.calibration.onnxruntime import MIN_DYNAMIC_WEIGHT_ELEMENTS, _nodes_to_exclude

    big = numpy_helper.from_array(np.zeros((512, 128), np.float32), "W_big")  # exactly the threshold
    tiny = numpy_helper.from_array(np.zeros((128, 1), np.float32), "W_tiny")
    assert 512 * 128 == MIN_DYNAMIC_WEIGHT_ELEMENTS
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W_big"], ["y"], name="big"),
         helper.make_node("Gemm", ["y", "W_tiny"], ["z"], name="tiny"),
         helper.make_node("MatMul", ["y", "y2"], ["w"], name="two_inputs"),  # no constant weight: not judged
         helper.make_node("LogSoftmax", ["z"], ["p"], name="lsm")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 512]),
              helper.make_tensor_value_info("y2", TensorProto.FLOAT, [128, 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [3, 1]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 4])], [big, tiny])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert _nodes_to_exclude(path, ("LogSoftmax",), MIN_DYNAMIC_WEIGHT_ELEMENTS) == ["tiny", "lsm"]
    assert _nodes_to_exclude(path, ("LogSoftmax",)) == ["lsm"]  # static QDQ: sizes are not judged
