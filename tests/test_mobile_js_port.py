"""The mobile bundle as an app developer gets it: the spec in decoding.json, the per-step beam
trace and preprocessing vectors, the model card / license / sizes / minimum versions / labels, and
the second implementation (ports/js, JavaScript on onnxruntime-node) replaying the test vectors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmedge.export import mobile
from mmedge.export.package import PackageRequest, packager

pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[1]
PORT = REPO / "ports" / "js"
ORT_NODE_VERSION = "1.30.0"  # the npm onnxruntime-node the port is checked with


@pytest.fixture(scope="module")
def unzipped(golden_onnx: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("js-port")
    zp = packager("mobile")(PackageRequest([golden_onnx["captioner"], golden_onnx["soundnet"]], work / "app.zip"))
    root = work / "app"
    with zipfile.ZipFile(zp) as z:
        z.extractall(root)
    return root


def vector(root: Path, key: str, model: str = "captioner") -> np.ndarray:
    index = json.loads((root / model / "test_vectors" / "index.json").read_text())
    d = index["arrays"][key]
    return np.fromfile(root / model / "test_vectors" / d["file"], dtype=d["dtype"]).reshape(d["shape"])


# ----------------------------------------------------------------------------- the spec and the vectors
def test_decoding_json_states_what_a_port_needs(unzipped: Path) -> None:
    dec = json.loads((unzipped / "captioner" / "decoding.json").read_text())
    assert "lower flat index first" in dec["tie_breaking"][0] and "first completed wins" in dec["tie_breaking"][1]
    assert "float32" in dec["score_arithmetic"] and "float64" in dec["score_arithmetic"]
    assert dec["tolerance"]["score_relative"] == 1e-4
    assert "-1 padding" in dec["tokens_padding"] and "<unk> is kept" in dec["caption_text"]
    assert set(dec["trace"]["arrays"]) == {f"beam.trace.{k}" for k in
                                           ("rows", "step", "image", "source_row", "word", "score")}
    pre = json.loads((unzipped / "captioner" / "preprocessing.json").read_text())
    steps = " ".join(pre["steps"])
    assert "EXIF orientation is NOT applied" in steps and "antialiased bilinear" in steps and "white" in steps
    assert ".scaleFill" in pre["resize_on_devices"]["ios"] and "createScaledBitmap" in pre["resize_on_devices"]["android"]


def test_trace_replays_the_reference_tokens(unzipped: Path) -> None:
    """The trace rebuilt into hypotheses gives the expected tokens and scores (the vectors agree)."""
    index = json.loads((unzipped / "captioner" / "test_vectors" / "index.json").read_text())
    step, image, word, score = (vector(unzipped, f"beam.trace.{k}") for k in ("step", "image", "word", "score"))
    rows = vector(unzipped, "beam.trace.rows")
    assert score.dtype == np.float32 and word.dtype == np.int64 and len(rows) == index["beam_trace"]["steps"]
    assert rows[0] == vector(unzipped, "beam.image").shape[0]  # step 1: one row per image
    end = json.loads((unzipped / "captioner" / "vocabulary.json").read_text())["<end>"]
    tokens = index["beam_search"]["expected_tokens"]
    assert index["beam_trace"]["tokens"] == tokens  # fp32 graphs: the reference's tokens
    for i, want in enumerate(tokens):
        mine = (image == i)
        if index["beam_trace"]["finished"][i]:  # the best <end> candidate's score is the result
            ends = mine & (word == end)
            assert np.isclose(score[ends].max(), index["beam_search"]["expected_scores"][i], rtol=1e-4)
    assert "-1" in index["beam_search"]["tokens_padding"]
    assert (vector(unzipped, "beam.tokens") >= -1).all()


def test_preprocessing_vectors_exercise_the_resize(unzipped: Path) -> None:
    from mmedge.runtime.image import preprocess_image

    pre = json.loads((unzipped / "captioner" / "preprocessing.json").read_text())["parameters"]
    src = vector(unzipped, "preprocess.source_rgba")
    size = pre["image_size"]
    assert src.shape[2] == 4 and src.shape[:2] != (size, size) and (src[..., 3] < 255).any()
    assert vector(unzipped, "preprocess.resized_rgb").shape == (size, size, 3)
    np.testing.assert_array_equal(vector(unzipped, "preprocess.image")[0], preprocess_image(src, pre))


def test_what_app_developers_expect_in_the_zip(unzipped: Path) -> None:
    doc = json.loads((unzipped / "manifest.json").read_text())
    assert "MIT License" in (unzipped / "LICENSE").read_text()
    card = (unzipped / "MODEL_CARD.md").read_text()
    assert "## captioner" in card and "vocabulary: 23 words" in card and "nothing here ran on a phone" in card
    assert "max relative error" in card and "labels.scenes.json" in card
    files = set(doc["files"])
    assert {"LICENSE", "MODEL_CARD.md"} <= files
    assert doc["sizes"] == {f: (unzipped / f).stat().st_size for f in files}
    android = doc["requirements"]["android"]
    assert android["ort_format_version"] == "6" or android["ort_format_version"].isdigit()
    import onnxruntime

    assert android["minimum_onnxruntime_android"] == onnxruntime.__version__
    snd = doc["models"]["soundnet"]
    assert set(snd["head_labels"]) == {"objects", "scenes"}
    for head, info in snd["head_labels"].items():
        labels = json.loads((unzipped / info["file"]).read_text())
        assert len(labels) == snd["model_config"][f"n_{head}"] and info["file"] in files
    for model in doc["models"].values():  # no field names a file outside the zip
        assert "test_vectors" not in model.get("extra", {})
        for key in ("preprocessing", "vocabulary", "labels", "decoding"):
            if key in model:
                assert model[key] in files, model[key]
    readme = (unzipped / "README.md").read_text()
    assert "OnnxTensor.createTensor" in readme and "ORTSession" in readme and "ports/js/replay.mjs" in readme
    assert mobile.BUNDLE_SCHEMA is not None  # the manifest passed validation when verified below


def test_verify_still_passes(unzipped: Path) -> None:
    zp = unzipped.parent / "app.zip"
    assert all(r.ok for r in mobile.verify(zp))


# ----------------------------------------------------------------------------- the JavaScript port
def _ort_node() -> Path:
    """A folder with onnxruntime-node installed (cached under .cache/, ignored by git)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: the JavaScript port cannot run here")
    prefix = Path(os.environ.get("MMEDGE_ORT_NODE_PREFIX", REPO / ".cache" / f"onnxruntime-node-{ORT_NODE_VERSION}"))
    if (prefix / "node_modules" / "onnxruntime-node" / "package.json").is_file():
        return prefix
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "package.json").write_text('{"private": true}\n')
    try:  # --ignore-scripts: the CPU binaries ship in the package; its install script fetches GPU ones
        res = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
                              f"onnxruntime-node@{ORT_NODE_VERSION}"], cwd=prefix, capture_output=True, text=True,
                             timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install onnxruntime-node timed out (registry unreachable?)")
    if res.returncode != 0:
        pytest.skip(f"npm install onnxruntime-node failed (registry unreachable?): {res.stderr.strip()[-300:]}")
    return prefix


def replay(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMEDGE_ORT_NODE_PREFIX": str(_ort_node())}
    return subprocess.run(["node", str(PORT / "replay.mjs"), str(root), "--json"], capture_output=True, text=True,
                          env=env, timeout=300)


def test_js_port_replays_every_vector_and_the_trace(unzipped: Path) -> None:
    res = replay(unzipped)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] and not report["failures"]
    passed = " ".join(report["passed"])
    for check in ("captioner: beam trace", "captioner: beam_search image 0", "captioner: beam_search image 1",
                  "captioner: decoder_step.log_probs", "pixel normalisation", "soundnet: model.scenes"):
        assert check in passed, (check, report["passed"])


@pytest.mark.parametrize("key, change, message", [
    ("beam.trace.score", lambda a: a + np.float32(0.01) * (np.arange(a.size) == 4), "beam trace step 0, image 1: score"),
    ("beam.trace.source_row", lambda a: np.where(np.arange(a.size) == 7, a + 1, a), "chose (row"),
    ("beam.scores", lambda a: a + np.float32(0.5), "beam_search image 0: score"),
])
def test_js_port_fails_on_a_tampered_vector(unzipped: Path, tmp_path: Path, key: str, change, message: str) -> None:
    root = tmp_path / "app"
    shutil.copytree(unzipped, root)
    index = json.loads((root / "captioner" / "test_vectors" / "index.json").read_text())
    if key == "beam.scores":  # the expected scores the port reads are in index.json
        index["beam_search"]["expected_scores"][0] += 0.5
        (root / "captioner" / "test_vectors" / "index.json").write_text(json.dumps(index))
    else:
        d = index["arrays"][key]
        path = root / "captioner" / "test_vectors" / d["file"]
        path.write_bytes(change(np.fromfile(path, dtype=d["dtype"])).astype(d["dtype"]).tobytes())
    res = replay(root)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "replay: MISMATCH" in res.stderr and message in res.stderr, res.stderr
