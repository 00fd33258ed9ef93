"""Ray executor: one actor per worker, each holding one runtime pipeline, fed shards by the driver.

- Connect: with no address (or `local`) `ray.init()` starts a local Ray
  instance, or joins the cluster that `RAY_ADDRESS` names; with an address
  (`HOST:PORT`, `auto`, `ray://HOST:PORT`) it joins that cluster.
- Artifacts: by default each actor loads the artifact from its path, which
  must be on storage every node sees (NFS, a shared volume, the same local
  disk on one machine). With `ship_artifact` the driver packs the artifact
  once and puts it in Ray's object store; the first actor on a node unpacks
  it into <tmp>/mmedge-ray-artifacts-<uid>/<manifest digest> (a folder only
  this user can change), later ones reuse that after verifying it against the
  shipped digest: sent once per actor at most (nodes cache objects), never per
  shard. Caption inputs are image paths and need shared storage too.
- Failures: the driver keeps two shards in flight per actor. When an actor's
  process dies (killed, out of memory, its node lost), its shards go back to
  the front of the queue and a fresh actor takes its place; a shard is tried
  `max_attempts` times. Records are written only by the driver, once per
  input, so a shard computed twice is still written once.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mmedge.archive import BUDGET, COUNT, TWICE, Refused, Rules, tar_member
from mmedge.errors import ArtifactError, InputError, MissingDependencyError, MmedgeError, plural
from mmedge.runtime.manifest import MANIFEST, sha256_file
from mmedge.scale.driver import EXECUTORS, Job, Records, Shard, manifest_digest, run_shard
from mmedge.scale.results import digest as json_digest

IN_FLIGHT = 2  # shards queued per actor, so it never idles waiting for the driver
READY_TIMEOUT_S = 300.0


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "--ray") from None
    return ray


CACHE = "mmedge-ray-artifacts"  # <tmp>/mmedge-ray-artifacts-<uid>/<manifest digest>


def _listed_files(root: Path, data: Any) -> list[str]:
    """The files a manifest lists (relative paths inside the artifact), or one line why not."""
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ArtifactError(f"{root / MANIFEST}: malformed manifest (no table of files and their sha256)")
    for rel in files:
        parts = Path(rel).parts
        if not rel or Path(rel).is_absolute() or ".." in parts or rel == MANIFEST:
            raise ArtifactError(f"{root / MANIFEST}: lists {rel!r}, which is not a file inside the artifact")
    return sorted(files)


def pack_artifact(root: Path) -> bytes:
    """The artifact's manifest and the files it lists, as an uncompressed tar (model files barely compress)."""
    root = Path(root)
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{root}: not an mmedge artifact (cannot read {MANIFEST}: {e})") from None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in [MANIFEST, *_listed_files(root, data)]:
            f = root / rel
            if f.is_symlink() or not f.is_file():
                raise ArtifactError(f"{f}: missing or not a regular file (listed in {MANIFEST})")
            tar.add(f, arcname=rel)
    return buf.getvalue()


def verify_unpacked(folder: Path, digest: str) -> str | None:
    """None when `folder` holds exactly the artifact whose manifest digest is `digest`, else why not.

    The manifest must hash to `digest` (what the driver shipped), every file it lists must
    hash as listed, and nothing else may be there: no links, no extra files.
    """
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return "not a folder"
    except FileNotFoundError:
        return "missing"
    found: set[str] = set()
    for top, dirs, files in os.walk(folder):  # does not follow links
        for name in dirs + files:
            p = Path(top, name)
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return f"{p.relative_to(folder)} is not a regular file"
            if stat.S_ISREG(mode):
                found.add(p.relative_to(folder).as_posix())
    if MANIFEST not in found:
        return f"no {MANIFEST}"
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"unreadable {MANIFEST} ({e})"
    if json_digest(data) != digest:
        return f"{MANIFEST} is not the shipped one"
    try:
        listed = _listed_files(folder, data)
    except ArtifactError as e:
        return str(e)
    extra = sorted(found - set(listed) - {MANIFEST})
    if extra:
        return f"{extra[0]} is not listed in {MANIFEST}"
    for rel in listed:
        if rel not in found:
            return f"{rel} is missing"
        if sha256_file(folder / rel) != data["files"][rel]:
            return f"{rel}: sha256 does not match {MANIFEST}"
    return None


def _discard(path: Path) -> None:
    """Remove a bad cached copy (a link, a file, a folder) without following links."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
            return
    except FileNotFoundError:
        return
    trash = Path(tempfile.mkdtemp(prefix=".discard-", dir=path.parent))
    try:
        os.rename(path, trash / "x")
    except FileNotFoundError:
        pass
    shutil.rmtree(trash, ignore_errors=True)


def _checked_members(tar: tarfile.TarFile, size: int) -> list[tarfile.TarInfo]:
    """Every member, through mmedge.archive's rules before anything is written (what tarfile's
    "data" filter refuses, on every Python version, and sizes a blob of `size` bytes can hold)."""
    rules = Rules(size)
    members = []
    for m in iter(tar.next, None):
        try:
            rules.count()
            rules.check(tar_member(m))
        except Refused as e:
            why = {COUNT: f" (more than {e.limit} members)", TWICE: " (appears twice)",
                   BUDGET: f" (the members add up to more than {e.limit} bytes)"}.get(e.rule, "")
            raise InputError(f"shipped artifact: refusing member {m.name!r}{why}") from None
        members.append(m)
    return members


def unpack_artifact(blob: bytes, digest: str) -> Path:
    """Unpack once per node into <tmp>/mmedge-ray-artifacts-<uid>/<manifest digest>; later actors reuse it.

    The cache folder is private to this user (`private_dir`: 0700, owner checked, not a link;
    anything else is refused). A cached copy is used only if it verifies against the shipped
    digest (`verify_unpacked`: the manifest's digest, every file's sha256, nothing else there);
    otherwise the blob is unpacked into a fresh temporary folder, verified the same way, and
    renamed into place (replacing a bad copy), so a concurrent actor never sees half an artifact.
    """
    from mmedge.atomic import private_dir

    if not digest or digest.startswith(".") or any(c in digest for c in "/\\\0"):
        raise InputError(f"shipped artifact: invalid manifest digest {digest!r}")
    root = private_dir(CACHE)
    dest = root / digest
    if verify_unpacked(dest, digest) is None:
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            tar.extractall(tmp, members=_checked_members(tar, len(blob)))
        why = verify_unpacked(tmp, digest)
        if why is not None:
            raise ArtifactError(f"shipped artifact does not match the driver's manifest digest "
                                f"{digest[:12]}: {why}; was the artifact re-exported during the run?")
        for _ in range(3):
            try:
                os.rename(tmp, dest)
                return dest
            except OSError:
                if verify_unpacked(dest, digest) is None:  # another actor on this node unpacked it first
                    shutil.rmtree(tmp, ignore_errors=True)
                    return dest
                _discard(dest)  # a bad copy (changed, truncated): replaced by the verified one
        raise ArtifactError(f"{dest}: cannot replace the cached copy of the shipped artifact")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class MmedgeWorker:
    """A Ray actor (`ray.remote(MmedgeWorker)`): loads the pipeline once, then runs shards.

    Errors are returned, not raised (a raised one would come back wrapped in Ray's
    RayTaskError): mmedge's own exceptions travel as themselves (they pickle, errors.py),
    so the driver re-raises the worker's class and exit code; anything else becomes a
    one-line message.
    """

    def __init__(self, job: Job, blob: bytes | None, digest: str = "") -> None:
        import socket

        self.job, self.pipe = job, None
        self.error: MmedgeError | str | None = None
        self.where = f"pid {os.getpid()} on {socket.gethostname()}"
        try:
            if blob is None and not Path(job.artifact).is_dir():
                raise InputError(f"{job.artifact}: artifact not found on the worker at {self.where}; put it on "
                                 f"storage every node sees, or pass --ship-artifact")
            self.pipe = job.load(unpack_artifact(blob, digest) if blob is not None else None)
        except MmedgeError as e:
            self.error = e
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            self.error = f"{type(e).__name__}: {e}"

    def ready(self) -> tuple[str, MmedgeError | str | None]:
        return self.where, self.error

    def run(self, shard: Shard) -> tuple[str, Any]:
        if self.error is not None:
            return "error", self.error
        try:
            return "ok", run_shard(self.job, self.pipe, shard)
        except MmedgeError as e:
            e.args = (f"{shard.describe()}: {e}",)
            return "error", e


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
            if isinstance(error, MmedgeError):  # the worker's class and exit code, with where it happened
                error.args = (f"Ray worker ({where}) could not load the artifact: {error}",)
                raise error
            if error is not None:
                raise MmedgeError(f"Ray worker ({where}) could not load the artifact: {error}")
            slot.where = where
        self.log(f"ray: {plural(self.workers, 'worker')} ready ({', '.join(s.where for s in self.slots)})")

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
                raise value if isinstance(value, MmedgeError) else MmedgeError(str(value))
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
