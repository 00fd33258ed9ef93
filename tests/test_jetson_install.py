"""The Jetson bundle installs offline from its own files; `mmedge doctor`; tegrastats in profiles.

Nothing here runs on a Jetson: the board is a folder (etc/nv_tegra_release, dev/, sys/,
usr/local/cuda) and shell scripts standing in for nvpmodel, jetson_clocks and tegrastats.
The slow test installs the bundle into a fresh Python 3.8 venv (pyenv) and runs
`mmedge parity` there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from mmedge.export.jetson import BUNDLE_DIR, INSTALL_SCRIPT, build_wheel, verify_bundle
from mmedge.export.package import PackageRequest, packager
from mmedge.runtime import device

ROOT = Path(__file__).resolve().parents[1]
NV_TEGRA_R35 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
TEGRA_LINE = ("RAM 2448/7620MB (lfb 1x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729] EMC_FREQ 0% "
              "GR3D_FREQ {gpu}%@[305] VDD_IN {vin}mW/4521mW VDD_CPU_GPU_CV 612mW/612mW VDD_SOC 1431mW/1431mW")


def requires_onnx_tools() -> None:
    """`package jetson` lints with onnx and calibrates with ONNX Runtime: the bundle tests need both
    (the doctor, tegrastats and wheel tests here need neither)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def bundle(cli_onnx: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    requires_onnx_tools()
    out = tmp_path_factory.mktemp("jetson-install") / "b.tar.gz"
    return packager("jetson")(PackageRequest([cli_onnx["soundnet"]], out, {"int8": False, "fp16_onnx": False,
                                                                           "log": lambda s: None}))


@pytest.fixture(scope="module")
def unpacked(bundle: Path) -> Path:
    dest = bundle.parent / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    return dest / BUNDLE_DIR


# ------------------------------------------------------------------ what the bundle carries
def test_bundle_carries_the_wheel_requirements_and_install_script(bundle: Path, unpacked: Path) -> None:
    doc = json.loads((unpacked / "bundle.json").read_text())
    inst = doc["install"]
    wheel = unpacked / inst["mmedge_wheel"]
    assert wheel.is_file() and wheel.name.startswith("mmedge-") and wheel.name.endswith("-py3-none-any.whl")
    assert inst["hardware_tested"] is False and inst["requirements"] == {
        "5": "requirements-jetpack5.txt", "6": "requirements-jetpack6.txt", "7": "requirements-jetpack7.txt"}
    reqs = {jp: (unpacked / name).read_text() for jp, name in inst["requirements"].items()}
    version = wheel.name.split("-")[1]
    for text in reqs.values():
        assert f"mmedge=={version}" in text.splitlines()
        for line in text.splitlines():
            if line.startswith("cuda-python"):
                assert "<" in line.split("#")[0], line  # never an unpinned cuda-python
    assert "numpy<1.24" in reqs["5"] and "cuda-python>=11.8,<12" in reqs["5"] and "Python 3.8" in reqs["5"]
    assert "cuda-python>=12,<13" in reqs["6"] and "Python 3.10" in reqs["6"] and "TensorRT 10.3" in reqs["6"]
    assert "Python 3.12" in reqs["7"] and "TensorRT 10.13" in reqs["7"]
    assert os.access(unpacked / INSTALL_SCRIPT, os.X_OK)
    assert "tested_flags_for" not in json.dumps(doc) and doc["tensorrt"]["flags_checked_against_parser"]
    readme = (unpacked / "README.md").read_text()
    assert "Nothing in this bundle has run on a Jetson" in readme and "mmedge doctor" in readme
    assert "pip install --no-index --find-links wheels/" in readme
    assert verify_bundle(bundle) == bundle


def test_with_wheels_adds_a_folder_of_wheels(cli_onnx: dict[str, Path], tmp_path: Path) -> None:
    requires_onnx_tools()
    extra = tmp_path / "deps"
    extra.mkdir()
    (extra / "fake_dep-1.0-py3-none-any.whl").write_bytes(b"PK")
    (extra / "mmedge-0.0.1-py3-none-any.whl").write_bytes(b"not ours")  # the bundle's own wheel wins
    out = packager("jetson")(PackageRequest([cli_onnx["soundnet"]], tmp_path / "b.tar.gz",
                                            {"int8": False, "fp16_onnx": False, "with_wheels": extra,
                                             "log": lambda s: None}))
    with tarfile.open(out) as tar:
        names = sorted(n for n in tar.getnames() if "/wheels/" in n)
    assert [Path(n).name for n in names][0] == "fake_dep-1.0-py3-none-any.whl"
    assert not any(n.endswith("mmedge-0.0.1-py3-none-any.whl") for n in names) and len(names) == 2
    with pytest.raises(Exception, match="not a folder"):
        packager("jetson")(PackageRequest([cli_onnx["soundnet"]], tmp_path / "c.tar.gz",
                                          {"int8": False, "fp16_onnx": False, "with_wheels": tmp_path / "none"}))


def test_wheel_is_reproducible(tmp_path: Path) -> None:
    """Two processes build the same bytes (SOURCE_DATE_EPOCH): bundles stay byte-identical."""
    code = ("import sys; from pathlib import Path; from mmedge.export.jetson import build_wheel; "
            "print(build_wheel(Path(sys.argv[1])))")
    first = Path(subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True,
                                check=True).stdout.strip())
    second = build_wheel(tmp_path / "b")
    assert first.name == second.name
    # byte-identical for identical sources; compared entry by entry, since the sources may change
    # between the two builds while other work goes on in the checkout
    import zipfile

    with zipfile.ZipFile(first) as a, zipfile.ZipFile(second) as b:
        ia, ib = a.infolist(), b.infolist()
        assert [i.filename for i in ia] == [i.filename for i in ib]
        for x, y in zip(ia, ib):
            assert x.date_time == y.date_time == (2020, 1, 1, 0, 0, 0) and x.external_attr == y.external_attr


# ------------------------------------------------------------------ install.sh
def _fake_python(tmp_path: Path, version: str) -> tuple[Path, Path]:
    log = tmp_path / "pip.log"
    py = _script(tmp_path / "python", f"""\
        if [[ "$1" == -c && "$2" == *version_info* ]]; then echo {version}; exit 0; fi
        if [[ "$1" == -c && "$2" == *tensorrt* ]]; then exit 1; fi
        if [[ "$1" == -m && "$2" == pip ]]; then
          echo "ARGS: $*" >>"{log}"
          while [[ $# -gt 0 ]]; do if [[ "$1" == -r ]]; then cat "$2" >>"{log}"; fi; shift; done
          exit 0
        fi
        exit 0
        """)
    return py, log


@pytest.mark.parametrize("release,jetpack,python", [("R35", "5", "3.8"), ("R36", "6", "3.10"), ("R38", "7", "3.12")])
def test_install_script_picks_the_requirements_by_l4t(unpacked: Path, tmp_path: Path, release: str, jetpack: str,
                                                      python: str) -> None:
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(NV_TEGRA_R35.replace("R35", release))
    py, log = _fake_python(tmp_path, python)
    res = subprocess.run(["bash", str(unpacked / INSTALL_SCRIPT)], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": str(py), "NV_TEGRA_RELEASE": str(rel)})
    assert res.returncode == 0, res.stderr
    text = log.read_text()
    assert f"--no-index --find-links {unpacked}/wheels" in text
    assert f"JetPack {jetpack}" in text and "mmedge==" in text and "cuda-python>=" in text
    assert "TensorRT's Python bindings do not import" in res.stderr


def test_install_script_overrides_and_refusals(unpacked: Path, tmp_path: Path) -> None:
    script = str(unpacked / INSTALL_SCRIPT)
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(NV_TEGRA_R35)
    py, log = _fake_python(tmp_path, "3.8")
    base = {**os.environ, "PYTHON": str(py), "NV_TEGRA_RELEASE": str(rel)}
    res = subprocess.run(["bash", script], capture_output=True, text=True,
                         env={**base, "CUDA": "0", "ONNXRUNTIME": "1"})
    assert res.returncode == 0, res.stderr
    assert "cuda-python" not in log.read_text() and "onnxruntime" in log.read_text()
    res = subprocess.run(["bash", script], capture_output=True, text=True, env={**base, "JETPACK": "6"})
    assert res.returncode == 1 and "Python 3.8" in res.stderr and "3.10" in res.stderr
    res = subprocess.run(["bash", script], capture_output=True, text=True, env={**base, "JETPACK": "6",
                                                                                 "ANY_PYTHON": "1"})
    assert res.returncode == 0 and "requirements-jetpack6.txt" in res.stderr
    rel.write_text(NV_TEGRA_R35.replace("R35", "R32"))
    res = subprocess.run(["bash", script], capture_output=True, text=True, env=base)
    assert res.returncode == 1 and "'32'" in res.stderr and "JETPACK=" in res.stderr
    res = subprocess.run(["bash", script], capture_output=True, text=True,
                         env={**base, "NV_TEGRA_RELEASE": str(tmp_path / "missing")})
    assert res.returncode == 1 and "not a Jetson" in res.stderr
    res = subprocess.run(["bash", script], capture_output=True, text=True, env={**base, "JETPACK": "4"})
    assert res.returncode == 1 and "expected 5, 6 or 7" in res.stderr


def test_install_script_passes_shellcheck(unpacked: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    res = subprocess.run(["shellcheck", "--severity=style", str(unpacked / INSTALL_SCRIPT)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout


def test_no_unpinned_cuda_python_in_the_project() -> None:
    import re

    for path in [ROOT / "README.md", ROOT / "pyproject.toml", *ROOT.glob("benchmarks/*"), *ROOT.glob("export/*.py")]:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            for m in re.finditer(r"cuda-python(?!\w)(\S*)", line):
                if ("(" in line[max(0, m.start() - 40):m.start()] and "bindings" in line) or "grep" in line:
                    continue  # prose naming the package, or install.sh filtering it out: not an install line
                tail = m.group(1)
                if "pip install" in line or tail.startswith(("'", '"', ">", "<", "=")):
                    assert "<" in tail or "<" in line[m.end():m.end() + 12], f"{path.name}: {line.strip()}"


# ------------------------------------------------------------------ mmedge doctor
@pytest.fixture
def board(tmp_path: Path) -> tuple[Path, Path]:
    root, bin_ = tmp_path / "root", tmp_path / "bin"
    for d in ("etc", "dev", "usr/local/cuda", "usr/lib/aarch64-linux-gnu", "proc/device-tree",
              "sys/devices/system/cpu/cpu0/cpufreq", "sys/devices/platform/bus@0/15880000.nvdla0"):
        (root / d).mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(NV_TEGRA_R35)
    (root / "dev/nvhost-nvdla0").write_text("")
    (root / "dev/nvhost-nvdla1").write_text("")
    (root / "dev/nvhost-ctrl-nvdla0").write_text("")
    (root / "usr/local/cuda/version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "11.4.19"}}))
    (root / "usr/lib/aarch64-linux-gnu/libnvinfer.so.8.5.2").write_text("")
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    (root / "proc/cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimdhp asimddp\n"
                                       "CPU implementer\t: 0x41\nCPU part\t: 0xd42\n")
    bin_.mkdir()
    _script(bin_ / "nvpmodel", 'echo "NV Power Mode: MAXN"; echo 0\n')
    _script(bin_ / "jetson_clocks", """\
        echo "SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit"
        echo "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0"
        echo "cpu1: Online=0 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=0"
        echo "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000"
        echo "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1"
        """)
    return root, bin_


def test_doctor_reads_a_jetson(board: tuple[Path, Path]) -> None:
    root, bin_ = board
    r = device.doctor(device.Probe(root, path=str(bin_), import_modules=False))
    assert r["jetson"] and r["l4t"] == "35.4.1" and r["jetpack"] == "5.1.2"
    assert r["tensorrt"] == {"version": "8.5.2", "source": "/usr/lib/aarch64-linux-gnu/libnvinfer.so.8.5.2"}
    assert r["cuda"]["version"] == "11.4.19" and r["dla_cores"] == 2
    assert r["power_mode"] == {"name": "MAXN", "id": 0}
    assert r["jetson_clocks"] == {"on": False, "source": "jetson_clocks --show"}  # EMC is not locked
    assert r["board"] == "NVIDIA Jetson AGX Orin Developer Kit" and "asimdhp" in r["cpu"]["flags"]
    assert any("requirements-jetpack5.txt" in a for a in r["advice"])
    text = device.render(r)
    assert "JetPack:       5.1.2" in text and "power mode:    MAXN (mode 0)" in text and "DLA cores:     2" in text


def test_doctor_on_orin_nano_and_without_root(board: tuple[Path, Path]) -> None:
    root, bin_ = board
    for p in (root / "dev").iterdir():
        p.unlink()
    shutil.rmtree(root / "sys/devices/platform")
    (root / "etc/nv_tegra_release").write_text(NV_TEGRA_R35.replace("R35", "R36").replace("4.1", "4.3"))
    _script(bin_ / "jetson_clocks", 'echo "must be run as root" >&2; exit 1\n')
    cpufreq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    (cpufreq / "scaling_min_freq").write_text("1510400\n")
    (cpufreq / "cpuinfo_max_freq").write_text("1510400\n")
    r = device.doctor(device.Probe(root, path=str(bin_), import_modules=False))
    assert r["jetpack"] == "6.2" and r["dla_cores"] == 0
    assert r["jetson_clocks"]["on"] is True and "cpufreq" in r["jetson_clocks"]["source"]
    assert any("no DLA" in a for a in r["advice"]) and any("jetson_clocks --show" in n for n in r["notes"])


def test_doctor_with_nothing_found_never_raises(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("garbage\n")
    empty = tmp_path / "bin"
    empty.mkdir()
    r = device.doctor(device.Probe(tmp_path, path=str(empty), import_modules=False))
    assert r["l4t"] is None and r["tensorrt"] is None and r["cuda"] is None and r["power_mode"] is None
    assert "not found" in device.render(r) and any("unrecognised" in n for n in r["notes"])
    r = device.doctor(device.Probe(tmp_path / "nothing", path=str(empty), import_modules=False))
    assert r["jetson"] is False and r["dla_cores"] is None and r["jetson_clocks"] is None


def test_jetpack_table_and_parsers() -> None:
    assert device.jetpack_of("35.2.1") == "5.1" and device.jetpack_of("36.4.0") == "6.1"
    assert device.jetpack_of("36.9.9") == "6" and device.jetpack_of("99.1") is None
    assert device.parse_nv_tegra_release("# R36 (release), REVISION: 4.3, GCID: 1") == "36.4.3"
    assert device.parse_nvpmodel("NVPM WARN: x\nNV Power Mode: 15W\n2\n") == {"name": "15W", "id": 2}
    assert device.parse_jetson_clocks("nothing") is None
    xavier = ("RAM 1820/31928MB (lfb 7183x4MB) SWAP 0/15964MB (cached 0MB) CPU [2%@1190] EMC_FREQ 0% "
              "GR3D_FREQ 7%@1377 APE 150 GPU 0/0 CPU 308/308 SOC 1234/1234 CV 0/0 VDDRQ 154/154 SYS5V 1654/1654")
    s = device.parse_tegrastats(xavier)
    assert s["ram_used_mb"] == 1820 and s["gpu_pct"] == 7 and s["rails_mw"]["SYS5V"] == 1654
    assert device.parse_tegrastats("no stats here") is None


def test_cli_doctor(capsys: pytest.CaptureFixture[str]) -> None:
    from mmedge.cli import run

    assert run(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"l4t", "jetpack", "tensorrt", "cuda", "python", "dla_cores", "power_mode", "jetson_clocks"} <= set(doc)
    assert run(["doctor"]) == 0 and "Python:" in capsys.readouterr().out


# ------------------------------------------------------------------ tegrastats and power mode in profiles
def _fake_tegrastats(bin_: Path) -> None:
    lines = "\n".join(f'  echo "{TEGRA_LINE.format(gpu=g, vin=4000 + 100 * g)}"; sleep 0.05' for g in range(4))
    _script(bin_ / "tegrastats", f'[[ "$1" == --interval ]] || exit 2\nwhile true; do\n{lines}\ndone\n')


def test_tegrastats_sampler(tmp_path: Path) -> None:
    import time

    _fake_tegrastats(tmp_path)
    with device.TegraStats(path=str(tmp_path)) as ts:
        time.sleep(0.5)
    s = ts.summary()
    assert s["samples"] >= 3 and s["ram_used_mb"]["max"] == 2448 and s["ram_total_mb"] == 7620
    assert 4000 <= s["rails_mw"]["VDD_IN"]["mean"] <= 4300 and s["gpu_pct"]["max"] <= 3
    assert ts._proc.poll() is not None  # stopped
    with device.TegraStats(path=str(tmp_path / "none")) as ts:
        pass
    assert ts.summary() is None


def test_profile_records_power_mode_and_tegrastats(cli_onnx: dict[str, Path], board: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")  # the profile runs the ONNX artifact
    from mmedge.runtime import profiler as P

    _, bin_ = board
    _fake_tegrastats(bin_)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    result = P.profile([cli_onnx["soundnet"]], P.ProfileOptions(runs=2, warmup=0))
    doc = P.validate_json(json.loads(json.dumps(result.to_json())))
    assert doc["machine"]["power_mode"] == "MAXN" and doc["machine"]["power_mode_id"] == 0
    assert doc["machine"]["jetson_clocks"] is False
    assert doc["environment"]["tegrastats"]["interval_ms"] == 100


# ------------------------------------------------------------------ the real thing, on Python 3.8
def _python38() -> Path | None:
    pyenv = shutil.which("pyenv")
    roots = [Path(subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip())] if pyenv else []
    roots.append(Path.home() / ".pyenv")
    for r in roots:
        exe = r / "versions" / "3.8.18" / "bin" / "python"
        if exe.is_file():
            return exe
    return None


@pytest.mark.slow
def test_bundle_installs_offline_on_python_3_8_and_runs_parity(cli_onnx: dict[str, Path], tmp_path: Path) -> None:
    """JetPack 5's Python: a fresh 3.8 venv, install.sh from the bundle's own wheels only (the
    dependencies were given with --with-wheels, as for a board without an index), then parity."""
    requires_onnx_tools()
    py38 = _python38()
    if py38 is None:
        pytest.skip("Python 3.8.18 is not installed with pyenv ($(pyenv root)/versions/3.8.18)")
    venv = tmp_path / "venv"
    subprocess.run([str(py38), "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    own = build_wheel(tmp_path / "own")
    deps = tmp_path / "deps"
    # what the board would get from the bundle: downloaded here for this Python (cp38, this platform)
    dl = subprocess.run([str(vpy), "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(deps), str(own),
                         "numpy<1.24", "onnxruntime"], capture_output=True, text=True)
    assert dl.returncode == 0, dl.stdout + dl.stderr
    out = packager("jetson")(PackageRequest([cli_onnx["soundnet"]], tmp_path / "b.tar.gz",
                                            {"int8": False, "fp16_onnx": False, "with_wheels": deps,
                                             "log": lambda s: None}))
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    root = tmp_path / "x" / BUNDLE_DIR
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update({"JETPACK": "5", "PYTHON": str(vpy), "CUDA": "0", "ONNXRUNTIME": "1", "PIP_CONFIG_FILE": os.devnull,
                "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    res = subprocess.run(["bash", str(root / INSTALL_SCRIPT)], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    parity = subprocess.run([str(venv / "bin" / "mmedge"), "parity", "--artifact",
                             str(root / "artifacts" / "soundnet-tiny-onnx-fp32")], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert parity.returncode == 0, parity.stdout + parity.stderr
    assert "ok" in parity.stdout
    ver = subprocess.run([str(vpy), "-c", "import numpy, sys; print(sys.version_info[:2], numpy.__version__)"],
                         capture_output=True, text=True, env=env)
    assert ver.stdout.startswith("(3, 8)") and ver.stdout.split()[-1] < "1.24"
