"""`mmedge package mobile`: the zip's contents, --verify, tampering, unsafe zips, atomic writes."""

from __future__ import annotations

import json
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import make_golden
from mmedge.cli import app
from mmedge.errors import ArtifactError, CheckFailedError, InputError
from mmedge.export import mobile
from mmedge.export.package import PackageRequest, packager
from mmedge.export.registry import ExportContext, export_context
from mmedge.models import zoo
from mmedge.runtime.manifest import read_manifest
HAS_COREML = __import__("importlib").util.find_spec("coremltools") is not None
runner = CliRunner()


def export(name: str, out: Path, fmt: str, precision: str = "fp32", model=None) -> Path:
    spec = zoo.get(name)
    model = model if model is not None else make_golden.reference_model(name)
    ctx = ExportContext(spec, "tiny", spec.config("tiny"), model, precision, getattr(model, "vocab", None))
    return export_context(ctx, [fmt], out).artifacts[0]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, golden_onnx: dict[str, Path]) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("mobile-artifacts")
    arts = {"captioner-onnx": golden_onnx["captioner"], "soundnet-onnx": golden_onnx["soundnet"]}
    if HAS_COREML:
        arts["captioner-coreml"] = export("captioner", out, "coreml", "fp16")
    return arts


@pytest.fixture(scope="module")
def bundle(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")  # the Android models are ONNX Runtime's .ort format
    out = tmp_path_factory.mktemp("bundle") / "app.zip"
    return packager("mobile")(PackageRequest(list(artifacts.values()), out))


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as z:
        return z.namelist()


def read(zip_path: Path, name: str) -> bytes:
    with zipfile.ZipFile(zip_path) as z:
        return z.read(name)


def rewrite(src: Path, dst: Path, change: dict[str, bytes | None] | None = None,
            add: dict[str, bytes] | None = None) -> Path:
    """Copy a zip, replacing (bytes) or dropping (None) some entries and adding others."""
    change, add = change or {}, add or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in change:
                if change[info.filename] is not None:
                    zout.writestr(info.filename, change[info.filename])
            else:
                zout.writestr(info, zin.read(info.filename))
        for name, data in add.items():
            zout.writestr(name, data)
    return dst


# ----------------------------------------------------------------------------- contents
def test_zip_contents(bundle: Path) -> None:
    got = set(names(bundle))
    want = {"README.md", "manifest.json", "android/required_operators_and_types.config",
            "android/captioner/encoder.ort", "android/captioner/decoder_init.ort", "android/captioner/decoder_step.ort",
            "android/soundnet/model.ort", "captioner/vocabulary.json", "captioner/preprocessing.json",
            "captioner/decoding.json", "captioner/test_vectors/index.json", "soundnet/preprocessing.json",
            "soundnet/test_vectors/index.json"}
    assert want <= got, sorted(want - got)
    assert not any(n.endswith(".onnx") for n in got)
    if HAS_COREML:
        for g in ("encoder", "decoder_init", "decoder_step"):
            assert f"ios/captioner/{g}.mlpackage/Manifest.json" in got
            assert f"ios/captioner/{g}.mlpackage/Data/com.apple.CoreML/model.mlmodel" in got
    ort = read(bundle, "android/required_operators_and_types.config").decode()
    assert "ai.onnx;" in ort and "Conv" in ort and "MatMul" in ort  # ORT's reduced-build operator list
    assert read(bundle, "android/captioner/encoder.ort")[4:8] == b"ORTM"  # ORT format flatbuffer
    readme = read(bundle, "README.md").decode()
    assert "--include_ops_by_config" in readme and "decoding.json" in readme and "--verify" in readme


def test_manifest_hashes_every_file(bundle: Path) -> None:
    doc = json.loads(read(bundle, "manifest.json"))
    assert doc["format"] == "mmedge-mobile" and doc["format_version"] == 1
    assert set(doc["files"]) == set(names(bundle)) - {"manifest.json"}
    import hashlib

    for name, digest in doc["files"].items():
        assert hashlib.sha256(read(bundle, name)).hexdigest() == digest, name
    cap = doc["models"]["captioner"]
    assert cap["android"]["precision"] == "fp32" and cap["config"] == "tiny"
    assert [g["name"] for g in cap["android"]["graphs"]] == ["encoder", "decoder_init", "decoder_step"]
    if HAS_COREML:
        assert cap["ios"]["precision"] == "fp16" and cap["ios"]["image_input"] is True


def test_decoding_json_spells_out_the_beam_search(bundle: Path, artifacts: dict[str, Path]) -> None:
    dec = json.loads(read(bundle, "captioner/decoding.json"))
    vocab = read_manifest(artifacts["captioner-onnx"]).vocabulary
    assert vocab is not None
    assert (dec["start_token"], dec["end_token"]) == (vocab["<start>"], vocab["<end>"])
    assert dec["vocabulary_size"] == len(vocab) == 23 and dec["max_length"] == 51 and dec["beam_size"] == 3
    assert dec["graphs"]["decoder_step"]["android"] == "android/captioner/decoder_step.ort"
    if HAS_COREML:
        assert dec["graphs"]["encoder"]["ios"] == "ios/captioner/encoder.mlpackage"
    assert set(dec["feeds"]) == {"encoder.image", "decoder_init.features", "decoder_step.features",
                                 "decoder_step.att1", "decoder_step.prev_word", "decoder_step.h", "decoder_step.c"}
    assert "h_next" in dec["feeds"]["decoder_step.h"] and "start_token" in dec["feeds"]["decoder_step.prev_word"]
    assert [t["name"] for t in dec["tensors"]["step_outputs"]] == ["log_probs", "h_next", "c_next", "alpha"]
    assert dec["dtypes"]["prev_word"]["android"] == "int64" and any("end_token" in s for s in dec["loop"])
    assert json.loads(read(bundle, "captioner/vocabulary.json")) == vocab
    pre = json.loads(read(bundle, "captioner/preprocessing.json"))
    assert pre["parameters"]["image_size"] == 64 and any("bilinear" in s for s in pre["steps"])


def test_test_vectors_for_the_app(bundle: Path, artifacts: dict[str, Path]) -> None:
    index = json.loads(read(bundle, "captioner/test_vectors/index.json"))
    ref = np.load(artifacts["captioner-onnx"] / "test_vectors.npz")
    for key in ("decoder_step.prev_word", "decoder_step.log_probs", "encoder.image"):
        d = index["arrays"][key]
        arr = np.frombuffer(read(bundle, f"captioner/test_vectors/{d['file']}"), dtype=d["dtype"]).reshape(d["shape"])
        np.testing.assert_array_equal(arr, ref[key])
    beams = index["beam_search"]
    assert beams["expected_tokens"] == [[int(t) for t in row if t >= 0] for row in ref["beam.tokens"]]
    assert beams["beam_size"] == 3 and beams["max_length"] == 20 and len(beams["expected_captions"]) == 2
    assert index["graphs"]["decoder_step"]["expected"][0] == "decoder_step.log_probs"
    if HAS_COREML:  # the iOS encoder takes pixel buffers: expected tokens on 8-bit images too
        assert index["arrays"]["image.encoder.pixels"]["dtype"] == "uint8"
        assert index["beam_search_on_pixels"]["expected_tokens"]


# ----------------------------------------------------------------------------- verify
def test_verify_passes(bundle: Path) -> None:
    path = packager("mobile")(PackageRequest([], bundle, {"verify": bundle}))
    assert path == bundle
    lines: list[str] = []
    reports = {r.artifact.split(":")[-1]: r for r in mobile.check_bundle(bundle, lines.append)}
    assert len(lines) == len(reports) and all(": parity ok (" in line for line in lines)
    assert set(reports) >= {"android/captioner", "android/soundnet"}
    assert all(r.ok for r in reports.values())
    cap = reports["android/captioner"]
    assert cap.beam["tokens_equal"] == [True, True] and max(m.max_rel for m in cap.outputs) < 1e-4


@pytest.mark.parametrize("member", ["android/captioner/decoder_step.ort", "captioner/vocabulary.json",
                                    "ios/captioner/encoder.mlpackage/Data/com.apple.CoreML/weights/weight.bin"])
def test_tampered_file_is_named(member: str, bundle: Path, tmp_path: Path) -> None:
    if member not in names(bundle):
        pytest.skip("no Core ML package in this bundle (coremltools not installed)")
    data = bytearray(read(bundle, member))
    data[len(data) // 2] ^= 0xFF
    bad = rewrite(bundle, tmp_path / "bad.zip", {member: bytes(data)})
    with pytest.raises(CheckFailedError, match=rf"{member}: sha256 does not match manifest\.json"):
        mobile.verify(bad)


def test_missing_and_added_files_are_refused(bundle: Path, tmp_path: Path) -> None:
    gone = rewrite(bundle, tmp_path / "gone.zip", {"captioner/decoding.json": None})
    with pytest.raises(CheckFailedError, match=r"captioner/decoding\.json: missing"):
        mobile.verify(gone)
    added = rewrite(bundle, tmp_path / "added.zip", add={"android/extra.so": b"\x7fELF"})
    with pytest.raises(CheckFailedError, match=r"android/extra\.so: not listed in manifest\.json"):
        mobile.verify(added)


@pytest.mark.parametrize("entry", ["../evil.txt", "captioner/../../evil.txt", "/tmp/mmedge-evil.txt",
                                   "C:/evil.txt"])
def test_path_traversal_is_refused_before_extraction(entry: str, bundle: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    crafted = rewrite(bundle, work / "crafted.zip", add={entry: b"owned"})
    with pytest.raises(InputError, match="points outside the bundle"):
        mobile.verify(crafted)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/mmedge-evil.txt").exists()
    assert sorted(p.name for p in work.iterdir()) == ["crafted.zip"]


def test_symlink_entry_is_refused(bundle: Path, tmp_path: Path) -> None:
    crafted = tmp_path / "link.zip"
    rewrite(bundle, crafted)
    with zipfile.ZipFile(crafted, "a") as z:
        info = zipfile.ZipInfo("captioner/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="link or special file"):
        mobile.verify(crafted)


def test_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "app.zip"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match=r"app\.zip: not a zip file"):
        mobile.verify(p)
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ArtifactError, match="not an mmedge mobile bundle"):
        mobile.verify(plain)


# ----------------------------------------------------------------------------- building: refusals, atomicity
def test_bad_artifact_sets_are_refused_before_any_work(artifacts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "app.zip"
    with pytest.raises(InputError, match="second onnx artifact of captioner"):
        packager("mobile")(PackageRequest([artifacts["captioner-onnx"]] * 2, out))
    other = export("captioner", tmp_path / "other", "onnx", model=zoo.get("captioner").create("tiny"))
    if HAS_COREML:
        with pytest.raises(InputError, match="reference outputs differ"):
            packager("mobile")(PackageRequest([other, artifacts["captioner-coreml"]], out))
    with pytest.raises(InputError, match=r"is a \.zip file"):
        packager("mobile")(PackageRequest([artifacts["captioner-onnx"]], tmp_path / "app.tar"))
    with pytest.raises(ArtifactError, match="nope: no such folder"):
        packager("mobile")(PackageRequest([tmp_path / "nope"], out))
    assert not out.exists() and not list(tmp_path.glob(".app.zip*"))


def test_nothing_half_written_on_failure(artifacts: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "app.zip"
    out.write_bytes(b"previous bundle")

    def boom(*args: object, **kwargs: object) -> None:
        raise InputError("ONNX Runtime mobile (.ort) conversion failed: simulated")

    monkeypatch.setattr(mobile, "convert_to_ort", boom)
    with pytest.raises(InputError, match="simulated"):
        packager("mobile")(PackageRequest([artifacts["soundnet-onnx"]], out))
    monkeypatch.undo()

    def replace_fails(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(mobile.os, "replace", replace_fails)
    with pytest.raises(OSError, match="disk full"):
        packager("mobile")(PackageRequest([artifacts["soundnet-onnx"]], out))
    monkeypatch.undo()
    assert out.read_bytes() == b"previous bundle"  # the old bundle untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.zip"]  # no temporary zip left


def test_same_artifacts_give_the_same_files(artifacts: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    a = packager("mobile")(PackageRequest([artifacts["soundnet-onnx"]], tmp_path / "a.zip"))
    b = packager("mobile")(PackageRequest([artifacts["soundnet-onnx"]], tmp_path / "b.zip"))
    assert names(a) == names(b) == sorted(names(a))
    for name in names(a):  # ORT's .ort serializer orders its tables differently from run to run
        if not name.endswith(".ort") and name != "manifest.json":
            assert read(a, name) == read(b, name), name
    assert "/tmp" not in read(a, "android/required_operators_and_types.config").decode()
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zipfile.ZipFile(a).infolist())


def test_cli_package_and_verify(artifacts: dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.zip"
    res = runner.invoke(app, ["package", "mobile", "--artifact", str(artifacts["soundnet-onnx"]),
                              "--out", str(out), "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == {"bundle": str(out)}
    res = runner.invoke(app, ["package", "mobile", "--verify", str(out)])
    assert res.exit_code == 0, res.stderr
    bad = rewrite(out, tmp_path / "bad.zip", {"soundnet/preprocessing.json": b"{}"})
    res = runner.invoke(app, ["package", "mobile", "--verify", str(bad)])
    assert res.exit_code == 1  # the check ran and found a mismatch
    assert res.stderr.strip().splitlines() == [
        f"mmedge: error: {bad}: soundnet/preprocessing.json: sha256 does not match manifest.json "
        f"(file changed or truncated)"]
    added = rewrite(out, tmp_path / "added.zip", add={"soundnet/extra.bin": b"x"})
    res = runner.invoke(app, ["package", "mobile", "--verify", str(added)])
    assert res.exit_code == 1 and "soundnet/extra.bin: not listed in manifest.json" in res.stderr
    # not a bundle at all: bad input (2), not a failed check (1)
    for path, message in [(tmp_path / "missing.zip", "bundle not found"),
                          (tmp_path / "cli.json", "not a zip file"), (tmp_path / "plain.zip", "not an mmedge mobile")]:
        if path.name == "cli.json":
            path.write_text("{}")
        elif path.name == "plain.zip":
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("hello.txt", "hi")
        res = runner.invoke(app, ["package", "mobile", "--verify", str(path)])
        assert res.exit_code == 2, (path, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr


def test_verify_exit_codes_by_error_class() -> None:
    """Content that does not match is a failed check (1); an unreadable bundle is bad input (2)."""
    from mmedge.errors import CheckFailedError

    assert CheckFailedError.exit_code == 1 and ArtifactError.exit_code == InputError.exit_code == 2
    assert not issubclass(CheckFailedError, InputError)


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions need macOS")
@pytest.mark.requires_macos
def test_verify_runs_the_ios_packages_on_macos(bundle: Path) -> None:
    assert "ios/captioner" in {r.artifact.split(":")[-1] for r in mobile.verify(bundle)} or not HAS_COREML
