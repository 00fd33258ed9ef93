"""Train the demo models: `python -m mmedge.models.train MODEL [options]`.

Dispatches to one trainer module per model (each has its own --help).

Where the results go (every trainer): the weights to `--out`, by default
`./mmedge-train/<model>-demo.pt`, and the resumable checkpoint next to them
(`--checkpoint`, by default `./mmedge-train/<model>-demo.ckpt`). The shipped
weights in `models/weights/` (what `--config demo` loads) are never written
unless `--replace-shipped` is given: then the weights go to the shipped file
(an `--out` inside `models/weights/` needs the flag too).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import sys
from pathlib import Path

TRAINERS = {
    "captioner": "mmedge.models.train_captioner",
    "soundnet": "mmedge.models.train_audio",
    "voice-encoder": "mmedge.models.train_audio",
}


DEFAULT_DIR = Path("mmedge-train")  # relative to the working directory


def add_output_args(p: argparse.ArgumentParser) -> None:
    """--out, --checkpoint and --replace-shipped, the same for every trainer."""
    p.add_argument("--out", type=Path, default=None,
                   help=f"weights file to write (default: {DEFAULT_DIR}/<model>-demo.pt; the shipped "
                        "models/weights/ file only with --replace-shipped)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"resumable checkpoint written after every epoch (default: {DEFAULT_DIR}/<model>-demo.ckpt)")
    p.add_argument("--replace-shipped", action="store_true",
                   help="write the weights over the shipped models/weights/<model>-demo.pt (what --config demo "
                        "loads); without it the shipped weights are never touched")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def output_paths(args: argparse.Namespace, name: str, config: str = "demo") -> tuple[Path, Path]:
    """(weights file, checkpoint) from --out / --checkpoint / --replace-shipped; refuses, with a
    one-line SystemExit, to write into models/weights/ without --replace-shipped."""
    from mmedge.models import zoo

    shipped = zoo.WEIGHTS_DIR / zoo.get(name).weights.get(config, f"{name}-{config}.pt")
    if args.out is not None:
        out = Path(args.out)
    else:
        out = shipped if args.replace_shipped else DEFAULT_DIR / f"{name}-{config}.pt"
    if _inside(out, zoo.WEIGHTS_DIR) and not args.replace_shipped:
        raise SystemExit(f"mmedge: error: {out} is in the shipped weights folder {zoo.WEIGHTS_DIR}; "
                         "add --replace-shipped to write over the shipped weights, or give another --out")
    ckpt = Path(args.checkpoint) if args.checkpoint is not None else DEFAULT_DIR / f"{name}-{config}.ckpt"
    if _inside(ckpt, zoo.WEIGHTS_DIR):
        raise SystemExit(f"mmedge: error: --checkpoint {ckpt}: not in the shipped weights folder {zoo.WEIGHTS_DIR}")
    return out, ckpt


def installed_hint(out: Path, name: str, config: str = "demo") -> str:
    """What to say after training: where the weights are, and how --config demo would use them."""
    from mmedge.models import zoo

    shipped = zoo.WEIGHTS_DIR / zoo.get(name).weights.get(config, f"{name}-{config}.pt")
    if out.resolve() == shipped.resolve():
        return f"replaced the shipped weights {shipped} (--config {config} loads them)"
    return (f"the shipped weights are unchanged; --config {config} uses these after "
            f"`cp {out} {shipped}` (or train with --replace-shipped)")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of handing them back to the OS.

    A training step allocates and frees the same tens of 1-20 MB activation and gradient tensors
    every time; by default glibc serves each from a fresh mmap() and unmaps it on free, so every
    step page-faults its whole working set in again (82 million minor faults in one 79-minute
    captioner run). Measured on AMD EPYC (Zen 3), 2 threads: a captioner step went from 480 to
    419 ms and its page faults halved. Returns False where there is no glibc (musl, macOS).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # (Windows: CDLL(None) is a TypeError)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in TRAINERS:
        print(f"usage: python -m mmedge.models.train {{{','.join(TRAINERS)}}} [--help | options]", file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    from mmedge.errors import MissingDependencyError, require

    try:
        require("torch", "training")
    except MissingDependencyError as e:  # a device install: one line, no traceback
        print(f"mmedge: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    keep_freed_memory()
    importlib.import_module(TRAINERS[argv[0]]).main(argv)


if __name__ == "__main__":
    main()
