"""The Jetson bundle's offline runtime install: wheels/, requirements-jetpack<N>.txt, install.sh.

The board installs with `pip install --no-index --find-links wheels/ -r requirements-jetpack<N>.txt`
(install.sh picks N by the board's L4T release), so the bundle carries the mmedge wheel itself:
built with pip from the source tree (an editable install or a checkout), or repacked from the
installed files (a wheel install). Reproducible: SOURCE_DATE_EPOCH, or 2020-01-01.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from mmedge.errors import ExportError, InputError
from mmedge.export.jetson_script import INSTALL_SCRIPT, SAFE_NAME, install_script

FIXED_MTIME = 1577836800  # 2020-01-01: reproducible archives (SOURCE_DATE_EPOCH overrides)


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
            env = dict(os.environ, SOURCE_DATE_EPOCH=str(int(os.environ.get("SOURCE_DATE_EPOCH", FIXED_MTIME))),
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
    stamp = time.gmtime(max(int(os.environ.get("SOURCE_DATE_EPOCH", FIXED_MTIME)), 315532800))[:6]
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
            if w.name.split("-")[0].lower() == "mmedge" or not SAFE_NAME.match(w.name):
                continue  # the bundle's own mmedge wheel wins
            shutil.copyfile(w, wheels / w.name)
            added.append(w.name)
    reqs = {}
    for jp in sorted(JETPACKS):
        name = f"requirements-jetpack{jp}.txt"
        (root / name).write_text(requirements_text(jp, version), encoding="utf-8")
        reqs[jp] = name
    (root / INSTALL_SCRIPT).write_text(install_script(), encoding="utf-8")
    os.chmod(root / INSTALL_SCRIPT, 0o755)
    return {"script": INSTALL_SCRIPT, "mmedge_wheel": f"{WHEELS}/{own.name}", "requirements": reqs,
            "wheels": sorted(p.name for p in wheels.glob("*.whl")),
            "python": {jp: JETPACKS[jp]["python"] for jp in sorted(JETPACKS)},
            "hardware_tested": False}
