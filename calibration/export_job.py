"""`mmedge export`: the request from the command's arguments, and the export it asks for.

`ExportArgs` holds the arguments as the command line gives them (a comma-separated format list,
`KEY=VALUE` exporter options, the int8 settings as text). `request()` checks everything that
needs no work -- the output folder, the deployment target, the int8-only options, the exporter
options against the chosen formats' schemas -- and builds the `ExportRequest`; `run_export`
exports it in one precision (int8 calibrates, this layer) or, for `--precision auto`, in the
mix `export.precision_policy` chooses for this machine's CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mmedge.calibration.int8_export import export  # every precision: int8 calibrates
from mmedge.errors import MmedgeError
from mmedge.export import registry

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExportArgs:
    """An export as the command line words it."""

    model: str
    formats: str = "onnx"  # comma-separated
    precision: str = "fp32"  # fp32 | fp16 | int8 | auto
    config: str = "demo"
    checkpoint: Optional[Path] = None
    word_map: Optional[Path] = None
    calib_data: Optional[Path] = None
    calib_size: int = 64
    calib_seed: int = 0
    calib_method: str = "minmax"
    keep_float: str = "Softmax,LogSoftmax"  # comma-separated; '' for none
    dynamic_decoder: bool = False
    report: bool = True
    out: Path = Path("artifacts")
    options: Sequence[str] = ()  # `-x KEY=VALUE` pairs of the chosen formats' exporters
    target: Optional[str] = None

    def request(self) -> registry.ExportRequest:
        """The checked `export.registry.ExportRequest` (nothing is written before it is built)."""
        if self.out.exists() and not self.out.is_dir():
            raise MmedgeError(f"{self.out}: is a file; --out is the folder the artifact directories go in")
        if self.target:
            from mmedge.errors import UnknownNameError
            from mmedge.export.targets import TARGETS

            if self.target not in TARGETS.names():  # fail before any work (names() imports nothing)
                raise UnknownNameError("target", self.target, TARGETS.names())
        calib = quant = None
        if self.precision in ("int8", "auto"):  # auto: the settings of the formats it exports in int8
            from mmedge.calibration.data import CalibSource
            from mmedge.calibration.recipes import QuantConfig

            calib = CalibSource(self.calib_data, self.calib_size, self.calib_seed)
            quant = QuantConfig(method=self.calib_method, keep_float=tuple(k for k in self.keep_float.split(",") if k),
                                dynamic_decoder=self.dynamic_decoder)
        elif self.calib_data is not None:
            raise MmedgeError("--calib-data is only used with --precision int8 (or auto)")
        formats = [f.strip() for f in self.formats.split(",") if f.strip()]
        opts: dict[str, Any] = registry.parse_options(formats, list(self.options)) if self.options else {}
        if self.target:
            opts["target"] = self.target
        return registry.ExportRequest(self.model, formats, self.precision, self.config, self.checkpoint,
                                      self.word_map, self.out, opts, calib, quant, self.report)


@dataclass
class ExportOutcome:
    """The artifact directories written, the int8 accuracy reports, and --precision auto's choices."""

    dirs: list[Path]
    reports: list[Any]
    auto: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"artifacts": [str(d) for d in self.dirs],
                **({"int8_reports": [r.to_json() for r in self.reports]} if self.reports else {}),
                **({"precision_auto": self.auto} if self.auto else {})}


def run_export(req: registry.ExportRequest, log: Log) -> ExportOutcome:
    """Export `req`: in its precision, or (auto) in the precisions this CPU runs fastest, per format."""
    if req.precision == "auto":
        from mmedge.export.precision_policy import export_auto
        from mmedge.runtime.cpu_features import detect

        res = export_auto(req, detect(), export, log=log)
        return ExportOutcome(res.dirs, res.reports, res.choices_json())
    done = export(req, log=log)
    return ExportOutcome(done.artifacts, done.reports)
