"""Issue 20, points 7-8: what a mobile bundle's models need on the device, read from the files.

Android: the ORT format version in each `.ort` header, the release that wrote it and the oldest
that reads it, recorded in the manifest and re-checked by --verify; runtime-optimisation-style
models (`.with_runtime_opt.ort`) for NNAPI/XNNPACK/CoreML, listed apart, loading in ONNX Runtime.
iOS: the minimum OS per model from its Core ML specification version.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

import make_golden
from mmedge.errors import ArtifactError, CheckFailedError
from mmedge.export.mobile_versions import (ORT_FORMAT_MIN_RELEASE, RUNTIME_OPT_SESSION_OPTION, check_ort_versions,
                                           coreml_minimum_os, coreml_spec_version, ort_format_version)
from mmedge.export.package import PackageRequest, packager
from mmedge.export.registry import ExportContext, export_context
from mmedge.models import zoo

ort = pytest.importorskip("onnxruntime")
HAS_COREML = __import__("importlib").util.find_spec("coremltools") is not None


@pytest.fixture(scope="module")
def unzipped(tmp_path_factory: pytest.TempPathFactory, golden_onnx: dict[str, Path]) -> Path:
    arts = [golden_onnx["captioner"]]
    if HAS_COREML:
        spec = zoo.get("captioner")
        model = make_golden.reference_model("captioner")
        ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, "fp16", model.vocab)
        arts.append(export_context(ctx, ["coreml"], tmp_path_factory.mktemp("coreml")).artifacts[0])
    out = tmp_path_factory.mktemp("bundle") / "app.zip"
    packager("mobile")(PackageRequest(arts, out))
    root = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(out) as z:
        z.extractall(root)
    return root


def _fbs_version(path: Path) -> str:
    """ONNX Runtime's own reader of the header (its generated FlatBuffers classes)."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    buf = path.read_bytes()
    assert InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0)  # file identifier "ORTM"
    return InferenceSession.GetRootAsInferenceSession(buf, 0).OrtVersion().decode()


def test_ort_header_version_matches_the_manifest(unzipped: Path) -> None:
    doc = json.loads((unzipped / "manifest.json").read_text())
    rec = doc["requirements"]["android"]["ort"]
    assert rec["onnxruntime_version"] == ort.__version__ == rec["reduced_build_release"]
    fmt = rec["format_version"]
    android = doc["models"]["captioner"]["android"]
    files = [g["file"] for g in android["graphs"]] + [g["file"] for g in android["runtime_optimized"]["graphs"]]
    assert len(files) == 6
    for rel in files:
        assert (unzipped / rel).read_bytes()[4:8] == b"ORTM"
        assert ort_format_version(unzipped / rel) == fmt == int(_fbs_version(unzipped / rel)), rel
    # the oldest reader, from ONNX Runtime's docs (v5: 1.13) and microsoft/onnxruntime#20670 (v6: 1.16.0)
    assert rec["format_readable_from"] == ORT_FORMAT_MIN_RELEASE.get(fmt, ort.__version__)
    if fmt == 6:
        assert rec["format_readable_from"] == "1.16.0"
    readme = (unzipped / "README.md").read_text()
    assert "with_runtime_opt.ort" in readme and "format_readable_from" in readme


def test_runtime_optimised_models_are_listed_apart_and_load(unzipped: Path) -> None:
    doc = json.loads((unzipped / "manifest.json").read_text())
    android = doc["models"]["captioner"]["android"]
    rt = android["runtime_optimized"]
    assert [g["name"] for g in rt["graphs"]] == [g["name"] for g in android["graphs"]]
    assert set(rt["execution_providers"]) == {"NNAPI", "XNNPACK", "CoreML"}
    assert rt["session_options"] == {RUNTIME_OPT_SESSION_OPTION: "1"}
    assert rt["ort_config"] == "android/required_operators_and_types.with_runtime_opt.config"
    assert rt["ort_config"] in doc["files"] and (unzipped / rt["ort_config"]).is_file()
    fixed_files = {g["file"] for g in android["graphs"]}
    for fixed, g in zip(android["graphs"], rt["graphs"]):
        assert g["file"].endswith(".with_runtime_opt.ort") and g["file"] in doc["files"]
        assert g["file"] not in fixed_files and fixed["file"].endswith(".ort")
        for rel, opts in ((fixed["file"], {}), (g["file"], {RUNTIME_OPT_SESSION_OPTION: "1"})):
            so = ort.SessionOptions()
            for k, v in opts.items():
                so.add_session_config_entry(k, v)
            sess = ort.InferenceSession(str(unzipped / rel), so, providers=["CPUExecutionProvider"])
            assert [i.name for i in sess.get_inputs()] == [t["name"] for t in fixed["inputs"]], rel


@pytest.mark.skipif(not HAS_COREML, reason="needs coremltools to export the Core ML artifact")
def test_minimum_ios_per_model(unzipped: Path) -> None:
    doc = json.loads((unzipped / "manifest.json").read_text())
    ios = doc["models"]["captioner"]["ios"]
    assert ios["coreml_spec_version"] == 7 and ios["minimum_os"]["iOS"] == "16" and ios["minimum_os"]["macOS"] == "13"
    per = doc["requirements"]["ios"]["per_model"]["captioner"]
    assert per == {"precision": "fp16", "coreml_spec_version": 7, "minimum_ios": "16", "minimum_macos": "13"}
    for g in ios["graphs"]:
        assert coreml_spec_version(unzipped / g["file"]) == 7
    assert coreml_minimum_os(8)["iOS"] == "17"  # W8A8 (activation quantisation) packages


def test_a_wrong_format_version_is_named(unzipped: Path, tmp_path: Path) -> None:
    doc = json.loads((unzipped / "manifest.json").read_text())
    check_ort_versions(unzipped, doc, "app.zip")
    doc["requirements"]["android"]["ort"]["format_version"] = 5
    with pytest.raises(CheckFailedError, match=r"app\.zip: android/captioner/\w+\.ort: ORT format version \d+, "
                                               r"but the manifest says 5"):
        check_ort_versions(unzipped, doc, "app.zip")
    bogus = tmp_path / "x.ort"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="not an ORT format model"):
        ort_format_version(bogus)
