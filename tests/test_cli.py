"""The command line: --json contracts, exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmedge.cli import app

ROOT = Path(__file__).resolve().parents[1]

# click < 8.2 (under typer < 0.16) mixes stderr into stdout unless told not to; later click has no switch
runner = CliRunner(mix_stderr=False) if "mix_stderr" in inspect.signature(CliRunner).parameters else CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def exported(cli_onnx: dict[str, Path]) -> dict[str, Path]:
    """`mmedge export NAME --format onnx` of every model (tests/conftest.py, once per session)."""
    return cli_onnx


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)).save(p)
    return p


def test_help_lists_every_command() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for cmd in ("demo", "export", "caption", "embed", "refocus", "parity", "eval", "profile", "package"):
        assert cmd in out


def test_models_json() -> None:
    code, out, _ = run("models", "--json")
    doc = json.loads(out)
    names = [m["name"] for m in doc["models"]]
    assert code == 0 and names == sorted(["captioner", "soundnet", "voice-encoder", "refocus"])
    cap = next(m for m in doc["models"] if m["name"] == "captioner")
    assert cap["graphs"]["decoder_step"]["outputs"] == ["log_probs", "h_next", "c_next", "alpha"]


def test_export_writes_one_artifact_per_model(exported: dict[str, Path], tmp_path: Path) -> None:
    code, stdout, stderr = run("export", "soundnet", "--format", "onnx", "--config", "tiny", "--out",
                               str(tmp_path), "--json")
    assert code == 0, stderr
    assert json.loads(stdout) == {"artifacts": [str(tmp_path / "soundnet-tiny-onnx-fp32")]}
    for name, art in [*exported.items(), ("soundnet", tmp_path / "soundnet-tiny-onnx-fp32")]:
        assert art.name == f"{name}-tiny-onnx-fp32"
        assert (art / "manifest.json").is_file()
        assert not [p for p in art.parent.iterdir() if p.name.startswith(".")], "temp dirs left behind"


def test_caption_json_and_attention_png(exported: dict[str, Path], image: Path, tmp_path: Path) -> None:
    png = tmp_path / "att.png"
    code, out, err = run("caption", str(image), "--artifact", str(exported["captioner"]), "--beam", "3",
                         "--max-len", "6", "--attention-png", str(png), "--json")
    assert code == 0, err
    doc = json.loads(out)  # stdout is exactly one JSON document
    (r,) = doc["results"]
    assert r["image"] == str(image) and len(r["tokens"]) <= 6 and r["score"] < 0
    with Image.open(png) as im:
        steps = len(r["tokens"]) + int(r["finished"])
        assert im.size[0] == min(steps, 5) * 224
    assert "wrote" in err


def test_parity_json(exported: dict[str, Path]) -> None:
    code, out, _ = run("parity", "--artifact", str(exported["captioner"]), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["beam"]["tokens_equal"] == [True, True]


def test_parity_fails_with_exit_1_when_tolerance_is_impossible(exported: dict[str, Path]) -> None:
    code, out, _ = run("parity", "--artifact", str(exported["soundnet"]), "--tolerance", "1e-12", "--json")
    assert code == 1 and json.loads(out)["ok"] is False


def test_embed_and_refocus(exported: dict[str, Path], image: Path, tmp_path: Path) -> None:
    from mmedge.runtime.audio import write_wav

    wav = tmp_path / "a.wav"
    t = np.arange(16000) / 16000
    write_wav(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    code, out, err = run("embed", str(wav), "--artifact", str(exported["voice-encoder"]), "--json")
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert len(r["embedding"]) == 32 and len(r["logits"]) == 10 and 0 < r["score"] <= 1

    depth = tmp_path / "d.npy"
    np.save(depth, np.linspace(0.5, 5.0, 48 * 64, dtype=np.float32).reshape(48, 64))
    dst = tmp_path / "out.png"
    code, _, err = run("refocus", str(image), "--depth", str(depth), "--artifact", str(exported["refocus"]),
                       "--near", "0", "--far", "inf", "--out", str(dst))
    assert code == 0, err
    with Image.open(image) as a, Image.open(dst) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # everything in focus: unchanged


@pytest.mark.parametrize("args, message", [
    (("caption", "{missing}", "--artifact", "{cap}"), "image not found"),
    (("caption", "{bad}", "--artifact", "{cap}"), "not an image PIL can read"),
    (("caption", "{img}", "--artifact", "{nowhere}"), "no such folder (expected an artifact directory"),
    (("caption", "{img}", "--artifact", "{snd}"), "not a captioner"),
    (("export", "nosuchmodel"), "unknown model 'nosuchmodel'; valid: captioner"),
    (("export", "captioner", "--format", "tflite"), "unknown format 'tflite'; valid: "),
    (("export", "captioner", "--config", "huge"), "unknown config of captioner 'huge'"),
    (("export", "captioner", "--precision", "int8", "--calib-data", "{nowhere}"), "calibration folder not found"),
    (("export", "captioner", "--precision", "int8", "--calib-method", "magic"), "unknown calibration method"),
    (("export", "captioner", "--calib-data", "{nowhere}"), "only used with --precision int8"),
    (("refocus", "{img}", "--depth", "{missing}", "--artifact", "{ref}", "--near", "3", "--far", "1",
      "--out", "{out}"), "need 0 <= near <= far"),
    (("embed", "{bad}", "--artifact", "{snd}"), "bad.png"),
])
def test_errors_are_one_line(args: tuple[str, ...], message: str, exported: dict[str, Path],
                             image: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    subst = {"missing": str(tmp_path / "missing.png"), "bad": str(bad), "img": str(image),
             "cap": str(exported["captioner"]), "snd": str(exported["soundnet"]), "ref": str(exported["refocus"]),
             "nowhere": str(tmp_path / "nowhere"), "out": str(tmp_path / "o.png")}
    code, out, err = run(*(a.format(**subst) for a in args))
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmedge: error: ") and message in lines[0], err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "o.png").exists()


def test_python_dash_m_is_the_same_program() -> None:
    res = subprocess.run([sys.executable, "-m", "mmedge", "models", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and json.loads(res.stdout)["models"]


def _limited(args: list[str], fsize: int) -> subprocess.CompletedProcess[str]:
    """`python -m mmedge ARGS` with a file-size limit (RLIMIT_FSIZE): writes past it fail with EFBIG."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "mmedge", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)


@pytest.mark.parametrize("what", ["refocus", "attention-png", "package-mobile", "caption-out"])
def test_unwritable_outputs_are_one_line(what: str, exported: dict[str, Path], image: Path, tmp_path: Path) -> None:
    """A file-size limit (or a full disk) while writing is one line naming the output, exit 2,
    and no partial output is left behind."""
    ex = ROOT / "data" / "examples" / "refocus"
    out = tmp_path / "out"
    args = {"refocus": ["refocus", str(ex / "photo.png"), "--depth", str(ex / "depth_mm.png"), "-a",
                        str(exported["refocus"]), "--near", "1", "--far", "2", "--out", str(out / "r.png")],
            "attention-png": ["caption", str(image), "-a", str(exported["captioner"]), "--attention-png",
                              str(out / "att.png")],
            "package-mobile": ["package", "mobile", "-a", str(exported["captioner"]), "--out", str(out / "app.zip")],
            "caption-out": ["caption", *[str(image)] * 40, "-a", str(exported["captioner"]), "--out",
                            str(out / "c.jsonl")]}[what]
    out.mkdir()
    res = _limited(args, 600 if what != "package-mobile" else 20_000)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("mmedge: error: ")]
    assert len(lines) == 1 and "File too large" in lines[0] and "Traceback" not in res.stderr, res.stderr
    leftovers = [p.name for p in out.iterdir() if not p.name.endswith((".job.json", ".jsonl"))]
    assert leftovers == [], leftovers
