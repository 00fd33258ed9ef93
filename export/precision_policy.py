"""`mmedge export --precision auto`: the precision mix a CPU family runs fastest, per target format.

Whether int8 or bf16 pays is a property of the instructions (runtime/cpu_features.py), of the
backend's kernels and of the model's size, so the choice is a table, each row with the one-line
reason (a measurement, or what the instructions imply where none was made). For the captioner
the mix is per graph: `encoder`, and `decoder` (decoder_init + decoder_step). Where the
encoder is big (config full, tutorial checkpoints: ResNet-101) int8 pays on CPUs with int8 dot
products; the decoder's beam steps stream the decoder's weights at every step, so int8 weights
without calibrated activations (`--dynamic-decoder`: a quarter of the bytes) are preferred there
where they measured faster. The small demo/tiny models run slower in int8 (measured), so they stay fp32.

Core ML and TensorRT run on the device the artifact ships to (Apple Neural Engine/GPU, NVIDIA
GPU), not on the exporting CPU: their rows do not depend on the family.

The table is data (`CAPTIONER_ROWS`: one row per mix and reason, covering one or more families
and formats; `table()` indexes it and refuses a cell two rows claim); `choose()` reads it,
`auto_requests()` turns one `--precision auto` export request into one request per distinct mix
(formats sharing a mix are exported together, so an int8 group calibrates once), each recording
its choice in the manifest (`extra.precision_policy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from mmedge.errors import InputError
from mmedge.runtime.cpu_features import CpuFeatures

if TYPE_CHECKING:
    from mmedge.export.registry import ExportRequest, ExportResult

AUTO = "auto"
CPU_FORMATS = ("onnx", "openvino")  # run on the CPU that detects them (the exporting machine's family)
SMALL_CAPTIONER_CONFIGS = ("tiny", "demo")
# graph precisions: fp32 | fp16 | bf16 | int8 (static W8A8) | int8-weights (`--dynamic-decoder`: int8 weights;
# OpenVINO keeps the activations float, ONNX Runtime quantizes them per call)


@dataclass(frozen=True)
class Rule:
    """One row: the `--precision` to export with, how each graph computes, the runtime options that
    mix needs (-O KEY=VALUE), and why."""

    precision: str
    encoder: str  # the captioner's encoder, or a single-graph model's graph
    decoder: str | None  # the captioner's decoder graphs; None for single-graph models
    reason: str
    session: tuple[tuple[str, str], ...] = ()

    @property
    def dynamic_decoder(self) -> bool:
        return self.precision == "int8" and self.decoder == "int8-weights"


@dataclass(frozen=True)
class Choice:
    """The rule chosen for one format on one CPU."""

    format: str
    family: str
    rule: Rule
    source: str  # which table decided: "captioner", "small model", "model", "device"

    @property
    def precision(self) -> str:
        return self.rule.precision

    def line(self) -> str:
        """One line for the user: what was chosen and why."""
        opts = "".join(f" -O {k}={v}" for k, v in self.rule.session)
        run = f"; run with{opts}" if opts else ""
        mix = f"encoder {self.rule.encoder}, decoder {self.rule.decoder}" if self.rule.decoder else self.rule.encoder
        return (f"--precision auto for {self.format} on {self.family}: {self.rule.precision} ({mix}{run}) - "
                f"{self.rule.reason}")

    def to_json(self, cpu: CpuFeatures | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"requested": AUTO, "format": self.format, "family": self.family,
                               "precision": self.rule.precision, "encoder": self.rule.encoder,
                               "decoder": self.rule.decoder, "dynamic_decoder": self.rule.dynamic_decoder,
                               "session_options": dict(self.rule.session), "reason": self.rule.reason,
                               "table": self.source}
        if cpu is not None:
            doc["cpu"] = {"model": cpu.model, "arch": cpu.arch, "flags": sorted(cpu.flags), "board": cpu.board}
        return doc


# ----------------------------------------------------------------------------- the table
Mix = Tuple[str, str, Optional[str]]  # --precision, the encoder's graphs, the decoder's (typing: a runtime alias)
_ORT_INT8: Mix = ("int8", "int8", "int8")  # static QDQ: uint8 activations, int8 per-channel weights (decoder: linear)
_OV_INT8_WO: Mix = ("int8", "int8", "int8-weights")  # NNCF int8 encoder, nncf.compress_weights decoder
_ORT_INT8_WO: Mix = ("int8", "int8", "int8-weights")  # static QDQ encoder, weight-only int8 decoder
_FP16: Mix = ("fp16", "fp16", "fp16")
_FP32: Mix = ("fp32", "fp32", "fp32")
_ONNX, _OV = ("onnx",), ("openvino",)
_ARMS = ("arm64-i8mm", "arm64-dotprod", "arm64")


@dataclass(frozen=True)
class Row:
    """One row of the captioner table: the CPU families and formats it covers, the mix, and why."""

    families: tuple[str, ...]
    formats: tuple[str, ...]
    mix: Mix
    reason: str
    session: tuple[tuple[str, str], ...] = ()

    @property
    def rule(self) -> Rule:
        return Rule(*self.mix, self.reason, self.session)


CAPTIONER_ROWS: tuple[Row, ...] = (
    Row(("x86-amx",), _ONNX, _ORT_INT8_WO, "AMX/VNNI u8s8 kernels for the QDQ int8 encoder (3.2x fp32); the "
        "weight-only int8 decoder step measured 1.13-1.24 ms against 1.23-1.54 (static int8) and 1.8 (fp32), "
        "111 ms end to end against 129 (static) and 214 (fp32); Intel Xeon (Emerald Rapids, AMX), "
        "benchmarks/precision_matrix.py. ONNX Runtime has no bf16 CPU path"),
    Row(("x86-amx",), _OV, _OV_INT8_WO, "measured fastest on an AMX Xeon (Emerald Rapids): int8 encoder 4.5x f32, "
        "and end to end 8.0x the eager loop against 6.5x static int8, 5.4x bf16, 3.7x f32 "
        "(benchmarks/precision_matrix.py; README, Intel Xeon table)"),
    Row(("x86-avx512-bf16",), _ONNX, _ORT_INT8_WO, "AVX-512 VNNI: the u8s8 QDQ int8 encoder measured 3.2x fp32, and "
        "the weight-only int8 decoder step 0.47 ms against 0.64 (static int8) and 1.84 (fp32): 76 ms end to end "
        "against 88 (static) and 226 (fp32); AMD EPYC Zen 4, benchmarks/precision_matrix.py. ONNX Runtime has no "
        "bf16 CPU path"),
    Row(("x86-avx512-bf16",), _OV, _OV_INT8_WO, "VNNI int8 multiplies twice as fast as bf16 dot products for the "
        "encoder; weight-only int8 quarters the weight bytes every decoder step streams"),
    Row(("x86-avx512-vnni",), _ONNX, _ORT_INT8_WO, "AVX-512 VNNI: int8 encoder, weight-only int8 decoder steps, as "
        "measured fastest with the same VNNI kernels on AMD EPYC Zen 4; expected, not measured on this family"),
    Row(("x86-avx512-vnni",), _OV, _OV_INT8_WO, "VNNI int8 for the encoder; weight-only int8 quarters the weight "
        "bytes every decoder step streams; no bf16 on this CPU"),
    Row(("x86-avx2-vnni",), _ONNX, _ORT_INT8_WO, "AVX-VNNI int8 dot products: the VNNI u8s8 kernels at 256-bit "
        "width; int8 encoder and weight-only int8 decoder steps as measured fastest with and without VNNI (AMD "
        "EPYC Zen 4 and Zen 3); expected, not measured on this family"),
    Row(("x86-avx2-vnni",), _OV, _OV_INT8_WO, "AVX-VNNI int8 for the encoder, weight-only int8 decoder steps; "
        "expected, not measured on this family"),
    Row(("x86-avx512",), _ONNX, _ORT_INT8_WO, "AVX-512 without VNNI: int8 through pmaddubsw sequences as on AVX2, "
        "where the int8 encoder with weight-only int8 decoder steps measured fastest; expected, not measured on "
        "this family"),
    Row(("x86-avx512",), _OV, _OV_INT8_WO, "oneDNN int8 without VNNI, as on AVX2; expected from the AVX2 "
        "measurement, not measured on this family"),
    Row(("x86-avx2",), _ONNX, _ORT_INT8_WO, "int8 without VNNI still pays on the big encoder (2.1x fp32); the "
        "weight-only int8 decoder step is 2.1x fp32 and 1.1x static int8: 149 ms end to end against 181 (static) "
        "and 286 (fp32); AMD EPYC Zen 3, benchmarks/precision_matrix.py"),
    Row(("x86-avx2",), _OV, _OV_INT8_WO, "measured fastest OpenVINO build: int8 encoder 2.8x f32, weight-only int8 "
        "decoder step 1.4x f32 and 1.2x static int8; AMD EPYC Zen 3, preliminary"),
    Row(("x86",), CPU_FORMATS, _FP32, "no AVX2: int8 kernels fall back to SSE and do not pay"),
    Row(("arm64-i8mm",), _ONNX, _ORT_INT8, "int8 matrix multiply (SMMLA/UMMLA) kernels in ONNX Runtime's MLAS; "
        "expected, not measured on this family"),
    Row(("arm64-dotprod",), _ONNX, _ORT_INT8, "int8 dot-product (SDOT/UDOT) kernels in ONNX Runtime's MLAS; "
        "expected, not measured on this family"),
    Row(("arm64",), _ONNX, _FP32, "no int8 dot products: NEON int8 widens to int16 and gains little"),
    Row(_ARMS, _OV, _FP16, "OpenVINO's Arm CPU plugin computes in f16 (its default there) and has no int8 path on "
        "Arm; expected, not measured on this family", (("precision", "f16"),)),
    Row(("other",), CPU_FORMATS, _FP32, "no rule for this architecture: fp32 is always right"),
)


def table(rows: tuple[Row, ...]) -> dict[str, dict[str, Rule]]:
    """family -> format -> Rule, each (family, format) from exactly one row (families in the order
    the rows name them, formats as CPU_FORMATS lists them)."""
    cells: dict[tuple[str, str], Rule] = {}
    for row in rows:
        for family in row.families:
            for fmt in row.formats:
                if (family, fmt) in cells:
                    raise ValueError(f"precision policy: two rows for {family} / {fmt}")
                cells[family, fmt] = row.rule
    families = dict.fromkeys(family for family, _ in cells)
    return {family: {fmt: cells[family, fmt] for fmt in CPU_FORMATS if (family, fmt) in cells}
            for family in families}


CAPTIONER: dict[str, dict[str, Rule]] = table(CAPTIONER_ROWS)
# OpenVINO on Arm cores without fp16 arithmetic (Cortex-A72 and older)
ARM_NO_FP16 = Rule(*_FP32, "no fp16 arithmetic (asimdhp) on this Arm CPU and no int8 path in OpenVINO on Arm")

DEVICE: dict[str, Rule] = {
    "coreml": Rule(*_FP16, "Core ML runs on the Apple Neural Engine/GPU in fp16 whatever CPU "
                   "exports it; int8 only with --precision int8 after checking the task metric"),
    "tensorrt": Rule(*_FP16, "every TensorRT GPU (Jetson's too) runs fp16 tensor cores without "
                     "calibration; int8 (and DLA) only with --precision int8 after checking the task metric"),
}

SMALL = Rule(*_FP32, "the demo/tiny captioners are too small for int8 to pay: the demo encoder measured 0.46x "
             "(ONNX Runtime) and 1.10x (OpenVINO) of fp32, OpenVINO's decoder step 0.52x (AVX-512 VNNI)")

# single-graph models: the formats whose int8 build measured faster than fp32 with the task metric kept
# (README, INT8 table); elsewhere, and on CPUs without int8 dot products, they stay fp32
MODEL_INT8: dict[str, dict[str, str]] = {
    "soundnet": {"onnx": "int8 measured 3.76x fp32 on ONNX Runtime, top-1 unchanged (AVX-512 VNNI)",
                 "openvino": "int8 measured 1.37x fp32 on OpenVINO, top-1 unchanged (AVX-512 VNNI)"},
    "refocus": {"openvino": "int8 blur convolutions measured 1.24x fp32 on OpenVINO, 53 dB PSNR (AVX-512 VNNI)"},
}
MODEL_FP32: dict[str, str] = {  # the (model, format) pairs without a measured int8 gain
    "voice-encoder": "int8 measured slower than fp32 (0.55x ONNX Runtime, 0.63x OpenVINO, AVX-512 VNNI)",
    "refocus": "int8 depthwise blurs measured 0.25x fp32 on ONNX Runtime (AVX-512 VNNI)",
}


def cpu_family(cpu: CpuFeatures) -> str:
    """The family of the CPU itself (for a Jetson: its Arm cores, which run the CPU formats)."""
    return replace(cpu, board=None).family if cpu.board is not None else cpu.family


def _cpu_rule(cpu: CpuFeatures, family: str, fmt: str) -> Rule:
    if fmt == "openvino" and cpu.is_arm64 and not cpu.has("asimdhp"):
        return ARM_NO_FP16
    return CAPTIONER[family][fmt]


def choose(cpu: CpuFeatures, fmt: str, model: str = "captioner", config: str = "full") -> Choice:
    """The precision mix for `model` at `config` ("checkpoint": a tutorial checkpoint, full size)
    exported to `fmt` and run on `cpu`."""
    if fmt in DEVICE:
        return Choice(fmt, cpu.family, DEVICE[fmt], "device")
    if fmt not in CPU_FORMATS:
        raise InputError(f"--precision auto has no rule for --format {fmt} "
                         f"(it has rules for: {', '.join(CPU_FORMATS + tuple(DEVICE))})")
    family = cpu_family(cpu)
    if model == "captioner":
        if config in SMALL_CAPTIONER_CONFIGS:
            return Choice(fmt, family, SMALL, "small model")
        return Choice(fmt, family, _cpu_rule(cpu, family, fmt), "captioner")
    if fmt == "openvino" and cpu.is_arm64:  # f16 (or f32) for every model: no int8 path there
        return Choice(fmt, family, replace(_cpu_rule(cpu, family, fmt), decoder=None), "model")
    why = MODEL_INT8.get(model, {}).get(fmt)
    if why and cpu.int8_dot:
        return Choice(fmt, family, Rule("int8", "int8", None, why), "model")
    why_not = (f"no int8 dot products on this CPU, and the gain was measured with them ({why})" if why
               else MODEL_FP32.get(model, "no int8 gain measured for this model"))
    return Choice(fmt, family, Rule("fp32", "fp32", None, why_not), "model")


def plan(cpu: CpuFeatures, formats: list[str], model: str = "captioner", config: str = "full"
         ) -> list[tuple[tuple[str, bool], list[Choice]]]:
    """Choices grouped by what one export request can carry: (precision, dynamic_decoder)."""
    groups: dict[tuple[str, bool], list[Choice]] = {}
    for fmt in dict.fromkeys(formats):
        c = choose(cpu, fmt, model, config)
        groups.setdefault((c.precision, c.rule.dynamic_decoder), []).append(c)
    return list(groups.items())


def auto_requests(req: ExportRequest, cpu: CpuFeatures) -> list[tuple[ExportRequest, list[Choice]]]:
    """One `--precision auto` request -> one concrete request per group of `plan()`. `req.calib` /
    `req.quant` (built as for int8) are kept for the int8 groups only; a choice's weight-only
    decoder switches `quant.dynamic_decoder` on (a user's --dynamic-decoder stays on)."""
    config = "checkpoint" if req.checkpoint is not None else req.config
    out = []
    for (precision, dynamic), choices in plan(cpu, req.formats, req.model, config):
        int8 = precision == "int8"
        quant = req.quant
        if int8 and dynamic and quant is not None and not quant.dynamic_decoder:
            quant = replace(quant, dynamic_decoder=True)
        extra = {c.format: {"precision_policy": c.to_json(cpu)} for c in choices}
        out.append((replace(req, formats=[c.format for c in choices], precision=precision,
                            calib=req.calib if int8 else None, quant=quant if int8 else None,
                            manifest_extra=extra), choices))
    return out


@dataclass
class AutoExport:
    """What `export_auto` did: the artifact directories, the choices, the int8 reports."""

    cpu: CpuFeatures
    dirs: list[Path] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    reports: list[Any] = field(default_factory=list)  # calibration.report.Int8Report of the int8 groups

    def choices_json(self) -> list[dict[str, Any]]:
        return [c.to_json(self.cpu) for c in self.choices]


def export_auto(req: ExportRequest, cpu: CpuFeatures, export: Callable[..., ExportResult],
                log: Callable[[str], None] = lambda s: None) -> AutoExport:
    """`mmedge export --precision auto`: log the machine and each choice, then export each group.

    `export(request, log=...)` exports one group in any precision: int8 calibrates, a layer above
    this one, so the caller passes `mmedge.calibration.int8_export.export`."""
    from mmedge.export import registry

    log(f"--precision auto: {cpu.describe()}")
    requests = auto_requests(req, cpu)
    for sub, choices in requests:  # every group is checked before any work
        registry.check_formats(sub.formats, sub.precision)
    if getattr(req.calib, "folder", None) is not None and all(s.precision != "int8" for s, _ in requests):
        log(f"note: --calib-data {req.calib.folder} is not used: no format is exported in int8 here")
    res = AutoExport(cpu)
    for sub, choices in requests:
        for c in choices:
            log(c.line())
        done = export(sub, log=log)
        res.dirs += done.artifacts
        res.choices += choices
        res.reports += done.reports
    return res
