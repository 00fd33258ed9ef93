"""`mmedge eval`: the task metric of an artifact or of the PyTorch reference, here or sharded.

What the command asks for (`EvalArgs`, its arguments as given) is turned into evaluations:
`evaluate_here` picks the predictor (the artifact's runtime pipeline, torch-free, or the PyTorch
reference of a config) and scores each beam width in this process; `evaluate_sharded_beams`
runs the artifact's evaluation through `run_job` (local shards or Ray, resumable with `out`),
one beam width at a time. Checks that need no work (split, model, beam list, `-O` pairs) come
first, in the order the command has always made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mmedge.errors import MmedgeError, article, require

SPLITS = ("train", "val", "test")  # the splits of the demo data (data/shapes.py, data/sounds.py)
# the captioner also has scenes drawn out of style by independent code (data/shapes_oos.py)
CAPTIONER_SPLITS = (*SPLITS, "oos")
DEFAULT_SPLITS = {"captioner": ("test", "oos")}  # others: ("test",)


@dataclass(frozen=True)
class EvalArgs:
    """An evaluation as the command line words it."""

    model: str
    artifact: Path | None = None  # None: the PyTorch reference of `config`
    split: str | None = None  # comma-separated; None: test and oos for the captioner, test otherwise
    beam: str = "1,3,5"  # captioner: beam widths, comma-separated text
    limit: int | None = None
    config: str = "demo"
    backend: str | None = None
    session: Sequence[str] = ()  # `-O KEY=VALUE` pairs of the artifact's backend

    @property
    def beams(self) -> tuple[int, ...]:
        from mmedge.runtime.arguments import int_list

        return int_list("--beam", self.beam, distinct=False)

    @property
    def splits(self) -> tuple[str, ...]:
        if self.split is None:
            return DEFAULT_SPLITS.get(self.model, ("test",))
        return tuple(s.strip() for s in self.split.split(",") if s.strip()) or ("",)


def evaluator_for(args: EvalArgs) -> Callable[..., Any]:
    """The task metric of `args.model`; an unknown split or model fails here, before any work."""
    from mmedge.calibration.evaluate import evaluator

    allowed = CAPTIONER_SPLITS if args.model == "captioner" else SPLITS
    for split in args.splits:  # the data generators would fail deep inside
        if split not in allowed:
            raise MmedgeError(f"unknown split {split!r}; expected one of {', '.join(allowed)}")
    if args.model == "captioner" and args.limit is not None:
        from mmedge.data.shapes import SEED_BLOCK

        if args.limit > SEED_BLOCK:
            raise MmedgeError(f"--limit {args.limit}: a captioner split has at most {SEED_BLOCK:,} scenes")
    return evaluator(args.model)


def predictor(args: EvalArgs) -> Any:
    """What is scored: the artifact through the runtime (torch-free), else the PyTorch reference."""
    if args.session and args.artifact is None:
        raise MmedgeError("--backend-option applies to an artifact's backend: pass --artifact DIR")
    if args.artifact is None:
        require("torch", "mmedge eval without --artifact: the PyTorch reference")
    if args.artifact is not None:
        from mmedge.runtime.arguments import load_pipeline

        pipe = load_pipeline(args.artifact, args.backend, None, list(args.session))
        if pipe.manifest.model != args.model:
            raise MmedgeError(f"{args.artifact}: is {article(pipe.manifest.model)} artifact, not {args.model}")
        return pipe
    if args.model == "captioner":
        from mmedge.calibration.eval_caption import TorchCaptioner

        return TorchCaptioner.from_zoo(args.config)
    from mmedge.calibration.eval_audio import TorchAudioPredictor

    return TorchAudioPredictor(args.model, args.config)


def evaluate_here(args: EvalArgs, evaluate: Callable[..., Any], progress: bool) -> list[Any]:
    """One EvalResult per beam width (captioner) or one (audio), in this process; `evaluate` is
    `evaluator_for(args)`, which the command asks for first."""
    scored = predictor(args)
    if args.model == "captioner":
        return [evaluate(scored, split=s, beam=b, limit=args.limit, progress=progress)
                for s in args.splits for b in args.beams]
    return [evaluate(scored, split=s, limit=args.limit, progress=progress) for s in args.splits]


def evaluate_sharded_beams(args: EvalArgs, out: Path | None, overwrite: bool, executor: dict[str, Any],
                           progress: bool, log: Callable[[str], None]) -> Iterator[tuple[Any, Any]]:
    """(EvalResult, RunStats) per beam width, each evaluation sharded by `run_job` on `executor`.
    The checks all run before the first evaluation starts."""
    from mmedge.runtime.arguments import artifact_session_options
    from mmedge.scale.evaluate import evaluate_sharded

    if args.artifact is None:
        raise MmedgeError("--ray and --out evaluate an exported artifact: pass --artifact DIR "
                          "(the PyTorch reference runs in this process only)")
    beams = args.beams if args.model == "captioner" else (0,)
    if out is not None and len(beams) > 1:
        raise MmedgeError(f"--out holds one evaluation: pass one --beam (got {args.beam!r})")
    if out is not None and len(args.splits) > 1:
        raise MmedgeError(f"--out holds one evaluation: pass one --split (got {','.join(args.splits)})")
    session = artifact_session_options([args.artifact], args.backend, None, list(args.session))
    return (evaluate_sharded(args.model, args.artifact, s, args.limit, beam=b, out=out,
                             overwrite=overwrite, backend=args.backend, session=session, progress=progress,
                             log=log, **executor) for s in args.splits for b in beams)
