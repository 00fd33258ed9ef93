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

Give it fp32 ONNX artifacts: the int8 graphs are quantized for TensorRT by the
`quantize` step the caller passes (calibration is a layer above this one:
`mmedge.calibration.packaging.package`, what `mmedge package` calls, passes
`mmedge.calibration.tensorrt.quantize_artifact`, sharing the ONNX Runtime
recipe's calibration cache). An int8 artifact already in TensorRT's layout can
be given alongside its fp32 artifact; ONNX Runtime's x86 int8 layout (uint8
activations) is refused, as are engine artifacts. Every graph is checked with the TensorRT
compatibility check first. The archive is written to a temporary file and
renamed into place, byte-identical for identical inputs.

Options (`PackageRequest.options`; on the command line `mmedge package jetson --batch
--beam --profile AXIS=.. --workspace --dla-core --version-compatible --fp16/--no-fp16
--int8/--no-int8`): `int8` (False: no int8 graphs), `fp16_onnx` (False: no fp16 graphs, so no
fp16 engines on TensorRT >= 11), `batch` / `beam` / `profile.AXIS` (as for `--format
tensorrt`), `workspace`, `dla_core` and `version_compatible` (the script's defaults of
WORKSPACE_MIB, DLA_CORE and VERSION_COMPATIBLE; the environment overrides them). Python-only:
`quantize` (a Quantize: writes the int8 artifact of an fp32 one; needed for the int8 graphs of
fp32 artifacts given without their int8 one), `calib` (CalibSource) and `quant` (QuantConfig),
read by `mmedge.calibration.packaging` to make `quantize`, `log` (a callable for progress),
`verify` (re-check a bundle instead of writing one).

This module packages; export/jetson_script.py fills in the scripts and the README from the
templates in export/templates/jetson/, export/jetson_wheel.py stages the offline install
(wheels/, requirements, install.sh) and export/jetson_bundle.py reads bundles back (`--verify`).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmedge.atomic import atomic_path
from mmedge.errors import ExportError, InputError, require
from mmedge.export.jetson_bundle import (BUNDLE_DIR, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, BUNDLE_MANIFEST,
                                         JETSON_SCHEMA, MAX_MEMBERS, MAX_RATIO, MAX_UNPACKED, verify_bundle)
from mmedge.export.jetson_script import INSTALL_SCRIPT, README, SAFE_NAME, SCRIPT, build_script, bundle_readme
from mmedge.export.jetson_wheel import (FIXED_MTIME, JETPACKS, WHEELS, build_wheel, requirements_text,
                                        stage_install)
from mmedge.export.package import PackageRequest, register_packager
from mmedge.export.trt_cache import caches_of, is_tensorrt_int8
from mmedge.runtime.manifest import MANIFEST, Manifest, load_test_vectors, read_manifest, sha256_file

# The int8 step: (fp32 ONNX artifact, destination, log) -> an int8 ONNX artifact in TensorRT's layout
# with its calibration caches. It calibrates, a layer above this module, so the caller passes it.
Quantize = Callable[[Path, Path, Callable[[str], None]], Path]

__all__ = ["BUNDLE_DIR", "BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "BUNDLE_MANIFEST", "INSTALL_SCRIPT", "JETPACKS",
           "JETSON_SCHEMA", "MAX_MEMBERS", "MAX_RATIO", "MAX_UNPACKED", "SCRIPT", "WHEELS", "build_script",
           "build_wheel", "bundle_readme", "package_jetson", "package_settings", "requirements_text",
           "stage_install", "verify_bundle"]


@dataclass
class _Group:
    name: str  # <model>-<config>
    fp32: Path
    fp32_manifest: Manifest
    int8: Path | None = None


# ------------------------------------------------------------------ inputs
def _groups(artifacts: list[Path]) -> list[_Group]:
    """fp32 ONNX artifacts (+ optional int8 ones in TensorRT's layout), one group per model/config."""
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
    if not SAFE_NAME.match(text):
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
    if req.options.get("int8", True) and any(g.int8 is None for g in groups):
        _quantize_step(req.options)  # without one, fail before any work
    for module in ("onnxruntime", "onnx"):  # no torch needed; a device install may lack onnx
        require(module, "mmedge package jetson: int8 calibration and the TensorRT lint", extra="onnx")
    with tempfile.TemporaryDirectory(prefix="mmedge-jetson-") as work:
        root = Path(work) / BUNDLE_DIR
        root.mkdir()
        summary = _stage(root, groups, req.options, log)
        (root / SCRIPT).write_text(build_script(summary["graphs_lines"], summary["defaults"]), encoding="utf-8")
        os.chmod(root / SCRIPT, 0o755)
        install = stage_install(root, req.options, log)
        (root / README).write_text(bundle_readme(summary["groups"]), encoding="utf-8")
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


def _tools() -> dict[str, str]:
    from mmedge.export.artifact import tool_versions

    return tool_versions("onnx", "onnxruntime")


def _stage(root: Path, groups: list[_Group], options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
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
            _quantize_step(options)(g.fp32, root / int8_rel, log)
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
        examples = example_shapes_from_vectors(g.fp32 / m.extra.vectors_file)
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
            dla = "1" if dla_allowed(ge) else "0"
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


def _quantize_step(options: dict[str, Any]) -> Quantize:
    quantize = options.get("quantize")
    if quantize is None:
        raise InputError("package jetson: the int8 graphs need calibration; package through "
                         "mmedge.calibration.packaging.package (what `mmedge package jetson` does), give the int8 "
                         "artifact in TensorRT's layout too, or leave int8 out (int8=False, --no-int8)")
    return quantize


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


def _write_tar_atomic(root: Path, out: Path) -> None:
    """Deterministic .tar.gz of `root` (sorted, fixed owner and time), temp file + os.replace."""
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", FIXED_MTIME))
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
