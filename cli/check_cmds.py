"""The commands that measure an artifact: `parity`, `eval`, `profile`, `doctor` (the board it runs on).

Each parses its options, calls the runtime (parity, profiler, doctor) or the evaluation job
(`scale.eval_job`) and prints the report: text, or one JSON document with --json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

import typer

from mmedge.cli.common import (ArtifactOpt, BackendOpt, JsonOpt, OverwriteOpt, RayOpt, SessionOpt, ShipOpt,
                               WorkersOpt, emit_json, err)
from mmedge.errors import MmedgeError, plural


def parity_cmd(
    artifact: Path = ArtifactOpt,
    backend: Optional[str] = BackendOpt,
    tolerance: Optional[float] = typer.Option(None, help="Relative tolerance (default: by precision: fp32 1e-4, fp16/bf16 2e-2 of the reference's max; int8 is judged by cosine >= 0.9, see README 'parity')."),
    backend_option: List[str] = SessionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Compare an artifact with the PyTorch reference outputs stored in it (no torch needed)."""
    from mmedge.runtime.arguments import load_pipeline
    from mmedge.runtime.parity import check

    report = check(load_pipeline(artifact, backend, None, backend_option), tolerance)
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


def eval_cmd(
    model: str = typer.Argument(..., help="captioner | soundnet | voice-encoder"),
    artifact: Optional[Path] = typer.Option(None, "--artifact", "-a", help="Evaluate this artifact through the "
                                            "runtime (default: the PyTorch reference of --config)."),
    config: str = typer.Option("demo", help="Config of the PyTorch reference (without --artifact)."),
    backend: Optional[str] = BackendOpt,
    split: Optional[str] = typer.Option(None, help="Split(s) of the demo data, comma-separated: test (held out) | "
                                        "oos (captioner: scenes drawn out of style by other code, never trained "
                                        "on) | val | train. Default: test,oos for the captioner, test otherwise."),
    beam: str = typer.Option("1,3,5", help="Captioner: beam widths to score (comma-separated)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items of the split. Captioner "
                                        "val, test, oos: N may exceed the split's 300 (the scenes after it, "
                                        "from the same generator, never trained on; up to 1,000,000)."),
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
    from mmedge.scale.eval_job import EvalArgs, evaluate_here, evaluate_sharded_beams, evaluator_for

    args = EvalArgs(model, artifact, split, beam, limit, config, backend, list(backend_option))
    evaluate = evaluator_for(args)  # an unknown split or model: before any work
    if ray is None and out is None:
        _print_eval(evaluate_here(args, evaluate, progress=not as_json), as_json)
        return
    from mmedge.scale.executor_options import executor_options

    results = []
    for result, stats in evaluate_sharded_beams(args, out, overwrite, executor_options(ray, workers, ship_artifact),
                                                progress=not as_json, log=err):
        if not as_json:
            err(f"{plural(stats.computed, 'item')} in {stats.seconds:.1f} s with {plural(stats.workers, 'worker')}"
                + (f", {stats.resumed} resumed" if stats.resumed else "")
                + (f", {plural(stats.retries, 'shard')} retried" if stats.retries else ""))
        results.append(result)
    _print_eval(results, as_json)


_INTERVAL_WORDS = {"object_accuracy": "objects", "hallucination_rate": "hallucinations"}


def _print_eval(results: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json({"results": [r.to_json() for r in results]})
        return
    for r in results:
        extra = f" beam {r.details['beam']}" if "beam" in r.details else ""
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in r.metrics.items())
        print(f"{r.model} ({r.source}) {r.details.get('split', '')}{extra}, {r.samples} samples: {metrics}")
        if r.details.get("intervals"):  # the captioner's object rates: how far a rate can move by chance
            # (worded apart from the metric names above, so a parser of "name value" pairs reads one line only)
            spans = "  ".join(f"{_INTERVAL_WORDS.get(k, k)} {100 * lo:.1f}-{100 * hi:.1f} %"
                              for k, (lo, hi) in r.details["intervals"].items())
            print(f"  95 % intervals (Wilson): {spans}")


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
    from mmedge.runtime.arguments import artifact_session_options, int_list
    from mmedge.runtime.profiler import ProfileOptions, profile

    if plot is not None:
        render._matplotlib()  # fail before measuring when matplotlib is missing
        if plot.is_dir() or plot.suffix.lower() != ".png":
            raise MmedgeError(f"{plot}: --plot writes a PNG file; give a path ending in .png")
    from mmedge.calibration.evaluate import evaluator  # --eval: the task metrics, handed down to the profiler

    opts = ProfileOptions(runs=runs, warmup=warmup, batch=int_list("--batch", batch), beam=int_list("--beam", beam),
                          max_len=max_len, threads=threads,
                          pin=int_list("--pin", pin, minimum=0) if pin is not None else None, backend=backend,
                          eval=eval_, eval_limit=eval_limit, noise_threshold=noise_threshold,
                          evaluator=evaluator if eval_ else None,
                          image=str(image) if image is not None else None, roofline=roofline,
                          session=artifact_session_options(list(artifact), backend, None, backend_option))
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


def doctor_cmd(as_json: bool = JsonOpt) -> None:
    """Report the board: L4T/JetPack, TensorRT, CUDA, Python, DLA cores, power mode, jetson_clocks."""
    from mmedge.runtime.device import doctor, render

    report = doctor()
    if as_json:
        emit_json(report)
    else:
        print(render(report), end="")
