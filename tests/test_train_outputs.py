"""Training never writes over the shipped weights (models/weights/) unless asked: --replace-shipped."""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt() is glibc's")
def test_trainers_keep_freed_memory_on_glibc() -> None:
    # in a child: the setting is process-wide; glibc accepts both values (it refuses an mmap
    # threshold above 32 MB, which would make this False)
    code = "from mmedge.models.train import keep_freed_memory; raise SystemExit(0 if keep_freed_memory() else 1)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_keep_freed_memory_without_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedge.models import train

    monkeypatch.setattr(train.ctypes, "CDLL", lambda _name: object())  # a libc without mallopt (musl, macOS)
    assert train.keep_freed_memory() is False


def test_the_training_entry_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedge.models import train

    called: list[str] = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: called.append("mallopt") or True)
    monkeypatch.setattr(train.importlib, "import_module",
                        lambda name: type("Trainer", (), {"main": staticmethod(lambda argv: called.append(name))}))
    train.main(["captioner", "--epochs", "1"])
    assert called == ["mallopt", "mmedge.models.train_captioner"]
