"""Time mmedge.runtime.audio.stft (numpy) against torch.stft on realistic audio sizes.

    python benchmarks/stft_speed.py [--repeat N] [--json] [--check [--max-ratio R]]

numpy's FFT (pocketfft) runs on one thread, so torch is pinned to one thread too
(torch.set_num_threads(1)): both sides get the same CPU.  The two are timed in
alternation, after a warm-up, and the median of --repeat runs is reported.
With --check the exit code is 1 when numpy/torch exceeds --max-ratio for any case.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

from mmedge.runtime import audio
from mmedge.runtime.audio import stft

NUMPY_THREADS = 1  # numpy.fft never uses more than one thread

CASES = [
    # name, batch shape, seconds, sample rate, n_fft, hop, win
    ("10 s @16 kHz, n_fft 512 hop 160 win 400", (), 10.0, 16000, 512, 160, 400),
    ("8 x 10 s @16 kHz, n_fft 512 hop 160 win 400", (8,), 10.0, 16000, 512, 160, 400),
    ("30 s @22.05 kHz, n_fft 1024 hop 256 win 1024", (), 30.0, 22050, 1024, 256, 1024),
]


def _time(fn, repeat: int) -> list[float]:
    return [_once(fn) for _ in range(repeat)]


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(repeat: int) -> list[dict]:
    import torch

    torch.set_num_threads(NUMPY_THREADS)
    rng = np.random.default_rng(0)
    rows = []
    for name, batch, seconds, sr, n_fft, hop, win in CASES:
        x = rng.standard_normal((*batch, int(seconds * sr))).astype(np.float32)
        xt = torch.from_numpy(x)
        window = torch.hann_window(win)

        def ours():
            return stft(x, n_fft, hop, win, "hann", center=True, pad_mode="reflect")

        def ref():
            return torch.stft(xt, n_fft, hop, win, window, center=True, pad_mode="reflect", return_complex=True)

        for _ in range(3):  # warm-up: FFT plans, allocator
            ours(), ref()
        t_np, t_torch = [], []
        for _ in range(repeat):  # alternate so drifts in machine speed hit both alike
            t_np.append(_once(ours))
            t_torch.append(_once(ref))
        y, r = ours(), ref().numpy()
        med_np, med_torch = statistics.median(t_np), statistics.median(t_torch)
        rows.append({
            "case": name,
            "shape": list(x.shape),
            "numpy_ms": round(1e3 * med_np, 3),
            "torch_ms": round(1e3 * med_torch, 3),
            "ratio": round(med_np / med_torch, 3),
            "max_rel_err": float(np.abs(y - r).max() / np.abs(r).max()),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per case (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 if numpy/torch exceeds --max-ratio for any case")
    parser.add_argument("--max-ratio", type=float, default=1.5, help="the ratio --check allows (default 1.5)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    try:
        import torch
    except ImportError:
        print("stft_speed: torch is not installed (pip install 'mmedge[torch]')", file=sys.stderr)
        return 2

    rows = run(args.repeat)
    failed = [r["case"] for r in rows if r["ratio"] > args.max_ratio]
    meta = {
        "numpy": np.__version__, "torch": torch.__version__, "threads": NUMPY_THREADS,
        "fft": "scipy.fft" if audio._scipy_fft() is not None else "numpy.fft",
        "torch_mkl": bool(torch.backends.mkl.is_available()), "cpu": platform.processor() or platform.machine(),
        "repeat": args.repeat, "max_ratio": args.max_ratio,
    }
    if args.json:
        print(json.dumps({"meta": meta, "cases": rows, "failed": failed if args.check else []}, indent=2))
    else:
        print(f"mmedge stft via {meta['fft']} (numpy {meta['numpy']}), torch {meta['torch']} (MKL: {meta['torch_mkl']}), "
              f"{NUMPY_THREADS} thread each, median of {args.repeat}")
        print(f"{'case':<46} {'numpy ms':>9} {'torch ms':>9} {'ratio':>6} {'max rel err':>12}")
        for r in rows:
            print(f"{r['case']:<46} {r['numpy_ms']:>9.2f} {r['torch_ms']:>9.2f} {r['ratio']:>6.2f} {r['max_rel_err']:>12.2e}")
    if args.check and failed:
        print(f"stft_speed: numpy/torch above {args.max_ratio} for: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
