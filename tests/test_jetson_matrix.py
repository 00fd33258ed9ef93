"""build_engines.sh against TensorRT's support matrix, table-driven (fake trtexec, no GPU).

For each TensorRT release a Jetson may run (8.5, 8.6, 10.3, 10.7, 10.8, 11.1, 11.4, 11.4.1) x
the board's DLA cores (0: Orin Nano, 2: AGX Orin / Orin NX) x DLA requested or not, the script
either issues exactly the expected trtexec flags or stops with exactly one line. The Python
builder's `plan_build` takes the same decisions from the same table (mmedge.export.trt_matrix).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmedge.calibration.data import CalibSource
from mmedge.calibration.packaging import package
from mmedge.calibration.recipes import QuantConfig
from mmedge.errors import ExportError, InputError
from mmedge.export import tensorrt as trtexp
from mmedge.export import trt_matrix
from mmedge.export.jetson import BUNDLE_DIR, SCRIPT
from mmedge.export.package import PackageRequest, packager

FAKE_TRTEXEC = """#!/usr/bin/env bash
if [[ "${1:-}" == --help ]]; then
  echo "&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec --help"
  exit 0
fi
printf '%s\\x1f' "$@" >>"$FAKE_LOG"
printf '\\n' >>"$FAKE_LOG"
for a in "$@"; do
  case "$a" in --saveEngine=*) echo fake-engine >"${a#--saveEngine=}" ;; esac
done
"""
AGX = "NVIDIA Jetson AGX Orin Developer Kit"
NO_DLA = ("build_engines.sh: error: TensorRT {v} does not support DLA (NVIDIA's support matrix: DLA up to 10.7, "
          "then from 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+); set DLA_CORE= to build for the GPU")
NO_CORES = ("build_engines.sh: error: DLA_CORE=0: this board has no DLA (Jetson Orin Nano has none); set DLA_CORE= "
            "to build for the GPU (DLA_COUNT overrides the count)")

# version -> (DLA in the matrix, fp16/int8 strongly typed, build-only flag, INT64 engine inputs)
MATRIX = {
    "8.5": (True, False, "--buildOnly", False),
    "8.6": (True, False, "--skipInference", False),
    "10.3": (True, False, "--skipInference", True),
    "10.7": (True, False, "--skipInference", True),
    "10.8": (False, False, "--skipInference", True),
    "11.1": (False, True, "--skipInference", True),
    "11.4": (False, True, "--skipInference", True),  # 11.4.0: DLA on Windows on ARM only
    "11.4.1": (True, True, "--skipInference", True),  # Jetson AGX Orin, JetPack 7.2.2+
}


@pytest.fixture(scope="module")
def unpacked(cli_onnx: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")  # `package jetson` calibrates the int8 graphs with ONNX Runtime
    work = tmp_path_factory.mktemp("jetson-matrix")
    out = work / "b.tar.gz"
    opts = {"calib": CalibSource(size=8), "quant": QuantConfig(cache_dir=work / "cache")}
    package("jetson", PackageRequest([cli_onnx["captioner"]], out, opts))
    with tarfile.open(out) as tar:
        tar.extractall(work / "x", filter="data")
    return work / "x" / BUNDLE_DIR


def run_script(root: Path, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[dict[str, str]]]:
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    full = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "FAKE_LOG": str(log), "OUT": str(tmp_path / "engines"),
            "PYTHON": "false", "HOME": str(tmp_path), "JETSON_MODEL": AGX, **env}
    res = subprocess.run(["bash", str(root / SCRIPT)], capture_output=True, text=True, env=full, timeout=60)
    calls = [dict(a.split("=", 1) if "=" in a else (a, "") for a in line.split("\x1f")[:-1])
             for line in log.read_text().splitlines()]
    return res, calls


def _engine(call: dict[str, str]) -> str:
    p = Path(call.get("--saveEngine") or call["--loadEngine"])
    return f"{p.parent.name}/{p.stem}"


@pytest.mark.parametrize("dla_count", [0, 2])
@pytest.mark.parametrize("version", list(MATRIX))
@pytest.mark.parametrize("want_dla", [False, True])
def test_script_follows_the_support_matrix(unpacked: Path, tmp_path: Path, version: str, dla_count: int,
                                           want_dla: bool) -> None:
    has_dla, typed, build_only, _ = MATRIX[version]
    env = {"TRT_VERSION": version, "DLA_COUNT": str(dla_count), "PRECISIONS": "fp32 fp16 int8"}
    if want_dla:
        env["DLA_CORE"] = "0"
    res, calls = run_script(unpacked, tmp_path, **env)
    if want_dla and not has_dla:
        assert res.returncode == 1 and res.stderr.strip().splitlines()[-1] == NO_DLA.format(v=version)
        assert not calls and len([x for x in res.stderr.splitlines() if "error" in x]) == 1
        with pytest.raises(ExportError, match="does not support DLA"):
            trtexp.plan_build(version, trtexp.settings_from_options({"dla_core": 0}, "fp16"))
        return
    if want_dla and dla_count == 0:
        assert res.returncode == 1 and res.stderr.strip().splitlines()[-1] == NO_CORES and not calls
        return
    assert res.returncode == 0, res.stderr
    assert len(calls) == 3 * 3  # fp32 fp16 int8 x encoder, decoder_init, decoder_step
    by = {_engine(c): c for c in calls}
    dla = "-dla0" if want_dla else ""
    for c in calls:
        assert build_only in c and ("--buildOnly" if build_only != "--buildOnly" else "--skipInference") not in c
        assert ("--stronglyTyped" in c) == typed
        assert not ({"--fp16", "--int8", "--calib"} & set(c)) if typed else True
    enc16, enc8 = by[f"captioner-tiny-tensorrt-fp16{dla}/encoder"], by[f"captioner-tiny-tensorrt-int8{dla}/encoder"]
    fp32 = by["captioner-tiny-tensorrt-fp32/encoder"]
    assert "--useDLACore" not in fp32 and fp32["--maxShapes"] == "image:8x3x64x64"
    if typed:
        assert enc16["--onnx"].endswith("/fp16/captioner-tiny/encoder.onnx") and Path(enc16["--onnx"]).is_file()
        assert enc8["--onnx"].endswith("/captioner-tiny-onnx-int8/encoder.onnx")
    else:
        assert "--fp16" in enc16 and "--int8" not in enc16
        assert enc16["--onnx"].endswith("/captioner-tiny-onnx-fp32/encoder.onnx")
        assert "--int8" in enc8 and "--fp16" in enc8
    if want_dla:
        for e in (enc16, enc8):
            assert e["--useDLACore"] == "0" and "--allowGPUFallback" in e
            assert e["--minShapes"] == e["--optShapes"] == e["--maxShapes"] == "image:1x3x64x64"
        # <= 10: int8 on DLA from the fp32 graph + calibration cache; 11.4.1: Q/DQ, strongly typed
        assert ("--calib" in enc8) == (not typed)
        step = by[f"captioner-tiny-tensorrt-int8{dla}/decoder_step"]
        assert "--useDLACore" not in step and "--calib" not in step
    else:
        assert not any("--useDLACore" in c for c in calls)
        assert enc16["--maxShapes"] == "image:8x3x64x64" and "--calib" not in enc8
    plan = trtexp.plan_build(version, trtexp.settings_from_options({"dla_core": 0} if want_dla else {}, "int8"))
    assert plan.dla == want_dla and plan.strongly_typed == typed and plan.calibrator == (want_dla and not typed)


@pytest.mark.parametrize("env, line", [
    ({"TRT_VERSION": "11.4.1", "DLA_COUNT": "2", "JETSON_MODEL": "NVIDIA Jetson Orin NX Engineering Reference"},
     "build_engines.sh: error: TensorRT 11.4.1 supports DLA on Jetson AGX Orin only (JetPack 7.2.2+), not on "
     "'NVIDIA Jetson Orin NX Engineering Reference'; set DLA_CORE= to build for the GPU (JETSON_MODEL overrides "
     "the board)"),
    ({"TRT_VERSION": "10.3", "DLA_COUNT": "2", "DLA_CORE": "2"},
     "build_engines.sh: error: DLA_CORE=2: this board has 2 DLA cores (0-1); use one of them or set DLA_CORE= to "
     "build for the GPU"),
    ({"TRT_VERSION": "10.3", "DLA_COUNT": "two"}, "build_engines.sh: error: DLA_COUNT='two' is not a number"),
])
def test_dla_refusals_are_one_line(unpacked: Path, tmp_path: Path, env: dict[str, str], line: str) -> None:
    res, calls = run_script(unpacked, tmp_path, **{"DLA_CORE": "0", **env})
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [line] and not calls


def test_dla_count_is_read_from_the_board_when_not_given(unpacked: Path, tmp_path: Path) -> None:
    """Here (no Jetson) there are no nvdla devices: DLA_CORE=0 stops like on an Orin Nano."""
    if any(Path("/dev").glob("nvhost-nvdla*")) or any(Path("/sys/bus/platform/devices").glob("*nvdla*")):
        pytest.skip("this machine has DLA devices")
    res, calls = run_script(unpacked, tmp_path, TRT_VERSION="10.3", DLA_CORE="0")
    assert res.stderr.strip().splitlines() == [NO_CORES] and not calls


def test_release_table_of_the_python_plan() -> None:
    assert trt_matrix.release("10.7.0").dla == "yes" and trt_matrix.release("10.8").dla == "no"
    assert trt_matrix.release("11.4.0").dla == "no" and trt_matrix.release("11.4.1").dla == trt_matrix.AGX_ORIN
    with pytest.raises(ExportError, match="too old"):
        trt_matrix.release("8.4.3")


def test_python_plan_and_script_share_the_matrix(unpacked: Path) -> None:
    script = (unpacked / SCRIPT).read_text()
    assert trt_matrix.script_table() in script
    readme = (unpacked / "README.md").read_text()
    assert trt_matrix.markdown_table() in readme and "not on a Jetson" in readme


@pytest.mark.parametrize("version", ["8.6", "10.3", "11.1"])
def test_bench_loads_the_test_vectors_and_version_compatible_engines(unpacked: Path, tmp_path: Path,
                                                                     version: str) -> None:
    res, calls = run_script(unpacked, tmp_path, TRT_VERSION=version, BENCH="1", VERSION_COMPATIBLE="1",
                            PRECISIONS="fp16")
    assert res.returncode == 0, res.stderr
    builds = [c for c in calls if "--saveEngine" in c]
    benches = [c for c in calls if "--loadEngine" in c]
    assert len(builds) == len(benches) == 3 and all("--versionCompatible" in c for c in calls)
    int64 = MATRIX[version][3]
    vectors = np.load(unpacked / "artifacts/captioner-tiny-onnx-fp32/test_vectors.npz")
    for b in benches:
        graph = Path(b["--loadEngine"]).stem
        shapes = dict(s.split(":") for s in b["--shapes"].split(","))
        files = dict(s.split(":", 1) for s in b["--loadInputs"].split(","))
        assert set(files) == set(shapes)
        for name, file in files.items():
            ref = vectors[f"{graph}.{name}"]
            assert Path(file).is_file() and shapes[name] == "x".join(map(str, ref.shape))
            if ref.dtype == np.int64 and not int64:
                assert file.endswith(".i32.bin")
                got = np.fromfile(file, dtype="<i4")
            else:
                got = np.fromfile(file, dtype=ref.dtype.newbyteorder("<"))
            np.testing.assert_array_equal(got.reshape(ref.shape), ref)
    step = next(b for b in benches if b["--loadEngine"].endswith("decoder_step.engine"))
    assert "prev_word" in step["--loadInputs"]  # real word ids, not random ones outside the vocabulary


def test_shellcheck_passes_with_the_matrix(unpacked: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    res = subprocess.run(["shellcheck", "--severity=style", str(unpacked / SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_package_options_on_the_command_line(cli_onnx: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")  # `package jetson` needs it even without int8 (the TensorRT lint)
    from mmedge.cli import run

    out = tmp_path / "s.tar.gz"
    assert run(["package", "jetson", "--artifact", str(cli_onnx["soundnet"]), "--out", str(out), "--no-int8",
                "--no-fp16", "--batch", "1,2,4", "--workspace", "512", "--dla-core", "1",
                "--version-compatible"]) == 0
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    root = tmp_path / "x" / BUNDLE_DIR
    assert not (root / "fp16").exists() and not (root / "artifacts/soundnet-tiny-onnx-int8").exists()
    res, calls = run_script(root, tmp_path, TRT_VERSION="10.3", DLA_COUNT="2", PRECISIONS="fp16")
    assert res.returncode == 0, res.stderr
    (c,) = calls
    assert c["--useDLACore"] == "1" and "--versionCompatible" in c and c["--memPoolSize"] == "workspace:512"
    assert c["--optShapes"].startswith("waveform:2x")
    res, calls = run_script(root, tmp_path, TRT_VERSION="10.3", DLA_CORE="", PRECISIONS="fp16")
    assert res.returncode == 0 and "--useDLACore" not in calls[0]  # DLA_CORE= builds for the GPU
    res, calls = run_script(root, tmp_path, TRT_VERSION="11.1", PRECISIONS="fp16", DLA_CORE="")
    assert res.returncode == 0 and not calls and "bundle has no fp16 graphs" in res.stderr
    for bad, msg in ((["--batch", "4,2,8"], "MIN,OPT,MAX"), (["--dla-core", "99"], "dla_core")):
        with pytest.raises(InputError, match=msg):
            packager("jetson")(PackageRequest([cli_onnx["soundnet"]], tmp_path / "y.tar.gz",
                                              {"int8": False, **_opt(bad)}))
    assert run(["package", "mobile", "--artifact", str(cli_onnx["soundnet"]), "--out", str(tmp_path / "m.zip"),
                "--dla-core", "0"]) != 0


def _opt(argv: list[str]) -> dict[str, object]:
    key = argv[0].lstrip("-").replace("-", "_")
    return {key: int(argv[1]) if key == "dla_core" else argv[1]}
