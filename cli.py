"""The `mmedge` command line (typer). `python -m mmedge` is the same program.

Every command has --help; commands that print results take --json (one JSON
document on stdout, logs on stderr). A user error (`MmedgeError`) becomes one
line on stderr and a non-zero exit code, never a traceback. Heavy packages are
imported inside the commands so `mmedge --help` is instant and the runtime
commands work without torch.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import typer

from mmedge.atomic import on_sigint
from mmedge.errors import MmedgeError, article, environment_error, missing_dependency, plural, require
from mmedge.runtime.backends import backends_help  # data only: the -O help comes from the backends' schemas

app = typer.Typer(
    name="mmedge",
    help="Export the captioner, audio encoders and refocus network to edge runtimes, "
    "check parity against PyTorch, and run them without PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich markup would eat "[near, far]" and "[ray]", tag every flag <bool>
    # and cut long option help at 100 columns.
    rich_markup_mode=None,
)


def err(msg: str) -> None:
    """A log line for humans: stderr, so --json stays clean on stdout."""
    print(printable(msg), file=sys.stderr, flush=True)  # flushed: click < 8.2's test runner drops unflushed stderr


def emit_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def printable(text: str) -> str:
    """Lone surrogates (undecodable bytes of a file name) as \\xNN escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def print_line(line: str) -> None:
    """A result line on stdout that cannot fail on a file name that is not valid UTF-8 (Python
    keeps its bytes as lone surrogates): they are shown as \\xNN escapes."""
    line = printable(line)
    try:
        print(line)
    except UnicodeEncodeError:  # a terminal that is not UTF-8
        enc = sys.stdout.encoding or "utf-8"
        print(line.encode(enc, "backslashreplace").decode(enc))


def handle_errors(fn: Callable, name: str = "") -> Callable:
    """Turn MmedgeError into one stderr line + exit code; keep real bugs loud. An optional
    package that is not installed (torch, onnx, ... wherever it is imported) is a
    MissingDependencyError naming the extra, so a device install never shows a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return fn(*args, **kwargs)
            except ModuleNotFoundError as e:
                missing = missing_dependency(e, f"mmedge {name}" if name else "")
                if missing is None:
                    raise
                raise missing from None
            except OSError as e:  # disk full, file size limit, read-only folder: the machine's, one line
                env = environment_error(e)
                if env is None:
                    raise
                raise env from None
        except MmedgeError as e:
            err(f"mmedge: error: {e}")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err("mmedge: interrupted")
            raise typer.Exit(130) from None

    return wrapper


def command(*args: Any, **kwargs: Any) -> Callable:
    def deco(fn: Callable) -> Callable:
        return app.command(*args, **kwargs)(handle_errors(fn, args[0] if args else fn.__name__))

    return deco


JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")
EVAL_SPLITS = ("train", "val", "test")  # the splits of the demo data (data/shapes.py, data/sounds.py)


@command("models")
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


@command("demo")
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


@command("export")
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
    option: List[str] = typer.Option([], "--option", "-o", metavar="KEY=VALUE",
                                      help="An option of the chosen formats' exporters; repeatable, typed and "
                                      "checked before any work (a key none of them takes is an error). E.g. "
                                      "onnx: opset=17, simplify=false, exporter=dynamo. Every format's "
                                      "options: README, 'Options'."),
    target: Optional[str] = typer.Option(None, help="Check the exported graphs against a deployment target "
                                         "(tensorrt) and fail if incompatible."),
    as_json: bool = JsonOpt,
) -> None:
    """Export MODEL to one artifact directory per format x precision, with test vectors for parity."""
    from mmedge.calibration.int8_export import export  # every precision: int8 calibrates
    from mmedge.export import registry

    if out.exists() and not out.is_dir():
        raise MmedgeError(f"{out}: is a file; --out is the folder the artifact directories go in")
    if target:
        from mmedge.errors import UnknownNameError
        from mmedge.export.targets import TARGETS

        if target not in TARGETS.names():  # fail before any work (names() imports nothing)
            raise UnknownNameError("target", target, TARGETS.names())
    calib = quant = None
    if precision in ("int8", "auto"):  # auto: the settings of the formats it exports in int8
        from mmedge.calibration.data import CalibSource
        from mmedge.calibration.recipes import QuantConfig

        calib = CalibSource(calib_data, calib_size, calib_seed)
        quant = QuantConfig(method=calib_method, keep_float=tuple(k for k in keep_float.split(",") if k),
                            dynamic_decoder=dynamic_decoder)
    elif calib_data is not None:
        raise MmedgeError("--calib-data is only used with --precision int8 (or auto)")
    formats = [f.strip() for f in format.split(",") if f.strip()]
    opts: dict[str, Any] = registry.parse_options(formats, option) if option else {}  # typed, before any work
    if target:
        opts["target"] = target
    req = registry.ExportRequest(model, formats, precision, config,
                                 checkpoint, word_map, out, opts, calib, quant, report)
    auto: list[dict[str, Any]] = []
    if precision == "auto":
        from mmedge.export.precision_policy import export_auto
        from mmedge.runtime.cpu_features import detect

        res = export_auto(req, detect(), export, log=err)
        dirs, reports, auto = res.dirs, res.reports, res.choices_json()
    else:
        done = export(req, log=err)
        dirs, reports = done.artifacts, done.reports
    if as_json:
        emit_json({"artifacts": [str(d) for d in dirs], **({"int8_reports": [r.to_json() for r in reports]}
                                                          if reports else {}),
                   **({"precision_auto": auto} if auto else {})})
    else:
        for r in reports:
            err("\n".join(r.rows()))
        for d in dirs:
            print(d)


def _session_options(artifacts: List[Path], backend: Optional[str], threads: Optional[int],
                     pairs: Optional[List[str]]) -> dict[str, Any]:
    """-O pairs (and --threads), typed and checked against the options of the backend that will run the
    artifacts (--backend, else the one of each artifact's format) before anything loads."""
    opts: dict[str, Any] = {}
    if pairs:
        from mmedge.runtime.manifest import read_manifest
        from mmedge.runtime.session import BACKENDS, backend_for_format

        names = [backend] if backend else list(dict.fromkeys(
            backend_for_format(read_manifest(a).format) for a in artifacts))
        opts = BACKENDS.get(names[0]).schema.parse(pairs)
        for name in names[1:]:  # profile: artifacts of several formats share the -O options
            BACKENDS.get(name).schema.validate(opts)
    if threads:
        opts["threads"] = threads
    return opts


def _load(artifact: Path, backend: Optional[str], threads: Optional[int], pairs: Optional[List[str]] = None):
    from mmedge.runtime import load

    return load(artifact, backend, **_session_options([artifact], backend, threads, pairs))


ArtifactOpt = typer.Option(..., "--artifact", "-a", help="An artifact directory written by `mmedge export`.")
BackendOpt = typer.Option(None, help="Runtime backend (default: the one for the artifact's format).")
ThreadsOpt = typer.Option(None, min=1, help="Intra-op threads for the backend (default: the backend's).")
SessionOpt = typer.Option([], "--backend-option", "-O", metavar="KEY=VALUE",
                          help="A session option of the backend; repeatable, typed and checked before "
                          "loading. " + backends_help() + ".")


RayOpt = typer.Option(None, "--ray", metavar="[ADDRESS]",
                      help="Shard the work over a Ray cluster: bare --ray starts a local Ray instance (or joins "
                      "RAY_ADDRESS); --ray HOST:PORT / auto / ray://HOST:PORT joins that cluster. "
                      "Needs pip install 'mmedge[ray]'.")
WorkersOpt = typer.Option(None, min=1, help="With --ray: number of workers, each one pipeline (default: the "
                          "cluster's CPUs / --threads).")
ShipOpt = typer.Option(False, "--ship-artifact", help="With --ray: send the artifact through Ray's object store "
                       "(once per worker) instead of loading it by path from shared storage.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Start --out over instead of resuming it.")


def _scale_options(ray: Optional[str], workers: Optional[int], ship_artifact: bool) -> dict[str, Any]:
    """run_job's executor arguments from the --ray family of options."""
    if ray is None:
        if workers is not None or ship_artifact:
            raise MmedgeError("--workers and --ship-artifact need --ray")
        return {"executor": "local"}
    from mmedge.scale.ray_executor import require_ray

    require_ray()  # says what to install before any work
    return {"executor": "ray", "address": None if ray == LOCAL_RAY else ray, "workers": workers,
            "ship_artifact": ship_artifact}


@command("caption")
def caption_cmd(
    images: List[Path] = typer.Argument(..., help="Images (PNG, JPEG, ...), folders of images (recursive, "
                                        "sorted), or .txt/.lst files with one image path per line."),
    artifact: Path = ArtifactOpt,
    backend: Optional[str] = BackendOpt,
    beam: int = typer.Option(3, min=1, help="Beam width (1 = greedy)."),
    max_len: int = typer.Option(51, min=1, help="Maximum decoding steps, <end> included: a finished caption "
                                "has at most N-1 words (51 = the tutorial's 50 words + <end>)."),
    length_norm: bool = typer.Option(False, help="Rank hypotheses by score / length."),
    attention_png: Optional[Path] = typer.Option(None, help="Write the attention maps over the image "
                                                 "(one PNG; with several images, NAME-<i>.png)."),
    threads: Optional[int] = ThreadsOpt,
    backend_option: List[str] = SessionOpt,
    out: Optional[Path] = typer.Option(None, help="Write one JSON line per image to this file, in input "
                                       "order, as batches finish; a rerun resumes it. An unreadable image "
                                       "becomes an `error` line instead of stopping the run."),
    ray: Optional[str] = RayOpt,
    workers: Optional[int] = WorkersOpt,
    ship_artifact: bool = ShipOpt,
    shard_size: Optional[int] = typer.Option(None, min=1, help="With --out or --ray: images per task (default 16). "
                                             "Without them: the batch size, when --batch-size is not given."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Images read, encoded and decoded at once (all "
                                             "their beams in one decoder call); results are printed per batch. "
                                             "Default: from this machine's free memory and cores and the "
                                             "model's sizes. Not with --out or --ray (see --shard-size)."),
    overwrite: bool = OverwriteOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Caption images with an exported captioner (beam search in numpy, any backend).

    For a photo library: `mmedge caption photos/ -a ART --out captions.jsonl [--ray [ADDRESS]]`.
    """
    from mmedge.runtime import Captioner
    from mmedge.scale.inputs import expand_images

    paths = expand_images(images)
    if out is not None or ray is not None:
        if attention_png is not None:
            raise MmedgeError("--attention-png is for a few images; it does not combine with --out or --ray")
        if batch_size is not None:
            raise MmedgeError("--batch-size is for a run without --out or --ray; with them, --shard-size sets "
                              "the images per task")
        _caption_batch(paths, artifact, backend, threads, backend_option, {"beam": beam, "max_len": max_len,
                       "length_norm": length_norm}, out, shard_size or 16, overwrite,
                       _scale_options(ray, workers, ship_artifact), as_json)
        return
    pipe = _load(artifact, backend, threads, backend_option)
    if not isinstance(pipe, Captioner):
        raise MmedgeError(f"{artifact}: is {article(pipe.manifest.pipeline)} artifact, not a captioner")
    # Streamed in batches (--batch-size, else --shard-size, else the machine's): plain text is printed
    # as each batch finishes, and only the small JSON records are kept for --json (one document at the
    # end, so a failure mid-way prints no half document); attention maps are written, then dropped.
    size = batch_size or shard_size or pipe.auto_batch_size(beam, max_len)
    records: list[dict[str, Any]] = []
    for start in range(0, len(paths), size):
        batch = paths[start:start + size]
        results = pipe.caption(batch, beam=beam, max_len=max_len, length_norm=length_norm, batch_size=size)
        if attention_png is not None:
            from mmedge.runtime.image import read_image
            from mmedge.runtime.visualize import PANEL, attention_grid, save_png

            for i, r in enumerate(results, start):
                words = [pipe.vocab.words[t] for t in r.tokens] + (["<end>"] if r.finished else [])
                target = attention_png if len(paths) == 1 else attention_png.with_name(
                    f"{attention_png.stem}-{i}{attention_png.suffix or '.png'}")
                save_png(attention_grid(read_image(r.image, min_size=PANEL), words, r.attention), target)
                err(f"wrote {target}")
        for r in results:
            if as_json:
                records.append(r.to_json())
            else:
                print_line(f"{r.image}: {r.caption}  (score {r.score:.3f})")
        del results
    if as_json:
        emit_json({"results": records})


def _caption_batch(paths: list[str], artifact: Path, backend: Optional[str], threads: Optional[int],
                   pairs: List[str], options: dict[str, Any], out: Optional[Path], shard_size: int,
                   overwrite: bool, executor: dict[str, Any], as_json: bool) -> None:
    from mmedge.scale import Job, run_job

    job = Job("caption", str(artifact), backend, threads, options, _session_options([artifact], backend, None, pairs))
    records, stats = run_job(job, paths, out, shard_size=shard_size, progress=not as_json, overwrite=overwrite,
                             log=err, **executor)
    if out is None:
        if as_json:
            emit_json({"results": records, "run": stats.to_json()})
        else:
            for r in records:
                print_line(f"{r['image']}: error: {r['error']}" if "error" in r else
                           f"{r['image']}: {r['caption']}  (score {r['score']:.3f})")
        return
    if stats.computed == 0:
        summary = f"{out}: all {plural(stats.total, 'image')} were already done; nothing to do"
    else:
        summary = (f"{out}: {plural(stats.total, 'image')} ({stats.resumed} from an earlier run, {stats.computed} now, "
                   f"{stats.errors} unreadable) with {plural(stats.workers, 'worker')}, "
                   f"{stats.per_second:.1f} images/s" + (f", {plural(stats.retries, 'shard')} retried" if stats.retries else ""))
    if as_json:
        emit_json({"out": str(out), "run": stats.to_json()})
    else:
        print(summary)


@command("embed")
def embed_cmd(
    audio: List[Path] = typer.Argument(..., help="WAV files (resampled to the model's rate)."),
    artifact: Path = ArtifactOpt,
    backend: Optional[str] = BackendOpt,
    threads: Optional[int] = ThreadsOpt,
    backend_option: List[str] = SessionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Embed / classify audio files with an exported audio encoder."""
    from mmedge.runtime import AudioEncoder

    pipe = _load(artifact, backend, threads, backend_option)
    if not isinstance(pipe, AudioEncoder):
        raise MmedgeError(f"{artifact}: is {article(pipe.manifest.pipeline)} artifact, not an audio encoder")
    results = pipe.embed([str(a) for a in audio])
    if as_json:
        emit_json({"results": [r.to_json() for r in results]})
        return
    for r in results:
        dims = ", ".join(f"{k} [{v.shape[0]}]" for k, v in r.outputs.items())
        label = f"{r.label} ({r.score:.2f})" if r.label is not None else "-"
        print_line(f"{r.audio}: {label}  outputs: {dims}")


@command("refocus")
def refocus_cmd(
    image: Path = typer.Argument(..., help="The photo."),
    depth: Path = typer.Option(..., help="Depth map: .npy in metres, 16-bit PNG in mm, or 8-bit (0..10 m)."),
    artifact: Path = ArtifactOpt,
    near: float = typer.Option(..., help="Near end of the in-focus range (metres)."),
    far: float = typer.Option(..., help="Far end of the in-focus range (metres); 'inf' allowed."),
    out: Path = typer.Option(..., help="Output PNG."),
    backend: Optional[str] = BackendOpt,
    threads: Optional[int] = ThreadsOpt,
    backend_option: List[str] = SessionOpt,
) -> None:
    """Refocus a photo with its depth map: sharp inside [near, far], blurred by distance outside."""
    from PIL import Image

    from mmedge.runtime import Refocuser
    from mmedge.runtime.visualize import save_png

    if near < 0 or far < near:
        raise MmedgeError(f"need 0 <= near <= far, got near={near} far={far}")
    pipe = _load(artifact, backend, threads, backend_option)
    if not isinstance(pipe, Refocuser):
        raise MmedgeError(f"{artifact}: is {article(pipe.manifest.pipeline)} artifact, not a refocus network")
    result = pipe.refocus(str(image), str(depth), near, far)
    save_png(Image.fromarray(result), out)
    print_line(str(out))


@command("parity")
def parity_cmd(
    artifact: Path = ArtifactOpt,
    backend: Optional[str] = BackendOpt,
    tolerance: Optional[float] = typer.Option(None, help="Relative tolerance (default: by precision: fp32 1e-4, fp16/bf16 2e-2 of the reference's max; int8 is judged by cosine >= 0.9, see README 'parity')."),
    backend_option: List[str] = SessionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Compare an artifact with the PyTorch reference outputs stored in it (no torch needed)."""
    from mmedge.runtime.parity import check

    report = check(_load(artifact, backend, None, backend_option), tolerance)
    if as_json:
        emit_json(report.to_json())
    else:
        print(f"{artifact} on {report.backend} ({report.precision})")
        for m in report.outputs:
            judged = f"(tol {m.tolerance:.3e})" if m.cosine is None else \
                f"cosine {m.cosine:.5f} (min {m.tolerance})"
            print(f"  {'ok  ' if m.ok else 'FAIL'} {m.name:<28} max abs {m.max_abs:.3e}  rel {m.max_rel:.3e}  {judged}")
        if report.beam:
            b = report.beam
            same, n = sum(b["tokens_equal"]), len(b["tokens_equal"])
            rule = ("must all be identical, scores within 1e-4" if report.precision == "fp32" else
                    f"{report.precision}: for information; judged by the task metric, not token identity")
            print(f"  {'ok  ' if b['ok'] else 'FAIL'} beam search k={b['beam']}: {same} of {n} captions identical "
                  f"to PyTorch's, max relative score error {b['max_rel_score_error']:.2e} ({rule})")
    if not report.ok:  # the check ran and found a mismatch: one line on stderr, exit 1
        from mmedge.errors import Mismatch, ParityError

        bad = list(report.outputs)
        if report.beam and not report.beam.get("ok", True):
            from mmedge.runtime.parity import SCORE_TOLERANCE

            score_err = float(report.beam["max_rel_score_error"])
            bad.append(Mismatch(f"beam search (tokens equal {report.beam['tokens_equal']}; relative score error)",
                                score_err, score_err, SCORE_TOLERANCE))
        raise ParityError(str(artifact), bad)


@command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="captioner | soundnet | voice-encoder"),
    artifact: Optional[Path] = typer.Option(None, "--artifact", "-a", help="Evaluate this artifact through the "
                                            "runtime (default: the PyTorch reference of --config)."),
    config: str = typer.Option("demo", help="Config of the PyTorch reference (without --artifact)."),
    backend: Optional[str] = BackendOpt,
    split: str = typer.Option("test", help="Split of the demo data: test (held out) | val | train."),
    beam: str = typer.Option("1,3,5", help="Captioner: beam widths to score (comma-separated)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items of the split."),
    ray: Optional[str] = RayOpt,
    workers: Optional[int] = WorkersOpt,
    ship_artifact: bool = ShipOpt,
    out: Optional[Path] = typer.Option(None, help="With --artifact: write one JSON line per item (prediction "
                                       "and reference) to this file; a rerun resumes it. One --beam only."),
    overwrite: bool = OverwriteOpt,
    backend_option: List[str] = SessionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Task metric on the held-out demo data: BLEU-1..4 (captioner), top-1 (audio).

    --ray shards the items over a Ray cluster (artifacts only; same metrics as one process).
    """
    from mmedge.calibration.evaluate import evaluator

    if split not in EVAL_SPLITS:  # before any work: the data generators would fail deep inside
        raise MmedgeError(f"unknown split {split!r}; expected one of {', '.join(EVAL_SPLITS)}")
    evaluate = evaluator(model)
    if ray is not None or out is not None:
        _eval_sharded(model, artifact, backend, backend_option, split, beam, limit, out, overwrite,
                      _scale_options(ray, workers, ship_artifact), as_json)
        return
    if backend_option and artifact is None:
        raise MmedgeError("--backend-option applies to an artifact's backend: pass --artifact DIR")
    if artifact is None:  # an artifact is evaluated through the runtime, torch-free
        require("torch", "mmedge eval without --artifact: the PyTorch reference")
    if artifact is not None:
        predictor: Any = _load(artifact, backend, None, backend_option)
        if predictor.manifest.model != model:
            raise MmedgeError(f"{artifact}: is {article(predictor.manifest.model)} artifact, not {model}")
    elif model == "captioner":
        from mmedge.calibration.eval_caption import TorchCaptioner

        predictor = TorchCaptioner.from_zoo(config)
    else:
        from mmedge.calibration.eval_audio import TorchAudioPredictor

        predictor = TorchAudioPredictor(model, config)
    if model == "captioner":
        results = [evaluate(predictor, split=split, beam=b, limit=limit, progress=not as_json)
                   for b in _beams(beam)]
    else:
        results = [evaluate(predictor, split=split, limit=limit, progress=not as_json)]
    _print_eval(results, split, as_json)


def _beams(beam: str) -> list[int]:
    try:
        beams = [int(b) for b in beam.split(",") if b.strip()]
    except ValueError:
        raise MmedgeError(f"--beam expects comma-separated integers, got {beam!r}") from None
    if not beams or min(beams) < 1:
        raise MmedgeError(f"--beam values must be >= 1, got {beam!r}")
    return beams


def _eval_sharded(model: str, artifact: Optional[Path], backend: Optional[str], pairs: List[str], split: str,
                  beam: str,
                  limit: Optional[int], out: Optional[Path], overwrite: bool, executor: dict[str, Any],
                  as_json: bool) -> None:
    from mmedge.scale.evaluate import evaluate_sharded

    if artifact is None:
        raise MmedgeError("--ray and --out evaluate an exported artifact: pass --artifact DIR "
                          "(the PyTorch reference runs in this process only)")
    beams = _beams(beam) if model == "captioner" else [0]
    if out is not None and len(beams) > 1:
        raise MmedgeError(f"--out holds one evaluation: pass one --beam (got {beam!r})")
    session = _session_options([artifact], backend, None, pairs)
    results = []
    for b in beams:
        result, stats = evaluate_sharded(model, artifact, split, limit, beam=b, out=out, overwrite=overwrite,
                                         backend=backend, session=session,
                                         progress=not as_json, log=err,
                                         **executor)
        if not as_json:
            err(f"{plural(stats.computed, 'item')} in {stats.seconds:.1f} s with {plural(stats.workers, 'worker')}"
                + (f", {stats.resumed} resumed" if stats.resumed else "")
                + (f", {plural(stats.retries, 'shard')} retried" if stats.retries else ""))
        results.append(result)
    _print_eval(results, split, as_json)


def _print_eval(results: list[Any], split: str, as_json: bool) -> None:
    if as_json:
        emit_json({"results": [r.to_json() for r in results]})
        return
    for r in results:
        extra = f" beam {r.details['beam']}" if "beam" in r.details else ""
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in r.metrics.items())
        print(f"{r.model} ({r.source}) {split}{extra}, {r.samples} samples: {metrics}")


def _evaluator() -> Callable[[str], Callable[..., Any]]:
    """The task metrics (calibration layer) that `profile --eval` hands down to the runtime's profiler."""
    from mmedge.calibration.evaluate import evaluator

    return evaluator


def _profile_ints(option: str, value: str, minimum: int = 1) -> tuple[int, ...]:
    """'1,4,8' -> (1, 4, 8); a bad list is a one-line error naming the option."""
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise MmedgeError(f"{option} expects comma-separated integers, got {value!r}") from None
    if not items or min(items) < minimum:
        raise MmedgeError(f"{option} values must be >= {minimum}, got {value!r}")
    if len(set(items)) != len(items):
        raise MmedgeError(f"{option} lists a value twice: {value!r}")
    return items


def _profile_compare(old: Path, new: Path, threshold: float, as_json: bool, markdown: bool) -> None:
    from mmedge.runtime.profile_render import compare_text
    from mmedge.runtime.profiler import compare, read_profile

    report = compare(read_profile(old), read_profile(new), threshold)
    if as_json:
        emit_json(report.to_json())
    else:
        print(compare_text(report, markdown=markdown), end="")
    if report.exit_code:
        err(f"mmedge: {report.summary()}")
        raise typer.Exit(report.exit_code)


@command("profile")
def profile_cmd(
    artifact: List[Path] = typer.Option([], "--artifact", "-a", help="Artifact directories to profile "
                                        "(repeat the option for several: formats x precisions side by side)."),
    backend: Optional[str] = BackendOpt,
    runs: int = typer.Option(20, min=1, help="Timed runs per row (after the warm-up)."),
    warmup: int = typer.Option(3, min=0, help="Untimed runs before timing each row."),
    batch: str = typer.Option("1", help="Batch sizes, comma-separated (graphs: test vectors tiled; "
                              "captioner end to end: that many images)."),
    beam: str = typer.Option("3", help="Captioner: beam widths, comma-separated."),
    max_len: int = typer.Option(51, min=1, help="Captioner: maximum decoding steps, <end> included "
                                "(51 = the tutorial's 50 words + <end>)."),
    threads: Optional[int] = typer.Option(None, min=1, help="Intra-op threads for the backend "
                                          "(default: the backend's)."),
    pin: Optional[str] = typer.Option(None, help="Pin the process to these CPUs, e.g. 0 or 2,3 (Linux)."),
    backend_option: List[str] = SessionOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the profile as one JSON document "
                                 "(\"schema\": \"mmedge.profile\", described in mmedge/runtime/profiler.py)."),
    as_csv: bool = typer.Option(False, "--csv", help="Print one CSV line per row."),
    markdown: bool = typer.Option(False, "--markdown", help="Print Markdown tables."),
    plot: Optional[Path] = typer.Option(None, help="Write a PNG of the latency distributions "
                                        "(needs matplotlib, the 'plot' extra of mmedge)."),
    eval_: bool = typer.Option(False, "--eval", help="Add the task metric on the held-out demo data "
                               "(BLEU-4 / top-1; demo models)."),
    eval_limit: Optional[int] = typer.Option(None, min=1, help="--eval: only the first N items of the split."),
    noise_threshold: float = typer.Option(0.2, help="Flag rows whose (p90 - p10) / p50 exceeds this."),
    image: Optional[Path] = typer.Option(None, help="Captioner / refocus end to end: this image instead of a "
                                         "synthetic 640x480 scene."),
    compare: Optional[Tuple[Path, Path]] = typer.Option(None, "--compare", metavar="OLD.json NEW.json",
                                                        help="Compare two --json profiles row by row "
                                                        "instead of profiling; exit 1 past --threshold."),
    threshold: float = typer.Option(0.10, help="--compare: relative p50 increase that fails (0.1 = 10%)."),
    roofline: bool = typer.Option(True, "--roofline/--no-roofline",
                                  help="Measure this machine's peaks through the backend (GEMM per precision, "
                                  "memory bandwidth; a few seconds) and each stage's efficiency."),
) -> None:
    """Latency per graph and end to end: load, first inference, p50/p90/p99, throughput, memory, size."""
    if sum([as_json, as_csv, markdown]) > 1:
        raise MmedgeError("choose one of --json, --csv, --markdown")
    if compare is not None:
        if artifact:
            raise MmedgeError("--compare takes two JSON files and no --artifact")
        _profile_compare(compare[0], compare[1], threshold, as_json, markdown)
        return
    if not artifact:
        raise MmedgeError("profile needs --artifact DIR (one or more), or --compare OLD.json NEW.json")
    from mmedge.runtime import profile_render as render
    from mmedge.runtime.profiler import ProfileOptions, profile

    if plot is not None:
        render._matplotlib()  # fail before measuring when matplotlib is missing
        if plot.is_dir() or plot.suffix.lower() != ".png":
            raise MmedgeError(f"{plot}: --plot writes a PNG file; give a path ending in .png")
    opts = ProfileOptions(runs=runs, warmup=warmup, batch=_profile_ints("--batch", batch),
                          beam=_profile_ints("--beam", beam), max_len=max_len, threads=threads,
                          pin=_profile_ints("--pin", pin, minimum=0) if pin is not None else None, backend=backend,
                          eval=eval_, eval_limit=eval_limit, noise_threshold=noise_threshold,
                          evaluator=_evaluator() if eval_ else None,
                          image=str(image) if image is not None else None, roofline=roofline,
                          session=_session_options(list(artifact), backend, None, backend_option))
    result = profile(artifact, opts, log=lambda s: err(f"profile: {s}"))
    if plot is not None:
        err(f"wrote {render.plot(result, plot)}")
    if as_json:
        emit_json(result.to_json())
    elif as_csv:
        print(render.to_csv(result), end="")
    elif markdown:
        print(render.to_markdown(result), end="")
    else:
        print(render.to_text(result), end="")
    for w in result.warnings:
        err(f"mmedge: warning: {w}")


@command("doctor")
def doctor_cmd(as_json: bool = JsonOpt) -> None:
    """Report the board: L4T/JetPack, TensorRT, CUDA, Python, DLA cores, power mode, jetson_clocks."""
    from mmedge.runtime.device import doctor, render

    report = doctor()
    if as_json:
        emit_json(report)
    else:
        print(render(report), end="")


@command("package")
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
    trt_opts: dict[str, Any] = {"batch": batch, "beam": beam, "workspace": workspace, "dla_core": dla_core,
                                "version_compatible": version_compatible, "fp16_onnx": fp16, "int8": int8}
    for item in profile:
        axis, eq, value = item.partition("=")
        if not eq or not axis:
            raise MmedgeError(f"--profile {item!r}: expected AXIS=MIN,OPT,MAX (e.g. samples=8000,16000,32000)")
        trt_opts[f"profile.{axis}"] = value
    trt_opts = {k: v for k, v in trt_opts.items() if v is not None}
    if trt_opts and target != "jetson":
        raise MmedgeError("--batch, --beam, --profile, --workspace, --dla-core, --version-compatible, --fp16 and "
                          "--int8 are for package jetson")
    opts.update(trt_opts)
    path = package(target, PackageRequest(list(artifact), out or Path(verify or "."), opts))
    if as_json:
        emit_json({"bundle": str(path)})
    else:
        print(path)


LOCAL_RAY = "local"


def _looks_like_address(token: str) -> bool:
    return token in ("auto", LOCAL_RAY) or token.startswith("ray://") or (
        ":" in token and token.rsplit(":", 1)[1].isdigit())


def ray_argv(argv: list[str]) -> list[str]:
    """`--ray` takes an optional ADDRESS: the next word is the address only if it looks like one
    (HOST:PORT, auto, local, ray://...); otherwise --ray means a local Ray instance."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out.extend(argv[i:])
            break
        if a == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and _looks_like_address(nxt):
                out.append(f"--ray={nxt}")
                i += 2
                continue
            out.append(f"--ray={LOCAL_RAY}")
        else:
            out.append(a)
        i += 1
    return out


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; usage errors become one stderr line too."""
    argv = ray_argv(list(sys.argv[1:] if argv is None else argv))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None  # remembered even if swallowed
    try:
        return _run(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception bases a bad command line raises, on every typer from the declared floor.

    typer >= 0.26 vendors click and raises `typer.TyperException`; older typer re-raises
    click's own `ClickException` (click is then one of its dependencies).
    """
    bases: list[type[BaseException]] = []
    if hasattr(typer, "TyperException"):
        bases.append(typer.TyperException)
    try:
        from click.exceptions import ClickException
    except ImportError:  # typer >= 0.26 does not need click installed
        pass
    else:
        bases.append(ClickException)
    return tuple(bases)


def _run(argv: list[str]) -> int:
    try:
        rc = app(args=argv, standalone_mode=False)
    except typer.Abort:
        err("mmedge: interrupted")
        return 130
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except _usage_errors() as e:  # bad option values, missing arguments: one line, not a usage box
        if type(e).__name__ == "NoArgsIsHelpError":
            app(args=["--help"], standalone_mode=False)
            return 0
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        cmd = f" {ctx.info_name}" if ctx is not None and ctx.info_name not in (None, "mmedge") else ""
        err(f"mmedge: error: {msg} (see 'mmedge{cmd} --help')")
        return int(getattr(e, "exit_code", 2))
    return rc if isinstance(rc, int) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
