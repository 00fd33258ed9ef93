"""What every command shares: output (stdout for results, stderr for logs), the error boundary, and
the typer options that several commands take.

A user error (`MmedgeError`) becomes one line on stderr and a non-zero exit code, never a
traceback. Only typer, the standard library and data-only mmedge modules are imported here, so
`mmedge --help` stays instant and the runtime commands work without torch.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer

from mmedge.errors import MmedgeError, environment_error, missing_dependency
from mmedge.runtime.backends import backends_help  # data only: the -O help comes from the backends' schemas


def err(msg: str) -> None:
    """A log line for humans: stderr, so --json stays clean on stdout."""
    print(printable(msg), file=sys.stderr, flush=True)  # flushed: click < 8.2's test runner drops unflushed stderr


def emit_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def printable(text: str) -> str:
    """Lone surrogates (undecodable bytes of a file name) as \\xNN escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def print_line(line: str) -> None:
    """A result line on stdout that cannot fail on a file name that is not valid UTF-8 (Python
    keeps its bytes as lone surrogates): they are shown as \\xNN escapes."""
    line = printable(line)
    try:
        print(line)
    except UnicodeEncodeError:  # a terminal that is not UTF-8
        enc = sys.stdout.encoding or "utf-8"
        print(line.encode(enc, "backslashreplace").decode(enc))


def handle_errors(fn: Callable, name: str = "") -> Callable:
    """Turn MmedgeError into one stderr line + exit code; keep real bugs loud. An optional
    package that is not installed (torch, onnx, ... wherever it is imported) is a
    MissingDependencyError naming the extra, so a device install never shows a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return fn(*args, **kwargs)
            except ModuleNotFoundError as e:
                missing = missing_dependency(e, f"mmedge {name}" if name else "")
                if missing is None:
                    raise
                raise missing from None
            except OSError as e:  # disk full, file size limit, read-only folder: the machine's, one line
                env = environment_error(e)
                if env is None:
                    raise
                raise env from None
        except MmedgeError as e:
            err(f"mmedge: error: {e}")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err("mmedge: interrupted")
            raise typer.Exit(130) from None

    return wrapper


def command(app: typer.Typer, name: str, fn: Callable) -> None:
    """Register `fn` as the command `name` of `app`, behind the error boundary."""
    app.command(name)(handle_errors(fn, name))


# ------------------------------------------------------------------ options several commands take
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")
ArtifactOpt = typer.Option(..., "--artifact", "-a", help="An artifact directory written by `mmedge export`.")
BackendOpt = typer.Option(None, help="Runtime backend (default: the one for the artifact's format).")
ThreadsOpt = typer.Option(None, min=1, help="Intra-op threads for the backend (default: the backend's).")
SessionOpt = typer.Option([], "--backend-option", "-O", metavar="KEY=VALUE",
                          help="A session option of the backend; repeatable, typed and checked before "
                          "loading. " + backends_help() + ".")
RayOpt = typer.Option(None, "--ray", metavar="[ADDRESS]",
                      help="Shard the work over a Ray cluster: bare --ray starts a local Ray instance (or joins "
                      "RAY_ADDRESS); --ray HOST:PORT / auto / ray://HOST:PORT joins that cluster. "
                      "Needs pip install 'mmedge[ray]'.")
WorkersOpt = typer.Option(None, min=1, help="With --ray: number of workers, each one pipeline (default: the "
                          "cluster's CPUs / --threads).")
ShipOpt = typer.Option(False, "--ship-artifact", help="With --ray: send the artifact through Ray's object store "
                       "(once per worker) instead of loading it by path from shared storage.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Start --out over instead of resuming it.")

