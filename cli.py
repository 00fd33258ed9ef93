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
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from mmedge.errors import MmedgeError, NotBuiltError

app = typer.Typer(
    name="mmedge",
    help="Export the captioner, audio encoders and refocus network to edge runtimes, "
    "check parity against PyTorch, and run them without PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def err(msg: str) -> None:
    """A log line for humans: stderr, so --json stays clean on stdout."""
    print(msg, file=sys.stderr)


def emit_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def handle_errors(fn: Callable) -> Callable:
    """Turn MmedgeError into one stderr line + exit code; keep real bugs loud."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MmedgeError as e:
            err(f"mmedge: error: {e}")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err("mmedge: interrupted")
            raise typer.Exit(130) from None

    return wrapper


def command(*args: Any, **kwargs: Any) -> Callable:
    def deco(fn: Callable) -> Callable:
        return app.command(*args, **kwargs)(handle_errors(fn))

    return deco


def not_built(name: str, issue: str) -> None:
    raise NotBuiltError(f"'mmedge {name}' is not built yet ({issue})")


JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@command("models")
def models_cmd(as_json: bool = JsonOpt) -> None:
    """List the registered models, their configs and exported graphs."""
    from mmedge.models import zoo

    doc = []
    for name in zoo.names():
        spec = zoo.get(name)
        doc.append({"name": name, "pipeline": spec.pipeline, "configs": list(spec.configs),
                    "graphs": {g.name: {"inputs": list(g.inputs), "outputs": list(g.outputs)} for g in spec.graphs},
                    "description": spec.description})
    if as_json:
        emit_json({"models": doc})
        return
    for m in doc:
        print(f"{m['name']:<14} configs: {', '.join(m['configs']):<18} graphs: {', '.join(m['graphs'])}")
        if m["description"]:
            print(f"{'':<14} {m['description']}")


@command("demo")
def demo_cmd(as_json: bool = JsonOpt) -> None:
    """The main job: export the demo models to every backend here, check parity, run examples, time them."""
    not_built("demo", "needs the ONNX-and-runtime and demo-models issues")


@command("export")
def export_cmd(
    model: str = typer.Argument(..., help="captioner | soundnet | voice-encoder | refocus"),
    format: str = typer.Option("onnx", "--format", "-f", help="Target format(s), comma-separated."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | int8"),
    config: str = typer.Option("tiny", help="tiny | demo | full"),
    checkpoint: Optional[Path] = typer.Option(None, help="A tutorial BEST_checkpoint_*.pth.tar."),
    word_map: Optional[Path] = typer.Option(None, help="The tutorial's WORDMAP_*.json."),
    calib_data: Optional[Path] = typer.Option(None, help="Folder of calibration images or WAVs (int8)."),
    out: Path = typer.Option(Path("artifacts"), help="Output folder; one artifact directory per format x precision."),
    as_json: bool = JsonOpt,
) -> None:
    """Export MODEL to one artifact directory per format x precision."""
    not_built("export", "the ONNX-and-runtime issue")


@command("caption")
def caption_cmd(images: List[Path], artifact: Path = typer.Option(...), as_json: bool = JsonOpt) -> None:
    """Caption images with an exported captioner."""
    not_built("caption", "the ONNX-and-runtime issue")


@command("embed")
def embed_cmd(audio: List[Path], artifact: Path = typer.Option(...), as_json: bool = JsonOpt) -> None:
    """Embed / classify audio files with an exported audio encoder."""
    not_built("embed", "the ONNX-and-runtime issue")


@command("refocus")
def refocus_cmd(image: Path, artifact: Path = typer.Option(...)) -> None:
    """Refocus a photo with its depth map."""
    not_built("refocus", "the ONNX-and-runtime issue")


@command("parity")
def parity_cmd(artifact: Path = typer.Option(...), as_json: bool = JsonOpt) -> None:
    """Compare an artifact with the PyTorch reference."""
    not_built("parity", "the ONNX-and-runtime issue")


@command("eval")
def eval_cmd(model: str, artifact: Path = typer.Option(...), as_json: bool = JsonOpt) -> None:
    """Task metric (BLEU-1..4, top-1) on the held-out demo data."""
    not_built("eval", "the demo-models issue")


@command("profile")
def profile_cmd(artifact: List[Path] = typer.Option(...), as_json: bool = JsonOpt) -> None:
    """Latency per graph and end to end."""
    not_built("profile", "the profiling issue")


@command("package")
def package_cmd(target: str, artifact: List[Path] = typer.Option(...), out: Path = typer.Option(...)) -> None:
    """Bundle artifacts for a Jetson board or a phone app."""
    not_built("package", "the Core ML and TensorRT issues")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
