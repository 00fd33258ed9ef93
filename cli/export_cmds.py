"""The commands that build things: `models` (what can be built), `demo`, `export`, `package`.

Each parses its options, hands them to one function of a lower layer and prints the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from mmedge.cli.common import JsonOpt, emit_json, err
from mmedge.errors import MmedgeError

DEPRECATED_OPTION = "-o/--option is deprecated: use -x/--export-option"


def models_cmd(as_json: bool = JsonOpt) -> None:
    """List the registered models, their configs and exported graphs."""
    from mmedge.models import zoo

    doc = []
    for info in zoo.catalog():  # torch-free: listing works on a device install
        doc.append({"name": info.name, "pipeline": info.pipeline, "configs": list(info.configs),
                    "graphs": {g.name: {"inputs": list(g.inputs), "outputs": list(g.outputs)} for g in info.graphs},
                    "description": info.description})
    if as_json:
        emit_json({"models": doc})
        return
    for m in doc:
        print(f"{m['name']:<14} configs: {', '.join(m['configs']):<18} graphs: {', '.join(m['graphs'])}")
        if m["description"]:
            print(f"{'':<14} {m['description']}")


def demo_cmd(
    out: Path = typer.Option(Path("mmedge-demo"), help="Where the artifacts and the refocused photo go."),
    int8: bool = typer.Option(True, help="Also build and run int8 artifacts (calibrated on generated data)."),
    full: bool = typer.Option(False, "--full", help="Build the refocus network at its full size (config full: "
                              "blur up to sigma 8) instead of its demo config; slower."),
    as_json: bool = JsonOpt,
) -> None:
    """The main job: export the demo models to every backend here, check parity, run examples, time them."""
    from mmedge.demo import print_section, run_demo

    if out.exists() and not out.is_dir():
        raise MmedgeError(f"{out}: is a file; --out is the folder the demo writes in")
    # progress on stderr as it goes; each table on stdout as soon as its part is done (--json: one document)
    res = run_demo(out, int8=int8, log=err, full=full, show=None if as_json else print_section)
    if as_json:
        emit_json(res.to_json())
    if not all(a["parity_ok"] for a in res.artifacts):
        raise typer.Exit(1)


def export_cmd(
    model: str = typer.Argument(..., help="captioner | soundnet | voice-encoder | refocus"),
    format: str = typer.Option("onnx", "--format", "-f", help="Target format(s), comma-separated."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | int8 | auto (the mix this machine's CPU runs "
                                  "fastest, per format, printed with its reason; README 'Precision auto')."),
    config: str = typer.Option("demo", help="demo: the trained weights shipped with mmedge (default); tiny: "
                               "small random weights (tests); full: real size, random weights unless "
                               "--checkpoint (see `mmedge models`)."),
    checkpoint: Optional[Path] = typer.Option(None, help="A tutorial BEST_checkpoint_*.pth.tar (captioner)."),
    word_map: Optional[Path] = typer.Option(None, help="The tutorial's WORDMAP_*.json (with --checkpoint)."),
    calib_data: Optional[Path] = typer.Option(None, help="int8: folder of calibration images or WAVs "
                                              "(default: the demo generators)."),
    calib_size: int = typer.Option(64, help="int8: number of calibration samples (drawn with --calib-seed)."),
    calib_seed: int = typer.Option(0, help="int8: seed for drawing the calibration samples."),
    calib_method: str = typer.Option("minmax", help="int8: minmax | entropy | percentile."),
    keep_float: str = typer.Option("Softmax,LogSoftmax", help="int8: node names or op types kept in float "
                                   "(comma-separated; '' for none)."),
    dynamic_decoder: bool = typer.Option(False, help="int8: weight-only int8 for the captioner's decoder graphs."),
    report: bool = typer.Option(True, help="int8: measure fp32 vs int8 accuracy and speed at the end."),
    out: Path = typer.Option(Path("artifacts"), help="Output folder; one artifact directory per format x precision."),
    export_option: List[str] = typer.Option([], "--export-option", "-x", metavar="KEY=VALUE",
                                             help="An option of the chosen formats' exporters; repeatable, typed "
                                             "and checked before any work (a key none of them takes is an "
                                             "error). E.g. onnx: opset=17, simplify=false, exporter=dynamo. "
                                             "Every format's options: README, 'Options'."),
    option: List[str] = typer.Option([], "--option", "-o", metavar="KEY=VALUE", hidden=True,
                                      help="Deprecated spelling of -x/--export-option."),
    target: Optional[str] = typer.Option(None, help="Check the exported graphs against a deployment target "
                                         "(tensorrt) and fail if incompatible."),
    as_json: bool = JsonOpt,
) -> None:
    """Export MODEL to one artifact directory per format x precision, with test vectors for parity."""
    if option:
        err(DEPRECATED_OPTION)
    from mmedge.calibration.export_job import ExportArgs, run_export

    args = ExportArgs(model, format, precision, config, checkpoint, word_map, calib_data, calib_size, calib_seed,
                      calib_method, keep_float, dynamic_decoder, report, out, [*export_option, *option], target)
    done = run_export(args.request(), log=err)
    if as_json:
        emit_json(done.to_json())
    else:
        for r in done.reports:
            err("\n".join(r.rows()))
        for d in done.dirs:
            print(d)


JETSON_ONLY = ("--batch, --beam, --profile, --workspace, --dla-core, --version-compatible, --fp16 and --int8 "
               "are for package jetson")


def package_cmd(
    target: str = typer.Argument(..., help="jetson | mobile"),
    artifact: List[Path] = typer.Option([], "--artifact", "-a", help="Artifact directories to bundle."),
    out: Optional[Path] = typer.Option(None, help="The bundle to write (e.g. bundle.tar.gz, app.zip)."),
    verify: Optional[Path] = typer.Option(None, help="Instead of packaging: re-check an existing bundle."),
    with_wheels: Optional[Path] = typer.Option(None, "--with-wheels", help="jetson: also put every *.whl of "
                                               "this folder in the bundle's wheels/ (the runtime's dependencies "
                                               "for the board, so install.sh needs no index)."),
    batch: Optional[str] = typer.Option(None, "--batch", metavar="MIN,OPT,MAX",
                                        help="jetson: profile of the batch axis (default 1,1,8)."),
    beam: Optional[str] = typer.Option(None, "--beam", metavar="MIN,OPT,MAX",
                                       help="jetson: beam widths of the captioner's decoder_step rows (default 1,3,5)."),
    profile: List[str] = typer.Option([], "--profile", metavar="AXIS=MIN,OPT,MAX",
                                      help="jetson: profile of another dynamic axis (e.g. samples=8000,16000,32000)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", metavar="MIB",
                                            help="jetson: default builder workspace of build_engines.sh (1024)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", metavar="N",
                                           help="jetson: build_engines.sh builds fp16/int8 for this DLA core by "
                                                "default (DLA_CORE overrides; boards without DLA refuse)."),
    version_compatible: Optional[bool] = typer.Option(None, "--version-compatible/--no-version-compatible",
                                                      help="jetson: version-compatible engines by default "
                                                           "(TensorRT >= 8.6)."),
    fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16",
                                        help="jetson: bundle fp16 graphs (fp16 engines on TensorRT >= 11; default on)."),
    int8: Optional[bool] = typer.Option(None, "--int8/--no-int8",
                                        help="jetson: quantize int8 graphs and calibration caches (default on)."),
    as_json: bool = JsonOpt,
) -> None:
    """Bundle artifacts for a Jetson board or a phone app (with test vectors and a manifest)."""
    from mmedge.calibration.packaging import package  # jetson: calibrates its int8 graphs
    from mmedge.export.package import PackageRequest, packager

    packager(target)  # an unknown target fails before the other checks
    if verify is None and (not artifact or out is None):
        raise MmedgeError("package needs --artifact DIR (one or more) and --out PATH, or --verify BUNDLE")
    opts: dict[str, Any] = {"verify": verify} if verify is not None else {}
    if with_wheels is not None:
        if target != "jetson":
            raise MmedgeError("--with-wheels is for package jetson")
        opts["with_wheels"] = with_wheels
    # the packager's option keys (checked by its schema); None: not given
    trt_opts: dict[str, Any] = {"batch": batch, "beam": beam, "workspace": workspace, "dla_core": dla_core,
                                "version_compatible": version_compatible, "fp16_onnx": fp16, "int8": int8}
    for item in profile:
        axis, eq, value = item.partition("=")
        if not eq or not axis:
            raise MmedgeError(f"--profile {item!r}: expected AXIS=MIN,OPT,MAX (e.g. samples=8000,16000,32000)")
        trt_opts[f"profile.{axis}"] = value
    trt_opts = {k: v for k, v in trt_opts.items() if v is not None}
    if trt_opts and target != "jetson":
        raise MmedgeError(JETSON_ONLY)
    opts.update(trt_opts)
    path = package(target, PackageRequest(list(artifact), out or Path(verify or "."), opts))
    if as_json:
        emit_json({"bundle": str(path)})
    else:
        print(path)
