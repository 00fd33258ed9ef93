"""Which reduced precisions this CPU computes fast: its matrix features and a short family label.

Whether int8 or bf16 pays depends on instructions, not on the vendor: int8 dot products
(x86 VNNI, AMX-INT8; Arm SDOT/UDOT, SMMLA/UMMLA) make int8 convolutions and matrix products
several times faster than fp32, bf16 ones (AVX512-BF16, AMX-BF16) about twice, and without
them int8 runs on emulation sequences that gain little. `export.precision_policy` maps the
family to a precision per target format (`mmedge export --precision auto`).

Read from Linux's /proc/cpuinfo ("flags" on x86, "Features" on Arm: the kernel lists a
feature only when the CPU has it and the kernel enables it, e.g. AMX needs Linux 5.16+) and,
for Jetson boards, /proc/device-tree/model or /etc/nv_tegra_release. The standard library
only, so tests feed it cpuinfo text from other machines (`from_cpuinfo`), and `detect(root)`
reads a fake root.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the features that decide precision, in the kernel's spelling
X86_FEATURES = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f",
                "avx2", "fma")
ARM_FEATURES = ("asimddp", "i8mm", "bf16", "sve", "asimdhp")
ARM_ALIASES = {"dotprod": "asimddp"}  # the Armv8.2 dot product's other name (compilers, macOS)
JETSON_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
TEGRA_RELEASE = "etc/nv_tegra_release"

# family -> what it means for reduced precision (most capable first within an architecture)
FAMILIES = {
    "x86-amx": "AMX tiles: int8 and bf16 matrix multiply",
    "x86-avx512-bf16": "AVX-512 with BF16 dot products and VNNI int8 (no AMX)",
    "x86-avx512-vnni": "AVX-512 with VNNI int8 dot products, no bf16",
    "x86-avx2-vnni": "AVX2 with AVX-VNNI int8 dot products (256-bit)",
    "x86-avx512": "AVX-512 without VNNI: int8 through multi-instruction sequences",
    "x86-avx2": "AVX2/FMA without VNNI: int8 through multi-instruction sequences",
    "x86": "x86 without AVX2",
    "arm64-i8mm": "Arm int8 matrix multiply (SMMLA/UMMLA) and dot products",
    "arm64-dotprod": "Arm int8 dot products (SDOT/UDOT), no int8 matrix multiply",
    "arm64": "Arm without int8 dot products",
    "jetson": "NVIDIA Jetson: the GPU (TensorRT) is the accelerator; the CPU is Arm",
    "other": "an architecture without a rule here",
}


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model, architecture and the precision-relevant features it reports."""

    arch: str  # "x86_64", "aarch64" or what the machine says
    model: str
    flags: frozenset = field(default_factory=frozenset)  # the subset of X86_FEATURES / ARM_FEATURES present
    board: str | None = None  # Jetson board model (device tree), else None

    def has(self, flag: str) -> bool:
        return ARM_ALIASES.get(flag, flag) in self.flags

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "i386")

    @property
    def is_arm64(self) -> bool:
        return self.arch in ("aarch64", "arm64")

    @property
    def int8_dot(self) -> bool:
        """int8 dot-product or matrix instructions: where int8 GEMMs/convolutions really speed up."""
        if self.is_x86:
            return any(self.has(f) for f in ("amx_int8", "avx512_vnni", "avx_vnni"))
        return self.is_arm64 and (self.has("asimddp") or self.has("i8mm"))

    @property
    def bf16(self) -> bool:
        """bf16 arithmetic instructions (OpenVINO's CPU plugin lists BF16 then)."""
        if self.is_x86:
            return self.has("amx_bf16") or self.has("avx512_bf16")
        return self.is_arm64 and self.has("bf16")

    @property
    def family(self) -> str:
        if self.board is not None:
            return "jetson"
        if self.is_x86:
            if self.has("amx_tile") and (self.has("amx_int8") or self.has("amx_bf16")):
                return "x86-amx"
            for flag, fam in (("avx512_bf16", "x86-avx512-bf16"), ("avx512_vnni", "x86-avx512-vnni"),
                              ("avx_vnni", "x86-avx2-vnni"), ("avx512f", "x86-avx512"), ("avx2", "x86-avx2")):
                if self.has(flag):
                    return fam
            return "x86"
        if self.is_arm64:
            return "arm64-i8mm" if self.has("i8mm") else "arm64-dotprod" if self.has("asimddp") else "arm64"
        return "other"

    def describe(self) -> str:
        """One line: model, family and the features found."""
        where = f" on {self.board}" if self.board else ""
        return (f"{self.model}{where} ({self.arch}): family {self.family} - "
                f"{' '.join(sorted(self.flags)) or 'no int8/bf16 matrix features'}")

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "model": self.model, "family": self.family, "flags": sorted(self.flags),
                "board": self.board, "int8_dot": self.int8_dot, "bf16": self.bf16}


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first value of every "key : value" line (the first processor's block, and Arm's trailer)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, val = line.partition(":")
        if sep and key.strip() and key.strip() not in fields:
            fields[key.strip()] = val.strip()
    return fields


def _model(fields: dict[str, str], arch: str) -> str:
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if "CPU implementer" in fields:
        return f"Arm implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return arch or "unknown"


def from_cpuinfo(text: str, board: str | None = None, tegra_release: str | None = None,
                 machine: str | None = None) -> CpuFeatures:
    """Features from a /proc/cpuinfo text. `board`: the device-tree model; a Jetson board
    (or any `tegra_release` text) makes the family "jetson". `machine`: the architecture when
    the text does not tell (default: x86 when it has a "flags" line, Arm with "Features")."""
    fields = parse_cpuinfo(text)
    if "flags" in fields:
        arch, known, words = machine or "x86_64", X86_FEATURES, fields["flags"].split()
    elif "Features" in fields:
        arch, known, words = machine or "aarch64", ARM_FEATURES, fields["Features"].split()
    else:
        arch, known, words = machine or platform.machine() or "unknown", (), []
    present = {ARM_ALIASES.get(w, w) for w in words}
    jetson = None
    if board and "jetson" in board.lower():
        jetson = board.strip()
    elif tegra_release and tegra_release.strip():
        jetson = (board or "").strip() or "NVIDIA Jetson (L4T)"
    return CpuFeatures(arch, _model(fields, arch), frozenset(f for f in known if f in present), jetson)


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_bytes().rstrip(b"\x00").decode("utf-8", "replace")
    except OSError:
        return None


def detect(root: str | Path = "/") -> CpuFeatures:
    """This machine's features (`root` replaces "/", for tests). Missing files give a CPU with no
    features (family "x86"/"arm64"/"other"): the conservative choice, never an error."""
    base = Path(root)
    board = next((b.strip() for b in (_read(base, f) for f in JETSON_FILES) if b and b.strip()), None)
    return from_cpuinfo(_read(base, "proc/cpuinfo") or "", board, _read(base, TEGRA_RELEASE),
                        platform.machine() if str(root) == "/" else None)
