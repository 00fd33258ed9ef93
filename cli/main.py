"""The `mmedge` program: the typer app, its commands in help order, and the entry points.

`run(argv)` is the whole program as a function (tests call it): it rewrites `--ray` (an option
whose value is optional), runs the app with SIGINT handled, and turns every usage error into
one stderr line and an exit code; `main()` is the console script.
"""

from __future__ import annotations

import signal
import sys
import threading

import typer

from mmedge.atomic import on_sigint
from mmedge.cli import check_cmds, export_cmds, run_cmds
from mmedge.cli.common import command, err

app = typer.Typer(
    name="mmedge",
    help="Export the captioner, audio encoders and refocus network to edge runtimes, "
    "check parity against PyTorch, and run them without PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich markup would eat "[near, far]" and "[ray]", tag every flag <bool>
    # and cut long option help at 100 columns.
    rich_markup_mode=None,
)

# in the order `mmedge --help` lists them
for _name, _fn in (("models", export_cmds.models_cmd), ("demo", export_cmds.demo_cmd),
                   ("export", export_cmds.export_cmd), ("caption", run_cmds.caption_cmd),
                   ("embed", run_cmds.embed_cmd), ("refocus", run_cmds.refocus_cmd),
                   ("parity", check_cmds.parity_cmd), ("eval", check_cmds.eval_cmd),
                   ("profile", check_cmds.profile_cmd), ("doctor", check_cmds.doctor_cmd),
                   ("package", export_cmds.package_cmd)):
    command(app, _name, _fn)


def _looks_like_address(token: str, local: str) -> bool:
    return token in ("auto", local) or token.startswith("ray://") or (
        ":" in token and token.rsplit(":", 1)[1].isdigit())


def ray_argv(argv: list[str]) -> list[str]:
    """`--ray` takes an optional ADDRESS: the next word is the address only if it looks like one
    (HOST:PORT, auto, local, ray://...); otherwise --ray means a local Ray instance."""
    if "--ray" not in argv:
        return list(argv)
    from mmedge.scale.executor_options import LOCAL_RAY

    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out.extend(argv[i:])
            break
        if a == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and _looks_like_address(nxt, LOCAL_RAY):
                out.append(f"--ray={nxt}")
                i += 2
                continue
            out.append(f"--ray={LOCAL_RAY}")
        else:
            out.append(a)
        i += 1
    return out


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; usage errors become one stderr line too."""
    argv = ray_argv(list(sys.argv[1:] if argv is None else argv))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None  # remembered even if swallowed
    try:
        return _run(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception bases a bad command line raises, on every typer from the declared floor.

    typer >= 0.26 vendors click and raises `typer.TyperException`; older typer re-raises
    click's own `ClickException` (click is then one of its dependencies).
    """
    bases: list[type[BaseException]] = []
    if hasattr(typer, "TyperException"):
        bases.append(typer.TyperException)
    try:
        from click.exceptions import ClickException
    except ImportError:  # typer >= 0.26 does not need click installed
        pass
    else:
        bases.append(ClickException)
    return tuple(bases)


def _no_args_errors() -> tuple[type[BaseException], ...]:
    """What `mmedge` without a command raises (no_args_is_help): typer's vendored click (>= 0.26) or
    click >= 8.2; click < 8.2 prints the help and exits 0 itself, and has no such class."""
    found: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import NoArgsIsHelpError as Vendored
    except ImportError:  # typer < 0.26: click is a separate package
        pass
    else:
        found.append(Vendored)
    try:
        from click.exceptions import NoArgsIsHelpError
    except ImportError:  # click < 8.2, or typer >= 0.26 without click installed
        pass
    else:
        found.append(NoArgsIsHelpError)
    return tuple(found)


def _run(argv: list[str]) -> int:
    try:
        rc = app(args=argv, standalone_mode=False)
    except typer.Abort:
        err("mmedge: interrupted")
        return 130
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except _usage_errors() as e:  # bad option values, missing arguments: one line, not a usage box
        if isinstance(e, _no_args_errors()):
            app(args=["--help"], standalone_mode=False)
            return 0
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        cmd = f" {ctx.info_name}" if ctx is not None and ctx.info_name not in (None, "mmedge") else ""
        err(f"mmedge: error: {msg} (see 'mmedge{cmd} --help')")
        return int(getattr(e, "exit_code", 2))
    return rc if isinstance(rc, int) else 0


def main() -> None:
    sys.exit(run())
