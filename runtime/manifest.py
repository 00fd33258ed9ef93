"""The artifact manifest: everything the runtime needs, in `manifest.json`.

An artifact directory holds model files plus this manifest; the runtime needs
nothing else (no Python object from export time). Reading verifies the format
version and the sha256 of every file, so a truncated or tampered file is caught
before a backend library sees it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmedge.errors import ArtifactError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class TensorSpec:
    """A graph input or output: dims are ints, or strings for dynamic axes."""

    name: str
    shape: list[int | str]
    dtype: str  # numpy dtype name: float32, int64, ...


@dataclass
class GraphEntry:
    name: str
    file: str  # relative to the artifact directory
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass
class Manifest:
    model: str
    config: str
    pipeline: str
    format: str
    precision: str
    graphs: list[GraphEntry]
    preprocessing: dict[str, Any]
    model_config: dict[str, Any] = field(default_factory=dict)
    vocabulary: dict[str, int] | None = None
    labels: list[str] | None = None
    tools: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def graph(self, name: str) -> GraphEntry:
        for g in self.graphs:
            if g.name == name:
                return g
        raise ArtifactError(f"artifact has no graph {name!r} (has {', '.join(g.name for g in self.graphs)})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> "Manifest":
        try:
            version = d.get("format_version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise ArtifactError(f"{where}: format_version {version!r} is newer than this mmedge reads "
                                    f"({FORMAT_VERSION}); upgrade mmedge")
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(d) - known)
            if unknown:
                raise ArtifactError(f"{where}: unknown fields {', '.join(unknown)}")
            graphs = [GraphEntry(g["name"], g["file"], [TensorSpec(**t) for t in g["inputs"]],
                                 [TensorSpec(**t) for t in g["outputs"]]) for g in d["graphs"]]
            return cls(**{**d, "graphs": graphs})
        except ArtifactError:
            raise
        except (KeyError, TypeError, AttributeError) as e:
            raise ArtifactError(f"{where}: malformed manifest ({e.__class__.__name__}: {e})") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` except the manifest itself."""
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def read_manifest(artifact_dir: str | Path, verify: bool = True) -> Manifest:
    """Load and (by default) verify an artifact's manifest."""
    root = Path(artifact_dir)
    path = root / MANIFEST
    if not root.exists():
        raise ArtifactError(f"{root}: no such folder (expected an artifact directory written by `mmedge export`)")
    if not root.is_dir():
        raise ArtifactError(f"{root}: not an artifact directory (expected a folder with {MANIFEST})")
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; {root} is not an mmedge artifact")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    manifest = Manifest.from_dict(data, str(path))
    if verify:
        verify_files(root, manifest)
    return manifest


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every listed file exists and hashes as recorded; every graph file is listed."""
    for g in manifest.graphs:
        if g.file not in manifest.files:
            raise ArtifactError(f"{root / g.file}: graph file not listed in {MANIFEST}")
    for rel, digest in manifest.files.items():
        p = root / rel
        if not p.is_file():
            raise ArtifactError(f"{p}: missing (listed in {MANIFEST})")
        if sha256_file(p) != digest:
            raise ArtifactError(f"{p}: sha256 does not match {MANIFEST} (file changed or truncated); re-export it")
