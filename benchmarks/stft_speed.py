#!/usr/bin/env python
"""Time mmedge's torch-free STFT front-end against torch.stft, at torch's default threads and at 1.

    python benchmarks/stft_speed.py [--repeat N] [--json] [--check] [--max-ratio R] [--max-other-load CPUS]

Cases: a 3 s clip at 16 kHz for n_fft 400, 512 and 1024; the voice encoder's own front-end
parameters (read from mmedge.models.voice_encoder) on a 1 s crop, a 3 s clip and 10 s; a batch
of 8 x 10 s; 30 s at 22.05 kHz with n_fft 1024.  Each case runs twice: both sides on one thread
(``stft(..., workers=1)``, ``torch.set_num_threads(1)``), then both at their defaults (mmedge:
``MMEDGE_STFT_WORKERS`` or the CPUs this process may use; torch: ``torch.get_num_threads()``).

Each side runs in the process it is deployed in: torch.stft in this one, mmedge in a child
process that never imports torch (``--worker``; the runtime is torch-free, and torch's OpenMP and
MKL threads in the same process would slow mmedge's calls, as one process with two OpenMP
runtimes may slow torch's).  The two are timed in alternating blocks of back-to-back calls
(see time_pair); the table
reports the minimum over --repeat runs each (the least disturbed by other work; the median is
in --json), the ratio mmedge/torch of the minima and whether it meets --max-ratio.  The CPU time other processes used during each
case's timed runs is measured (/proc/stat); above --max-other-load the row is flagged LOADED,
as an oversubscribed machine distorts a comparison of multi-threaded code.  Figures name the
CPU (mmedge.runtime.profiler.cpu_model()).

Exit status: 0; 1 with --check when a ratio at the default threads exceeds --max-ratio on a
quiet run; 2 when torch is missing or a result is wrong (> 1e-5 relative); 3 with --check when
other processes loaded the CPUs beyond --max-other-load (inconclusive).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

from mmedge.runtime import profiler, stft_blocks
from mmedge.runtime.audio import stft

MAX_OTHER_LOAD = 0.25  # CPUs busy with other processes above which a row is flagged
MAX_REL_ERR = 1e-5  # mmedge vs torch.stft, relative to max |X| (float32)
BLOCK = 10  # timed calls per block; the two sides alternate block by block
SETTLE_S = 0.05  # pause before each block: lets torch's spinning OpenMP threads go to sleep


def cases() -> list[tuple[str, tuple[int, ...], float, int, int, int, int]]:
    """(name, batch shape, seconds, sample rate, n_fft, hop, win): generic sizes and the models' own."""
    from mmedge.models.voice_encoder import CONFIGS

    ve = CONFIGS["full"]
    voice = (ve.sample_rate, ve.n_fft, ve.hop_length, ve.win_length)
    tag = f"n_fft {ve.n_fft} hop {ve.hop_length} win {ve.win_length}"
    return [
        ("3 s @16 kHz, n_fft 400 hop 160 win 400", (), 3.0, 16000, 400, 160, 400),
        ("3 s @16 kHz, n_fft 512 hop 128 win 512", (), 3.0, 16000, 512, 128, 512),
        ("3 s @16 kHz, n_fft 1024 hop 256 win 1024", (), 3.0, 16000, 1024, 256, 1024),
        (f"voice encoder 1 s, {tag}", (), 1.0, *voice),
        (f"voice encoder 3 s, {tag}", (), 3.0, *voice),
        (f"voice encoder 10 s, {tag}", (), 10.0, *voice),
        (f"8 x 10 s, {tag}", (8,), 10.0, *voice),
        ("30 s @22.05 kHz, n_fft 1024 hop 256 win 1024", (), 30.0, 22050, 1024, 256, 1024),
    ]


def _once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _block(fn: Callable[[], Any], n: int) -> tuple[list[float], float]:
    """2 untimed calls, then ``n`` timed ones: (seconds per call, CPU seconds this process used)."""
    t0 = os.times()
    fn(), fn()
    times = [_once(fn) for _ in range(n)]
    t1 = os.times()
    return times, (t1.user + t1.system) - (t0.user + t0.system)


BlockRunner = Callable[[int], "tuple[list[float], float]"]


def time_pair(ours: BlockRunner, ref: BlockRunner, repeat: int) -> dict[str, Any]:
    """Timings of ours and ref in alternating blocks of back-to-back calls, with other processes' CPU load.

    Blocks, not single calls, with a pause before each: torch's OpenMP threads keep spinning
    for milliseconds after a call (libgomp's GOMP_SPINCOUNT), which would take the second CPU
    from mmedge's FFT threads if the two ran back to back.  Each block starts
    with 2 untimed calls (the pause lets the CPUs idle down, and the OpenMP threads sleep).
    A runner returns its block's times and the CPU seconds it used outside this process (the
    mmedge worker's), which are not counted as other processes' load.
    """
    t_ours: list[float] = []
    t_ref: list[float] = []
    worker_cpu = 0.0
    before = profiler.cpu_snapshot()
    while len(t_ours) < repeat:
        n = min(BLOCK, repeat - len(t_ours))
        for run_block, times in ((ours, t_ours), (ref, t_ref)):
            time.sleep(SETTLE_S)
            got, cpu = run_block(n)
            times.extend(got)
            worker_cpu += cpu
    after = profiler.cpu_snapshot()
    if after is not None:  # the worker's CPU seconds count as this benchmark's, not as other load
        after = (after[0], after[1] + worker_cpu, after[2])
    load = profiler.other_cpu_load(before, after, min_interval=0.0)
    return {
        "mmedge_ms_min": round(1e3 * min(t_ours), 4), "torch_ms_min": round(1e3 * min(t_ref), 4),
        "mmedge_ms_median": round(1e3 * statistics.median(t_ours), 4),
        "torch_ms_median": round(1e3 * statistics.median(t_ref), 4),
        "ratio": round(min(t_ours) / min(t_ref), 3),
        "ratio_median": round(statistics.median(t_ours) / statistics.median(t_ref), 3),
        "other_cpu_load": None if load is None else round(load, 3),
    }


class Worker:
    """The mmedge side in a child process that does not import torch (``stft_speed.py --worker``).

    One JSON command per line on its stdin, one JSON reply per line on its stdout.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self.ask(op="hello")
        if self.info.get("torch_loaded"):
            raise RuntimeError("the mmedge worker imported torch; its timings would not be torch-free")

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the mmedge worker exited (status {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the mmedge worker failed: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()


def worker_main() -> int:
    """Serve the parent's commands: hello, load (a case's signal and parameters), time, result."""
    state: dict[str, Any] = {}

    def call() -> np.ndarray:
        return stft(state["x"], state["n_fft"], state["hop"], state["win"], "hann", center=True,
                    pad_mode="reflect", workers=state["workers"])

    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["op"] == "hello":
                reply = {"torch_loaded": "torch" in sys.modules, "fft": stft_blocks.backend_name(),
                         "workers": stft_blocks.default_workers()}
            elif cmd["op"] == "load":
                state.update(x=np.load(cmd["path"]), n_fft=cmd["n_fft"], hop=cmd["hop"], win=cmd["win"])
                reply = {}
            elif cmd["op"] == "time":
                state["workers"] = cmd["workers"]
                times, cpu = _block(call, cmd["n"])
                reply = {"times": times, "cpu_s": cpu}
            elif cmd["op"] == "result":
                state["workers"] = cmd["workers"]
                np.save(cmd["path"], call())
                reply = {"torch_loaded": "torch" in sys.modules}
            else:
                reply = {"error": f"unknown op {cmd['op']!r}"}
        except Exception as e:  # noqa: BLE001 - reported to the parent, which stops
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


def run(repeat: int, max_ratio: float, max_load: float) -> tuple[list[dict], dict]:
    import torch

    default_threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    rows = []
    worker = Worker()
    workers = int(worker.info["workers"])
    try:
        with tempfile.TemporaryDirectory(prefix="mmedge-stft-speed-") as tmp:
            for name, batch, seconds, sr, n_fft, hop, win in cases():
                x = rng.standard_normal((*batch, int(seconds * sr))).astype(np.float32)
                np.save(os.path.join(tmp, "x.npy"), x)
                worker.ask(op="load", path=os.path.join(tmp, "x.npy"), n_fft=n_fft, hop=hop, win=win)
                xt = torch.from_numpy(x)
                window = torch.hann_window(win)
                ref = torch.stft(xt, n_fft, hop, win, window, center=True, pad_mode="reflect",
                                 return_complex=True).numpy()
                for label, threads, ours_workers in (("1", 1, 1), ("default", default_threads, workers)):
                    torch.set_num_threads(threads)

                    def ours(n: int, w: int = ours_workers) -> tuple[list[float], float]:
                        reply = worker.ask(op="time", workers=w, n=n)
                        return reply["times"], reply["cpu_s"]

                    def theirs() -> Any:
                        return torch.stft(xt, n_fft, hop, win, window, center=True, pad_mode="reflect",
                                          return_complex=True)

                    row = {"case": name, "shape": list(x.shape), "threads": label, "torch_threads": threads,
                           "mmedge_workers": ours_workers,
                           **time_pair(ours, lambda n: (_block(theirs, n)[0], 0.0), repeat)}  # in-process: 0 outside
                    out = os.path.join(tmp, "y.npy")
                    worker.ask(op="result", workers=ours_workers, path=out)
                    y = np.load(out)
                    row["max_rel_err"] = float(np.abs(y - ref).max() / np.abs(ref).max())
                    row["met"] = row["ratio"] <= max_ratio
                    row["loaded"] = row["other_cpu_load"] is not None and row["other_cpu_load"] > max_load
                    rows.append(row)
                torch.set_num_threads(default_threads)
    finally:
        worker.close()
    meta = {
        "cpu": profiler.cpu_model(), "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "torch_mkl": bool(torch.backends.mkl.is_available()), "torch_default_threads": default_threads,
        "mmedge_fft": worker.info["fft"], "mmedge_default_workers": workers, "mmedge_process": "torch-free child",
        "repeat": repeat, "max_ratio": max_ratio, "max_other_load": max_load,
    }
    return rows, meta


def render(rows: list[dict], meta: dict) -> str:
    lines = [
        f"STFT front-end: mmedge (via {meta['mmedge_fft']}, numpy {meta['numpy']}, in a torch-free process) vs torch.stft "
        f"(torch {meta['torch']}, MKL: {meta['torch_mkl']}), min of {meta['repeat']} runs each, in blocks of {BLOCK}",
        f"CPU: {meta['cpu']}, {meta['affinity_cpus']} CPUs usable; default threads: torch "
        f"{meta['torch_default_threads']}, mmedge {meta['mmedge_default_workers']}",
        "",
        f"| {'case':<46} | threads | mmedge ms | torch ms | ratio | <= {meta['max_ratio']}x | max rel err | "
        "other load    |",
        f"|{'-' * 48}|---------|-----------|----------|-------|--------|-------------|---------------|",
    ]
    for r in rows:
        threads = "1" if r["threads"] == "1" else f"{r['mmedge_workers']}/{r['torch_threads']}"
        load = "?" if r["other_cpu_load"] is None else f"{r['other_cpu_load']:.2f}"
        lines.append(
            f"| {r['case']:<46} | {threads:>7} | {r['mmedge_ms_min']:>9.3f} | {r['torch_ms_min']:>8.3f} | "
            f"{r['ratio']:>5.2f} | {'yes' if r['met'] else 'NO':>6} | {r['max_rel_err']:>11.1e} | "
            f"{load + (' LOADED' if r['loaded'] else ''):<13} |")
    lines.append("")
    lines.append("threads: mmedge workers / torch threads; other load: CPUs other processes kept busy on average "
                 "during the case's timed runs (/proc/stat).")
    loaded = [r for r in rows if r["loaded"]]
    if loaded:
        lines.append(f"WARNING: {len(loaded)} of {len(rows)} rows ran while other processes used more than "
                     f"{meta['max_other_load']:.2f} CPUs: their times and ratios are not trustworthy; rerun on an "
                     "idle machine.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeat", type=int, default=60, help="timed runs per side, case and thread setting (min reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a ratio at the default threads exceeds --max-ratio (3 if the run was loaded)")
    parser.add_argument("--max-ratio", type=float, default=1.5, help="the mmedge/torch time ratio allowed")
    parser.add_argument("--max-other-load", type=float, default=MAX_OTHER_LOAD, metavar="CPUS",
                        help="CPUs other processes may keep busy during a case before its row is flagged LOADED")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # the torch-free mmedge side
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("stft_speed: torch is not installed (pip install 'mmedge[torch]')", file=sys.stderr)
        return 2

    rows, meta = run(args.repeat, args.max_ratio, args.max_other_load)
    wrong = [r["case"] for r in rows if r["max_rel_err"] > MAX_REL_ERR]
    failed = [f"{r['case']} ({r['ratio']:.2f}x)" for r in rows if r["threads"] == "default" and not r["met"]]
    loaded = any(r["loaded"] for r in rows)
    if args.json:
        print(json.dumps({"meta": meta, "cases": rows, "failed": failed, "loaded": loaded}, indent=2))
    else:
        print(render(rows, meta))
    if wrong:
        print(f"stft_speed: mmedge differs from torch.stft by more than {MAX_REL_ERR} for: {'; '.join(wrong)}",
              file=sys.stderr)
        return 2
    if args.check and loaded:
        print("stft_speed: inconclusive: other processes loaded the CPUs during the timed runs; rerun on an idle "
              "machine", file=sys.stderr)
        return 3
    if args.check and failed:
        print(f"stft_speed: mmedge/torch above {args.max_ratio}x at the default threads for: {'; '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
