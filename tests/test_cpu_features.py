"""runtime/cpu_features: CPU family and precision features from real machines' /proc/cpuinfo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmedge.runtime.cpu_features import FAMILIES, CpuFeatures, detect, from_cpuinfo, parse_cpuinfo

CPUINFO = Path(__file__).parent / "fixtures" / "cpuinfo"
ORIN_BOARD = "NVIDIA Jetson AGX Orin Developer Kit"

# fixture -> (family, model, flags found, int8 dot products, bf16)
EXPECTED = {
    "amd-epyc-zen3-kvm": ("x86-avx2", "AMD EPYC", {"avx2", "fma"}, False, False),
    "intel-xeon-8480-sapphire-rapids": (
        "x86-amx", "Intel(R) Xeon(R) Platinum 8480+",
        {"amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2", "fma"},
        True, True),
    "amd-epyc-9654-zen4": ("x86-avx512-bf16", "AMD EPYC 9654 96-Core Processor",
                           {"avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma"}, True, True),
    "intel-xeon-8260m-cascade-lake": ("x86-avx512-vnni", "Intel(R) Xeon(R) Platinum 8260M CPU @ 2.40GHz",
                                      {"avx512_vnni", "avx512f", "avx2", "fma"}, True, False),
    "intel-core-ultra9-285-arrow-lake": ("x86-avx2-vnni", "Intel(R) Core(TM) Ultra 9 285",
                                         {"avx_vnni", "avx2", "fma"}, True, False),
    "intel-xeon-6132-skylake": ("x86-avx512", "Intel(R) Xeon(R) Gold 6132 CPU @ 2.60GHz",
                                {"avx512f", "avx2", "fma"}, False, False),
    "intel-xeon-e5-2680v3-haswell": ("x86-avx2", "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz",
                                     {"avx2", "fma"}, False, False),
    "aws-graviton3-neoverse-v1": ("arm64-i8mm", "Arm implementer 0x41 part 0xd40",
                                  {"asimddp", "i8mm", "bf16", "sve", "asimdhp"}, True, True),
    "arm-neoverse-v2": ("arm64-i8mm", "Arm implementer 0x41 part 0xd4f",
                        {"asimddp", "i8mm", "bf16", "sve", "asimdhp"}, True, True),
    "aws-graviton2-neoverse-n1": ("arm64-dotprod", "Arm implementer 0x41 part 0xd0c", {"asimddp", "asimdhp"},
                                  True, False),
    "aws-graviton1-cortex-a72": ("arm64", "Arm implementer 0x41 part 0xd08", set(), False, False),
    "jetson-agx-orin-cortex-a78ae": ("arm64-dotprod", "Arm implementer 0x41 part 0xd42", {"asimddp", "asimdhp"},
                                     True, False),
}


def fixture(name: str) -> str:
    return (CPUINFO / f"{name}.txt").read_text()


def test_every_fixture_has_an_expectation() -> None:
    assert {p.stem for p in CPUINFO.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_family_and_features_of_real_cpus(name: str) -> None:
    family, model, flags, int8_dot, bf16 = EXPECTED[name]
    cpu = from_cpuinfo(fixture(name))
    assert (cpu.family, cpu.model, set(cpu.flags), cpu.int8_dot, cpu.bf16) == (family, model, flags, int8_dot, bf16)
    assert cpu.family in FAMILIES
    assert cpu.to_json()["family"] == family


def test_jetson_by_device_tree_model_or_tegra_release() -> None:
    text = fixture("jetson-agx-orin-cortex-a78ae")
    by_board = from_cpuinfo(text, board=ORIN_BOARD)
    assert (by_board.family, by_board.board, by_board.int8_dot) == ("jetson", ORIN_BOARD, True)
    by_release = from_cpuinfo(text, tegra_release="# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic")
    assert by_release.family == "jetson"
    # another Arm board's device tree is not a Jetson
    assert from_cpuinfo(text, board="Raspberry Pi 4 Model B Rev 1.4").family == "arm64-dotprod"


def test_detect_reads_a_fake_root(tmp_path: Path) -> None:
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "cpuinfo").write_text(fixture("jetson-agx-orin-cortex-a78ae"))
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(ORIN_BOARD.encode() + b"\x00")  # NUL-terminated
    cpu = detect(tmp_path)
    assert (cpu.family, cpu.board, cpu.arch) == ("jetson", ORIN_BOARD, "aarch64")


def test_missing_cpuinfo_is_conservative_not_an_error(tmp_path: Path) -> None:
    cpu = detect(tmp_path)
    assert cpu.flags == frozenset() and not cpu.int8_dot and not cpu.bf16
    assert cpu.family in ("x86", "arm64", "other")


def test_this_machine() -> None:
    cpu = detect()
    assert cpu.family in FAMILIES
    if Path("/proc/cpuinfo").is_file():
        assert cpu.model == from_cpuinfo(Path("/proc/cpuinfo").read_text()).model


def test_amx_needs_the_tile_feature() -> None:
    """amx_bf16 without amx_tile (a kernel that does not enable the tiles) is not an AMX machine."""
    flags = fixture("intel-xeon-8480-sapphire-rapids").replace(" amx_tile", "")
    assert from_cpuinfo(flags).family == "x86-avx512-bf16"


def test_dotprod_alias_and_first_block_only() -> None:
    text = "processor : 0\nFeatures : fp asimd dotprod\n\nprocessor : 1\nFeatures : fp asimd i8mm\n"
    assert parse_cpuinfo(text)["Features"] == "fp asimd dotprod"
    cpu = from_cpuinfo(text)
    assert cpu.family == "arm64-dotprod" and cpu.has("asimddp") and cpu.has("dotprod")


def test_frozen_and_hashable() -> None:
    cpu = from_cpuinfo(fixture("amd-epyc-9654-zen4"))
    with pytest.raises(AttributeError):
        cpu.model = "x"  # type: ignore[misc]
    assert cpu == CpuFeatures(cpu.arch, cpu.model, cpu.flags) and hash(cpu) == hash(from_cpuinfo(
        fixture("amd-epyc-9654-zen4")))
    assert "x86-avx512-bf16" in cpu.describe()


def test_imports_neither_numpy_nor_torch() -> None:
    code = ("import sys; import mmedge.runtime.cpu_features; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
