"""`mmedge package jetson --artifact ONNX_DIR... --out bundle.tar.gz`: everything a Jetson needs.

TensorRT engines do not move across GPUs or TensorRT versions, so the bundle
carries ONNX, not engines, and builds them on the board:

```
mmedge-jetson/
  build_engines.sh      detects the board's TensorRT (TRT_VERSION=10.3 overrides) and runs trtexec per
                        graph and precision with the right flags and shapes, then writes one artifact
                        directory per precision under engines/ (manifest + build record + test vectors)
  README.md             installing the torch-free mmedge runtime; building; `mmedge parity` / `profile`
  bundle.json           what is inside: groups, graphs, profile shapes, compatibility notes, sha256 of
                        every file
  artifacts/<model>-<config>-onnx-fp32/   the fp32 ONNX artifact (graphs, manifest, test vectors)
  artifacts/<model>-<config>-onnx-int8/   Q/DQ ONNX in TensorRT's layout + TensorRT calibration caches
  fp16/<model>-<config>/<graph>.onnx      (optional) fp16 graphs for TensorRT >= 11 (strongly typed)
```

Give it fp32 ONNX artifacts: the int8 graphs are quantized here for TensorRT
(`mmedge.calibration.tensorrt`, sharing the ONNX Runtime recipe's calibration
cache). An int8 artifact already in TensorRT's layout can be given alongside
its fp32 artifact; ONNX Runtime's x86 int8 layout (uint8 activations) is
refused, as are engine artifacts. Every graph is checked with the TensorRT
compatibility check first. The archive is written to a temporary file and
renamed into place, byte-identical for identical inputs.

Python-only options (`PackageRequest.options`): `calib` (CalibSource), `quant`
(QuantConfig), `int8` (False: no int8 graphs), `fp16_onnx` (True: add fp16
graphs for TensorRT 11), `batch` / `beam` / `profile.AXIS` (as for
`--format tensorrt`), `log` (a callable for progress), `verify` (re-check a
bundle instead of writing one).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmedge.atomic import atomic_path
from mmedge.errors import ArtifactError, CheckFailedError, ExportError, InputError, require
from mmedge.export.package import PackageRequest, register_packager
from mmedge.runtime.manifest import MANIFEST, Manifest, load_test_vectors, read_manifest, sha256_file
from mmedge.runtime.schema import MAX_JSON_BYTES, load_schema, parse_json, path_problem, validate

BUNDLE_DIR = "mmedge-jetson"
BUNDLE_MANIFEST = "bundle.json"
SCRIPT = "build_engines.sh"
BUNDLE_FORMAT = "mmedge-jetson-bundle"
BUNDLE_FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-/:,]+$")
JETSON_SCHEMA = load_schema("jetson-bundle.schema.json")
_FIXED_MTIME = 1577836800  # 2020-01-01: reproducible archives (SOURCE_DATE_EPOCH overrides)


@dataclass
class _Group:
    name: str  # <model>-<config>
    fp32: Path
    fp32_manifest: Manifest
    int8: Path | None = None


# ------------------------------------------------------------------ inputs
def _groups(artifacts: list[Path]) -> list[_Group]:
    """fp32 ONNX artifacts (+ optional int8 ones in TensorRT's layout), one group per model/config."""
    from mmedge.calibration.tensorrt import is_tensorrt_int8

    fp32: dict[str, tuple[Path, Manifest]] = {}
    int8: dict[str, Path] = {}
    for a in artifacts:
        a = Path(a)
        m = read_manifest(a)
        name = f"{m.model}-{m.config}"
        if m.format != "onnx":
            raise InputError(f"{a}: is a {m.format} artifact; a Jetson bundle carries ONNX artifacts (engines are "
                             f"built on the board because they do not move across GPUs or TensorRT versions)")
        if m.precision == "fp32":
            if name in fp32:
                raise InputError(f"{a}: a second fp32 artifact of {name} (first: {fp32[name][0]})")
            fp32[name] = (a, m)
        elif is_tensorrt_int8(m):
            if name in int8:
                raise InputError(f"{a}: a second int8 artifact of {name} (first: {int8[name]})")
            int8[name] = a
        elif m.precision == "int8":
            raise InputError(f"{a}: int8 in ONNX Runtime's x86 layout (uint8 activations), which TensorRT cannot "
                             f"parse; give the fp32 artifact and the bundle quantizes it for TensorRT")
        else:
            raise InputError(f"{a}: {m.precision} ONNX artifacts are not bundled; give the fp32 artifact "
                             f"(build_engines.sh builds fp16 engines from it)")
    missing = sorted(set(int8) - set(fp32))
    if missing:
        raise InputError(f"{int8[missing[0]]}: int8 artifact of {missing[0]} without its fp32 artifact; give both")
    if not fp32:
        raise InputError("package jetson needs at least one fp32 ONNX artifact (--artifact DIR)")
    return [_Group(name, p, m, int8.get(name)) for name, (p, m) in sorted(fp32.items())]


def _copy_artifact(src: Path, dst: Path) -> None:
    m = read_manifest(src)
    dst.mkdir(parents=True)
    for rel in sorted(m.files):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    shutil.copyfile(src / MANIFEST, dst / MANIFEST)


def _shell_word(text: str, what: str) -> str:
    if not _SAFE_NAME.match(text):
        raise ExportError(f"{what} {text!r} has characters build_engines.sh cannot pass to trtexec safely")
    return text


# ------------------------------------------------------------------ packaging
@register_packager("jetson")
def package_jetson(req: PackageRequest) -> Path:
    if req.options.get("verify") is not None:
        return verify_bundle(Path(req.options["verify"]))
    out = Path(req.out)
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise InputError(f"{out}: a Jetson bundle is a .tar.gz archive (e.g. --out bundle.tar.gz)")
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give the archive's file name")
    log: Callable[[str], None] = req.options.get("log") or (lambda s: print(s, file=sys.stderr))
    groups = _groups(list(req.artifacts))
    for module in ("onnxruntime", "onnx"):  # no torch needed; a device install may lack onnx
        require(module, "mmedge package jetson: int8 calibration and the TensorRT lint", extra="onnx")
    with tempfile.TemporaryDirectory(prefix="mmedge-jetson-") as work:
        root = Path(work) / BUNDLE_DIR
        root.mkdir()
        summary = _stage(root, groups, req.options, log)
        (root / SCRIPT).write_text(build_script(summary["graphs_lines"]), encoding="utf-8")
        os.chmod(root / SCRIPT, 0o755)
        (root / "README.md").write_text(bundle_readme(summary["groups"]), encoding="utf-8")
        files = {p.relative_to(root).as_posix(): sha256_file(p)
                 for p in sorted(root.rglob("*")) if p.is_file()}
        doc = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "groups": summary["groups"],
               "tensorrt": {"tested_flags_for": ["8.5", "8.6", "10.x", "11.x"], "script": SCRIPT},
               "tools": _tools(), "files": files}
        (root / BUNDLE_MANIFEST).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _write_tar_atomic(root, out)
    log(f"wrote {out}")
    return out


def _tools() -> dict[str, str]:
    from mmedge.export.artifact import tool_versions

    return tool_versions("onnx", "onnxruntime")


def _stage(root: Path, groups: list[_Group], options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from mmedge.calibration.tensorrt import caches_of, quantize_artifact
    from mmedge.export.tensorrt import (dla_allowed, example_shapes_from_vectors, fp16_onnx, profile_shapes,
                                        settings_from_options, trtexec_shapes)
    from mmedge.export.tensorrt_compat import inspect

    profile_opts = {k: v for k, v in options.items() if k in ("batch", "beam") or str(k).startswith("profile.")}
    settings = settings_from_options(profile_opts, "fp32")
    lines: list[str] = []
    out_groups = []
    for g in groups:
        m = g.fp32_manifest
        fp32_rel = f"artifacts/{g.name}-onnx-fp32"
        _copy_artifact(g.fp32, root / fp32_rel)
        int8_rel = ""
        if g.int8 is not None:
            int8_rel = f"artifacts/{g.name}-onnx-int8"
            _copy_artifact(g.int8, root / int8_rel)
        elif options.get("int8", True):
            int8_rel = f"artifacts/{g.name}-onnx-int8"
            quantize_artifact(g.fp32, root / int8_rel, options.get("calib"), options.get("quant"), log)
        if int8_rel:
            caches = caches_of(root / int8_rel)
            int8_m = read_manifest(root / int8_rel)
        notes: list[str] = []
        for rel in filter(None, (fp32_rel, int8_rel)):
            am = read_manifest(root / rel)
            for ge in am.graphs:
                found = inspect(root / rel / ge.file)
                problems = [str(f) for f in found if f.severity == "problem"]
                if problems:
                    raise ExportError(f"{rel}/{ge.file}: not compatible with TensorRT: " + "; ".join(problems[:5]))
                notes += [f"{ge.file}: {f}" for f in found if f.severity == "note"]
        load_test_vectors(g.fp32, m)  # checked against the graphs first: no pickles, no bombs
        examples = example_shapes_from_vectors(g.fp32 / m.extra.get("test_vectors", "test_vectors.npz"))
        graphs = {}
        for ge in m.graphs:
            shapes = profile_shapes(m.pipeline, ge, examples.get(ge.name, {}), settings, m.preprocessing, m.extra)
            lo, opt, hi = trtexec_shapes(shapes)
            if int8_rel:
                q = int8_m.graph(ge.name)
                if q.file != ge.file or ge.name not in caches:
                    raise ExportError(f"{int8_rel}: graph {ge.name!r} is not {ge.file} with a calibration cache")
            if options.get("fp16_onnx"):
                (root / "fp16" / g.name).mkdir(parents=True, exist_ok=True)
                fp16_onnx(g.fp32 / ge.file, root / "fp16" / g.name / ge.file)
            for t in ge.inputs:
                _shell_word(t.name, f"graph {ge.name!r}: input name")
            dla = "1" if dla_allowed(m.pipeline, ge.name) else "0"
            fields = [g.name, fp32_rel, int8_rel or "-", ge.name, ge.file, lo, opt, hi, dla]
            for f in fields:
                _shell_word(f, "bundle entry")
            lines.append("|".join(fields))
            graphs[ge.name] = {"onnx": ge.file, "min": lo, "opt": opt, "max": hi, "dla": dla == "1"}
        out_groups.append({"name": g.name, "model": m.model, "config": m.config, "pipeline": m.pipeline,
                           "fp32": fp32_rel, "int8": int8_rel or None,
                           "fp16_onnx": f"fp16/{g.name}" if options.get("fp16_onnx") else None,
                           "graphs": graphs, "notes": sorted(set(notes))})
    return {"groups": out_groups, "graphs_lines": lines}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_tar_atomic(root: Path, out: Path) -> None:
    """Deterministic .tar.gz of `root` (sorted, fixed owner and time), temp file + os.replace."""
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", _FIXED_MTIME))
    with atomic_path(out) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in [root, *sorted(root.rglob("*"))]:
            info = tarfile.TarInfo(p.relative_to(root.parent).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
            if p.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = p.stat().st_size, 0o755 if os.access(p, os.X_OK) else 0o644
                with open(p, "rb") as data:  # streamed: a bundle never sits in memory
                    tar.addfile(info, data)


# ------------------------------------------------------------------ verify
MAX_MEMBERS = 100_000
MAX_RATIO = 100  # unpacked bytes per archive byte (+ 64 MiB); honest bundles: ~1-3 (ONNX weights)
MAX_UNPACKED = 16 << 30
_CHUNK = 1 << 20


def _member_rel(path: Path, member: tarfile.TarInfo) -> str:
    """The member's path below mmedge-jetson/ ("" for the folder itself): by path components, so
    `mmedge-jetson.sh` or `mmedge-jetsonX/...` are outside the folder."""
    name = member.name
    body = name[:-1] if name.endswith("/") and member.isdir() else name
    parts = body.split("/")
    if path_problem(body) is not None or parts[0] != BUNDLE_DIR:
        raise ArtifactError(f"{path}: unsafe member {name[:200]!r} (every member must be a relative path inside "
                            f"{BUNDLE_DIR}/, without '..'); refusing the bundle")
    return "/".join(parts[1:])


def _members(path: Path, tar: tarfile.TarFile, budget: int) -> Any:
    """(relative name, member) of every file, after checking names, types and the size budget."""
    total, count, seen = 0, 0, set()
    while True:
        member = tar.next()
        if member is None:
            return
        count += 1
        if count > MAX_MEMBERS:
            raise ArtifactError(f"{path}: more than {MAX_MEMBERS} members; refusing the bundle")
        rel = _member_rel(path, member)
        if member.isdir():
            continue
        if not member.isfile() or member.issparse() or not rel:
            raise ArtifactError(f"{path}: member {member.name[:200]!r} is not a plain file or folder")
        if rel in seen:
            raise ArtifactError(f"{path}: member {member.name[:200]!r} appears twice")
        seen.add(rel)
        total += member.size
        if total > budget:
            raise ArtifactError(f"{path}: unpacks to more than {budget} bytes from a {path.stat().st_size}-byte "
                                f"archive (a bomb?); refusing the bundle")
        yield rel, member


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, limit: int = MAX_JSON_BYTES) -> bytes:
    if member.size > limit:
        raise ArtifactError(f"{path}: {member.name[:200]}: {member.size} bytes, over the {limit >> 20} MiB limit "
                            f"for a JSON descriptor")
    f = tar.extractfile(member)
    return f.read(limit + 1) if f else b""


def _descriptor(path: Path, data: bytes) -> dict[str, Any]:
    where = f"{path}: {BUNDLE_MANIFEST}"
    doc = parse_json(data, str(path), ArtifactError, f"{BUNDLE_MANIFEST} is not valid JSON")
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise ArtifactError(f"{path}: not a Jetson bundle this mmedge reads")
    version = doc.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > BUNDLE_FORMAT_VERSION:
        raise ArtifactError(f"{path}: not a Jetson bundle this mmedge reads (format_version {version} is newer "
                            f"than {BUNDLE_FORMAT_VERSION}; upgrade mmedge)")
    validate(doc, JETSON_SCHEMA, where, "bundle descriptor")
    return doc


def verify_bundle(path: Path) -> Path:
    """Re-check a bundle: every file's sha256 against bundle.json, every artifact's manifest.

    Nothing is extracted and nothing is held in memory but descriptors: a first pass reads the
    member headers (names by path component inside mmedge-jetson/, plain files only, a total
    bounded by the archive's size) and bundle.json (at most 16 MiB, validated against
    schemas/jetson-bundle.schema.json); a second pass hashes every member in 1 MiB chunks."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: bundle not found")
    budget = min(MAX_UNPACKED, MAX_RATIO * path.stat().st_size + (64 << 20))
    try:
        with tarfile.open(path, "r:gz") as tar:
            sizes: dict[str, int] = {}
            doc = None
            for rel, member in _members(path, tar, budget):
                sizes[rel] = member.size
                if rel == BUNDLE_MANIFEST:
                    doc = _descriptor(path, _read_member(tar, member, path))
                tar.members = []  # headers only as they come: no list of every member in memory
            if doc is None:
                raise ArtifactError(f"{path}: no {BUNDLE_MANIFEST}; not a Jetson bundle")
            listed: dict[str, str] = doc["files"]
            missing = sorted(set(listed) - set(sizes))
            extra = sorted(set(sizes) - set(listed) - {BUNDLE_MANIFEST})
            if missing or extra:
                what = f"{len(missing)} file(s) changed or missing (first: {missing[0]})" if missing else \
                    f"unlisted file(s) {', '.join(extra[:3])}"
                raise CheckFailedError(f"{path}: {what}; rebuild the bundle")
            _check_layout(path, doc, sizes)
        digests: dict[str, str] = {}
        nested: dict[str, bytes] = {}
        with tarfile.open(path, "r:gz") as tar:
            for rel, member in _members(path, tar, budget):
                if sizes.get(rel) != member.size:
                    raise ArtifactError(f"{path}: changed while it was read")
                f = tar.extractfile(member)
                h = hashlib.sha256()
                while f is not None:
                    block = f.read(_CHUNK)
                    if not block:
                        break
                    h.update(block)
                    if rel.endswith("/" + MANIFEST) and len(nested.get(rel, b"")) <= MAX_JSON_BYTES:
                        nested[rel] = nested.get(rel, b"") + block
                digests[rel] = h.hexdigest()
                tar.members = []
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ArtifactError(f"{path}: not a readable .tar.gz ({e.__class__.__name__})") from None
    bad = [f for f, h in sorted(listed.items()) if digests.get(f) != h]
    if bad:
        raise CheckFailedError(f"{path}: {len(bad)} file(s) changed or missing (first: {bad[0]}); rebuild the bundle")
    for rel, data in sorted(nested.items()):
        base = rel[: -len(MANIFEST)]
        where = f"{path}: {BUNDLE_DIR}/{rel}"
        m = Manifest.from_dict(parse_json(data, str(path), ArtifactError, f"{rel} is not valid JSON"), where)
        for g in m.graphs:
            if g.file not in m.files:
                raise ArtifactError(f"{where}: graph file {g.file} is not listed")
        for f, h in m.files.items():
            if digests.get(base + f) != h:
                raise CheckFailedError(f"{path}: {base}{f}: sha256 does not match {rel}")
    return path


def _check_layout(path: Path, doc: dict[str, Any], members: dict[str, int]) -> None:
    """Every folder and graph bundle.json names is in the archive."""
    for g in doc["groups"]:
        for key in ("fp32", "int8"):
            if g.get(key) and f"{g[key]}/{MANIFEST}" not in members:
                raise ArtifactError(f"{path}: {BUNDLE_MANIFEST} names {g[key]} ({g['name']}, {key}) but the bundle "
                                    f"has no {g[key]}/{MANIFEST}")
        for name, graph in g["graphs"].items():
            if f"{g['fp32']}/{graph['onnx']}" not in members:
                raise ArtifactError(f"{path}: {BUNDLE_MANIFEST}: graph {name!r} of {g['name']} names "
                                    f"{g['fp32']}/{graph['onnx']}, which the bundle does not hold")


# ------------------------------------------------------------------ the script and the README
def build_script(graph_lines: list[str]) -> str:
    from mmedge.export.artifact import tool_versions

    body = "\n".join(f'  "{line}"' for line in graph_lines)
    return SCRIPT_TEMPLATE.replace("@@GRAPHS@@", body).replace("@@MMEDGE@@", tool_versions()["mmedge"] or "dev")


SCRIPT_TEMPLATE = r'''#!/usr/bin/env bash
# Build TensorRT engines on this board from the bundle's ONNX graphs; written by
# `mmedge package jetson` (mmedge @@MMEDGE@@). Engines do not move across GPUs or
# TensorRT versions, so they are built here, then turned into artifact folders
# under engines/ that `mmedge parity` and `mmedge profile` load.
#
#   ./build_engines.sh                               fp32, fp16 and int8 engines for the GPU
#   PRECISIONS="fp16 int8" DLA_CORE=0 ./build_engines.sh     on DLA core 0, GPU fallback on
#
# Environment:
#   TRT_VERSION=10.3     skip detection (else trtexec's banner, python3's tensorrt, then dpkg)
#   TRTEXEC=PATH         trtexec to run (else PATH, then /usr/src/tensorrt/bin/trtexec)
#   PRECISIONS           "fp32 fp16 int8"
#   DLA_CORE=N           build fp16/int8 for DLA core N (static shapes: opt; fp32 stays on the GPU)
#   INT8_SOURCE          auto | qdq | calib: int8 from the Q/DQ graph, or from the fp32 graph plus the
#                        calibration cache (TensorRT <= 10); auto = Q/DQ on the GPU, cache on DLA
#   WORKSPACE_MIB=1024   builder workspace
#   VERSION_COMPATIBLE=1 version-compatible engines (TensorRT >= 8.6)
#   BENCH=1              run trtexec's latency measurement on each engine at the opt shapes
#   OUT=DIR              where engines go (./engines)
#   PYTHON=python3       interpreter with the mmedge runtime, to write the artifact manifests
#   DRY_RUN=1            print the trtexec commands, build nothing
#
# TensorRT 8.5-10.x: --fp16 / --int8 builder flags (int8 from the Q/DQ graph, or --calib).
# TensorRT 11+: strongly typed only (--stronglyTyped): no --fp16/--int8/--calib; int8 from the
# Q/DQ graph, fp16 from fp16 graphs when the bundle has them. No DLA.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRECISIONS="${PRECISIONS:-fp32 fp16 int8}"
DLA_CORE="${DLA_CORE:-}"
INT8_SOURCE="${INT8_SOURCE:-auto}"
WORKSPACE_MIB="${WORKSPACE_MIB:-1024}"
VERSION_COMPATIBLE="${VERSION_COMPATIBLE:-0}"
BENCH="${BENCH:-0}"
OUT="${OUT:-$HERE/engines}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"

# One line per graph (generated):
# name|fp32 artifact|int8 artifact (- if none)|graph|onnx file|min shapes|opt shapes|max shapes|DLA ok (1/0)
# (the captioner's decoder graphs stay on the GPU: their rows change at every beam-search step
# and DLA takes static shapes only)
GRAPHS=(
@@GRAPHS@@
)

die() { echo "build_engines.sh: error: $*" >&2; exit 1; }
note() { echo "build_engines.sh: $*" >&2; }

find_trtexec() {
  if [[ -n "${TRTEXEC:-}" ]]; then
    echo "$TRTEXEC"
  elif command -v trtexec >/dev/null 2>&1; then
    command -v trtexec
  elif [[ -x /usr/src/tensorrt/bin/trtexec ]]; then
    echo /usr/src/tensorrt/bin/trtexec
  else
    return 1
  fi
}

# TensorRT's version number: 8502 -> 8.5.2, 100300 -> 10.3.0
version_from_int() {
  local n=$1
  if (( n >= 100000 )); then
    echo "$((n / 10000)).$((n / 100 % 100)).$((n % 100))"
  else
    echo "$((n / 1000)).$((n / 100 % 10)).$((n % 100))"
  fi
}

detect_version() {
  local banner n v
  banner="$("$TRTEXEC_BIN" --help 2>&1 || true)"
  n="$(grep -o 'TensorRT v[0-9]*' <<<"$banner" | head -n 1 | tr -dc '0-9' || true)"
  if [[ -n "$n" ]]; then
    version_from_int "$n"
    return 0
  fi
  v="$("$PYTHON" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
  if [[ -n "$v" ]]; then
    echo "$v"
    return 0
  fi
  v="$(dpkg-query -W -f="\${Version}" libnvinfer-bin 2>/dev/null || true)"
  if [[ -n "$v" ]]; then
    echo "${v%%-*}"
    return 0
  fi
  return 1
}

TRTEXEC_BIN="$(find_trtexec)" || die "trtexec not found: install TensorRT (JetPack) or set TRTEXEC=/path/to/trtexec"
if [[ -z "${TRT_VERSION:-}" ]]; then
  TRT_VERSION="$(detect_version)" || die "cannot tell the TensorRT version; set TRT_VERSION (e.g. TRT_VERSION=10.3)"
fi
IFS=. read -r TRT_MAJOR TRT_MINOR TRT_PATCH _ <<<"$TRT_VERSION.0.0.0"
[[ "$TRT_MAJOR" =~ ^[0-9]+$ && "$TRT_MINOR" =~ ^[0-9]+$ && "$TRT_PATCH" =~ ^[0-9]+$ ]] \
  || die "TRT_VERSION='$TRT_VERSION' is not a version like 10.3"
TRT_AT_LEAST_86=0
if (( TRT_MAJOR > 8 || (TRT_MAJOR == 8 && TRT_MINOR >= 6) )); then TRT_AT_LEAST_86=1; fi
if (( TRT_MAJOR < 8 || (TRT_MAJOR == 8 && TRT_MINOR < 5) )); then
  die "TensorRT $TRT_VERSION is too old: mmedge needs 8.5 or later (JetPack 5.1+)"
fi
if (( TRT_MAJOR >= 10 )); then
  TRT_INT=$(( TRT_MAJOR * 10000 + TRT_MINOR * 100 + TRT_PATCH ))
else
  TRT_INT=$(( TRT_MAJOR * 1000 + TRT_MINOR * 100 + TRT_PATCH ))
fi
case "$INT8_SOURCE" in auto|qdq|calib) ;; *) die "INT8_SOURCE='$INT8_SOURCE': expected auto, qdq or calib" ;; esac
if [[ -n "$DLA_CORE" ]]; then
  [[ "$DLA_CORE" =~ ^[0-9]+$ ]] || die "DLA_CORE='$DLA_CORE' is not a core number"
  (( TRT_MAJOR < 11 )) || die "TensorRT $TRT_VERSION does not support DLA; unset DLA_CORE"
fi
if [[ "$VERSION_COMPATIBLE" == 1 && "$TRT_AT_LEAST_86" == 0 ]]; then
  die "VERSION_COMPATIBLE=1 needs TensorRT 8.6 or later (this is $TRT_VERSION)"
fi
if (( TRT_MAJOR >= 11 )) && [[ "$INT8_SOURCE" == calib ]]; then
  die "TensorRT $TRT_VERSION has no INT8 calibration (--calib); use INT8_SOURCE=qdq"
fi
note "TensorRT $TRT_VERSION, trtexec: $TRTEXEC_BIN"
if [[ "$DRY_RUN" != 1 ]]; then mkdir -p "$OUT"; fi

run() {
  local log=$1
  shift
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"
    echo
    return 0
  fi
  if ! "$@" >"$log" 2>&1; then
    tail -n 20 "$log" >&2 || true
    die "trtexec failed (full log: $log)"
  fi
}

# uses_dla PRECISION [GRAPH_DLA_OK]
uses_dla() { [[ -n "$DLA_CORE" && "$1" != fp32 && "${2:-1}" == 1 ]]; }

engine_dir() {
  local name=$1 precision=$2
  if uses_dla "$precision"; then
    echo "$OUT/$name-tensorrt-$precision-dla$DLA_CORE"
  else
    echo "$OUT/$name-tensorrt-$precision"
  fi
}

# int8_from_cache GRAPH_DLA_OK
int8_from_cache() {
  [[ "$INT8_SOURCE" == calib ]] || { [[ "$INT8_SOURCE" == auto ]] && uses_dla int8 "$1"; }
}

# build_graph PRECISION NAME FP32_DIR INT8_DIR GRAPH ONNX MIN OPT MAX DLA_OK -> 0 built, 2 skipped
build_graph() {
  local precision=$1 name=$2 fp32_dir=$3 int8_dir=$4 graph=$5 onnx=$6 min=$7 opt=$8 max=$9 dla_ok=${10}
  local dir model cache dla=0
  local args=()
  dir="$(engine_dir "$name" "$precision")"
  if [[ "$DRY_RUN" != 1 ]]; then mkdir -p "$dir"; fi
  if uses_dla "$precision" "$dla_ok"; then dla=1; fi
  if uses_dla "$precision" && [[ "$dla" == 0 ]]; then
    note "$name/$graph stays on the GPU (DLA takes static shapes; this graph's rows change every step)"
  fi
  if [[ "$dla" == 1 ]]; then
    min=$opt
    max=$opt
  fi
  model="$HERE/$fp32_dir/$onnx"
  if (( TRT_MAJOR >= 11 )); then
    args+=(--stronglyTyped)
    if [[ "$precision" == fp16 ]]; then
      model="$HERE/fp16/$name/$onnx"
      if [[ ! -f "$model" ]]; then
        note "skip $name/$graph fp16: TensorRT $TRT_VERSION is strongly typed and the bundle has no fp16 graphs"
        return 2
      fi
    elif [[ "$precision" == int8 ]]; then
      [[ "$int8_dir" != - ]] || { note "skip $name/$graph int8: no int8 graphs in the bundle"; return 2; }
      model="$HERE/$int8_dir/$onnx"
    fi
  else
    if [[ "$precision" == fp16 ]]; then
      args+=(--fp16)
    elif [[ "$precision" == int8 ]]; then
      [[ "$int8_dir" != - ]] || { note "skip $name/$graph int8: no int8 graphs in the bundle"; return 2; }
      args+=(--int8 --fp16)
      if int8_from_cache "$dla_ok"; then
        # implicit quantization: the fp32 graph + the cache, its header set to this TensorRT
        cache="$dir/$graph.calib"
        if [[ "$DRY_RUN" != 1 ]]; then
          { echo "TRT-$TRT_INT-$(head -n 1 "$HERE/$int8_dir/$graph.calib" | sed 's/^TRT-[0-9]*-//')"
            tail -n +2 "$HERE/$int8_dir/$graph.calib"; } >"$cache"
        fi
        args+=(--calib="$cache")
      else
        model="$HERE/$int8_dir/$onnx"
      fi
    fi
  fi
  args+=(--minShapes="$min" --optShapes="$opt" --maxShapes="$max")
  args+=(--memPoolSize="workspace:$WORKSPACE_MIB" --timingCacheFile="$OUT/timing.cache")
  if [[ "$dla" == 1 ]]; then
    args+=(--useDLACore="$DLA_CORE" --allowGPUFallback)
  fi
  if [[ "$VERSION_COMPATIBLE" == 1 ]]; then
    args+=(--versionCompatible)
  fi
  if [[ "$TRT_AT_LEAST_86" == 1 ]]; then
    args+=(--skipInference)
  else
    args+=(--buildOnly)
  fi
  note "building $name/$graph ($precision$([[ "$dla" == 1 ]] && echo ", DLA core $DLA_CORE"))"
  run "$dir/$graph.log" "$TRTEXEC_BIN" --onnx="$model" --saveEngine="$dir/$graph.engine" "${args[@]}"
  if [[ "$BENCH" == 1 ]]; then
    local bench=(--loadEngine="$dir/$graph.engine" --shapes="$opt")
    if [[ "$dla" == 1 ]]; then bench+=(--useDLACore="$DLA_CORE"); fi
    run "$dir/$graph.bench.log" "$TRTEXEC_BIN" "${bench[@]}"
    [[ "$DRY_RUN" == 1 ]] || grep -h -E 'Latency|Throughput' "$dir/$graph.bench.log" | tail -n 2 >&2 || true
  fi
  return 0
}

# adopt PRECISION NAME SOURCE_DIR GPU_ONLY_GRAPHS: engines -> an artifact folder (manifest, build
# record, test vectors)
adopt() {
  local precision=$1 name=$2 src=$3 gpu_only=$4 dir g
  local extra=()
  dir="$(engine_dir "$name" "$precision")"
  if ! "$PYTHON" -c 'import mmedge.runtime' >/dev/null 2>&1; then
    note "engines of $name ($precision) are in $dir; install the mmedge runtime (README.md) and re-run to get an artifact for mmedge parity/profile"
    return 0
  fi
  if uses_dla "$precision"; then
    extra+=(--dla-core "$DLA_CORE")
    for g in $gpu_only; do extra+=(--gpu-only "$g"); done
  fi
  if [[ "$VERSION_COMPATIBLE" == 1 ]]; then extra+=(--version-compatible); fi
  if [[ "$precision" == int8 ]]; then
    if (( TRT_MAJOR < 11 )) && int8_from_cache 1; then extra+=(--int8-source calib); else extra+=(--int8-source qdq); fi
  fi
  "$PYTHON" -m mmedge.runtime.backends.tensorrt adopt --source "$HERE/$src" --engines "$dir" \
    --precision "$precision" --trt-version "$TRT_VERSION" "${extra[@]}" >/dev/null
  echo "$dir"
}

BUILT=()
for precision in $PRECISIONS; do
  case "$precision" in fp32|fp16|int8) ;; *) die "unknown precision '$precision' in PRECISIONS (fp32 fp16 int8)" ;; esac
  if [[ -n "$DLA_CORE" && "$precision" == fp32 ]]; then
    note "DLA runs fp16 and int8 only: fp32 engines are built for the GPU"
  fi
  declare -A SOURCE=() SKIPPED=() GPU_ONLY=()
  NAMES=()
  for line in "${GRAPHS[@]}"; do
    IFS='|' read -r name fp32_dir int8_dir graph onnx min opt max dla_ok <<<"$line"
    if [[ -z "${SOURCE[$name]+x}" ]]; then
      NAMES+=("$name")
      GPU_ONLY[$name]=""
      if [[ "$precision" == int8 ]]; then SOURCE[$name]=$int8_dir; else SOURCE[$name]=$fp32_dir; fi
    fi
    if [[ "$dla_ok" != 1 ]]; then GPU_ONLY[$name]+=" $graph"; fi
    status=0
    build_graph "$precision" "$name" "$fp32_dir" "$int8_dir" "$graph" "$onnx" "$min" "$opt" "$max" "$dla_ok" \
      || status=$?
    if [[ "$status" == 2 ]]; then SKIPPED[$name]=1; fi
  done
  for name in "${NAMES[@]}"; do
    if [[ -n "${SKIPPED[$name]+x}" || "$DRY_RUN" == 1 ]]; then continue; fi
    BUILT+=("$(adopt "$precision" "$name" "${SOURCE[$name]}" "${GPU_ONLY[$name]}")")
  done
  unset SOURCE SKIPPED GPU_ONLY
done

if [[ "$DRY_RUN" != 1 ]]; then
  note "done. Check and time them:"
  for dir in "${BUILT[@]}"; do
    if [[ -n "$dir" ]]; then note "  mmedge parity --artifact $dir && mmedge profile --artifact $dir"; fi
  done
fi
'''


def bundle_readme(groups: list[dict[str, Any]]) -> str:
    rows = "\n".join(f"| {g['name']} | {g['pipeline']} | {', '.join(g['graphs'])} | "
                     f"{'yes' if g['int8'] else 'no'} |" for g in groups)
    notes = "\n".join(f"- {g['name']}: {n}" for g in groups for n in g["notes"]) or "- none"
    return README_TEMPLATE.replace("@@ROWS@@", rows).replace("@@NOTES@@", notes)


README_TEMPLATE = """# mmedge bundle for NVIDIA Jetson

This bundle carries ONNX graphs, not engines: a TensorRT engine runs only on the GPU and the
TensorRT version it was built with, so `build_engines.sh` builds them here, on the board.

| model | pipeline | graphs | int8 |
| --- | --- | --- | --- |
@@ROWS@@

## 1. Install the mmedge runtime (pure Python, no PyTorch)

JetPack already has TensorRT and its Python bindings (`python3 -c "import tensorrt"`; else
`sudo apt-get install python3-libnvinfer`). Add the mmedge runtime and NVIDIA's CUDA runtime
bindings, keeping the system TensorRT visible:

```bash
python3 -m venv --system-site-packages ~/mmedge-env && . ~/mmedge-env/bin/activate
pip install mmedge                  # numpy, typer, rich, pillow: no torch, no extras
pip install 'cuda-python>=12,<13'   # JetPack 6 (CUDA 12); on JetPack 5 (CUDA 11.4): 'cuda-python>=11.8,<12'
```

Do not install `mmedge[tensorrt]` on the board (it would pull TensorRT wheels for servers);
from a source checkout use `pip install --no-deps /path/to/mmedge && pip install numpy typer rich pillow`.
Optionally `pip install onnxruntime` to run the ONNX artifacts on the CPU for comparison.

## 2. Build the engines

```bash
./build_engines.sh                                  # fp32, fp16, int8 for the GPU
PRECISIONS="fp16 int8" DLA_CORE=0 ./build_engines.sh   # Orin / Xavier DLA core 0 (GPU fallback)
TRT_VERSION=10.3 DRY_RUN=1 ./build_engines.sh         # show the trtexec commands only
```

The script finds `trtexec` (PATH, then `/usr/src/tensorrt/bin/trtexec`), reads the TensorRT
version from its banner (`TRT_VERSION` overrides), and builds every graph with the optimization
profile in `bundle.json` (min/opt/max of the batch axis, beam rows for the captioner's decoder
step, audio length / image size). Each precision becomes an artifact folder under `engines/`
(`<model>-<config>-tensorrt-<precision>`: engines, `manifest.json`, `tensorrt.json` build record,
test vectors). Other settings: `WORKSPACE_MIB`, `INT8_SOURCE=qdq|calib`, `VERSION_COMPATIBLE=1`,
`BENCH=1` (trtexec latency), `OUT`, `PYTHON` — see the top of the script.

| TensorRT (JetPack) | fp16 | int8 | DLA |
| --- | --- | --- | --- |
| 8.5 (JetPack 5.1) | `--fp16` | Q/DQ graph + `--int8 --fp16`; DLA: fp32 graph + `--int8 --calib` | `--useDLACore --allowGPUFallback` |
| 10.3 (JetPack 6) | `--fp16` | same as 8.5 (calibrators deprecated since 10.1, still working) | same |
| 11+ (not on Jetson yet) | `--stronglyTyped` with fp16 graphs, if bundled | Q/DQ graph, `--stronglyTyped` | none |

## 3. Check and time them on the board

```bash
mmedge parity --artifact engines/<model>-<config>-tensorrt-fp16      # PyTorch reference outputs, no torch
mmedge profile --artifact engines/<model>-<config>-tensorrt-fp16 --artifact engines/<model>-<config>-tensorrt-int8
mmedge parity --artifact artifacts/<model>-<config>-onnx-int8 --backend onnxruntime   # the same int8 graphs on the CPU
```

fp32 must match to 1e-4 and fp16 to 2e-2 of the largest reference value; int8 is judged by
cosine similarity (>= 0.9 on the test vectors; task metrics are in the int8 artifact's manifest).
An engine copied to another board or another JetPack fails to load with a message saying to
rebuild it there: run `build_engines.sh` again on that board.

## Compatibility notes found when bundling

@@NOTES@@

`bundle.json` lists every file with its sha256; `mmedge package jetson --verify bundle.tar.gz`
re-checks an archive.
"""
