"""Command arguments read into runtime values: integer lists, session options, the pipeline to run.

The command line (and anything else that takes text, such as the demo) hands its arguments
here as given; what they mean for the runtime -- which backend's option schema checks `-O`,
which pipeline an artifact must hold -- is decided in this layer, once. Torch-free; numpy is
imported only when a pipeline is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mmedge.errors import MmedgeError, article


def int_list(option: str, value: str, minimum: int = 1, distinct: bool = True) -> tuple[int, ...]:
    """'1,4,8' -> (1, 4, 8); a bad list is a one-line error naming the option (`--beam`, `--pin`)."""
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise MmedgeError(f"{option} expects comma-separated integers, got {value!r}") from None
    if not items or min(items) < minimum:
        raise MmedgeError(f"{option} values must be >= {minimum}, got {value!r}")
    if distinct and len(set(items)) != len(items):
        raise MmedgeError(f"{option} lists a value twice: {value!r}")
    return items


def artifact_session_options(artifacts: Sequence[Path], backend: str | None, threads: int | None,
                             pairs: Sequence[str] | None) -> dict[str, Any]:
    """`-O KEY=VALUE` pairs (and a thread count), typed and checked against the options of the backend
    that will run the artifacts (`backend`, else the one of each artifact's format) before anything
    loads. Artifacts of several formats (profile) share the options: each backend must take them."""
    opts: dict[str, Any] = {}
    if pairs:
        from mmedge.runtime.manifest import read_manifest
        from mmedge.runtime.session import BACKENDS, backend_for_format

        names = [backend] if backend else list(dict.fromkeys(
            backend_for_format(read_manifest(a).format) for a in artifacts))
        opts = BACKENDS.get(names[0]).schema.parse(pairs)
        for name in names[1:]:
            BACKENDS.get(name).schema.validate(opts)
    if threads:
        opts["threads"] = threads
    return opts


def load_pipeline(artifact: Path, backend: str | None, threads: int | None, pairs: Sequence[str] | None = None,
                  kind: type | None = None, noun: str = "") -> Any:
    """The artifact's pipeline with these session options; with `kind`, one of that class or an
    error saying what the artifact holds instead ("is an audio-encoder artifact, not a captioner")."""
    from mmedge.runtime import load

    pipe = load(artifact, backend, **artifact_session_options([artifact], backend, threads, pairs))
    if kind is not None and not isinstance(pipe, kind):
        raise MmedgeError(f"{artifact}: is {article(pipe.manifest.pipeline)} artifact, not {noun}")
    return pipe
