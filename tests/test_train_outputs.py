"""Training never writes over the shipped weights (models/weights/) unless asked: --replace-shipped."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mmedge.models import zoo
from mmedge.models.train import DEFAULT_DIR, add_output_args, output_paths


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_output_args(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize("name", ["captioner", "soundnet", "voice-encoder"])
def test_default_output_is_not_the_shipped_weights(name: str) -> None:
    out, ckpt = output_paths(_args(), name)
    assert out == DEFAULT_DIR / f"{name}-demo.pt" and ckpt == DEFAULT_DIR / f"{name}-demo.ckpt"
    assert zoo.WEIGHTS_DIR.resolve() not in out.resolve().parents


def test_out_into_the_shipped_folder_needs_the_flag(tmp_path: Path) -> None:
    shipped = zoo.WEIGHTS_DIR / "soundnet-demo.pt"
    with pytest.raises(SystemExit, match="--replace-shipped"):
        output_paths(_args("--out", str(shipped)), "soundnet")
    assert output_paths(_args("--out", str(shipped), "--replace-shipped"), "soundnet")[0] == shipped
    assert output_paths(_args("--replace-shipped"), "soundnet")[0] == shipped
    assert output_paths(_args("--out", str(tmp_path / "w.pt")), "soundnet")[0] == tmp_path / "w.pt"
    with pytest.raises(SystemExit, match="checkpoint"):
        output_paths(_args("--checkpoint", str(zoo.WEIGHTS_DIR / "x.ckpt")), "soundnet")


@pytest.mark.parametrize("trainer", ["mmedge.models.train_captioner", "mmedge.models.train_audio"])
def test_trainers_take_the_shared_output_options(trainer: str) -> None:
    import importlib
    import inspect

    src = inspect.getsource(importlib.import_module(trainer))
    assert "add_output_args(p)" in src and "output_paths(args" in src and "WEIGHTS_DIR" not in src
