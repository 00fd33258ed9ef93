"""Walk the README as a new user would: run every fenced shell command, in order, in a fresh copy.

`python tests/readme_walk.py [--keep DIR]` copies the repository's files (tracked and
untracked-but-not-ignored: what a clone of this commit holds) into an empty folder, makes a
virtual environment there that sees this interpreter's packages (so `pip install -e ...`
installs only mmedge itself; its build backend comes from the package index, as for a user), and runs each command of the README's ```bash blocks
and the `$ ` lines of its plain ``` blocks (```text blocks are transcripts of other setups),
from the Quick start through the command sections, with bash in that folder. It fails on any non-zero exit or a traceback, naming the README line.

Commands that need what this machine lacks (a GPU, a Ray cluster at a named address, a
Jetson board) are listed in NOT_HERE with the reason and reported as skipped; a NOT_HERE
entry that matches no command fails the walk, so the list cannot go stale. The test suite
itself (the Quick start's second line) is what CI runs around this walk, so it is not run
again inside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_SECTION = "## Quick start"
LAST_SECTION = "## Errors"  # the walk stops here (Errors and Development hold no user commands)

# substring of a command -> why it cannot run on a CPU-only Linux machine
NOT_HERE: dict[str, str] = {
    "python -m pytest": "the test suite: CI runs it around this walk",
    "--ray head:6379": "needs a Ray cluster at head:6379 and /shared storage",
    "--ray auto": "needs a running Ray cluster to join",
    "device=GPU": "needs an Intel GPU for OpenVINO",
    "--format tensorrt": "needs an NVIDIA GPU with TensorRT",
    "build_engines.sh": "runs on a Jetson board",
    "engines/captioner-demo-tensorrt": "needs engines built on a Jetson board",
    "cd mmedge-jetson": "on the board: unpacks the bundle there",
    "install.sh": "on the board (JetPack's Python); tests/test_jetson_install.py runs it in a Python 3.8 venv",
    "--epochs 10 --canonical --balance-objects": "the shipped weights' training run (79 min on 2 cores); "
                                                 "tests/test_object_grid.py trains briefly with these options",
    "--init mmedge-train/captioner-demo.ckpt --epochs 1": "the shipped weights' last epoch (7.5 min), from "
                                                           "the training run's checkpoint",
    "--checkpoint BEST_checkpoint": "needs your tutorial checkpoint; tests/test_checkpoint.py runs this command "
                                    "on a fabricated one",
}
# substring of a command -> exit codes it may end with besides 0, and why (never a traceback)
MAY_EXIT: dict[str, tuple[tuple[int, ...], str]] = {
    "profile --compare": ((1,), "1 = a row's p50 rose past --threshold: two runs on a shared machine can differ"),
}
TIMEOUT_S = 900


@dataclass
class Command:
    line: int  # README line number of the command's first line
    text: str


def commands(readme: str) -> list[Command]:
    """Shell commands of the walked sections, in order, with backslash continuations joined."""
    out: list[Command] = []
    lines = readme.splitlines()
    walking, fence, pending, start = False, None, "", 0
    for i, raw in enumerate(lines, 1):
        if fence is None and raw.startswith("## "):
            walking = raw.startswith(FIRST_SECTION) or (walking and not raw.startswith(LAST_SECTION))
            continue
        if raw.startswith("```"):
            fence = None if fence is not None else (raw[3:].strip() or "plain")
            continue
        if not walking or fence is None:
            continue
        text = raw
        if fence in ("bash", "sh", "shell"):
            pass
        elif fence in ("plain", "console") and text.startswith("$ "):  # ```text: a transcript, not run
            text = text[2:]
        else:
            continue
        if not pending and (not text.strip() or text.lstrip().startswith("#")):
            continue
        if not pending:
            start = i
        if text.rstrip().endswith("\\"):
            pending += text.rstrip()[:-1] + " "
            continue
        out.append(Command(start, (pending + text).strip()))
        pending = ""
    return out


def skip_reason(cmd: str) -> str | None:
    for pattern, why in NOT_HERE.items():
        if pattern in cmd:
            return why
    return None


def copy_checkout(dest: Path) -> None:
    """The files a clone holds (tracked, plus new files not ignored), without .git."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def walk(work: Path, log=print) -> int:
    readme = (ROOT / "README.md").read_text()
    cmds = commands(readme)
    unused = [p for p in [*NOT_HERE, *MAY_EXIT] if not any(p in c.text for c in cmds)]
    if unused:
        log(f"readme-walk: NOT_HERE entries match no README command (stale): {unused}")
        return 1
    copy_checkout(work)
    venv = work / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    failures = 0
    for c in cmds:
        why = skip_reason(c.text)
        if why:
            log(f"readme-walk: skip  README.md:{c.line}: {c.text[:90]}  ({why})")
            continue
        t0 = time.monotonic()
        res = subprocess.run(["bash", "-c", f"set -eo pipefail; {c.text}"], cwd=work, env=env, text=True,
                             capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        took = time.monotonic() - t0
        tb = "Traceback (most recent call last)" in res.stdout + res.stderr
        allowed = next((codes for pattern, (codes, _) in MAY_EXIT.items() if pattern in c.text), ())
        ok = (res.returncode == 0 or res.returncode in allowed) and not tb
        log(f"readme-walk: {'ok   ' if ok else 'FAIL '} README.md:{c.line}: {c.text[:90]}  ({took:.1f} s)")
        if not ok:
            failures += 1
            tail = (res.stdout + res.stderr).strip().splitlines()[-15:]
            log(f"  exit {res.returncode}{', traceback' if tb else ''}:\n    " + "\n    ".join(tail))
    log(f"readme-walk: {len(cmds)} commands, {failures} failed")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="walk in this (new, empty) folder and keep it")
    ap.add_argument("--list", action="store_true", help="only list the commands and what is skipped")
    args = ap.parse_args()
    if args.list:
        for c in commands((ROOT / "README.md").read_text()):
            why = skip_reason(c.text)
            print(f"README.md:{c.line}: {c.text}" + (f"   [skip: {why}]" if why else ""))
        return 0
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        return walk(args.keep)
    with tempfile.TemporaryDirectory(prefix="mmedge-readme-") as d:
        return walk(Path(d))


if __name__ == "__main__":
    sys.exit(main())
