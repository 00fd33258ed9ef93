"""What a Jetson bundle is (its folder, descriptor, format) and `package jetson --verify`: re-check one.

Nothing is extracted and nothing is held in memory but descriptors: the members' headers
pass `mmedge.archive`'s rules (names by path component inside mmedge-jetson/, plain files
and folders only, a total bounded by the archive's size), bundle.json is read bounded and
validated against schemas/jetson-bundle.schema.json (`DESCRIPTOR`, read as every bundle
descriptor is: mmedge.archive.Descriptor), then every member is hashed in chunks.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from pathlib import Path
from typing import Any, Iterator

from mmedge.archive import (BUDGET, COUNT, OUTSIDE, SPECIAL, TWICE, Descriptor, Limits, Refused, Rules, chunks,
                            read_limited, tar_member)
from mmedge.errors import ArtifactError, CheckFailedError, InputError
from mmedge.runtime.manifest import MANIFEST, Manifest
from mmedge.runtime.schema import MAX_JSON_BYTES, load_schema, parse_json, path_problem, validate

BUNDLE_DIR = "mmedge-jetson"
BUNDLE_MANIFEST = "bundle.json"
BUNDLE_FORMAT = "mmedge-jetson-bundle"
BUNDLE_FORMAT_VERSION = 1
JETSON_SCHEMA = load_schema("jetson-bundle.schema.json")
DESCRIPTOR = Descriptor(
    BUNDLE_MANIFEST, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION,
    parse=lambda data, where: parse_json(data, where, ArtifactError, f"{BUNDLE_MANIFEST} is not valid JSON"),
    validate=lambda doc, where: validate(doc, JETSON_SCHEMA, f"{where}: {BUNDLE_MANIFEST}", "bundle descriptor"),
    missing=f"{{archive}}: no {BUNDLE_MANIFEST}; not a Jetson bundle",
    foreign="{archive}: not a Jetson bundle this mmedge reads",
    newer="{archive}: not a Jetson bundle this mmedge reads (format_version {version} is newer than {newest}; "
          "upgrade mmedge)")
LIMITS = Limits()  # honest bundles unpack to ~1-3x their size (ONNX weights barely compress)
MAX_MEMBERS, MAX_RATIO, MAX_UNPACKED = LIMITS.members, LIMITS.ratio, LIMITS.unpacked


def _member_rel(path: Path, member: tarfile.TarInfo) -> str:
    """The member's path below mmedge-jetson/ ("" for the folder itself): by path components, so
    `mmedge-jetson.sh` or `mmedge-jetsonX/...` are outside the folder."""
    name = member.name
    body = name[:-1] if name.endswith("/") and member.isdir() else name
    parts = body.split("/")
    if path_problem(body) is not None or parts[0] != BUNDLE_DIR:
        raise _unsafe(path, name)
    return "/".join(parts[1:])


def _unsafe(path: Path, name: str) -> ArtifactError:
    return ArtifactError(f"{path}: unsafe member {name[:200]!r} (every member must be a relative path inside "
                         f"{BUNDLE_DIR}/, without '..'); refusing the bundle")


def _refusal(path: Path, e: Refused) -> ArtifactError:
    """The bundle's wording of a broken archive rule."""
    name = e.name[:200]
    if e.rule == COUNT:
        return ArtifactError(f"{path}: more than {MAX_MEMBERS} members; refusing the bundle")
    if e.rule == OUTSIDE:
        return _unsafe(path, e.name)
    if e.rule == SPECIAL:
        return ArtifactError(f"{path}: member {name!r} is not a plain file or folder")
    if e.rule == TWICE:
        return ArtifactError(f"{path}: member {name!r} appears twice")
    if e.rule == BUDGET:
        return ArtifactError(f"{path}: unpacks to more than {e.limit} bytes from a {path.stat().st_size}-byte "
                             f"archive (a bomb?); refusing the bundle")
    return ArtifactError(f"{path}: member {name!r} does not match its header (changed while it was read?); "
                         f"refusing the bundle")


def _members(path: Path, tar: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """(relative name, member) of every file, after checking names, types and the size budget."""
    rules = Rules(path.stat().st_size, LIMITS)
    while True:
        member = tar.next()
        if member is None:
            return
        try:
            rules.count()
            rel = _member_rel(path, member)
            if member.isdir():  # named and typed only: nothing is read from a folder
                rules.admit(tar_member(member))
                continue
            if not rel:
                raise ArtifactError(f"{path}: member {member.name[:200]!r} is not a plain file or folder")
            rules.check(tar_member(member))
        except Refused as e:
            raise _refusal(path, e) from None
        yield rel, member


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, limit: int = MAX_JSON_BYTES) -> bytes:
    if member.size > limit:
        raise ArtifactError(f"{path}: {member.name[:200]}: {member.size} bytes, over the {limit >> 20} MiB limit "
                            f"for a JSON descriptor")
    f = tar.extractfile(member)
    try:
        return read_limited(f, limit, tar_member(member)) if f else b""
    except Refused as e:
        raise _refusal(path, e) from None


def verify_bundle(path: Path) -> Path:
    """Re-check a bundle: every file's sha256 against bundle.json, every artifact's manifest.

    A first pass reads the member headers and bundle.json (at most 16 MiB); a second pass
    hashes every member in 1 MiB chunks."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: bundle not found")
    try:
        with tarfile.open(path, "r:gz") as tar:
            sizes: dict[str, int] = {}
            doc = None
            for rel, member in _members(path, tar):
                sizes[rel] = member.size
                if rel == BUNDLE_MANIFEST:
                    doc = DESCRIPTOR.read(_read_member(tar, member, path), path)
                tar.members = []  # headers only as they come: no list of every member in memory
            if doc is None:
                raise DESCRIPTOR.absent(path)
            listed: dict[str, str] = doc["files"]
            missing = sorted(set(listed) - set(sizes))
            extra = sorted(set(sizes) - set(listed) - {BUNDLE_MANIFEST})
            if missing or extra:
                what = f"{len(missing)} file(s) changed or missing (first: {missing[0]})" if missing else \
                    f"unlisted file(s) {', '.join(extra[:3])}"
                raise CheckFailedError(f"{path}: {what}; rebuild the bundle")
            _check_layout(path, doc, sizes)
        digests, nested = _hash_members(path, sizes)
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


def _hash_members(path: Path, sizes: dict[str, int]) -> tuple[dict[str, str], dict[str, bytes]]:
    """Second pass: the sha256 of every member, and the artifacts' manifests (at most 16 MiB each)."""
    digests: dict[str, str] = {}
    nested: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for rel, member in _members(path, tar):
            if sizes.get(rel) != member.size:
                raise ArtifactError(f"{path}: changed while it was read")
            f = tar.extractfile(member)
            h = hashlib.sha256()
            try:
                for block in chunks(f, member.size, tar_member(member)) if f is not None else ():
                    h.update(block)
                    if rel.endswith("/" + MANIFEST) and len(nested.get(rel, b"")) <= MAX_JSON_BYTES:
                        nested[rel] = nested.get(rel, b"") + block
            except Refused as e:
                raise _refusal(path, e) from None
            digests[rel] = h.hexdigest()
            tar.members = []
    return digests, nested


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
