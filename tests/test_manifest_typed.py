"""The typed artifact contract (issue 17, item 1): one dataclass model of manifest.json, its JSON
Schema generated from it, graph hints written at export and read back, format_version 1 still read.

The fixtures under tests/fixtures/manifest_v1/ are manifests exactly as mmedge wrote them before
format_version 2 (an int8 captioner in TensorRT's layout, an int8 SoundNet)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from mmedge.errors import ArtifactError
from mmedge.runtime import manifest_schema
from mmedge.runtime.manifest import (FORMAT_VERSION, MANIFEST, Calibration, GraphEntry, Manifest, ManifestExtra,
                                     TensorSpec, read_manifest, write_manifest)
from mmedge.runtime.manifest_fields import TypeRef, json_fields, parse_annotation
from mmedge.runtime.manifest_sections import GraphCostFields
from mmedge.runtime.roles import NO_HINTS, GraphHints, hints_for
from mmedge.runtime.schema import SCHEMA_DIR, validate

V1 = Path(__file__).resolve().parent / "fixtures" / "manifest_v1"
CAPTIONER_V1 = V1 / "captioner-tiny-onnx-int8-tensorrt.json"
SOUNDNET_V1 = V1 / "soundnet-tiny-onnx-int8.json"


def doc_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- the generated schema
def test_the_shipped_schema_is_the_generated_one() -> None:
    shipped = (SCHEMA_DIR / "manifest.schema.json").read_text(encoding="utf-8")
    assert shipped == manifest_schema.render(), (
        "runtime/schemas/manifest.schema.json is stale: python -m mmedge.runtime.manifest_schema > "
        "runtime/schemas/manifest.schema.json")


def test_every_field_has_a_schema_and_the_cost_mirror_matches_graph_cost() -> None:
    schema = manifest_schema.generate()
    assert set(schema["properties"]) == {f.name for f in json_fields(Manifest)}
    assert set(schema["$defs"]["extra"]["properties"]) == set(ManifestExtra.names())
    assert set(schema["$defs"]["graph"]["properties"]) == {"name", "file", "inputs", "outputs", "hints", "cost"}
    from mmedge.runtime.graph_cost import GraphCost

    assert [f.name for f in json_fields(GraphCostFields)] == list(GraphCost.__dataclass_fields__)
    assert schema["properties"]["format_version"]["maximum"] == FORMAT_VERSION == 2


def test_annotations_are_read_as_text() -> None:
    """Python 3.8 (JetPack 5) cannot evaluate `int | None` or `dict[str, int]`: nothing evaluates them."""
    t = parse_annotation("dict[str, list[int | str]] | None", {"GraphHints": GraphHints})
    assert t.optional and t.without_none() == TypeRef("dict", (TypeRef("str"), TypeRef(
        "list", (TypeRef("|", (TypeRef("int"), TypeRef("str"))),))))
    assert parse_annotation("GraphHints", {"GraphHints": GraphHints}).cls is GraphHints
    with pytest.raises(TypeError):
        parse_annotation("list[int] + 3", {})


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        node: Any = d
        keys = path.split("/")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    return change


# What the hand-written schema of format_version 1 refused (the JSON path of the problem), and
# what the typed sections add: each must be refused by the generated schema at that path.
REFUSED: dict[str, tuple[Path, Callable[[dict[str, Any]], Any], str]] = {
    "format-version-zero": (SOUNDNET_V1, _set("format_version", 0), "$.format_version"),
    "format-version-string": (SOUNDNET_V1, _set("format_version", "1"), "$.format_version"),
    "unknown-top-level-key": (SOUNDNET_V1, _set("surprise", 1), "$.surprise"),
    "graph-file-outside": (SOUNDNET_V1, _set("graphs/0/file", "../x.onnx"), "$.graphs[0].file"),
    "tensor-extra-key": (SOUNDNET_V1, _set("graphs/0/inputs/0/strides", [1]), "$.graphs[0].inputs[0].strides"),
    "dtype-object": (SOUNDNET_V1, _set("graphs/0/inputs/0/dtype", "object"), "$.graphs[0].inputs[0].dtype"),
    "dim-zero": (SOUNDNET_V1, _set("graphs/0/outputs/0/shape/1", 0), "$.graphs[0].outputs[0].shape[1]"),
    "cost-negative": (SOUNDNET_V1, _set("graphs/0/cost/flops", -1), "$.graphs[0].cost.flops"),
    "sample-rate-zero": (SOUNDNET_V1, _set("preprocessing/sample_rate", 0), "$.preprocessing.sample_rate"),
    "audio-without-sample-rate": (SOUNDNET_V1, lambda d: d["preprocessing"].pop("sample_rate"),
                                  "$.preprocessing.sample_rate"),
    "std-zero": (CAPTIONER_V1, _set("preprocessing/std", [0, 1, 1]), "$.preprocessing.std[0]"),
    "captioner-without-vocabulary": (CAPTIONER_V1, lambda d: d.pop("vocabulary"), "$.vocabulary"),
    "min-samples-negative": (SOUNDNET_V1, _set("extra/min_samples", -5), "$.extra.min_samples"),
    "test-vectors-outside": (SOUNDNET_V1, _set("extra/test_vectors", "/tmp/v.npz"), "$.extra.test_vectors"),
    "class-output-not-a-name": (SOUNDNET_V1, _set("extra/class_output", "a b"), "$.extra.class_output"),
    "files-not-sha256": (SOUNDNET_V1, _set("files/model.onnx", "abc"), '$.files["model.onnx"]'),
    "tools-nested": (SOUNDNET_V1, _set("tools/python", {"v": 3}), "$.tools.python"),
    # typed now
    "calibration-without-method": (SOUNDNET_V1, lambda d: d["extra"]["calibration"].pop("method"),
                                   "$.extra.calibration.method"),
    "calibration-digest-not-sha256": (SOUNDNET_V1, _set("extra/calibration/digest", "x"),
                                      "$.extra.calibration.digest"),
    "calibration-unknown-key": (SOUNDNET_V1, _set("extra/calibration/surprise", 1), "$.extra.calibration.surprise"),
    "trt-cache-outside": (CAPTIONER_V1, _set("extra/tensorrt_calibration_cache/encoder", "../e.calib"),
                          "$.extra.tensorrt_calibration_cache.encoder"),
    "int8-report-a-list": (SOUNDNET_V1, _set("extra/int8_report", []), "$.extra.int8_report"),
    "hints-in-version-1": (CAPTIONER_V1, _set("graphs/2/hints", {"decoder": True}), "$.graphs[2].hints"),
    "hint-unknown": (CAPTIONER_V1, lambda d: (d.update(format_version=2), d["graphs"][2].update(hints={"x": 1})),
                     "$.graphs[2].hints.x"),
    "hint-not-a-bool": (CAPTIONER_V1, lambda d: (d.update(format_version=2),
                                                 d["graphs"][2].update(hints={"step": "yes"})),
                        "$.graphs[2].hints.step"),
    "format-version-3": (SOUNDNET_V1, _set("format_version", 3), "$.format_version"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_generated_schema_refuses(case: str) -> None:
    source, change, where = REFUSED[case]
    doc = doc_of(source)
    change(doc)
    with pytest.raises(ArtifactError, match="malformed manifest at " + where.replace("[", r"\[").replace("$", r"\$")):
        validate(doc, "manifest.schema.json", "m.json")


def test_a_newer_format_asks_for_an_upgrade() -> None:
    doc = doc_of(SOUNDNET_V1)
    doc["format_version"] = 3
    with pytest.raises(ArtifactError, match=r"format_version 3 is newer than this mmedge reads \(2\); upgrade"):
        Manifest.from_dict(doc, "m.json")


# ----------------------------------------------------------------------------- format_version 1 artifacts
def test_a_version_1_manifest_reads_typed_and_writes_back_byte_for_byte() -> None:
    raw = SOUNDNET_V1.read_text(encoding="utf-8")
    m = Manifest.from_dict(json.loads(raw), str(SOUNDNET_V1))
    assert m.format_version == 1 and m.written_version() == 1
    assert (m.extra.class_output, m.extra.min_samples, m.extra.test_vectors) == ("objects", 6422, "test_vectors.npz")
    assert isinstance(m.extra.calibration, Calibration) and m.extra.calibration.method == "minmax"
    assert m.graphs[0].hints == NO_HINTS and "flops" in m.costs["model"]
    assert m.to_json() == raw  # no hints to write: the same document, still readable by mmedge 0.1


def test_a_version_1_captioner_gets_its_hints_from_the_graph_names() -> None:
    raw = CAPTIONER_V1.read_text(encoding="utf-8")
    m = Manifest.from_dict(json.loads(raw), str(CAPTIONER_V1))
    assert [g.hints for g in m.graphs] == [hints_for(g.name) for g in m.graphs]
    assert m.graph("decoder_step").hints.step and not m.graph("decoder_init").hints.step
    assert m.extra.int8_layout == "tensorrt" and set(m.extra.tensorrt_calibration_cache or {}) == {
        "encoder", "decoder_init", "decoder_step"}
    out = json.loads(m.to_json())
    assert out["format_version"] == 2  # hints written: an older mmedge says "upgrade"
    assert out["graphs"][2]["hints"] == {"decoder": True, "step": True, "quantize_ops": ["MatMul", "Gemm"]}
    assert "hints" not in out["graphs"][0]
    for g in out["graphs"]:
        g.pop("hints", None)
    assert out == {**json.loads(raw), "format_version": 2}  # nothing else changed
    again = Manifest.from_dict(json.loads(m.to_json()))
    assert again.graphs == m.graphs and again.extra == m.extra and again.to_json() == m.to_json()


def test_version_2_hints_are_read_as_written_not_from_the_name() -> None:
    doc = json.loads(Manifest.from_dict(doc_of(CAPTIONER_V1)).to_json())
    doc["graphs"][1].pop("hints")  # decoder_init: written without hints means none
    doc["graphs"][2]["hints"] = {"step": True}
    m = Manifest.from_dict(doc)
    assert m.graph("decoder_init").hints == NO_HINTS
    assert m.graph("decoder_step").hints == GraphHints(step=True)
    assert m.written_version() == 2  # decoder_init's name implies hints: a version-1 reader would add them


# ----------------------------------------------------------------------------- the typed extra
def test_extra_keeps_unknown_keys_and_reads_like_its_json() -> None:
    doc = doc_of(SOUNDNET_V1)
    doc["extra"]["written_by_a_newer_mmedge"] = {"a": [1, 2]}
    m = Manifest.from_dict(doc)
    assert m.extra.other == {"written_by_a_newer_mmedge": {"a": [1, 2]}}
    assert json.loads(m.to_json())["extra"] == doc["extra"]
    # the JSON view: what code that reads the document sees
    assert m.extra["calibration"]["method"] == "minmax" and "int8_layout" not in m.extra
    assert dict(m.extra) == doc["extra"] and m.extra.get("min_samples") == 6422
    view = m.extra["calibration"]
    view["method"] = "changed"  # a copy: the typed value stays
    assert m.extra.calibration is not None and m.extra.calibration.method == "minmax"


def test_extra_defaults_merge_and_coercion() -> None:
    assert ManifestExtra().vectors_file == "test_vectors.npz" and ManifestExtra().to_json() == {}
    e = ManifestExtra(class_output="logits").merged({"min_samples": 10, "precision_policy": {"family": "x"}})
    assert (e.class_output, e.min_samples, e.precision_policy) == ("logits", 10, {"family": "x"})
    assert e.merged(ManifestExtra(min_samples=3)).min_samples == 3
    g = GraphEntry("model", "m.onnx", [TensorSpec("x", ["batch", 3], "float32")],
                   [TensorSpec("y", ["batch", 2], "float32")])
    m = Manifest("m", "tiny", "generic", "onnx", "fp32", [g], {"kind": "none"},
                 extra={"test_vectors": "v.npz", "calibration": {"data": "d", "digest": "0" * 64, "method": "minmax",
                                                                 "per_channel": True, "keep_float": [],
                                                                 "dynamic_decoder": False}})
    assert isinstance(m.extra, ManifestExtra) and m.extra.vectors_file == "v.npz"
    assert isinstance(m.extra.calibration, Calibration)
    with pytest.raises(TypeError, match="named fields"):
        ManifestExtra(other={"min_samples": 1})


def test_derive_shares_nothing_with_its_source() -> None:
    src = Manifest.from_dict(doc_of(CAPTIONER_V1))
    out = src.derive(format="openvino", extra=dataclasses.replace(src.extra, int8_layout=None))
    assert out.files == {} and out.costs == {} and out.format == "openvino" and src.files and src.costs
    out.vocabulary["<extra>"] = 99  # type: ignore[index]
    out.graphs[0].inputs[0].shape[0] = 7
    assert "<extra>" not in (src.vocabulary or {}) and src.graphs[0].inputs[0].shape[0] == "batch"


def test_write_manifest_hashes_and_reads_back(tmp_path: Path) -> None:
    m = Manifest.from_dict(doc_of(CAPTIONER_V1))
    m.files = {}
    for g in m.graphs:
        (tmp_path / g.file).write_bytes(g.name.encode())
    for f in (m.extra.tensorrt_calibration_cache or {}).values():
        (tmp_path / f).write_bytes(b"cache")
    (tmp_path / m.extra.vectors_file).write_bytes(b"not read with verify only")
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back.files == m.files and len(back.files) == 7 and MANIFEST not in back.files
    assert back.to_json() == (tmp_path / MANIFEST).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- at export
def test_export_writes_the_catalogs_hints(cli_onnx: dict[str, Path]) -> None:
    from mmedge.models import zoo

    cap = read_manifest(cli_onnx["captioner"])
    assert cap.format_version == 2
    assert {g.name: g.hints for g in cap.graphs} == {g.name: g.hints for g in zoo.info("captioner").graphs}
    doc = json.loads((cli_onnx["captioner"] / MANIFEST).read_text())
    assert [("hints" in g) for g in doc["graphs"]] == [False, True, True]
    for name in ("soundnet", "voice-encoder", "refocus"):  # no hints: the document is format_version 1 as before
        assert json.loads((cli_onnx[name] / MANIFEST).read_text())["format_version"] == 1
