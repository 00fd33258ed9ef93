"""Reading archives someone else made (bundles, shipped artifacts) without trusting them.

One set of rules for every reader of an archive (`package jetson --verify` and
`package mobile --verify`, the Ray executor's shipped artifacts), checked on the
member headers before a byte is unpacked:

- a name stays inside the destination: no absolute path, drive letter, `..`
  component or NUL (`outside`);
- plain files and folders only: no links, devices, FIFOs or sparse files;
- each name once;
- at most `Limits.members` members, whose declared sizes add up to at most
  `Limits.budget(archive bytes)`: a small archive cannot claim gigabytes;
- (zip) no member over 1 MiB that inflates more than `Limits.member_ratio` times;
- data is read in 1 MiB chunks and never past what a member declares (`chunks`).

A broken rule raises `Refused` naming the rule and the member. Each reader words
its own one-line error from it: those messages are part of the command line's
contract, so this module holds the rules and the readers hold the words. Standard
library only: the torch-free runtime and the Ray workers use it too.

A bundle's descriptor (the JSON member listing the others) is read one way by
every reader (`Descriptor`): bounded, its `format` and `format_version` checked,
then its schema. The strict JSON parser and the schema check live in
runtime/schema.py, a layer above this one, so a reader passes them in.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Callable, Iterator

from mmedge.errors import ArtifactError

CHUNK = 1 << 20  # bytes read at a time
INFLATE_FLOOR = 1 << 20  # members this small may inflate any amount (zip's per-member rule)
FILE, FOLDER, OTHER = "file", "folder", "other"

# the rules, as Refused.rule
COUNT = "count"  # more members than Limits.members
OUTSIDE = "outside"  # an absolute path, a drive letter, '..', NUL or an empty name
SPECIAL = "special"  # a link, device, FIFO or sparse file
TWICE = "twice"  # a name seen before
INFLATE = "inflate"  # one member inflates more than Limits.member_ratio times
BUDGET = "budget"  # the declared sizes add up to more than the budget
OVERSIZE = "oversize"  # a member's data runs past its declared size (or a reader's limit)


class Refused(ArtifactError):
    """An archive broke one of the rules: `rule` says which (the constants above), `member` is the
    member's header (None for the archive as a whole), `limit` the number it went past. An
    ArtifactError, so one a reader leaves unworded is still one line."""

    def __init__(self, rule: str, member: Member | None = None, limit: int = 0) -> None:
        name = member.name if member is not None else ""
        super().__init__(f"archive member {name[:200]!r} refused ({rule}, limit {limit})")
        self.rule, self.member, self.name, self.limit = rule, member, name, limit


@dataclass(frozen=True)
class Limits:
    """How much an archive may hold, relative to its own size: honest bundles unpack to ~1-3x
    (ONNX weights barely compress), a bomb to ~1000x (deflate's limit is ~1032x)."""

    members: int = 100_000
    ratio: int = 100  # unpacked bytes per archive byte, plus `slack`
    unpacked: int = 16 << 30  # bytes, whatever the archive's size
    slack: int = 64 << 20  # what even a tiny archive may unpack to
    member_ratio: int = 200  # one member over 1 MiB: inflated / compressed (where the archive records both)

    def budget(self, archive_bytes: int) -> int:
        return min(self.unpacked, self.ratio * archive_bytes + self.slack)


@dataclass(frozen=True)
class Member:
    """What the rules look at in a member's header, whatever the archive format."""

    name: str  # as stored
    kind: str  # FILE, FOLDER or OTHER
    size: int  # declared unpacked bytes
    packed: int | None = None  # compressed bytes, where the format records them (zip)


def tar_member(info: tarfile.TarInfo) -> Member:
    """A tar header: folders, plain files; links, devices, FIFOs and sparse files are OTHER."""
    kind = FOLDER if info.isdir() else FILE if info.isfile() and not info.issparse() else OTHER
    return Member(info.name, kind, info.size)


def zip_member(info: zipfile.ZipInfo) -> Member:
    """A zip entry: its Unix type (0 when none is recorded: a plain file), then its name for folders."""
    mode = stat.S_IFMT(info.external_attr >> 16)
    kind = OTHER if mode not in (0, stat.S_IFREG, stat.S_IFDIR) else FOLDER if info.is_dir() else FILE
    return Member(info.filename, kind, info.file_size, info.compress_size)


def outside(name: str) -> bool:
    """True when extracting `name` could land outside the destination (either slash a separator)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return (name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts
            or "\x00" in name or not parts)


def key(name: str) -> str:
    """The name a member unpacks to (`a//b/` and `a/b` are one)."""
    return PurePosixPath(name.replace("\\", "/")).as_posix().rstrip("/")


@dataclass
class Rules:
    """The rules for one archive, applied member by member as headers stream by (a .tar.gz is
    read once, front to back; a zip's directory can be checked whole with `count(len(...))`)."""

    archive_bytes: int
    limits: Limits = field(default_factory=Limits)
    counted: int = field(default=0, init=False)  # members so far
    total: int = field(default=0, init=False)  # their declared bytes
    seen: set[str] = field(default_factory=set, init=False)  # their names (`key`)

    @property
    def budget(self) -> int:
        return self.limits.budget(self.archive_bytes)

    def count(self, n: int = 1) -> None:
        """`n` more members arrive (a tar: one at a time, before its header is trusted)."""
        self.counted += n
        if self.counted > self.limits.members:
            raise Refused(COUNT, None, self.limits.members)

    def check(self, m: Member, names: Callable[[Member], None] | None = None) -> Member:
        """Every rule for one member: `admit`, then `claim`."""
        return self.claim(self.admit(m, names))

    def admit(self, m: Member, names: Callable[[Member], None] | None = None) -> Member:
        """The name and the type; `names` is the reader's own rule for names (checked after the
        type), raising its own error. Enough for a folder a reader does not unpack."""
        if outside(m.name):
            raise Refused(OUTSIDE, m)
        if m.kind == OTHER:
            raise Refused(SPECIAL, m)
        if names is not None:
            names(m)
        return m

    def claim(self, m: Member) -> Member:
        """What the member would take: its name once, its inflation, its share of the budget."""
        k = key(m.name)
        if k in self.seen:
            raise Refused(TWICE, m)
        self.seen.add(k)
        if m.packed is not None and m.size > INFLATE_FLOOR and m.size > self.limits.member_ratio * max(m.packed, 1):
            raise Refused(INFLATE, m, self.limits.member_ratio)
        self.total += m.size
        if self.total > self.budget:
            raise Refused(BUDGET, m, self.budget)
        return m


def chunks(f: BinaryIO, limit: int, member: Member | None = None) -> Iterator[bytes]:
    """A member's data in CHUNK blocks; Refused(OVERSIZE) as soon as more than `limit` bytes come
    (tar and zip readers stop at the declared size themselves: this is the second fence)."""
    seen = 0
    while True:
        block = f.read(min(CHUNK, limit + 1 - seen))
        if not block:
            return
        seen += len(block)
        if seen > limit:
            raise Refused(OVERSIZE, member, limit)
        yield block


def read_limited(f: BinaryIO, limit: int, member: Member | None = None) -> bytes:
    """A small member (a descriptor) whole, in chunks, refused past `limit` bytes."""
    return b"".join(chunks(f, limit, member))


def newer_version(doc: dict[str, Any], newest: int) -> int | None:
    """The descriptor's integer `format_version` when it is newer than `newest` (this mmedge cannot read it)."""
    version = doc.get("format_version")
    return version if isinstance(version, int) and not isinstance(version, bool) and version > newest else None


@dataclass(frozen=True)
class Descriptor:
    """A bundle's descriptor and how its reader words each refusal (the command line's contract).

    `parse(data, archive)` is the reader's bounded, strict JSON parser and `validate(doc, archive)`
    its schema check (both raise one line); `missing`, `foreign` and `newer` are message templates
    with `{archive}` (and for `newer`, `{version}` and `{newest}`) filled in."""

    member: str  # its name in the archive
    format: str  # what its "format" must say
    newest: int  # the newest "format_version" this mmedge reads
    parse: Callable[[bytes, str], Any]
    validate: Callable[[Any, str], None]
    missing: str  # no such member
    foreign: str  # not an object, or another "format"
    newer: str  # a newer "format_version"

    def absent(self, archive: object) -> ArtifactError:
        return ArtifactError(self.missing.format(archive=archive))

    def read(self, data: bytes, archive: object) -> dict[str, Any]:
        """The descriptor from its bytes (bounded by `parse`), checked: format, version, schema."""
        return self.check(self.parse(data, str(archive)), archive)

    def check(self, doc: Any, archive: object) -> dict[str, Any]:
        """A parsed descriptor: its format, then its version (a newer one is named as such before
        the schema, which knows only this version, would call it malformed), then its schema."""
        if not isinstance(doc, dict) or doc.get("format") != self.format:
            raise ArtifactError(self.foreign.format(archive=archive))
        version = newer_version(doc, self.newest)
        if version is not None:
            raise ArtifactError(self.newer.format(archive=archive, version=version, newest=self.newest))
        self.validate(doc, str(archive))
        return doc
