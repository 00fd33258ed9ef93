"""`mmedge package jetson --artifact ONNX_DIR... --out bundle.tar.gz`: everything a Jetson needs.

TensorRT engines do not move across GPUs or TensorRT versions, so the bundle
carries ONNX, not engines, and builds them on the board:

```
mmedge-jetson/
  build_engines.sh      detects the board's TensorRT (TRT_VERSION=10.3 overrides) and runs trtexec per
                        graph and precision with the right flags and shapes, then writes one artifact
                        directory per precision under engines/ (manifest + build record + test vectors)
  README.md             installing the torch-free mmedge runtime; building; `mmedge parity` / `profile`;
                        what was and was not run on real hardware
  install.sh            installs the runtime offline: picks requirements-jetpack<N>.txt by the board's
                        L4T release (/etc/nv_tegra_release; JETPACK=5|6|7 overrides) and runs
                        pip install --no-index --find-links wheels/ -r requirements-jetpack<N>.txt
  requirements-jetpack5.txt, -jetpack6.txt, -jetpack7.txt   mmedge==VERSION + the pins per JetPack (JETPACKS)
  wheels/               the mmedge wheel (built when packaging), + every *.whl of `with_wheels` (--with-wheels)
  bundle.json           what is inside: groups, graphs, profile shapes, compatibility notes, sha256 of
                        every file
  artifacts/<model>-<config>-onnx-fp32/   the fp32 ONNX artifact (graphs, manifest, test vectors)
  artifacts/<model>-<config>-onnx-int8/   Q/DQ ONNX in TensorRT's layout + TensorRT calibration caches
  fp16/<model>-<config>/<graph>.onnx      fp16 graphs (fp32 I/O) for TensorRT >= 11, strongly typed
                                          (unless fp16_onnx=False / --no-fp16)
  bench/<model>-<config>/<graph>.<input>.bin   the test vectors' inputs as raw little-endian arrays
                                          (INT64 ones also as .i32.bin) for BENCH=1 (trtexec --loadInputs)
```

What each TensorRT release can do (DLA, fp16/int8 by flags or strongly typed, INT64 I/O,
version-compatible engines) is one table, `mmedge.export.trt_matrix.MATRIX`: the script embeds it.

Give it fp32 ONNX artifacts: the int8 graphs are quantized here for TensorRT
(`mmedge.calibration.tensorrt`, sharing the ONNX Runtime recipe's calibration
cache). An int8 artifact already in TensorRT's layout can be given alongside
its fp32 artifact; ONNX Runtime's x86 int8 layout (uint8 activations) is
refused, as are engine artifacts. Every graph is checked with the TensorRT
compatibility check first. The archive is written to a temporary file and
renamed into place, byte-identical for identical inputs.

Options (`PackageRequest.options`; on the command line `mmedge package jetson --batch
--beam --profile AXIS=.. --workspace --dla-core --version-compatible --fp16/--no-fp16
--int8/--no-int8`): `int8` (False: no int8 graphs), `fp16_onnx` (False: no fp16 graphs, so no
fp16 engines on TensorRT >= 11), `batch` / `beam` / `profile.AXIS` (as for `--format
tensorrt`), `workspace`, `dla_core` and `version_compatible` (the script's defaults of
WORKSPACE_MIB, DLA_CORE and VERSION_COMPATIBLE; the environment overrides them). Python-only:
`calib` (CalibSource), `quant` (QuantConfig), `log` (a callable for progress), `verify` (re-check
a bundle instead of writing one).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmedge.atomic import atomic_path
from mmedge.errors import ArtifactError, CheckFailedError, ExportError, InputError, require
from mmedge.export.package import PackageRequest, register_packager
from mmedge.runtime.manifest import MANIFEST, Manifest, load_test_vectors, read_manifest, sha256_file
from mmedge.runtime.schema import MAX_JSON_BYTES, load_schema, newer_format, parse_json, path_problem, validate

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
        (root / SCRIPT).write_text(build_script(summary["graphs_lines"], summary["defaults"]), encoding="utf-8")
        os.chmod(root / SCRIPT, 0o755)
        install = stage_install(root, req.options, log)
        (root / "README.md").write_text(bundle_readme(summary["groups"]), encoding="utf-8")
        files = {p.relative_to(root).as_posix(): sha256_file(p)
                 for p in sorted(root.rglob("*")) if p.is_file()}
        doc = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "groups": summary["groups"],
               "tensorrt": {"flags_checked_against_parser": ["8.5", "8.6", "10.x", "11.x"], "script": SCRIPT,
                            "script_checked_with": "shellcheck and a fake trtexec; not run on a Jetson",
                            "defaults": summary["defaults"], "matrix": _matrix_doc()},
               "install": install, "tools": _tools(), "files": files}
        (root / BUNDLE_MANIFEST).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _write_tar_atomic(root, out)
    log(f"wrote {out}")
    return out


# ------------------------------------------------------------------ the runtime, installable offline
# What the board installs, per JetPack (install.sh picks by /etc/nv_tegra_release's L4T major: R35 ->
# 5, R36 -> 6, R38 -> 7). TensorRT's Python bindings are not pip packages here: they come from JetPack
# (python3-libnvinfer), seen through a venv made with --system-site-packages.
JETPACKS: dict[str, dict[str, Any]] = {
    "5": {"l4t": "R35", "python": "3.8", "cuda": "11.4", "tensorrt": "8.5",
          "requires": [("numpy<1.24", "TensorRT 8.5's bindings use np.bool, removed in numpy 1.24"),
                       ("cuda-python>=11.8,<12", "CUDA 11 bindings: JetPack 5 has CUDA 11.4")]},
    "6": {"l4t": "R36", "python": "3.10", "cuda": "12.6", "tensorrt": "10.3",
          "requires": [("cuda-python>=12,<13", "cuda-bindings 13 needs driver >= 580; JetPack 6 has CUDA 12.6")]},
    "7": {"l4t": "R38", "python": "3.12", "cuda": "13.0", "tensorrt": "10.13",
          "requires": [("cuda-python>=13,<14", "CUDA 13 bindings: JetPack 7 has CUDA 13.0, driver 580")]},
}
WHEELS = "wheels"
INSTALL_SCRIPT = "install.sh"
_WHEEL_CACHE: dict[str, bytes] = {}


def requirements_text(jetpack: str, version: str) -> str:
    jp = JETPACKS[jetpack]
    lines = [f"# JetPack {jetpack} (Jetson Linux {jp['l4t']}): Python {jp['python']}, CUDA {jp['cuda']}, "
             f"TensorRT {jp['tensorrt']}+ (from JetPack, not pip).",
             f"# Installed offline by {INSTALL_SCRIPT}: pip install --no-index --find-links {WHEELS}/ -r this file.",
             f"mmedge=={version}"]
    width = max(len(r) for r, _ in jp["requires"]) + 2
    lines += [f"{req:<{width}}# {why}" for req, why in jp["requires"]]
    return "\n".join(lines) + "\n"


def _source_tree() -> Path | None:
    """The source folder of this mmedge (an editable install or a checkout), or None when it is
    installed from a wheel."""
    import mmedge

    root = Path(mmedge.__file__).resolve().parent
    pp = root / "pyproject.toml"
    try:
        if pp.is_file() and re.search(r'^name\s*=\s*"mmedge"', pp.read_text(encoding="utf-8"), re.M):
            return root
    except OSError:
        pass
    return None


def _wheel_sources(src: Path) -> list[Path]:
    """What a wheel is built from: the top-level files and the package folders (not tests)."""
    keep: list[Path] = []
    for p in sorted(src.iterdir()):
        if p.name.startswith(".") or p.name in ("tests", "build", "dist") or p.name.endswith(".egg-info"):
            continue
        if p.is_file() and (p.suffix in (".py", ".toml", ".md", ".cfg", ".in") or p.name.startswith("LICENSE")):
            keep.append(p)
        elif p.is_dir() and (p / "__init__.py").is_file():
            keep += [f for f in sorted(p.rglob("*")) if f.is_file() and "__pycache__" not in f.parts
                     and f.suffix != ".pyc"]
    return keep


def build_wheel(dest: Path, log: Callable[[str], None] = lambda s: None) -> Path:
    """The mmedge wheel (py3-none-any) into `dest`: built with `pip wheel --no-deps
    --no-build-isolation` from a copy of the source tree (editable installs and checkouts), or
    repacked from the installed files (a wheel install). Reproducible (SOURCE_DATE_EPOCH); built
    once per process for the same sources."""
    import subprocess

    src = _source_tree()
    dest.mkdir(parents=True, exist_ok=True)
    if src is None:
        return _repack_installed(dest)
    files = _wheel_sources(src)
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    key = h.hexdigest()
    if key not in _WHEEL_CACHE:
        log("building the mmedge wheel for the bundle (pip wheel)")
        with tempfile.TemporaryDirectory(prefix="mmedge-wheel-") as tmp:
            copy = Path(tmp) / "src"
            for f in files:
                (copy / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, copy / f.relative_to(src))
            env = dict(os.environ, SOURCE_DATE_EPOCH=str(int(os.environ.get("SOURCE_DATE_EPOCH", _FIXED_MTIME))),
                       PIP_NO_INPUT="1")
            res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                  "--no-index", "-q", "-w", str(Path(tmp) / "out"), str(copy)],
                                 capture_output=True, text=True, env=env, timeout=600)
            built = sorted((Path(tmp) / "out").glob("mmedge-*.whl"))
            if res.returncode != 0 or len(built) != 1:
                tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
                raise ExportError("could not build the mmedge wheel for the bundle (pip wheel --no-deps "
                                  "--no-build-isolation needs pip and setuptools>=77): " + " | ".join(tail))
            _WHEEL_CACHE[key] = built[0].name.encode() + b"\0" + built[0].read_bytes()
    name, _, data = _WHEEL_CACHE[key].partition(b"\0")
    out = dest / name.decode()
    out.write_bytes(data)
    return out


def _repack_installed(dest: Path) -> Path:
    """A wheel from an installed (non-editable) mmedge: its files as recorded in RECORD."""
    import base64
    import zipfile
    from importlib import metadata

    dist = metadata.distribution("mmedge")
    version = dist.version
    info = f"mmedge-{version}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for f in sorted(dist.files or [], key=str):
        parts = Path(str(f)).parts
        if not parts or parts[0] != "mmedge" or "__pycache__" in parts:
            continue
        entries.append((Path(str(f)).as_posix(), Path(str(f.locate())).read_bytes()))
    if not entries:
        raise ExportError("cannot find the installed mmedge's files to put its wheel in the bundle")
    for name in ("METADATA", "entry_points.txt"):
        text = dist.read_text(name)
        if text is not None:
            entries.append((f"{info}/{name}", text.encode()))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: mmedge\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for n, d in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    out = dest / f"mmedge-{version}-py3-none-any.whl"
    stamp = time.gmtime(max(int(os.environ.get("SOURCE_DATE_EPOCH", _FIXED_MTIME)), 315532800))[:6]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in entries:
            zi = zipfile.ZipInfo(n, date_time=stamp)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, d)
    return out


def stage_install(root: Path, options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """wheels/ (the mmedge wheel + `with_wheels`' *.whl), requirements-jetpack{5,6,7}.txt, install.sh."""
    wheels = root / WHEELS
    own = build_wheel(wheels, log)
    version = own.name.split("-")[1]
    extra = options.get("with_wheels")
    added: list[str] = []
    if extra is not None:
        extra = Path(extra)
        if not extra.is_dir():
            raise InputError(f"--with-wheels {extra}: not a folder of .whl files")
        for w in sorted(extra.glob("*.whl")):
            if w.name.split("-")[0].lower() == "mmedge" or not _SAFE_NAME.match(w.name):
                continue  # the bundle's own mmedge wheel wins
            shutil.copyfile(w, wheels / w.name)
            added.append(w.name)
    reqs = {}
    for jp in sorted(JETPACKS):
        name = f"requirements-jetpack{jp}.txt"
        (root / name).write_text(requirements_text(jp, version), encoding="utf-8")
        reqs[jp] = name
    (root / INSTALL_SCRIPT).write_text(INSTALL_TEMPLATE, encoding="utf-8")
    os.chmod(root / INSTALL_SCRIPT, 0o755)
    return {"script": INSTALL_SCRIPT, "mmedge_wheel": f"{WHEELS}/{own.name}", "requirements": reqs,
            "wheels": sorted(p.name for p in wheels.glob("*.whl")),
            "python": {jp: JETPACKS[jp]["python"] for jp in sorted(JETPACKS)},
            "hardware_tested": False}


def _tools() -> dict[str, str]:
    from mmedge.export.artifact import tool_versions

    return tool_versions("onnx", "onnxruntime")


def _stage(root: Path, groups: list[_Group], options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from mmedge.calibration.tensorrt import caches_of, quantize_artifact
    from mmedge.export.tensorrt import (dla_allowed, example_shapes_from_vectors, fp16_onnx, profile_shapes,
                                        trtexec_shapes)
    from mmedge.export.tensorrt_compat import inspect

    settings, defaults = package_settings(options)
    with_fp16 = _flag(options, "fp16_onnx", True)
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
        vectors = load_test_vectors(g.fp32, m)  # checked against the graphs first: no pickles, no bombs
        examples = example_shapes_from_vectors(g.fp32 / m.extra.get("test_vectors", "test_vectors.npz"))
        graphs = {}
        for ge in m.graphs:
            shapes = profile_shapes(m.pipeline, ge, examples.get(ge.name, {}), settings, m.preprocessing, m.extra)
            lo, opt, hi = trtexec_shapes(shapes)
            if int8_rel:
                q = int8_m.graph(ge.name)
                if q.file != ge.file or ge.name not in caches:
                    raise ExportError(f"{int8_rel}: graph {ge.name!r} is not {ge.file} with a calibration cache")
            if with_fp16:
                (root / "fp16" / g.name).mkdir(parents=True, exist_ok=True)
                fp16_onnx(g.fp32 / ge.file, root / "fp16" / g.name / ge.file)
                found = inspect(root / "fp16" / g.name / ge.file)
                problems = [str(f) for f in found if f.severity == "problem"]
                if problems:
                    raise ExportError(f"fp16/{g.name}/{ge.file}: the fp16 graph is not compatible with TensorRT: "
                                      + "; ".join(problems[:5]) + " (package with --no-fp16)")
            for t in ge.inputs:
                _shell_word(t.name, f"graph {ge.name!r}: input name")
            dla = "1" if dla_allowed(m.pipeline, ge.name) else "0"
            vec, ints = _bench_vectors(root / "bench" / g.name, ge, vectors, shapes)
            fields = [g.name, fp32_rel, int8_rel or "-", ge.name, ge.file, lo, opt, hi, dla, vec, ints]
            for f in fields:
                _shell_word(f, "bundle entry")
            lines.append("|".join(fields))
            graphs[ge.name] = {"onnx": ge.file, "min": lo, "opt": opt, "max": hi, "dla": dla == "1"}
        out_groups.append({"name": g.name, "model": m.model, "config": m.config, "pipeline": m.pipeline,
                           "fp32": fp32_rel, "int8": int8_rel or None,
                           "fp16_onnx": f"fp16/{g.name}" if with_fp16 else None,
                           "graphs": graphs, "notes": sorted(set(notes))})
    return {"groups": out_groups, "graphs_lines": lines, "defaults": defaults}


def _flag(options: dict[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise InputError(f"package jetson option {key}={value!r}: expected True or False")
    return value


def package_settings(options: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The profile settings (batch, beam, profile.AXIS) and the script's defaults (WORKSPACE_MIB, DLA_CORE,
    VERSION_COMPATIBLE) from the package options, checked like `--format tensorrt`'s `-o` options."""
    from dataclasses import replace

    from mmedge.export.tensorrt import settings_from_options

    keys = ("batch", "beam", "workspace", "dla_core", "version_compatible")
    picked = {k: v for k, v in options.items()
              if v is not None and (k in keys or str(k).startswith("profile."))}
    s = settings_from_options(picked, "fp32")
    _flag(options, "int8", True)
    _flag(options, "fp16_onnx", True)
    defaults = {"WORKSPACE_MIB": str(s.workspace_mib),
                "DLA_CORE": "" if s.dla_core is None else str(s.dla_core),
                "VERSION_COMPATIBLE": "1" if s.version_compatible else "0"}
    # the bundle's profiles are for the GPU; the script pins DLA graphs to the opt shapes itself
    return replace(s, dla_core=None), defaults


def _matrix_doc() -> list[dict[str, Any]]:
    from mmedge.export.trt_matrix import MATRIX

    return [{"tensorrt": r.label(), "dla": r.dla, "fp16": r.fp16, "int8": r.int8, "int64_io": r.int64_io,
             "version_compatible": r.version_compatible} for r in MATRIX]


def _bench_vectors(dest: Path, graph: Any, vectors: dict[str, Any], shapes: dict[str, Any]) -> tuple[str, str]:
    """Write the test vectors' inputs of one graph as raw files for `trtexec --loadInputs` (little-endian,
    the graph's dtype; INT64 inputs also as .i32.bin for TensorRT 8.x, whose engines take INT32).

    Returns (their shapes as trtexec --shapes, or "-" when they fall outside the GPU profile or a name
    cannot be passed to --loadInputs; the integer inputs, comma-separated, or "-")."""
    import numpy as np

    parts, ints = [], []
    for t in graph.inputs:
        arr = vectors.get(f"{graph.name}.{t.name}")
        if arr is None or any(c in t.name for c in "/:,") or t.name.startswith("."):
            return "-", "-"
        lo, _, hi = shapes[t.name]
        if len(arr.shape) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, arr.shape, hi)):
            return "-", "-"
        parts.append(f"{t.name}:{'x'.join(str(d) for d in arr.shape) or '1'}")
    dest.mkdir(parents=True, exist_ok=True)
    for t in graph.inputs:
        arr = np.asarray(vectors[f"{graph.name}.{t.name}"])
        dtype = np.dtype(t.dtype) if t.dtype else arr.dtype
        data = np.ascontiguousarray(arr.astype(dtype.newbyteorder("<")))
        (dest / f"{graph.name}.{t.name}.bin").write_bytes(data.tobytes())
        if dtype.kind in "iu":
            ints.append(t.name)
            if dtype.itemsize == 8:
                if arr.size and (arr.min() < -(1 << 31) or arr.max() >= 1 << 31):
                    raise ExportError(f"graph {graph.name!r}: test input {t.name} does not fit INT32 (TensorRT 8.x)")
                (dest / f"{graph.name}.{t.name}.i32.bin").write_bytes(arr.astype("<i4").tobytes())
    return ",".join(parts), ",".join(ints) or "-"


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
    version = newer_format(doc, BUNDLE_FORMAT_VERSION)
    if version is not None:
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
def build_script(graph_lines: list[str], defaults: dict[str, str] | None = None) -> str:
    from mmedge.export.artifact import tool_versions
    from mmedge.export.trt_matrix import script_table

    body = "\n".join(f'  "{line}"' for line in graph_lines)
    d = {"WORKSPACE_MIB": "1024", "DLA_CORE": "", "VERSION_COMPATIBLE": "0", **(defaults or {})}
    for key, value in d.items():
        if value and not re.fullmatch(r"[0-9]+", value):
            raise ExportError(f"build_engines.sh default {key}={value!r} is not a number")
    text = SCRIPT_TEMPLATE.replace("@@GRAPHS@@", body).replace("@@MATRIX@@", script_table())
    for key, value in d.items():
        text = text.replace(f"@@{key}@@", value)
    return text.replace("@@MMEDGE@@", tool_versions()["mmedge"] or "dev")


SCRIPT_TEMPLATE = r'''#!/usr/bin/env bash
# Build TensorRT engines on this board from the bundle's ONNX graphs; written by
# `mmedge package jetson` (mmedge @@MMEDGE@@). Engines do not move across GPUs or
# TensorRT versions, so they are built here, then turned into artifact folders
# under engines/ that `mmedge parity` and `mmedge profile` load.
#
#   ./build_engines.sh                               fp32, fp16 and int8 engines for the GPU
#   PRECISIONS="fp16 int8" DLA_CORE=0 ./build_engines.sh     on DLA core 0, GPU fallback on (boards with
#                                                    DLA: AGX Orin, Orin NX; Orin Nano has none)
#
# Environment:
#   TRT_VERSION=10.3     skip detection (else trtexec's banner, python3's tensorrt, then dpkg)
#   TRTEXEC=PATH         trtexec to run (else PATH, then /usr/src/tensorrt/bin/trtexec)
#   PRECISIONS           "fp32 fp16 int8"
#   DLA_CORE=N           build fp16/int8 for DLA core N (static shapes: opt; fp32 stays on the GPU);
#                        packaged default: "@@DLA_CORE@@" (DLA_CORE= builds for the GPU)
#   DLA_COUNT=N          the board's DLA cores (else counted from /dev/nvhost-nvdla* and
#                        /sys/bus/platform/devices/*nvdla*; Orin Nano: 0)
#   JETSON_MODEL=TEXT    the board's model (else /proc/device-tree/model), for TensorRT 11.4.1+ DLA
#   INT8_SOURCE          auto | qdq | calib: int8 from the Q/DQ graph, or from the fp32 graph plus the
#                        calibration cache (TensorRT <= 10); auto = Q/DQ on the GPU, cache on DLA
#   WORKSPACE_MIB=1024   builder workspace
#   VERSION_COMPATIBLE=1 version-compatible engines (TensorRT >= 8.6)
#   BENCH=1              run trtexec's latency measurement on each engine, on the test vectors' inputs
#                        (--loadInputs, files under bench/) where they fit the engine's shapes
#   OUT=DIR              where engines go (./engines)
#   PYTHON=python3       interpreter with the mmedge runtime, to write the artifact manifests
#   DRY_RUN=1            print the trtexec commands, build nothing
#
# What each TensorRT release can do is the MATRIX below, generated from mmedge's support matrix
# (mmedge/export/trt_matrix.py, from NVIDIA's release notes and support matrix):
# TensorRT 8.5-10.x: --fp16 / --int8 builder flags (int8 from the Q/DQ graph, or --calib).
# TensorRT 11+: strongly typed only (--stronglyTyped): no --fp16/--int8/--calib; int8 from the
# Q/DQ graph, fp16 from the bundle's fp16 graphs. DLA: 8.5-10.7; not 10.8-11.4.0; 11.4.1+ on
# Jetson AGX Orin (JetPack 7.2.2+) only.
# This script was checked with shellcheck and a fake trtexec that records its arguments, not on
# a Jetson.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRECISIONS="${PRECISIONS:-fp32 fp16 int8}"
DLA_CORE="${DLA_CORE-@@DLA_CORE@@}"
INT8_SOURCE="${INT8_SOURCE:-auto}"
WORKSPACE_MIB="${WORKSPACE_MIB:-@@WORKSPACE_MIB@@}"
VERSION_COMPATIBLE="${VERSION_COMPATIBLE:-@@VERSION_COMPATIBLE@@}"
BENCH="${BENCH:-0}"
OUT="${OUT:-$HERE/engines}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"

# TensorRT support matrix (generated), versions as MAJOR*1000000+MINOR*1000+PATCH:
# first|until (exclusive)|DLA (yes/no/board)|fp16 (flag/typed)|int8 (flags/typed)|INT64 I/O|version-compatible|build-only flag
MATRIX=(
@@MATRIX@@
)

# One line per graph (generated):
# name|fp32 artifact|int8 artifact (- if none)|graph|onnx file|min shapes|opt shapes|max shapes|DLA ok (1/0)|
# test vector shapes (- if outside the profile)|integer inputs (- if none)
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
if (( TRT_MAJOR >= 10 )); then
  TRT_INT=$(( TRT_MAJOR * 10000 + TRT_MINOR * 100 + TRT_PATCH ))
else
  TRT_INT=$(( TRT_MAJOR * 1000 + TRT_MINOR * 100 + TRT_PATCH ))
fi
TRT_KEY=$(( 10#$TRT_MAJOR * 1000000 + 10#$TRT_MINOR * 1000 + 10#$TRT_PATCH ))
TRT_ROW=""
for row in "${MATRIX[@]}"; do
  IFS='|' read -r first until _ <<<"$row"
  if (( TRT_KEY >= first && TRT_KEY < until )); then TRT_ROW=$row; fi
done
[[ -n "$TRT_ROW" ]] || die "TensorRT $TRT_VERSION is too old: mmedge needs 8.5 or later (JetPack 5.1+)"
IFS='|' read -r _ _ TRT_DLA TRT_FP16 TRT_INT8 TRT_INT64 TRT_VC TRT_BUILD_ONLY <<<"$TRT_ROW"

# the board's DLA cores: DLA_COUNT, else the nvdla device nodes, else the nvdla platform devices
dla_count() {
  local n=0 d
  for d in /dev/nvhost-nvdla[0-9]*; do
    if [[ -e "$d" ]]; then n=$((n + 1)); fi
  done
  if (( n == 0 )); then
    for d in /sys/bus/platform/devices/*nvdla[0-9]*; do
      if [[ -e "$d" ]]; then n=$((n + 1)); fi
    done
  fi
  echo "$n"
}

case "$INT8_SOURCE" in auto|qdq|calib) ;; *) die "INT8_SOURCE='$INT8_SOURCE': expected auto, qdq or calib" ;; esac
if [[ -n "$DLA_CORE" ]]; then
  [[ "$DLA_CORE" =~ ^[0-9]+$ ]] || die "DLA_CORE='$DLA_CORE' is not a core number"
  case "$TRT_DLA" in
    yes) ;;
    no) die "TensorRT $TRT_VERSION does not support DLA (NVIDIA's support matrix: DLA up to 10.7, then from 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+); set DLA_CORE= to build for the GPU" ;;
    *)
      JETSON_MODEL="${JETSON_MODEL:-$(tr -d '\0' </proc/device-tree/model 2>/dev/null || true)}"
      [[ "$JETSON_MODEL" == *"$TRT_DLA"* ]] \
        || die "TensorRT $TRT_VERSION supports DLA on Jetson $TRT_DLA only (JetPack 7.2.2+), not on '${JETSON_MODEL:-an unknown board}'; set DLA_CORE= to build for the GPU (JETSON_MODEL overrides the board)"
      ;;
  esac
  DLA_COUNT="${DLA_COUNT:-$(dla_count)}"
  [[ "$DLA_COUNT" =~ ^[0-9]+$ ]] || die "DLA_COUNT='$DLA_COUNT' is not a number"
  if (( DLA_CORE >= DLA_COUNT )); then
    if (( DLA_COUNT == 0 )); then
      die "DLA_CORE=$DLA_CORE: this board has no DLA (Jetson Orin Nano has none); set DLA_CORE= to build for the GPU (DLA_COUNT overrides the count)"
    fi
    die "DLA_CORE=$DLA_CORE: this board has $DLA_COUNT DLA cores (0-$((DLA_COUNT - 1))); use one of them or set DLA_CORE= to build for the GPU"
  fi
fi
if [[ "$VERSION_COMPATIBLE" == 1 && "$TRT_VC" != 1 ]]; then
  die "VERSION_COMPATIBLE=1 needs TensorRT 8.6 or later (this is $TRT_VERSION)"
fi
if [[ "$TRT_INT8" == typed && "$INT8_SOURCE" == calib ]]; then
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
  [[ "$TRT_INT8" == flags ]] || return 1
  [[ "$INT8_SOURCE" == calib ]] || { [[ "$INT8_SOURCE" == auto ]] && uses_dla int8 "$1"; }
}

# bench_inputs NAME GRAPH VECTOR_SHAPES INTEGER_INPUTS -> trtexec's --loadInputs value
bench_inputs() {
  local name=$1 graph=$2 vec=$3 ints=",$4," spec="" part input file
  local parts=()
  IFS=, read -r -a parts <<<"$vec"
  for part in "${parts[@]}"; do
    input=${part%%:*}
    file="$HERE/bench/$name/$graph.$input.bin"
    if [[ "$ints" == *",$input,"* && "$TRT_INT64" != 1 ]]; then
      file="$HERE/bench/$name/$graph.$input.i32.bin"  # TensorRT 8.x engines take INT64 inputs as INT32
    fi
    spec+="${spec:+,}$input:$file"
  done
  echo "$spec"
}

# build_graph PRECISION NAME FP32_DIR INT8_DIR GRAPH ONNX MIN OPT MAX DLA_OK VECTORS INTS -> 0 built, 2 skipped
build_graph() {
  local precision=$1 name=$2 fp32_dir=$3 int8_dir=$4 graph=$5 onnx=$6 min=$7 opt=$8 max=$9 dla_ok=${10}
  local vec=${11} ints=${12}
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
  if [[ "$TRT_FP16" == typed ]]; then
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
  args+=("$TRT_BUILD_ONLY")
  note "building $name/$graph ($precision$([[ "$dla" == 1 ]] && echo ", DLA core $DLA_CORE"))"
  run "$dir/$graph.log" "$TRTEXEC_BIN" --onnx="$model" --saveEngine="$dir/$graph.engine" "${args[@]}"
  if [[ "$BENCH" == 1 ]]; then
    local bench=(--loadEngine="$dir/$graph.engine")
    if [[ "$vec" != - ]] && [[ "$dla" == 0 || "$vec" == "$opt" ]]; then
      bench+=(--shapes="$vec" --loadInputs="$(bench_inputs "$name" "$graph" "$vec" "$ints")")
    elif [[ "$ints" != - ]]; then
      note "skip benchmarking $name/$graph: its test vectors do not fit the engine's shapes and random $ints would not be valid"
      return 0
    else
      note "$name/$graph: test vectors do not fit the engine's shapes; benchmarking random inputs at $opt"
      bench+=(--shapes="$opt")
    fi
    if [[ "$dla" == 1 ]]; then bench+=(--useDLACore="$DLA_CORE"); fi
    if [[ "$VERSION_COMPATIBLE" == 1 ]]; then bench+=(--versionCompatible); fi  # to load such engines
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
    if int8_from_cache 1; then extra+=(--int8-source calib); else extra+=(--int8-source qdq); fi
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
    IFS='|' read -r name fp32_dir int8_dir graph onnx min opt max dla_ok vec ints <<<"$line"
    if [[ -z "${SOURCE[$name]+x}" ]]; then
      NAMES+=("$name")
      GPU_ONLY[$name]=""
      if [[ "$precision" == int8 ]]; then SOURCE[$name]=$int8_dir; else SOURCE[$name]=$fp32_dir; fi
    fi
    if [[ "$dla_ok" != 1 ]]; then GPU_ONLY[$name]+=" $graph"; fi
    status=0
    build_graph "$precision" "$name" "$fp32_dir" "$int8_dir" "$graph" "$onnx" "$min" "$opt" "$max" "$dla_ok" \
      "$vec" "$ints" || status=$?
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
    from mmedge.export.trt_matrix import markdown_table

    return README_TEMPLATE.replace("@@ROWS@@", rows).replace("@@NOTES@@", notes).replace(
        "@@MATRIX@@", markdown_table())


README_TEMPLATE = """# mmedge bundle for NVIDIA Jetson

This bundle carries ONNX graphs, not engines: a TensorRT engine runs only on the GPU and the
TensorRT version it was built with, so `build_engines.sh` builds them here, on the board.

| model | pipeline | graphs | int8 |
| --- | --- | --- | --- |
@@ROWS@@

## 1. Install the mmedge runtime (pure Python, no PyTorch), offline from this bundle

The bundle carries the mmedge wheel (`wheels/`) and one requirements file per JetPack;
`install.sh` picks the file by the board's L4T release (`/etc/nv_tegra_release`; `JETPACK=5|6|7`
overrides) and runs `pip install --no-index --find-links wheels/ -r requirements-jetpack<N>.txt`:

| JetPack (L4T) | Python | TensorRT (from JetPack) | CUDA | pip pins |
| --- | --- | --- | --- | --- |
| 5.1.x (R35) | 3.8 | 8.5 | 11.4 | `numpy<1.24` (TensorRT 8.5 uses `np.bool`), `cuda-python>=11.8,<12` |
| 6.x (R36) | 3.10 | 10.3 | 12.6 | `cuda-python>=12,<13` (cuda-bindings 13 needs driver >= 580) |
| 7.x (R38) | 3.12 | 10.13+ | 13.0 | `cuda-python>=13,<14` |

```bash
python3 -m venv --system-site-packages ~/mmedge-env   # keeps JetPack's TensorRT bindings visible
PYTHON=~/mmedge-env/bin/python ./install.sh            # offline; CUDA=0 skips cuda-python, ONNXRUNTIME=1 adds onnxruntime
. ~/mmedge-env/bin/activate && mmedge doctor           # L4T/JetPack, TensorRT, CUDA, Python, DLA cores, power mode, jetson_clocks
```

TensorRT's Python bindings are not pip packages here: JetPack has them (`python3 -c "import
tensorrt"`; else `sudo apt-get install python3-libnvinfer`). Do not install `mmedge[tensorrt]` on
the board (it would pull TensorRT wheels for servers). `wheels/` holds only the mmedge wheel unless
the bundle was made with `mmedge package jetson --with-wheels DIR`, which adds every `*.whl` in
DIR: the dependencies (numpy, typer, click, rich, pillow, cuda-python, onnxruntime, ...) for the
board's Python and aarch64, e.g. `pip download --only-binary=:all: --platform manylinux2014_aarch64
--python-version 3.8 -d DIR -r requirements-jetpack5.txt` (mmedge itself from a local wheel). Without them, install
with the index reachable: `ONLINE=1 ./install.sh` (or `pip install mmedge` with the pins above).

## 2. Build the engines

```bash
./build_engines.sh                                  # fp32, fp16, int8 for the GPU
PRECISIONS="fp16 int8" DLA_CORE=0 ./build_engines.sh   # DLA core 0 (GPU fallback): AGX Orin, Orin NX, Xavier
TRT_VERSION=10.3 DRY_RUN=1 ./build_engines.sh         # show the trtexec commands only
```

Jetson Orin Nano has no DLA: there `DLA_CORE=0` stops with one line before building anything
(the script counts the board's DLA cores; `DLA_COUNT` overrides). Which TensorRT has DLA is
below.

The script finds `trtexec` (PATH, then `/usr/src/tensorrt/bin/trtexec`), reads the TensorRT
version from its banner (`TRT_VERSION` overrides), and builds every graph with the optimization
profile in `bundle.json` (min/opt/max of the batch axis, beam rows for the captioner's decoder
step, audio length / image size). Each precision becomes an artifact folder under `engines/`
(`<model>-<config>-tensorrt-<precision>`: engines, `manifest.json`, `tensorrt.json` build record,
test vectors). Other settings: `WORKSPACE_MIB`, `INT8_SOURCE=qdq|calib`, `VERSION_COMPATIBLE=1`,
`BENCH=1` (trtexec latency on the test vectors' inputs, `--loadInputs` from `bench/`), `OUT`,
`PYTHON` — see the top of the script.

What the script does per TensorRT release (the same table drives it and mmedge's Python builder;
from NVIDIA's release notes and support matrix):

@@MATRIX@@

DLA engines are built with `--useDLACore=N --allowGPUFallback` and the opt shapes (DLA has no
dynamic shapes); int8 on DLA with TensorRT <= 10 comes from the fp32 graph and the calibration
cache, on 11.4.1+ from the Q/DQ graph. **The script was checked with shellcheck and a fake
`trtexec` that records its arguments, not on a Jetson**: the first real run on a board is the
test.

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

## What was and was not run on real hardware

Nothing in this bundle has run on a Jetson. `build_engines.sh` and `install.sh` pass shellcheck;
`build_engines.sh` was run against a fake `trtexec` that records its arguments, and every flag it
emits was checked against trtexec's option parser in TensorRT's sources for the versions in
`bundle.json` (`tensorrt.flags_checked_against_parser`): that is a check of the command lines, not
of engines built on a board. `install.sh` was run on x86-64 with `JETPACK=5` in a fresh Python 3.8
venv, from this bundle's own files (the wheels given with `--with-wheels`), followed by `mmedge
parity` on an ONNX artifact with ONNX Runtime. Not run: TensorRT engine builds, the TensorRT
session, DLA, `BENCH=1`, `nvpmodel`/`jetson_clocks`/`tegrastats` (their parsers were checked on
recorded output only), cuda-python on Jetson. Minimum versions: JetPack 5.1 (L4T R35.2, TensorRT
8.5, Python 3.8); JetPack 4 (TensorRT 8.2, Python 3.6) is not supported.

## Compatibility notes found when bundling

@@NOTES@@

`bundle.json` lists every file with its sha256; `mmedge package jetson --verify bundle.tar.gz`
re-checks an archive.
"""


INSTALL_TEMPLATE = r'''#!/usr/bin/env bash
# Install the torch-free mmedge runtime from this bundle's own files, offline; written by
# `mmedge package jetson`. Picks requirements-jetpack<N>.txt by the board's L4T release
# (/etc/nv_tegra_release: R35 -> JetPack 5, R36 -> 6, R38 -> 7) and runs
#   $PYTHON -m pip install --no-index --find-links wheels/ -r requirements-jetpack<N>.txt
#
#   python3 -m venv --system-site-packages ~/mmedge-env      # keeps JetPack's TensorRT visible
#   PYTHON=~/mmedge-env/bin/python ./install.sh
#
# Environment:
#   JETPACK=5|6|7      skip the detection
#   PYTHON=python3     the interpreter to install into (JetPack 5: 3.8, 6: 3.10, 7: 3.12)
#   CUDA=0             leave out cuda-python (no TensorRT session: ONNX artifacts only)
#   ONNXRUNTIME=1      also install onnxruntime (its wheel must be in wheels/: --with-wheels)
#   ONLINE=1           let pip fetch from the index what wheels/ lacks
#   ANY_PYTHON=1       install into another Python than the JetPack's (its TensorRT will not import)
#   NV_TEGRA_RELEASE   the release file to read (/etc/nv_tegra_release)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
JETPACK="${JETPACK:-}"
CUDA="${CUDA:-1}"
ONNXRUNTIME="${ONNXRUNTIME:-0}"
ONLINE="${ONLINE:-0}"
ANY_PYTHON="${ANY_PYTHON:-0}"
NV_TEGRA_RELEASE="${NV_TEGRA_RELEASE:-/etc/nv_tegra_release}"

die() { echo "install.sh: error: $*" >&2; exit 1; }
note() { echo "install.sh: $*" >&2; }

if [[ -z "$JETPACK" ]]; then
  [[ -r "$NV_TEGRA_RELEASE" ]] || die "no $NV_TEGRA_RELEASE (not a Jetson?); set JETPACK=5, 6 or 7"
  release="$(grep -o -m 1 'R[0-9][0-9]* (release)' "$NV_TEGRA_RELEASE" | tr -dc '0-9' || true)"
  case "$release" in
    35) JETPACK=5 ;;
    36) JETPACK=6 ;;
    38) JETPACK=7 ;;
    *) die "L4T release '${release:-?}' in $NV_TEGRA_RELEASE: this bundle installs on JetPack 5 (R35), 6 (R36) or 7 (R38); set JETPACK= to override" ;;
  esac
  note "L4T R$release: JetPack $JETPACK"
fi
case "$JETPACK" in
  5) WANT_PY=3.8 ;;
  6) WANT_PY=3.10 ;;
  7) WANT_PY=3.12 ;;
  *) die "JETPACK='$JETPACK': expected 5, 6 or 7" ;;
esac
REQ="$HERE/requirements-jetpack$JETPACK.txt"
[[ -f "$REQ" ]] || die "$REQ is missing from the bundle"

HAVE_PY="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" || die "cannot run PYTHON=$PYTHON"
if [[ "$HAVE_PY" != "$WANT_PY" ]]; then
  if [[ "$ANY_PYTHON" == 1 ]]; then
    note "Python $HAVE_PY, not JetPack $JETPACK's $WANT_PY: JetPack's TensorRT bindings will not import there"
  else
    die "$PYTHON is Python $HAVE_PY; JetPack $JETPACK's TensorRT bindings are for Python $WANT_PY (ANY_PYTHON=1 installs anyway)"
  fi
fi

REQS="$(mktemp)"
trap 'rm -f "$REQS"' EXIT
if [[ "$CUDA" == 0 ]]; then
  grep -v '^cuda-python' "$REQ" >"$REQS"
else
  cp "$REQ" "$REQS"
fi
if [[ "$ONNXRUNTIME" == 1 ]]; then echo "onnxruntime" >>"$REQS"; fi

PIP_ARGS=(--find-links "$HERE/wheels")
if [[ "$ONLINE" != 1 ]]; then PIP_ARGS=(--no-index "${PIP_ARGS[@]}"); fi
note "installing requirements-jetpack$JETPACK.txt into $PYTHON (Python $HAVE_PY)$([[ "$ONLINE" == 1 ]] || echo ', offline')"
"$PYTHON" -m pip install "${PIP_ARGS[@]}" -r "$REQS" \
  || die "pip could not install from wheels/ alone: add the missing wheels with 'mmedge package jetson --with-wheels DIR' (see README.md), or ONLINE=1"

if [[ "$CUDA" != 0 ]] && ! "$PYTHON" -c 'import tensorrt' >/dev/null 2>&1; then
  note "TensorRT's Python bindings do not import in $PYTHON: make the venv with --system-site-packages, or sudo apt-get install python3-libnvinfer"
fi
"$PYTHON" -m mmedge doctor || true
note "done: $PYTHON -m mmedge parity --artifact artifacts/<model>-<config>-onnx-fp32 (with ONNXRUNTIME=1), then ./build_engines.sh"
'''
