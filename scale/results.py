"""The JSON Lines results file: append-only, one record per input, resumable, never a line twice.

Every record carries `index` (its position in the input list) and the input
itself under the work kind's key (`image` or `seed`). A sidecar
`<out>.job.json` fingerprints the job (work kind, artifact manifest digest,
backend, options, input list digest), so a rerun with the same `--out`
resumes only the same job, and a different one is refused instead of mixing
results. A driver killed mid-write leaves at most one partial last line; it
is cut off on resume (those inputs are redone).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mmedge.atomic import FileLock, write_atomic
from mmedge.errors import InputError


def digest(obj: Any) -> str:
    """sha256 of a JSON-serialisable value (sorted keys): fingerprints inputs and options."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class JobHeader:
    kind: str
    artifact_digest: str  # sha256 of the artifact's manifest.json (it lists every file's sha256)
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    inputs: int = 0
    inputs_digest: str = ""

    def differences(self, other: "JobHeader") -> list[str]:
        a, b = asdict(self), asdict(other)
        return [f"{k}: {b[k]!r} then, {a[k]!r} now" if k not in ("artifact_digest", "inputs_digest")
                else f"{k.replace('_digest', '')} changed" for k in a if a[k] != b[k]]


def sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".job.json")


def lock_path(out: Path) -> Path:
    """`<out>.lock`: held by the run writing `out` from `open()` to `close()`, removed after."""
    return out.with_name(out.name + ".lock")


class ResultFile:
    """`open()` returns the records already written (resume) and writes nothing; the first
    `append()` writes the sidecar (and cuts a partial last line, or empties the file for
    --overwrite), so a run that fails before its first result leaves the files as they were.
    From `open()` to `close()` the run holds `<out>.lock`: a second run with the same `--out`
    is one line (`is in use by another mmedge run`), never a second writer."""

    def __init__(self, path: Path, header: JobHeader, inputs: Sequence[Any], key: str) -> None:
        self.path, self.header, self.inputs, self.key = Path(path), header, inputs, key
        self._fh: Any = None
        self._cut: int | None = None  # truncate the file to this size before the first append
        self._lock: FileLock | None = None

    def open(self, overwrite: bool = False) -> dict[int, dict[str, Any]]:
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory; --out expects a .jsonl file path")
        if not self.path.parent.is_dir():
            raise InputError(f"{self.path}: folder {self.path.parent} does not exist")
        if self._lock is None:
            self._lock = FileLock(lock_path(self.path), what=self.path).acquire()
        try:
            return self._open(overwrite)
        except BaseException:
            self.close()
            raise

    def _open(self, overwrite: bool) -> dict[int, dict[str, Any]]:
        if overwrite:
            self._cut = 0
            return {}
        if self.path.exists() and self.path.stat().st_size:
            self._check_header()
            return self._read()
        return {}

    def _check_header(self) -> None:
        side = sidecar(self.path)
        try:
            old = JobHeader(**json.loads(side.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise InputError(f"{self.path}: exists but has no {side.name}, so it was not written by this "
                             f"command; choose another --out, or pass --overwrite to replace it") from None
        except (ValueError, TypeError) as e:
            raise InputError(f"{side}: unreadable job description ({e}); pass --overwrite to start over") from None
        diff = self.header.differences(old)
        if diff:
            raise InputError(f"{self.path}: holds results of a different job ({'; '.join(diff)}); "
                             f"choose another --out, or pass --overwrite to start over")

    def _read(self) -> dict[int, dict[str, Any]]:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline; else a partial last line
        records: dict[int, dict[str, Any]] = {}
        for n, raw in enumerate(lines, 1):
            try:
                rec = json.loads(raw)
                i = int(rec["index"])
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{self.path}: line {n} is not a result record; not resuming over it "
                                 f"(pass --overwrite to start over)") from None
            if not 0 <= i < len(self.inputs) or rec.get(self.key) != self.inputs[i]:
                raise InputError(f"{self.path}: line {n} is for input {rec.get(self.key)!r} at index {i}, "
                                 f"which is not this job's input there; pass --overwrite to start over")
            if i in records:
                raise InputError(f"{self.path}: input {i} appears twice (line {n}); pass --overwrite to start over")
            records[i] = rec
        if tail:  # a driver killed mid-line: the fragment goes, its input is redone
            self._cut = len(data) - len(tail)
        return records

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        if self._fh is None:
            self._start()
        self._fh.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def _start(self) -> None:
        if self._cut is not None and self.path.exists():
            with open(self.path, "r+b") as fh:
                fh.truncate(self._cut)
        write_atomic(sidecar(self.path), json.dumps(asdict(self.header), indent=2) + "\n")
        self._fh = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        try:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


class InOrder:
    """Releases records in input order as shards complete in any order; drops inputs already done."""

    def __init__(self, total: int, done: set[int]) -> None:
        self.todo = [i for i in range(total) if i not in done]
        self.wanted = set(self.todo)
        self.pos = 0
        self.pending: dict[int, dict[str, Any]] = {}

    def add(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in records:
            i = int(r["index"])
            if i in self.wanted:  # a rerun shard also returns inputs written before: not again
                self.wanted.discard(i)
                self.pending[i] = r
        ready = []
        while self.pos < len(self.todo) and self.todo[self.pos] in self.pending:
            ready.append(self.pending.pop(self.todo[self.pos]))
            self.pos += 1
        return ready

    @property
    def complete(self) -> bool:
        return self.pos == len(self.todo)
