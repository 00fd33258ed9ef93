"""Hostile artifacts and bundles (issue 16): paths that point outside their folder, malformed
manifests and test vectors, Jetson members outside `mmedge-jetson/`, bundle bombs, hostile word
maps. Every case asserts, through the CLI: the exact exit code (2: bad input; 1: a `--verify`
content mismatch), exactly one stderr line `mmedge: error: ...` naming the file, and that nothing
was written. Bombs run in a child process under an address-space cap (RLIMIT_AS) and report
their peak memory."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from mmedge.cli import run
from mmedge.errors import InputError
from mmedge.runtime.manifest import MANIFEST, read_manifest
from mmedge.runtime.schema import SCHEMA_DIR, load_schema, validate
from mmedge.runtime.vocab import Vocabulary

MEMORY_CAP = 1 << 30  # RLIMIT_AS of the bomb children: the torch-free runtime fits in far less
PEAK_RSS_LIMIT_MB = 400


@pytest.fixture(scope="module")
def arts(cli_onnx: dict[str, Path]) -> dict[str, Path]:
    return cli_onnx


# ----------------------------------------------------------------------------- helpers
def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def expect(argv: list[str], code: int, names: str, capsys: pytest.CaptureFixture[str], watch: Path,
           *needles: str) -> str:
    """Run the CLI: exit `code`, exactly one line `mmedge: error: ...` naming `names`, nothing written."""
    capsys.readouterr()
    before = tree(watch)
    rc = run([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert re.fullmatch(r"mmedge: error: [^\n]+\n", err), f"not exactly one error line: {err!r}"
    assert rc == code, f"exit {rc}, expected {code}: {err}"
    assert names in err, err
    for n in needles:
        assert n in err, err
    assert tree(watch) == before, "something was written or changed"
    return err


def copy_art(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def edit(art: Path, change: Callable[[dict[str, Any]], Any], rehash: bool = True) -> Path:
    """Change the manifest as an attacker would: the listed files' sha256 made to agree."""
    m = json.loads((art / MANIFEST).read_text())
    change(m)
    if rehash and isinstance(m.get("files"), dict):
        for rel in list(m["files"]):
            p = art / rel if isinstance(rel, str) and not rel.startswith("/") else Path(rel)
            if isinstance(rel, str) and p.is_file():
                m["files"][rel] = sha(p)
    (art / MANIFEST).write_text(json.dumps(m))
    return art


def parity(art: Path) -> list[str]:
    return ["parity", "--artifact", str(art)]


# ----------------------------------------------------------------------------- paths out of the folder
def _absolute_graph(a: Path) -> None:
    edit(a, lambda m: (m["graphs"][0].update(file="/etc/passwd"), m["files"].update({"/etc/passwd": "0" * 64})))


def _dotdot_graph(a: Path) -> None:
    shutil.copyfile(a / "model.onnx", a.parent / "elsewhere.onnx")
    edit(a, lambda m: (m["graphs"][0].update(file="../elsewhere.onnx"), m["files"].update({"../elsewhere.onnx": ""})))


def _dotdot_vectors(a: Path) -> None:
    np.savez(a.parent / "v.npz", x=np.zeros(1))
    edit(a, lambda m: m["extra"].update(test_vectors="../v.npz"))


def _inner_dotdot(a: Path) -> None:
    edit(a, lambda m: m["graphs"][0].update(file="sub/../../model.onnx"))


def _backslash(a: Path) -> None:
    edit(a, lambda m: m["graphs"][0].update(file="..\\model.onnx"))


def _drive(a: Path) -> None:
    edit(a, lambda m: m["extra"].update(test_vectors="C:/test_vectors.npz"))


def _nul(a: Path) -> None:
    edit(a, lambda m: m["graphs"][0].update(file="model.onnx\x00.txt"))


def _files_key_outside(a: Path) -> None:
    (a.parent / "x").write_text("x")
    edit(a, lambda m: m["files"].update({"../x": sha(a.parent / "x")}))


def _symlink_graph(a: Path) -> None:  # the link's target hashes as listed: only the link gives it away
    shutil.move(a / "model.onnx", a.parent / "real.onnx")
    (a / "model.onnx").symlink_to(a.parent / "real.onnx")


def _symlink_folder(a: Path) -> None:
    out = a.parent / "outside"
    out.mkdir()
    shutil.move(a / "model.onnx", out / "model.onnx")
    (a / "sub").symlink_to(out)
    edit(a, lambda m: (m["graphs"][0].update(file="sub/model.onnx"), m["files"].pop("model.onnx"),
                       m["files"].update({"sub/model.onnx": ""})))


def _symlink_vectors(a: Path) -> None:
    shutil.move(a / "test_vectors.npz", a.parent / "tv.npz")
    (a / "test_vectors.npz").symlink_to(a.parent / "tv.npz")


def _symlink_manifest(a: Path) -> None:
    shutil.move(a / MANIFEST, a.parent / "m.json")
    (a / MANIFEST).symlink_to(a.parent / "m.json")


PATH_CASES = {
    "absolute-graph": (_absolute_graph, "is not allowed: an absolute path"),
    "dotdot-graph": (_dotdot_graph, "'..', '.' and empty components are not allowed"),
    "dotdot-test-vectors": (_dotdot_vectors, "$.extra.test_vectors"),
    "inner-dotdot": (_inner_dotdot, "$.graphs[0].file"),
    "backslash": (_backslash, "$.graphs[0].file"),
    "drive-letter": (_drive, "$.extra.test_vectors"),
    "nul-byte": (_nul, "$.graphs[0].file"),
    "files-key-outside": (_files_key_outside, "key not allowed"),
    "symlinked-graph": (_symlink_graph, "model.onnx: is a symbolic link"),
    "symlinked-folder": (_symlink_folder, "sub: is a symbolic link"),
    "symlinked-test-vectors": (_symlink_vectors, "test_vectors.npz: is a symbolic link"),
    "symlinked-manifest": (_symlink_manifest, "manifest.json: is a symbolic link"),
}


@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_manifest_paths_stay_inside_the_artifact(case: str, arts: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    setup, needle = PATH_CASES[case]
    art = copy_art(arts["soundnet"], tmp_path / "art")
    setup(art)
    expect(parity(art), 2, str(art), capsys, tmp_path, needle)


def test_caption_refuses_a_graph_outside_the_artifact(arts: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    art = copy_art(arts["captioner"], tmp_path / "art")
    edit(art, lambda m: m["graphs"][0].update(file="/etc/passwd"))
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "p.png")
    expect(["caption", tmp_path / "p.png", "--artifact", art], 2, "manifest.json", capsys, tmp_path,
           "$.graphs[0].file")


# ----------------------------------------------------------------------------- malformed manifests
def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        node: Any = m
        keys = path.split("/")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if value is _DELETE:
            if isinstance(node, list):
                del node[int(last)]
            else:
                del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return change


_DELETE = object()

# (artifact, change, JSON path or words the one line must hold)
MALFORMED: dict[str, tuple[str, Callable[[dict[str, Any]], Any], str]] = {
    "graphs-a-string": ("soundnet", _set("graphs", "model.onnx"), "$.graphs: expected an array"),
    "graphs-empty": ("soundnet", _set("graphs", []), "$.graphs: expected at least 1"),
    "graph-no-file": ("soundnet", _set("graphs/0/file", _DELETE), "$.graphs[0].file: required"),
    "graph-file-a-number": ("soundnet", _set("graphs/0/file", 7), "$.graphs[0].file"),
    "inputs-a-dict": ("soundnet", _set("graphs/0/inputs", {"name": "x"}), "$.graphs[0].inputs: expected an array"),
    "tensor-no-dtype": ("soundnet", _set("graphs/0/inputs/0/dtype", _DELETE), "$.graphs[0].inputs[0].dtype"),
    "tensor-extra-key": ("soundnet", _set("graphs/0/inputs/0/strides", [1]), "$.graphs[0].inputs[0].strides"),
    "dtype-object": ("soundnet", _set("graphs/0/inputs/0/dtype", "object"), "$.graphs[0].inputs[0].dtype"),
    "dim-zero": ("soundnet", _set("graphs/0/outputs/0/shape/1", 0), "$.graphs[0].outputs[0].shape[1]"),
    "dim-huge": ("soundnet", _set("graphs/0/outputs/0/shape/1", 10 ** 15), "$.graphs[0].outputs[0].shape[1]"),
    "dim-float": ("soundnet", _set("graphs/0/outputs/0/shape/1", 10.0), "$.graphs[0].outputs[0].shape[1]"),
    "dim-name-with-spaces": ("soundnet", _set("graphs/0/inputs/0/shape/0", "a b"), "$.graphs[0].inputs[0].shape[0]"),
    "rank-huge": ("soundnet", _set("graphs/0/inputs/0/shape", [1] * 100), "$.graphs[0].inputs[0].shape"),
    "model-a-number": ("soundnet", _set("model", 3), "$.model"),
    "pipeline-a-list": ("soundnet", _set("pipeline", ["audio"]), "$.pipeline"),
    "missing-preprocessing": ("soundnet", _set("preprocessing", _DELETE), "$.preprocessing: required"),
    "missing-graphs": ("soundnet", _set("graphs", _DELETE), "malformed manifest at $.graphs: required"),
    "sample-rate-huge": ("soundnet", _set("preprocessing/sample_rate", 10 ** 12), "$.preprocessing.sample_rate"),
    "sample-rate-zero": ("soundnet", _set("preprocessing/sample_rate", 0), "$.preprocessing.sample_rate"),
    "sample-rate-string": ("soundnet", _set("preprocessing/sample_rate", "8000"), "$.preprocessing.sample_rate"),
    "audio-without-sample-rate": ("soundnet", _set("preprocessing/sample_rate", _DELETE),
                                  "$.preprocessing.sample_rate: required"),
    "image-size-zero": ("captioner", _set("preprocessing/image_size", 0), "$.preprocessing.image_size"),
    "image-size-huge": ("captioner", _set("preprocessing/image_size", 10 ** 9), "$.preprocessing.image_size"),
    "std-zero": ("captioner", _set("preprocessing/std", [0, 1, 1]), "$.preprocessing.std[0]"),
    "min-samples-negative": ("soundnet", _set("extra/min_samples", -5), "$.extra.min_samples"),
    "min-samples-huge": ("soundnet", _set("extra/min_samples", 10 ** 30), "$.extra.min_samples"),
    "test-vectors-a-number": ("soundnet", _set("extra/test_vectors", 1), "$.extra.test_vectors"),
    "files-not-sha256": ("soundnet", _set("files/model.onnx", "abc"), "$.files[\"model.onnx\"]"),
    "files-a-list": ("soundnet", _set("files", ["model.onnx"]), "$.files: expected an object"),
    "format-version-string": ("soundnet", _set("format_version", "1"), "$.format_version"),
    "format-version-bool": ("soundnet", _set("format_version", True), "$.format_version"),
    "format-version-zero": ("soundnet", _set("format_version", 0), "$.format_version"),
    "labels-wrong-count": ("soundnet", _set("labels", ["dog", "cat", "car"]), "3 labels but output 'objects' has 10"),
    "labels-not-strings": ("soundnet", _set("labels", [1] * 10), "$.labels[0]"),
    "class-output-unknown": ("soundnet", _set("extra/class_output", "nope"), "$.extra.class_output"),
    "duplicate-graph": ("soundnet", lambda m: m["graphs"].append(dict(m["graphs"][0])), "appears twice"),
    "captioner-without-decoder": ("captioner", lambda m: m["graphs"].pop(), "needs a graph 'decoder_step'"),
    "vocabulary-strings": ("captioner", lambda m: m["vocabulary"].update({"<start>": "1"}), "$.vocabulary"),
    "vocabulary-no-start": ("captioner", lambda m: m["vocabulary"].pop("<start>"), "$.vocabulary"),
    "vocabulary-other-model": ("captioner", lambda m: m["vocabulary"].update({"extra-word": len(m["vocabulary"])}),
                               "the vocabulary belongs to another model"),
    "vocabulary-missing": ("captioner", _set("vocabulary", None), "$.vocabulary"),
    "tools-nested": ("soundnet", _set("tools/python", {"v": 3}), "$.tools.python"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_is_one_line(case: str, arts: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model, change, needle = MALFORMED[case]
    art = edit(copy_art(arts[model], tmp_path / "art"), change, rehash=not case.startswith("files-"))
    err = expect(parity(art), 2, str(art / MANIFEST), capsys, tmp_path, needle)
    assert "malformed manifest" in err or "unknown fields" in err


RAW: dict[str, Callable[[Path], None]] = {
    "deep-nesting": lambda p: p.write_text('{"format_version": 1, "model_config": ' + "[" * 100_000 + "]" * 100_000
                                           + "}"),
    "nesting-past-the-depth-limit": lambda p: p.write_text('{"format_version": 1, "extra": ' + "[" * 80 + "]" * 80
                                                           + "}"),
    "nan": lambda p: p.write_text(p.read_text().replace('"format_version": 1', '"format_version": NaN')),
    "duplicate-key": lambda p: p.write_text(p.read_text().replace('"format_version": 1',
                                                                  '"format_version": 1, "format_version": 1')),
    "integer-of-5000-digits": lambda p: p.write_text(p.read_text().replace('"format_version": 1',
                                                                           '"format_version": ' + "9" * 5000)),
    "not-utf8": lambda p: p.write_bytes(b'{"model": "\xff"}'),
    "a-list": lambda p: p.write_text("[1, 2]"),
    "empty": lambda p: p.write_bytes(b""),
    "a-folder": lambda p: (p.unlink(), p.mkdir()),
    "a-fifo": lambda p: (p.unlink(), os.mkfifo(p)),
}


@pytest.mark.parametrize("case", sorted(RAW))
def test_unparseable_manifest_is_one_line(case: str, arts: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    art = copy_art(arts["soundnet"], tmp_path / "art")
    RAW[case](art / MANIFEST)
    expect(parity(art), 2, str(art / MANIFEST), capsys, tmp_path)


def test_huge_sparse_manifest_is_refused_before_reading(arts: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    art = copy_art(arts["soundnet"], tmp_path / "art")
    with open(art / MANIFEST, "r+b") as f:
        f.truncate(100 << 20)  # 100 MB, sparse: takes no disk
    expect(parity(art), 2, str(art / MANIFEST), capsys, tmp_path, "over the 16 MiB limit")


# ----------------------------------------------------------------------------- test vectors
def _npz_header_bomb(p: Path) -> None:
    """A member whose .npy header claims 10^12 float64 while holding 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (1_000_000, 1_000_000)})
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("model.waveform.npy", header.getvalue() + b"\0" * 16)


def _vectors_change(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        with np.load(p) as z:
            v = {k: z[k] for k in z.files}
        change(v)
        np.savez(p, **v)
    return write


VECTORS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "pickled-object": ("soundnet", lambda p: np.savez(p, **{"model.waveform": np.array([{"x": 1}], dtype=object)}),
                       "no pickled objects"),
    "not-a-zip": ("soundnet", lambda p: p.write_bytes(b"\x93NUMPY not a zip at all"), "not an .npz file"),
    "plain-npy": ("soundnet", lambda p: np.save(open(p, "wb"), np.zeros(3)), "not an .npz file"),
    "truncated-zip": ("soundnet", lambda p: p.write_bytes(p.read_bytes()[:200]), "test_vectors.npz"),
    "header-bomb": ("soundnet", _npz_header_bomb, "claims shape"),
    "missing-key": ("soundnet", _vectors_change(lambda v: v.pop("model.objects")), "no test vector 'model.objects'"),
    "wrong-dtype": ("soundnet", _vectors_change(lambda v: v.update({"model.waveform": v["model.waveform"]
                                                                    .astype(np.int64)})), "is int64"),
    "wrong-shape": ("soundnet", _vectors_change(lambda v: v.update({"model.objects": np.zeros((2, 3), np.float32)})),
                    "model.objects"),
    "beam-huge": ("captioner", _vectors_change(lambda v: v.update({"beam.settings": np.array([10 ** 6, 10 ** 6])})),
                  "beam.settings"),
    "beam-tokens-strings": ("captioner", _vectors_change(lambda v: v.update({"beam.tokens": np.array([["a"]])})),
                            "test_vectors.npz"),
    "beam-incomplete": ("captioner", _vectors_change(lambda v: v.pop("beam.scores")), "beam.scores"),
}


@pytest.mark.parametrize("case", sorted(VECTORS))
def test_hostile_test_vectors_are_one_line(case: str, arts: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    model, change, needle = VECTORS[case]
    art = copy_art(arts[model], tmp_path / "art")
    change(art / "test_vectors.npz")
    edit(art, lambda m: None)  # rehash: the manifest agrees with the planted file
    expect(parity(art), 2, str(art / "test_vectors.npz"), capsys, tmp_path, needle)


def test_every_existing_artifact_still_reads(arts: dict[str, Path]) -> None:
    from mmedge.runtime.manifest import load_test_vectors

    for art in arts.values():
        m = read_manifest(art)
        validate(json.loads((art / MANIFEST).read_text()), "manifest.schema.json", str(art))
        assert load_test_vectors(art, m, with_images=True)


# ----------------------------------------------------------------------------- the published schemas
def test_schemas_ship_with_the_package() -> None:
    names = sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json"))
    assert names == ["jetson-bundle.schema.json", "manifest.schema.json", "mobile-bundle.schema.json",
                     "mobile-test-vectors.schema.json"]
    for n in names:
        s = load_schema(n)
        assert s["$schema"].startswith("https://json-schema.org/draft/2020-12")
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert "schemas/*.json" in pyproject


# ----------------------------------------------------------------------------- Jetson bundles
def _jetson_stage(root: Path, art: Path, change: Callable[[Path, dict[str, Any]], None] | None = None) -> Path:
    from mmedge.export.jetson import BUNDLE_DIR, BUNDLE_FORMAT

    stage = root / "stage" / BUNDLE_DIR
    m = read_manifest(art)
    rel = f"artifacts/{m.model}-{m.config}-onnx-fp32"
    shutil.copytree(art, stage / rel)
    (stage / "build_engines.sh").write_text("#!/bin/sh\n")
    g = m.graphs[0]
    doc = {"format": BUNDLE_FORMAT, "format_version": 1,
           "groups": [{"name": f"{m.model}-{m.config}", "model": m.model, "config": m.config, "pipeline": m.pipeline,
                       "fp32": rel, "int8": None, "fp16_onnx": None, "notes": [],
                       "graphs": {g.name: {"onnx": g.file, "min": "a:1x1", "opt": "a:1x1", "max": "a:1x1",
                                           "dla": False}}}],
           "tensorrt": {"script": "build_engines.sh"}, "tools": {}}
    if change:
        change(stage, doc)
    doc.setdefault("files", {p.relative_to(stage).as_posix(): sha(p) for p in sorted(stage.rglob("*"))
                             if p.is_file()})
    (stage / "bundle.json").write_text(json.dumps(doc).replace('"@@DEEP@@"', "[" * 100_000 + "]" * 100_000))
    return stage


def _jetson_bundle(tmp: Path, art: Path, change: Callable[[Path, dict[str, Any]], None] | None = None,
                   extra_members: dict[str, bytes] | None = None) -> Path:
    stage = _jetson_stage(tmp, art, change)
    out = tmp / "in" / "bundle.tar.gz"
    out.parent.mkdir(exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for p in [stage, *sorted(stage.rglob("*"))]:
            tar.add(p, p.relative_to(stage.parent).as_posix(), recursive=False)
        for name, data in (extra_members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shutil.rmtree(tmp / "stage")
    return out


def test_honest_handmade_jetson_bundle_verifies(arts: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _jetson_bundle(tmp_path, arts["soundnet"])
    assert run(["package", "jetson", "--verify", str(bundle)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("name", ["mmedge-jetson.sh", "mmedge-jetsonX/build_engines.sh", "./mmedge-jetson/x",
                                  "mmedge-jetson/../x", "/mmedge-jetson/x", "mmedge-jetson//x",
                                  "mmedge-jetson/a\\..\\..\\x"])
def test_jetson_member_outside_the_folder(name: str, arts: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _jetson_bundle(tmp_path, arts["soundnet"], extra_members={name: b"#!/bin/sh\nrm -rf ~\n"})
    expect(["package", "jetson", "--verify", bundle], 2, str(bundle), capsys, tmp_path, "unsafe member")


def _nested_path(stage: Path, doc: dict[str, Any]) -> None:
    mpath = next(stage.glob("artifacts/*/manifest.json"))
    m = json.loads(mpath.read_text())
    m["files"]["../../../../etc/passwd"] = "0" * 64
    mpath.write_text(json.dumps(m))


JETSON_BAD: dict[str, tuple[Callable[[Path, dict[str, Any]], None], int, str]] = {
    "nested-manifest-path-outside": (_nested_path, 2, "key not allowed"),
    "group-folder-outside": (lambda s, d: d["groups"][0].update(fp32="../artifacts"), 2, "$.groups[0].fp32"),
    "files-key-absolute": (lambda s, d: d.update(files={"/etc/passwd": "0" * 64}), 2, "$.files"),
    "groups-a-string": (lambda s, d: d.update(groups="all"), 2, "$.groups"),
    "format-version-newer": (lambda s, d: d.update(format_version=7), 2, "format_version 7 is newer"),
    "deep-nesting": (lambda s, d: d.update(tensorrt="@@DEEP@@"), 2, "bundle.json"),
    "graph-not-in-bundle": (lambda s, d: d["groups"][0]["graphs"]["model"].update(onnx="gone.onnx"), 2,
                            "does not hold"),
    "file-changed": (lambda s, d: d.update(files={**{p.relative_to(s).as_posix(): sha(p) for p in s.rglob("*")
                                                     if p.is_file()}, "build_engines.sh": "0" * 64}), 1,
                     "changed or missing"),
    "file-missing": (lambda s, d: d.update(files={**{p.relative_to(s).as_posix(): sha(p) for p in s.rglob("*")
                                                     if p.is_file()}, "gone.txt": "0" * 64}), 1, "gone.txt"),
}


@pytest.mark.parametrize("case", sorted(JETSON_BAD))
def test_hostile_jetson_descriptor(case: str, arts: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    change, code, needle = JETSON_BAD[case]
    bundle = _jetson_bundle(tmp_path, arts["soundnet"], change)
    expect(["package", "jetson", "--verify", bundle], code, str(bundle), capsys, tmp_path, needle)


# ----------------------------------------------------------------------------- bombs (memory-capped child)
CHILD = """
import re, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from mmedge.cli import run
code = run(sys.argv[1:])
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's across exec)
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
sys.stdout.write("peak_rss_mb=%d\\n" % (peak_kb // 1024))
sys.exit(code)
"""


def capped(argv: list[Any], tmp: Path) -> tuple[int, str, int]:
    """Run the CLI in a child under RLIMIT_AS; (exit code, stderr, peak RSS in MB)."""
    private = tmp / "private-tmp"
    private.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(private), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", CHILD.format(cap=MEMORY_CAP), *map(str, argv)], capture_output=True,
                         text=True, env=env, timeout=120)
    peak = int(re.search(r"peak_rss_mb=(\d+)", res.stdout).group(1)) if "peak_rss_mb" in res.stdout else -1
    assert list(private.iterdir()) == [], "the verifier left files in the temp folder"
    return res.returncode, res.stderr, peak


def _one_line_from_child(code: int, err: str, peak: int, expected: int, *needles: str) -> None:
    assert re.fullmatch(r"mmedge: error: [^\n]+\n", err), f"not exactly one error line: {err!r}"
    assert code == expected, err
    for n in needles:
        assert n in err, err
    assert 0 < peak < PEAK_RSS_LIMIT_MB, f"peak RSS {peak} MB"


def _tar_bomb(out: Path, inflated: int) -> Path:
    """A .tar.gz of ~`inflated / 1000` bytes whose one member inflates to `inflated` bytes of zeros
    (multi-member gzip: one compressed 64 MiB chunk repeated)."""
    info = tarfile.TarInfo("mmedge-jetson/artifacts/x/big.bin")
    info.size = inflated
    chunk = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    with open(out, "wb") as f:
        f.write(gzip.compress(info.tobuf(tarfile.PAX_FORMAT)))
        for _ in range(inflated // (64 << 20) + 1):
            f.write(chunk)
    return out


def test_jetson_tar_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    bundle = _tar_bomb(tmp_path / "bomb.tar.gz", 4 << 30)
    assert bundle.stat().st_size < 8 << 20
    code, err, peak = capped(["package", "jetson", "--verify", bundle], tmp_path)
    _one_line_from_child(code, err, peak, 2, str(bundle), "a bomb?")


def test_jetson_many_members_bomb(tmp_path: Path) -> None:
    bundle = tmp_path / "many.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for i in range(300):
            info = tarfile.TarInfo(f"mmedge-jetson/f{i}")
            info.size = 1 << 20
            tar.addfile(info, io.BytesIO(b"\0" * info.size))
    bundle.write_bytes(gzip.compress(raw.getvalue(), 9))
    code, err, peak = capped(["package", "jetson", "--verify", bundle], tmp_path)
    _one_line_from_child(code, err, peak, 2, str(bundle), "a bomb?")


def _zip_declared_huge(out: Path) -> Path:
    """A zip whose central directory declares a 4 GiB member holding 10 bytes."""
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.json", "{}")
        z.writestr("android/model.ort", b"0123456789")
    data = bytearray(out.read_bytes())
    at = data.rfind(b"PK\x01\x02")  # the last central-directory entry: android/model.ort
    data[at + 24:at + 28] = (0xFFFF0000).to_bytes(4, "little")  # uncompressed size
    out.write_bytes(bytes(data))
    return out


def _zip_deflate_bomb(out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps({"format": "mmedge-mobile", "format_version": 1, "models": {},
                                                "files": {}}))
        info = zipfile.ZipInfo("android/zeros.ort")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            block = b"\0" * (16 << 20)
            for _ in range(24):  # 384 MiB
                f.write(block)
    return out


def _zip_many_unlisted(out: Path) -> Path:
    """A manifest that lists nothing, then 60 MB of incompressible members: refused before extraction."""
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.json", json.dumps({"format": "mmedge-mobile", "format_version": 1,
                                                "models": {"m": {"config": "c", "pipeline": "audio",
                                                                 "preprocessing": "m/p.json",
                                                                 "test_vectors": "m/tv"}}, "files": {}}))
        rng = np.random.default_rng(0)
        for i in range(6):
            z.writestr(f"m/blob{i}.bin", rng.bytes(10 << 20))
    return out


@pytest.mark.parametrize("kind,code,needle", [("declared-huge", 2, "a zip bomb?"), ("deflate-bomb", 2, "a zip bomb?"),
                                              ("unlisted-before-extraction", 1, "not listed in manifest.json")])
def test_mobile_zip_bombs(kind: str, code: int, needle: str, tmp_path: Path) -> None:
    make = {"declared-huge": _zip_declared_huge, "deflate-bomb": _zip_deflate_bomb,
            "unlisted-before-extraction": _zip_many_unlisted}[kind]
    bundle = make(tmp_path / "app.zip")
    c, err, peak = capped(["package", "mobile", "--verify", bundle], tmp_path)
    _one_line_from_child(c, err, peak, code, str(bundle), needle)


MOBILE_DESCRIPTORS: dict[str, tuple[Any, str]] = {
    "models-a-list": ({"format": "mmedge-mobile", "format_version": 1, "models": [], "files": {}}, "$.models"),
    "files-outside": ({"format": "mmedge-mobile", "format_version": 1,
                       "models": {"m": {"config": "c", "pipeline": "audio", "preprocessing": "p", "test_vectors": "t"}},
                       "files": {"../x": "0" * 64}}, "$.files"),
    "model-name-a-path": ({"format": "mmedge-mobile", "format_version": 1,
                           "models": {"../m": {"config": "c", "pipeline": "audio", "preprocessing": "p",
                                               "test_vectors": "t"}}, "files": {}}, "$.models"),
    "preprocessing-absolute": ({"format": "mmedge-mobile", "format_version": 1,
                                "models": {"m": {"config": "c", "pipeline": "audio", "preprocessing": "/etc/passwd",
                                                 "test_vectors": "t"}}, "files": {}},
                               "$.models.m.preprocessing"),
    "deep": ('{"format": "mmedge-mobile", "format_version": 1, "models": ' + "[" * 100_000 + "]" * 100_000 + "}",
             "manifest.json"),
    "newer": ({"format": "mmedge-mobile", "format_version": 9, "models": {}, "files": {}}, "newer"),
}


@pytest.mark.parametrize("case", sorted(MOBILE_DESCRIPTORS))
def test_hostile_mobile_descriptor(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc, needle = MOBILE_DESCRIPTORS[case]
    bundle = tmp_path / "in" / "app.zip"
    bundle.parent.mkdir()
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("manifest.json", doc if isinstance(doc, str) else json.dumps(doc))
    expect(["package", "mobile", "--verify", bundle], 2, str(bundle), capsys, tmp_path, needle)


def test_mobile_test_vector_index_paths_stay_inside(tmp_path: Path) -> None:
    from mmedge.errors import ArtifactError
    from mmedge.export.mobile import read_vectors

    root = tmp_path / "b"
    (root / "m" / "tv").mkdir(parents=True)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    for file, needle in [("../../secret.bin", "is not allowed"), ("/etc/passwd", "is not allowed")]:
        (root / "m" / "tv" / "index.json").write_text(json.dumps(
            {"arrays": {"g.x": {"file": file, "dtype": "float32", "shape": [2]}}, "graphs": {}}))
        with pytest.raises(ArtifactError, match=needle):
            read_vectors(root, "m/tv")
    (root / "m" / "tv" / "x.bin").write_bytes(b"\0" * 8)
    (root / "m" / "tv" / "index.json").write_text(json.dumps(
        {"arrays": {"g.x": {"file": "x.bin", "dtype": "float32", "shape": [1000000, 1000000]}}, "graphs": {}}))
    with pytest.raises(ArtifactError, match="holds 8 bytes"):
        read_vectors(root, "m/tv")


# ----------------------------------------------------------------------------- word maps
def _wordmap_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    big = tmp / "big.json"
    with open(big, "wb") as f:
        f.truncate((64 << 20) + 1)
    fifo = tmp / "fifo.json"
    os.mkfifo(fifo)
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp / "bools.json").write_text('{"<start>": true, "<end>": 1}')
    (tmp / "garbage.json").write_bytes(b"\xff\xfe\x00")
    (tmp / "gappy.json").write_text('{"<start>": 0, "<end>": 5}')
    (tmp / "folder.json").mkdir()
    return {"dev-zero": (Path("/dev/zero"), "character device"), "fifo": (fifo, "FIFO"),
            "over-64-MiB": (big, "over the 64 MiB limit"), "deep": (tmp / "deep.json", "nested more than"),
            "bool-ids": (tmp / "bools.json", "integer ids"), "not-utf8": (tmp / "garbage.json", "not a JSON word map"),
            "gaps": (tmp / "gappy.json", "without gaps"), "folder": (tmp / "folder.json", "folder"),
            "missing": (tmp / "none.json", "not found")}


def test_hostile_word_maps_are_one_line(tmp_path: Path) -> None:
    for name, (path, needle) in _wordmap_cases(tmp_path).items():
        with pytest.raises(InputError) as e:
            Vocabulary.load(path)
        msg = str(e.value)
        assert len(msg.splitlines()) == 1 and str(path) in msg and needle in msg, (name, msg)


def test_mobile_entry_under_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "in" / "app.zip"
    bundle.parent.mkdir()
    files = {"m/a": b"x", "m/a/b": b"y"}
    doc = {"format": "mmedge-mobile", "format_version": 1,
           "models": {"m": {"config": "c", "pipeline": "audio", "preprocessing": "m/a", "test_vectors": "m/t"}},
           "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}}
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("manifest.json", json.dumps(doc))
        for k, v in files.items():
            z.writestr(k, v)
    expect(["package", "mobile", "--verify", bundle], 2, str(bundle), capsys, tmp_path, "cannot extract")
