"""Ray executor: one actor per worker, each holding one runtime pipeline, fed shards by the driver.

- Connect: with no address (or `local`) `ray.init()` starts a local Ray
  instance, or joins the cluster that `RAY_ADDRESS` names; with an address
  (`HOST:PORT`, `auto`, `ray://HOST:PORT`) it joins that cluster.
- Artifacts: by default each actor loads the artifact from its path, which
  must be on storage every node sees (NFS, a shared volume, the same local
  disk on one machine). With `ship_artifact` the driver packs the artifact
  once and puts it in Ray's object store; the first actor on a node unpacks
  it into <tmp>/mmedge-ray-artifacts/<manifest digest>, later ones reuse that:
  sent once per actor at most (nodes cache objects), never per shard. Caption
  inputs are image paths and need shared storage too.
- Failures: the driver keeps two shards in flight per actor. When an actor's
  process dies (killed, out of memory, its node lost), its shards go back to
  the front of the queue and a fresh actor takes its place; a shard is tried
  `max_attempts` times. Records are written only by the driver, once per
  input, so a shard computed twice is still written once.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mmedge.errors import InputError, MissingDependencyError, MmedgeError
from mmedge.scale.driver import EXECUTORS, Job, Records, Shard, manifest_digest, run_shard

IN_FLIGHT = 2  # shards queued per actor, so it never idles waiting for the driver
READY_TIMEOUT_S = 300.0


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "--ray") from None
    return ray


def pack_artifact(root: Path) -> bytes:
    """The artifact folder as an uncompressed tar (model files barely compress)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(root)))
    return buf.getvalue()


def unpack_artifact(blob: bytes, digest: str) -> Path:
    """Unpack once per node into <tmp>/mmedge-ray-artifacts/<manifest digest>; later actors reuse it.

    Written to a temporary folder and renamed, so a concurrent actor never sees half an
    artifact; `load()` then checks every file's sha256 against the manifest.
    """
    root = Path(tempfile.gettempdir()) / "mmedge-ray-artifacts"
    dest = root / digest
    if (dest / "manifest.json").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            for m in tar.getmembers():  # what the "data" filter refuses, checked on every Python version
                if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise InputError(f"shipped artifact: refusing member {m.name!r}")
            tar.extractall(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, dest)
    except OSError:  # another actor on this node unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class MmedgeWorker:
    """A Ray actor (`ray.remote(MmedgeWorker)`): loads the pipeline once, then runs shards.

    Errors are returned as strings, not raised: mmedge's exceptions carry
    constructor arguments that do not survive Ray's pickling, and the driver
    turns them back into one-line errors.
    """

    def __init__(self, job: Job, blob: bytes | None, digest: str = "") -> None:
        import socket

        self.job, self.pipe, self.error = job, None, None
        self.where = f"pid {os.getpid()} on {socket.gethostname()}"
        try:
            if blob is None and not Path(job.artifact).is_dir():
                raise InputError(f"{job.artifact}: artifact not found on the worker at {self.where}; put it on "
                                 f"storage every node sees, or pass --ship-artifact")
            self.pipe = job.load(unpack_artifact(blob, digest) if blob is not None else None)
        except MmedgeError as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            self.error = f"{type(e).__name__}: {e}"

    def ready(self) -> tuple[str, str | None]:
        return self.where, self.error

    def run(self, shard: Shard) -> tuple[str, Any]:
        if self.error is not None:
            return "error", self.error
        try:
            return "ok", run_shard(self.job, self.pipe, shard)
        except MmedgeError as e:
            return "error", f"{shard.describe()}: {e}"


@dataclass
class _Slot:
    actor: Any
    generation: int = 0
    where: str = "?"


@EXECUTORS.register("ray")
class RayExecutor:
    def __init__(self, job: Job, log: Callable[[str], None] = lambda s: None, address: str | None = None,
                 workers: int | None = None, ship_artifact: bool = False, max_attempts: int = 4,
                 **_: Any) -> None:
        ray = self.ray = require_ray()
        if job.threads is None:  # one core per worker: a backend's default (all cores) would oversubscribe
            job = replace(job, threads=1)
        self.job, self.log, self.max_attempts = job, log, max_attempts
        self.retries = 0
        self.started_here = _connect(ray, address)
        threads = job.threads
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.workers = workers or max(1, int(cpus // threads))
        blob = ray.put(pack_artifact(Path(job.artifact))) if ship_artifact else None
        self._digest = manifest_digest(job.artifact) if ship_artifact else ""
        self._actor_cls = ray.remote(MmedgeWorker).options(num_cpus=threads, max_restarts=0)
        self._blob = blob
        self.slots = [_Slot(self._spawn()) for _ in range(self.workers)]
        self._await_ready(cpus, threads)

    def _spawn(self) -> Any:
        return self._actor_cls.remote(self.job, self._blob, self._digest)

    def _await_ready(self, cpus: float, threads: int) -> None:
        ray = self.ray
        refs = [s.actor.ready.remote() for s in self.slots]
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=READY_TIMEOUT_S)
        if pending:
            raise MmedgeError(f"only {len(done)} of {self.workers} Ray workers started within "
                              f"{READY_TIMEOUT_S:.0f} s (the cluster has {cpus:g} CPUs, each worker asks for "
                              f"{threads}); ask for fewer --workers")
        try:
            started = ray.get(refs)
        except Exception as e:  # noqa: BLE001 - e.g. mmedge or a backend missing on a node: the actor cannot start
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise MmedgeError(f"a Ray worker died while starting ({type(e).__name__}: {first[:300]}); install "
                              f"mmedge with its backend extra on every node") from None
        for slot, (where, error) in zip(self.slots, started):
            if error is not None:
                raise MmedgeError(f"Ray worker ({where}) could not load the artifact: {error}")
            slot.where = where
        self.log(f"ray: {self.workers} workers ready ({', '.join(s.where for s in self.slots)})")

    def map(self, shards: Sequence[Shard]) -> Iterator[tuple[Shard, Records]]:
        ray = self.ray
        from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError, WorkerCrashedError

        lost = (RayActorError, ActorUnavailableError, WorkerCrashedError)
        queue: deque[tuple[Shard, int]] = deque((s, 1) for s in shards)
        inflight: dict[Any, tuple[int, int, Shard, int]] = {}  # ref -> (slot, generation, shard, attempt)
        while queue or inflight:
            for idx, slot in enumerate(self.slots):
                busy = sum(1 for v in inflight.values() if v[0] == idx)
                while queue and busy < IN_FLIGHT:
                    shard, attempt = queue.popleft()
                    inflight[slot.actor.run.remote(shard)] = (idx, slot.generation, shard, attempt)
                    busy += 1
            ready: list[Any] = []
            while not ready:  # short waits: a blocking ray.wait() would not see Ctrl-C until a shard ends
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            ref = ready[0]
            idx, gen, shard, attempt = inflight.pop(ref)
            try:
                status, value = ray.get(ref)
            except RayTaskError as e:  # an unexpected exception inside the worker: a bug, named in one line
                cause = getattr(e, "cause", None) or e
                first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
                raise MmedgeError(f"{shard.describe()} failed on a Ray worker: {type(cause).__name__}: {first} "
                                  f"(the worker's traceback is in the Ray logs)") from None
            except lost as e:
                self._replace(idx, gen, e)
                if attempt >= self.max_attempts:
                    raise MmedgeError(f"{shard.describe()} failed {attempt} times: its Ray worker died each time "
                                      f"(last: {type(e).__name__}); see the Ray logs") from None
                self.retries += 1
                self.log(f"ray: worker lost during {shard.describe()}; retrying it "
                         f"(attempt {attempt + 1} of {self.max_attempts})")
                queue.appendleft((shard, attempt + 1))
                continue
            if status == "error":
                raise MmedgeError(str(value))
            yield shard, value

    def _replace(self, idx: int, gen: int, cause: Exception) -> None:
        slot = self.slots[idx]
        if slot.generation != gen:  # already replaced for an earlier shard of the same actor
            return
        self.log(f"ray: worker {idx} ({slot.where}) died ({type(cause).__name__}); starting a new one")
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - it is dead already
            pass
        self.slots[idx] = _Slot(self._spawn(), gen + 1, "restarted")

    def close(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if self.started_here:
            self.ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Join or start Ray; True when this call started (and so should stop) it."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                              "include_dashboard": False}
    target = None if address in (None, "", "local") else address
    if target is not None:
        _reachable(target)
    try:
        ray.init(address=target, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"the Ray cluster at {target}" if target else "a local Ray instance"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MmedgeError(f"cannot connect to {where}: {first}") from None
    return True


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on HOST:PORT that nothing listens on: ray.init() retries such an address forever."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # `auto` and other forms: Ray resolves them and fails quickly itself
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise MmedgeError(f"cannot connect to the Ray cluster at {address}: nothing answers at {host}:{port} "
                          f"({e.strerror or e}); start it with `ray start --head --port {port}` or check the "
                          f"address") from None
