"""Know the board: `mmedge doctor` and the machine facts `mmedge profile` records.

Torch-free and numpy-free (the standard library only), Python 3.8+. Every probe is
tolerant: a missing file, command or module gives None ("not found" in the text
report), a probe that fails gives None and a note, never a traceback.

What is read, and from where (`Probe.root` replaces "/" and `Probe.path` the PATH
searched for commands, so tests fake a board with a folder and shell scripts):

- L4T release: `/etc/nv_tegra_release` ("# R35 (release), REVISION: 4.1, ...") or
  `dpkg-query -W nvidia-l4t-core`; JetPack from the table `JETPACK_OF_L4T`
  (NVIDIA's Jetson Linux archive), else from the major release (`JETPACK_OF_L4T_MAJOR`);
- TensorRT: the `tensorrt` Python module's version (where it imports), else
  `dpkg-query -W libnvinfer-bin` / `tensorrt`, else the `libnvinfer.so.X.Y.Z` file name;
- CUDA: `/usr/local/cuda/version.json` (CUDA >= 11.1), `version.txt`, else `nvcc --version`;
- DLA cores: `/dev/nvhost-nvdla<N>` (JetPack 5) and `nvdla<N>` device nodes under
  `/sys/devices/platform` (JetPack 6+); 0 on a Jetson without DLA (Orin Nano);
- power mode: `nvpmodel -q` ("NV Power Mode: MAXN" + the mode number);
- jetson_clocks: `jetson_clocks --show` (needs root) — on when every listed clock has
  MinFreq == MaxFreq; without root, the CPUs' cpufreq (scaling_min_freq == cpuinfo_max_freq);
- off a Jetson: the CPU model and a summary of its vector flags, and `nvidia-smi`'s GPU.

`TegraStats` runs `tegrastats --interval MS` in the background while a profile runs
and summarises RAM, swap, GPU load and the power rails (mW) it printed.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from mmedge.runtime.cpu_features import parse_cpuinfo

NOT_FOUND = "not found"

# L4T (Jetson Linux) release -> JetPack, from NVIDIA's Jetson Linux / JetPack archives
JETPACK_OF_L4T: Dict[str, str] = {
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "34.1.0": "5.0 DP", "34.1.1": "5.0.1 DP",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "38.2.0": "7.0",
}
JETPACK_OF_L4T_MAJOR: Dict[int, str] = {32: "4", 34: "5", 35: "5", 36: "6", 38: "7"}

# What the bundle's install.sh installs per JetPack major (requirements-jetpack<N>.txt); the
# Python is the one JetPack's TensorRT bindings are built for.
JETPACK_RUNTIME: Dict[str, Dict[str, str]] = {
    "5": {"python": "3.8", "tensorrt": "8.5", "cuda": "11.4", "numpy": "numpy<1.24",
          "cuda_python": "cuda-python>=11.8,<12"},
    "6": {"python": "3.10", "tensorrt": "10.3", "cuda": "12.6", "numpy": "numpy",
          "cuda_python": "cuda-python>=12,<13"},
    "7": {"python": "3.12", "tensorrt": "10.13", "cuda": "13.0", "numpy": "numpy",
          "cuda_python": "cuda-python>=13,<14"},
}

_RELEASE = re.compile(r"#?\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")
_X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
              "amx_tile", "amx_bf16", "amx_int8")
_ARM_FLAGS = ("asimd", "asimdhp", "asimddp", "fphp", "sve", "sve2", "i8mm", "bf16")


def _norm_version(text: str, parts: int = 3) -> str:
    nums = (text.split(".") + ["0"] * parts)[:parts]
    return ".".join(str(int(n)) if n.isdigit() else n for n in nums)


def jetpack_of(l4t: str) -> Optional[str]:
    """JetPack of an L4T release ("35.4.1" -> "5.1.2"; an unlisted 36.x -> "6"), None if unknown."""
    l4t = _norm_version(l4t)
    if l4t in JETPACK_OF_L4T:
        return JETPACK_OF_L4T[l4t]
    try:
        return JETPACK_OF_L4T_MAJOR.get(int(l4t.split(".")[0]))
    except ValueError:
        return None


def parse_nv_tegra_release(text: str) -> Optional[str]:
    """ "# R35 (release), REVISION: 4.1, GCID: ..." -> "35.4.1"; None if not that format."""
    m = _RELEASE.search(text)
    if not m:
        return None
    return _norm_version(f"{m.group(1)}.{m.group(2)}")


def parse_nvpmodel(text: str) -> Optional[Dict[str, Any]]:
    """`nvpmodel -q` ("NV Power Mode: MAXN\\n0") -> {"name": "MAXN", "id": 0}."""
    m = re.search(r"NV Power Mode\s*:\s*(.+)", text)
    if not m:
        return None
    mode_id = None
    after = text[m.end():].split()
    if after and after[0].isdigit():
        mode_id = int(after[0])
    return {"name": m.group(1).strip(), "id": mode_id}


def parse_jetson_clocks(text: str) -> Optional[bool]:
    """`jetson_clocks --show`: on when every clock line has MinFreq == MaxFreq (the clocks are
    locked at their maximum); None when no clock line was found."""
    seen, locked = 0, 0
    for line in text.splitlines():
        lo, hi = re.search(r"MinFreq=(\d+)", line), re.search(r"MaxFreq=(\d+)", line)
        if not (lo and hi):
            continue
        if "Online=0" in line:
            continue
        seen += 1
        locked += lo.group(1) == hi.group(1)
    if not seen:
        return None
    return locked == seen


class Probe:
    """The machine seen from `root` ("/" normally), with commands looked up on `path` (PATH
    normally). `import_modules=False` skips importing Python modules (tensorrt), for tests."""

    def __init__(self, root: "str | Path" = "/", path: Optional[str] = None, import_modules: bool = True,
                 timeout: float = 10.0) -> None:
        self.root = Path(root)
        self.path = path
        self.import_modules = import_modules
        self.timeout = timeout
        self.notes: List[str] = []

    # -------------------------------------------------------------- helpers
    def file(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> Optional[str]:
        try:
            return self.file(rel).read_bytes().rstrip(b"\x00").decode("utf-8", "replace")
        except OSError:
            return None

    def which(self, cmd: str) -> Optional[str]:
        return shutil.which(cmd, path=self.path)

    def run(self, cmd: str, *args: str, quiet: bool = False) -> Optional[str]:
        """stdout + stderr of a command, or None where it is missing, fails to start or times out
        (a note says why, unless `quiet`: a package that is not installed is no news)."""
        exe = self.which(cmd)
        if exe is None:
            return None
        try:
            res = subprocess.run([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=self.timeout, env=self._env())
        except (OSError, subprocess.SubprocessError) as e:
            self.notes.append(f"{cmd} {' '.join(args)}: {e.__class__.__name__}")
            return None
        out = res.stdout.decode("utf-8", "replace")
        if res.returncode != 0:
            if quiet:
                return None
            self.notes.append(f"{cmd} {' '.join(args)} exited {res.returncode}: "
                              f"{(out.strip().splitlines() or [''])[-1][:200]}")
            return None
        return out

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        if self.path is not None:  # its commands first; the system's still there for their #! lines
            env["PATH"] = self.path + os.pathsep + env.get("PATH", os.defpath)
        return env

    def dpkg_version(self, *packages: str) -> Optional[str]:
        for pkg in packages:
            out = self.run("dpkg-query", "-W", "-f=${Version}", pkg, quiet=True)
            if out and out.strip():
                return out.strip()
        return None

    # -------------------------------------------------------------- probes
    def board(self) -> Optional[str]:
        for rel in ("sys/firmware/devicetree/base/model", "proc/device-tree/model"):
            text = self.read(rel)
            if text and text.strip():
                return text.strip()
        return None

    def l4t(self) -> Optional[str]:
        text = self.read("etc/nv_tegra_release")
        if text:
            found = parse_nv_tegra_release(text)
            if found:
                return found
            self.notes.append(f"/etc/nv_tegra_release: unrecognised first line {text.splitlines()[0][:120]!r}")
        v = self.dpkg_version("nvidia-l4t-core")
        if v:
            m = re.match(r"(\d+\.\d+(?:\.\d+)?)", v)
            if m:
                return _norm_version(m.group(1))
        return None

    def tensorrt(self) -> Optional[Dict[str, str]]:
        if self.import_modules:
            try:
                import tensorrt  # noqa: F401  # lazily: heavy, and only where it is installed

                return {"version": str(tensorrt.__version__), "source": "python module tensorrt"}
            except Exception:  # not installed, or a broken install: fall through to the packages
                pass
        for pkg in ("libnvinfer-bin", "tensorrt", "libnvinfer10", "libnvinfer8"):
            v = self.dpkg_version(pkg)
            if v:
                return {"version": v.split("-")[0].split("+")[0], "source": f"dpkg {pkg}"}
        for lib_dir in ("usr/lib/aarch64-linux-gnu", "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/local/lib"):
            found = sorted(glob.glob(str(self.file(lib_dir) / "libnvinfer.so.*.*")))
            if found:
                v = Path(found[-1]).name[len("libnvinfer.so."):]
                return {"version": v, "source": f"/{lib_dir}/libnvinfer.so.{v}"}
        return None

    def cuda(self) -> Optional[Dict[str, str]]:
        text = self.read("usr/local/cuda/version.json")
        if text:
            try:
                v = json.loads(text)["cuda"]["version"]
                return {"version": str(v), "source": "/usr/local/cuda/version.json"}
            except (ValueError, KeyError, TypeError):
                self.notes.append("/usr/local/cuda/version.json: not the expected JSON")
        text = self.read("usr/local/cuda/version.txt")
        if text:
            m = re.search(r"CUDA Version\s+([0-9.]+)", text)
            if m:
                return {"version": m.group(1), "source": "/usr/local/cuda/version.txt"}
        out = self.run("nvcc", "--version")
        if out is None and self.file("usr/local/cuda/bin/nvcc").is_file() and str(self.root) == "/":
            out = self._run_path("/usr/local/cuda/bin/nvcc", "--version")
        if out:
            m = re.search(r"release\s+[0-9.]+,\s*V([0-9.]+)", out)
            if m:
                return {"version": m.group(1), "source": "nvcc --version"}
        return None

    def _run_path(self, exe: str, *args: str) -> Optional[str]:
        try:
            res = subprocess.run([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=self.timeout)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.decode("utf-8", "replace") if res.returncode == 0 else None

    def dla_cores(self) -> Optional[int]:
        """DLA engines the board exposes; None off a Jetson (no L4T), 0 on a Jetson without DLA."""
        cores = set()
        for p in glob.glob(str(self.file("dev") / "nvhost-nvdla*")):
            m = re.fullmatch(r"nvhost-nvdla(\d+)", Path(p).name)
            if m:
                cores.add(int(m.group(1)))
        platform_dir = self.file("sys/devices/platform")
        for pattern in ("*nvdla*", "*/*nvdla*"):
            for p in glob.glob(str(platform_dir / pattern)):
                m = re.search(r"nvdla(\d+)$", Path(p).name)
                if m:
                    cores.add(int(m.group(1)))
        if cores:
            return len(cores)
        return 0 if self.read("etc/nv_tegra_release") is not None else None

    def power_mode(self) -> Optional[Dict[str, Any]]:
        out = self.run("nvpmodel", "-q")
        return parse_nvpmodel(out) if out else None

    def jetson_clocks(self) -> Optional[Dict[str, Any]]:
        """{"on": bool, "source": ...}; None off a Jetson (no jetson_clocks, no L4T)."""
        on_jetson = self.which("jetson_clocks") is not None or self.read("etc/nv_tegra_release") is not None
        if not on_jetson:
            return None
        out = self.run("jetson_clocks", "--show")
        if out:
            on = parse_jetson_clocks(out)
            if on is not None:
                return {"on": on, "source": "jetson_clocks --show"}
        # without root: the CPUs' frequency floor at their maximum is what jetson_clocks sets
        cpus = sorted(glob.glob(str(self.file("sys/devices/system/cpu") / "cpu[0-9]*" / "cpufreq")))
        pairs = []
        for d in cpus:
            lo, hi = self.read(f"{d[len(str(self.root)):]}/scaling_min_freq"), \
                self.read(f"{d[len(str(self.root)):]}/cpuinfo_max_freq")
            if lo and hi and lo.strip().isdigit() and hi.strip().isdigit():
                pairs.append(int(lo) == int(hi))
        if pairs:
            return {"on": all(pairs), "source": "cpufreq scaling_min_freq == cpuinfo_max_freq (CPUs only)"}
        return None

    def cpu(self) -> Dict[str, Any]:
        fields = parse_cpuinfo(self.read("proc/cpuinfo") or "")
        model = next((fields[k] for k in ("model name", "Model", "Hardware", "cpu model") if fields.get(k)), None)
        if model is None and "CPU implementer" in fields:
            model = f"ARM implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
        flags = set((fields.get("flags") or fields.get("Features") or "").split())
        known = _X86_FLAGS if "flags" in fields else _ARM_FLAGS
        return {"model": model or platform.processor() or platform.machine() or None, "arch": platform.machine(),
                "logical_cpus": os.cpu_count() or 1, "flags": [f for f in known if f in flags]}

    def gpu(self) -> Optional[List[str]]:
        out = self.run("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader")
        if not out:
            return None
        return [line.strip() for line in out.splitlines() if line.strip()] or None


def doctor(probe: Optional[Probe] = None) -> Dict[str, Any]:
    """Everything `mmedge doctor` reports, as one JSON-able dict."""
    p = probe or Probe()
    l4t = p.l4t()
    jetpack = jetpack_of(l4t) if l4t else None
    major = jetpack.split(".")[0].split()[0] if jetpack else None
    report: Dict[str, Any] = {
        "board": p.board(),
        "jetson": l4t is not None,
        "l4t": l4t,
        "jetpack": jetpack,
        "tensorrt": p.tensorrt(),
        "cuda": p.cuda(),
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "dla_cores": p.dla_cores(),
        "power_mode": p.power_mode(),
        "jetson_clocks": p.jetson_clocks(),
        "cpu": p.cpu(),
        "gpu": p.gpu(),
    }
    advice: List[str] = []
    want = JETPACK_RUNTIME.get(major or "")
    if l4t is not None and want is None:
        advice.append(f"JetPack {jetpack or '?'} (L4T {l4t}) is not one mmedge's Jetson bundle installs on "
                      f"(JetPack 5, 6 or 7)")
    if want is not None:
        advice.append(f"install with the bundle's install.sh (requirements-jetpack{major}.txt: Python {want['python']}, "
                      f"TensorRT {want['tensorrt']}, {want['cuda_python']})")
        py = ".".join(platform.python_version_tuple()[:2])
        if py != want["python"]:
            advice.append(f"this is Python {py}; JetPack {major}'s TensorRT bindings are for Python {want['python']}")
    if report["dla_cores"] == 0 and l4t is not None:
        advice.append("no DLA on this board: leave DLA_CORE unset when building engines")
    clocks = report["jetson_clocks"]
    if clocks is not None and not clocks["on"]:
        advice.append("jetson_clocks is off: latency varies with DVFS; `sudo jetson_clocks` before profiling")
    report["advice"] = advice
    report["notes"] = list(p.notes)
    return report


def render(report: Dict[str, Any]) -> str:
    """The text `mmedge doctor` prints: one `key: value` line per probe."""

    def ver(v: Optional[Dict[str, Any]]) -> str:
        return f"{v['version']} ({v['source']})" if v else NOT_FOUND

    pm = report["power_mode"]
    power = NOT_FOUND if not pm else pm["name"] if pm["id"] is None else f"{pm['name']} (mode {pm['id']})"
    clocks = report["jetson_clocks"]
    cpu = report["cpu"]
    lines = [
        f"board:         {report['board'] or NOT_FOUND}",
        f"L4T:           {report['l4t'] or NOT_FOUND}",
        f"JetPack:       {report['jetpack'] or NOT_FOUND}",
        f"TensorRT:      {ver(report['tensorrt'])}",
        f"CUDA:          {ver(report['cuda'])}",
        f"Python:        {report['python']['version']} ({report['python']['executable']})",
        f"DLA cores:     {NOT_FOUND if report['dla_cores'] is None else report['dla_cores']}",
        f"power mode:    {power}",
        f"jetson_clocks: {NOT_FOUND if not clocks else ('on' if clocks['on'] else 'off') + ' (' + clocks['source'] + ')'}",
        f"CPU:           {cpu['model'] or NOT_FOUND} ({cpu['arch']}, {cpu['logical_cpus']} logical; "
        f"flags: {' '.join(cpu['flags']) or 'none of note'})",
        f"GPU:           {'; '.join(report['gpu']) if report['gpu'] else NOT_FOUND}",
    ]
    lines += [f"advice: {a}" for a in report["advice"]]
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def machine_facts(probe: Optional[Probe] = None) -> Dict[str, Any]:
    """What `mmedge profile` adds to its machine section: the power mode, jetson_clocks, L4T."""
    p = probe or Probe()
    pm = p.power_mode()
    clocks = p.jetson_clocks()
    return {"l4t": p.l4t(), "power_mode": pm["name"] if pm else None,
            "power_mode_id": pm["id"] if pm else None, "jetson_clocks": clocks["on"] if clocks else None}


# ------------------------------------------------------------------ tegrastats
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")


def parse_tegrastats(line: str) -> Optional[Dict[str, Any]]:
    """One tegrastats line -> {"ram_used_mb", "ram_total_mb", "swap_used_mb", "gpu_pct", "rails_mw"}.

    Formats: JetPack 5/6 Orin `RAM 2448/7620MB (lfb ...) SWAP 0/3810MB ... GR3D_FREQ 0%@[305] ...
    VDD_IN 4521mW/4521mW VDD_CPU_GPU_CV 612mW/612mW VDD_SOC 1431mW/1431mW`; Xavier (JetPack 5)
    `... GR3D_FREQ 0%@1377 ... GPU 0/0 CPU 308/308 SOC 1234/1234 CV 0/0 VDDRQ 154/154 SYS5V 1654/1654`
    (current/average mW). None for a line without RAM."""
    ram = _RAM.search(line)
    if not ram:
        return None
    out: Dict[str, Any] = {"ram_used_mb": int(ram.group(1)), "ram_total_mb": int(ram.group(2))}
    swap = _SWAP.search(line)
    out["swap_used_mb"] = int(swap.group(1)) if swap else None
    gpu = _GR3D.search(line)
    out["gpu_pct"] = int(gpu.group(1)) if gpu else None
    rails: Dict[str, int] = {}
    for m in re.finditer(r"\b([A-Za-z][A-Za-z0-9_]*) (\d+)mW/(\d+)mW", line):
        rails[m.group(1)] = int(m.group(2))
    if not rails:  # older format: NAME cur/avg without units, after the RAM/CPU fields
        tail = line[ram.end():]
        for m in re.finditer(r"\b(GPU|CPU|SOC|CV|VDDRQ|SYS5V|VDD_IN|POM_5V_IN|POM_5V_GPU|POM_5V_CPU) (\d+)/(\d+)\b",
                             tail):
            rails[m.group(1)] = int(m.group(2))
    out["rails_mw"] = rails
    return out


def summarise_tegrastats(samples: List[Dict[str, Any]], interval_ms: int) -> Dict[str, Any]:
    def stats(values: List[float]) -> Optional[Dict[str, float]]:
        if not values:
            return None
        return {"min": min(values), "mean": round(sum(values) / len(values), 1), "max": max(values)}

    rails: Dict[str, Dict[str, float]] = {}
    for name in sorted({n for s in samples for n in s["rails_mw"]}):
        rails[name] = stats([s["rails_mw"][name] for s in samples if name in s["rails_mw"]]) or {}
    return {"samples": len(samples), "interval_ms": interval_ms,
            "ram_used_mb": stats([s["ram_used_mb"] for s in samples]),
            "ram_total_mb": samples[-1]["ram_total_mb"] if samples else None,
            "swap_used_mb": stats([s["swap_used_mb"] for s in samples if s["swap_used_mb"] is not None]),
            "gpu_pct": stats([s["gpu_pct"] for s in samples if s["gpu_pct"] is not None]),
            "rails_mw": rails}


class TegraStats:
    """`with TegraStats() as ts: ...` samples tegrastats in the background (no-op where it is not
    installed: `ts.summary()` is then None). The process is stopped on exit, errors included."""

    def __init__(self, interval_ms: int = 100, path: Optional[str] = None,
                 which: Callable[..., Optional[str]] = shutil.which) -> None:
        self.interval_ms = interval_ms
        self.exe = which("tegrastats", path=path)
        self.samples: List[Dict[str, Any]] = []
        self.error: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "TegraStats":
        if self.exe is None:
            return self
        try:
            self._proc = subprocess.Popen([self.exe, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        except OSError as e:
            self.error = f"tegrastats did not start: {e.__class__.__name__}"
            return self
        self._thread = threading.Thread(target=self._read, name="mmedge-tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            sample = parse_tegrastats(raw.decode("utf-8", "replace"))
            if sample is not None:
                sample["t"] = time.monotonic()
                self.samples.append(sample)

    def __exit__(self, *exc: Any) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def summary(self) -> Optional[Dict[str, Any]]:
        if self.exe is None:
            return None
        out = summarise_tegrastats(list(self.samples), self.interval_ms)
        if self.error:
            out["error"] = self.error
        return out
