"""`mmedge eval --artifact DIR --ray`: the demo task metric with the items sharded over workers.

Workers return one record per held-out item (a caption with its references,
or a predicted and a true class); the driver scores them with the same
functions the single-process evaluators use (`captioner_result`,
`audio_result`), so the metrics are equal. Shards are `eval_caption.BATCH`
scenes, the single-process batch, so even the batches are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Tuple

from mmedge.calibration.evaluate import EvalResult
from mmedge.errors import InputError, article
from mmedge.registry import Registry
from mmedge.runtime.manifest import Manifest, read_manifest
from mmedge.scale.driver import Job, RunStats, run_job

ShardedEval = Callable[..., Tuple[EvalResult, RunStats]]
SHARDED_EVALS: Registry[ShardedEval] = Registry("pipeline with a sharded evaluation")


def _seeds(split_fn: Callable[[str], Any], split: str, limit: int | None) -> list[int]:
    if limit is not None and limit < 1:  # before the split function, whose ValueError means an unknown split
        raise InputError(f"limit must be >= 1, got {limit}")
    try:
        seeds = list(split_fn(split))
    except (KeyError, ValueError):
        raise InputError(f"unknown split {split!r}; expected test, val or train (captioner: also oos)") from None
    return seeds[:limit] if limit is not None else seeds


@SHARDED_EVALS.register("captioner")
def eval_captioner(m: Manifest, artifact: str, split: str, limit: int | None, beam: int = 3,
                   **run: Any) -> tuple[EvalResult, RunStats]:
    from mmedge.calibration.eval_caption import BATCH, MAX_LEN, captioner_result
    from mmedge.data import shapes

    seeds = _seeds(lambda name: shapes.split(name, limit), split, limit)  # held-out splits may exceed 300
    job = Job("eval-captioner", artifact, run.pop("backend", None), run.pop("threads", None),
              {"beam": beam, "max_len": MAX_LEN}, run.pop("session", None) or {})
    records, stats = run_job(job, seeds, shard_size=run.pop("shard_size", None) or BATCH, **run)
    # results files written before the objects travelled with the records: regenerated from the seeds
    objects = [r["objects"] for r in records] if all("objects" in r for r in records) else None
    result = captioner_result(artifact, split, beam, MAX_LEN, seeds, [r["caption"] for r in records],
                              [r["references"] for r in records], objects)
    return result, stats


@SHARDED_EVALS.register("audio")
def eval_audio(m: Manifest, artifact: str, split: str, limit: int | None, **run: Any) -> tuple[EvalResult, RunStats]:
    from mmedge.calibration.eval_audio import audio_result, check_demo_labels
    from mmedge.data import sounds

    check_demo_labels(m.model, artifact, m.labels, split)
    seeds = _seeds(sounds.split, split, limit)
    run.pop("beam", None)
    job = Job("eval-audio", artifact, run.pop("backend", None), run.pop("threads", None),
              session=run.pop("session", None) or {})
    records, stats = run_job(job, seeds, shard_size=run.pop("shard_size", None) or 16, **run)
    index = {name: i for i, name in enumerate(sounds.CLASSES)}
    result = audio_result(m.model, artifact, split, [index.get(r["predicted"], -1) for r in records],
                          [index[r["target"]] for r in records], stats.seconds)
    return result, stats


def evaluate_sharded(model: str, artifact: str | Path, split: str = "test", limit: int | None = None,
                     **run: Any) -> tuple[EvalResult, RunStats]:
    """Evaluate an artifact's demo task metric through `run_job` (any executor; `run` goes to it)."""
    m = read_manifest(artifact)
    if m.model != model:
        raise InputError(f"{artifact}: is {article(m.model)} artifact, not {model}")
    result, stats = SHARDED_EVALS.get(m.pipeline)(m, str(Path(artifact)), split, limit, **run)
    result.details["run"] = stats.to_json()
    return result, stats
