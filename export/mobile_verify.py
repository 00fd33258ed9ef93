"""`mmedge package mobile --verify app.zip`: what a mobile bundle is, and re-checking one.

The zip's entries pass `mmedge.archive`'s rules before anything is written (absolute paths,
`..`, links and oversized archives are refused), its manifest.json is read bounded and
validated against schemas/mobile-bundle.schema.json (`DESCRIPTOR`: mmedge.archive.Descriptor,
as the Jetson bundle's), every listed file is extracted
streamed and hashed as it is written (and nothing unlisted may be there), then the Android
test vectors are replayed through `mmedge.runtime` (ONNX Runtime reads `.ort` files) with the
parity criteria of `mmedge parity`, beam-search tokens included; on macOS the iOS packages too.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.archive import (BUDGET, COUNT, FOLDER, INFLATE, OUTSIDE, SPECIAL, TWICE, Descriptor, Limits, Member,
                            Refused, Rules, chunks, read_limited, zip_member)
from mmedge.errors import ArtifactError, CheckFailedError, InputError, ParityError
from mmedge.export.mobile_vectors import read_vectors
from mmedge.export.mobile_versions import check_ort_versions
from mmedge.runtime.manifest import MANIFEST, Manifest, sha256_file
from mmedge.runtime.schema import (MAX_JSON_BYTES, check_relpath, inside, load_schema, parse_json, path_problem,
                                   read_json, validate)

BUNDLE_FORMAT = "mmedge-mobile"
BUNDLE_VERSION = 1
BUNDLE_SCHEMA = load_schema("mobile-bundle.schema.json")  # the zip's manifest.json
DESCRIPTOR = Descriptor(
    MANIFEST, BUNDLE_FORMAT, BUNDLE_VERSION,
    parse=lambda data, where: parse_json(data, where, ArtifactError, f"{MANIFEST} is not valid JSON"),
    validate=lambda doc, where: validate(doc, BUNDLE_SCHEMA, f"{where}: {MANIFEST}", "bundle manifest"),
    missing=f"{{archive}}: no {MANIFEST}; not an mmedge mobile bundle",
    foreign=f"{{archive}}: {MANIFEST} is not an mmedge mobile bundle manifest",
    newer="{archive}: bundle format_version {version} is newer than this mmedge reads ({newest}); upgrade mmedge")
LIMITS = Limits()  # honest bundles unpack to ~1-3x their size; one deflated member to at most ~1032x
MAX_ENTRIES, MAX_UNPACKED = LIMITS.members, LIMITS.unpacked
MAX_RATIO = LIMITS.ratio  # a whole zip: unpacked bytes per archive byte (+ 64 MiB)
MAX_MEMBER_RATIO = LIMITS.member_ratio  # one member over 1 MiB: inflated / compressed


def safe_members(z: zipfile.ZipFile, where: Path) -> list[zipfile.ZipInfo]:
    """Every entry checked before anything is written: no absolute path, no `..`, no links, and
    declared sizes that a zip of this size can honestly hold (mmedge.archive's rules); every
    file's name is also a plain relative path (the manifest's rule for the paths it lists)."""
    infos = z.infolist()

    def plain(m: Member) -> None:
        if m.kind != FOLDER and path_problem(m.name) is not None:
            raise InputError(f"{where}: entry {m.name[:200]!r} is not a plain relative path: {path_problem(m.name)}")

    rules = Rules(where.stat().st_size, LIMITS)
    try:
        rules.count(len(infos))
        for info in infos:
            rules.check(zip_member(info), plain)
    except Refused as e:
        raise _refusal(where, e, len(infos)) from None
    return infos


def _refusal(where: Path, e: Refused, entries: int) -> InputError:
    """The mobile bundle's wording of a broken archive rule."""
    name, m = e.name, e.member
    if e.rule == COUNT:
        return InputError(f"{where}: {entries} entries; refusing more than {MAX_ENTRIES}")
    if e.rule == OUTSIDE:
        return InputError(f"{where}: entry {name!r} points outside the bundle (absolute path or '..'); "
                          f"refusing to extract it")
    if e.rule == SPECIAL:
        return InputError(f"{where}: entry {name!r} is a link or special file; refusing to extract it")
    if e.rule == TWICE:
        return InputError(f"{where}: entry {name!r} appears twice")
    if e.rule == INFLATE and m is not None:
        return InputError(f"{where}: entry {name[:200]!r} would inflate from {m.packed} to {m.size} bytes (more "
                          f"than {MAX_MEMBER_RATIO}x; a zip bomb?); refusing it")
    if e.rule == BUDGET:
        return InputError(f"{where}: declares more than {e.limit} unpacked bytes for a "
                          f"{where.stat().st_size}-byte zip (a zip bomb?); refusing to extract it")
    return InputError(f"{where}: entry {name[:200]!r} holds more than it declares (a zip bomb?); refusing it")


def open_zip(bundle: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise InputError(f"{bundle}: not a zip file ({str(e).splitlines()[0][:120] if str(e) else e})") from None


def read_descriptor(z: zipfile.ZipFile, infos: list[zipfile.ZipInfo], bundle: Path) -> dict[str, Any]:
    """The bundle's manifest.json, first and bounded, validated against schemas/mobile-bundle.schema.json."""
    info = next((i for i in infos if i.filename == MANIFEST), None)
    if info is None:
        raise DESCRIPTOR.absent(bundle)
    if info.file_size > MAX_JSON_BYTES:
        raise ArtifactError(f"{bundle}: {MANIFEST}: {info.file_size} bytes, over the {MAX_JSON_BYTES >> 20} MiB "
                            f"limit")
    try:
        with z.open(info) as f:
            data = read_limited(f, MAX_JSON_BYTES, zip_member(info))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, Refused) as e:
        raise ArtifactError(f"{bundle}: {MANIFEST}: corrupt in the zip ({e})") from None
    return DESCRIPTOR.read(data, bundle)


def extract(bundle: Path, dest: Path) -> dict[str, Any]:
    """Check the zip's entries, read and validate its manifest, check the listing, then extract
    the listed files (streamed, hashed as they are written). Returns the manifest."""
    with open_zip(bundle) as z:
        infos = safe_members(z, bundle)
        doc = read_descriptor(z, infos, bundle)
        files: dict[str, str] = doc["files"]
        present = {i.filename for i in infos if not i.is_dir()} - {MANIFEST}
        for rel in sorted(files):
            if rel not in present:
                raise CheckFailedError(f"{bundle}: {rel}: missing (listed in {MANIFEST})")
        extra = sorted(present - set(files))
        if extra:
            raise CheckFailedError(f"{bundle}: {extra[0]}: not listed in {MANIFEST} (file added after packaging)")
        for info in infos:
            if info.is_dir() or info.filename == MANIFEST:
                continue
            target = dest.joinpath(*info.filename.split("/"))
            h = hashlib.sha256()
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a file where an entry needs a folder
                raise ArtifactError(f"{bundle}: {info.filename}: cannot extract it ({e.strerror})") from None
            try:
                with z.open(info) as src, open(target, "xb") as dst:
                    for block in chunks(src, info.file_size, zip_member(info)):
                        h.update(block)
                        dst.write(block)
            except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, Refused) as e:  # CRC, truncation
                raise ArtifactError(f"{bundle}: {info.filename}: corrupt in the zip ({e})") from None
            except (FileExistsError, IsADirectoryError, NotADirectoryError) as e:
                raise ArtifactError(f"{bundle}: {info.filename}: cannot extract it ({e.strerror})") from None
            if h.hexdigest() != files[info.filename]:
                raise CheckFailedError(f"{bundle}: {info.filename}: sha256 does not match {MANIFEST} (file changed "
                                       f"or truncated)")
    return doc


def check_files(root: Path, bundle: Path) -> dict[str, Any]:
    """An extracted bundle's manifest (checked as in the zip: format, version, schema), the sha256
    of every file, and no unlisted file."""
    path = root / MANIFEST
    if not path.is_file():
        raise DESCRIPTOR.absent(bundle)
    doc = DESCRIPTOR.check(read_json(path, "bundle manifest", ArtifactError, "is not valid JSON", follow_links=False),
                           bundle)
    files = doc["files"]
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()} - {MANIFEST}
    for rel, digest in sorted(files.items()):
        if rel not in present:
            raise CheckFailedError(f"{bundle}: {rel}: missing (listed in {MANIFEST})")
        if sha256_file(inside(root, rel, MANIFEST)) != digest:
            raise CheckFailedError(f"{bundle}: {rel}: sha256 does not match {MANIFEST} (file changed or truncated)")
    extra = sorted(present - set(files))
    if extra:
        raise CheckFailedError(f"{bundle}: {extra[0]}: not listed in {MANIFEST} (file added after packaging)")
    return doc


def _pipeline(root: Path, model: str, entry: dict[str, Any], platform: str, vectors_file: str,
              files: dict[str, str] | None = None, bundle: Path | None = None) -> Any:
    from mmedge.runtime.pipelines import PIPELINES

    plat = entry[platform]
    where = f"{bundle or root}: {MANIFEST}: models.{model}"

    def listed(rel: str, what: str) -> Path:
        if files is not None and rel not in files and not any(f.startswith(rel + "/") for f in files):
            raise ArtifactError(f"{where}: {what} {rel!r} is not a file of the bundle")
        return root / check_relpath(rel, where, what)

    def doc(key: str) -> Any:
        return read_json(inside(root, entry[key], where, key), key, ArtifactError, "is not valid JSON",
                         follow_links=False)

    for g in plat["graphs"]:
        listed(g["file"], "graph file")
    pre = doc("preprocessing")
    if not isinstance(pre, dict) or not isinstance(pre.get("parameters"), dict):
        raise ArtifactError(f"{where}: {entry['preprocessing']}: expected an object with 'parameters'")
    d = {"format_version": 1, "model": model, "config": entry["config"], "pipeline": entry["pipeline"],
         "format": plat["format"], "precision": plat["precision"], "graphs": plat["graphs"],
         "preprocessing": pre["parameters"], "model_config": entry.get("model_config", {}),
         "vocabulary": doc("vocabulary") if "vocabulary" in entry else None,
         "labels": doc("labels") if "labels" in entry else None,
         "extra": {**entry.get("extra", {}), "test_vectors": vectors_file}}
    m = Manifest.from_dict(d, f"{where} ({platform})")
    cls = PIPELINES.get(m.pipeline)
    if cls is None:
        raise ArtifactError(f"{model}: unknown pipeline {m.pipeline!r} in {MANIFEST}")
    return cls(root, m, "onnxruntime" if platform == "android" else "coreml")


def verify(bundle: Path) -> list[Any]:
    """Safe extraction, sha256 of every file, then the test vectors through mmedge.runtime."""
    from mmedge.runtime.parity import check

    bundle = Path(bundle)
    if not bundle.is_file():
        raise InputError(f"{bundle}: bundle not found")
    reports = []
    with tempfile.TemporaryDirectory(prefix="mmedge-verify-") as work:
        root = Path(work) / "bundle"
        root.mkdir()
        doc = extract(bundle, root)
        check_ort_versions(root, doc, str(bundle))  # each .ort's header: the format version the manifest states
        for model, entry in sorted(doc["models"].items()):
            try:
                plain, image = read_vectors(root, entry["test_vectors"])
            except ArtifactError as e:
                raise ArtifactError(f"{bundle}: {model}: {e}") from None
            except (ValueError, OSError) as e:
                raise ArtifactError(f"{bundle}: {model}: malformed test vectors in the bundle "
                                    f"({e.__class__.__name__}: {e})") from None
            np.savez(root / f".{model}-vectors.npz", **plain)  # model: a name (schema), not a path
            platforms = ["android"] if "android" in entry else []
            if "ios" in entry and sys.platform == "darwin":
                import importlib.util

                if importlib.util.find_spec("coremltools") is not None:
                    np.savez(root / f".{model}-ios-vectors.npz", **{**plain, **image})
                    platforms.append("ios")
            for platform in platforms:
                vec = f".{model}-vectors.npz" if platform == "android" else f".{model}-ios-vectors.npz"
                rep = check(_pipeline(root, model, entry, platform, vec, doc["files"], bundle))
                rep.artifact = f"{bundle}:{platform}/{model}"
                reports.append(rep)
                if not rep.ok:
                    bad = list(rep.outputs)
                    if not rep.beam.get("ok", True):
                        from mmedge.errors import Mismatch

                        bad.append(Mismatch("beam tokens", float(rep.beam.get("max_rel_score_error", 0)), 0.0, 0.0))
                    raise ParityError(f"{bundle}: {platform}/{model}", bad)
    return reports
