"""The artifact manifest: everything the runtime needs, in `manifest.json`.

An artifact directory holds model files plus this manifest; the runtime needs
nothing else (no Python object from export time). Reading verifies the format
version and the sha256 of every file, so a truncated or tampered file is caught
before a backend library sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmedge.errors import ArtifactError, InputError
from mmedge.runtime.schema import inside, kind_of, load_schema, mib, read_json, validate
from mmedge.runtime.roles import DECODER_INIT, DECODER_STEP, ENCODER

if TYPE_CHECKING:  # annotations only: reading a manifest needs no numpy
    import numpy as np

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SCHEMA_FILE = "manifest.schema.json"  # shipped in mmedge/runtime/schemas/; mobile apps may validate with it
SCHEMA = load_schema(SCHEMA_FILE)
# graphs (and their inputs) each pipeline runs by name
PIPELINE_GRAPHS: dict[str, dict[str, tuple[str, ...]]] = {
    "captioner": {ENCODER: ("image",), DECODER_INIT: ("features",),
                  DECODER_STEP: ("features", "att1", "prev_word", "h", "c")},
    "refocus": {"model": ("image", "depth", "near", "far")},
}


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
    # graph name -> its optional `cost` (FLOPs and weight bytes per run, mmedge.runtime.graph_cost);
    # written inside the graph's entry in manifest.json, kept here so GraphEntry stays four fields
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def graph(self, name: str) -> GraphEntry:
        for g in self.graphs:
            if g.name == name:
                return g
        raise ArtifactError(f"artifact has no graph {name!r} (has {', '.join(g.name for g in self.graphs)})")

    def to_json(self) -> str:
        d = asdict(self)
        costs = d.pop("costs")
        for g in d["graphs"]:
            if g["name"] in costs:
                g["cost"] = costs[g["name"]]
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> "Manifest":
        """A manifest from its JSON document, validated first against the published schema
        (`mmedge/runtime/schemas/manifest.schema.json`), then for consistency (unique names, the
        graphs a pipeline needs, labels and vocabulary matching the outputs)."""
        if not isinstance(d, dict):
            raise ArtifactError(f"{where}: expected a JSON object")
        version = d.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise ArtifactError(f"{where}: format_version {version if version < 10**12 else 'huge'} is newer than "
                                f"this mmedge reads ({FORMAT_VERSION}); upgrade mmedge")
        known = set(cls.__dataclass_fields__) - {"costs"}  # costs live inside the graph entries
        unknown = sorted(set(d) - known)
        if unknown:
            raise ArtifactError(f"{where}: unknown fields {', '.join(u[:40] for u in unknown[:5])}")
        validate(d, SCHEMA, where, "manifest")
        graphs = [GraphEntry(g["name"], g["file"], [TensorSpec(**t) for t in g["inputs"]],
                             [TensorSpec(**t) for t in g["outputs"]]) for g in d["graphs"]]
        costs = {g["name"]: g["cost"] for g in d["graphs"] if "cost" in g}
        m = cls(**{**d, "graphs": graphs, "costs": costs})
        m._check_consistency(where)
        return m

    def _check_consistency(self, where: str) -> None:
        def bad(path: str, what: str) -> ArtifactError:
            return ArtifactError(f"{where}: malformed manifest at {path}: {what}")

        names = [g.name for g in self.graphs]
        for i, g in enumerate(self.graphs):
            if names.index(g.name) != i:
                raise bad(f"$.graphs[{i}].name", f"graph {g.name!r} appears twice")
            for side in ("inputs", "outputs"):
                tensors = [t.name for t in getattr(g, side)]
                dup = next((t for j, t in enumerate(tensors) if tensors.index(t) != j), None)
                if dup is not None:
                    raise bad(f"$.graphs[{i}].{side}", f"tensor {dup!r} appears twice")
        need = PIPELINE_GRAPHS.get(self.pipeline, {})
        for graph, inputs in need.items():
            if graph not in names:
                raise bad("$.graphs", f"a {self.pipeline} artifact needs a graph {graph!r} (has {', '.join(names)})")
            have = {t.name for t in self.graph(graph).inputs}
            if not set(inputs) <= have:
                raise bad(f"$.graphs[{names.index(graph)}].inputs",
                          f"graph {graph!r} needs inputs {', '.join(inputs)} (has {', '.join(sorted(have))})")
        head = self.extra.get("class_output")
        if head is not None:
            outs = {t.name: t for g in self.graphs[:1] for t in g.outputs}
            if head not in outs:
                raise bad("$.extra.class_output", f"{head!r} is not an output of graph {self.graphs[0].name!r}")
            classes = outs[head].shape[-1] if outs[head].shape else None
            if self.labels is not None and isinstance(classes, int) and len(self.labels) != classes:
                raise bad("$.labels", f"{len(self.labels)} labels but output {head!r} has {classes} classes")
        if self.vocabulary is not None:
            from mmedge.runtime.vocab import Vocabulary

            try:
                Vocabulary(self.vocabulary)
            except InputError as e:
                raise bad("$.vocabulary", str(e)) from None
            if self.pipeline == "captioner":
                words = next((t.shape[-1] for t in self.graph(DECODER_STEP).outputs
                              if t.name == "log_probs" and t.shape), None)
                if isinstance(words, int) and words != len(self.vocabulary):
                    raise bad("$.vocabulary", f"{len(self.vocabulary)} words but decoder_step.log_probs has "
                                              f"{words} (the vocabulary belongs to another model)")


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
    """Load and (by default) verify an artifact's manifest.

    The manifest is a regular file of at most 16 MiB (not a link), parsed with bounded nesting,
    validated against `schemas/manifest.schema.json`; every path it names is relative and stays
    inside the folder; with `verify`, every listed file is a regular file (no link on the way)
    whose sha256 matches."""
    root = Path(artifact_dir)
    path = root / MANIFEST
    if not root.exists():
        raise ArtifactError(f"{root}: no such folder (expected an artifact directory written by `mmedge export`)")
    if not root.is_dir():
        raise ArtifactError(f"{root}: not an artifact directory (expected a folder with {MANIFEST})")
    if not path.is_file() and not path.is_symlink():
        raise ArtifactError(f"{path}: missing; {root} is not an mmedge artifact")
    data = read_json(path, "manifest", follow_links=False)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    manifest = Manifest.from_dict(data, str(path))
    if verify:
        verify_files(root, manifest)
    return manifest


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every listed file exists inside `root` (no link on the way) and hashes as recorded; every
    graph file and the test vectors are listed."""
    where = str(root / MANIFEST)
    for g in manifest.graphs:
        if g.file not in manifest.files:
            raise ArtifactError(f"{root / g.file}: graph file not listed in {MANIFEST}")
    vectors = manifest.extra.get("test_vectors")
    if vectors is not None and vectors not in manifest.files:
        raise ArtifactError(f"{root / vectors}: test vectors not listed in {MANIFEST}")
    for rel, digest in manifest.files.items():
        p = inside(root, rel, where, missing="{path}: missing (listed in " + MANIFEST + ")")
        if sha256_file(p) != digest:
            raise ArtifactError(f"{p}: sha256 does not match {MANIFEST} (file changed or truncated); re-export it")


def artifact_file(root: str | Path, rel: str, what: str = "file") -> Path:
    """`root/rel` for a path named by a manifest: inside the folder, no link on the way, a regular file."""
    return inside(Path(root), rel, str(Path(root) / MANIFEST), what)


# ----------------------------------------------------------------------------- test vectors
MAX_VECTORS_BYTES = 2 << 30  # an artifact's test_vectors.npz (a full-size captioner's: ~30 MB)
MAX_VECTOR_ARRAYS = 4096
NPZ_MAX_RATIO = 64  # inflated bytes per stored byte, over a whole .npz (+ 64 MiB); honest ones: ~1
BEAM_LIMITS = {"beam": 64, "max_len": 1024}


def load_npz(path: str | Path, what: str = "test vectors") -> dict[str, "np.ndarray"]:
    """The arrays of an `.npz` written by mmedge: a regular file (not a link) that is a real zip of
    `.npy` members, no pickled objects, every member's header checked against its declared size
    (and the total against the archive's) before any array is allocated."""
    import zipfile

    import numpy as np

    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise ArtifactError(f"{p}: missing; the artifact has no {what}") from None
    except OSError as e:
        why = "is a symbolic link; refusing to follow it" if os.path.islink(p) else \
            f"cannot read it ({e.strerror or e.__class__.__name__})"
        raise ArtifactError(f"{p}: {why}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{p}: is {kind_of(st.st_mode)}, expected a regular .npz file of {what}")
        if st.st_size > MAX_VECTORS_BYTES:
            raise ArtifactError(f"{p}: {st.st_size} bytes, over the {mib(MAX_VECTORS_BYTES)} limit for {what}")
        if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ArtifactError(f"{p}: not an .npz file (expected a zip of .npy arrays: {what})")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as z:
                infos = z.infolist()
                if len(infos) > MAX_VECTOR_ARRAYS:
                    raise ArtifactError(f"{p}: {len(infos)} arrays; refusing more than {MAX_VECTOR_ARRAYS}")
                budget = min(MAX_VECTORS_BYTES, NPZ_MAX_RATIO * st.st_size + (64 << 20))
                total = sum(i.file_size for i in infos)
                if total > budget:
                    raise ArtifactError(f"{p}: its arrays would inflate to {total} bytes from {st.st_size} "
                                        f"(more than {NPZ_MAX_RATIO}x; a zip bomb?); refusing to read them")
                out: dict[str, np.ndarray] = {}
                for info in infos:
                    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    if not info.filename.endswith(".npy") or not key or key in out:
                        raise ArtifactError(f"{p}: member {info.filename[:80]!r} is not an .npy array")
                    with z.open(info) as member:
                        try:
                            version = np.lib.format.read_magic(member)
                            if version == (1, 0):
                                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                            elif version == (2, 0):
                                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                            else:
                                raise ValueError(f"npy format version {version}")
                        except (ValueError, SyntaxError, TypeError, OverflowError) as e:
                            raise ArtifactError(f"{p}: array {key[:80]!r}: bad .npy header "
                                                f"({str(e).splitlines()[0][:120] if str(e) else e.__class__.__name__})"
                                                ) from None
                        if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
                            raise ArtifactError(f"{p}: array {key[:80]!r} has dtype {str(dtype)[:40]}; test vectors "
                                                f"hold numbers only (no pickled objects)")
                        count = 1
                        for n in shape:
                            count *= int(n)
                        header = member.tell() if member.seekable() else None
                        if header is None or count * dtype.itemsize != info.file_size - header:
                            raise ArtifactError(f"{p}: array {key[:80]!r} claims shape {list(shape)[:8]} of "
                                                f"{dtype} but holds {info.file_size} bytes; corrupt or crafted")
                    with z.open(info) as member:
                        out[key] = np.lib.format.read_array(member, allow_pickle=False)
                return out
        except ArtifactError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
            raise ArtifactError(f"{p}: not a readable .npz file ({e.__class__.__name__}: "
                                f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None


def _spec_text(t: TensorSpec) -> str:
    return f"{t.dtype} [{', '.join(str(d) for d in t.shape)}]"


def check_vectors(vectors: dict[str, "np.ndarray"], manifest: Manifest, where: str) -> None:
    """Every graph input and output has a vector of the manifest's dtype, rank and fixed dims;
    a captioner's beam-search vectors (if any) are complete and within limits."""
    import numpy as np

    for g in manifest.graphs:
        for t in [*g.inputs, *g.outputs]:
            key = f"{g.name}.{t.name}"
            arr = vectors.get(key)
            if arr is None:
                raise ArtifactError(f"{where}: no test vector {key!r} (graph {g.name!r} of the manifest needs it)")
            ok = (str(arr.dtype) == t.dtype and arr.ndim == len(t.shape)
                  and all(not isinstance(d, int) or d == n for d, n in zip(t.shape, arr.shape)))
            if not ok:
                raise ArtifactError(f"{where}: test vector {key!r} is {arr.dtype} {list(arr.shape)} but the manifest "
                                    f"says {_spec_text(t)}")
    beam_keys = ("beam.settings", "beam.image", "beam.tokens", "beam.scores")
    if manifest.pipeline == "captioner" and any(k in vectors for k in beam_keys):
        missing = [k for k in beam_keys if k not in vectors]
        if missing:
            raise ArtifactError(f"{where}: beam-search vectors without {', '.join(missing)}")
        settings, image = vectors["beam.settings"], vectors["beam.image"]
        tokens, scores = vectors["beam.tokens"], vectors["beam.scores"]
        enc = manifest.graph(ENCODER).inputs[0]
        if settings.shape != (2,) or settings.dtype.kind not in "iu" or not (
                1 <= int(settings[0]) <= BEAM_LIMITS["beam"] and 1 <= int(settings[1]) <= BEAM_LIMITS["max_len"]):
            raise ArtifactError(f"{where}: beam.settings must be [beam 1..{BEAM_LIMITS['beam']}, max length "
                                f"1..{BEAM_LIMITS['max_len']}] (integers), got {settings.tolist()[:4]}")
        if (image.dtype.kind != "f" or image.ndim != len(enc.shape)
                or any(isinstance(d, int) and d != n for d, n in zip(enc.shape[1:], image.shape[1:]))):
            raise ArtifactError(f"{where}: beam.image is {image.dtype} {list(image.shape)} but the encoder takes "
                                f"{_spec_text(enc)}")
        rows = image.shape[0]
        if tokens.dtype.kind not in "iu" or tokens.ndim != 2 or tokens.shape[0] != rows:
            raise ArtifactError(f"{where}: beam.tokens must be integers [{rows}, steps], got {tokens.dtype} "
                                f"{list(tokens.shape)}")
        if scores.dtype.kind != "f" or scores.shape != (rows,) or not np.isfinite(scores).all():
            raise ArtifactError(f"{where}: beam.scores must be {rows} finite numbers, got {scores.dtype} "
                                f"{list(scores.shape)}")


def load_test_vectors(root: str | Path, manifest: Manifest, with_images: bool = False) -> dict[str, "np.ndarray"]:
    """An artifact's test vectors (`extra.test_vectors`, default test_vectors.npz), checked against
    the manifest's graphs before use; with `with_images`, merged with `image_vectors.npz` (Core ML
    pixel-buffer builds) when there is one."""
    root = Path(root)
    rel = manifest.extra.get("test_vectors", "test_vectors.npz")
    path = artifact_file(root, rel, "test vectors")
    vectors = load_npz(path)
    images = root / "image_vectors.npz"
    if with_images and (images.exists() or images.is_symlink()):
        vectors.update(load_npz(artifact_file(root, "image_vectors.npz", "test vectors")))
    check_vectors(vectors, manifest, str(path))
    return vectors
