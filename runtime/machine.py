"""The machine and the process a profile runs on: CPU, board, backends, memory, competing load, pinning.

Recorded with every profile (`machine_info()`), and used by the benchmarks to name the CPU and to
flag runs that other processes slowed down (`cpu_snapshot` / `other_cpu_load`). The standard
library and numpy only; Linux files where they exist, None (or a portable fallback) elsewhere.
`mmedge.runtime.profiler` re-exports every name here.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mmedge.errors import InputError
from mmedge.runtime.session import available, backend_names

# Versions reported in `machine.backends`: backend -> distributions that provide it
_BACKEND_DISTS = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
    "coreml": ("coremltools",),
}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo (x86 "model name", ARM "Hardware" / implementer+part) or platform."""
    text = _cpuinfo()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, val = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = val.strip()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    if "CPU implementer" in fields:
        return f"ARM implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.machine()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; the logical count where absent (ARM)."""
    pairs, phys, core = set(), "0", None
    for line in _cpuinfo().splitlines() + [""]:
        key, _, val = (s.strip() for s in line.partition(":"))
        if key == "physical id":
            phys = val
        elif key == "core id":
            core = val
        elif not line.strip() and core is not None:
            pairs.add((phys, core))
            core = None
    return len(pairs) or (os.cpu_count() or 1)


def board_model() -> str | None:
    """The board's name from the device tree (Jetson, Raspberry Pi, ...), else None."""
    for p in ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model"):
        try:
            return Path(p).read_bytes().rstrip(b"\x00").decode(errors="replace").strip() or None
        except OSError:
            continue
    return None


def affinity() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def backend_versions() -> dict[str, str | None]:
    """Installed version of each backend's package (read from metadata: nothing heavy is imported)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in backend_names():
        out[name] = None
        if not available(name):  # metadata can outlive a removed package
            continue
        for dist in _BACKEND_DISTS.get(name, (name,)):
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def machine_info() -> dict[str, Any]:
    return {"cpu": cpu_model(), "arch": platform.machine(), "board": board_model(),
            "logical_cpus": os.cpu_count() or 1, "physical_cores": physical_cores(), "affinity": affinity(),
            "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "backends": backend_versions(), **_board_facts()}


def _board_facts() -> dict[str, Any]:
    """Jetson facts (mmedge.runtime.device): L4T release, `nvpmodel -q` power mode, jetson_clocks;
    None each off a Jetson. Never raises: a failed probe is None."""
    from mmedge.runtime.device import machine_facts

    try:
        return machine_facts()
    except Exception:  # a probe must not stop a profile
        return {"l4t": None, "power_mode": None, "power_mode_id": None, "jetson_clocks": None}


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far (a high-water mark), MiB.

    `resource.getrusage(RUSAGE_SELF).ru_maxrss`; on Linux the same peak read as VmHWM from
    /proc/self/status instead, because Linux's ru_maxrss also carries the parent's peak over
    fork + exec (a profile started by a 5 GB process would report 5 GB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def rss_mb() -> float | None:
    """Current resident memory of this process, MiB (Linux /proc/self/statm), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the machine, this process's CPU seconds, monotonic time); None off Linux."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(vals) - vals[3] - (vals[4] if len(vals) > 4 else 0)  # minus idle and iowait
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system, time.monotonic()


def other_cpu_load(a: tuple[float, float, float] | None, b: tuple[float, float, float] | None,
                   min_interval: float = 0.5) -> float | None:
    """Mean number of CPUs kept busy by other processes between two snapshots (None if too short)."""
    if a is None or b is None or b[2] - a[2] < max(min_interval, 1e-9):
        return None
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (b[2] - a[2]))


@contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[list[int] | None]:
    """Restrict this process (and the threads it starts) to `cpus`; restore the previous set after."""
    if cpus is None:
        yield None
        return
    if not hasattr(os, "sched_setaffinity"):
        raise InputError("--pin needs os.sched_setaffinity (Linux); leave it out on this system")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, set(cpus))
    except (OSError, ValueError) as e:
        raise InputError(f"--pin {','.join(map(str, cpus))}: cannot pin to these CPUs ({e}); "
                         f"this process may use CPUs {sorted(before)}") from None
    try:
        yield sorted(os.sched_getaffinity(0))
    finally:
        os.sched_setaffinity(0, before)
