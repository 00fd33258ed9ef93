"""One way to read a bundle's descriptor (issue #17): `mmedge.archive.Descriptor`, used by the Jetson
bundle and the mobile bundle readers, each with its own words (part of the command line's contract)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmedge.archive import Descriptor, newer_version
from mmedge.errors import ArtifactError
from mmedge.export import jetson_bundle, mobile_verify


def _plain(validated: list[Any]) -> Descriptor:
    return Descriptor("d.json", "fmt", 2, parse=lambda data, where: json.loads(data),
                      validate=lambda doc, where: validated.append((doc, where)),
                      missing="{archive}: no d.json", foreign="{archive}: not fmt",
                      newer="{archive}: version {version} > {newest}")


def test_read_checks_format_then_version_then_schema() -> None:
    seen: list[Any] = []
    d = _plain(seen)
    doc = {"format": "fmt", "format_version": 2}
    assert d.read(json.dumps(doc).encode(), Path("a.zip")) == doc and seen == [(doc, "a.zip")]
    with pytest.raises(ArtifactError, match=r"^a\.zip: not fmt$"):
        d.read(b'{"format": "other", "format_version": 9}', Path("a.zip"))
    with pytest.raises(ArtifactError, match=r"^a\.zip: not fmt$"):
        d.read(b"[1]", Path("a.zip"))
    with pytest.raises(ArtifactError, match=r"^a\.zip: version 3 > 2$"):
        d.read(b'{"format": "fmt", "format_version": 3}', Path("a.zip"))
    assert len(seen) == 1  # refused before the schema
    assert str(d.absent(Path("a.zip"))) == "a.zip: no d.json"


@pytest.mark.parametrize("doc, newest, want", [({"format_version": 2}, 1, 2), ({"format_version": 1}, 1, None),
                                               ({"format_version": True}, 0, None), ({"format_version": "9"}, 1, None),
                                               ({}, 1, None)])
def test_newer_version(doc: dict, newest: int, want: Any) -> None:
    assert newer_version(doc, newest) == want


@pytest.mark.parametrize("descriptor, doc, want", [
    (jetson_bundle.DESCRIPTOR, {"format": "x"}, "b.tar.gz: not a Jetson bundle this mmedge reads"),
    (jetson_bundle.DESCRIPTOR, {"format": "mmedge-jetson-bundle", "format_version": 5},
     "b.tar.gz: not a Jetson bundle this mmedge reads (format_version 5 is newer than 1; upgrade mmedge)"),
    (mobile_verify.DESCRIPTOR, {"format": "x"}, "b.tar.gz: manifest.json is not an mmedge mobile bundle manifest"),
    (mobile_verify.DESCRIPTOR, {"format": "mmedge-mobile", "format_version": 5},
     "b.tar.gz: bundle format_version 5 is newer than this mmedge reads (1); upgrade mmedge"),
])
def test_each_reader_keeps_its_words(descriptor: Descriptor, doc: dict, want: str) -> None:
    with pytest.raises(ArtifactError) as e:
        descriptor.read(json.dumps(doc).encode(), Path("b.tar.gz"))
    assert str(e.value) == want


@pytest.mark.parametrize("descriptor, want", [
    (jetson_bundle.DESCRIPTOR, r"^b\.tar\.gz: bundle\.json is not valid JSON \("),
    (mobile_verify.DESCRIPTOR, r"^b\.tar\.gz: manifest\.json is not valid JSON \("),
])
def test_bad_json_and_schema_are_worded_by_the_reader(descriptor: Descriptor, want: str) -> None:
    with pytest.raises(ArtifactError, match=want):
        descriptor.read(b"{nope", Path("b.tar.gz"))
    with pytest.raises(ArtifactError, match=rf"^b\.tar\.gz: {descriptor.member}: malformed bundle "):
        descriptor.read(json.dumps({"format": descriptor.format, "format_version": 1}).encode(), Path("b.tar.gz"))
    assert str(descriptor.absent(Path("b.tar.gz"))).startswith(f"b.tar.gz: no {descriptor.member}; not ")
