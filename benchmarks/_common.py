"""What the benchmarks here set up alike: progress lines, the work folder (`--keep DIR` or a
temporary one), the other processes' CPU load and its report line, the options they share,
the minimums they check, and writing the results (JSON first, then the table).

Torch-free, so that overhead.py runs without torch; what needs torch and the tutorial's
eager pipeline (the model, its export, the interleaved timing loop) is caption_latency.py's.
Import it as the other benchmarks do, with benchmarks/ on sys.path (it is not a package).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from mmedge.runtime import profiler
from mmedge.runtime.profiler import cpu_snapshot

__all__ = ["MAX_OTHER_LOAD", "SHARED", "TokenMismatch", "add_common", "agreement", "at_least", "cpu_snapshot",
           "first_difference", "inconclusive", "load_line", "logger", "ms", "other_cpu_load", "parser", "publish",
           "run_and_publish", "summarize_runs", "workdir"]

MAX_OTHER_LOAD = 0.25  # CPUs busy with other processes above which a result is not trusted
SHARED = ("the CPUs were shared with other work, latencies are inflated and the ratios distorted (oversubscribed "
          "multi-threaded PyTorch slows down far more than the runtimes, which inflates the speed-ups)")


def logger(prog: str) -> Callable[[str], None]:
    """A progress printer: `[prog] message` on stderr (the table goes to stdout)."""

    def log(msg: str) -> None:
        print(f"[{prog}] {msg}", file=sys.stderr, flush=True)

    return log


# ===================================================================== machine load
def other_cpu_load(a: tuple[float, float, float] | None, b: tuple[float, float, float] | None) -> float | None:
    """Average number of CPUs kept busy by OTHER processes between two snapshots (the profiler's measure)."""
    return profiler.other_cpu_load(a, b, min_interval=0.0)


def load_line(load: float | None, cpus: int | None, limit: float, hint: str = "", why: str = SHARED) -> str:
    """The report's line on other processes' CPU use during the timed runs, with `why` the figures
    mislead above `limit` (`cpus`: the machine's, None to leave it out)."""
    if load is None:
        return "Competing load: unknown (no /proc/stat)."
    warn = f" - above the {limit:.2f} limit: {why}{hint}; rerun on an idle machine." if load > limit else "."
    of = "" if cpus is None else f" of {cpus}"
    return f"Competing load: other processes kept {load:.2f}{of} CPUs busy on average during the timed runs{warn}"


def inconclusive(prog: str, load: float, limit: float | None = None) -> int:
    """Say on stderr that a loaded run decides nothing; the exit status for it (3)."""
    more = "" if limit is None else f" (limit {limit:.2f}); rerun on an idle machine"
    print(f"{prog}: inconclusive: other processes kept {load:.2f} CPUs busy{more}", file=sys.stderr)
    return 3


# ===================================================================== tokens
class TokenMismatch(RuntimeError):
    """Two pipelines produced different captions where they must agree (the benchmark fails: exit 2)."""


def first_difference(ref: list[int], got: list[int]) -> int:
    """The first position where two token lists differ (the shorter length when one extends the other)."""
    return next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))


def agreement(ref: list[int], got: list[int]) -> dict[str, Any]:
    """A build's tokens against the reference: equal, first difference, positions that agree."""
    same = sum(a == b for a, b in zip(ref, got))
    return {"equal": ref == got, "first_difference": None if ref == got else first_difference(ref, got),
            "same_positions": same}


# ===================================================================== results
def summarize_runs(runs: list[Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Medians (and the min total) of timed caption runs (dataclasses with `total`, `decoding`,
    `steps` and the stages in `keys`, in seconds), and each run but its tokens."""
    out: dict[str, Any] = {"runs": [{k: v for k, v in asdict(r).items() if k != "tokens"} for r in runs]}
    totals = [r.total for r in runs]
    out["median_s"], out["min_s"] = statistics.median(totals), min(totals)
    for k in keys:
        out[f"{k}_median_s"] = statistics.median(getattr(r, k) for r in runs)
    out["per_step_median_s"] = statistics.median(r.decoding / r.steps for r in runs)
    return out


def ms(s: float | None) -> str:
    """Seconds as a table's millisecond cell ('-' when absent)."""
    return "-" if s is None else f"{s * 1e3:,.1f}"


# ===================================================================== command line
def parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_common(p: argparse.ArgumentParser, *, threads: str | None = None, check: str | None = None,
               max_other_load: str | None = None, max_other_load_default: float = MAX_OTHER_LOAD,
               keep: str | None = None) -> None:
    """--json, and each of --threads, --check, --max-other-load, --keep whose help is given (what
    it means for this benchmark); the others are not offered."""
    if threads is not None:
        p.add_argument("--threads", type=int, default=None, metavar="T", help=threads)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON here")
    if check is not None:
        p.add_argument("--check", action="store_true", help=check)
    if max_other_load is not None:
        p.add_argument("--max-other-load", type=float, default=max_other_load_default, metavar="CPUS",
                       help=max_other_load)
    if keep is not None:
        p.add_argument("--keep", type=Path, default=None, metavar="DIR", help=keep)


def at_least(p: argparse.ArgumentParser, args: argparse.Namespace, **minimums: float) -> None:
    """A usage error (exit 2) for the first option below its minimum (an absent one is not checked)."""
    for name, least in minimums.items():
        value = getattr(args, name)
        if value is not None and value < least:
            p.error(f"--{name.replace('_', '-')} must be >= {least}")


# ===================================================================== work folder and results
@contextmanager
def workdir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """`--keep DIR` (created), else a temporary folder removed afterwards."""
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)


def publish(res: dict[str, Any], render: Callable[[dict[str, Any]], str], json_path: Path | None,
            log: Callable[[str], None], jsonable: Callable[[Any], Any] = lambda x: x) -> None:
    """Write the results as JSON (first: a long run's numbers must survive any rendering problem),
    then print the table on stdout."""
    if json_path:
        json_path.write_text(json.dumps(jsonable(res), indent=2, default=str) + "\n")
        log(f"wrote {json_path}")
    print(render(res))


def run_and_publish(prog: str, failed: str, args: argparse.Namespace,
                    run: Callable[[argparse.Namespace, Path], dict[str, Any]], folder: ContextManager[Path],
                    render: Callable[[dict[str, Any]], str], log: Callable[[str], None]) -> dict[str, Any] | None:
    """`run(args, work folder)`, then `publish` its results; None, after "<prog>: FAILED: <failed><why>"
    on stderr, when captions that must agree differ (TokenMismatch: the caller exits 2)."""
    try:
        with folder as wd:
            res = run(args, wd)
    except TokenMismatch as e:
        print(f"{prog}: FAILED: {failed}{e}", file=sys.stderr)
        return None
    publish(res, render, args.json, log)
    return res
