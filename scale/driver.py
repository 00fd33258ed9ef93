"""The driver: shard the inputs, run the shards on an executor, write results in input order.

Shards are a fixed grid over the input list (shard s = inputs
[s*size, (s+1)*size)), so a run's batches do not depend on what a previous,
interrupted run finished: a resumed shard is recomputed whole and only its
missing records are written. This is what makes a sharded or resumed run
give exactly the single-process results.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from mmedge.errors import InputError, MmedgeError, article
from mmedge.registry import Registry
from mmedge.scale.results import InOrder, JobHeader, ResultFile, digest
from mmedge.scale.work import WORK, Item, Records, WorkKind


@dataclass(frozen=True)
class Job:
    """What every worker does: load `artifact` once, then run `kind` on shards of inputs."""

    kind: str  # a WORK name: caption | eval-captioner | eval-audio
    artifact: str
    backend: str | None = None
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # of the work (beam, max_len, ...)
    session: dict[str, Any] = field(default_factory=dict)  # backend session options (device, precision, ...)

    def load(self, root: str | Path | None = None) -> Any:
        """The runtime pipeline (in the worker's process), checked against the work kind."""
        from mmedge.runtime import load

        work = WORK.get(self.kind)
        opts = {**self.session, **({"threads": self.threads} if self.threads else {})}
        pipe = load(root or self.artifact, self.backend, **opts)
        if pipe.manifest.pipeline != work.pipeline:
            raise InputError(f"{self.artifact}: is {article(pipe.manifest.pipeline)} artifact; "
                             f"{self.kind} needs a {work.pipeline} artifact")
        return pipe


@dataclass(frozen=True)
class Shard:
    id: int
    items: tuple[Item, ...]

    def describe(self) -> str:
        return f"shard {self.id} (inputs {self.items[0][0]}..{self.items[-1][0]})"


def run_shard(job: Job, pipe: Any, shard: Shard) -> Records:
    return WORK.get(job.kind).run(pipe, shard.items, job.options)


class Executor(Protocol):
    workers: int
    retries: int

    def map(self, shards: Sequence[Shard]) -> Iterator[tuple[Shard, Records]]:
        """Run every shard once (retrying lost ones); yield (shard, records) in completion order."""
        ...

    def close(self) -> None: ...


EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor", per_name={"ray": "mmedge.scale.ray_executor"})


@EXECUTORS.register("local")
class LocalExecutor:
    """This process, one pipeline: the single-process reference of a sharded run."""

    def __init__(self, job: Job, log: Callable[[str], None] = lambda s: None, **_: Any) -> None:
        self.job, self.pipe = job, job.load()
        self.workers, self.retries = 1, 0

    def map(self, shards: Sequence[Shard]) -> Iterator[tuple[Shard, Records]]:
        for shard in shards:
            yield shard, run_shard(self.job, self.pipe, shard)

    def close(self) -> None:
        self.pipe = None


@dataclass
class RunStats:
    total: int
    resumed: int = 0
    computed: int = 0
    errors: int = 0
    workers: int = 1
    retries: int = 0
    startup_seconds: float = 0.0  # connecting, starting workers, loading the artifact
    seconds: float = 0.0  # the shards, after startup

    @property
    def per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "resumed": self.resumed, "computed": self.computed, "errors": self.errors,
                "workers": self.workers, "retries": self.retries,
                "startup_seconds": round(self.startup_seconds, 3), "seconds": round(self.seconds, 3),
                "per_second": round(self.per_second, 3)}


def manifest_digest(artifact: str | Path) -> str:
    from mmedge.errors import ArtifactError

    path = Path(artifact) / "manifest.json"
    try:
        return digest(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{artifact}: not an mmedge artifact (cannot read {path.name}: {e})") from None


def run_job(job: Job, inputs: Sequence[Any], out: Path | None = None, executor: str = "local",
            shard_size: int = 16, progress: bool = False, overwrite: bool = False,
            log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
            **executor_options: Any) -> tuple[list[dict[str, Any]], RunStats]:
    """Run `job` over `inputs` -> (one record per input, in input order; stats).

    With `out`, records are appended to that JSON Lines file in input order as
    shards finish, and a rerun resumes it. `executor_options` go to the
    executor (ray: address, workers, ship_artifact).
    """
    if shard_size < 1:
        raise InputError(f"shard size must be >= 1, got {shard_size}")
    if not inputs:
        raise InputError("no inputs given")
    work: WorkKind = WORK.get(job.kind)
    make_executor = EXECUTORS.get(executor)
    options = {**job.options, **({"session": job.session} if job.session else {})}  # threads do not change results
    header = JobHeader(job.kind, manifest_digest(job.artifact), job.backend or "", options, len(inputs),
                       digest(list(inputs)))
    results = ResultFile(out, header, inputs, work.key) if out is not None else None
    records: dict[int, dict[str, Any]] = results.open(overwrite) if results is not None else {}
    stats = RunStats(total=len(inputs), resumed=len(records))
    if records:
        log(f"resuming {out}: {len(records)} of {len(inputs)} inputs already done")
    shards = [Shard(s, tuple((i, inputs[i]) for i in range(start, min(len(inputs), start + shard_size))))
              for s, start in enumerate(range(0, len(inputs), shard_size))]
    shards = [sh for sh in shards if any(i not in records for i, _ in sh.items)]
    order = InOrder(len(inputs), set(records))
    t0 = time.perf_counter()
    ex: Executor | None = None
    try:
        if shards:
            ex = make_executor(job, log=log, **executor_options)
            stats.workers = ex.workers
            stats.startup_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            with _progress(progress, len(inputs), len(records), job.kind) as advance:
                for _, shard_records in ex.map(shards):
                    ready = order.add(shard_records)
                    if results is not None:
                        results.append(ready)
                    for r in ready:
                        records[int(r["index"])] = r
                    stats.computed += len(ready)
                    advance(len(ready))
            stats.retries = ex.retries
        stats.seconds = time.perf_counter() - t0  # before close(): stopping Ray is not work
        if not order.complete:
            raise MmedgeError(f"internal error: {len(inputs) - len(records)} inputs have no result")
    except KeyboardInterrupt:
        if out is not None:
            log(f"{out}: {len(records)} of {len(inputs)} results kept; rerun the same command to resume")
        raise
    finally:
        if ex is not None:
            ex.close()
        if results is not None:
            results.close()
    stats.errors = sum(1 for r in records.values() if "error" in r)
    return [records[i] for i in range(len(inputs))], stats


class _progress:
    """A rich progress bar on stderr counting inputs (or nothing)."""

    def __init__(self, enabled: bool, total: int, done: int, what: str) -> None:
        self.enabled, self.total, self.done, self.what = enabled, total, done, what
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        console = Console(stderr=True)
        self.bar = Progress(TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=True,
                            disable=not console.is_terminal)  # no bar in logs and pipes
        self.bar.start()
        task = self.bar.add_task(self.what, total=self.total, completed=self.done)
        return lambda n: self.bar.update(task, advance=n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
