"""The commands that run an artifact on inputs: `caption`, `embed`, `refocus`.

Each loads the artifact's pipeline through `runtime.arguments.load_pipeline` (which checks the
`-O` options and the pipeline kind) and prints one line or one JSON record per input; `caption`
with --out or --ray hands the images to `scale.run_job` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from mmedge.cli.common import (ArtifactOpt, BackendOpt, JsonOpt, OverwriteOpt, RayOpt, SessionOpt, ShipOpt,
                               ThreadsOpt, WorkersOpt, emit_json, err, print_line)
from mmedge.errors import MmedgeError, plural


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
    from mmedge.runtime.arguments import load_pipeline
    from mmedge.scale.inputs import expand_images

    paths = expand_images(images)
    if out is not None or ray is not None:
        if attention_png is not None:
            raise MmedgeError("--attention-png is for a few images; it does not combine with --out or --ray")
        if batch_size is not None:
            raise MmedgeError("--batch-size is for a run without --out or --ray; with them, --shard-size sets "
                              "the images per task")
        from mmedge.scale.executor_options import executor_options

        _caption_batch(paths, artifact, backend, threads, backend_option, {"beam": beam, "max_len": max_len,
                       "length_norm": length_norm}, out, shard_size or 16, overwrite,
                       executor_options(ray, workers, ship_artifact), as_json)
        return
    pipe = load_pipeline(artifact, backend, threads, backend_option, Captioner, "a captioner")
    # Streamed in batches (--batch-size, else --shard-size, else the machine's): plain text is printed
    # as each batch finishes, and only the small JSON records are kept for --json (one document at the
    # end, so a failure mid-way prints no half document); attention maps are written, then dropped.
    size = batch_size or shard_size or pipe.auto_batch_size(beam, max_len)
    records: list[dict[str, Any]] = []
    for start in range(0, len(paths), size):
        batch = paths[start:start + size]
        results = pipe.caption(batch, beam=beam, max_len=max_len, length_norm=length_norm, batch_size=size)
        if attention_png is not None:
            for i, r in enumerate(results, start):
                target = attention_png if len(paths) == 1 else attention_png.with_name(
                    f"{attention_png.stem}-{i}{attention_png.suffix or '.png'}")
                _write_attention(pipe, r, target)
        for r in results:
            if as_json:
                records.append(r.to_json())
            else:
                print_line(f"{r.image}: {r.caption}  (score {r.score:.3f})")
        del results
    if as_json:
        emit_json({"results": records})


def _write_attention(pipe: Any, result: Any, target: Path) -> None:
    """One caption's attention maps over its image, a panel per word (<end> included when reached)."""
    from mmedge.runtime.image import read_image
    from mmedge.runtime.visualize import PANEL, attention_grid, save_png

    words = [pipe.vocab.words[t] for t in result.tokens] + (["<end>"] if result.finished else [])
    save_png(attention_grid(read_image(result.image, min_size=PANEL), words, result.attention), target)
    err(f"wrote {target}")


def _caption_batch(paths: list[str], artifact: Path, backend: Optional[str], threads: Optional[int],
                   pairs: List[str], options: dict[str, Any], out: Optional[Path], shard_size: int,
                   overwrite: bool, executor: dict[str, Any], as_json: bool) -> None:
    """caption --out/--ray: the images as a `run_job` over shards; prints the records or a summary."""
    from mmedge.runtime.arguments import artifact_session_options
    from mmedge.scale import Job, run_job

    job = Job("caption", str(artifact), backend, threads, options,
              artifact_session_options([artifact], backend, None, pairs))
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
    from mmedge.runtime.arguments import load_pipeline

    pipe = load_pipeline(artifact, backend, threads, backend_option, AudioEncoder, "an audio encoder")
    results = pipe.embed([str(a) for a in audio])
    if as_json:
        emit_json({"results": [r.to_json() for r in results]})
        return
    for r in results:
        dims = ", ".join(f"{k} [{v.shape[0]}]" for k, v in r.outputs.items())
        label = f"{r.label} ({r.score:.2f})" if r.label is not None else "-"
        print_line(f"{r.audio}: {label}  outputs: {dims}")


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
    from mmedge.runtime.arguments import load_pipeline
    from mmedge.runtime.visualize import save_png

    if near < 0 or far < near:
        raise MmedgeError(f"need 0 <= near <= far, got near={near} far={far}")
    pipe = load_pipeline(artifact, backend, threads, backend_option, Refocuser, "a refocus network")
    result = pipe.refocus(str(image), str(depth), near, far)
    save_png(Image.fromarray(result), out)
    print_line(str(out))
